"""The training loop of the paper's protocol: Adam, ReduceLROnPlateau on the validation loss, early stopping on
the validation Dice, deep-supervision Dice+BCE, augmentation, mixed precision on GPU, DDP under ``torchrun``.

Output folder (written by rank 0 only):

* ``last.pt`` / ``last.json`` -- weights and model card after every epoch (overwritten);
* ``best.pt`` / ``best.json`` -- the epoch with the highest validation Dice so far (per slice, or per
  volume with ``select_by``);
* ``epoch_NNNN.pt`` / ``.json`` -- every ``keep_every`` epochs when asked;
* ``training_state.pt`` -- everything ``--resume`` needs; ``log.csv`` -- one row per epoch; ``config.json``.

Validation Dice is the mean over validation slices of the per-slice Dice at threshold 0.5 (a slice with no
liver and no prediction scores 1), as the paper's scripts measure it; ``valid_dice_global`` pools all voxels;
``valid_dice_volume`` pools each validation case's slices and averages over cases (the score ``evaluate`` reports,
at network size and without post-processing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from RMAMambaSegmentationLib import __version__
from RMAMambaSegmentationLib.errors import CheckpointError, RMAMambaError
from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.network.loss import deep_supervision_loss
from RMAMambaSegmentationLib.training.augmentation import augment_batch
from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.csv_log import CsvLog
from RMAMambaSegmentationLib.training.distillation import Teacher, distillation_loss
from RMAMambaSegmentationLib.training.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_flag,
)
from RMAMambaSegmentationLib.training.feature_guidance import FeatureGuidance
from RMAMambaSegmentationLib.training.optimisation import (
    epoch_indices,
    make_optimizer,
    make_scheduler,
    resolve_amp,
    validation_indices,
)
from RMAMambaSegmentationLib.training.progress import (
    EpochResult,
    ProgressCallback,
    StepProgress,
    TrainResult,
    ValidationScores,
)
from RMAMambaSegmentationLib.training.slices import SliceSet
from RMAMambaSegmentationLib.training.state import STATE_NAME, load_training_state, save_training_state
from RMAMambaSegmentationLib.training.weight_average import WeightAverage
from RMAMambaSegmentationLib.weights.checkpoints import load_checkpoint, load_vmamba_backbone, save_checkpoint
from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

logger = logging.getLogger(__name__)


class Trainer:
    """Train one model on in-memory slice sets and write checkpoints to ``output_dir``."""

    def __init__(
        self,
        config: TrainConfig,
        train_set: SliceSet,
        valid_set: SliceSet,
        output_dir: str | Path,
        *,
        context: DistributedContext | None = None,
        data_description: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.train_set = train_set
        self.valid_set = valid_set
        self.output_dir = Path(output_dir)
        self.context = context or DistributedContext()
        self.device = self.context.device
        self.data_description = data_description or {}
        self.progress = progress
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self._check_data()

        torch.manual_seed(config.seed)
        self.model = build_model(config.variant)
        self._initialise_weights()
        self.model.to(self.device)
        self.network = self.model
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.teacher = Teacher(config.teachers, self.device, intensity=config.intensity) if config.teachers else None
        self.average = WeightAverage(self.model, config.ema) if config.ema else None
        self.guidance = None
        self.optimizer = make_optimizer(self.model, config)
        if config.guide_weight and config.guide_epochs:
            self.guidance = FeatureGuidance(self.model, self.teacher.models[0]).to(self.device)
            self.optimizer.add_param_group({"params": list(self.guidance.parameters()), "weight_decay": 0.0})
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch = 0  # last completed epoch
        self.global_step = 0
        self.best_dice = -math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0
        self.log = CsvLog(self.output_dir / "log.csv")

    # -- set-up ---------------------------------------------------------------------------------------------

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch on this process (the same on every rank)."""
        wanted = self.config.slices_per_epoch or len(self.train_set)
        return math.ceil(math.ceil(wanted / self.context.world_size) / self.config.batch_size)

    @property
    def per_step_schedule(self) -> bool:
        return self.config.schedule != "plateau"

    def _check_data(self) -> None:
        for name, slice_set in (("training", self.train_set), ("validation", self.valid_set)):
            if slice_set.size != self.config.input_size:
                raise ValueError(f"{name} slices are {slice_set.size}, the configuration says {self.config.input_size}")

    def _initialise_weights(self) -> None:
        if self.config.init_weights:
            checkpoint = load_checkpoint(self.config.init_weights, variant=self.config.variant)
            self.model.load_state_dict(checkpoint.state_dict, strict=True)
            logger.info("weights initialised from %s (sha256 %s)", checkpoint.path, checkpoint.sha256[:12])
        elif self.config.pretrained:
            load_vmamba_backbone(self.model, self.config.pretrained)
        elif self.context.is_main and self.config.variant != "UNET":
            logger.warning("training from random weights: the paper initialises the encoder from a pretrained VMamba "
                           "ImageNet checkpoint")

    def resume(self, path: str | Path) -> None:
        """Continue from a ``training_state.pt``: weights, optimizer, scheduler, scaler and counters."""
        state = load_training_state(path)
        saved = state.get("config", {})
        checked = (("variant", self.config.variant, None), ("input_size", list(self.config.input_size), None),
                   ("select_by", self.config.select_by, "slice"), ("context_slices", self.config.context_slices, 0),
                   ("schedule", self.config.schedule, "plateau"), ("optimizer", self.config.optimizer, "adam"))
        for key, current, default in checked:
            if saved.get(key, default) != current:
                raise CheckpointError(f"cannot resume {path}: it was trained with {key} {saved.get(key, default)!r}, "
                                      f"this run asks for {current!r}")
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.guidance is not None and state.get("guidance"):
            self.guidance.load_state_dict(state["guidance"])
        if self.average is not None:
            if not state.get("weight_average"):
                raise CheckpointError(f"cannot resume {path} with a weight average: it was trained without one")
            self.average.load_state_dict(state["weight_average"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_dice = float(state["best_dice"])
        self.best_epoch = int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        if self.context.is_main:
            self.log.truncate_after(self.epoch)
        logger.info("resumed from %s after epoch %d (step %d, best Dice %.4f at epoch %d)", path, self.epoch,
                    self.global_step, self.best_dice, self.best_epoch)

    # -- one epoch ------------------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over this epoch's samples; returns (mean training loss over all ranks, steps taken)."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + epoch * 101 + self.context.rank)  # DropPath draws
        batch_rng = torch.Generator().manual_seed(config.seed * 7_919 + epoch * 131 + self.context.rank)
        indices = epoch_indices(len(self.train_set), epoch, config, self.context)
        batches = list(torch.split(indices, config.batch_size))
        if config.max_steps is not None:
            batches = batches[: max(0, config.max_steps - self.global_step)]
        self.network.train()
        total, steps = 0.0, 0
        for step, batch in enumerate(batches, start=1):
            images, targets = self._training_batch(batch, batch_rng)
            with self._autocast():
                outputs = self.network(images)
            outputs = [o.float() for o in outputs]
            loss = self._training_loss(outputs, targets)
            if self.teacher is not None:
                soft = self.teacher.logits(images)
                loss = loss + config.kd_weight * distillation_loss(outputs, soft, config.kd_temperature)
            if self.guidance is not None:
                if epoch <= config.guide_epochs:
                    loss = loss + config.guide_weight * self.guidance.loss()
                self.guidance.clear()
            if not torch.isfinite(loss):
                raise RMAMambaError(f"the training loss became {loss.item()} at epoch {epoch}, step {step}: "
                                    "lower the learning rate or turn mixed precision off")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.per_step_schedule:
                self.scheduler.step()
            if self.average is not None:
                self.average.update(self.model)
            self.global_step += 1
            steps += 1
            value = float(loss.detach())
            total += value
            if self.progress is not None and self.context.is_main:
                lr = self.optimizer.param_groups[0]["lr"]
                self.progress(StepProgress(epoch, config.epochs, step, len(batches), value, lr))
        summed = all_reduce_sum([total, float(steps)], self.context)
        return (summed[0] / summed[1] if summed[1] else float("nan")), steps

    def _training_batch(self, batch: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and targets of one training step: the batch's slices (with their neighbours), augmented."""
        images, targets = self.train_set.batch(batch, self.device, context_slices=self.config.context_slices)
        return augment_batch(images, targets, self.config.augmentation, rng)

    def _training_loss(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The loss of one step from the network's (deep-supervision) outputs."""
        return deep_supervision_loss(outputs, targets)

    @torch.no_grad()
    def validate(self) -> ValidationScores:
        """Validation loss (mean over batches), per-slice mean Dice and IoU, the pooled Dice, and the per-volume
        Dice at network size (each case's slices pooled, then the mean over cases)."""
        indices = validation_indices(len(self.valid_set), self.config.valid_max_slices)
        indices = indices[self.context.rank :: self.context.world_size]
        self.model.eval()
        n_cases = len(self.valid_set.keys)
        # Everything accumulates on the device and is copied to the host once, after the loop.
        loss_dice_iou = torch.zeros(3, dtype=torch.float64, device=self.device)
        case_tp2 = torch.zeros(n_cases, dtype=torch.float64, device=self.device)
        case_total = torch.zeros(n_cases, dtype=torch.float64, device=self.device)
        batches = 0
        for batch in torch.split(indices, self.config.batch_size):
            images, targets = self.valid_set.batch(batch, self.device, context_slices=self.config.context_slices)
            with self._autocast():
                outputs = self.model.forward_all(images)
            prediction = (torch.sigmoid(outputs[0].float()) > 0.5).flatten(1)
            reference = (targets > 0.5).flatten(1)
            tp = (prediction & reference).sum(1).double()
            n_pred, n_ref = prediction.sum(1).double(), reference.sum(1).double()
            union = n_pred + n_ref - tp
            empty = (n_pred + n_ref) == 0
            dice = torch.where(empty, 1.0, 2 * tp / (n_pred + n_ref).clamp(min=1))
            iou = torch.where(empty, 1.0, tp / union.clamp(min=1))
            loss = deep_supervision_loss([o.float() for o in outputs], targets).double()
            loss_dice_iou += torch.stack((loss, dice.sum(), iou.sum()))
            batches += 1
            cases = self.valid_set.case_index[batch].long().to(self.device)
            case_tp2.index_add_(0, cases, 2 * tp)
            case_total.index_add_(0, cases, n_pred + n_ref)
        loss_sum, dice_sum, iou_sum = loss_dice_iou.tolist()
        sums = [loss_sum, batches, dice_sum, iou_sum, len(indices)]
        reduced = all_reduce_sum([*sums, *case_tp2.tolist(), *case_total.tolist()], self.context)
        loss, batches, dice, iou, slices = reduced[:5]
        tp2, total = reduced[5 : 5 + n_cases], reduced[5 + n_cases :]
        per_volume = {key: (a / b if b else 1.0) for key, a, b in zip(self.valid_set.keys, tp2, total)}
        pooled_tp2, pooled_total = sum(tp2), sum(total)
        return {
            "valid_loss": loss / batches if batches else float("nan"),
            "valid_dice": dice / slices if slices else float("nan"),
            "valid_iou": iou / slices if slices else float("nan"),
            "valid_dice_global": pooled_tp2 / pooled_total if pooled_total else 1.0,
            "valid_dice_volume": sum(per_volume.values()) / len(per_volume),
            "valid_dice_per_volume": per_volume,
        }

    # -- checkpoints ----------------------------------------------------------------------------------------

    def model_card(self, epoch: int, scores: ValidationScores) -> ModelCard:
        config = self.config
        notes = ""
        if self.data_description.get("layout") == "png2d":
            notes = ("Trained on 8-bit PNG slices divided by 255 (the official 2D release); how those PNGs were made "
                     "from the volumes is not documented, so inference on volumes uses the intensity preset above.")
        return ModelCard(
            variant=config.variant,
            intensity=config.intensity,
            input_size=config.input_size,
            context_slices=config.context_slices,
            threshold=0.5,
            modality="CT" if config.intensity.name.upper() == "CT" else "MR",  # the sequence is the user's to add
            training={
                "epoch": epoch,
                "global_step": self.global_step,
                "valid_dice": scores.get("valid_dice"),
                "valid_dice_global": scores.get("valid_dice_global"),
                "valid_dice_volume": scores.get("valid_dice_volume"),
                "valid_dice_per_volume": scores.get("valid_dice_per_volume"),
                "valid_loss": scores.get("valid_loss"),
                "best_epoch": self.best_epoch,
                "data": {**self.data_description, "n_train_slices": len(self.train_set),
                         "n_valid_slices": len(self.valid_set), "label": config.label},
                "settings": config.to_dict(),
                "world_size": self.context.world_size,
            },
            provenance={
                "created_by": f"rmamamba train {__version__}",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__,
                "initialised_from": config.init_weights or config.pretrained or "random",
            },
            licence=config.licence,
            notes=notes,
        )

    def _save_weights(self, name: str, card: ModelCard) -> Path:
        path = save_checkpoint(self.output_dir / f"{name}.pt", self.model)
        write_model_card(path, card)
        return path

    def save_state(self, epoch: int) -> Path:
        return save_training_state(self.output_dir / STATE_NAME, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "weight_average": self.average.state_dict() if self.average is not None else {},
            "guidance": self.guidance.state_dict() if self.guidance is not None else {},
            "epoch": epoch,
            "global_step": self.global_step,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "config": self.config.to_dict(),
        })

    # -- the run --------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``epochs``, early stopping, or ``max_steps``; returns how it ended."""
        config = self.config
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(
                json.dumps({"settings": config.to_dict(), "data": self.data_description}, indent=2) + "\n",
                encoding="utf-8",
            )
        history: list[EpochResult] = []
        stopped = "epochs"
        while self.epoch < config.epochs:
            if config.max_steps is not None and self.global_step >= config.max_steps:
                stopped = "max_steps"
                break
            epoch = self.epoch + 1
            started = time.perf_counter()
            train_loss, steps = self.train_epoch(epoch)
            with self._averaged_weights():
                scores = self.validate()
            if not self.per_step_schedule:
                self.scheduler.step(scores["valid_loss"])
            selected = scores[config.selection_metric]
            is_best = selected > self.best_dice
            if is_best:
                self.best_dice, self.best_epoch = selected, epoch
                self.epochs_without_improvement = 0
            elif selected < self.best_dice:
                self.epochs_without_improvement += 1
            self.epoch = epoch
            result = EpochResult(
                epoch, steps, self.optimizer.param_groups[0]["lr"], train_loss, scores["valid_loss"],
                scores["valid_dice"], scores["valid_dice_global"], scores["valid_dice_volume"], scores["valid_iou"],
                self.best_dice, is_best, self.epochs_without_improvement, time.perf_counter() - started,
            )
            history.append(result)
            if self.context.is_main:
                self._end_of_epoch(result, scores)
            barrier(self.context)
            logger.info("epoch %d: train loss %.4f, valid loss %.4f, valid Dice %.4f per slice, %.4f per volume%s "
                        "(lr %.2g, %.1f s)", epoch, train_loss, scores["valid_loss"], scores["valid_dice"],
                        scores["valid_dice_volume"], " (best)" if is_best else "", result.lr, result.seconds)
            if broadcast_flag(self.epochs_without_improvement >= config.early_stop, self.context):
                stopped = "early stopping"
                break
        logger.info("training stopped (%s) after epoch %d; best validation Dice %.4f at epoch %d", stopped,
                    self.epoch, self.best_dice, self.best_epoch)
        return TrainResult(self.output_dir, self.epoch, self.best_epoch, self.best_dice, self.global_step, stopped,
                           history)

    def _averaged_weights(self):
        """The weight average in the model while validating and saving (a no-op without ``ema``)."""
        return self.average.applied(self.model) if self.average is not None else contextlib.nullcontext()

    def _end_of_epoch(self, result: EpochResult, scores: ValidationScores) -> None:
        with self._averaged_weights():  # the weights files hold the average, the training state the raw weights
            card = self.model_card(result.epoch, scores)
            self._save_weights("last", card)
            if result.is_best:
                self._save_weights("best", card)
            if self.config.keep_every and result.epoch % self.config.keep_every == 0:
                self._save_weights(f"epoch_{result.epoch:04d}", card)
        self.save_state(result.epoch)
        self.log.append(vars(result))
