"""Regenerate the quality verdict's calibration table and propose each shipped model's uncertainty limits.

Calibration data are results on cases a model never trained on:

* **unseen CHAOS T2-SPIR subjects** -- for the default weights (RMA-Mamba-T) their validation subjects (the model
  card's ``valid_cases``: 02, 20, 36), segmented here; for the U-Net baseline the out-of-fold predictions of a
  4-fold cross-validation with its recipe (``--unet-cv``: the ``rmamamba train --folds 4`` folder, whose
  ``crossval.csv`` has each case's Dice and measures, and ``out_of_fold/`` the ``segment`` outputs);
* **foreign scans** -- TotalSegmentator's MR and CT examples and the CHAOS CT case (NIfTI and DICOM), each run
  through ``rmamamba segment`` with the model, with its default preset and (CT) with ``--modality CT``.

For every result the table keeps the verdict's measures, the Dice against the reference, whether the scan checks
warned (:func:`scan_warnings`, before the network) and the verdict under the limits of the model's card. A result
with Dice >= :data:`GOOD_DICE` counts as *good*; the false-alarm rate is the share of unseen good results flagged,
the detection rate the share of foreign results flagged or warned. Proposed limit per uncertainty measure:
:data:`MARGIN` times the largest value among the unseen good results, rounded up to 0.01, never under the verdict's
documented default (a few unseen cases cannot show how far a good result may go).

Usage (CPU, a few minutes; ``OUT`` is the folder of ``rmamamba train --folds 4 ... -o OUT`` with the U-Net
recipe)::

    python Testing/calibrate_quality.py --unet-cv OUT                 # writes the table, prints rates and proposals
    python Testing/calibrate_quality.py --unet-cv OUT --write-cards   # also the proposed limits into the cards
    python Testing/calibrate_quality.py --from-table [--write-cards]  # no segmenting: the committed table again
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "RMAMambaSegmentation"))

from RMAMambaSegmentationLib.cli import main  # noqa: E402
from RMAMambaSegmentationLib.cli.crossval import summary_measures  # noqa: E402
from RMAMambaSegmentationLib.files.image_io import expand_inputs, read_case  # noqa: E402
from RMAMambaSegmentationLib.inference.quality import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    MODEL_MEASURES,
    judge_for_card,
    thresholds_for,
)
from RMAMambaSegmentationLib.inference.scan_check import ScanInfo, scan_warnings  # noqa: E402
from RMAMambaSegmentationLib.inference.slices import resolve_intensity  # noqa: E402
from RMAMambaSegmentationLib.weights.location import bundled_weights_path  # noqa: E402
from RMAMambaSegmentationLib.weights.model_card import (  # noqa: E402
    QualityThresholds,
    model_card_path,
    read_model_card,
)

logger = logging.getLogger("calibrate_quality")
SHARED = HERE.parent.parent / "shared"
CHAOS_MR = SHARED / "data" / "chaos_mr_t2spir"
CHAOS_CT = SHARED / "data" / "chaos_ct_case"
TOTALSEG = SHARED / "fixtures" / "totalsegmentator_examples"
TABLE = HERE / "data" / "quality_calibration.csv"
MODELS = ("T", "UNET")
GOOD_DICE = 0.80
MARGIN = 1.25
MEASURES = ("liver_ml", "uncertain_share", "outside_share", "components", "extent_mm", "liver_slices")
COLUMNS = ("model", "case", "group", "run", "dice", *MEASURES, "warned", "verdict", "warnings")
#: Foreign scans: name -> (input, extra ``segment`` arguments, reference mask, its liver label).
FOREIGN = {
    "totalseg_mr": (TOTALSEG / "example_mr_sm.nii.gz", [], TOTALSEG / "example_seg_mr.nii.gz", 5),
    "totalseg_ct": (TOTALSEG / "example_ct_sm.nii.gz", [], TOTALSEG / "example_seg.nii.gz", 5),
    "totalseg_ct_ctpreset": (TOTALSEG / "example_ct_sm.nii.gz", ["--modality", "CT"], TOTALSEG / "example_seg.nii.gz",
                             5),
    "chaos_ct_nifti": (CHAOS_CT / "nifti" / "chaos_ct_case_ct_HU.nii.gz", [],
                       CHAOS_CT / "nifti" / "chaos_ct_case_liver_expert.nii.gz", 1),
    "chaos_ct_dicom": (CHAOS_CT / "DICOM_anon", [], CHAOS_CT / "nifti" / "chaos_ct_case_liver_expert.nii.gz", 1),
    "chaos_ct_dicom_ctpreset": (CHAOS_CT / "DICOM_anon", ["--modality", "CT"],
                                CHAOS_CT / "nifti" / "chaos_ct_case_liver_expert.nii.gz", 1),
}


def dice(mask_path: Path, reference_path: Path, label: int) -> float:
    """Dice of a predicted mask against a reference label, the reference resampled (nearest) onto its grid."""
    mask = sitk.ReadImage(str(mask_path))
    reference = sitk.ReadImage(str(reference_path))
    reference = sitk.Resample(reference, mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0, reference.GetPixelID())
    predicted = sitk.GetArrayViewFromImage(mask) != 0
    expected = sitk.GetArrayViewFromImage(reference) == label
    total = int(predicted.sum() + expected.sum())
    return 2.0 * int(np.logical_and(predicted, expected).sum()) / total if total else 1.0


def warnings_before_network(path: Path, model: str, extra: list[str]) -> list[str]:
    """What the scan checks say about ``path`` with the model's card and the preset ``extra`` asks for."""
    card = read_model_card(bundled_weights_path(model))
    image = read_case(expand_inputs([str(path)])[0])
    intensity = extra[extra.index("--modality") + 1] if "--modality" in extra else None
    preset = resolve_intensity(intensity, card)
    return scan_warnings(sitk.GetArrayViewFromImage(image), preset, card, ScanInfo.from_image(image))


