"""``rmamamba segment INPUT... -o OUTDIR``: segment the liver in image files, DICOM folders or lists of them."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Segment the liver in each INPUT: a NIfTI/NRRD/MHA file, a DICOM series folder, a folder holding such files or
DICOM sub-folders, or a text file listing inputs one per line. For an input named NAME, OUTDIR receives
NAME_liver.nii.gz (mask, uint8 0/1, input grid), NAME.seg.nrrd (a Slicer segmentation with one segment "Liver"),
NAME_overlay.png (mid-liver slice), NAME_probability.nii.gz with --probability, and one row per case in
summary.csv (summary_shard-I-of-N.csv with --shard).

Without --weights the installed default weights run (RMA-Mamba-T trained on T2-SPIR MRI: other MRI sequences and
CT need other weights). Before the network, the scan is compared with the weights' model card (DICOM Modality tag,
CT-like Hounsfield units, T1/T2, the preset): a mismatch is a warning in the row's message, an error with --strict.
After it, every result gets a quality verdict in summary.csv's "quality" column: "ok", or "check: reasons"
(implausible liver volume, many uncertain voxels, scattered components, odd cranio-caudal extent).

Damaged files (compressed data cut or failing their checksum, fewer voxels than the header says, DICOM series with
missing, duplicated or mixed slices) and volumes with NaN or infinite voxels are refused with an error row.
Existing outputs are never replaced without --overwrite: a case whose outputs all exist is skipped, so re-running a
batch resumes it; a case lacking an output now asked for (--probability, another --mask-format) gets only the
missing files. A bad input prints one error line and the other inputs still run.
Exit status: 0 every case done or skipped, 1 some case failed, 2 nothing could run (weights, arguments, an INPUT
that does not exist; checked before the weights load or OUTDIR is created), 3 with --fail-on-check when any result's
quality verdict is 'check' (every output still written), 130 interrupted."""

EPILOG = """\
examples:
  rmamamba segment scan.nii.gz -o out/                      (default weights: T2-SPIR MRI)
  rmamamba segment scan.nii.gz -o out/ --weights rmamamba_t.pt --strict
  rmamamba segment DICOM/series1 list.txt -o out/ --weights ct_weights.pt --modality CT --probability
  rmamamba segment t2.nii.gz -o out/ --intensity MRI   (the percentile preset instead of the card's MRI-tissue)
  rmamamba segment t2.nii.gz -o out/ --model SRMA --weights srma_t2.pth   (3D SRMA-Mamba, 224x224x64 windows)
  rmamamba segment t2.nii.gz -o out/ --model unet   (the shipped 2D U-Net baseline)
  rmamamba segment cases/ -o out/ --weights w.pt --shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT"""


