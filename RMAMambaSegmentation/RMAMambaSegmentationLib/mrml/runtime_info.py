"""What the panel shows before a run: the weights' variant and problems, the compute device, the scan path.

Qt-free; torch is imported only inside the functions (the Slicer module imports this after PyTorch is ready).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, VariantMismatchError, WeightsNotFoundError

logger = logging.getLogger(__name__)

VARIANT_LABELS = {"T": "RMA-Mamba-T", "S": "RMA-Mamba-S", "UNET": "U-Net (baseline)"}


@dataclass(frozen=True)
class WeightsStatus:
    """Result of :func:`inspect_weights`: ``ok`` is True when the file can be used for ``expected_variant``."""

    ok: bool
    message: str
    variant: str | None = None
    path: str | None = None
    sha256: str | None = None


def torch_available() -> bool:
    """True when the ``torch`` package is installed (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def mamba_ssm_available() -> bool:
    """True when the optional ``mamba-ssm`` CUDA kernels are installed (without importing them)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def cuda_device_name() -> str | None:
    """Name of the first CUDA GPU (e.g. "NVIDIA RTX A4000"), or None without a usable GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken driver must not break the panel
        logger.debug("CUDA query failed", exc_info=True)
    return None


def describe_device(device: str) -> str:
    """A sentence for the status line: where ``device`` ("auto", "cpu", "cuda"/"gpu") will run, and how."""
    choice = str(device).lower()
    gpu = cuda_device_name()
    if choice == "cpu" or (choice == "auto" and gpu is None):
        return "CPU (pure-PyTorch selective scan)"
    if gpu is None:
        return "GPU requested but none is usable: CPU will be used"
    kernels = "mamba-ssm CUDA kernels" if mamba_ssm_available() else "pure-PyTorch selective scan (mamba-ssm absent)"
    return f"GPU {gpu} ({kernels})"


def normalize_device(device: str | None) -> str:
    """``"gpu"`` -> ``"cuda"``; None -> ``"auto"``; other values unchanged (lower case)."""
    choice = "auto" if device is None else str(device).strip().lower()
    return "cuda" if choice == "gpu" else choice


def inspect_weights(path: str | Path | None, expected_variant: str | None = None) -> WeightsStatus:
    """Read a weights file (safely) and say whether it fits ``expected_variant`` ("T"/"S", None = any).

    ``path`` None means the weights shipped with the extension for ``expected_variant`` (the U-Net baseline's for
    "UNET", else the default RMA-Mamba-T weights). Never raises for a bad file: the
    problem is in the returned message.
    """
    from ..checkpoints import default_weights_path, load_checkpoint

    try:
        resolved = Path(path) if path else default_weights_path(expected_variant)
        checkpoint = load_checkpoint(resolved, variant=expected_variant)
    except VariantMismatchError as error:
        return WeightsStatus(False, f"Variant mismatch: {error}", path=str(path) if path else None)
    except WeightsNotFoundError as error:
        return WeightsStatus(False, f"Weights missing: {error}", path=str(path) if path else None)
    except CheckpointError as error:
        return WeightsStatus(False, f"Unusable weights: {error}", path=str(path) if path else None)
    from ..volume.model_card import read_model_card

    label = VARIANT_LABELS.get(checkpoint.variant, checkpoint.variant)
    message = f"{'Default ' if not path else ''}{label} weights (sha256 {checkpoint.sha256[:12]}...)"
    try:
        card = read_model_card(resolved)
    except CheckpointError:
        card = None
    if card is not None and card.notes and not path:
        message += f". {card.notes.rstrip('.')}"  # what the shipped model is and is not
    if card is not None and card.licence:
        message += f"; licence: {card.licence}"
    return WeightsStatus(
        True,
        message,
        variant=checkpoint.variant,
        path=str(resolved),
        sha256=checkpoint.sha256,
    )
