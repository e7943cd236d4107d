"""Developer tool: draw the extension/module icon and the screenshots in ``Resources/`` (numpy + zlib only).

Run from the repository root: ``python Resources/make_images.py``. The "screenshots" are rendered PNG overlays
(the library's quick-look overlay of a mid-liver axial slice), not screenshots of Slicer. The two drawn here show
*reference* liver masks (CHAOS expert annotation for the MR, TotalSegmentator's label for the CT), not RMA-Mamba
predictions; ``example_segmentation.png`` is the overlay ``rmamamba segment`` writes for the bundled example with
the default weights. The data is read from ``../shared`` beside the repository (or ``$RMAMAMBA_SHARED``); the
product itself never reads it.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RMAMAMBA_SHARED") or ROOT.parent / "shared")
BACKGROUND_RGB = (31, 45, 61)
SNAKE_RGB = (111, 211, 199)


def encode_rgba_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 4) uint8 RGBA array."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def icon(size: int = 128, oversample: int = 4) -> np.ndarray:
    """RGBA icon: a liver silhouette on a rounded dark tile, crossed by a snake-like scan line (Mamba)."""
    from RMAMambaSegmentationLib.liver_segment import LIVER_COLOR_RGB255  # the segment's colour (main() sets the path)

    n = size * oversample
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    corner = 0.16
    inner_x = np.clip(x, corner, 1 - corner)
    inner_y = np.clip(y, corner, 1 - corner)
    tile = np.hypot(x - inner_x, y - inner_y) <= corner
    liver = (_ellipse(x, y, 0.42, 0.50, 0.30, 0.22) | _ellipse(x, y, 0.64, 0.40, 0.24, 0.13)) & ~_ellipse(
        x, y, 0.56, 0.78, 0.16, 0.12
    )
    wave = 0.74 + 0.06 * np.sin((x - 0.14) * 3.2 * np.pi)
    snake = (np.abs(y - wave) <= 0.028) & (x >= 0.14) & (x <= 0.86)
    rgba = np.zeros((n, n, 4), dtype=float)
    rgba[tile] = (*BACKGROUND_RGB, 255)
    rgba[tile & liver] = (*LIVER_COLOR_RGB255, 255)
    rgba[tile & snake] = (*SNAKE_RGB, 255)
    small = rgba.reshape(size, oversample, size, oversample, 4).mean(axis=(1, 3))
    alpha = small[..., 3:4]
    colour = np.where(alpha > 0, small[..., :3] * 255.0 / np.maximum(alpha, 1e-9), 0.0)
    return np.round(np.concatenate([colour, alpha], axis=2)).astype(np.uint8)


def screenshots(folder: Path) -> list[Path]:
    import SimpleITK as sitk

    from RMAMambaSegmentationLib.files.overlay import write_overlay_png
    from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset

    cases = [
        ("liver_overlay_mr.png", SHARED / "data/chaos_mr_t2spir/images/chaos_mr_t2spir_01_image.nii.gz",
         SHARED / "data/chaos_mr_t2spir/liver_masks/chaos_mr_t2spir_01_liver.nii.gz", IntensityPreset.mri(), None),
        ("liver_overlay_ct.png", SHARED / "fixtures/totalsegmentator_examples/example_ct_sm.nii.gz",
         SHARED / "fixtures/totalsegmentator_examples/example_seg.nii.gz", IntensityPreset.ct(), 5),
    ]
    written = []
    for name, image_path, mask_path, preset, label in cases:
        image = sitk.ReadImage(str(image_path))
        array = sitk.GetArrayFromImage(image)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
        mask = (labels == label) if label is not None else (labels != 0)
        write_overlay_png(folder / name, array, mask.astype(np.uint8), spacing=image.GetSpacing(),
                          direction=image.GetDirection(), bounds=preset.bounds(array))
        written.append(folder / name)
    return written


def main() -> int:
    sys.path.insert(0, str(ROOT / "RMAMambaSegmentation"))
    data = encode_rgba_png(icon())
    for path in (ROOT / "Resources/Icons/RMAMambaSegmentation.png",
                 ROOT / "RMAMambaSegmentation/Resources/Icons/RMAMambaSegmentation.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (ROOT / "Resources/Screenshots").mkdir(parents=True, exist_ok=True)
    screenshots(ROOT / "Resources/Screenshots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
