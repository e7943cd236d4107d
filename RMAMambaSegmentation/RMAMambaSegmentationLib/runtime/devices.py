"""Choosing where inference runs and how many slices go through the network at once.

Importing this module does not import torch (the Slicer panel reads :data:`DEVICE_CHOICES` and
:func:`device_from_choice` on the GUI thread); the functions that need torch import it when called.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Slices per batch on CPU (and on Apple GPUs) when the caller does not say.
DEFAULT_CPU_BATCH = 4
#: Upper bound of the automatic GPU batch size.
MAX_AUTO_BATCH = 64
#: Estimated GPU memory per 256x256 slice under autocast (activations and workspace), with margin.
BYTES_PER_SLICE_256 = 96 * 2**20

#: The device list as the panel shows it, and the device name each label stands for.
DEVICE_LABELS = {"auto": "auto", "CPU": "cpu", "CUDA GPU": "cuda", "Apple GPU": "mps"}
DEVICE_CHOICES = tuple(DEVICE_LABELS)
#: Labels of earlier versions still found in saved scenes.
_OLD_LABELS = {"gpu": "cuda"}

#: Lets PyTorch run an operator that has no Apple-GPU (Metal) kernel on the CPU instead of failing. PyTorch reads
#: it when torch is imported, so it must be set first (:func:`enable_mps_fallback`).
MPS_FALLBACK_VARIABLE = "PYTORCH_ENABLE_MPS_FALLBACK"


def device_from_choice(choice: str | None) -> str:
    """A panel label ("auto", "CPU", "CUDA GPU", "Apple GPU"; also the old "GPU") or a device name -> device name.

    Device names ("cpu", "cuda", "cuda:1", "mps") pass through in lower case; None -> "auto".
    """
    if choice is None:
        return "auto"
    text = str(choice).strip()
    if text in DEVICE_LABELS:
        return DEVICE_LABELS[text]
    return _OLD_LABELS.get(text.lower(), text.lower())


def enable_mps_fallback() -> bool:
    """Set ``PYTORCH_ENABLE_MPS_FALLBACK=1`` unless the user set it; call before the first ``import torch``.

    Returns False (and logs why) when torch was already imported, as the setting then has no effect.
    """
    return _set_before_torch(MPS_FALLBACK_VARIABLE, "1")


def _set_before_torch(variable: str, value: str) -> bool:
    """``os.environ.setdefault(variable, value)``; False (logged) when torch is already imported and so ignores it."""
    os.environ.setdefault(variable, value)
    if "torch" in sys.modules:
        logger.debug("%s set after torch was imported: it has no effect in this process", variable)
        return False
    return True


def mps_available() -> bool:
    """True when this torch build can run on an Apple GPU (Metal Performance Shaders)."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto", allow_mps: bool = True) -> torch.device:
    """``"auto"`` -> CUDA when available, else the Apple GPU (MPS) when available and ``allow_mps``, else CPU.

    Panel labels are accepted too (:func:`device_from_choice`). ``"cuda"`` or ``"mps"`` asked for but not available
    -> CPU with a warning (once per process). ``allow_mps=False`` (training, which accumulates in float64,
    unsupported on MPS) keeps ``"auto"`` off the Apple GPU.
    """
    import torch

    name = device_from_choice(None if device is None else str(device))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if allow_mps and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        _fall_back_once("CUDA was asked for but is not available: running on the CPU (slower)")
        return torch.device("cpu")
    if chosen.type == "mps" and not mps_available():
        _fall_back_once("The Apple GPU (MPS) was asked for but is not available: running on the CPU (slower)")
        return torch.device("cpu")
    return chosen


#: Fall-back warnings already given in this process (a batch resolves the device once per case).
_WARNED: set[str] = set()


def _fall_back_once(message: str) -> None:
    """Log ``message`` as a warning the first time in this process, as a debug message afterwards."""
    if message in _WARNED:
        logger.debug("%s", message)
        return
    _WARNED.add(message)
    logger.warning("%s", message)


def auto_batch_size(device: torch.device, input_size: tuple[int, int] = (256, 256)) -> int:
    """A batch size that fits the device: from free memory on CUDA, a small constant on CPU and MPS."""
    import torch

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
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t)
    return isinstance(error, oom_types) or "out of memory" in str(error).lower()
