"""Packed slice sets: the prepared training and validation slices of a run in one compressed ``.npz`` file.

``rmamamba train DATA --pack-slices FILE.npz`` writes one (the slices exactly as :mod:`.slices` prepares them:
intensity-normalised and resized to the input size); ``rmamamba train FILE.npz`` trains from it. Reading it needs
neither SimpleITK nor the volumes, so a machine with only PyTorch and NumPy (a lent GPU) can train.

Arrays, per split ``train`` and ``valid``: ``<split>_images`` float16 (n, H, W) in [0, 1], ``<split>_masks`` uint8
(n, H, W) soft mask x 255 (bool 0/1 accepted on reading), ``<split>_keys`` the case keys and ``<split>_counts`` the
slices of each case, in order. ``meta``: a JSON string with the format tag :data:`FORMAT`, the input size, the
intensity preset, the label and the data description that the model cards record. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.layouts import DataSplits
from RMAMambaSegmentationLib.training.slices import PreparedCase, SliceSet, build_slice_set

logger = logging.getLogger(__name__)

#: Format tag stored in (and required of) every packed file.
FORMAT = "rmamamba-packed-slices/1"
#: File name ending that marks a training data argument as a packed file.
SUFFIX = ".npz"


def is_packed_path(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names a packed slice file (by its ``.npz`` ending)."""
    return path is not None and str(path).lower().endswith(SUFFIX)


@dataclass
class PackedSlices:
    """The content of a packed file: prepared cases per split and how they were made."""

    path: Path
    train: list[PreparedCase]
    valid: list[PreparedCase]
    input_size: tuple[int, int]
    intensity: IntensityPreset
    label: int | None
    description: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The data description of the folder it was packed from, plus the packed file's name."""
        return {**self.description, "packed_slices": self.path.name}

    def config_for(self, config: TrainConfig) -> TrainConfig:
        """``config`` checked against the packed slices (InputFileError on a mismatch); an unset label becomes the
        packed one, so the model cards record what the masks hold."""
        where = f"packed slices {self.path}"
        if config.is_volumetric:
            raise InputFileError(f"{where}: {config.variant} trains on whole volumes, not on packed 2D slices")
        if tuple(config.input_size) != self.input_size:
            raise InputFileError(f"{where} are {self.input_size[0]}x{self.input_size[1]}, the run asks for input "
                                 f"size {config.input_size[0]}x{config.input_size[1]}: pack again at that size or "
                                 "train at the packed size")
        if config.intensity != self.intensity:
            raise InputFileError(f"{where} were normalised with the {self.intensity.label} preset "
                                 f"({self.intensity.to_dict()}), the command asks for {config.intensity.label} "
                                 f"({config.intensity.to_dict()}): give the packed preset or pack again")
        if config.label is not None and config.label != self.label:
            raise InputFileError(f"{where} hold the masks of label {self.label}, the run asks for label "
                                 f"{config.label}")
        return dataclasses.replace(config, label=self.label) if config.label is None else config

    def slice_sets(self) -> tuple[SliceSet, SliceSet]:
        """``(training set, validation set)``, the same tensors as :func:`.slices.build_slice_set` gave."""
        return SliceSet(self.train), SliceSet(self.valid)


def _split_arrays(name: str, slice_set: SliceSet) -> dict[str, np.ndarray]:
    counts = torch.bincount(slice_set.case_index.long(), minlength=len(slice_set.keys))
    return {
        f"{name}_images": slice_set.images.to(torch.float16).numpy(),
        f"{name}_masks": slice_set.masks.to(torch.uint8).numpy(),
        f"{name}_keys": np.array(slice_set.keys, dtype=str),
        f"{name}_counts": counts.numpy().astype(np.int64),
    }


def write_packed_slices(
    path: str | os.PathLike,
    train: SliceSet,
    valid: SliceSet,
    *,
    intensity: IntensityPreset,
    label: int | None,
    description: dict[str, Any],
) -> Path:
    """Write the two slice sets and their metadata to ``path`` (compressed, replaced atomically)."""
    path = Path(path)
    if not is_packed_path(path):
        raise InputFileError(f"a packed slice file must end in {SUFFIX}: {path}")
    if train.size != valid.size:
        raise ValueError(f"training slices are {train.size}, validation slices {valid.size}")
    meta = {"format": FORMAT, "input_size": list(train.size), "intensity": intensity.to_dict(), "label": label,
            "data": description}
    arrays = {"meta": np.array(json.dumps(meta)), **_split_arrays("train", train), **_split_arrays("valid", valid)}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's files are private; this one is an ordinary output
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    logger.info("packed %d training and %d validation slices at %dx%d into %s (%.1f MiB)", len(train), len(valid),
                *train.size, path, path.stat().st_size / 2**20)
    return path


