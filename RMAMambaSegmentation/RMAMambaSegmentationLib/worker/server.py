"""The worker process: receives runs on stdin, segments with the network, answers with JSON lines.

Started by :class:`~RMAMambaSegmentationLib.worker.client.WorkerProcess` as
``python -m RMAMambaSegmentationLib.worker``. It keeps the loaded network between runs (:class:`ModelCache`), and
exits on a ``quit`` request, when its stdin ends (the Slicer process closed it or died), or after
``--idle-timeout`` seconds without a request. Anything printed by libraries goes to stderr (the client's log
file): the replies have a pipe of their own.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

from RMAMambaSegmentationLib.worker import protocol

logger = logging.getLogger(__name__)

#: Seconds without a request after which the worker exits (the next run starts a new one).
DEFAULT_IDLE_TIMEOUT_S = 300.0


class _Replies:
    """The reply channel (a private copy of the original stdout), safe to write from several threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        line = protocol.encode({"type": kind, **fields})
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _reply_channel() -> _Replies:
    """Keep fd 1 for replies and send everything else printed to fd 1 to stderr."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return _Replies(replies)


def _read_requests(stream: TextIO, requests: queue.Queue) -> None:
    """stdin reader thread: queue each request; exit the process at once when stdin ends (the parent is gone)."""
    for line in stream:
        if not line.strip():
            continue
        try:
            requests.put(protocol.decode(line))
        except ValueError:
            logger.error("ignored a malformed request: %r", line[:200])
    logger.info("stdin closed: the worker exits")
    os._exit(0)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far in MB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20  # KB on Linux, bytes on macOS


def _run(request: dict[str, Any], cache, replies: _Replies) -> None:
    """One segmentation: read the folder's volume, segment, write the mask, reply ``done`` or ``error``."""
    import numpy as np

    from RMAMambaSegmentationLib.inference.options import RunOptions
    from RMAMambaSegmentationLib.inference.pipeline import segment_array

    run_id = request.get("id")
    replies.send(protocol.ACCEPTED, id=run_id)
    folder = Path(request["folder"])

    def progress(fraction: float, message: str) -> None:
        replies.send(protocol.PROGRESS, id=run_id, fraction=float(fraction), message=str(message))

    try:
        options = RunOptions.from_dict(request["options"])
        geometry = json.loads((folder / protocol.GEOMETRY_FILE).read_text(encoding="utf-8"))
        array = np.load(folder / protocol.VOLUME_FILE)
        progress(0.0, "loading the model")
        model = cache.get(options.weights, variant=options.variant, device=options.device)
        result = segment_array(array, spacing=geometry["spacing"], direction=geometry["direction"],
                               options=options, model=model, progress=progress)
        del array
        np.save(folder / protocol.MASK_FILE, result.mask)
        if result.probability is not None:
            np.save(folder / protocol.PROBABILITY_FILE, result.probability)
        replies.send(protocol.DONE, id=run_id, volume_ml=result.volume_ml,
                     provenance=protocol.to_jsonable(result.provenance), model_loads=cache.loads,
                     peak_rss_mb=peak_rss_mb())
    except Exception as error:  # every failure is answered; the worker stays up for the next run
        logger.error("run %s failed", run_id, exc_info=True)
        replies.send(protocol.ERROR, id=run_id, error=type(error).__name__, message=str(error),
                     traceback=traceback.format_exc(limit=20))
    finally:
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    """Serve runs until ``quit``, the end of stdin, or ``--idle-timeout`` seconds without a request."""
    parser = argparse.ArgumentParser(prog="python -m RMAMambaSegmentationLib.worker", description=__doc__)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                        help=f"exit after this many seconds without a request (default {DEFAULT_IDLE_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    replies = _reply_channel()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s worker %(process)d %(levelname)s %(name)s: %(message)s")
    from RMAMambaSegmentationLib.weights.cache import ModelCache

    requests: queue.Queue = queue.Queue()
    threading.Thread(target=_read_requests, args=(sys.stdin, requests), name="requests", daemon=True).start()
    replies.send(protocol.READY, pid=os.getpid(), python=sys.version.split()[0])
    cache = ModelCache()
    while True:
        try:
            request = requests.get(timeout=args.idle_timeout)
        except queue.Empty:
            logger.info("no request for %g s: the worker exits", args.idle_timeout)
            return 0
        if request["type"] == protocol.QUIT:
            return 0
        if request["type"] == protocol.RUN:
            _run(request, cache, replies)
        else:
            logger.error("unknown request type %r", request["type"])
