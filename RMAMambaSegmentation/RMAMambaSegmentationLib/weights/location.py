"""Where the shipped weights are installed (torch-free: the panel reads it without importing PyTorch)."""

from __future__ import annotations

from pathlib import Path

from RMAMambaSegmentationLib.registry import normalise_variant

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_WEIGHTS_NAME = "rmamamba_t_chaos_t2spir.pt"
#: Weights shipped for a model of the registry (the default RMA-Mamba-T, and the U-Net baseline).
BUNDLED_WEIGHTS = {"T": DEFAULT_WEIGHTS_NAME, "UNET": "unet_chaos_t2spir.pt"}


def bundled_weights_path(variant: str | None = None) -> Path:
    """Where the weights shipped for ``variant`` ("T", "UNET", ...; None = the default) are installed (the default
    RMA-Mamba-T weights for a model the project ships none for). The file may be missing."""
    name = BUNDLED_WEIGHTS.get(normalise_variant(variant), DEFAULT_WEIGHTS_NAME) if variant else DEFAULT_WEIGHTS_NAME
    return MODELS_DIR / name
