"""A quick-look PNG: the mid-liver axial slice, as Slicer shows it, with the liver tinted and outlined.

The slice is the middle one among the axial slices that hold liver (the middle slice of the volume when the mask is
empty), in the radiological display orientation of :mod:`orientation` (patient right on the image's left, anterior
at the top). Grey values use the same intensity bounds as the network's input; pixels are made square from the
voxel spacing and small slices are enlarged (nearest neighbour) so the picture is readable. A result whose quality
verdict is ``check`` gets a red frame and a "CHECK QUALITY" band above the slice, so the picture alone does not look
trustworthy; both are drawn outside the slice, which stays whole (the liver dome lies at its top).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from RMAMambaSegmentationLib.files.png import write_png
from RMAMambaSegmentationLib.imaging.intensity import apply_bounds
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.liver_segment import LIVER_COLOR_RGB255

OUTLINE_RGB = (255, 230, 0)
FILL_OPACITY = 0.35
#: Enlarge slices until their shorter side reaches this many pixels (never shrink).
MIN_SIDE = 256
CHECK_RGB = (200, 30, 30)
CHECK_TEXT = "CHECK QUALITY"
FRAME = 4
#: 5x7 glyphs of the banner's letters ("#" = ink).
_GLYPHS = {
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    " ": (".....",) * 7,
}


def mid_liver_slice(mask_stack: np.ndarray) -> int:
    """Index of the middle axial slice among those holding liver (the stack's middle slice when none does)."""
    with_liver = np.flatnonzero(mask_stack.reshape(mask_stack.shape[0], -1).any(axis=1))
    if with_liver.size == 0:
        return mask_stack.shape[0] // 2
    return int(with_liver[with_liver.size // 2])


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with at least one 4-neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _square_pixel_indices(length: int, spacing: float, pixel: float, scale: int) -> np.ndarray:
    """Source indices for nearest-neighbour resampling of one axis to pixels of ``pixel / scale`` mm."""
    n_out = max(1, round(length * spacing / pixel * scale))
    centres = (np.arange(n_out) + 0.5) * (pixel / scale)
    return np.clip((centres / spacing).astype(int), 0, length - 1)


def overlay_rgb(slice01: np.ndarray, mask: np.ndarray, spacing_rc: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """RGB uint8 picture of a slice in [0, 1] with its mask tinted and outlined; square pixels."""
    row_mm, col_mm = (float(s) for s in spacing_rc)
    pixel = min(row_mm, col_mm)
    rows, cols = slice01.shape
    shorter = min(rows * row_mm, cols * col_mm) / pixel
    scale = max(1, int(np.ceil(MIN_SIDE / shorter)))
    row_index = _square_pixel_indices(rows, row_mm, pixel, scale)
    col_index = _square_pixel_indices(cols, col_mm, pixel, scale)
    grey = np.clip(slice01, 0.0, 1.0)[np.ix_(row_index, col_index)]
    liver = (mask != 0)[np.ix_(row_index, col_index)]
    rgb = np.repeat(grey[:, :, None] * 255.0, 3, axis=2)
    rgb[liver] = (1.0 - FILL_OPACITY) * rgb[liver] + FILL_OPACITY * np.asarray(LIVER_COLOR_RGB255, dtype=float)
    rgb[_outline(liver)] = OUTLINE_RGB
    return np.round(rgb).astype(np.uint8)


def _text_bitmap(text: str) -> np.ndarray:
    """Boolean 7-row bitmap of ``text`` (one blank column between letters)."""
    columns = []
    for letter in text:
        columns.append(np.array([[c == "#" for c in row] for row in _GLYPHS[letter]]))
        columns.append(np.zeros((7, 1), bool))
    return np.concatenate(columns[:-1], axis=1)


def mark_for_check(rgb: np.ndarray) -> np.ndarray:
    """The picture inside a red frame under a red "CHECK QUALITY" band: a larger copy whose image pixels are
    ``rgb`` unchanged (rows ``band:band + H``, columns ``FRAME:FRAME + W``, see :func:`check_band_height`), so the
    banner never hides the liver dome at the top of the slice."""
    rows, cols = rgb.shape[:2]
    text = _text_bitmap(CHECK_TEXT)
    scale = max(1, min(3, cols // text.shape[1]))
    ink = np.kron(text, np.ones((scale, scale), bool))
    band = check_band_height(cols)
    out = np.empty((band + rows + FRAME, cols + 2 * FRAME, 3), dtype=np.uint8)
    out[:] = CHECK_RGB
    out[band:band + rows, FRAME:FRAME + cols] = rgb
    left = max(0, (out.shape[1] - ink.shape[1]) // 2)
    ink = ink[:, : out.shape[1] - left]
    top = (band - ink.shape[0]) // 2
    region = out[top : top + ink.shape[0], left : left + ink.shape[1]]
    region[ink] = (255, 255, 255)
    return out


def check_band_height(cols: int) -> int:
    """Height of the red band that :func:`mark_for_check` puts above a picture ``cols`` pixels wide."""
    scale = max(1, min(3, cols // _text_bitmap(CHECK_TEXT).shape[1]))
    return 7 * scale + 2 * FRAME


def write_overlay_png(
    path: str | os.PathLike,
    array_kji: np.ndarray,
    mask_kji: np.ndarray,
    *,
    spacing: Sequence[float],
    direction: Sequence[float] | np.ndarray,
    bounds: tuple[float, float],
    check: bool = False,
) -> Path:
    """Write the mid-liver overlay of an image array and its mask (SimpleITK order, spacing in (i, j, k));
    ``check``: the result's quality verdict asks for a check (red frame and band, outside the slice)."""
    reorientation = AxialReorientation.from_direction(direction, warn_oblique=False)
    mask_stack = reorientation.to_axial(mask_kji)
    index = mid_liver_slice(mask_stack)
    image_slice = apply_bounds(reorientation.to_axial(array_kji)[index], *bounds)
    _, row_mm, col_mm = reorientation.axial_spacing(spacing)
    rgb = overlay_rgb(image_slice, np.asarray(mask_stack[index]), (row_mm, col_mm))
    return write_png(path, mark_for_check(rgb) if check else rgb)
