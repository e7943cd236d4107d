"""Which network segments: a module given by the caller, a checkpoint path, or the default weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from RMAMambaSegmentationLib.runtime.devices import resolve_device
from RMAMambaSegmentationLib.weights.model_card import ModelCard, model_card_path, read_model_card

logger = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    """A network in eval mode on its device, with what is known about its weights."""

    module: torch.nn.Module
    device: torch.device
    weights_path: Path | None = None
    weights_sha256: str | None = None
    card: ModelCard | None = None

    @property
    def variant(self) -> str | None:
        variant = getattr(self.module, "variant", None)
        variant = getattr(variant, "name", variant)
        if variant is None and self.card is not None:
            variant = self.card.variant
        return None if variant is None else str(variant)

    def to(self, device: torch.device) -> PreparedModel:
        """Move the network (e.g. to the CPU after CUDA ran out of memory)."""
        self.module.to(device)
        self.device = device
        return self


def prepare_model(
    *,
    model: torch.nn.Module | PreparedModel | str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = "auto",
) -> PreparedModel:
    """Resolve ``model`` / ``weights`` / default weights into a :class:`PreparedModel` on ``device``.

    ``model`` may also name a registry model ("T", "S", "SRMA", "unet"): :func:`prepare_chosen_model` then loads
    ``weights`` (checked to hold that model) or the weights shipped for it.

    ``model`` wins when given (``weights``, if also given, then only supplies the model card and the sha256 for
    provenance). Otherwise ``weights`` is loaded with :func:`checkpoints.load_model`; with neither, the default
    weights (:func:`checkpoints.default_weights_path`) are used. Raises CheckpointError / WeightsNotFoundError.
    """
    if isinstance(model, str):
        return prepare_chosen_model(model_name=model, weights=weights, device=device)
    if isinstance(model, PreparedModel):
        target = resolve_device(device) if device not in (None, "auto") else model.device
        return model.to(target) if target != model.device else model
    target = resolve_device(device)
    if model is not None:
        return _wrap_module(model, weights, target)

    from RMAMambaSegmentationLib.registry import normalise_variant
    from RMAMambaSegmentationLib.weights.checkpoints import default_weights_path, file_sha256, load_model, model_label

    weights_path = Path(weights) if weights is not None else Path(default_weights_path())
    card = read_model_card(weights_path)
    module = load_model(weights_path, device=str(target)).eval()
    sha256 = getattr(module, "weights_sha256", None) or file_sha256(weights_path)
    if card is not None and normalise_variant(card.variant) != module.variant.name:
        logger.warning("model card %s says variant %s but the weights are %s; using the weights' variant",
                       model_card_path(weights_path), card.variant, model_label(module.variant.name))
    logger.info("loaded weights %s (sha256 %s) on %s", weights_path, sha256[:12], target)
    return PreparedModel(module, target, weights_path, sha256, card)


def _wrap_module(model: torch.nn.Module, weights: str | Path | None, target: torch.device) -> PreparedModel:
    """A caller's module; its weights file (``weights``, or the ``weights_path`` attribute that
    :func:`checkpoints.load_model` sets) supplies the sha256 and the model card."""
    sha256 = getattr(model, "weights_sha256", None) if weights is None else None
    if weights is None and getattr(model, "weights_path", None):
        weights = model.weights_path
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and sha256 is None and weights_path.is_file():
        from RMAMambaSegmentationLib.weights.checkpoints import file_sha256

        sha256 = file_sha256(weights_path)
    card = read_model_card(weights_path) if weights_path is not None else None
    module = model.to(target).eval()
    return PreparedModel(module, target, weights_path, sha256, card)


def prepare_chosen_model(
    *,
    model_name: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = "auto",
) -> PreparedModel:
    """The model a user chose by name ("T", "S", "SRMA", "UNET") and/or weights file.

    Without weights, the weights the project ships for that model are used (the U-Net baseline's for "UNET", the
    default RMA-Mamba-T weights otherwise).

    The weights must hold ``model_name`` (VariantMismatchError otherwise, e.g. SRMA weights for a 2D model);
    without weights, only the default (2D) weights exist, so SRMA-Mamba needs a weights file (WeightsNotFoundError).
    """
    from RMAMambaSegmentationLib import registry
    from RMAMambaSegmentationLib.errors import WeightsNotFoundError
    from RMAMambaSegmentationLib.weights.checkpoints import default_weights_path, load_model

    entry = registry.entry(model_name) if model_name else None
    if weights is None and entry is not None and entry.is_volumetric:
        raise WeightsNotFoundError(f"no {entry.label} weights are installed: give a weights file, "
                                   "e.g. the authors' released SRMA-Mamba weights for your MRI sequence")
    weights_path = Path(weights) if weights is not None else Path(default_weights_path(model_name))
    target = resolve_device(device)
    module = load_model(weights_path, variant=entry.key if entry is not None else None, device=str(target))
    return _wrap_module(module, weights_path, target)
