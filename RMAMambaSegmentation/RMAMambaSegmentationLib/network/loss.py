"""The training loss of the paper's code: BCE + soft Dice on each of the four deep-supervision outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """BCE (mean over pixels) + (1 - soft Dice over the whole batch), on probabilities ``sigmoid(logits)``."""
    probability = torch.sigmoid(logits.float()).flatten()
    target = target.float().flatten()
    intersection = (probability * target).sum()
    dice = (2.0 * intersection + smooth) / (probability.sum() + target.sum() + smooth)
    bce = F.binary_cross_entropy(probability, target, reduction="mean")
    return bce + (1.0 - dice)


def deep_supervision_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Sum over the outputs (out1 ... out4) of :func:`dice_bce_loss`, equal weights, added 4, 3, 2, 1."""
    losses = [dice_bce_loss(output, target) for output in outputs]
    total = losses[-1]
    for loss in reversed(losses[:-1]):
        total = total + loss
    return total