def segment(inputs: list[Path], out: Path, model: str, extra: list[str], device: str) -> dict[str, dict[str, str]]:
    """``rmamamba segment`` the inputs with the model's shipped weights; summary rows by case."""
    code = main(["segment", *map(str, inputs), "-o", str(out), "--model", model, "--device", device, "-q",
                 "--overwrite", *extra])
    if code not in (0, 3):
        raise SystemExit(f"rmamamba segment failed (exit {code}) for {inputs}")
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def table_row(model: str, case: str, group: str, run: str, dice_value: float | None, measures: dict[str, float],
              warnings: list[str]) -> dict[str, object]:
    """One row of the calibration table, with the verdict under the model card's current limits."""
    verdict = judge_for_card(measures, read_model_card(bundled_weights_path(model)))
    return {"model": model, "case": case, "group": group, "run": run,
            "dice": "" if dice_value is None else round(dice_value, 4),
            **{key: round(float(measures[key]), 6) for key in MEASURES},
            "warned": int(bool(warnings)), "verdict": verdict.summary(), "warnings": "; ".join(warnings)}


def unseen_default_weights(work: Path, device: str) -> list[dict[str, object]]:
    """The default weights on their validation subjects (never trained on)."""
    card = read_model_card(bundled_weights_path("T"))
    cases = list(card.training["data"]["valid_cases"])
    images = [CHAOS_MR / "images" / f"{case}_image.nii.gz" for case in cases]
    rows = segment(images, work / "T_unseen", "T", [], device)
    table = []
    for case in cases:
        row = rows[f"{case}_image"]
        value = dice(Path(row["mask"]), CHAOS_MR / "liver_masks" / f"{case}_liver.nii.gz", 1)
        warnings = warnings_before_network(CHAOS_MR / "images" / f"{case}_image.nii.gz", "T", [])
        table.append(table_row("T", case, "unseen", "validation subject", value, summary_measures(row), warnings))
    return table


