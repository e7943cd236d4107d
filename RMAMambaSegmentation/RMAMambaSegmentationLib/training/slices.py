"""Training slices, preprocessed once per case and kept in memory.

Volumes go through exactly the inference preprocessing (:mod:`RMAMambaSegmentationLib.volume`): axial slices in
radiological orientation, the intensity preset's bounds computed over the whole volume, bilinear resize to the
network size. PNG slices (the official 2D release) are divided by the pixel type's maximum (255), as the official
scripts do. Masks are resized bilinearly without thresholding, giving the soft edge targets of the official
training. Images are cached as float16 (error below 2.5e-4, a sixteenth of an 8-bit grey step), masks as uint8
(soft value x 255), so a 40,000-slice dataset at 256x256 needs about 8 GB.

SimpleITK is imported only by the functions that read files, so slice sets built from a packed file
(:mod:`.packed_slices`) train on machines without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from RMAMambaSegmentationLib.errors import InputFileError, InvalidImageError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset, apply_bounds
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.preprocessing import resize_slices
from RMAMambaSegmentationLib.training.layouts import CaseSource, png_slice_pairs

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

#: Slices resized at once (bounds the temporary float32 memory of a large volume).
_CHUNK = 64


@dataclass
class PreparedCase:
    """One case at network size: ``images`` float16 (n, H, W) in [0, 1], ``masks`` uint8 (n, H, W) soft x 255."""

    key: str
    images: torch.Tensor
    masks: torch.Tensor

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[0])


def _resize(stack: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """``(n, rows, cols)`` float32 -> ``(n, H, W)`` float32, bilinear as at inference, chunk by chunk."""
    parts = [resize_slices(stack[start:start + _CHUNK], size) for start in range(0, len(stack), _CHUNK)]
    return torch.cat(parts) if parts else torch.empty((0, *size), dtype=torch.float32)


def _to_cache(images01: torch.Tensor, masks01: torch.Tensor, key: str) -> PreparedCase:
    masks = torch.round(masks01.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return PreparedCase(key, images01.to(torch.float16), masks)


def _read(path, what: str) -> sitk.Image:
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputFileError(f"cannot read {what} {path}: {str(error).strip().splitlines()[0]}") from error


def _check_mask_grid(image: sitk.Image, mask: sitk.Image, case: CaseSource) -> None:
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(f"case {case.key}: the mask {case.mask.name} must be a 3D scalar label map")
    if image.GetSize() != mask.GetSize():
        raise InvalidImageError(f"case {case.key}: image size {image.GetSize()} differs from mask size "
                                f"{mask.GetSize()} ({case.image.name} vs {case.mask.name})")
    if not np.allclose(image.GetSpacing(), mask.GetSpacing(), rtol=1e-3, atol=1e-4):
        raise InvalidImageError(f"case {case.key}: image spacing {image.GetSpacing()} differs from mask spacing "
                                f"{mask.GetSpacing()}")
    if not np.allclose(image.GetDirection(), mask.GetDirection(), atol=1e-3):
        raise InvalidImageError(f"case {case.key}: image and mask have different direction matrices; "
                                "resample the mask onto the image grid first")


def prepare_volume_case(
    case: CaseSource, *, preset: IntensityPreset, size: Sequence[int], label: int | None = None
) -> PreparedCase:
    """Read a volume and its label map (``== label``, or nonzero) and preprocess every axial slice."""
    import SimpleITK as sitk

    from RMAMambaSegmentationLib.imaging.validation import validate_array, validate_image

    image = _read(case.image, "image")
    validate_image(image)
    mask_image = _read(case.mask, "mask")
    _check_mask_grid(image, mask_image, case)
    array = sitk.GetArrayViewFromImage(image)
    orientation = AxialReorientation.from_image(image)
    validate_array(array, slice_axis=orientation.axes[0])
    labels = sitk.GetArrayViewFromImage(mask_image)
    mask = labels == label if label is not None else labels != 0
    if not mask.any():
        what = f"label {label}" if label is not None else "a nonzero voxel"
        logger.warning("case %s: the mask %s has no %s", case.key, case.mask.name, what)
    lo, hi = preset.bounds(array)
    images = _resize(apply_bounds(orientation.to_axial(array), lo, hi), size)
    masks = _resize(orientation.to_axial(mask).astype(np.float32), size)
    return _to_cache(images, masks, case.key)


def _read_png(path, what: str) -> np.ndarray:
    import SimpleITK as sitk

    image = _read(path, what)
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = array[..., 0]  # grey replicated in R, G, B (alpha, if any, ignored)
    if array.ndim != 2:
        raise InvalidImageError(f"{path} is not a 2D image (shape {array.shape})")
    return array


def png_liver(mask: np.ndarray) -> np.ndarray:
    """Liver pixels of a PNG mask: above half the type's maximum (> 127 for 8-bit), or nonzero for 0/1 masks."""
    if mask.max() <= 1:
        return mask > 0
    top = float(np.iinfo(mask.dtype).max) if np.issubdtype(mask.dtype, np.integer) else 1.0
    return mask > top / 2


