"""A minimal PNG writer (8-bit grey or RGB, no interlace) with the standard library only: zlib and struct."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (0 grey, 2 RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image ``(rows, cols)`` (grey) or ``(rows, cols, 3)`` (RGB); row 0 is the top."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _COLOUR_TYPE or min(array.shape[:2]) < 1:
        raise ValueError(f"PNG pixels must be (rows, cols) or (rows, cols, 3), got shape {array.shape}")
    rows, cols, channels = array.shape
    header = struct.pack(">IIBBBBB", cols, rows, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    # each scanline starts with its filter type (0 = none)
    raw = np.concatenate([np.zeros((rows, 1), np.uint8), array.reshape(rows, cols * channels)], axis=1)
    data = zlib.compress(raw.tobytes(), 6)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (see :func:`encode_png`) to ``path``."""
    path = Path(path)
    path.write_bytes(encode_png(pixels))
    return path
