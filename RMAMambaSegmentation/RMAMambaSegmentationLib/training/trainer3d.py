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

from RMAMambaSegmentationLib.inference.windows import predict_logits, zscore_nonzero
from RMAMambaSegmentationLib.network.srma_loss import deep_supervision_dice_ce, dice_ce_loss
from RMAMambaSegmentationLib.registry import WINDOW_3D
from RMAMambaSegmentationLib.training.distributed import all_reduce_sum
from RMAMambaSegmentationLib.training.progress import ValidationScores
from RMAMambaSegmentationLib.training.trainer import Trainer
from RMAMambaSegmentationLib.training.volume_set import VolumeSet
from RMAMambaSegmentationLib.weights.model_card import ModelCard


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

    def _training_batch(self, batch: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops of the batch's volumes, foreground-balanced and augmented as the authors'."""
        config = self.config
        return self.train_set.crops(batch.tolist(), config.crop_size, rng, self.device,
                                    foreground_p=config.foreground_p)

    def _training_loss(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return deep_supervision_dice_ce(outputs, targets)

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