def unseen_cross_validation(cv: Path) -> list[dict[str, object]]:
    """The U-Net recipe's out-of-fold results (every subject segmented by a fold model that never saw it), read
    from ``crossval.csv`` (Dice and measures; older tables: the measures from ``out_of_fold/summary.csv``)."""
    with (cv / "out_of_fold" / "summary.csv").open(newline="", encoding="utf-8") as handle:
        summary = {row["case"]: row for row in csv.DictReader(handle)}
    with (cv / "crossval.csv").open(newline="", encoding="utf-8") as handle:
        scores = [row for row in csv.DictReader(handle) if row["case"] != "mean"]
    table = []
    for score in scores:
        case = score["case"]
        row = summary.get(case) or summary[f"{case}_image"]
        if row["status"] != "ok":
            raise SystemExit(f"{cv}: out-of-fold case {case} has status {row['status']}: {row['message']}")
        measures = summary_measures(score) if score.get("uncertain_share") else summary_measures(row)
        warnings = warnings_before_network(Path(row["input"]), "UNET", [])
        table.append(table_row("UNET", case, "unseen", f"out of fold (fold {score['fold']})", float(score["dice"]),
                               measures, warnings))
    return table


def foreign(model: str, work: Path, device: str) -> list[dict[str, object]]:
    """The model on every foreign scan."""
    table = []
    for name, (path, extra, reference, label) in FOREIGN.items():
        (row,) = segment([path], work / f"{model}_{name}", model, extra, device).values()
        value = dice(Path(row["mask"]), reference, label)
        run = " ".join(extra) or "default preset"
        table.append(table_row(model, name, "foreign", run, value, summary_measures(row),
                               warnings_before_network(path, model, extra)))
    return table


def is_good(row: dict[str, object]) -> bool:
    return row["group"] == "unseen" and row["dice"] != "" and float(row["dice"]) >= GOOD_DICE


def is_flagged(row: dict[str, object]) -> bool:
    return str(row["verdict"]).startswith("check")


def rates(rows: list[dict[str, object]]) -> dict[str, object]:
    """False alarms on unseen good results, detections (flagged or warned) and flags on foreign results."""
    good = [r for r in rows if is_good(r)]
    bad = [r for r in rows if r["group"] == "unseen" and not is_good(r)]
    foreign_rows = [r for r in rows if r["group"] == "foreign"]
    false_alarms = sum(is_flagged(r) for r in good)
    detected = sum(is_flagged(r) or int(r["warned"]) == 1 for r in foreign_rows)
    flagged = sum(is_flagged(r) for r in foreign_rows)
    return {"unseen_good": len(good), "false_alarms": false_alarms,
            "false_alarm_rate": round(false_alarms / len(good), 4) if good else None,
            "foreign": len(foreign_rows), "detected": detected,
            "detection_rate": round(detected / len(foreign_rows), 4) if foreign_rows else None,
            "flagged_by_verdict": flagged, "unseen_bad": len(bad), "unseen_bad_flagged": sum(map(is_flagged, bad))}


def propose(rows: list[dict[str, object]]) -> dict[str, float]:
    """Each uncertainty limit: MARGIN x the largest unseen good value, rounded up to 0.01, at least the default."""
    good = [r for r in rows if is_good(r)]
    proposal = {}
    for measure in MODEL_MEASURES:
        default = getattr(DEFAULT_THRESHOLDS, f"{measure}_max")
        largest = max((float(r[measure]) for r in good), default=0.0)
        proposal[f"{measure}_max"] = max(default, math.ceil(100.0 * MARGIN * largest - 1e-9) / 100.0)
    return proposal


