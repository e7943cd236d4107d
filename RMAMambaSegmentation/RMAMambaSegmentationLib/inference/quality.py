"""A quality verdict for every segmentation, computed from the result itself: ``ok`` or ``check`` with reasons.

The network always returns a mask, even for a scan it was never trained for (a CT, another MR sequence); this
verdict says when the mask is implausible. Measures (on the axial stack, see :func:`quality_measures`):

* ``liver_ml`` -- the liver volume, against the adult range;
* ``uncertain_share`` -- the share of the predicted liver's voxels whose probability lies in (0.1, 0.9): a
  network on familiar ground is sure inside the organ and hesitates only at its border;
* ``outside_share`` -- the share of the thresholded voxels (before post-processing) lying outside the largest
  component, and ``components`` -- how many components of at least 1 mL that mask has;
* ``extent_mm`` -- the liver's cranio-caudal extent (slices holding liver times the slice spacing), and
  ``liver_slices`` -- how many slices hold liver.

The thresholds (:data:`RULES`) were calibrated on the 16 CHAOS T2-SPIR subjects with the default weights and on
foreign scans (CHAOS CT, TotalSegmentator's MR example); README gives the table and the margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.imaging.postprocessing import bounding_box

OK = "ok"
CHECK = "check"
#: Probabilities strictly between these two are "uncertain".
UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.1, 0.9
#: Components smaller than this (mL) are not counted in ``components``.
COMPONENT_MIN_ML = 1.0


@dataclass(frozen=True)
class Rule:
    """A measure must lie within ``[low, high]`` (None: no bound); ``reason`` is formatted with the value."""

    measure: str
    low: float | None
    high: float | None
    reason: str

    def broken_by(self, value: float) -> bool:
        return (self.low is not None and value < self.low) or (self.high is not None and value > self.high)


#: The verdict's rules, in the order their reasons are listed (calibration: README, "Quality verdict").
RULES = (
    Rule("liver_ml", 700.0, 3000.0, "liver volume {value:.0f} mL outside the adult range 700-3000 mL"),
    Rule("uncertain_share", None, 0.25,
         "{percent:.0f} % of the liver voxels are uncertain (0.1 < p < 0.9; at most 25 % expected)"),
    Rule("outside_share", None, 0.05,
         "{percent:.0f} % of the thresholded voxels lie outside the largest component (at most 5 % expected)"),
    Rule("extent_mm", 100.0, 300.0,
         "cranio-caudal extent {value:.0f} mm outside 100-300 mm (liver cut by the field of view, or not a liver)"),
)
#: Below this many slices holding liver, the extent says nothing (a thick-slice scan cannot be judged by it).
MIN_SLICES_FOR_EXTENT = 4


@dataclass
class QualityVerdict:
    """``status`` ``"ok"`` or ``"check"``; ``reasons`` say why a result needs checking; ``measures`` are the
    numbers the rules looked at."""

    status: str
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def summary(self) -> str:
        """``"ok"`` or ``"check: reason; reason"`` (the ``quality`` column of summary.csv)."""
        return OK if self.ok else f"{CHECK}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), "measures": dict(self.measures)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityVerdict:
        if not isinstance(data, dict) or data.get("status") not in (OK, CHECK):
            raise ValueError(f"invalid quality verdict {data!r}")
        return cls(str(data["status"]), [str(r) for r in data.get("reasons") or []],
                   {str(k): float(v) for k, v in (data.get("measures") or {}).items()})


def uncertain_voxels(probability: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Where ``UNCERTAIN_LOW < probability < UNCERTAIN_HIGH`` (bool; written into ``out`` when given)."""
    result = np.greater(probability, UNCERTAIN_LOW, out=out)
    return np.logical_and(result, probability < UNCERTAIN_HIGH, out=result)


def quality_measures(
    probability_stack: np.ndarray,
    mask_stack: np.ndarray,
    *,
    threshold: float,
    slice_spacing_mm: float,
    voxel_ml: float,
) -> dict[str, float]:
    """The verdict's measures from an axial stack ``(slices, rows, cols)``: ``probability_stack`` before
    post-processing and ``mask_stack`` the final mask (see :func:`measures_from_masks`)."""
    return measures_from_masks(probability_stack > threshold, uncertain_voxels(probability_stack), mask_stack,
                               slice_spacing_mm=slice_spacing_mm, voxel_ml=voxel_ml)


def measures_from_masks(
    raw_mask_stack: np.ndarray,
    uncertain_stack: np.ndarray,
    mask_stack: np.ndarray,
    *,
    slice_spacing_mm: float,
    voxel_ml: float,
) -> dict[str, float]:
    """The verdict's measures from three axial stacks: the thresholded network output before post-processing,
    the uncertain voxels (:func:`uncertain_voxels`) and the final mask. The inference keeps these one byte per voxel
    instead of the float probability; the work here follows the liver's bounding box."""
    mask = mask_stack != 0
    liver_voxels = int(np.count_nonzero(mask))
    measures: dict[str, float] = {"liver_ml": liver_voxels * voxel_ml}
    raw_box = bounding_box(raw_mask_stack)
    if raw_box is None or liver_voxels == 0:
        measures.update(uncertain_share=0.0, outside_share=0.0, components=0.0, extent_mm=0.0, liver_slices=0.0)
        return measures
    box = bounding_box(mask)
    assert box is not None
    uncertain = np.count_nonzero(uncertain_stack[box][mask[box]])
    measures["uncertain_share"] = float(uncertain) / liver_voxels
    raw = np.ascontiguousarray(raw_mask_stack[raw_box] != 0, dtype=np.uint8)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(raw), False))
    sizes = np.bincount(labels.ravel())[1:]
    measures["outside_share"] = float(1.0 - sizes.max() / sizes.sum())
    measures["components"] = float(np.count_nonzero(sizes * voxel_ml >= COMPONENT_MIN_ML))
    slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    measures["liver_slices"] = float(slices.size)
    measures["extent_mm"] = float((slices[-1] - slices[0] + 1) * slice_spacing_mm)
    return measures


def judge(measures: dict[str, float], rules: Sequence[Rule] = RULES) -> QualityVerdict:
    """Apply ``rules`` to ``measures``: ``check`` with one reason per broken rule, else ``ok``."""
    if measures.get("liver_ml", 0.0) <= 0.0:
        return QualityVerdict(CHECK, ["no liver found"], dict(measures))
    reasons = []
    for rule in rules:
        if rule.measure not in measures:
            continue
        if rule.measure == "extent_mm" and measures.get("liver_slices", 0.0) < MIN_SLICES_FOR_EXTENT:
            continue
        value = float(measures[rule.measure])
        if rule.broken_by(value):
            reasons.append(rule.reason.format(value=value, percent=100.0 * value))
    return QualityVerdict(CHECK if reasons else OK, reasons, dict(measures))


def assess(
    raw_mask_stack: np.ndarray,
    uncertain_stack: np.ndarray,
    mask_stack: np.ndarray,
    *,
    slice_spacing_mm: float,
    voxel_ml: float,
) -> QualityVerdict:
    """:func:`measures_from_masks` then :func:`judge`."""
    return judge(measures_from_masks(raw_mask_stack, uncertain_stack, mask_stack, slice_spacing_mm=slice_spacing_mm,
                                     voxel_ml=voxel_ml))
