"""Compare predicted liver masks with reference masks, file by file or folder by folder (paired by case name).

Per case: the per-volume scores of :mod:`.metrics` (Dice, IoU, recall, precision, F2, HD, HD95, ASSD in mm from
the image spacing, RAVD) and, optionally, the paper's per-slice means over the axial slices. The mean row averages
the per-volume scores over cases (distances over the cases where they are finite, the others counted), and the
per-slice scores over *all slices of all cases* with equal weight, as the paper's test script does.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from RMAMambaSegmentationLib.errors import InputFileError, InvalidImageError
from RMAMambaSegmentationLib.evaluation import metrics
from RMAMambaSegmentationLib.files.pairing import (
    case_key,
    index_by_key,
    list_volume_files,
    pair_by_key,
    strip_extension,
)

logger = logging.getLogger(__name__)

#: Keys always reported (the ``--json`` contract), then the extra per-volume keys.
MAIN_KEYS = ("dice", "iou", "recall", "precision", "f2", "hd_mm", "hd95_mm")
EXTRA_KEYS = ("assd_mm", "ravd_percent", "pred_ml", "ref_ml")
SLICE_KEYS = tuple(f"slice_{k}" for k in (*metrics.OVERLAP_KEYS, "hd_rows"))
#: Relative spacing difference above which two images are refused as not on the same grid.
SPACING_TOLERANCE = 1e-3


@dataclass
class CaseResult:
    """Scores of one prediction/reference pair."""

    case: str
    prediction: Path
    reference: Path
    scores: dict[str, float]
    n_slices: int = 0
    slice_sums: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"case": self.case, **self.scores, "n_slices": self.n_slices}


@dataclass
class EvaluationReport:
    """All cases and their means."""

    cases: list[CaseResult]
    per_slice: bool

    @property
    def keys(self) -> tuple[str, ...]:
        return (*MAIN_KEYS, *EXTRA_KEYS, *(SLICE_KEYS if self.per_slice else ()))

    def means(self) -> dict[str, Any]:
        """Mean scores; distances averaged over the cases where they are finite (``*_undefined`` counts the rest)."""
        result: dict[str, Any] = {"case": "mean", "n_cases": len(self.cases)}
        for key in (*MAIN_KEYS, *EXTRA_KEYS):
            values = np.array([c.scores[key] for c in self.cases], dtype=np.float64)
            finite = values[np.isfinite(values)]
            result[key] = float(finite.mean()) if finite.size else float("nan")
            if key in ("hd_mm", "hd95_mm", "assd_mm", "ravd_percent") and finite.size < values.size:
                result[f"{key}_undefined"] = int(values.size - finite.size)
        if self.per_slice:
            total = sum(c.n_slices for c in self.cases)
            result["n_slices"] = total
            for key in SLICE_KEYS:
                result[key] = sum(c.slice_sums[key] for c in self.cases) / total if total else float("nan")
        return result


def read_mask(path: Path, label: int | None = None):
    """A mask file as ``(SimpleITK image, boolean (k, j, i) array)``: voxels ``== label``, or nonzero voxels."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputFileError(f"cannot read {path} as an image: {error}") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(
            f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel: a label map is needed"
        )
    if image.GetDimension() not in (2, 3):
        raise InvalidImageError(f"{path.name} is {image.GetDimension()}D: a 2D or 3D label map is needed")
    array = sitk.GetArrayViewFromImage(image)
    mask = (array == label) if label is not None else (array != 0)
    if label is not None and not mask.any():
        logger.warning("%s has no voxel with label %s", path.name, label)
    return image, np.ascontiguousarray(mask)


