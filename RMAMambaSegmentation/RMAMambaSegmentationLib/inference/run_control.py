"""What the 2D slice loop and the 3D window loop share while the network runs: cancel checks, progress reports,
the device's name, and the fall-back when CUDA runs out of memory."""

from __future__ import annotations

import contextlib
import logging

import torch

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import SegmentationCancelledError
from RMAMambaSegmentationLib.runtime.devices import DEFAULT_CPU_BATCH
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

logger = logging.getLogger(__name__)

#: Share of the progress bar spent in the network (the rest is post-processing and the quality verdict).
INFERENCE_SHARE = 0.9


def check_cancel(cancel: CancelCheck | None, message: str = "segmentation cancelled; nothing was produced") -> None:
    """Raise SegmentationCancelledError(``message``) when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise SegmentationCancelledError(message)


def report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    """``progress(fraction, message)`` with the fraction clamped to [0, 1], when there is a callback."""
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def device_label(device: torch.device) -> str:
    """A readable name of ``device`` for progress messages ("NVIDIA ... (CUDA)", "CPU")."""
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
