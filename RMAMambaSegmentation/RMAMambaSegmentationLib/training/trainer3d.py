"""SRMA-Mamba training: the 2D :class:`~.trainer.Trainer`'s loop, checkpoints, resume, DDP and model cards, fed with
3D crops (:class:`~.volume_set.VolumeSet`) and validated with sliding windows over whole volumes.

Protocol of the authors (spec sections 8-9): one random crop per training volume per epoch (balanced on the
foreground here), flips, per-patch z-score, random intensity scale/shift, Dice + BCE on the four outputs, Adam,
ReduceLROnPlateau on the validation loss, gradient-norm clipping 1.0, early stopping on the validation Dice
(per volume, threshold 0.5, sliding windows of the crop size with the configured overlap on the whole z-scored
volume).
"""

from __future__ import annotations

import torch

from RMAMambaSegmentationLib.errors import RMAMambaError
from RMAMambaSegmentationLib.network.srma_loss import deep_supervision_dice_ce, dice_ce_loss
from RMAMambaSegmentationLib.registry import WINDOW_3D
from RMAMambaSegmentationLib.training.distributed import all_reduce_sum
from RMAMambaSegmentationLib.training.trainer import StepProgress, Trainer, ValidationScores, epoch_indices
from RMAMambaSegmentationLib.training.volume_set import VolumeSet
from RMAMambaSegmentationLib.volume.model_card import ModelCard
from RMAMambaSegmentationLib.volume.window_inference import predict_logits, zscore_nonzero


class VolumeTrainer(Trainer):
    """:class:`Trainer` for SRMA-Mamba on :class:`VolumeSet` training and validation volumes."""

    train_set: VolumeSet
    valid_set: VolumeSet

    def _check_data(self) -> None:
        if not self.config.is_volumetric:
            raise ValueError(f"VolumeTrainer trains SRMA-Mamba, not {self.config.variant}")
        for name, volumes in (("training", self.train_set), ("validation", self.valid_set)):
            if not isinstance(volumes, VolumeSet):
                raise ValueError(f"{name} data must be a VolumeSet of 3D volumes")

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One random crop of every training volume (in batches); returns (mean loss over ranks, steps)."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + epoch * 101 + self.context.rank)  # DropPath draws
        crop_rng = torch.Generator().manual_seed(config.seed * 7_919 + epoch * 131 + self.context.rank)
        indices = epoch_indices(len(self.train_set), epoch, config, self.context)
        batches = list(torch.split(indices, config.batch_size))
        if config.max_steps is not None:
            batches = batches[: max(0, config.max_steps - self.global_step)]
        self.network.train()
        total, steps = 0.0, 0
        for step, batch in enumerate(batches, start=1):
            images, targets = self.train_set.crops(batch.tolist(), config.crop_size, crop_rng, self.device,
                                                   foreground_p=config.foreground_p)
            with self._autocast():
                outputs = self.network(images)
            loss = deep_supervision_dice_ce([o.float() for o in outputs], targets)
            if not torch.isfinite(loss):
                raise RMAMambaError(f"the training loss became {loss.item()} at epoch {epoch}, step {step}: "
                                    "lower the learning rate or turn mixed precision off (--amp off)")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.per_step_schedule:
                self.scheduler.step()
            self.global_step += 1
            steps += 1
            value = float(loss.detach())
            total += value
            if self.progress is not None and self.context.is_main:
                lr = self.optimizer.param_groups[0]["lr"]
                self.progress(StepProgress(epoch, config.epochs, step, len(batches), value, lr))
        summed = all_reduce_sum([total, float(steps)], self.context)
        return (summed[0] / summed[1] if summed[1] else float("nan")), steps

    @torch.no_grad()
    def validate(self) -> ValidationScores:
        """Per validation volume: sliding-window logits of the whole z-scored volume, Dice + BCE of them, Dice and
        IoU at threshold 0.5; means over volumes (``valid_dice`` = ``valid_dice_volume``)."""
        config = self.config
        self.model.eval()
        n_cases = len(self.valid_set)
        mine = list(range(n_cases))[self.context.rank :: self.context.world_size]
        loss_sum, iou_sum = 0.0, 0.0
        tp2 = [0.0] * n_cases
        total = [0.0] * n_cases
        for index in mine:
            case = self.valid_set.cases[index]
            volume, _, _ = zscore_nonzero(case.image)
            with self._autocast():
                logits = predict_logits(volume, self.model, self.device, window=config.crop_size,
                                        overlap=config.overlap, batch=config.batch_size)
            logits_t = torch.from_numpy(logits)[None, None]
            target = torch.from_numpy(case.mask)[None, None].float()
            loss_sum += float(dice_ce_loss(logits_t, target))
            prediction, reference = logits_t > 0, target > 0.5  # sigmoid(x) > 0.5  <=>  x > 0
            tp = float((prediction & reference).sum())
            n_pred, n_ref = float(prediction.sum()), float(reference.sum())
            tp2[index], total[index] = 2 * tp, n_pred + n_ref
            union = n_pred + n_ref - tp
            iou_sum += tp / union if union else 1.0
        reduced = all_reduce_sum([loss_sum, iou_sum, float(len(mine)), *tp2, *total], self.context)
        loss_sum, iou_sum, count = reduced[:3]
        tp2, total = reduced[3 : 3 + n_cases], reduced[3 + n_cases :]
        per_volume = {key: (tp2[i] / total[i] if total[i] else 1.0) for i, key in enumerate(self.valid_set.keys)}
        mean_dice = sum(per_volume.values()) / len(per_volume)
        return {
            "valid_loss": loss_sum / count if count else float("nan"),
            "valid_dice": mean_dice,
            "valid_iou": iou_sum / count if count else float("nan"),
            "valid_dice_global": sum(tp2) / sum(total) if sum(total) else 1.0,
            "valid_dice_volume": mean_dice,
            "valid_dice_per_volume": per_volume,
        }

    def model_card(self, epoch: int, scores: ValidationScores) -> ModelCard:
        """The 2D card's fields plus the registry's 3D inference: window = crop size, overlap, threshold 0.5."""
        card = super().model_card(epoch, scores)
        card.inference = WINDOW_3D
        card.window = tuple(self.config.crop_size)
        card.overlap = self.config.overlap
        card.notes = ("SRMA-Mamba (3D): z-score over non-zero voxels, network axes i->L, j->P, k->S, native voxel "
                      "grid; the intensity preset above is not used.")
        data = card.training.get("data", {})
        data["n_train_volumes"], data["n_valid_volumes"] = len(self.train_set), len(self.valid_set)
        data.pop("n_train_slices", None)
        data.pop("n_valid_slices", None)
        return card
