"""2D inference: the volume's axial slices, a batch at a time, through a slice network (RMA-Mamba, U-Net).

Steps: intensity bounds for the volume (preset from the caller or the model card; the pipeline has checked it
against the scan) -> batches of slices (normalise, resize to the network size, 3 channels: the slice repeated, or
the previous, the slice and the next one when the model card says ``context_slices`` 1) -> logits resized back
bilinearly to the slice size -> sigmoid -> threshold. Returns a :class:`~.result.RawPrediction` for the shared ending.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import RMAMambaError
from RMAMambaSegmentationLib.imaging.intensity import MODALITY_NAMES, IntensityPreset, apply_bounds
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.preprocessing import (
    NETWORK_INPUT_SIZE,
    context_network_input,
    resize_logits_back,
    slices_to_network_input,
)
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.inference.quality import uncertain_voxels
from RMAMambaSegmentationLib.inference.result import RawPrediction
from RMAMambaSegmentationLib.inference.run_control import (
    INFERENCE_SHARE,
    check_cancel,
    device_label,
    recover_from_oom,
    report,
)
from RMAMambaSegmentationLib.runtime.compiled import compiled_forward
from RMAMambaSegmentationLib.runtime.devices import auto_batch_size, is_out_of_memory
from RMAMambaSegmentationLib.weights.model_card import ModelCard
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _SliceRecipe:
    """How slices go through the network: size, neighbours, intensity bounds, threshold, forward function."""

    input_size: tuple[int, int]
    context_slices: int
    bounds: tuple[float, float]
    threshold: float
    forward: Callable[[torch.Tensor], object]


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


def _predict_batch(prepared: PreparedModel, stack: np.ndarray, start: int, stop: int,
                   recipe: _SliceRecipe) -> np.ndarray:
    """Probabilities ``(stop - start, rows, cols)`` of slices ``start:stop`` of the raw axial stack."""
    slices01 = apply_bounds(_batch_slices(stack, start, stop, recipe.context_slices), *recipe.bounds)
    rows, cols = slices01.shape[1:]
    if recipe.context_slices:
        inputs = context_network_input(slices01, recipe.input_size, device=prepared.device)
    else:
        inputs = slices_to_network_input(slices01, recipe.input_size, device=prepared.device)
    with _autocast(prepared.device):
        logits = _as_logits(recipe.forward(inputs), inputs.shape[0])
    probability = torch.sigmoid(resize_logits_back(logits, (rows, cols)))
    return probability[:, 0].cpu().numpy().astype(np.float32, copy=False)


def predict_slices(
    array: np.ndarray,
    reorientation: AxialReorientation,
    prepared: PreparedModel,
    options: RunOptions,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    warnings: list[str] | None = None,
) -> RawPrediction:
    """Run a 2D network over the validated ``(k, j, i)`` array's axial slices (``options``: intensity, batch size,
    compile, whether to keep the probability). ``warnings``: the scan checks' warnings (the pipeline runs them
    before any model, see :func:`~.scan_check.run_scan_checks`), kept in the prediction."""
    card = prepared.card
    preset = resolve_intensity(options.intensity, card)
    warnings = list(warnings or [])
    lo, hi = preset.bounds(array)
    logger.debug("intensity preset %s: [%g, %g] -> [0, 1]", preset.name, lo, hi)
    recipe = _SliceRecipe(
        input_size=card.input_size if card is not None else NETWORK_INPUT_SIZE,
        context_slices=card.context_slices if card is not None else 0,
        bounds=(lo, hi),
        threshold=card.threshold if card is not None else 0.5,
        forward=compiled_forward(prepared.module, prepared.device, enabled=options.compile),
    )
    stack = reorientation.to_axial(array)
    batch = options.batch_size or auto_batch_size(prepared.device, recipe.input_size)
    # The mask is written batch by batch in the axial stack; the float probability only exists when asked for
    # (allocated once in the input's order, written through its axial view: no extra copy).
    mask_stack = np.empty(stack.shape, dtype=np.uint8)
    uncertain_stack = np.empty(stack.shape, dtype=bool)  # for the quality verdict (1 byte/voxel, not 4)
    probability = np.empty(array.shape, dtype=np.float32) if options.probability_map else None
    probability_stack = reorientation.to_axial(probability) if probability is not None else None
    prepared.module.eval()
    report(progress, 0.0, f"segmenting {stack.shape[0]} slices on {device_label(prepared.device)}")
    start = 0
    with torch.inference_mode():
        while start < stack.shape[0]:
            check_cancel(cancel)
            stop = min(start + batch, stack.shape[0])
            try:
                batch_probability = _predict_batch(prepared, stack, start, stop, recipe)
            except (RuntimeError, MemoryError) as error:
                if prepared.device.type != "cuda" or not is_out_of_memory(error):
                    raise
                batch = recover_from_oom(prepared, batch, warnings)
                continue
            np.greater(batch_probability, recipe.threshold, out=mask_stack[start:stop].view(bool))
            uncertain_voxels(batch_probability, out=uncertain_stack[start:stop])
            if probability_stack is not None:
                probability_stack[start:stop] = batch_probability
            start = stop
            report(progress, INFERENCE_SHARE * stop / stack.shape[0], f"slices {stop}/{stack.shape[0]}")
    return RawPrediction(mask_stack, uncertain_stack, probability, intensity=preset, intensity_bounds=(lo, hi),
                         threshold=recipe.threshold, batch_size=batch, context_slices=recipe.context_slices,
                         warnings=warnings)
