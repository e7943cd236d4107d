"""What a file given as weights is, when ``torch.load(..., weights_only=True)`` cannot read it.

* :func:`refuse_non_checkpoint` -- before reading: an empty file, a text file, an image... is not a checkpoint
  (PyTorch writes a zip archive, or a pickle stream in its legacy format); one sentence says what it is instead.
* :func:`explain_load_failure` -- after ``torch.load`` failed: a pickle that would import or call anything other
  than PyTorch's tensor rebuilders is *refused for safety* (its globals are listed by parsing the opcodes with
  :mod:`pickletools`, which never executes them); anything else is a damaged checkpoint.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path

from RMAMambaSegmentationLib.errors import CheckpointError

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
#: Python 2 module names that pickle protocol 2 writes for builtins.
_PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_KINDS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip-compressed file (an image volume such as .nii.gz?)"),
    (b"NRRD", "an NRRD image"),
    (b"%PDF", "a PDF document"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
)


def _describe(head: bytes, size: int) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    if size == 0:
        return "empty (0 bytes)"
    for magic, kind in _KINDS:
        if head.startswith(magic):
            return kind
    if len(head) > 132 and head[128:132] == b"DICM":
        return "a DICOM file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "a text file" if printable >= 0.95 * max(len(text), 1) else "binary data of an unknown kind"


def refuse_non_checkpoint(path: Path) -> None:
    """CheckpointError when ``path`` is neither a zip archive nor a pickle stream (what ``torch.save`` writes)."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTO):
        return
    raise CheckpointError(f"{path} is not a PyTorch checkpoint: it is {_describe(head, path.stat().st_size)} "
                          "(weights are a .pt/.pth file written by torch.save)")


def _pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global a pickle stream (or a sequence of them) would import, without running it."""
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []
        try:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    found.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(argument, str):
                    strings.append(argument)
        except (ValueError, EOFError, KeyError, IndexError, TypeError):
            break
    return found


def _pickled_payload(path: Path) -> bytes:
    """The pickle of a checkpoint: ``*/data.pkl`` inside a zip archive, else the file itself (legacy format)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return archive.read(name) if name else b""
    return path.read_bytes()


def _allowed_globals() -> set[str]:
    """The globals ``torch.load(..., weights_only=True)`` accepts (tensor rebuilders, storages, OrderedDict...)."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without this private helper: the usual state-dict globals
        return {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def _normalised(name: str) -> str:
    module, _, rest = name.partition(".")
    return f"{_PY2_NAMES.get(module, module)}.{rest}"


def explain_load_failure(path: Path, error: BaseException) -> CheckpointError:
    """The error to raise after ``torch.load(path, weights_only=True)`` raised ``error``."""
    try:
        payload = _pickled_payload(path)
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError):
        payload = b""
    allowed = _allowed_globals()
    unsafe = sorted({name for name in map(_normalised, _pickle_globals(payload))
                     if name not in allowed and not name.endswith("Storage")})
    if unsafe:
        return CheckpointError(
            f"{path} was refused for safety: loading it would import or call {', '.join(unsafe[:5])} "
            "(a checkpoint may hold only tensors, numbers and strings); use weights from a trusted source, "
            "saved as a state dict"
        )
    text = str(error).strip()
    detail = "" if isinstance(error, pickle.UnpicklingError) else ": " + (text.splitlines()[0] if text else
                                                                           type(error).__name__)
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?){detail}")
