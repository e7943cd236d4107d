"""What a training run reports: per-step progress, per-epoch results and how the run ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass(frozen=True)
class StepProgress:
    """Reported after every optimizer step (rank 0)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float


ProgressCallback = Callable[[StepProgress], None]


#: What :meth:`Trainer.validate` returns: scores by name; ``valid_dice_per_volume`` maps case keys to Dice.
ValidationScores = dict[str, Union[float, dict[str, float]]]  # runtime alias: Union, not |, for Python 3.9


@dataclass
class EpochResult:
    """One row of ``log.csv``."""

    epoch: int
    steps: int
    lr: float
    train_loss: float
    valid_loss: float
    valid_dice: float
    valid_dice_global: float
    valid_dice_volume: float
    valid_iou: float
    best_dice: float
    is_best: bool
    epochs_without_improvement: int
    seconds: float


@dataclass
class TrainResult:
    """How a run ended."""

    output_dir: Path
    last_epoch: int
    best_epoch: int
    best_dice: float
    global_step: int
    stopped: str
    history: list[EpochResult] = field(default_factory=list)

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"
