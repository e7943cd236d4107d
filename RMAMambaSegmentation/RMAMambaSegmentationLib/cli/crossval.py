"""``rmamamba train --folds K``: subject-level cross-validation through the normal ``segment`` + ``evaluate`` path.

Every case of the data (training and validation cases together; test cases stay out) is assigned to one of K folds
(cases in natural order, case ``i`` to fold ``i mod K``). For each fold a model is trained on the other folds with
the same settings and its **final** weights (``last.pt``: no checkpoint is chosen on the held-out cases) segment
the held-out cases with ``rmamamba segment``. Every case is then predicted by a model that never saw it; ``rmamamba
evaluate`` scores these out-of-fold predictions, and ``crossval.csv`` joins the scores with each case's fold and
quality verdict: the accuracy estimate of the recipe, and the calibration data of the quality verdict.

Layout of ``OUT``: ``fold_1`` ... ``fold_K`` (each a training folder with ``finished.json`` once done),
``out_of_fold/`` (the ``segment`` outputs of every case), ``references/`` (links to the reference masks),
``evaluation.csv`` and ``crossval.csv``. An interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.training.layouts import CaseSource, DataSplits, natural_key

logger = logging.getLogger(__name__)

FINISHED_NAME = "finished.json"
#: The quality verdict's measures (as in summary.csv), so that the verdict's calibration reads this one table.
MEASURE_COLUMNS = ("liver_ml", "uncertain_share", "outside_share", "components", "extent_mm", "liver_slices")
CROSSVAL_COLUMNS = ("case", "fold", "dice", "hd95_mm", "volume_error_percent", "pred_ml", "ref_ml", "quality",
                    *MEASURE_COLUMNS)


def fold_splits(data: DataSplits, folds: int) -> list[DataSplits]:
    """K training/validation splits of ``data``'s training and validation cases (case ``i`` held out in fold
    ``i mod K``, cases in natural order)."""
    cases = sorted([*data.train, *data.valid], key=lambda case: natural_key(case.key))
    if folds < 2:
        raise InputFileError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(cases) < folds:
        raise InputFileError(f"{len(cases)} cases cannot fill {folds} folds")
    if any(case.kind != "volume" for case in cases):
        raise InputFileError("cross-validation scores whole volumes: give volume files, not a 2D PNG release")
    splits = []
    for fold in range(folds):
        held_out = cases[fold::folds]
        train = [case for case in cases if case not in held_out]
        splits.append(replace(data, train=train, valid=held_out, test=[],
                              split_source=f"fold {fold + 1} of {folds} (cases i mod {folds} == {fold})"))
    return splits


def _fold_finished(folder: Path, epochs: int) -> bool:
    marker = folder / FINISHED_NAME
    if not marker.is_file() or not (folder / "last.pt").is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("epochs") == epochs


def _link_references(cases: list[CaseSource], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = folder / case.mask.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(case.mask.resolve(), link)
    return folder


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def seg_nrrd_measures(path: str | Path) -> dict[str, float]:
    """The quality measures kept in a ``.seg.nrrd`` by ``rmamamba segment`` (its Liver segment's
    ``RMAMamba.QualityMeasures`` tag); empty when it has none."""
    import SimpleITK as sitk

    from RMAMambaSegmentationLib.inference.provenance import QUALITY_MEASURES, parse_measures

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    tags = reader.GetMetaData("Segment0_Tags") if reader.HasMetaDataKey("Segment0_Tags") else ""
    start = tags.find(f"{QUALITY_MEASURES}:")
    if start < 0:
        return {}
    return parse_measures(tags[start + len(QUALITY_MEASURES) + 1:].split("|", 1)[0])


def summary_measures(row: dict[str, str]) -> dict[str, float]:
    """The quality measures of one ``summary.csv`` row: its columns, else (a summary written before they existed)
    the tags of its ``.seg.nrrd``."""
    measures = {key: float(row[key]) for key in MEASURE_COLUMNS if row.get(key) not in (None, "")}
    segmentation = row.get("segmentation") or ""
    if len(measures) < len(MEASURE_COLUMNS) and segmentation and Path(segmentation).is_file():
        measures = {**seg_nrrd_measures(segmentation), **measures}
    return measures


def crossval_table(evaluation_csv: Path, summary_csv: Path, fold_of_case: dict[str, int]) -> list[dict[str, Any]]:
    """One row per case: its fold, Dice, HD95, volume error, quality verdict and the verdict's measures (from
    ``evaluate``'s CSV and ``segment``'s ``summary.csv``)."""
    from RMAMambaSegmentationLib.files.pairing import case_key

    summary = {case_key(row["case"]): row for row in _read_csv(summary_csv)}  # "X_image" -> "X", as evaluate pairs
    rows = []
    for row in _read_csv(evaluation_csv):
        if row["case"] == "mean":
            continue
        pred_ml, ref_ml = float(row["pred_ml"]), float(row["ref_ml"])
        case = summary.get(row["case"], {})
        measures = summary_measures(case) if case else {}
        rows.append({
            "case": row["case"], "fold": fold_of_case.get(row["case"], ""), "dice": float(row["dice"]),
            "hd95_mm": float(row["hd95_mm"]), "volume_error_percent": 100.0 * (pred_ml - ref_ml) / ref_ml,
            "pred_ml": pred_ml, "ref_ml": ref_ml, "quality": case.get("quality", ""),
            **{key: measures.get(key, "") for key in MEASURE_COLUMNS},
        })
    return rows


def _cell(key: str, value: object) -> object:
    """Scores with 4 decimals; the shares of the quality measures with 6 (their limits are a fraction of 1 %)."""
    if not isinstance(value, float):
        return value
    return f"{value:.6f}" if key in MEASURE_COLUMNS else f"{value:.4f}"


def write_crossval_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """``crossval.csv``: the per-case rows and a last ``mean`` row."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CROSSVAL_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(key, value) for key, value in row.items()})
        if rows:
            flagged = sum(1 for row in rows if str(row["quality"]).startswith("check"))
            writer.writerow({"case": "mean", "fold": "", "quality": f"{flagged} of {len(rows)} flagged",
                             **{key: f"{sum(float(r[key]) for r in rows) / len(rows):.4f}"
                                for key in ("dice", "hd95_mm", "volume_error_percent", "pred_ml", "ref_ml")}})
    return path


