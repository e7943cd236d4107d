"""The PNG writer (checked with an independent decoder and SimpleITK's reader), the overlay and the progress bar."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TOTALSEG
from RMAMambaSegmentationLib.cli.progress_bar import ConsoleProgress
from RMAMambaSegmentationLib.files.overlay import (
    OUTLINE_RGB,
    mid_liver_slice,
    overlay_rgb,
    write_overlay_png,
)
from RMAMambaSegmentationLib.files.png import encode_png, write_png
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.liver_segment import LIVER_COLOR_RGB255


def _decode_png(data: bytes) -> np.ndarray:
    """Tiny decoder for filter-0, non-interlaced 8-bit PNGs, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and interlace == 0 and b"IEND" in chunks
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, channels).squeeze()


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3), (1, 1)])
def test_png_round_trip(tmp_path, shape):
    pixels = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png(pixels)), pixels)
    path = write_png(tmp_path / "x.png", pixels)
    read = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # independent reader: libpng inside ITK
    np.testing.assert_array_equal(read.reshape(pixels.shape), pixels)


def test_png_refuses_other_types():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((2, 2, 4), np.uint8))


def test_mid_liver_slice_is_a_liver_slice():
    stack = np.zeros((10, 3, 3), np.uint8)
    stack[[2, 3, 4, 8], 1, 1] = 1
    assert mid_liver_slice(stack) == 4
    assert mid_liver_slice(np.zeros((10, 3, 3))) == 5


def test_overlay_tints_and_outlines_the_mask_with_square_pixels():
    slice01 = np.full((10, 20), 0.5, np.float32)
    mask = np.zeros((10, 20), np.uint8)
    mask[3:7, 5:15] = 1
    rgb = overlay_rgb(slice01, mask, spacing_rc=(2.0, 1.0))
    # rows are 2 mm, columns 1 mm: square pixels make the picture 20 x 20 before enlarging to >= 256
    assert rgb.shape[0] == rgb.shape[1] >= 256 and rgb.dtype == np.uint8
    scale = rgb.shape[1] // 20
    np.testing.assert_array_equal(rgb[0, 0], [128, 128, 128])
    centre = rgb[10 * scale, 10 * scale]
    expected = np.round(0.65 * 127.5 + 0.35 * np.array(LIVER_COLOR_RGB255))
    np.testing.assert_array_equal(centre, expected)
    np.testing.assert_array_equal(rgb[6 * scale, 10 * scale], OUTLINE_RGB)


def test_overlay_of_the_reference_mr_liver(tmp_path):
    """On the real MR, the overlay's tinted pixels are the reference liver of the chosen slice, on the image left."""
    image = sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz"))
    liver = (sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_seg_mr.nii.gz"))) == 5).astype(np.uint8)
    path = write_overlay_png(tmp_path / "o.png", sitk.GetArrayViewFromImage(image), liver,
                             spacing=image.GetSpacing(), direction=image.GetDirection(), bounds=(0.0, 800.0))
    rgb = _decode_png(path.read_bytes())
    stack = AxialReorientation.from_image(image).to_axial(liver)
    index = mid_liver_slice(stack)
    scale = rgb.shape[0] // stack.shape[1]
    assert rgb.shape[:2] == (stack.shape[1] * scale, stack.shape[2] * scale)
    outline = np.all(rgb == OUTLINE_RGB, axis=2)
    tinted = outline | (rgb[:, :, 0].astype(int) - rgb[:, :, 2] > 20)
    np.testing.assert_array_equal(tinted[::scale, ::scale], stack[index] == 1)
    assert np.argwhere(tinted)[:, 1].mean() < rgb.shape[1] / 2


def test_progress_bar_lines_for_logs():
    stream = io.StringIO()
    bar = ConsoleProgress(stream, interactive=False)
    for done in range(31):
        bar(done / 30, f"case 1/1 ct: slices {done}/30")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 12
    assert lines[-1].startswith("[" + "#" * 28 + "] 100.0%") and lines[-1].endswith("slices 30/30")


def test_progress_bar_redraws_in_place_on_a_terminal():
    stream = io.StringIO()
    bar = ConsoleProgress(stream, interactive=True)
    bar(0.0, "start")
    bar(1.0, "done")
    bar.clear()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("done\n")
