"""One segmentation running in the worker process, seen from the main thread (no Qt, no waiting).

Made by :meth:`SegmentationLogic.start`. ``poll()`` turns the worker's replies into progress events,
``cancel()`` kills the worker at once, ``finish()`` writes the result into the scene (or raises the run's error,
the scene unchanged). The run's temporary folder (voxels in, mask out) is removed when it ends. A run sent to a
worker that had just exited (idle timeout, crash) before taking it goes to a new worker, once.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from RMAMambaSegmentationLib import errors
from RMAMambaSegmentationLib.callbacks import ProgressCallback
from RMAMambaSegmentationLib.errors import RMAMambaError, SegmentationCancelledError, WorkerStoppedError
from RMAMambaSegmentationLib.worker import protocol

logger = logging.getLogger(__name__)

#: Part of the progress bar left for writing into the scene (the worker's progress fills the rest).
WRITE_SHARE = 0.05

_BUILTIN_ERRORS = {cls.__name__: cls for cls in (ValueError, TypeError, RuntimeError, MemoryError, OSError,
                                                 FileNotFoundError, KeyError)}


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: fraction done (0-1) and a short message."""

    fraction: float
    message: str


@dataclass
class WorkerResult:
    """What the worker sent back: the mask (and probability when asked) on the input's grid, the liver volume and
    the run's provenance (``Provenance`` fields; ``warnings``, and ``quality`` when the library records it)."""

    mask: np.ndarray
    probability: np.ndarray | None
    volume_ml: float
    provenance: Any


