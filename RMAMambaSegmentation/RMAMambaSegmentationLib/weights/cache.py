"""Keep the last loaded network in memory so that a second run starts at once (held by the worker process).

The cache key is the weights file (resolved path, size, modification time) and the device: replacing the file on
disk or choosing another device loads it again; asking for another variant than the cached model's reads the
file again (which raises the variant mismatch). A cached model that a run moved off its
device (CUDA out of memory, continued on the CPU) is not handed out under the old key: it is loaded again on the
asked device. torch is imported only when loading.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


class ModelCache:
    """Holds at most one loaded model (weights are large; a second variant replaces the first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._prepared: Any = None
        #: How many times a model was loaded from disk (a reused model does not count).
        self.loads = 0

    def get(self, weights: str | Path, *, variant: str | None = None, device: str = "auto"):
        """A ``PreparedModel`` for ``weights`` on ``device`` (loaded with ``weights_only=True``, checked against
        ``variant`` when given). Raises WeightsNotFoundError, CheckpointError or VariantMismatchError."""
        from RMAMambaSegmentationLib.errors import WeightsNotFoundError
        from RMAMambaSegmentationLib.runtime.devices import resolve_device
        from RMAMambaSegmentationLib.weights.checkpoints import load_model
        from RMAMambaSegmentationLib.weights.model_card import read_model_card
        from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

        path = Path(weights)
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file not found: {path}")
        target = resolve_device(device)
        key = (*_file_key(path), str(target))
        with self._lock:
            cached = self._prepared
            if key == self._key and cached is not None and variant in (None, cached.variant):
                if cached.device == target:
                    logger.debug("reusing the loaded model %s", path)
                    return self._prepared
                logger.info("the cached model was moved to %s (out of memory on %s): loading it again on %s",
                            self._prepared.device, target, target)
            self.clear_locked()
            card = read_model_card(path)
            module = load_model(path, variant=variant, device=str(target))
            prepared = PreparedModel(module, target, path, getattr(module, "weights_sha256", None), card)
            self._key, self._prepared = key, prepared
            self.loads += 1
            return prepared

    def clear_locked(self) -> None:
        self._key, self._prepared = None, None

    def clear(self) -> None:
        """Forget the loaded model (frees its memory once nothing else refers to it)."""
        with self._lock:
            self.clear_locked()
