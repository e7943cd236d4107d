"""Segmentation metrics: overlap scores, surface distances in millimetres, and the paper's per-slice protocol.

Definitions (``P`` predicted voxels, ``R`` reference voxels, ``TP = |P & R|``):

* Dice ``2 TP / (|P| + |R|)``; IoU (Jaccard) ``TP / |P | R|``; recall ``TP / |R|``; precision ``TP / |P|``;
  F2 ``5 precision recall / (4 precision + recall)``.
* Empty-mask rule (the limit of the paper's ``(x + eps) / (y + eps)`` convention): a ratio ``0 / 0`` is 1. Hence
  both masks empty -> every overlap score is 1; an empty reference with a non-empty prediction -> Dice, IoU,
  precision and F2 are 0 and recall is 1; an empty prediction with a non-empty reference -> Dice, IoU, recall and
  F2 are 0 and precision is 1.
* Surfaces are the voxels of a mask with at least one face neighbour (6-connectivity in 3D, 4 in 2D) outside the
  mask; outside the image counts as inside the mask (as in the CHAOS challenge's evaluation code). Distances are
  Euclidean, between voxel centres, in the units of the spacing (millimetres).
* Hausdorff distance (``hd``, the CHAOS challenge's "maximum symmetric surface distance") is the largest distance
  from a surface voxel of either mask to the nearest surface voxel of the other; HD95 is the 95th percentile of
  the pooled distances of both directions (linear interpolation); ASSD is their mean. Both masks empty -> 0; exactly
  one empty -> ``inf`` (undefined: there is no surface to measure to).

The paper's own protocol computes the overlap scores per 2D slice and averages them over all slices with equal
weight (empty slices included, scoring 1 when the prediction is empty too); its "HD" is SciPy's
``directed_hausdorff`` applied to the two binary slices, which treats each image *row* as a point (see
:func:`row_hausdorff_paper`). Per-slice means and per-volume scores are different quantities and are not comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OVERLAP_KEYS = ("dice", "iou", "recall", "precision", "f2")
DISTANCE_KEYS = ("hd_mm", "hd95_mm", "assd_mm")


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with ``0 / 0 = 1`` (the empty-mask rule)."""
    if denominator == 0:
        return 1.0 if numerator == 0 else float("inf")
    return float(numerator) / float(denominator)


def _f_beta(precision: float, recall: float, beta: float) -> float:
    beta2 = beta * beta
    denominator = beta2 * precision + recall
    return 0.0 if denominator == 0 else (1 + beta2) * precision * recall / denominator


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool:
        array = array != 0
    if array.ndim < 1:
        raise ValueError(f"{name} must be an array, got a scalar")
    return array


