"""Segment the liver in a whole 3D volume and put the result back in the input's grid: the orchestrator.

Two entry points:

* :func:`segment_image` -- SimpleITK image in, :class:`~.result.SegmentationResult` (SimpleITK mask and
  probability) out.
* :func:`segment_array` -- the same on a numpy ``(k, j, i)`` array plus spacing and LPS direction, with no
  SimpleITK image and no MRML: what the Slicer logic and the worker process call.

Steps: options checked (:class:`~.options.RunOptions`) -> validate -> pick the axial axis and radiological in-plane
orientation -> the model, prepared once (:func:`prepare_run_model`) -> the scan checked against its model card
(:func:`scan_checks`, every model) -> its registry entry says 2D slices (:mod:`.slices`) or 3D windows
(:mod:`.windows`) -> the shared ending (:func:`~.result.finish_segmentation`: post-processing, quality verdict, back
to the input's order, provenance). The two leaves never import this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.validation import validate_array, validate_geometry, validate_image
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.inference.result import (
    ArraySegmentation,
    SegmentationResult,
    finish_segmentation,
)
from RMAMambaSegmentationLib.inference.run_control import check_cancel, report
from RMAMambaSegmentationLib.inference.scan_check import ScanInfo, run_scan_checks
from RMAMambaSegmentationLib.inference.slices import predict_slices, resolve_intensity
from RMAMambaSegmentationLib.inference.windows import predict_windows
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel, prepare_model

logger = logging.getLogger(__name__)

#: :func:`segment_image`'s options when the caller gives none: unlike the other entry points it also returns the
#: probability image unless told ``probability=False``.
IMAGE_OPTIONS = RunOptions(probability_map=True)


def model_entry(prepared: PreparedModel, options: RunOptions) -> registry.ModelEntry:
    """The registry entry of the prepared network (its model card's window and threshold), with the sliding-window
    overrides of ``options``; ValueError when overrides are given for a 2D model or are invalid."""
    entry = registry.entry_for(prepared.variant, prepared.card)
    if options.window_size is None and options.overlap is None:
        return entry
    if not entry.is_volumetric:
        raise ValueError(f"{entry.label} segments 2D slices: the sliding-window size and overlap "
                         "are for 3D models (SRMA)")
    return entry.with_overrides(options.window_size, options.overlap)


def prepare_run_model(options: RunOptions, model: torch.nn.Module | PreparedModel | str | None = None) -> PreparedModel:
    """The run's network, prepared once: ``model`` (a module, a ``PreparedModel`` or a registry name) when given,
    else ``options.variant`` (a registry name: the weights must hold it; without weights, the ones shipped for it),
    else ``options.weights``, else the default weights; on ``options.device``.

    The sliding-window overrides of ``options`` are checked against the network here (ValueError), before any
    volume is read. Raises CheckpointError / WeightsNotFoundError / VariantMismatchError for the weights.
    """
    return _prepared_and_entry(options.checked(), model)[0]


def _prepared_and_entry(options: RunOptions, model: torch.nn.Module | PreparedModel | str | None,
                        ) -> tuple[PreparedModel, registry.ModelEntry]:
    """:func:`prepare_run_model` on checked ``options``, with the registry entry it checked the overrides against."""
    if model is None and options.variant is not None:
        model = options.variant
    prepared = prepare_model(model=model, weights=options.weights, device=options.device)
    return prepared, model_entry(prepared, options)


def _validated(array: np.ndarray, spacing: Sequence[float],
               direction: Sequence[float] | np.ndarray) -> tuple[np.ndarray, AxialReorientation]:
    """The array (bool viewed as uint8) and its reorientation, after InvalidImageError checks."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.view(np.uint8)
    validate_geometry(spacing, direction)
    reorientation = AxialReorientation.from_direction(direction)
    validate_array(array, slice_axis=reorientation.axes[0])
    return array, reorientation


def segment_array(
    array: np.ndarray,
    *,
    spacing: Sequence[float],
    direction: Sequence[float] | np.ndarray,
    options: RunOptions | None = None,
    model: torch.nn.Module | PreparedModel | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    scan: ScanInfo | None = None,
    **keywords: Any,
) -> ArraySegmentation:
    """Segment a ``(k, j, i)`` array (SimpleITK / MRML order) with spacing (i, j, k) in mm and an LPS direction.

    ``options`` (:class:`RunOptions`) say which weights, device, intensity preset, batch size, post-processing,
    window, strictness and whether to keep the probability; keywords (its field names, or the spellings of
    :data:`~.options.KEYWORD_ALIASES`) override them. ``model`` (a module, ``PreparedModel`` or registry name) is
    used instead of loading ``options.weights`` (:func:`prepare_run_model`). The whole-volume probability is only
    allocated when ``probability_map`` is True (else ``ArraySegmentation.probability`` is None).

    ``scan``: what the file says about the scan (DICOM modality, description), compared with the model card before
    the network runs (2D and 3D models); mismatches become ``provenance.warnings`` (ScanMismatchError with
    ``options.strict``). Every result gets a quality verdict (``provenance.quality``, :mod:`.quality`, with the
    card's thresholds); a ``check`` logs its hint (what probably went wrong).

    Raises InvalidImageError for an input that cannot be segmented, CheckpointError / WeightsNotFoundError for
    weights, SegmentationCancelledError when ``cancel()`` returns True (checked between batches).
    """
    options = RunOptions.build(options, **keywords).checked()
    started = time.perf_counter()
    array, reorientation = _validated(array, spacing, direction)
    check_cancel(cancel)
    if model is None or isinstance(model, (str, os.PathLike)):  # a loaded model (the worker's cache) says nothing
        report(progress, 0.0, "loading the model")
    prepared, entry = _prepared_and_entry(options, model)  # options are checked above
    warnings = scan_checks(array, prepared, entry, options, scan)
    if entry.is_volumetric:
        prediction = predict_windows(array, reorientation, prepared, entry, options, progress=progress,
                                     cancel=cancel, warnings=warnings)
    else:
        prediction = predict_slices(array, reorientation, prepared, options, progress=progress, cancel=cancel,
                                    warnings=warnings)
    result = finish_segmentation(prediction, reorientation=reorientation, spacing=spacing, direction=direction,
                                 prepared=prepared, postprocess=options.postprocess, progress=progress,
                                 cancel=cancel, started=started)
    _log_hint(result)
    return result


def scan_checks(array: np.ndarray, prepared: PreparedModel, entry: registry.ModelEntry, options: RunOptions,
                scan: ScanInfo | None) -> list[str]:
    """The scan checked against the model card before the network, for 2D and 3D models alike (3D models z-score
    the volume themselves: no preset to compare); ScanMismatchError with ``options.strict``."""
    preset = None if entry.is_volumetric else resolve_intensity(options.intensity, prepared.card)
    if entry.is_volumetric and options.intensity is not None:
        logger.warning("%s z-scores the volume itself: intensity %s is not used", entry.label, options.intensity)
    return run_scan_checks(array, preset, prepared.card, scan, strict=options.strict,
                           weights_path=prepared.weights_path, intensity_chosen=options.intensity is not None)


def _log_hint(result: ArraySegmentation) -> None:
    """Log what a ``check`` verdict's hint says went wrong (it stays in ``provenance.quality.hint``, apart from the
    scan warnings): an MR scan of another sequence passes every scan check and only the network's uncertainty
    shows it."""
    quality = result.provenance.quality
    if quality is not None and not quality.ok and quality.hint:
        logger.warning("%s", quality.hint)


def segment_image(
    image: sitk.Image,
    *,
    options: RunOptions | None = None,
    model: torch.nn.Module | PreparedModel | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    **keywords: Any,
) -> SegmentationResult:
    """Segment the liver in a 3D scalar SimpleITK image.

    Options: ``options`` (:class:`RunOptions`; default :data:`IMAGE_OPTIONS`) and/or keywords on top of it:
    ``weights``, ``device`` ("auto"), ``batch_size``, ``postprocess`` (True), ``intensity``, ``window_size``,
    ``overlap``, ``probability`` (= ``probability_map``, True here), ``strict``, ``compile``, ``variant``.

    ``model``: any module mapping (B, 3, H, W) in [0, 1] to (B, 1, H, W) logits, or a registry name ("unet": the
    shipped U-Net baseline, "T", "S", "SRMA"; with ``weights`` checked to hold it); else ``weights`` (a checkpoint
    path); else the default weights. ``intensity``: ``"MRI"``, ``"CT"`` or an :class:`IntensityPreset`; None
    takes it from the model card beside the weights, else MRI (SRMA-Mamba always uses its z-score). Returns the
    uint8 mask and (unless ``probability=False``) the float32 probability in exactly the input's grid, and the
    liver volume in mL. SRMA-Mamba (a 3D model) runs in sliding windows: ``window_size`` (i, j, k) and ``overlap``
    override 224x224x64 / 0.25. The image's DICOM tags (modality, series description), when it has them, are
    checked against the model card (``strict``: a mismatch is an error).
    """
    validate_image(image)
    options = RunOptions.build(options if options is not None else IMAGE_OPTIONS, **keywords)
    result = segment_array(
        sitk.GetArrayViewFromImage(image),
        spacing=image.GetSpacing(),
        direction=image.GetDirection(),
        options=options,
        model=model,
        progress=progress,
        cancel=cancel,
        scan=ScanInfo.from_image(image),
    )
    mask = sitk.GetImageFromArray(result.mask)
    mask.CopyInformation(image)
    probability_image = None
    if result.probability is not None:
        probability_image = sitk.GetImageFromArray(result.probability)
        probability_image.CopyInformation(image)
    return SegmentationResult(mask, probability_image, result.volume_ml, result.provenance)


__all__ = ["IMAGE_OPTIONS", "model_entry", "prepare_run_model", "scan_checks", "segment_array", "segment_image"]
