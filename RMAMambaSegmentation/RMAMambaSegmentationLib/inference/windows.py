"""3D sliding-window inference in patient space, for the volumetric models of the registry (SRMA-Mamba).

Convention: the network sees the volume in one canonical orientation whatever the input's direction matrix -- its
axes (i, j, k) point to patient Left, Posterior and Superior (LPS, as the authors' CirrMRI600+ training data is
stored). That volume is the axial stack of :class:`~.orientation.AxialReorientation` (slices S, rows P, columns L)
transposed, so the closest image axes are used and nothing is resampled (native voxel grid, as the authors).

Steps: reorient -> z-score over the non-zero voxels (zeros stay 0) -> zero padding where the volume is smaller than
the window -> windows (default 224 x 224 x 64, 25 % overlap) one at a time on the CPU, ``batch`` at a time on CUDA
-> logits blended with separable Gaussian weights into one float32 sum -> sigmoid -> threshold, handed as a
:class:`~.result.RawPrediction` to the shared ending (post-processing, quality verdict, back to the input's (k, j, i)
order). Progress is reported per window; ``cancel`` is checked between windows. When CUDA runs out of memory the
windows per pass are halved, then the run continues on the CPU (a warning says so). On the CPU, freed memory is kept
for reuse while the windows run (:mod:`.heap_reuse`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import RMAMambaError
from RMAMambaSegmentationLib.imaging.intensity import WINDOW, IntensityPreset
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
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
from RMAMambaSegmentationLib.registry import ModelEntry
from RMAMambaSegmentationLib.runtime.devices import is_out_of_memory
from RMAMambaSegmentationLib.runtime.heap_reuse import reuse_freed_memory
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

logger = logging.getLogger(__name__)

#: Gaussian blending: sigma = this fraction of the window along each axis (as MONAI's "gaussian" mode).
SIGMA_SCALE = 0.125
#: Floor of the 1D Gaussian weights, so every voxel keeps a non-zero weight.
MIN_WEIGHT = 1e-3
#: Windows per forward pass on CUDA when the caller does not say (CPU: always 1).
DEFAULT_CUDA_WINDOWS = 2
#: The z-score window recorded as intensity bounds (for overlays and summaries): mean -/+ this many std.
DISPLAY_STDS = 2.0


def to_network_axes(array_kji: np.ndarray, reorientation: AxialReorientation) -> np.ndarray:
    """The (k, j, i) array as the network's (i -> L, j -> P, k -> S) volume (a view when possible)."""
    return reorientation.to_axial(array_kji).transpose(2, 1, 0)


def from_network_axes(volume: np.ndarray, reorientation: AxialReorientation) -> np.ndarray:
    """Exact inverse of :func:`to_network_axes`."""
    return reorientation.from_axial(volume.transpose(2, 1, 0))


