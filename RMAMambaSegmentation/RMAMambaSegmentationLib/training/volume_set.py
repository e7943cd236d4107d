"""Whole training volumes for SRMA-Mamba, kept in memory in the network's axes, and the authors' random crops.

Each case is read once, reoriented like inference (:mod:`..volume.window_inference`: i -> L, j -> P, k -> S, native
voxel grid) and cached as float32 image + uint8 liver mask. :meth:`VolumeSet.crops` follows the official training
transforms (spec section 8.2): crop to the image's non-zero bounding box, one random window per volume -- balanced
on the foreground here (with probability ``foreground_p`` the window is centred on a random liver voxel) --, random
flips along each axis (p 0.5), z-score over the patch's non-zero voxels, intensity scale ``1 + U(-0.1, 0.1)`` and
shift ``U(-0.1, 0.1)``. Volumes smaller than the window are zero-padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from RMAMambaSegmentationLib.errors import InvalidImageError
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.validation import validate_array, validate_image
from RMAMambaSegmentationLib.inference.windows import to_network_axes, zscore_nonzero
from RMAMambaSegmentationLib.training.layouts import CaseSource
from RMAMambaSegmentationLib.training.slices import _check_mask_grid, _read

logger = logging.getLogger(__name__)

#: The authors' random intensity scale and shift bounds.
INTENSITY_SCALE = 0.1
INTENSITY_SHIFT = 0.1


@dataclass
class VolumeCase:
    """One case in the network's axes: ``image`` float32 (raw values), ``mask`` uint8 0/1, both (I, J, K)."""

    key: str
    image: np.ndarray
    mask: np.ndarray


def load_volume_case(case: CaseSource, *, label: int | None = None) -> VolumeCase:
    """Read, check and reorient one image/mask pair (``label``: the liver's value; None: any non-zero)."""
    if case.kind != "volume":
        raise InvalidImageError(f"case {case.key}: SRMA-Mamba trains on 3D volumes, not PNG slices")
    image, mask = _read(case.image, "image"), _read(case.mask, "mask")
    validate_image(image)
    _check_mask_grid(image, mask, case)
    array = sitk.GetArrayFromImage(image)
    validate_array(array)
    reorientation = AxialReorientation.from_direction(image.GetDirection())
    labels = sitk.GetArrayViewFromImage(mask)
    liver = (labels == label) if label is not None else (labels != 0)
    return VolumeCase(case.key, np.ascontiguousarray(to_network_axes(array, reorientation), dtype=np.float32),
                      np.ascontiguousarray(to_network_axes(liver, reorientation), dtype=np.uint8))


def _nonzero_box(image: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the image's non-zero voxels (the whole volume when all are zero)."""
    nonzero = np.nonzero(image)
    if not nonzero[0].size:
        return tuple(slice(0, n) for n in image.shape)
    return tuple(slice(int(ax.min()), int(ax.max()) + 1) for ax in nonzero)


def _pad_to(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    missing = [max(0, int(w) - n) for n, w in zip(array.shape, size)]
    if not any(missing):
        return array
    return np.pad(array, [(m // 2, m - m // 2) for m in missing])


class VolumeSet:
    """Training or validation volumes; :meth:`crops` gives augmented training windows."""

    def __init__(self, cases: Sequence[VolumeCase]) -> None:
        if not cases:
            raise ValueError("a volume set needs at least one case")
        self.cases = list(cases)
        self.keys = [case.key for case in self.cases]

    def __len__(self) -> int:
        return len(self.cases)

    def crops(self, indices: Sequence[int], size: Sequence[int], generator: torch.Generator,
              device: torch.device | str = "cpu", *, foreground_p: float = 0.5,
              augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, 1, *size), y (B, 1, *size))`` float32: one random window of each indexed volume."""
        images, masks = [], []
        for index in indices:
            case = self.cases[int(index)]
            box = _nonzero_box(case.image)
            image, mask = _pad_to(case.image[box], size), _pad_to(case.mask[box], size)
            corner = self._corner(mask, size, generator, foreground_p)
            window = tuple(slice(c, c + int(w)) for c, w in zip(corner, size))
            patch, target = image[window], mask[window]
            if augment:
                flips = [a for a in range(3) if float(torch.rand((), generator=generator)) < 0.5]
                if flips:
                    patch, target = np.flip(patch, flips), np.flip(target, flips)
            patch, _, _ = zscore_nonzero(patch)
            if augment:
                scale, shift = (torch.rand(2, generator=generator) * 2 - 1).tolist()
                patch = patch * np.float32(1.0 + INTENSITY_SCALE * scale) + np.float32(INTENSITY_SHIFT * shift)
            images.append(torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)))
            masks.append(torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)))
        return torch.stack(images)[:, None].to(device), torch.stack(masks)[:, None].to(device)

    @staticmethod
    def _corner(mask: np.ndarray, size: Sequence[int], generator: torch.Generator,
                foreground_p: float) -> list[int]:
        limits = [n - int(w) for n, w in zip(mask.shape, size)]
        if float(torch.rand((), generator=generator)) < foreground_p:
            foreground = np.flatnonzero(mask)
            if foreground.size:
                pick = int(foreground[int(torch.randint(foreground.size, (), generator=generator))])
                centre = np.unravel_index(pick, mask.shape)
                return [min(max(int(c) - int(w) // 2, 0), limit)
                        for c, w, limit in zip(centre, size, limits)]
        return [int(torch.randint(limit + 1, (), generator=generator)) for limit in limits]


def build_volume_set(cases: Sequence[CaseSource], *, label: int | None = None, workers: int = 0) -> VolumeSet:
    """Load ``cases`` (in ``workers`` threads when > 0) into one :class:`VolumeSet`."""

    def load(case: CaseSource) -> VolumeCase:
        return load_volume_case(case, label=label)

    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            loaded = list(pool.map(load, cases))
    else:
        loaded = [load(case) for case in cases]
    volume_set = VolumeSet(loaded)
    logger.info("%d volumes cached in memory (%.0f MB)", len(loaded),
                sum(c.image.nbytes + c.mask.nbytes for c in loaded) / 2**20)
    return volume_set