def pack_training_slices(config: TrainConfig, data: DataSplits, path: str | os.PathLike) -> Path:
    """Prepare the training and validation slices of ``data`` as training would, and write them to ``path``."""
    if config.is_volumetric:
        raise InputFileError(f"{config.variant} trains on whole volumes: there are no slices to pack")
    options = {"preset": config.intensity, "size": config.input_size, "label": config.label,
               "workers": config.workers}
    train, valid = build_slice_set(data.train, **options), build_slice_set(data.valid, **options)
    return write_packed_slices(path, train, valid, intensity=config.intensity, label=config.label,
                               description=data.describe())


def _cases(arrays: dict[str, np.ndarray], split: str, size: tuple[int, int], where: str) -> list[PreparedCase]:
    """The prepared cases of one split, after checking the arrays' types and shapes."""
    names = [f"{split}_{part}" for part in ("images", "masks", "keys", "counts")]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise InputFileError(f"{where} lacks the arrays {', '.join(missing)}")
    images, masks, keys, counts = (arrays[name] for name in names)
    if images.dtype != np.float16 or images.ndim != 3 or tuple(images.shape[1:]) != size:
        raise InputFileError(f"{where}: {split}_images must be float16 (n, {size[0]}, {size[1]}), found "
                             f"{images.dtype} {images.shape}")
    if masks.dtype not in (np.uint8, np.bool_) or masks.shape != images.shape:
        raise InputFileError(f"{where}: {split}_masks must be uint8 or bool of the images' shape {images.shape}, "
                             f"found {masks.dtype} {masks.shape}")
    if keys.ndim != 1 or keys.dtype.kind != "U" or counts.ndim != 1 or counts.dtype.kind not in "iu":
        raise InputFileError(f"{where}: {split}_keys must be a list of case names and {split}_counts of integers")
    if len(keys) == 0 or len(keys) != len(counts) or (counts < 1).any() or int(counts.sum()) != len(images):
        raise InputFileError(f"{where}: the {split} split's {len(keys)} case names and slice counts "
                             f"{counts.tolist()} do not describe its {len(images)} slices")
    if not np.isfinite(images).all():
        raise InputFileError(f"{where}: {split}_images holds values that are not finite")
    if masks.dtype == np.bool_:
        masks = masks.astype(np.uint8) * np.uint8(255)
    image_parts = torch.split(torch.from_numpy(images), counts.tolist())
    mask_parts = torch.split(torch.from_numpy(masks), counts.tolist())
    return [PreparedCase(str(key), image, mask) for key, image, mask in zip(keys, image_parts, mask_parts)]


def _metadata(arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise InputFileError(f"{where} is not a packed slice file ({FORMAT}): it has no metadata string")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as error:
        raise InputFileError(f"{where}: its metadata is not valid JSON ({error})") from error
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT:
        raise InputFileError(f"{where} is not a packed slice file of this version: format {found!r}, expected "
                             f"{FORMAT!r}")
    return meta


def read_packed_slices(path: str | os.PathLike) -> PackedSlices:
    """Read and check a packed file; InputFileError names what is wrong with a damaged or foreign file."""
    path = Path(path)
    where = f"packed slice file {path}"
    if not path.is_file():
        raise InputFileError(f"{where} does not exist")
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {name: content[name] for name in content.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputFileError(f"cannot read {where} (damaged, truncated or not a .npz file): {error}") from error
    meta = _metadata(arrays, where)
    try:
        size = tuple(int(n) for n in meta["input_size"])
        intensity = IntensityPreset.from_dict(meta["intensity"])
        label = None if meta["label"] is None else int(meta["label"])
        description = dict(meta.get("data") or {})
    except (KeyError, TypeError, ValueError) as error:
        raise InputFileError(f"{where}: incomplete metadata ({error})") from error
    if len(size) != 2:
        raise InputFileError(f"{where}: input size {size} is not H x W")
    input_size = (size[0], size[1])
    train = _cases(arrays, "train", input_size, where)
    valid = _cases(arrays, "valid", input_size, where)
    packed = PackedSlices(path, train, valid, input_size, intensity, label, description)
    logger.info("packed slices %s: %d training cases (%d slices), %d validation cases (%d slices) at %dx%d", path,
                len(train), sum(c.n_slices for c in train), len(valid), sum(c.n_slices for c in valid), *size)
    return packed


__all__ = ["FORMAT", "PackedSlices", "is_packed_path", "pack_training_slices", "read_packed_slices",
           "write_packed_slices"]
