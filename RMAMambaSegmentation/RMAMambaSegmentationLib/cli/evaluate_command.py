"""``rmamamba evaluate PRED REF``: Dice, IoU, recall, precision, F2, HD and HD95 (mm) per case and as a mean."""

from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Compare predicted liver masks with reference masks. PRED and REF are two files, or two folders whose files are
paired by case name (suffixes such as _liver, _seg, .seg, _mask, _image are ignored; unpaired files are an error
unless --ignore-unpaired).
Per-volume scores use the image spacing (distances in mm). The per-slice columns (slice_*) follow the paper's
protocol: scores of every axial slice averaged with equal weight (the mean row pools all slices of all cases);
they are not comparable with the per-volume scores.
Empty masks: both empty -> overlap scores 1 and distances 0; exactly one empty -> Dice/IoU/F2 0 and distances inf
(written as inf in the CSV and null in JSON, left out of the mean and counted in *_undefined)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks against reference masks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prediction", metavar="PRED", help="predicted mask file or folder")
    parser.add_argument("reference", metavar="REF", help="reference mask file or folder")
    parser.add_argument("--label", type=int, default=None, help="liver value in the reference (default: nonzero)")
    parser.add_argument(
        "--pred-label", type=int, default=None, help="liver value in the prediction (default: nonzero)"
    )
    parser.add_argument("-o", "--output", metavar="CSV", default=None, help="write the results to this CSV file")
    parser.add_argument("--json", action="store_true", help="print one JSON object per case and a last one with means")
    parser.add_argument(
        "--no-per-slice", dest="per_slice", action="store_false", help="skip the paper's per-slice scores"
    )
    parser.add_argument(
        "--slice-size",
        type=int,
        default=None,
        metavar="N",
        help="resize slices to NxN (bilinear, threshold 0.5) before the per-slice scores, as the paper (256)",
    )
    parser.add_argument(
        "--ignore-unpaired", action="store_true",
        help="score only the cases found in both folders (the files without a partner are counted in a warning) "
             "instead of failing"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from RMAMambaSegmentationLib.errors import RMAMambaError
    from RMAMambaSegmentationLib.evaluation.evaluate import (
        UnpairedFilesError,
        evaluate,
        format_table,
        json_safe,
        write_csv,
    )

    try:
        report = evaluate(
            args.prediction,
            args.reference,
            label=args.label,
            pred_label=args.pred_label,
            per_slice=args.per_slice,
            slice_size=(args.slice_size, args.slice_size) if args.slice_size else None,
            allow_unpaired=args.ignore_unpaired,
        )
    except UnpairedFilesError as error:
        logger.error("unpaired files (pairing is by case name): %s; add --ignore-unpaired to score only the cases "
                     "found in both", error.unpaired)
        return 2
    except RMAMambaError as error:
        logger.error("%s", error)
        return 2
    if args.json:
        for row in [result.row() for result in report.cases] + [report.means()]:
            sys.stdout.write(json.dumps({key: json_safe(value) for key, value in row.items()}) + "\n")
    else:
        sys.stdout.write(format_table(report) + "\n")
    if args.output:
        path = write_csv(report, args.output)
        logger.info("results written to %s", path)
    return 0