def _shard(text: str) -> tuple[int, int]:
    from RMAMambaSegmentationLib.batch.segment_files import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment the liver in image files or DICOM folders",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM folder, folder or list file")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs")
    parser.add_argument("--weights", metavar="FILE",
                        help="RMA-Mamba checkpoint, optional (default: the installed weights, T2-SPIR MRI); its "
                             "model card FILE.json beside it sets the intensity preset")
    parser.add_argument("--model", type=_model_name, choices=("T", "S", "SRMA", "UNET"),
                        help="model: T/S = 2D RMA-Mamba, SRMA = 3D SRMA-Mamba, unet = the 2D U-Net baseline "
                             "(default: detected from the weights); the weights must hold it. Without --weights, "
                             "unet uses the shipped U-Net weights, the others the default RMA-Mamba-T weights")
    parser.add_argument("--window-size", nargs=3, type=_positive_int, metavar=("I", "J", "K"),
                        help="SRMA-Mamba sliding window in voxels along L, P, S (multiples of 16; default 224 224 64)")
    parser.add_argument("--overlap", type=float, metavar="F",
                        help="SRMA-Mamba sliding-window overlap in [0, 1) (default 0.25)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available, else the Apple GPU, else the CPU), cpu, cuda, cuda:N or mps "
                             "(Apple GPU); an accelerator that is not there falls back to the CPU with a warning "
                             "(default auto)")
    parser.add_argument("--batch-size", type=_positive_int, metavar="N",
                        help="slices per network call (default: from free GPU memory; 4 on CPU)")
    parser.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                        help="keep the raw thresholded mask (no largest component, no hole filling)")
    parser.add_argument("--probability", action="store_true", help="also write NAME_probability (float32)")
    parser.add_argument("--modality", type=str.upper, choices=("MRI", "MR", "CT", "MRI-TISSUE"), metavar="{MRI,CT}",
                        help="the scans' modality; the intensity preset follows the weights' model card for it "
                             "(MRI with the default weights: MRI-tissue), else MRI: robust percentiles 0.5-99.5, "
                             "CT: HU window -150..250. Default: the model card's preset, else MRI")
    parser.add_argument("--intensity", type=_preset_name, choices=("MRI", "MRI-tissue", "CT"),
                        metavar="{MRI,MRI-tissue,CT}",
                        help="choose the intensity preset itself instead (default: the model card's, MRI-tissue "
                             "for the default weights; else MRI): MRI = percentiles 0.5-99.5, MRI-tissue = 0.5th "
                             "percentile to 4x the median tissue intensity, CT = HU window -150..250. A preset "
                             "other than the card's gives a warning")
    parser.add_argument("--window", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="CT window in HU (default -150 250); implies --intensity CT")
    parser.add_argument("--percentiles", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="MRI percentiles mapped to 0 and 1 (default 0.5 99.5); implies --intensity MRI")
    parser.add_argument("--mask-format", choices=("nii.gz", "nrrd"), default="nii.gz",
                        help="file format of the mask and probability (default nii.gz)")
    parser.add_argument("--no-overlay", dest="overlay", action="store_false", help="do not write the PNG overlay")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--strict", action="store_true",
                        help="a scan that does not match the weights' model card (modality, T1/T2, preset) is an "
                             "error instead of a warning")
    parser.add_argument("--fail-on-check", action="store_true",
                        help="exit with status 3 when any result's quality verdict is 'check' (outputs and "
                             "summary.csv are still written; a failed case still gives 1)")
    parser.add_argument("--shard", type=_shard, metavar="I/N",
                        help="process only shard I of N of the inputs (1 <= I <= N), for cluster array jobs")
    parser.add_argument("--compile", action="store_true",
                        help="compile the 2D network with torch.compile where a C++ compiler (CPU) or Triton (CUDA) "
                             "is present; once per batch shape, falls back to eager otherwise")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


#: The intensity presets by the modality they are for.
PRESET_MODALITY = {"MRI": "MRI", "MRI-tissue": "MRI", "CT": "CT"}


def _preset_name(text: str) -> str:
    """``--intensity``'s spelling, case-insensitive: ``MRI``, ``MRI-tissue`` or ``CT`` (``MR`` for MRI)."""
    key = text.strip().upper().replace("MR-", "MRI-")
    return {"MR": "MRI", "MRI": "MRI", "MRI-TISSUE": "MRI-tissue", "CT": "CT"}.get(key, text)


