"""Training settings, with the paper's protocol as defaults (every value overridable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.registry import normalise_variant
from RMAMambaSegmentationLib.training.augmentation import AugmentationConfig
from RMAMambaSegmentationLib.weights.model_card import CONTEXT_SLICES

AMP_MODES = ("auto", "off", "bf16", "fp16")
#: What picks ``best.pt`` and drives early stopping: the paper's mean per-slice Dice, or the mean per-volume Dice.
SELECTION_METRICS = {"slice": "valid_dice", "volume": "valid_dice_volume"}
OPTIMIZERS = ("adam", "adamw")
#: plateau: ReduceLROnPlateau on the validation loss (the paper); cosine: per-step cosine decay to ``min_lr``
#: after a linear warm-up of ``warmup_epochs``.
SCHEDULES = ("plateau", "cosine")


@dataclass
class TrainConfig:
    """What ``rmamamba train`` does. Defaults: the official RMA-Mamba training (paper protocol)."""

    variant: str = "T"  # T, S (2D RMA-Mamba), SRMA (3D), UNET (2D U-Net baseline)
    input_size: tuple[int, int] = (256, 256)
    intensity: IntensityPreset = field(default_factory=IntensityPreset.mri)
    context_slices: int = 0  # 1: the neighbouring slices in the outer input channels (2.5D); 0: the paper
    label: int | None = None
    batch_size: int = 16  # per process under torchrun
    lr: float = 1e-4
    optimizer: str = "adam"  # adam (the paper) or adamw (decoupled weight decay)
    weight_decay: float = 0.0
    schedule: str = "plateau"  # plateau (the paper) or cosine
    min_lr: float = 1e-5  # cosine: the learning rate reached at the last step
    warmup_epochs: float = 0.0  # cosine: linear warm-up from lr/100 over this many epochs
    epochs: int = 500
    lr_patience: int = 5
    lr_factor: float = 0.1
    early_stop: int = 50  # epochs without a better validation Dice
    select_by: str = "slice"  # best.pt and early stopping: per-slice Dice (paper) or per-volume Dice
    slices_per_epoch: int | None = None  # None: every training slice once per epoch
    max_steps: int | None = None  # stop after this many optimizer steps in total
    valid_max_slices: int | None = None  # None: every validation slice
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = 42
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 (or fp16) on CUDA, off on CPU; bf16 on CPU only when asked
    workers: int = 0  # threads reading and preprocessing volumes
    pretrained: str | None = None  # VMamba ImageNet checkpoint for the encoder
    init_weights: str | None = None  # RMA-Mamba checkpoint to fine-tune
    keep_every: int = 0  # also keep epoch_NNNN.pt every this many epochs (0: only last and best)
    licence: str = ""  # data licence recorded in the model cards
    # SRMA-Mamba (3D) only: training crop = inference window (i, j, k), sliding-window overlap, foreground share
    crop_size: tuple[int, int, int] = (224, 224, 64)
    overlap: float = 0.25
    foreground_p: float = 0.5
    grad_clip: float | None = None  # global gradient-norm clipping (SRMA default 1.0, as the authors)
    recipe: str = ""  # the named recipe (training.recipes) the defaults came from; recorded, not applied here
    teachers: tuple[str, ...] = ()  # distillation: frozen 2D teacher weights whose mean logits are soft targets
    kd_weight: float = 1.0  # weight of the distillation term (added to the ground-truth loss)
    kd_temperature: float = 2.0
    ema: float = 0.0  # decay of the exponential moving average of the weights that is validated and saved (0: off)
    guide_weight: float = 0.0  # feature guidance: weight of the encoder-imitates-teacher term (needs a U-Net teacher)
    guide_epochs: int = 0  # feature guidance runs in epochs 1..guide_epochs, then stops

    def __post_init__(self) -> None:
        self.variant = normalise_variant(self.variant)
        if self.variant not in ("T", "S", "SRMA", "UNET"):
            raise ValueError(f"variant must be T, S, SRMA or UNET, got {self.variant!r}")
        if self.variant == "UNET" and self.pretrained:
            raise ValueError("a pretrained VMamba backbone does not fit the U-Net, which has none (start from U-Net "
                             "weights instead)")
        self.crop_size = tuple(int(c) for c in self.crop_size)  # type: ignore[assignment]
        if self.variant == "SRMA":
            self._check_volumetric()
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if min(self.input_size) < 32:
            raise ValueError(f"input size {self.input_size} is too small: at least 32x32")
        if self.context_slices not in CONTEXT_SLICES:
            raise ValueError(f"context_slices must be 0 or 1, got {self.context_slices!r}")
        if self.select_by not in SELECTION_METRICS:
            raise ValueError(f"select_by must be one of {', '.join(SELECTION_METRICS)}, got {self.select_by!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("slices_per_epoch", "max_steps", "valid_max_slices"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or unset)")
        if self.lr <= 0 or not 0 < self.lr_factor < 1:
            raise ValueError("lr must be positive and lr_factor between 0 and 1")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} and schedule one of "
                             f"{', '.join(SCHEDULES)}, got {self.optimizer!r} and {self.schedule!r}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError("weight_decay and warmup_epochs must not be negative, min_lr must lie in [0, lr]")
        self.teachers = tuple(str(path) for path in self.teachers)
        if self.teachers and self.variant == "SRMA":
            raise ValueError("distillation from teacher models is for the 2D models")
        if self.kd_weight < 0 or self.kd_temperature <= 0 or not 0.0 <= self.ema < 1.0:
            raise ValueError("kd_weight must not be negative, kd_temperature must be positive, ema must lie in [0, 1)")
        if self.guide_weight < 0 or self.guide_epochs < 0:
            raise ValueError("guide_weight and guide_epochs must not be negative")
        if self.guide_weight and self.guide_epochs and not self.teachers:
            raise ValueError("feature guidance needs a teacher model")
        if self.early_stop < 1 or self.lr_patience < 0 or self.workers < 0 or self.keep_every < 0:
            raise ValueError("early_stop must be >= 1; lr_patience, workers and keep_every >= 0")

    def _check_volumetric(self) -> None:
        if len(self.crop_size) != 3 or any(c < 16 or c % 16 for c in self.crop_size):
            raise ValueError(f"crop_size must be three multiples of 16, got {self.crop_size}")
        if not 0.0 <= self.overlap < 1.0 or not 0.0 <= self.foreground_p <= 1.0:
            raise ValueError("overlap must lie in [0, 1) and foreground_p in [0, 1]")
        if self.pretrained:
            raise ValueError("a pretrained 2D VMamba backbone does not fit: SRMA-Mamba has none (start from "
                             "SRMA-Mamba weights)")
        if self.context_slices:
            raise ValueError("context_slices is for the 2D models; SRMA-Mamba sees whole 3D windows")
        if self.grad_clip is None:
            self.grad_clip = 1.0

    @property
    def is_volumetric(self) -> bool:
        """True for SRMA-Mamba (3D crops and sliding-window validation)."""
        return self.variant == "SRMA"

    @property
    def selection_metric(self) -> str:
        """The validation score (a key of :meth:`Trainer.validate`) that picks ``best.pt``."""
        return SELECTION_METRICS[self.select_by]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["crop_size"] = list(self.crop_size)
        data["teachers"] = list(self.teachers)
        data["intensity"] = self.intensity.to_dict()
        data["augmentation"] = self.augmentation.to_dict()
        return data
