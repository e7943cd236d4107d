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


def _largest_component_in_box(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """``(box, component)``: the largest face-connected component of ``mask``, cropped to its own bounding box
    (uint8 0/1), or None for an empty mask. Ties keep the smallest label (first in array order).

    Only the labels image (4 bytes per voxel of the mask's box) is as large as the mask's box: stray false
    positives far from the liver widen that box, but everything after it works on the component's box.
    """
    box = bounding_box(mask != 0)
    if box is None:
        return None
    binary = sitk.GetImageFromArray(np.ascontiguousarray(mask[box] != 0, dtype=np.uint8))
    labels_image = sitk.ConnectedComponent(binary, False)
    del binary
    labels = sitk.GetArrayViewFromImage(labels_image)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    best = int(np.argmax(counts))
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(labels_image)
    x, y, z, size_x, size_y, size_z = statistics.GetBoundingBox(best)
    inner = (slice(z, z + size_z), slice(y, y + size_y), slice(x, x + size_x))
    component = np.equal(labels[inner], best).view(np.uint8)
    outer = tuple(slice(box[a].start + inner[a].start, box[a].start + inner[a].stop) for a in range(3))
    return outer, component


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected 3D component of a binary mask (uint8 0/1; empty stays empty).

    Ties between equally large components keep the one with the smallest label (first in array order).
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    found = _largest_component_in_box(mask)
    if found is not None:
        out[found[0]] = found[1]
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
    """Largest 3D component, then slice-wise hole filling, on an axial stack ``(n_slices, rows, cols)``.

    The hole filling runs on the component's bounding box only (holes cannot reach outside it), so besides the
    returned mask the memory used follows the liver's size, not the volume's.
    """
    out = np.zeros(stack.shape, dtype=np.uint8)
    found = _largest_component_in_box(stack)
    if found is not None:
        box, component = found
        out[box] = fill_holes_slicewise(component)
    return out