def overlap_scores(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice, IoU, recall, precision and F2 of two binary masks of the same shape (nonzero = foreground)."""
    pred = _as_bool(prediction, "prediction")
    ref = _as_bool(reference, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    recall = _ratio(tp, n_ref)
    precision = _ratio(tp, n_pred)
    return {
        "dice": _ratio(2 * tp, n_pred + n_ref),
        "iou": _ratio(tp, n_pred + n_ref - tp),
        "recall": recall,
        "precision": precision,
        "f2": 1.0 if n_pred == 0 and n_ref == 0 else _f_beta(precision, recall, 2.0),
    }


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean array of the mask's surface voxels: foreground with a face neighbour in the background.

    Positions outside the array count as foreground, so a mask touching the image border is not closed there.
    """
    array = _as_bool(mask, "mask")
    padded = np.pad(array, 1, mode="constant", constant_values=True)
    eroded = array.copy()
    for axis in range(array.ndim):
        for shift in (0, 2):
            index = [slice(1, -1)] * array.ndim
            index[axis] = slice(shift, shift + array.shape[axis])
            eroded &= padded[tuple(index)]
    return array & ~eroded


def _distance_to(surface: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (in spacing units) of every voxel centre to the nearest voxel of ``surface``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(surface.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    # Every voxel of a surface image lies on the contour of that image, so Maurer's unsigned distance to the
    # contour is the distance to the nearest surface voxel centre (0 on the surface itself).
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayFromImage(distance))


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union plus one voxel (distances are unchanged)."""
    union = pred | ref
    index = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        present = np.flatnonzero(union.any(axis=other))
        index.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    return pred[tuple(index)], ref[tuple(index)]


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each prediction surface voxel to the reference surface, and the other way round.

    ``spacing`` gives the voxel size along each *array* axis (the array's order, e.g. (k, j, i) for a SimpleITK
    array; default 1). Both masks must be non-empty.
    """
    pred = _as_bool(prediction, "prediction")
    ref = _as_bool(reference, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} does not fit a {pred.ndim}D mask")
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    pred, ref = _crop_to_union(pred, ref)
    pred_surface = surface_voxels(pred)
    ref_surface = surface_voxels(ref)
    pred_to_ref = _distance_to(ref_surface, spacing)[pred_surface]
    ref_to_pred = _distance_to(pred_surface, spacing)[ref_surface]
    return pred_to_ref.astype(np.float64), ref_to_pred.astype(np.float64)


def distance_scores(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """``hd_mm``, ``hd95_mm`` and ``assd_mm`` (0 when both masks are empty, ``inf`` when exactly one is)."""
    pred = _as_bool(prediction, "prediction")
    ref = _as_bool(reference, "reference")
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return dict.fromkeys(DISTANCE_KEYS, 0.0)
    if has_pred != has_ref:
        return dict.fromkeys(DISTANCE_KEYS, float("inf"))
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    pooled = np.concatenate([pred_to_ref, ref_to_pred])
    return {
        "hd_mm": float(pooled.max()),
        "hd95_mm": float(np.percentile(pooled, 95)),
        "assd_mm": float(pooled.mean()),
    }


def row_hausdorff_paper(reference: np.ndarray, prediction: np.ndarray) -> float:
    """The paper's "HD" of one slice: SciPy ``directed_hausdorff(reference, prediction)`` on the binary arrays.

    Each row of a 2D mask is a point of R^columns; the value is the largest, over reference rows, of the Euclidean
    distance to the closest prediction row (the square root of a Hamming distance). Not a distance in the image
    plane; always finite. Kept only to compare with the paper's tables.
    """
    ref = _as_bool(reference, "reference").astype(np.float64)
    pred = _as_bool(prediction, "prediction").astype(np.float64)
    if ref.ndim != 2 or ref.shape != pred.shape:
        raise ValueError(f"two 2D masks of the same shape are needed, got {ref.shape} and {pred.shape}")
    hamming = ref @ (1.0 - pred).T + (1.0 - ref) @ pred.T
    return float(np.sqrt(hamming.min(axis=1).max()))


@dataclass(frozen=True)
class SliceScores:
    """Per-slice overlap scores of one volume (one value per slice), and the paper's row Hausdorff."""

    scores: dict[str, np.ndarray]

    @property
    def n_slices(self) -> int:
        return len(next(iter(self.scores.values())))

    def means(self) -> dict[str, float]:
        return {key: float(np.mean(values)) for key, values in self.scores.items()}


def slice_scores(prediction_stack: np.ndarray, reference_stack: np.ndarray) -> SliceScores:
    """Overlap scores and the paper's row Hausdorff of every slice of two ``(n_slices, rows, cols)`` stacks."""
    pred = _as_bool(prediction_stack, "prediction")
    ref = _as_bool(reference_stack, "reference")
    if pred.ndim != 3 or pred.shape != ref.shape:
        raise ValueError(f"two slice stacks of the same shape are needed, got {pred.shape} and {ref.shape}")
    rows: dict[str, list[float]] = {f"slice_{key}": [] for key in (*OVERLAP_KEYS, "hd_rows")}
    for index in range(pred.shape[0]):
        for key, value in overlap_scores(pred[index], ref[index]).items():
            rows[f"slice_{key}"].append(value)
        rows["slice_hd_rows"].append(row_hausdorff_paper(ref[index], pred[index]))
    return SliceScores({key: np.asarray(values, dtype=np.float64) for key, values in rows.items()})


def volume_scores(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """All per-volume scores: :data:`OVERLAP_KEYS` and :data:`DISTANCE_KEYS`, plus voxel counts and RAVD (%)."""
    pred = _as_bool(prediction, "prediction")
    ref = _as_bool(reference, "reference")
    scores = overlap_scores(pred, ref)
    scores.update(distance_scores(pred, ref, spacing))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_ref:
        scores["ravd_percent"] = 100.0 * abs(n_pred - n_ref) / n_ref
    else:
        scores["ravd_percent"] = 0.0 if not n_pred else float("inf")
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else float("nan")
    scores["pred_ml"] = n_pred * voxel_ml
    scores["ref_ml"] = n_ref * voxel_ml
    return scores
