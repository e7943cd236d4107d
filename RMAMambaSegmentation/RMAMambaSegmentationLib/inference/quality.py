"""A quality verdict for every segmentation, computed from the result itself: ``ok`` or ``check`` with reasons.

The network always returns a mask, even for a scan it was never trained for (a CT, another MR sequence); this
verdict says when the mask is implausible. Measures (on the axial stack, see :func:`quality_measures`):

* ``liver_ml`` -- the liver volume;
* ``uncertain_share`` -- the share of the predicted liver's voxels whose probability lies in (0.1, 0.9): a
  network on familiar ground is sure inside the organ and hesitates only at its border;
* ``outside_share`` -- the share of the thresholded voxels (before post-processing) lying outside the largest
  component, and ``components`` -- how many components of at least 1 mL that mask has (reported, not judged);
* ``extent_mm`` -- the liver's cranio-caudal extent (slices holding liver times the slice spacing), and
  ``liver_slices`` -- how many slices hold liver.

Two kinds of rules judge them:

* **physiology** (:data:`PHYSIOLOGY_RULES`): the liver volume and extent against adult livers in the literature,
  the same for every model (sources at :data:`LIVER_ML_RANGE` and :data:`EXTENT_MM_RANGE`);
* **model uncertainty** (:func:`model_rules`): ``uncertain_share`` and ``outside_share`` against limits calibrated
  per model on cases it never trained on, stored in its model card (``quality``, a
  :class:`~RMAMambaSegmentationLib.weights.model_card.QualityThresholds`); a card without them gets
  :data:`DEFAULT_THRESHOLDS`. ``Testing/calibrate_quality.py`` makes the calibration table and proposes the limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.imaging.postprocessing import bounding_box
from RMAMambaSegmentationLib.weights.model_card import ModelCard, QualityThresholds

OK = "ok"
CHECK = "check"
#: Probabilities strictly between these two are "uncertain".
UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.1, 0.9
#: Components smaller than this (mL) are not counted in ``components``.
COMPONENT_MIN_ML = 1.0

#: Adult liver volumes in CT/MR volumetry, small cirrhotic livers to hepatomegaly (mL):
#:
#: * healthy adults: 1505 +- 385 mL, 1717 +- 419 mL with steatosis (MRI of 2773 volunteers, Study of Health in
#:   Pomerania; Kromrey et al., Eur J Radiol 2018;106:32-37, doi:10.1016/j.ejrad.2018.07.005);
#: * cirrhotic livers: 721 +- 398 mL by CT in 49 transplant candidates, matching their explant weights (Exp Clin
#:   Transplant, "Use of computed tomography volumetry to assess liver weight in patients with cirrhosis during
#:   evaluation before living-donor liver transplant");
#: * end-stage liver disease: 338 to 3861 mL by CT in 579 adult transplant recipients (Mount Sinai Medical Center,
#:   1989-1995; medians 1210-1651 mL by aetiology);
#: * polycystic livers: 2022 +- 749 mL in men by MRI (HALT-PKD; PMC4267913, table 2), so livers beyond 3.5 L are real.
#:
#: 300 mL lies under the smallest cirrhotic livers of these series, 5000 mL over every series' range: a result
#: outside is an implausible mask (a blob, or the abdomen) far more often than a real liver.
LIVER_ML_RANGE = (300.0, 5000.0)
#: The liver's cranio-caudal size (mm): its diameter at the mid-clavicular line is 94-213 mm (mean 140 +- 17) in
#: 2080 adults (Kratzer et al., J Ultrasound Med 2003;22:1155-1161); the whole extent, dome to the lowest tip, is at
#: least that, and hepatomegaly or a Riedel lobe add to it. Under 90 mm: a field of view that cuts the liver, or not
#: a liver.
EXTENT_MM_RANGE = (90.0, 300.0)
#: Below this many slices holding liver, the extent says nothing (a thick-slice scan cannot be judged by it).
MIN_SLICES_FOR_EXTENT = 4
#: The model-uncertainty limits for weights whose card has no ``quality`` calibration: the default weights'
#: uncertain share on their unseen validation subjects reaches 18.5 %, and four unseen CHAOS subjects segmented well
#: (Dice 0.86-0.89) have 6-8 % of the thresholded voxels outside the largest component (docs/cli.md).
DEFAULT_THRESHOLDS = QualityThresholds(
    uncertain_share_max=0.25, outside_share_max=0.10,
    calibration={"source": "documented defaults (no calibration in the model card)"},
)
#: Measures judged by the model-uncertainty rules (the ones a card calibrates).
MODEL_MEASURES = ("uncertain_share", "outside_share")


@dataclass(frozen=True)
class Rule:
    """A measure must lie within ``[low, high]`` (None: no bound); ``reason`` is formatted with the value."""

    measure: str
    low: float | None
    high: float | None
    reason: str

    def broken_by(self, value: float) -> bool:
        return (self.low is not None and value < self.low) or (self.high is not None and value > self.high)


#: The physiology rules, the same for every model.
PHYSIOLOGY_RULES = (
    Rule("liver_ml", *LIVER_ML_RANGE, "liver volume {value:.0f} mL outside the adult range 300-5000 mL (small "
                                      "cirrhotic livers to hepatomegaly)"),
    Rule("extent_mm", *EXTENT_MM_RANGE, "cranio-caudal extent {value:.0f} mm outside 90-300 mm (liver cut by the "
                                        "field of view, or not a liver)"),
)


def model_rules(thresholds: QualityThresholds | None = None) -> tuple[Rule, ...]:
    """The model-uncertainty rules with ``thresholds`` (default :data:`DEFAULT_THRESHOLDS`)."""
    limits = thresholds or DEFAULT_THRESHOLDS
    uncertain, outside = 100.0 * limits.uncertain_share_max, 100.0 * limits.outside_share_max
    return (
        Rule("uncertain_share", None, limits.uncertain_share_max,
             "{percent:.0f} % of the liver voxels are uncertain (0.1 < p < 0.9; at most "
             f"{uncertain:.0f} % for these weights)"),
        Rule("outside_share", None, limits.outside_share_max,
             "{percent:.0f} % of the thresholded voxels lie outside the largest component (at most "
             f"{outside:.0f} % for these weights)"),
    )


def rules_for(thresholds: QualityThresholds | None = None) -> tuple[Rule, ...]:
    """Every rule, in the order their reasons are listed: volume, the model's uncertainty, extent."""
    return (PHYSIOLOGY_RULES[0], *model_rules(thresholds), PHYSIOLOGY_RULES[1])