def read_table(path: Path) -> dict[str, list[dict[str, object]]]:
    """The rows of an existing table by model, verdicts re-judged with the cards' current limits."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows: list[dict[str, object]] = list(csv.DictReader(handle))
    per_model: dict[str, list[dict[str, object]]] = {model: [] for model in MODELS}
    for row in rows:
        card = read_model_card(bundled_weights_path(str(row["model"])))
        row["verdict"] = judge_for_card({k: float(row[k]) for k in MEASURES}, card).summary()
        per_model[str(row["model"])].append(row)
    return per_model


def write_table(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_card_quality(model: str, limits: dict[str, float], calibration: dict[str, object]) -> Path:
    """Set the shipped card's ``quality`` field (only that field; the rest of the JSON is kept as it is)."""
    path = model_card_path(bundled_weights_path(model))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["quality"] = QualityThresholds(limits["uncertain_share_max"], limits["outside_share_max"],
                                        calibration).to_dict()
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def calibration_record(model: str, counts: dict[str, object]) -> dict[str, object]:
    """The ``calibration`` block of a card: what the limits rest on and the rates they give."""
    unseen = ("the 3 CHAOS T2-SPIR validation subjects of the default weights (02, 20, 36; until a cross-validation "
              "of their recipe exists, their limits rest on these 3 unseen subjects)" if model == "T" else
              "the 16 CHAOS T2-SPIR subjects, each segmented by a 4-fold cross-validation model (the shipped "
              "U-Net's recipe) that never saw it")
    return {"unseen_cases": unseen, "good_dice": GOOD_DICE, "unseen_good": counts["unseen_good"],
            "false_alarms": counts["false_alarms"], "false_alarm_rate": counts["false_alarm_rate"],
            "foreign_cases": ", ".join(FOREIGN), "foreign": counts["foreign"], "detected": counts["detected"],
            "detection_rate": counts["detection_rate"], "flagged_by_verdict": counts["flagged_by_verdict"],
            "unseen_bad": counts["unseen_bad"], "unseen_bad_flagged": counts["unseen_bad_flagged"],
            "rule": f"{MARGIN} x the largest unseen good value, rounded up to 0.01, at least the default",
            "table": "Testing/data/quality_calibration.csv", "script": "Testing/calibrate_quality.py"}


def report(model: str, rows: list[dict[str, object]]) -> dict[str, object]:
    """Print the model's rows, current limits and rates, and the proposal; returns the rates."""
    limits = thresholds_for(read_model_card(bundled_weights_path(model)))
    counts = rates(rows)
    print(f"\n{model}: limits uncertain_share <= {limits.uncertain_share_max}, outside_share <= "
          f"{limits.outside_share_max}; proposed {propose(rows)}")
    for row in rows:
        print(f"  {row['group']:8} {row['case']:26} dice {row['dice']!s:7} unc {float(row['uncertain_share']):.3f} "
              f"out {float(row['outside_share']):.4f} {float(row['liver_ml']):7.0f} mL warned {row['warned']} "
              f"{str(row['verdict'])[:90]}")
    print(f"  false alarms {counts['false_alarms']}/{counts['unseen_good']} unseen good; detected "
          f"{counts['detected']}/{counts['foreign']} foreign ({counts['flagged_by_verdict']} by the verdict); "
          f"flagged {counts['unseen_bad_flagged']}/{counts['unseen_bad']} unseen bad (Dice < {GOOD_DICE})")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet-cv", type=Path, help="the U-Net cross-validation folder (rmamamba train --folds 4)")
    parser.add_argument("--from-table", action="store_true",
                        help="segment nothing: re-judge the rows of the existing table (-o) with the cards' limits")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "quality_calibration",
                        help="segment outputs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", type=Path, default=TABLE)
    parser.add_argument("--write-cards", action="store_true",
                        help="write the proposed limits and their rates into the shipped cards, then the table")
    return parser.parse_args(argv)


def main_calibrate(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.from_table:
        per_model = read_table(args.output)
    elif args.unet_cv is None:
        raise SystemExit("give --unet-cv (the U-Net cross-validation folder) or --from-table")
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        per_model = {"T": unseen_default_weights(args.work, args.device) + foreign("T", args.work, args.device),
                     "UNET": unseen_cross_validation(args.unet_cv) + foreign("UNET", args.work, args.device)}
    if args.write_cards:
        for model, rows in per_model.items():
            limits = propose(rows)
            write_card_quality(model, limits, {})
            card = read_model_card(bundled_weights_path(model))
            for row in rows:  # the verdicts under the new limits
                row["verdict"] = judge_for_card({k: float(row[k]) for k in MEASURES}, card).summary()
            write_card_quality(model, limits, calibration_record(model, rates(rows)))
    for model, rows in per_model.items():
        report(model, rows)
    write_table([row for model in MODELS for row in per_model[model]], args.output)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main_calibrate())