def prepare_png_case(case: CaseSource, *, size: Sequence[int]) -> PreparedCase:
    """Read a 2D case's PNG slices: image / type maximum (255 for 8-bit), mask: see :func:`png_liver`."""
    images, masks = [], []
    for image_path, mask_path in png_slice_pairs(case):
        image, mask = _read_png(image_path, "image"), _read_png(mask_path, "mask")
        if image.shape != mask.shape:
            raise InvalidImageError(f"case {case.key}: {image_path.name} is {image.shape} but its mask is "
                                    f"{mask.shape}")
        scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
        images.append(_resize((image.astype(np.float32) / scale)[None], size))
        masks.append(_resize(png_liver(mask).astype(np.float32)[None], size))
    return _to_cache(torch.cat(images), torch.cat(masks), case.key)


def prepare_case(
    case: CaseSource, *, preset: IntensityPreset, size: Sequence[int], label: int | None = None
) -> PreparedCase:
    """:func:`prepare_volume_case` or :func:`prepare_png_case` by the case's kind."""
    if case.kind == "png":
        return prepare_png_case(case, size=size)
    return prepare_volume_case(case, preset=preset, size=size, label=label)


class SliceSet:
    """All slices of some cases at network size, in memory; :meth:`batch` gives network inputs and targets."""

    def __init__(self, cases: Sequence[PreparedCase]) -> None:
        if not cases:
            raise ValueError("a slice set needs at least one case")
        self.keys = [case.key for case in cases]
        self.images = torch.cat([case.images for case in cases])
        self.masks = torch.cat([case.masks for case in cases])
        self.case_index = torch.cat(
            [torch.full((case.n_slices,), i, dtype=torch.int32) for i, case in enumerate(cases)]
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def n_liver_slices(self) -> int:
        return int((self.masks.flatten(1).amax(1) > 127).sum())

    def neighbour(self, index: torch.Tensor, step: int) -> torch.Tensor:
        """The index of the slice ``step`` (-1 or +1) away in the same case; the slice itself at a case's end."""
        other = (index + step).clamp(0, len(self) - 1)
        return torch.where(self.case_index[other] == self.case_index[index], other, index)

    def batch(self, indices: torch.Tensor | Sequence[int], device: torch.device | str = "cpu", *,
              context_slices: int = 0):
        """``(x (B, 3, H, W) float32, y (B, 1, H, W) float32 soft target)`` for the slices at ``indices``.

        ``context_slices`` 0: the slice in all three channels (the paper); 1: channels (previous, slice, next).
        """
        index = torch.as_tensor(indices, dtype=torch.long)
        masks = self.masks[index].to(device=device, dtype=torch.float32) / 255.0
        if context_slices:
            channels = torch.stack([self.neighbour(index, -1), index, self.neighbour(index, +1)], dim=1)
            return self.images[channels].to(device=device, dtype=torch.float32), masks[:, None]
        images = self.images[index].to(device=device, dtype=torch.float32)
        return images[:, None].expand(-1, 3, -1, -1).contiguous(), masks[:, None]


def build_slice_set(
    cases: Sequence[CaseSource],
    *,
    preset: IntensityPreset,
    size: Sequence[int],
    label: int | None = None,
    workers: int = 0,
) -> SliceSet:
    """Preprocess ``cases`` (in ``workers`` threads when > 0) into one :class:`SliceSet`."""

    def prepare(case: CaseSource) -> PreparedCase:
        return prepare_case(case, preset=preset, size=size, label=label)

    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            prepared = list(pool.map(prepare, cases))
    else:
        prepared = [prepare(case) for case in cases]
    slice_set = SliceSet(prepared)
    logger.info("%d cases, %d slices (%d with liver) at %dx%d cached in memory (%.0f MB)", len(prepared),
                len(slice_set), slice_set.n_liver_slices, *slice_set.size,
                (slice_set.images.nbytes + slice_set.masks.nbytes) / 2**20)
    return slice_set
