"""Named training recipes: the defaults that ``rmamamba train --recipe NAME`` starts from (every value overridable).

* ``paper`` -- the RMA-Mamba paper's protocol: Adam 1e-4, ReduceLROnPlateau on the validation loss, batch 16, up to
  500 epochs with early stopping after 50, rotation +-35 deg / flips / coarse dropout (each p 0.3). Meant for an
  ImageNet-initialised encoder (``--pretrained``) and a GPU.
* ``scratch`` -- training from random weights on a small data set: batch 8, 25 epochs, a per-step cosine
  decay to 1e-5, and a lighter augmentation (rotation +-15 deg p 0.7, zoom 0.87-1.15 p 0.7, gamma 0.67-1.5 p 0.5,
  no flips, no dropout holes; zoom and gamma log-uniform). The U-Net baseline uses Adam 1e-3 (the run that
  trained the shipped U-Net weights); RMA-Mamba-T and -S use AdamW 1e-3 with weight decay 0.05 and one warm-up
  epoch, as VMamba trains.

The default is ``scratch`` when training from random weights and ``paper`` with ``--pretrained`` or
``--init-weights``. SRMA-Mamba (3D) always starts from ``paper`` (batch 2 crops, its authors' settings).
"""

from __future__ import annotations

from typing import Any

RECIPES = ("scratch", "paper")

_PAPER: dict[str, Any] = {
    "lr": 1e-4, "optimizer": "adam", "weight_decay": 0.0, "schedule": "plateau", "min_lr": 1e-5, "warmup_epochs": 0.0,
    "epochs": 500, "batch_size": 16, "early_stop": 50,
    "rotate_p": 0.3, "max_angle": 35.0, "hflip_p": 0.3, "vflip_p": 0.3, "dropout_p": 0.3, "holes": 10,
    "gamma_p": 0.0, "max_gamma": 1.5, "scale_p": 0.0, "max_scale": 1.25,
}

_LIGHT_AUGMENTATION: dict[str, Any] = {
    "rotate_p": 0.7, "max_angle": 15.0, "hflip_p": 0.0, "vflip_p": 0.0, "dropout_p": 0.0, "holes": 10,
    "gamma_p": 0.5, "max_gamma": 1.5, "scale_p": 0.7, "max_scale": 1.15,
}

_SCRATCH_UNET: dict[str, Any] = {
    **_LIGHT_AUGMENTATION, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "schedule": "cosine",
    "min_lr": 1e-5, "warmup_epochs": 0.0, "epochs": 25, "batch_size": 8, "early_stop": 50,
}

_SCRATCH_RMA: dict[str, Any] = {**_SCRATCH_UNET, "optimizer": "adamw", "weight_decay": 0.05, "warmup_epochs": 1.0}


def default_recipe(variant: str, from_weights: bool) -> str:
    """``paper`` for SRMA-Mamba or when starting from weights (``--pretrained`` / ``--init-weights``), else
    ``scratch``."""
    return "paper" if from_weights or variant == "SRMA" else "scratch"


def recipe_settings(name: str, variant: str) -> dict[str, Any]:
    """The ``rmamamba train`` option values (argparse names) of recipe ``name`` for ``variant``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    if name == "paper":
        return {**_PAPER, "batch_size": 2 if variant == "SRMA" else 16}
    if variant == "SRMA":
        raise ValueError("the scratch recipe is for the 2D models; SRMA-Mamba trains with the paper recipe")
    return dict(_SCRATCH_UNET if variant == "UNET" else _SCRATCH_RMA)