#: The rules for weights without a calibration.
RULES = rules_for(DEFAULT_THRESHOLDS)


def thresholds_for(card: ModelCard | None) -> QualityThresholds:
    """The card's calibrated limits, else :data:`DEFAULT_THRESHOLDS`."""
    return card.quality if card is not None and card.quality is not None else DEFAULT_THRESHOLDS


def trained_on(card: ModelCard | None) -> str:
    """What the weights were trained on, for messages (``"MR T2-SPIR"``; ``""`` when the card does not say)."""
    if card is None:
        return ""
    return " ".join(part for part in (card.modality, card.sequence) if part)


@dataclass
class QualityVerdict:
    """``status`` ``"ok"`` or ``"check"``; ``reasons`` say why a result needs checking; ``measures`` are the
    numbers the rules looked at; ``hint`` says what probably went wrong and what to do (``""`` when ok)."""

    status: str
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def summary(self) -> str:
        """``"ok"`` or ``"check: reason; reason"`` (the ``quality`` column of summary.csv)."""
        return OK if self.ok else f"{CHECK}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), "measures": dict(self.measures),
                "hint": self.hint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityVerdict:
        if not isinstance(data, dict) or data.get("status") not in (OK, CHECK):
            raise ValueError(f"invalid quality verdict {data!r}")
        return cls(str(data["status"]), [str(r) for r in data.get("reasons") or []],
                   {str(k): float(v) for k, v in (data.get("measures") or {}).items()}, str(data.get("hint") or ""))


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


def _hint(broken: Sequence[Rule], trained: str) -> str:
    """What probably went wrong, from the broken rules (the model's uncertainty first: it names the scan)."""
    training = f"the {trained} scans" if trained else "the scans"
    if any(rule.measure in MODEL_MEASURES for rule in broken):
        return (f"the network is unsure of this scan: it probably differs from {training} its weights were "
                "trained on (another sequence, contrast, modality or body region); check what the scan is, or use "
                "weights trained on such scans")
    if any(rule.measure == "extent_mm" for rule in broken):
        return "check that the scan covers the whole liver (dome to lower tip) and that the mask holds only liver"
    return "check the mask: it may hold another organ, or miss part of the liver"


def judge(measures: dict[str, float], thresholds: QualityThresholds | None = None, *,
          rules: Sequence[Rule] | None = None, trained: str = "") -> QualityVerdict:
    """Apply the rules to ``measures``: ``check`` with one reason per broken rule, else ``ok``.

    ``thresholds``: the model's uncertainty limits (its card's ``quality``; default :data:`DEFAULT_THRESHOLDS`);
    ``rules`` replaces every rule; ``trained``: what the weights were trained on, for the hint (``"MR T2-SPIR"``).
    """
    if measures.get("liver_ml", 0.0) <= 0.0:
        kind = f"a {trained} scan" if trained else "a scan"
        hint = f"the network found no liver: check that the scan shows the liver and is {kind} like its training data"
        return QualityVerdict(CHECK, ["no liver found"], dict(measures), hint)
    broken = []
    for rule in rules if rules is not None else rules_for(thresholds):
        if rule.measure not in measures:
            continue
        if rule.measure == "extent_mm" and measures.get("liver_slices", 0.0) < MIN_SLICES_FOR_EXTENT:
            continue
        if rule.broken_by(float(measures[rule.measure])):
            broken.append(rule)
    reasons = [rule.reason.format(value=float(measures[rule.measure]), percent=100.0 * float(measures[rule.measure]))
               for rule in broken]
    if not reasons:
        return QualityVerdict(OK, [], dict(measures))
    return QualityVerdict(CHECK, reasons, dict(measures), _hint(broken, trained))


def judge_for_card(measures: dict[str, float], card: ModelCard | None) -> QualityVerdict:
    """:func:`judge` with the card's thresholds (:func:`thresholds_for`) and training data."""
    return judge(measures, thresholds_for(card), trained=trained_on(card))


def assess(
    raw_mask_stack: np.ndarray,
    uncertain_stack: np.ndarray,
    mask_stack: np.ndarray,
    *,
    slice_spacing_mm: float,
    voxel_ml: float,
    card: ModelCard | None = None,
) -> QualityVerdict:
    """:func:`measures_from_masks` then :func:`judge_for_card` (the weights' model card: their thresholds)."""
    measures = measures_from_masks(raw_mask_stack, uncertain_stack, mask_stack, slice_spacing_mm=slice_spacing_mm,
                                   voxel_ml=voxel_ml)
    return judge_for_card(measures, card)
