"""Check that an image file holds all the voxels its header announces, before SimpleITK reads it.

SimpleITK reads a NIfTI file whose gzip stream was cut (or whose checksum fails) without a word: the missing
slices become zeros and the segmentation looks plausible. It also turns NaN voxels of a NIfTI file into 0. This
module reads the header itself, streams the voxel data once (decompressing it when needed) and raises

* :class:`InputFileError` when the compressed stream ends early or fails its checksum, or when the file holds fewer
  bytes of voxel data than its header says (NIfTI, NRRD, MHA/MHD with local or detached data);
* :class:`InvalidImageError` when floating-point voxels are NaN or infinite -- the same refusal as
  :func:`validation.validate_array` gives for every other format (one policy: such volumes are refused).

Memory stays bounded: the data are streamed in blocks, never held whole.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from RMAMambaSegmentationLib.errors import InputFileError, InvalidImageError

logger = logging.getLogger(__name__)

_BLOCK = 1 << 22
_CUT_HINT = "the file was cut (incomplete copy or download?)"

# NIfTI datatype code -> numpy dtype (native order; the header's byte order is applied when reading)
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
# NRRD / MetaImage type names -> numpy dtype
_NRRD_TYPES = {
    "signed char": "i1", "int8": "i1", "int8_t": "i1", "uchar": "u1", "unsigned char": "u1", "uint8": "u1",
    "uint8_t": "u1", "short": "i2", "short int": "i2", "signed short": "i2", "signed short int": "i2", "int16": "i2",
    "int16_t": "i2", "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2", "uint16": "u2",
    "uint16_t": "u2", "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4", "uint": "u4",
    "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4", "longlong": "i8", "long long": "i8",
    "long long int": "i8", "signed long long": "i8", "signed long long int": "i8", "int64": "i8", "int64_t": "i8",
    "ulonglong": "u8", "unsigned long long": "u8", "unsigned long long int": "u8", "uint64": "u8", "uint64_t": "u8",
    "float": "f4", "double": "f8",
}  # fmt: skip
_MET_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4", "MET_UINT": "u4",
    "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}  # fmt: skip


@dataclass(frozen=True)
class VoxelData:
    """Where a file's voxel data are and what they should be: ``count`` values of ``dtype``."""

    path: Path
    offset: int
    compression: str  # "", "gzip", "zlib" or "bzip2"
    dtype: np.dtype
    count: int


def check_image_file(path: str | Path) -> None:
    """Raise InputFileError / InvalidImageError when ``path`` is damaged (see the module's docstring).

    Formats this module does not parse (and DICOM) pass unchecked: their readers report damage themselves.
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            data = _nifti_voxels(path)
        elif name.endswith((".nrrd", ".nhdr")):
            data = _nrrd_voxels(path)
        elif name.endswith((".mha", ".mhd")):
            data = _metaimage_voxels(path)
        else:
            return
    except (OSError, EOFError, zlib.error) as error:
        raise InputFileError(f"{path}: {_stream_problem(error)}") from error
    if data is not None:
        _check_voxels(data, source=path)


def _stream_problem(error: BaseException) -> str:
    """A user's sentence for a decompression failure."""
    text = str(error)
    if isinstance(error, EOFError) or "ended before" in text or "incomplete" in text or "truncated" in text:
        return f"the compressed data end early: {_CUT_HINT}"
    if "CRC" in text or "checksum" in text or "incorrect length" in text or isinstance(error, zlib.error):
        return f"the compressed data are corrupt (checksum or stream error: {text.strip() or type(error).__name__})"
    if "Not a gzipped file" in text:
        return "the file ends in .gz but is not gzip-compressed"
    return f"cannot read the file: {text.strip() or type(error).__name__}"


