"""Segment the liver in a whole 3D volume, slice by slice, and put the result back in the input's grid.

Two entry points:

* :func:`segment_image` -- SimpleITK image in, :class:`SegmentationResult` (SimpleITK mask and probability) out.
* :func:`segment_array` -- the same on a numpy ``(k, j, i)`` array plus spacing and LPS direction, with no
  SimpleITK image and no MRML: what the Slicer logic calls from a worker thread.

Steps: validate -> pick axial axis and radiological in-plane orientation -> intensity bounds for the volume ->
batches of slices (normalise, resize to the network size, 3 channels: the slice repeated, or the previous,
the slice and the next one when the model card says ``context_slices`` 1) -> logits resized back bilinearly to the
slice size -> sigmoid -> threshold 0.5 -> optional post-processing -> back to the input's array order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import RMAMambaError, SegmentationCancelledError
from RMAMambaSegmentationLib.imaging.intensity import MODALITY_NAMES, IntensityPreset, apply_bounds
from RMAMambaSegmentationLib.imaging.orientation import LPS_TO_RAS, AxialReorientation
from RMAMambaSegmentationLib.imaging.postprocessing import postprocess_mask
from RMAMambaSegmentationLib.imaging.preprocessing import (
    NETWORK_INPUT_SIZE,
    context_network_input,
    resize_logits_back,
    slices_to_network_input,
)
from RMAMambaSegmentationLib.imaging.validation import validate_array, validate_geometry, validate_image
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.inference.quality import QualityVerdict, assess, uncertain_voxels
from RMAMambaSegmentationLib.inference.scan_check import ScanInfo, check_scan, missing_card_warning
from RMAMambaSegmentationLib.runtime.compiled import compiled_forward
from RMAMambaSegmentationLib.runtime.devices import DEFAULT_CPU_BATCH, auto_batch_size, is_out_of_memory
from RMAMambaSegmentationLib.weights.model_card import ModelCard
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel, prepare_model

logger = logging.getLogger(__name__)


#: Share of the progress bar spent in the network (the rest is post-processing).
_INFERENCE_SHARE = 0.9


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
    """Result of :func:`segment_array`: arrays in the input's ``(k, j, i)`` order."""

    mask: np.ndarray  # uint8, 0/1
    probability: np.ndarray | None  # float32 in [0, 1], before post-processing; None unless asked for
    volume_ml: float
    provenance: Provenance


@dataclass
class SegmentationResult:
    """Result of :func:`segment_image`: SimpleITK images in exactly the input's grid."""

    mask: sitk.Image  # uint8, 0/1
    probability: sitk.Image | None  # float32 in [0, 1], before post-processing; None with probability=False
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


def geometry_from_ijk_to_ras(matrix: np.ndarray) -> tuple[tuple[float, float, float], np.ndarray]:
    """``(spacing (i, j, k), LPS direction 3x3)`` from an MRML IJK-to-RAS 4x4 matrix."""
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = LPS_TO_RAS @ (linear / spacing)
    return (float(spacing[0]), float(spacing[1]), float(spacing[2])), direction


def resolve_intensity(intensity: IntensityPreset | str | None, card: ModelCard | None) -> IntensityPreset:
    """The preset to use: an explicit preset object as is; a modality name (``"MRI"``/``"CT"``) means the model
    card's preset when the card is for that modality, a preset name (``"MRI-tissue"``) the card's parameters when
    the card names that preset; None -> the card's preset, else MRI."""
    if isinstance(intensity, IntensityPreset):
        return intensity
    if intensity is None:
        return card.intensity if card is not None else IntensityPreset.mri()
    preset = IntensityPreset.from_name(intensity)
    if card is not None:
        modality_only = str(intensity).strip().upper() in MODALITY_NAMES
        if card.intensity.name.upper() == preset.name.upper() and (modality_only or card.intensity.kind == preset.kind):
            return card.intensity
    return preset  # a preset other than the card's: scan_check.scan_warnings says so


