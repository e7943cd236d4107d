"""Feature guidance ("locality guidance", Li et al., ECCV 2022): in the first epochs, the student's encoder stages 1
and 2 (1/4 and 1/8 of the input) imitate the teacher U-Net's features at the same stride.

Each guided stage goes through a training-only 1x1 convolution to the teacher's width; both sides are standardised
per sample and channel over the plane, and the term is their mean squared difference. The projections are trained
with the student (their own parameter group) and kept in the training state for ``--resume``, never in the weights
file: the student's state dict stays the paper's network.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: (student encoder stage, teacher U-Net encoder block) pairs at the same stride: 1/4 and 1/8 of the input.
GUIDED_PAIRS = ((0, 2), (1, 3))


def standardised(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``features`` (B, C, H, W) with zero mean and unit variance per sample and channel over the plane."""
    mean = features.mean(dim=(-2, -1), keepdim=True)
    std = features.var(dim=(-2, -1), keepdim=True, unbiased=False).add(eps).sqrt()
    return (features - mean) / std


class FeatureGuidance(nn.Module):
    """Captures the student's encoder features and the teacher's (through forward hooks) and scores their
    difference through training-only projections."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        encoder = getattr(student, "encoder", None)
        blocks = getattr(teacher, "down", None)
        if encoder is None or not hasattr(encoder, "widths"):
            raise ValueError("feature guidance needs an RMA-Mamba student (a VMamba encoder)")
        if blocks is None or len(blocks) <= max(t for _, t in GUIDED_PAIRS):
            raise ValueError("feature guidance needs a U-Net teacher")
        teacher_widths = teacher.widths
        self.projections = nn.ModuleList(
            nn.Conv2d(encoder.widths[s], teacher_widths[t], kernel_size=1) for s, t in GUIDED_PAIRS
        )
        self._student: list[torch.Tensor] = []
        self._teacher: dict[int, torch.Tensor] = {}
        self._hooks = [encoder.register_forward_hook(self._keep_student)]
        for _, block_index in GUIDED_PAIRS:
            self._hooks.append(blocks[block_index].register_forward_hook(self._teacher_hook(block_index)))

    def _keep_student(self, module: nn.Module, inputs: Any, output: list[torch.Tensor]) -> None:
        if module.training:
            self._student = list(output)

    def _teacher_hook(self, block_index: int):
        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._teacher[block_index] = output.detach()
        return keep

    def loss(self) -> torch.Tensor:
        """The mean over the guided stages of ``MSE(standardised(projection(student)), standardised(teacher))``
        for the last forward passes of both networks (call after both ran on the same batch)."""
        if not self._student or len(self._teacher) < len(GUIDED_PAIRS):
            raise RuntimeError("feature guidance needs one student and one teacher forward pass first")
        terms = []
        for projection, (stage, block_index) in zip(self.projections, GUIDED_PAIRS):
            student = projection(self._student[stage].float())
            target = self._teacher[block_index].float()
            if target.shape[-2:] != student.shape[-2:]:
                target = F.interpolate(target, size=student.shape[-2:], mode="bilinear", align_corners=False)
            terms.append(F.mse_loss(standardised(student), standardised(target)))
        self._student, self._teacher = [], {}
        return torch.stack(terms).mean()

    def clear(self) -> None:
        """Forget captured features (guidance is off for this step)."""
        self._student, self._teacher = [], {}

    def remove(self) -> None:
        """Detach the forward hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