def worker_error(name: str, message: str) -> Exception:
    """The exception a worker's ``error`` reply stands for: the library's own classes by name, common built-in
    ones, else an ``RMAMambaError`` naming the original class."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(message)
    if name in ("SegmentExistsError", "SegmentationWriteError"):
        from RMAMambaSegmentationLib.mrml import segment_writer

        return getattr(segment_writer, name)(message)
    if name in _BUILTIN_ERRORS:
        return _BUILTIN_ERRORS[name](message)
    return RMAMambaError(f"{name}: {message}")


class SegmentationRun:
    """A run in the worker process. Poll it from the main thread; then :meth:`finish` on the main thread.

    Args:
        job: the prepared job (``array``, ``spacing``, ``direction``, ``options``); its voxels go to the worker.
        worker: the ``WorkerProcess`` that runs it.
        write: ``write(job, result)`` writes a finished result into the scene and returns the segmentation node.
        on_worker_gone: ``on_worker_gone(worker)`` is called when the worker was killed or stopped (the owner
            starts a new one for the next run).
        progress: ``progress(fraction, message)``, called by :meth:`poll` on the caller's thread.
        restart: ``restart()`` returns a running worker (called after ``on_worker_gone``); when given, a run whose
            worker exited before taking it (the send failed, or the worker ended without ``accepted``) is sent
            again once, to the new worker, instead of failing.
    """

    _next_id = 0

    def __init__(self, job, worker, *, write: Callable[[Any, WorkerResult], Any],
                 on_worker_gone: Callable[[Any], None], progress: ProgressCallback | None = None,
                 restart: Callable[[], Any] | None = None) -> None:
        self._write = write
        self._on_worker_gone = on_worker_gone
        self._restart = restart
        self._resent = False
        self._accepted = False
        self._job = job
        self._worker = worker
        self._progress = progress
        self._folder = Path(tempfile.mkdtemp(prefix="rmamamba-run-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._folder), True)
        self._done = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._reply: dict[str, Any] | None = None
        self._finished = False
        self._pending: list[ProgressEvent] = []
        self.startTime = time.monotonic()
        SegmentationRun._next_id += 1
        self._id = SegmentationRun._next_id
        try:
            np.save(self._folder / protocol.VOLUME_FILE, job.array)
            geometry = {"spacing": list(job.spacing), "direction": list(job.direction)}
            (self._folder / protocol.GEOMETRY_FILE).write_text(json.dumps(geometry), encoding="utf-8")
            job.array = None  # the worker has the voxels; do not keep the node's memory alive here
            self._request = {"type": protocol.RUN, "id": self._id, "folder": str(self._folder),
                             "options": job.options.to_dict()}
            try:
                worker.send(self._request)
            except WorkerStoppedError:
                if not self._resend():
                    raise
        except BaseException:
            self._cleanup()
            raise

    def _resend(self) -> bool:
        """The worker exited before taking the run (idle timeout, crash): send it to a new worker, once.
        False when that is not possible (no ``restart``, or already sent again); WorkerStoppedError when the new
        worker cannot take it either."""
        if self._restart is None or self._resent:
            return False
        self._resent = True
        logger.info("the segmentation worker (pid %d) exited before taking run %d: sending it to a new worker",
                    self._worker.pid, self._id)
        self._on_worker_gone(self._worker)
        self._worker = self._restart()
        self._worker.send(self._request)
        return True

    # ---------------------------------------------------------------- state
    @property
    def processId(self) -> int:
        """The worker process's pid (``PythonSlicer``, a launcher, inside Slicer)."""
        return self._worker.pid

    @property
    def interpreterProcessId(self) -> int | None:
        """The pid of the interpreter that runs the worker (the launcher's child inside Slicer), once it is ready."""
        return getattr(self._worker, "serverPid", None)

    @property
    def done(self) -> bool:
        """True once the run succeeded, failed or was cancelled (reads pending replies first)."""
        self._pump()
        return self._done

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def error(self) -> BaseException | None:
        """The run's error once :attr:`done` (SegmentationCancelledError after :meth:`cancel`), else None."""
        return self._error

    @property
    def provenance(self) -> Any:
        """The run's provenance once it succeeded (``warnings``, ``device``, ``quality`` when recorded ...)."""
        if self._reply is None:
            return None
        return protocol.from_jsonable(self._reply.get("provenance"))

    @property
    def workerPeakMemoryMb(self) -> float | None:
        """The worker process's peak resident memory (MB) at the end of this run, when the platform says."""
        return None if self._reply is None else self._reply.get("peak_rss_mb")

    @property
    def modelLoads(self) -> int | None:
        """How many times the worker loaded a model from disk so far (a reused model does not count)."""
        return None if self._reply is None else int(self._reply.get("model_loads", 0))

    # ---------------------------------------------------------------- main-thread calls
    def poll(self) -> list[ProgressEvent]:
        """The progress events received since the last call (never blocks); notes the end of the run."""
        self._pump()
        events, self._pending = self._pending, []
        return events

    def _pump(self) -> None:
        """Read the worker's replies: progress events are kept for :meth:`poll` (and given to ``progress``)."""
        if self._done:
            return
        events: list[ProgressEvent] = []
        for message in self._worker.messages():
            self._handle(message, events)
            if self._done:
                break
        for event in events:
            if self._progress is not None:
                self._progress(event.fraction, event.message)
        self._pending.extend(events)

    def _handle(self, message: dict[str, Any], events: list[ProgressEvent]) -> None:
        kind = message.get("type")
        if message.get("id", self._id) != self._id:
            return
        if kind == protocol.ACCEPTED:
            self._accepted = True
        elif kind == protocol.PROGRESS:
            events.append(ProgressEvent((1.0 - WRITE_SHARE) * float(message["fraction"]), str(message["message"])))
        elif kind == protocol.DONE:
            self._reply, self._done = message, True
        elif kind == protocol.ERROR:
            self._error = worker_error(str(message.get("error")), str(message.get("message")))
            self._done = True
            self._cleanup()
        elif kind == "exited":
            error = self._worker.stopped_error(message.get("returncode"))
            if not self._accepted:  # the worker ended before taking the run: a new one gets it, once
                try:
                    if self._resend():
                        return
                except WorkerStoppedError as resend_error:
                    error = resend_error
            self._error = error
            self._done = True
            self._on_worker_gone(self._worker)
            self._cleanup()

    def cancel(self) -> None:
        """Stop now: the worker is killed (the next run starts a new one); :meth:`finish` then raises
        SegmentationCancelledError and nothing is written. Does nothing once the run is done."""
        if self._done:
            return
        self._cancelled = True
        self._done = True
        self._error = SegmentationCancelledError("segmentation cancelled; the scene was not changed")
        self._worker.kill()
        self._on_worker_gone(self._worker)
        self._cleanup()

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Poll until done (scripts and tests; the panel polls from a timer). True when done within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    def finish(self):
        """Write the result into the scene (main thread) and return the segmentation node.

        Raises the run's error instead (SegmentationCancelledError, WorkerStoppedError, the weights or input
        errors of ``segment``), the scene unchanged; RuntimeError while the run is still going.
        """
        if not self.done:
            raise RuntimeError("the segmentation is still running: poll until run.done")
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError("this run's result was already written")
        self._finished = True
        try:
            mask = np.load(self._folder / protocol.MASK_FILE)
            probability = None
            if self._job.options.probability_map:
                probability = np.load(self._folder / protocol.PROBABILITY_FILE)
        except OSError as error:
            raise WorkerStoppedError(f"the worker's result could not be read: {error}") from error
        finally:
            self._cleanup()
        result = WorkerResult(mask, probability, float(self._reply["volume_ml"]), self.provenance)
        return self._write(self._job, result)