def _modality_and_preset(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``--modality`` and ``--intensity``, checked against each other; ``--modality MRI-tissue`` (a preset, as
    earlier versions took it) is read as ``--intensity MRI-tissue`` with a warning."""
    modality = {"MR": "MRI"}.get(args.modality, args.modality)
    preset = getattr(args, "intensity", None)
    if modality == "MRI-TISSUE":
        logger.warning("--modality takes a modality (MRI or CT); MRI-tissue is a preset: read as --intensity "
                       "MRI-tissue (write that instead)")
        modality, preset = "MRI", preset or "MRI-tissue"
    if modality is not None and preset is not None and PRESET_MODALITY[preset] != modality:
        raise ValueError(f"--intensity {preset} is a preset for {PRESET_MODALITY[preset]}; it contradicts "
                         f"--modality {modality}")
    return modality, preset


def intensity_from_args(args: argparse.Namespace):
    """The intensity asked for on the command line: a preset, a modality name (the card's preset for it), or None
    (the model card's preset, else MRI)."""
    from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset

    modality, preset = _modality_and_preset(args)
    chosen = preset or modality
    if args.window is not None and args.percentiles is not None:
        raise ValueError("--window (CT) and --percentiles (MRI) cannot be used together")
    if args.window is not None:
        if chosen not in (None, "CT"):
            raise ValueError(f"--window is for CT; it contradicts {'--intensity' if preset else '--modality'} "
                             f"{chosen}")
        return IntensityPreset.ct(*args.window)
    if args.percentiles is not None:
        if chosen not in (None, "MRI"):
            raise ValueError(f"--percentiles is for the MRI preset; it contradicts "
                             f"{'--intensity' if preset else '--modality'} {chosen}")
        return IntensityPreset.mri(*args.percentiles)
    if preset == "MRI":
        return IntensityPreset.mri()  # the percentile preset itself, not the card's preset for MRI
    if preset == "CT":
        return IntensityPreset.ct()
    return preset or modality


class _ClearBarFilter(logging.Filter):
    """Ends the progress bar's line before a log record is printed, so both stay readable."""

    def __init__(self, bar) -> None:
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.clear()
        return True


def _model_name(text: str) -> str:
    from RMAMambaSegmentationLib.registry import normalise_variant

    return normalise_variant(text)


def options_from_args(args: argparse.Namespace):
    """The run's :class:`~RMAMambaSegmentationLib.inference.options.RunOptions` from the command line (ValueError
    for contradictory intensity arguments)."""
    from RMAMambaSegmentationLib.inference.options import RunOptions

    return RunOptions(
        weights=args.weights, device=args.device, variant=args.model,
        intensity=intensity_from_args(args), postprocess=args.postprocess, probability_map=args.probability,
        batch_size=args.batch_size, window_size=None if args.window_size is None else tuple(args.window_size),
        overlap=args.overlap, strict=args.strict, compile=args.compile,
    ).checked()


#: Exit status of ``--fail-on-check`` when a result is flagged (0, 1, 2 and 130 keep their meanings).
EXIT_FLAGGED = 3


def flagged_cases(rows: list[dict], output: str, shard: tuple[int, int] | None) -> list[str]:
    """The cases of this run whose quality verdict is ``check``: ``ok`` rows by their ``quality``, skipped cases
    by their earlier row in the summary CSV."""
    from RMAMambaSegmentationLib.batch.segment_files import OK, SKIPPED, read_summary, summary_path

    earlier = {row["case"]: row for row in read_summary(summary_path(output, shard))}
    flagged = []
    for row in rows:
        source = earlier.get(row["case"], {}) if row["status"] == SKIPPED else row
        if row["status"] in (OK, SKIPPED) and str(source.get("quality", "")).startswith("check"):
            flagged.append(row["case"])
    return flagged


def run(args: argparse.Namespace) -> int:
    from RMAMambaSegmentationLib.batch.segment_files import ERROR, segment_files
    from RMAMambaSegmentationLib.cli.progress_bar import ConsoleProgress
    from RMAMambaSegmentationLib.errors import RMAMambaError, SegmentationCancelledError
    from RMAMambaSegmentationLib.inference.scan_check import option_style

    try:
        options = options_from_args(args)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    bar = None if args.quiet else ConsoleProgress(sys.stderr)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    bar_filter = _ClearBarFilter(bar) if bar is not None else None
    for handler in handlers if bar_filter is not None else []:
        handler.addFilter(bar_filter)
    try:
        with option_style("cli"):  # warnings name --modality CT, not intensity="CT"
            rows = segment_files(args.inputs, args.output, options=options, mask_format=args.mask_format,
                                 overlay=args.overlay, overwrite=args.overwrite, shard=args.shard, progress=bar)
    except KeyboardInterrupt:
        logger.error("interrupted; finished cases keep their outputs")
        return 130
    except SegmentationCancelledError as error:
        logger.error("%s", error)
        return 130
    except (RMAMambaError, ValueError) as error:
        logger.error("%s", " ".join(str(error).split()))
        return 2
    finally:
        if bar is not None:
            bar.close()
        for handler in handlers if bar_filter is not None else []:
            handler.removeFilter(bar_filter)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "skipped", ERROR)}
    logger.info("%d done, %d skipped, %d failed; outputs in %s", counts["ok"], counts["skipped"], counts[ERROR],
                args.output)
    if counts[ERROR]:
        return 1
    flagged = flagged_cases(rows, args.output, args.shard) if getattr(args, "fail_on_check", False) else []
    if flagged:
        logger.warning("%d result(s) flagged for checking (--fail-on-check, exit %d): %s", len(flagged),
                       EXIT_FLAGGED, ", ".join(flagged))
        return EXIT_FLAGGED
    return 0