def run_crossval(config, data: DataSplits, output: str | Path, *, folds: int, resume: bool, progress=None,
                 segment_options: list[str] | None = None, fold_teachers: list[list[str]] | None = None) -> Path:
    """Train the K fold models, segment every held-out case with its fold's final weights, evaluate; returns the
    path of ``crossval.csv``. ``segment_options``: extra ``rmamamba segment`` arguments (e.g. ``--device cpu``);
    ``fold_teachers``: each fold's distillation teachers (they must not have seen its held-out cases)."""
    from RMAMambaSegmentationLib.cli import main
    from RMAMambaSegmentationLib.training.run import run_training
    from RMAMambaSegmentationLib.training.state import STATE_NAME

    out = Path(output)
    predictions = out / "out_of_fold"
    fold_of_case: dict[str, int] = {}
    for number, split in enumerate(fold_splits(data, folds), start=1):
        folder = out / f"fold_{number}"
        fold_of_case.update({case.key: number for case in split.valid})
        if _fold_finished(folder, config.epochs):
            logger.info("fold %d of %d: already trained (%s)", number, folds, folder)
        else:
            state = folder / STATE_NAME
            logger.info("fold %d of %d: training on %d cases, %d held out", number, folds, len(split.train),
                        len(split.valid))
            fold_config = config if fold_teachers is None else replace(config,
                                                                       teachers=tuple(fold_teachers[number - 1]))
            run_training(fold_config, split, folder, resume="" if resume and state.is_file() else None,
                         progress=progress)
            (folder / FINISHED_NAME).write_text(json.dumps({"epochs": config.epochs,
                                                            "held_out": [c.key for c in split.valid]}) + "\n")
        code = main(["segment", *[str(case.image) for case in split.valid], "-o", str(predictions),
                     "--weights", str(folder / "last.pt"), "--overwrite", "-q", *(segment_options or [])])
        if code not in (0, 3):
            raise InputFileError(f"segmenting the held-out cases of fold {number} failed (exit {code})")
    references = _link_references([*data.train, *data.valid], out / "references")
    evaluation = out / "evaluation.csv"
    if main(["evaluate", str(predictions), str(references), "--no-per-slice", "-o", str(evaluation)]) != 0:
        raise InputFileError(f"evaluating the out-of-fold predictions in {predictions} failed")
    table = crossval_table(evaluation, predictions / "summary.csv", fold_of_case)
    path = write_crossval_csv(table, out / "crossval.csv")
    mean = sum(row["dice"] for row in table) / max(len(table), 1)
    logger.info("out-of-fold Dice over %d cases: %.4f (per case: %s)", len(table), mean, path)
    return path
