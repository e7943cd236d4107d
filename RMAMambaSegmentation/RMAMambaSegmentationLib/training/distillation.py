"""Knowledge distillation: a frozen teacher's soft targets for the training loss (training-only; the student's
state dict stays the paper's network, nothing of the teacher is saved with it).

The teacher is one or more trained 2D models (typically U-Nets, averaged as an ensemble) that see the same
augmented batch as the student (as DeiT does). The distillation term is the temperature-scaled binary cross-entropy
between the student's and the teacher's softened probabilities, ``T^2 * BCE(sigmoid(s / T), sigmoid(t / T))``, on the
student's first (finest) deep-supervision outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.weights.checkpoints import load_model
from RMAMambaSegmentationLib.weights.model_card import read_model_card

logger = logging.getLogger(__name__)

#: How many of the student's deep-supervision outputs (finest first) are distilled.
DISTILLED_OUTPUTS = 2


def _main_logits(output: object) -> torch.Tensor:
    if isinstance(output, (list, tuple)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the teacher returned {type(output).__name__}, not logits")
    return output


class Teacher:
    """Frozen teacher models whose mean logits are the soft targets."""

    def __init__(self, paths: Sequence[str | Path], device: torch.device, *, intensity: IntensityPreset) -> None:
        if not paths:
            raise ValueError("a teacher needs at least one weights file")
        self.models = []
        self.input_size: tuple[int, int] | None = None
        for path in paths:
            card = read_model_card(path)
            if card is not None and card.intensity.name != intensity.name:
                raise CheckpointError(f"teacher {path} was trained with the {card.intensity.name} intensity preset, "
                                      f"the student trains with {intensity.name}: use one preset for both")
            if card is not None and card.context_slices:
                raise CheckpointError(f"teacher {path} takes 2.5D input (context slices): use a 2D teacher")
            model = load_model(path, device=device)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            self.models.append(model.eval())
            if card is not None:
                self.input_size = tuple(card.input_size)
        self.paths = [str(path) for path in paths]
        logger.info("distilling from %d teacher model(s): %s", len(self.models), ", ".join(self.paths))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Mean teacher logits for ``images`` ``(B, 3, H, W)``, at ``(H, W)``."""
        size = tuple(images.shape[-2:])
        inputs = images
        if self.input_size is not None and self.input_size != size:
            inputs = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        total = None
        for model in self.models:
            logits = _main_logits(model(inputs)).float()
            total = logits if total is None else total + logits
        assert total is not None
        mean = total / len(self.models)
        if tuple(mean.shape[-2:]) != size:
            mean = F.interpolate(mean, size=size, mode="bilinear", align_corners=False)
        return mean


def distillation_loss(outputs: Sequence[torch.Tensor], teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """``T^2 * BCE(sigmoid(s / T), sigmoid(t / T))`` averaged over the first :data:`DISTILLED_OUTPUTS` outputs."""
    soft_targets = torch.sigmoid(teacher_logits / temperature)
    terms = []
    for output in outputs[:DISTILLED_OUTPUTS]:
        target = soft_targets
        if tuple(output.shape[-2:]) != tuple(target.shape[-2:]):
            target = F.interpolate(target, size=output.shape[-2:], mode="bilinear", align_corners=False)
        terms.append(F.binary_cross_entropy_with_logits(output.float() / temperature, target))
    return (temperature ** 2) * torch.stack(terms).mean()