def _open_raw(path: Path):
    """The file's bytes, decompressed when it is gzip (by its magic, whatever its name)."""
    handle = path.open("rb")
    magic = handle.read(2)
    handle.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _read_exact(stream, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- NIfTI -----------------------------------------------------------------------------------------------------

def _nifti_voxels(path: Path) -> VoxelData | None:
    with _open_raw(path) as stream:
        header = _read_exact(stream, 540)
    order = next((o for o in ("<", ">") if len(header) >= 4 and struct.unpack(o + "i", header[:4])[0] in (348, 540)),
                 None)
    if order is None:
        return None  # not NIfTI-1/2: SimpleITK reports it
    size = struct.unpack(order + "i", header[:4])[0]
    if len(header) < 348:
        raise InputFileError(f"{path}: only {len(header)} bytes, shorter than a NIfTI header (348): {_CUT_HINT}")
    if size == 348:
        dims = struct.unpack(order + "8h", header[40:56])
        datatype, bitpix = struct.unpack(order + "2h", header[70:74])
        offset = int(struct.unpack(order + "f", header[108:112])[0])
    else:
        if len(header) < 540:
            raise InputFileError(f"{path}: shorter than a NIfTI-2 header (540 bytes): {_CUT_HINT}")
        datatype, bitpix = struct.unpack(order + "2h", header[12:16])
        dims = struct.unpack(order + "8q", header[16:80])
        offset = int(struct.unpack(order + "q", header[168:176])[0])
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]) or bitpix <= 0 or bitpix % 8:
        return None  # an unusual header: SimpleITK validates it
    count = int(np.prod([int(d) for d in dims[1 : ndim + 1]], dtype=np.int64))
    float_type = _NIFTI_FLOATS.get(int(datatype))
    dtype = np.dtype(order + float_type) if float_type else np.dtype((np.void, bitpix // 8))
    compression = "gzip" if _is_gzip(path) else ""
    return VoxelData(path, max(offset, size), compression, dtype, count)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


# --- NRRD ------------------------------------------------------------------------------------------------------

def _nrrd_voxels(path: Path) -> VoxelData | None:
    with path.open("rb") as handle:
        first = handle.readline()
        if not first.startswith(b"NRRD"):
            return None
        fields: dict[str, str] = {}
        while True:
            line = handle.readline()
            if not line:
                if path.name.lower().endswith(".nrrd"):
                    raise InputFileError(f"{path}: the NRRD header has no end (no voxel data): {_CUT_HINT}")
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            if text.startswith("#") or ":" not in text or ":=" in text:
                continue
            key, value = text.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        header_end = handle.tell()
    sizes = [int(s) for s in fields.get("sizes", "").split()]
    dtype_name = _NRRD_TYPES.get(fields.get("type", "").lower())
    encoding = fields.get("encoding", "raw").lower()
    compression = {"raw": "", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}.get(encoding)
    if not sizes or dtype_name is None or compression is None:
        return None  # ascii/hex text data or an unusual header: SimpleITK reports problems itself
    data_file = fields.get("data file") or fields.get("datafile")
    offset = header_end
    if data_file:
        if data_file.upper().startswith("LIST") or "%" in data_file:
            return None  # several data files: left to SimpleITK
        target = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        if not target.is_file():
            raise InputFileError(f"{path}: its data file {target} does not exist")
        path, offset = target, 0
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    if skip < 0:
        return None
    endian = ">" if fields.get("endian", "little").lower() == "big" else "<"
    count = int(np.prod(sizes, dtype=np.int64))
    return VoxelData(path, offset + skip if not compression else offset, compression,
                     np.dtype(endian + dtype_name), count)


# --- MetaImage -------------------------------------------------------------------------------------------------

def _metaimage_voxels(path: Path) -> VoxelData | None:
    fields: dict[str, str] = {}
    with path.open("rb") as handle:
        while True:
            line = handle.readline()
            if not line:
                break
            text = line.decode("latin-1").strip()
            if "=" not in text:
                continue
            key, value = (part.strip() for part in text.split("=", 1))
            fields[key.lower()] = value
            if key.lower() == "elementdatafile":
                break
        header_end = handle.tell()
    data_file = fields.get("elementdatafile")
    dtype_name = _MET_TYPES.get(fields.get("elementtype", "").upper())
    try:
        sizes = [int(s) for s in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        return None
    if not data_file or dtype_name is None or not sizes:
        if path.name.lower().endswith(".mha") and not data_file:
            raise InputFileError(f"{path}: the MetaImage header has no ElementDataFile line: {_CUT_HINT}")
        return None
    if data_file.upper() == "LOCAL":
        target, offset = path, header_end
    elif data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return None  # several data files: left to SimpleITK
    else:
        target = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        if not target.is_file():
            raise InputFileError(f"{path}: its data file {target} does not exist")
        offset = 0
    big = fields.get("binarydatabyteordermsb", fields.get("elementbyteordermsb", "false")).lower() == "true"
    compressed = fields.get("compresseddata", "false").lower() == "true"
    count = int(np.prod(sizes, dtype=np.int64)) * max(channels, 1)
    return VoxelData(target, offset, "zlib" if compressed else "", np.dtype((">" if big else "<") + dtype_name), count)


# --- streaming the voxels --------------------------------------------------------------------------------------

def _blocks(data: VoxelData) -> Iterator[bytes]:
    """The voxel bytes, decompressed, in blocks."""
    with data.path.open("rb") as handle:
        if data.compression == "gzip" and data.path.name.lower().endswith((".nii", ".nii.gz")):
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                _read_exact(stream, data.offset)
                yield from iter(lambda: stream.read(_BLOCK), b"")
            return
        handle.seek(data.offset)
        if not data.compression:
            yield from iter(lambda: handle.read(_BLOCK), b"")
            return
        if data.compression == "gzip":
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                yield from iter(lambda: stream.read(_BLOCK), b"")
            return
        inflater = bz2.BZ2Decompressor() if data.compression == "bzip2" else zlib.decompressobj()
        for chunk in iter(lambda: handle.read(_BLOCK), b""):
            yield inflater.decompress(chunk)
            if inflater.eof:
                break
        if not inflater.eof:
            raise EOFError("the compressed stream ended before its end marker")


def _check_voxels(data: VoxelData, source: Path) -> None:
    """Stream the data: enough bytes, and finite values for floating-point types."""
    item = data.dtype.itemsize
    expected = data.count * item
    is_float = data.dtype.kind == "f"
    received, bad, rest = 0, 0, b""
    try:
        for block in _blocks(data):
            if received >= expected:
                received += len(block)
                continue
            block = block[: expected - received]
            received += len(block)
            if is_float:
                block = rest + block
                usable = len(block) - len(block) % item
                values = np.frombuffer(block[:usable], dtype=data.dtype)
                bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                rest = block[usable:]
    except (OSError, EOFError, zlib.error) as error:
        raise InputFileError(f"{source}: {_stream_problem(error)}") from error
    if received < expected:
        share = 100.0 * received / expected if expected else 0.0
        raise InputFileError(
            f"{source}: holds {received} of the {expected} bytes of voxel data its header announces "
            f"({share:.0f} %): {_CUT_HINT}"
        )
    if bad:
        raise InvalidImageError(f"the image has {bad} NaN or infinite voxels: replace them before segmenting")

