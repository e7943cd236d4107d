"""Choosing where inference runs and how many slices go through the network at once."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

#: Slices per batch on CPU when the caller does not say.
DEFAULT_CPU_BATCH = 4
#: Upper bound of the automatic GPU batch size.
MAX_AUTO_BATCH = 64
#: Estimated GPU memory per 256x256 slice under autocast (activations and workspace), with margin.
BYTES_PER_SLICE_256 = 96 * 2**20


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA -> CPU with a warning."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu' or 'cuda'") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        logger.warning("CUDA was asked for but is not available: running on the CPU (slower)")
        return torch.device("cpu")
    return chosen


def auto_batch_size(device: torch.device, input_size: tuple[int, int] = (256, 256)) -> int:
    """A batch size that fits the device: from free memory on CUDA, a small constant on CPU."""
    if device.type != "cuda":
        return DEFAULT_CPU_BATCH
    try:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:  # pragma: no cover - driver without the query
        return DEFAULT_CPU_BATCH
    per_slice = BYTES_PER_SLICE_256 * (input_size[0] * input_size[1]) / (256 * 256)
    batch = int(0.6 * free_bytes // per_slice)
    return max(1, min(MAX_AUTO_BATCH, batch))


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (the class moved between torch versions)."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t)
    return isinstance(error, oom_types) or "out of memory" in str(error).lower()
