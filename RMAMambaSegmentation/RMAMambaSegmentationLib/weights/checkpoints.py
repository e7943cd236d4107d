"""Reading and writing RMA-Mamba weights safely: wrappers, variant detection, specific errors.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors, numbers, strings
and containers, never code.

Example::

    checkpoint = load_checkpoint("rmamamba_t.pth")   # accepts raw state dicts and {"model": ...} wrappers
    print(checkpoint.variant, checkpoint.sha256)
    model = load_model("rmamamba_t.pth", variant="T", device="cpu")   # eval mode
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from RMAMambaSegmentationLib.errors import CheckpointError, VariantMismatchError, WeightsNotFoundError
from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.network.rma_mamba import RMAMamba
from RMAMambaSegmentationLib.network.unet import is_unet_state_dict
from RMAMambaSegmentationLib.registry import SRMA, UNET, entry, normalise_variant
from RMAMambaSegmentationLib.weights.atomic_save import save_atomically
from RMAMambaSegmentationLib.weights.file_sniffing import explain_load_failure, refuse_non_checkpoint
from RMAMambaSegmentationLib.weights.location import bundled_weights_path

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.", "model.")
_VMAMBA_RENAMES = (
    ("patch_embed.proj.", "patch_embed.0."),
    ("patch_embed.norm.", "patch_embed.2."),
    (".ln_1.", ".norm."),
    (".self_attention.", ".op."),
)


@dataclass
class Checkpoint:
    """An RMA-Mamba state dict read from ``path``, with its variant ("T"/"S") and the file's sha256."""

    path: Path
    variant: str
    state_dict: dict[str, torch.Tensor]
    sha256: str
    extras: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_weights_path(model: str | None = None) -> Path:
    """The weights shipped with the project, used when the user names none: those of ``model`` ("UNET": the U-Net
    baseline's) when the project ships some, else the default RMA-Mamba-T weights."""
    path = bundled_weights_path(model)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"no default weights are installed ({path} does not exist); give a weights file "
            "(in Slicer: the weights picker)"
        )
    return path


def read_weights_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, turning every failure into a specific error."""
    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"weights path is not a file: {path}")
    refuse_non_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or unsafe files
        raise explain_load_failure(path, error) from error


def unwrap_state_dict(content: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the tensor mapping inside the usual wrappers and strip ``module.``-style prefixes.

    Returns ``(state_dict, extras)`` where ``extras`` holds the wrapper's other entries (epoch, ...).
    """
    extras: dict[str, Any] = {}
    for _ in range(3):
        if not isinstance(content, Mapping):
            break
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            break
        inner = next((content[k] for k in _WRAPPER_KEYS if isinstance(content.get(k), Mapping)), None)
        if inner is None:
            break
        extras.update({k: v for k, v in content.items() if not isinstance(v, Mapping) or k not in _WRAPPER_KEYS})
        content = inner
    if not isinstance(content, Mapping) or not content:
        raise CheckpointError(f"{source} holds no state dict (found {type(content).__name__})")
    tensors = {str(k): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors")
    for prefix in _STRIPPED_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors, extras


def model_label(variant: str) -> str:
    """The registry label of ``variant``, "(3D)" added for the volumetric member so that a 2D/3D mix-up reads
    plainly: "RMA-Mamba-T", "RMA-Mamba-S", "SRMA-Mamba (3D)", "U-Net (2D baseline)" (unknown names unchanged)."""
    try:
        found = entry(variant)
    except ValueError:
        return str(variant)
    return f"{found.label} (3D)" if found.is_volumetric else found.label


def is_srma_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """SRMA-Mamba's layout: MONAI-style ``out_conv1.conv.conv`` head and 3D (5-D) encoder convolutions."""
    head = state_dict.get("out_conv1.conv.conv.weight")
    stem = state_dict.get("encoder.patch_embed.0.weight")
    return head is not None and (stem is None or stem.dim() == 5)


def detect_variant(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """"T", "S" (2D RMA-Mamba), "SRMA" (3D SRMA-Mamba) or "UNET" (2D U-Net baseline) from the keys;
    CheckpointError for anything else."""
    keys = set(state_dict)
    if is_srma_state_dict(state_dict):
        return SRMA
    if is_unet_state_dict(state_dict):
        return UNET
    if "out_conv1.weight" not in keys or not any(k.startswith("encoder.layers.") for k in keys):
        if any(k.startswith(("layers.0.blocks.", "patch_embed.")) for k in keys):
            raise CheckpointError(
                f"{source} is a VMamba backbone (ImageNet) checkpoint, not an RMA-Mamba segmentation checkpoint; "
                "use it as the pretrained encoder when training"
            )
        sample = ", ".join(sorted(keys)[:3])
        raise CheckpointError(f"{source} is not an RMA-Mamba checkpoint (keys such as {sample})")
    has_bridge = any(k.startswith("st_block1.") for k in keys)
    deep_stage3 = any(k.startswith("encoder.layers.2.blocks.5.") for k in keys)
    if has_bridge != deep_stage3:
        raise CheckpointError(f"{source} mixes RMA-Mamba-T and -S layers (bridge blocks: {has_bridge}, "
                              f"15-block stage 3: {deep_stage3})")
    return "S" if has_bridge else "T"


def _check_against_model(state_dict: Mapping[str, torch.Tensor], model: nn.Module, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} keys with the wrong shape (e.g. {'; '.join(wrong[:2])})")
    if problems:
        raise CheckpointError(f"{source} does not fit {model_label(model.variant.name)}: " + "; ".join(problems))


def load_checkpoint(path: str | os.PathLike, *, variant: str | None = None) -> Checkpoint:
    """Read an RMA-Mamba, SRMA-Mamba or U-Net checkpoint, detect its variant, and verify every key and shape.

    Raises WeightsNotFoundError (no file), CheckpointError (corrupt, not RMA-Mamba, keys do not fit) or
    VariantMismatchError (``variant`` given and the file holds another one, e.g. SRMA weights for a 2D model).
    """
    path = Path(path)
    state_dict, extras = unwrap_state_dict(read_weights_file(path), source=str(path))
    detected = detect_variant(state_dict, source=str(path))
    if variant is not None and normalise_variant(variant) != detected:
        wanted = normalise_variant(variant)
        hint = ""
        if SRMA in (wanted, detected):
            hint = (" (SRMA-Mamba is the 3D volume model, RMA-Mamba-T and -S are 2D slice models: their weights "
                    "are not interchangeable)")
        elif UNET in (wanted, detected):
            hint = (" (the U-Net baseline and RMA-Mamba are different networks: their weights are not "
                    "interchangeable)")
        raise VariantMismatchError(
            f"{path} holds {model_label(detected)} weights but {model_label(wanted)} was selected{hint}; "
            f"choose {detected} (or other weights)"
        )
    with torch.device("meta"):
        skeleton = build_model(detected)
    _check_against_model(state_dict, skeleton, str(path))
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return Checkpoint(path=path, variant=detected, state_dict=state_dict, sha256=file_sha256(path), extras=extras)


def load_model(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    scan_backend: str = "auto",
) -> nn.Module:
    """Build the checkpoint's variant, load its weights strictly, move it to ``device``, return it in eval mode."""
    checkpoint = load_checkpoint(path, variant=variant)
    model = build_model(checkpoint.variant, scan_backend=scan_backend)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model.weights_sha256 = checkpoint.sha256
    model.weights_path = str(checkpoint.path)
    return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                    *, half: bool = False) -> Path:
    """Write a plain state dict (loadable with ``weights_only=True``) atomically; ``half`` stores float16."""
    path = Path(path)
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in state.items()}
    return save_atomically(state, path)


