"""SRMA-Mamba's training loss: soft Dice + BCE-with-logits per output, as MONAI's ``DiceCELoss(sigmoid=True)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """``1 - (2|P.G| + s) / (|P| + |G| + s)`` per sample and channel (mean), plus BCE-with-logits (mean)."""
    logits = logits.float()
    target = target.float()
    probability = torch.sigmoid(logits)
    axes = tuple(range(2, logits.dim()))
    intersection = (probability * target).sum(axes)
    denominator = probability.sum(axes) + target.sum(axes)
    dice = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def deep_supervision_dice_ce(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``loss(out1) + loss(out2) + loss(out3) + loss(out4)`` against the same full-resolution target."""
    total = dice_ce_loss(outputs[0], target)
    for output in outputs[1:]:
        total = total + dice_ce_loss(output, target)
    return total
