"""What the client and the worker exchange.

* Requests (client -> worker, one JSON object per line on the worker's stdin): ``{"type": "run", "id": N,
  "folder": F, "options": {...}}`` and ``{"type": "quit"}``. The end of stdin (the client closed it, or died)
  also makes the worker exit.
* Replies (worker -> client, one JSON object per line on a pipe): ``ready`` (pid, Python version), ``accepted``
  (the run's id, as soon as the worker takes the run: a worker that exits before it never saw the run, which the
  client then sends to a new worker), ``progress`` (fraction, message), ``done`` (liver volume, provenance, model
  loads so far) and ``error`` (the exception's class name and message).
* Files in the run's folder: the voxels ``volume.npy`` and ``geometry.json`` (spacing and LPS direction) written
  by the client; ``mask.npy`` (uint8) and, when asked, ``probability.npy`` (float32) written by the worker.

Dataclasses (the run's ``Provenance`` and whatever it holds) travel through :func:`to_jsonable` /
:func:`from_jsonable`, which walk ``dataclasses.fields`` so that a new field needs no change here.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

VOLUME_FILE = "volume.npy"
GEOMETRY_FILE = "geometry.json"
MASK_FILE = "mask.npy"
PROBABILITY_FILE = "probability.npy"

RUN, QUIT = "run", "quit"
READY, ACCEPTED, PROGRESS, DONE, ERROR = "ready", "accepted", "progress", "done", "error"

_CLASS_KEY = "__dataclass__"
_TUPLE_KEY = "__tuple__"


def encode(message: dict[str, Any]) -> str:
    """One protocol line (no newline inside: JSON escapes them)."""
    return json.dumps(message, separators=(",", ":")) + "\n"


def decode(line: str) -> dict[str, Any]:
    """The message of one line; ValueError for anything that is not a JSON object with a ``type``."""
    message = json.loads(line)
    if not isinstance(message, dict) or "type" not in message:
        raise ValueError(f"not a worker message: {line[:200]!r}")
    return message


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON values: dataclasses (nested too) become dicts that name their class, tuples are marked so
    they come back as tuples, numpy scalars become numbers, paths become strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        data[_CLASS_KEY] = f"{type(value).__module__}:{type(value).__qualname__}"
        return data
    if isinstance(value, tuple):
        return {_TUPLE_KEY: [to_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


class Record(types.SimpleNamespace):
    """A dataclass from the worker whose class is not loaded in this process: same attribute names and values."""


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable`.

    A dataclass comes back as its own class when that class's module is already imported here and the fields
    match; otherwise as a :class:`Record` with the same attributes. Nothing is imported (the module that defines
    ``Provenance`` imports PyTorch, which the Slicer process does not need).
    """
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TUPLE_KEY}:
        return tuple(from_jsonable(v) for v in value[_TUPLE_KEY])
    data = {k: from_jsonable(v) for k, v in value.items() if k != _CLASS_KEY}
    if _CLASS_KEY not in value:
        return data
    cls = _loaded_class(str(value[_CLASS_KEY]))
    if cls is not None and {f.name for f in dataclasses.fields(cls) if f.init} == set(data):
        try:
            return cls(**data)
        except (TypeError, ValueError):
            pass
    return Record(**data)


def _loaded_class(name: str) -> type | None:
    module_name, _, qualname = name.partition(":")
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target if isinstance(target, type) and dataclasses.is_dataclass(target) else None