def _check_same_grid(pred_image, ref_image, pred_path: Path, ref_path: Path) -> None:
    if pred_image.GetSize() != ref_image.GetSize():
        raise InvalidImageError(
            f"{pred_path.name} has size {pred_image.GetSize()} but {ref_path.name} has size {ref_image.GetSize()}: "
            "prediction and reference must be on the same voxel grid"
        )
    pred_spacing = np.array(pred_image.GetSpacing())
    ref_spacing = np.array(ref_image.GetSpacing())
    if np.any(np.abs(pred_spacing - ref_spacing) > SPACING_TOLERANCE * np.abs(ref_spacing)):
        raise InvalidImageError(
            f"{pred_path.name} has spacing {tuple(pred_spacing)} but {ref_path.name} has {tuple(ref_spacing)}"
        )
    same_direction = np.allclose(pred_image.GetDirection(), ref_image.GetDirection(), atol=1e-4)
    origin_tolerance = 1e-3 * float(ref_spacing.max()) + 1e-3
    same_origin = np.allclose(pred_image.GetOrigin(), ref_image.GetOrigin(), atol=origin_tolerance)
    if not (same_direction and same_origin):
        logger.warning("%s and %s differ in origin or direction; comparing voxel by voxel", pred_path.name,
                       ref_path.name)


