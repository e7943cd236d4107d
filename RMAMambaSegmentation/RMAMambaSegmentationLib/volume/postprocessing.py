"""Mask clean-up: keep the largest 3D connected component, then fill holes slice by slice.

Both steps work inside the mask's bounding box, so a 512x512x600 CT costs memory in proportion to the liver,
not to the volume.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every non-zero voxel, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected 3D component of a binary mask (uint8 0/1; empty stays empty).

    Ties between equally large components keep the one with the smallest label (first in array order).
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    box = bounding_box(mask != 0)
    if box is None:
        return out
    binary = np.ascontiguousarray(mask[box] != 0, dtype=np.uint8)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(binary), False))
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    out[box] = labels == int(np.argmax(counts))
    return out


def fill_holes_slicewise(stack: np.ndarray) -> np.ndarray:
    """Fill the holes of each 2D slice ``stack[n]`` (background regions not connected to the slice border)."""
    out = np.ascontiguousarray(stack != 0, dtype=np.uint8)
    for index in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        box = bounding_box(out[index])
        assert box is not None
        # one background pixel of margin keeps the box border connected to the outside, as in the full slice
        rows = slice(max(box[0].start - 1, 0), box[0].stop + 1)
        cols = slice(max(box[1].start - 1, 0), box[1].stop + 1)
        filled = sitk.BinaryFillhole(sitk.GetImageFromArray(np.ascontiguousarray(out[index, rows, cols])), False, 1)
        out[index, rows, cols] = sitk.GetArrayFromImage(filled)
    return out


def postprocess_mask(stack: np.ndarray) -> np.ndarray:
    """Largest 3D component, then slice-wise hole filling, on an axial stack ``(n_slices, rows, cols)``."""
    return fill_holes_slicewise(largest_component(stack))