def _check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise SegmentationCancelledError("segmentation cancelled; nothing was produced")


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def _as_logits(output: object, batch: int) -> torch.Tensor:
    """The network's output as ``(B, 1, h, w)`` float32 logits (a tuple's first map is the final one)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise RMAMambaError(f"the model returned {type(output).__name__}, expected a tensor of logits")
    if output.ndim == 3:
        output = output[:, None]
    if output.ndim != 4 or output.shape[0] != batch or output.shape[1] != 1:
        raise RMAMambaError(f"the model returned shape {tuple(output.shape)}, expected ({batch}, 1, H, W) logits")
    return output.float()


def voxel_volume_ml(spacing: Sequence[float], direction: Sequence[float] | np.ndarray) -> float:
    """Volume of one voxel in mL: ``|det(direction @ diag(spacing))|`` mm^3 / 1000."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    return abs(float(np.linalg.det(matrix))) / 1000.0


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError, AssertionError):
            return f"{torch.cuda.get_device_name(device)} (CUDA)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return "CPU" if device.type == "cpu" else str(device)


def recover_from_oom(prepared: PreparedModel, batch: int, warnings: list[str], *, unit: str = "slices",
                     cpu_batch: int = DEFAULT_CPU_BATCH) -> int:
    """After CUDA ran out of memory: halve the batch, or move to the CPU (``cpu_batch`` ``unit`` per batch)."""
    torch.cuda.empty_cache()
    if batch > 1:
        batch = max(1, batch // 2)
        logger.warning("CUDA out of memory: retrying with batches of %d %s", batch, unit)
        return batch
    message = f"CUDA out of memory even with 1 {unit[:-1]} per batch: continuing on the CPU (slower)"
    logger.warning(message)
    warnings.append(message)
    with torch.inference_mode(False):  # the moved parameters stay ordinary tensors (usable for training later)
        prepared.to(torch.device("cpu"))
    return cpu_batch


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _batch_slices(stack: np.ndarray, start: int, stop: int, context_slices: int) -> np.ndarray:
    """Slices ``start:stop`` of the axial stack, with ``context_slices`` neighbours on each side (the end slices
    repeated beyond the volume, as in training)."""
    if not context_slices:
        return stack[start:stop]
    index = np.clip(np.arange(start - context_slices, stop + context_slices), 0, stack.shape[0] - 1)
    return stack[index]


def _predict_batch(
    prepared: PreparedModel,
    slices01: np.ndarray,
    input_size: tuple[int, int],
    context_slices: int = 0,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> np.ndarray:
    """Probabilities ``(b, rows, cols)`` for a batch of normalised slices (with neighbours when
    ``context_slices`` is 1: ``b + 2`` slices in, ``b`` out)."""
    rows, cols = slices01.shape[1:]
    if context_slices:
        inputs = context_network_input(slices01, input_size, device=prepared.device)
    else:
        inputs = slices_to_network_input(slices01, input_size, device=prepared.device)
    with _autocast(prepared.device):
        logits = _as_logits((forward or prepared.module)(inputs), inputs.shape[0])
    probability = torch.sigmoid(resize_logits_back(logits, (rows, cols)))
    return probability[:, 0].cpu().numpy().astype(np.float32, copy=False)


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
    strictness and whether to keep the probability; keywords named after its fields (``weights=``, ``device=``,
    ``batch_size=``, ``postprocess=``, ``intensity=``, ``probability_map=``, ``strict=``) override them. ``model``
    (a module or ``PreparedModel``) is used instead of loading ``options.weights``. The whole-volume probability is
    only allocated when ``probability_map`` is True (else ``ArraySegmentation.probability`` is None).

    ``scan``: what the file says about the scan (DICOM modality, description), compared with the model card before
    the network runs; mismatches become ``provenance.warnings`` (ScanMismatchError with ``options.strict``). Every
    result gets a quality verdict (``provenance.quality``, :mod:`quality`).

    Raises InvalidImageError for an input that cannot be segmented, CheckpointError / WeightsNotFoundError for
    weights, SegmentationCancelledError when ``cancel()`` returns True (checked between batches).
    3D-window models of the registry (SRMA-Mamba) go to :mod:`.window_inference`; ``options.window_size`` (i, j, k)
    and ``options.overlap`` override their sliding window.
    ``options.compile``: run the 2D network through ``torch.compile`` where a compiler is present
    (:mod:`.compiled`; once per batch shape, cached with the module; eager otherwise).
    """
    options = RunOptions.build(options, **keywords).checked()
    window_size, overlap = options.window_size, options.overlap
    weights, device, batch_size = options.weights, options.device, options.batch_size
    postprocess, intensity = options.postprocess, options.intensity
    started = time.perf_counter()
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.view(np.uint8)
    validate_geometry(spacing, direction)
    reorientation = AxialReorientation.from_direction(direction)
    validate_array(array, slice_axis=reorientation.axes[0])
    _check_cancel(cancel)
    if model is None or isinstance(model, (str, os.PathLike)):  # a loaded model (the worker's cache) says nothing
        _report(progress, 0.0, "loading the model")
    prepared = prepare_model(model=model, weights=weights, device=device)
    entry = registry.entry_for(prepared.variant, prepared.card).with_overrides(
        window_size or prepared.window_size, overlap if overlap is not None else prepared.overlap)
    if entry.is_volumetric:
        from RMAMambaSegmentationLib.inference.windows import segment_array_windows

        if intensity is not None:
            logger.warning("%s z-scores the volume itself: intensity %s is not used", entry.label, intensity)

        return segment_array_windows(array, spacing=spacing, direction=direction, prepared=prepared, entry=entry,
                                     batch_size=batch_size, postprocess=postprocess, progress=progress,
                                     cancel=cancel, started=started, probability_map=options.probability_map)
    card = prepared.card
    preset = resolve_intensity(intensity, card)
    input_size = card.input_size if card is not None else NETWORK_INPUT_SIZE
    threshold = card.threshold if card is not None else 0.5
    context_slices = card.context_slices if card is not None else 0
    warnings = check_scan(array, preset, card, scan, strict=options.strict)
    if card is None and prepared.weights_path is not None and intensity is None:
        warnings.insert(0, missing_card_warning(prepared.weights_path, preset))
    for warning in warnings:
        logger.warning("%s", warning)
    lo, hi = preset.bounds(array)
    logger.debug("intensity preset %s: [%g, %g] -> [0, 1]", preset.name, lo, hi)

    stack = reorientation.to_axial(array)
    n_slices = stack.shape[0]
    batch = int(batch_size) if batch_size is not None else auto_batch_size(prepared.device, input_size)
    if reorientation.is_oblique:
        warnings.append(f"oblique volume ({reorientation.oblique_deg:.1f} degrees): closest axes used")
    # The mask is written batch by batch in the axial stack; the float probability only exists when asked for
    # (allocated once in the input's order, written through its axial view: no extra copy).
    mask_stack = np.empty(stack.shape, dtype=np.uint8)
    uncertain_stack = np.empty(stack.shape, dtype=bool)  # for the quality verdict (1 byte/voxel, not 4)
    probability = np.empty(array.shape, dtype=np.float32) if options.probability_map else None
    probability_stack = reorientation.to_axial(probability) if probability is not None else None
    prepared.module.eval()
    _report(progress, 0.0, f"segmenting {n_slices} slices on {_device_label(prepared.device)}")
    forward = compiled_forward(prepared.module, prepared.device, enabled=options.compile)
    start = 0
    with torch.inference_mode():
        while start < n_slices:
            _check_cancel(cancel)
            stop = min(start + batch, n_slices)
            try:
                batch_probability = _predict_batch(
                    prepared, apply_bounds(_batch_slices(stack, start, stop, context_slices), lo, hi), input_size,
                    context_slices, forward,
                )
            except (RuntimeError, MemoryError) as error:
                if prepared.device.type != "cuda" or not is_out_of_memory(error):
                    raise
                batch = recover_from_oom(prepared, batch, warnings)
                continue
            np.greater(batch_probability, threshold, out=mask_stack[start:stop].view(bool))
            uncertain_voxels(batch_probability, out=uncertain_stack[start:stop])
            if probability_stack is not None:
                probability_stack[start:stop] = batch_probability
            start = stop
            _report(progress, _INFERENCE_SHARE * stop / n_slices, f"slices {stop}/{n_slices}")
    _check_cancel(cancel)

    _report(progress, _INFERENCE_SHARE, "post-processing" if postprocess else "thresholding")
    raw_mask_stack = mask_stack
    if postprocess:
        mask_stack = postprocess_mask(raw_mask_stack)
    _check_cancel(cancel)
    quality = assess(raw_mask_stack, uncertain_stack, mask_stack, voxel_ml=voxel_volume_ml(spacing, direction),
                     slice_spacing_mm=float(spacing[2 - reorientation.axes[0]]))
    del raw_mask_stack, uncertain_stack
    if not quality.ok:
        logger.warning("quality check: %s", "; ".join(quality.reasons))
    mask = np.ascontiguousarray(reorientation.from_axial(mask_stack))
    volume_ml = float(np.count_nonzero(mask)) * voxel_volume_ml(spacing, direction)
    provenance = Provenance(
        device=str(prepared.device),
        batch_size=batch,
        n_slices=n_slices,
        intensity=preset,
        intensity_bounds=(lo, hi),
        postprocessed=bool(postprocess),
        threshold=threshold,
        context_slices=context_slices,
        weights_path=str(prepared.weights_path) if prepared.weights_path is not None else None,
        weights_sha256=prepared.weights_sha256,
        variant=prepared.variant,
        oblique_deg=reorientation.oblique_deg,
        seconds=time.perf_counter() - started,
        warnings=warnings,
        quality=quality,
    )
    _report(progress, 1.0, f"done: liver {volume_ml:.1f} mL")
    return ArraySegmentation(mask, probability, volume_ml, provenance)


def segment_image(
    image: sitk.Image,
    *,
    weights: str | Path | None = None,
    model: torch.nn.Module | PreparedModel | str | None = None,
    device: str | torch.device | None = "auto",
    batch_size: int | None = None,
    postprocess: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    intensity: IntensityPreset | str | None = None,
    window_size: Sequence[int] | None = None,
    overlap: float | None = None,
    probability: bool = True,
    strict: bool = False,
    compile: bool = False,
) -> SegmentationResult:
    """Segment the liver in a 3D scalar SimpleITK image.

    ``model``: any module mapping (B, 3, H, W) in [0, 1] to (B, 1, H, W) logits, or a registry name ("unet": the
    shipped U-Net baseline, "T", "S", "SRMA"; with ``weights`` checked to hold it); else ``weights`` (a checkpoint
    path); else the default weights. ``intensity``: ``"MRI"``, ``"CT"`` or an :class:`IntensityPreset`; None
    takes it from the model card beside the weights, else MRI (SRMA-Mamba always uses its z-score). Returns the
    uint8 mask and (unless ``probability=False``) the float32 probability in exactly the input's grid, and the
    liver volume in mL. SRMA-Mamba (a 3D model) runs in sliding windows: ``window_size`` (i, j, k) and ``overlap``
    override 224x224x64 / 0.25. The image's DICOM tags (modality, series description),
    when it has them, are checked against the model card (``strict``: a mismatch is an error).
    """
    validate_image(image)
    options = RunOptions(weights=None if weights is None else str(weights), device=device, intensity=intensity,
                         postprocess=postprocess, probability_map=probability, batch_size=batch_size,
                         window_size=None if window_size is None else tuple(window_size), overlap=overlap,
                         strict=strict, compile=compile)
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
