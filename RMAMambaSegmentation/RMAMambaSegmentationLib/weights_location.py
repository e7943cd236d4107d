"""Where the default weights are installed (torch-free: the panel reads it without importing PyTorch)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_WEIGHTS_NAME = "rmamamba_t_chaos_t2spir.pt"