def load_vmamba_backbone(model: RMAMamba, path: str | os.PathLike) -> dict[str, int]:
    """Initialise ``model.encoder`` from a VMamba ImageNet checkpoint (``{"model": ...}`` or a raw dict).

    Legacy key names are renamed, the classifier is ignored; the encoder's ``outnorm`` layers keep their init.
    Returns counts ``{"loaded": n, "kept_initial": m, "ignored": k}``; raises CheckpointError when nothing fits.
    """
    source = str(path)
    state_dict, _ = unwrap_state_dict(read_weights_file(path), source=source)
    if any(k.startswith("encoder.") for k in state_dict):
        raise CheckpointError(f"{source} is a whole RMA-Mamba checkpoint; load it with load_model, not as a backbone")
    renamed = {_modern_vmamba_key(key): value for key, value in state_dict.items()}
    target = model.encoder.state_dict()
    usable = {k: v for k, v in renamed.items() if k in target}
    wrong = [k for k, v in usable.items() if v.shape != target[k].shape]
    if wrong:
        raise CheckpointError(f"{source} does not fit the RMA-Mamba-{model.variant.name} encoder: "
                              f"{len(wrong)} shape mismatches (e.g. {wrong[0]} {tuple(usable[wrong[0]].shape)} vs "
                              f"{tuple(target[wrong[0]].shape)}); is it the VMamba-{_backbone_name(model)} checkpoint?")
    if not usable:
        raise CheckpointError(f"{source} has no VMamba encoder weights (keys such as {', '.join(sorted(renamed)[:3])})")
    model.encoder.load_state_dict({k: v.float() for k, v in usable.items()}, strict=False)
    counts = {"loaded": len(usable), "kept_initial": len(target) - len(usable),
              "ignored": len(renamed) - len(usable)}
    logger.info("encoder initialised from %s: %d tensors loaded, %d kept their init, %d ignored",
                source, counts["loaded"], counts["kept_initial"], counts["ignored"])
    return counts


def _backbone_name(model: RMAMamba) -> str:
    return "Small" if model.variant.bridge else "Tiny"


def _modern_vmamba_key(key: str) -> str:
    """Rename the legacy VMamba key prefixes (``patch_embed.proj``, ``ln_1``, ``self_attention``)."""
    for old, new in _VMAMBA_RENAMES:
        if old.startswith("."):
            key = key.replace(old, new)
        elif key.startswith(old):
            key = new + key[len(old):]
    return key