def zscore_nonzero(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(v - mean) / std`` on the non-zero voxels (population std), zeros stay 0; float32 copy, mean, std."""
    values = np.array(volume, dtype=np.float32, order="C", copy=True)  # C order: same sums for any input layout
    nonzero = values != 0
    count = int(np.count_nonzero(nonzero))
    if count == 0:
        return values, 0.0, 1.0
    selected = values[nonzero].astype(np.float64)
    mean = float(selected.mean())
    std = float(selected.std())
    if not std > 0.0:
        std = 1.0
    values[nonzero] = ((selected - mean) / std).astype(np.float32)
    return values, mean, std


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of ``size`` voxels (``size >= window``); the last window ends at
    the volume's end."""
    if size <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    count = math.ceil((size - window) / step) + 1
    return sorted({min(index * step, size - window) for index in range(count)})


def gaussian_1d(window: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Gaussian weights over one window axis, peak 1 at the centre, floored at ``MIN_WEIGHT`` (float32)."""
    centre = (window - 1) / 2.0
    sigma = max(sigma_scale * window, 1e-6)
    weights = np.exp(-0.5 * ((np.arange(window) - centre) / sigma) ** 2)
    return np.maximum(weights, MIN_WEIGHT).astype(np.float32)


def _as_window_logits(output: object, output_index: int, expected: tuple[int, ...]) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[output_index]
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise RMAMambaError(f"the 3D model returned {shape}, expected logits of shape {expected}")
    return output.float()


def predict_logits(
    volume: np.ndarray,
    module: torch.nn.Module,
    device: torch.device,
    *,
    window: Sequence[int],
    overlap: float,
    batch: int = 1,
    output_index: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    on_out_of_memory: Callable[[int, BaseException], tuple[int, torch.device]] | None = None,
) -> np.ndarray:
    """Gaussian-blended sliding-window logits (float32, ``volume``'s shape) of a normalised (i, j, k) volume.

    ``on_out_of_memory(batch, error)``, when given, is called after an out-of-memory error and returns the windows
    per pass and the device to go on with (the failed pass is repeated), or raises; without it the error propagates.
    """
    window = tuple(int(w) for w in window)
    axes = range(3)  # (zip with strict= is Python 3.10+: index the three axes instead)
    missing = [max(0, window[a] - volume.shape[a]) for a in axes]
    pads = [(missing[a] // 2, missing[a] - missing[a] // 2) for a in axes]
    padded = np.pad(volume, pads) if any(missing) else volume
    starts = [window_starts(padded.shape[a], window[a], overlap) for a in axes]
    kernels = [gaussian_1d(w) for w in window]
    totals = [np.zeros(padded.shape[a], dtype=np.float32) for a in axes]
    for a in axes:
        for start in starts[a]:
            totals[a][start:start + window[a]] += kernels[a]
    weight = torch.from_numpy(kernels[0][:, None, None] * kernels[1][None, :, None] * kernels[2][None, None, :])
    weight = weight.to(device)
    blended = np.zeros(padded.shape, dtype=np.float32)  # the only full-size float32 buffer of the blend
    corners = list(itertools.product(*starts))
    batch = max(1, int(batch)) if device.type == "cuda" else 1
    done = 0
    while done < len(corners):
        check_cancel(cancel)
        group = corners[done:done + batch]
        crops = [padded[a:a + window[0], b:b + window[1], c:c + window[2]] for a, b, c in group]
        try:
            inputs = torch.from_numpy(np.stack(crops)[:, None]).to(device)
            logits = _as_window_logits(module(inputs), output_index, (len(group), 1, *window))
            logits = (logits[:, 0] * weight).cpu().numpy()
        except (RuntimeError, MemoryError) as error:
            if on_out_of_memory is None or not is_out_of_memory(error):
                raise
            batch, device = on_out_of_memory(batch, error)
            weight = weight.to(device)
            continue
        for index, (a, b, c) in enumerate(group):
            blended[a:a + window[0], b:b + window[1], c:c + window[2]] += logits[index]
        done += len(group)
        if progress is not None:
            progress(INFERENCE_SHARE * done / len(corners), f"windows {done}/{len(corners)}")
    blended /= totals[0][:, None, None]
    blended /= totals[1][None, :, None]
    blended /= totals[2][None, None, :]
    inner = tuple(slice(pads[a][0], pads[a][0] + volume.shape[a]) for a in axes)
    return blended[inner]


def predict_windows(
    array: np.ndarray,
    reorientation: AxialReorientation,
    prepared: PreparedModel,
    entry: ModelEntry,
    options: RunOptions,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    warnings: list[str] | None = None,
) -> RawPrediction:
    """Run a 3D-window model (``entry``: window, overlap, output, threshold) over the validated ``(k, j, i)``
    array; ``options``: windows per pass on CUDA, whether to keep the probability. ``warnings``: the scan checks'
    warnings (run by the pipeline before any model), kept in the prediction."""
    volume, mean, std = zscore_nonzero(to_network_axes(array, reorientation))
    check_cancel(cancel)
    batch = options.batch_size or DEFAULT_CUDA_WINDOWS
    prepared.module.eval()
    report(progress, 0.0, f"segmenting a {'x'.join(map(str, volume.shape))} volume in {entry.label} windows "
                          f"{'x'.join(map(str, entry.window))} on {device_label(prepared.device)}")
    warnings = list(warnings or [])

    def on_out_of_memory(windows: int, error: BaseException) -> tuple[int, torch.device]:
        if prepared.device.type != "cuda":
            raise error
        windows = recover_from_oom(prepared, windows, warnings, unit="windows", cpu_batch=1)
        return windows, prepared.device

    with torch.inference_mode(), reuse_freed_memory():
        logits = predict_logits(volume, prepared.module, prepared.device, window=entry.window,
                                overlap=entry.overlap, batch=batch, output_index=entry.output_index,
                                progress=progress, cancel=cancel, on_out_of_memory=on_out_of_memory)
    del volume
    probability_ijk = torch.sigmoid(torch.from_numpy(logits)).numpy()
    del logits
    # The network's axes are (L, P, S): their transpose is the axial stack (slices S, rows P, columns L).
    mask_stack = (probability_ijk > entry.threshold).astype(np.uint8).transpose(2, 1, 0)
    uncertain_stack = uncertain_voxels(probability_ijk).transpose(2, 1, 0)
    probability = None
    if options.probability_map:
        probability = np.ascontiguousarray(from_network_axes(probability_ijk, reorientation))
    del probability_ijk
    lo, hi = mean - DISPLAY_STDS * std, mean + DISPLAY_STDS * std
    intensity = IntensityPreset("z-score-nonzero", WINDOW, lo, hi)
    return RawPrediction(mask_stack, uncertain_stack, probability, intensity=intensity, intensity_bounds=(lo, hi),
                         threshold=entry.threshold, batch_size=batch if prepared.device.type == "cuda" else 1,
                         warnings=warnings)
