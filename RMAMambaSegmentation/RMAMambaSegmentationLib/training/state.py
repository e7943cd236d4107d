"""The resumable state of a training run (``training_state.pt``): weights, optimizer, scheduler, counters.

Everything in it is tensors, numbers, strings and containers, so it is read with ``weights_only=True``. Random
number streams are not stored: every epoch reseeds them from the run's seed and the epoch number, so a resumed
run draws the same slices and augmentations as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.weights.atomic_save import save_atomically

STATE_NAME = "training_state.pt"
STATE_FORMAT = "rmamamba-training-state/1"


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (a temporary file renamed over ``path``)."""
    return save_atomically({"format": STATE_FORMAT, **state}, path)


def resolve_resume_path(resume: str | Path, output_dir: str | Path) -> Path:
    """``resume`` as a state file, or the state file inside the folder ``resume`` (or the output folder)."""
    path = Path(resume) if str(resume) else Path(output_dir)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (it is written after every epoch)")
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state`; CheckpointError when it is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure means the file cannot be resumed from
        raise CheckpointError(f"{path} is not a readable training state: {error}") from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training state written by rmamamba train")
    return state
