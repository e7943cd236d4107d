"""Optimisation pieces of the training loop: mixed precision, the per-epoch slice order, optimizer and
learning-rate schedules, the validation subset."""

from __future__ import annotations

import logging
import math

import torch

from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.distributed import DistributedContext

logger = logging.getLogger(__name__)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None: full precision).

    On CPU only an explicit ``bf16`` turns autocast on (fast on CPUs with AMX or AVX-512 BF16, slow elsewhere);
    ``auto`` stays in float32 there and ``fp16`` is refused with a warning.
    """
    if device.type != "cuda":
        if mode == "bf16":
            return torch.bfloat16
        if mode == "fp16":
            logger.warning("float16 autocast is only used on CUDA (bf16 works on the CPU); training in float32")
        return None
    if mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def epoch_indices(n_slices: int, epoch: int, config: TrainConfig, context: DistributedContext) -> torch.Tensor:
    """This process's training slice indices for ``epoch``: a seeded shuffle (same on every rank), cut or
    repeated to ``slices_per_epoch``, padded to a multiple of the world size and strided by rank."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    wanted = config.slices_per_epoch or n_slices
    parts = [torch.randperm(n_slices, generator=generator) for _ in range(math.ceil(wanted / n_slices))]
    order = torch.cat(parts)[:wanted]
    padded = math.ceil(len(order) / context.world_size) * context.world_size
    if padded > len(order):
        order = torch.cat([order, order[: padded - len(order)]])
    return order[context.rank :: context.world_size]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper) or AdamW; with AdamW, biases and normalisation weights (1-D tensors) get no decay."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    plain = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """The learning-rate factor after ``step`` optimizer steps: linear warm-up from 1 % to 1 over
    ``warmup_steps``, then cosine decay from 1 to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return 0.01 + 0.99 * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """ReduceLROnPlateau (stepped once per epoch on the validation loss) or a per-step cosine schedule spanning
    ``epochs`` (``max_steps`` stops a run early without changing its schedule, so that it can be resumed)."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    ratio = config.min_lr / config.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup, ratio))


def validation_indices(n_slices: int, limit: int | None) -> torch.Tensor:
    """Every validation slice, or ``limit`` evenly spaced ones."""
    if limit is None or limit >= n_slices:
        return torch.arange(n_slices)
    return torch.linspace(0, n_slices - 1, limit).round().long().unique()