def resize_bilinear(stack: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(n, rows, cols)`` -> ``(n, size[0], size[1])`` bilinearly with half-pixel centres and no antialiasing
    (OpenCV's ``INTER_LINEAR`` as the official scripts use it)."""
    values = np.asarray(stack, dtype=np.float32)
    for axis, new in ((1, int(size[0])), (2, int(size[1]))):
        old = values.shape[axis]
        if old == new:
            continue
        position = (np.arange(new, dtype=np.float64) + 0.5) * (old / new) - 0.5
        position = np.clip(position, 0.0, old - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, old - 1)
        weight = (position - low).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = new
        weight = weight.reshape(shape)
        values = np.take(values, low, axis=axis) * (1 - weight) + np.take(values, high, axis=axis) * weight
    return values


def _axial_stacks(pred: np.ndarray, ref: np.ndarray, ref_image, slice_size: Sequence[int] | None):
    from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation

    if ref.ndim == 2:
        pred_stack, ref_stack = pred[None], ref[None]
    else:
        orientation = AxialReorientation.from_image(ref_image, warn_oblique=False)
        pred_stack, ref_stack = orientation.to_axial(pred), orientation.to_axial(ref)
    if slice_size is not None:
        pred_stack = resize_bilinear(pred_stack, slice_size) > 0.5
        ref_stack = resize_bilinear(ref_stack, slice_size) > 0.5
    return pred_stack, ref_stack


def evaluate_pair(
    prediction: str | Path,
    reference: str | Path,
    *,
    case: str | None = None,
    label: int | None = None,
    pred_label: int | None = None,
    per_slice: bool = True,
    slice_size: Sequence[int] | None = None,
) -> CaseResult:
    """Scores of one prediction file against one reference file (``label``: the reference's liver value,
    ``pred_label``: the prediction's; default nonzero)."""
    pred_path, ref_path = Path(prediction), Path(reference)
    pred_image, pred = read_mask(pred_path, pred_label)
    ref_image, ref = read_mask(ref_path, label)
    _check_same_grid(pred_image, ref_image, pred_path, ref_path)
    spacing = tuple(reversed(ref_image.GetSpacing()))  # array axis order
    scores = metrics.volume_scores(pred, ref, spacing)
    result = CaseResult(case or ref_path.name, pred_path, ref_path, scores)
    if per_slice:
        pred_stack, ref_stack = _axial_stacks(pred, ref, ref_image, slice_size)
        by_slice = metrics.slice_scores(pred_stack, ref_stack)
        result.n_slices = by_slice.n_slices
        result.slice_sums = {key: float(values.sum()) for key, values in by_slice.scores.items()}
        scores.update(by_slice.means())
    logger.info("%s: Dice %.4f, HD %.2f mm", result.case, scores["dice"], scores["hd_mm"])
    return result


def prefer_liver_masks(paths: list[Path]) -> list[Path]:
    """An output folder of ``rmamamba segment`` as masks: where one case has several volume files and exactly one
    of them is ``NAME_liver.*``, keep that one (the ``.seg.nrrd`` and ``_probability`` files are the same case)."""
    by_case: dict[str, list[Path]] = {}
    for path in paths:
        by_case.setdefault(case_key(path), []).append(path)
    kept = []
    for files in by_case.values():
        masks = [path for path in files if (strip_extension(path.name) or "").lower().endswith("_liver")]
        kept.extend(masks if len(files) > 1 and len(masks) == 1 else files)
    return sorted(kept)


class UnpairedFilesError(InputFileError):
    """Some predictions or references have no partner; ``unpaired`` describes them (for the caller's wording)."""

    def __init__(self, unpaired: str) -> None:
        super().__init__(f"unpaired files (pairing is by case name): {unpaired}; allow unpaired files to score only "
                         "the cases found in both")
        self.unpaired = unpaired


def _listed(keys: set[str], index: dict[str, Path], limit: int = 10) -> str:
    names = [index[key].name for key in sorted(keys)]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _refuse_unpaired(preds: dict[str, Path], refs: dict[str, Path]) -> None:
    """:class:`UnpairedFilesError` listing the predictions without a reference and the references without one."""
    only_pred, only_ref = set(preds) - set(refs), set(refs) - set(preds)
    problems = []
    if only_pred:
        problems.append(f"{len(only_pred)} prediction(s) without a reference: {_listed(only_pred, preds)}")
    if only_ref:
        problems.append(f"{len(only_ref)} reference(s) without a prediction: {_listed(only_ref, refs)}")
    if problems:
        raise UnpairedFilesError("; ".join(problems))


def find_pairs(
    prediction: str | Path, reference: str | Path, *, allow_unpaired: bool = False
) -> list[tuple[str, Path, Path]]:
    """``[(case, prediction file, reference file)]`` from two files or two folders (paired by case name)."""
    pred_path, ref_path = Path(prediction), Path(reference)
    for path in (pred_path, ref_path):
        if not path.exists():
            raise InputFileError(f"{path} does not exist")
    if pred_path.is_file() and ref_path.is_file():
        return [(case_key(ref_path), pred_path, ref_path)]
    if pred_path.is_dir() and ref_path.is_dir():
        preds = index_by_key(prefer_liver_masks(list_volume_files(pred_path)), "predictions")
        refs = index_by_key(prefer_liver_masks(list_volume_files(ref_path)), "references")
        if not preds:
            raise InputFileError(f"no volume file (.nii.gz, .nrrd, ...) in {pred_path}")
        if not refs:
            raise InputFileError(f"no volume file (.nii.gz, .nrrd, ...) in {ref_path}")
        if not allow_unpaired:
            _refuse_unpaired(preds, refs)
        pairs = pair_by_key(preds, refs, left_name="prediction", right_name="reference", allow_unpaired=True)
        skipped = len(preds) + len(refs) - 2 * len(pairs)
        if skipped:
            logger.warning("%d unpaired files skipped", skipped)
        return pairs
    raise InputFileError("give two files or two folders (prediction and reference), not a file and a folder")


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    *,
    label: int | None = None,
    pred_label: int | None = None,
    per_slice: bool = True,
    slice_size: Sequence[int] | None = None,
    allow_unpaired: bool = False,
) -> EvaluationReport:
    """Evaluate every pair found by :func:`find_pairs`."""
    pairs = find_pairs(prediction, reference, allow_unpaired=allow_unpaired)
    cases = [
        evaluate_pair(
            p, r, case=case, label=label, pred_label=pred_label, per_slice=per_slice, slice_size=slice_size
        )
        for case, p, r in pairs
    ]
    return EvaluationReport(cases, per_slice)


def json_safe(value: Any) -> Any:
    """Non-finite floats become None (JSON has no infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(report: EvaluationReport, path: str | Path) -> Path:
    """One row per case plus a ``mean`` row; infinite distances written as ``inf``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["case", *report.keys, "n_slices", "prediction", "reference"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for result in report.cases:
            writer.writerow({**result.row(), "prediction": str(result.prediction), "reference": str(result.reference)})
        writer.writerow(report.means())
    return path


def format_table(report: EvaluationReport) -> str:
    """A fixed-width text table of the main scores (and the per-slice Dice when computed)."""
    keys = list(MAIN_KEYS) + (["slice_dice"] if report.per_slice else [])
    rows = [result.row() for result in report.cases] + [report.means()]
    width = max(12, *(len(str(row["case"])) for row in rows))
    lines = [f"{'case':<{width}} " + " ".join(f"{k:>10}" for k in keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key, float("nan"))
            cells.append(f"{value:>10.4f}" if math.isfinite(value) else f"{value!s:>10}")
        lines.append(f"{row['case']!s:<{width}} " + " ".join(cells))
    return "\n".join(lines)
