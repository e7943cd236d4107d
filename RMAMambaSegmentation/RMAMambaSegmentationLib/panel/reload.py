"""The module's developer Reload: stop the library's worker processes, then forget every library module so the
next import loads them all afresh.

Reloading modules one by one in place (``importlib.reload``) leaves modules holding the classes of the previous
load (an ``except SegmentationCancelledError`` in one module no longer matches the class another module raises);
dropping them all from ``sys.modules`` makes the next import consistent. A worker started by the previous load
would be out of reach of the new one, so every worker still running is stopped first (its whole process tree).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

LIBRARY = "RMAMambaSegmentationLib"


def stop_workers(package: str = LIBRARY) -> int:
    """Stop every worker process the loaded ``package`` started and that still runs; returns how many.

    Nothing is imported: when the worker client was never loaded, no worker was started."""
    client = sys.modules.get(package + ".worker.client")
    stop_all = getattr(client, "stop_all_workers", None)
    if stop_all is None:
        return 0
    stopped = int(stop_all())
    if stopped:
        logger.info("stopped %d segmentation worker(s) before reloading", stopped)
    return stopped


def unload_library(package: str = LIBRARY) -> list[str]:
    """Stop the library's running workers (:func:`stop_workers`), then remove ``package`` and its submodules
    from ``sys.modules``; returns the removed names."""
    stop_workers(package)
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return sorted(names)
