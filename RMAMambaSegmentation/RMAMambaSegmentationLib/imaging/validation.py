"""Refuse inputs that cannot be segmented, each with a specific message (InvalidImageError)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.errors import InvalidImageError

_AXIS_NAMES = ("k (slices)", "j (rows)", "i (columns)")


def validate_image(image: sitk.Image) -> None:
    """Check a SimpleITK image's dimension and pixel type (the voxel values are checked by :func:`validate_array`)."""
    if isinstance(image, (str, PurePath)):
        raise InvalidImageError(
            f"expected an image, got the file name {str(image)!r}: read it first, e.g. image = "
            f"SimpleITK.ReadImage({str(image)!r}) (RMAMambaSegmentationLib.files.image_io.read_image also reads "
            "DICOM folders)"
        )
    if not isinstance(image, sitk.Image):
        raise InvalidImageError(f"expected a SimpleITK image, got {type(image).__name__}")
    dimension = image.GetDimension()
    if dimension == 2:
        raise InvalidImageError(
            f"the image is 2D ({image.GetSize()[0]}x{image.GetSize()[1]}): a 3D volume with several slices is needed"
        )
    if dimension != 3:
        raise InvalidImageError(f"the image is {dimension}D {tuple(image.GetSize())}: a 3D volume is needed")
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise InvalidImageError(
            f"the image has {components} components per voxel ({image.GetPixelIDTypeAsString()}): "
            "a scalar (grey-level) volume is needed, not a vector or RGB image"
        )
    if "complex" in image.GetPixelIDTypeAsString().lower():
        raise InvalidImageError("the image has complex voxels: a real-valued scalar volume is needed")


def validate_geometry(spacing: Sequence[float], direction: Sequence[float] | np.ndarray) -> None:
    """Spacing positive and finite; direction a finite invertible 3x3 matrix."""
    spacing_arr = np.asarray(spacing, dtype=float)
    if spacing_arr.shape != (3,) or not np.all(np.isfinite(spacing_arr)) or np.any(spacing_arr <= 0):
        raise InvalidImageError(f"invalid voxel spacing {tuple(spacing_arr.tolist())}: three positive values needed")
    matrix = np.asarray(direction, dtype=float)
    if matrix.size != 9 or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix.reshape(3, 3))) < 1e-6:
        raise InvalidImageError(f"invalid direction matrix {matrix.ravel().tolist()}")


def validate_array(array: np.ndarray, slice_axis: int | None = None) -> None:
    """Check the voxels of a ``(k, j, i)`` array: 3D, real numbers, finite, not constant, at least 2 slices.

    ``slice_axis`` is the array axis closest to the patient's S-I axis (for the "single slice" message).
    """
    if array.ndim != 3:
        raise InvalidImageError(f"the image array has shape {array.shape}: a 3D volume is needed")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise InvalidImageError(f"voxels of type {array.dtype} cannot be segmented: a real-valued volume is needed")
    for axis, length in enumerate(array.shape):
        if length < 2:
            if slice_axis is None or axis == slice_axis:
                raise InvalidImageError(
                    f"the image has a single slice (shape {array.shape}): a volume with several axial slices is needed"
                )
            raise InvalidImageError(
                f"the image is 1 voxel thick along array axis {_AXIS_NAMES[axis]} (shape {array.shape}): "
                "a volume is needed"
            )
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise InvalidImageError(f"the image has {bad} NaN or infinite voxels: replace them before segmenting")
    lo, hi = np.min(array), np.max(array)
    if lo == hi:
        raise InvalidImageError(f"the image is constant (every voxel is {lo}): there is nothing to segment")
