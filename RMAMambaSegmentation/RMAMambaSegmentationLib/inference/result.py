"""What a segmentation returns, and the one ending that makes it from the network's raw prediction.

The 2D slice loop (:mod:`.slices`) and the 3D window loop (:mod:`.windows`) each hand a :class:`RawPrediction` (the
thresholded mask and the uncertain voxels on the axial stack) to :func:`finish_segmentation`: post-processing ->
quality verdict -> back to the input's (k, j, i) order -> liver volume and :class:`Provenance`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.postprocessing import postprocess_mask
from RMAMambaSegmentationLib.inference.quality import QualityVerdict, assess
from RMAMambaSegmentationLib.inference.run_control import INFERENCE_SHARE, check_cancel, report
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

logger = logging.getLogger(__name__)


@dataclass
class Provenance:
    """How a segmentation was made (for summaries, logs and the Slicer module)."""

    device: str
    batch_size: int
    n_slices: int
    intensity: IntensityPreset
    intensity_bounds: tuple[float, float]
    postprocessed: bool
    threshold: float = 0.5
    context_slices: int = 0
    weights_path: str | None = None
    weights_sha256: str | None = None
    variant: str | None = None
    oblique_deg: float = 0.0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    quality: QualityVerdict | None = None


@dataclass
class ArraySegmentation:
    """Result of ``segment_array``: arrays in the input's ``(k, j, i)`` order."""

    mask: np.ndarray  # uint8, 0/1
    probability: np.ndarray | None  # float32 in [0, 1], before post-processing; None unless asked for
    volume_ml: float
    provenance: Provenance

    @property
    def quality(self) -> QualityVerdict | None:
        """The quality verdict: ``status``, ``reasons``, ``measures``, ``hint`` (``provenance.quality``)."""
        return self.provenance.quality


@dataclass
class SegmentationResult:
    """Result of ``segment_image``: SimpleITK images in exactly the input's grid."""

    mask: sitk.Image  # uint8, 0/1
    probability: sitk.Image | None  # float32 in [0, 1], before post-processing; None unless asked for
    volume_ml: float
    provenance: Provenance

    @property
    def device(self) -> str:
        return self.provenance.device

    @property
    def n_slices(self) -> int:
        return self.provenance.n_slices

    @property
    def weights_sha256(self) -> str | None:
        return self.provenance.weights_sha256

    @property
    def quality(self) -> QualityVerdict | None:
        """The quality verdict: ``status``, ``reasons``, ``measures``, ``hint`` (``provenance.quality``)."""
        return self.provenance.quality


@dataclass
class RawPrediction:
    """The network's answer before the shared ending, on the axial stack (slices S, rows P, columns L).

    ``mask_stack`` and ``uncertain_stack`` are handed over: :func:`finish_segmentation` drops them as soon as the
    quality verdict is made.
    """

    mask_stack: np.ndarray | None  # uint8 0/1, thresholded, not post-processed
    uncertain_stack: np.ndarray | None  # bool, for the quality verdict
    probability: np.ndarray | None  # float32 in the input's (k, j, i) order; None unless asked for
    intensity: IntensityPreset
    intensity_bounds: tuple[float, float]
    threshold: float
    batch_size: int
    context_slices: int = 0
    warnings: list[str] = field(default_factory=list)


def voxel_volume_ml(spacing: Sequence[float], direction: Sequence[float] | np.ndarray) -> float:
    """Volume of one voxel in mL: ``|det(direction @ diag(spacing))|`` mm^3 / 1000."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    return abs(float(np.linalg.det(matrix))) / 1000.0


def finish_segmentation(
    prediction: RawPrediction,
    *,
    reorientation: AxialReorientation,
    spacing: Sequence[float],
    direction: Sequence[float] | np.ndarray,
    prepared: PreparedModel,
    postprocess: bool,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    started: float | None = None,
) -> ArraySegmentation:
    """Post-process, judge, put back in the input's order and record how: the ending of every segmentation."""
    raw_stack, uncertain_stack = prediction.mask_stack, prediction.uncertain_stack
    prediction.mask_stack = prediction.uncertain_stack = None
    if raw_stack is None or uncertain_stack is None:
        raise ValueError("this prediction was already finished")
    check_cancel(cancel)
    report(progress, INFERENCE_SHARE, "post-processing" if postprocess else "thresholding")
    mask_stack = postprocess_mask(raw_stack) if postprocess else raw_stack
    check_cancel(cancel)
    voxel_ml = voxel_volume_ml(spacing, direction)
    quality = assess(raw_stack, uncertain_stack, mask_stack, voxel_ml=voxel_ml,
                     slice_spacing_mm=float(spacing[2 - reorientation.axes[0]]), card=prepared.card)
    del raw_stack, uncertain_stack
    if not quality.ok:
        logger.warning("quality check: %s", "; ".join(quality.reasons))
    mask = np.ascontiguousarray(reorientation.from_axial(mask_stack))
    del mask_stack
    volume_ml = float(np.count_nonzero(mask)) * voxel_ml
    warnings = list(prediction.warnings)
    if reorientation.is_oblique:
        warnings.append(f"oblique volume ({reorientation.oblique_deg:.1f} degrees): closest axes used")
    provenance = Provenance(
        device=str(prepared.device),
        batch_size=prediction.batch_size,
        n_slices=int(mask.shape[reorientation.axes[0]]),
        intensity=prediction.intensity,
        intensity_bounds=prediction.intensity_bounds,
        postprocessed=bool(postprocess),
        threshold=prediction.threshold,
        context_slices=prediction.context_slices,
        weights_path=str(prepared.weights_path) if prepared.weights_path is not None else None,
        weights_sha256=prepared.weights_sha256,
        variant=prepared.variant,
        oblique_deg=reorientation.oblique_deg,
        seconds=time.perf_counter() - started if started is not None else 0.0,
        warnings=warnings,
        quality=quality,
    )
    report(progress, 1.0, f"done: liver {volume_ml:.1f} mL")
    return ArraySegmentation(mask, prediction.probability, volume_ml, provenance)
