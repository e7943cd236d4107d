"""Run the network off the main thread and hand progress and the result back to it, without Qt.

The Slicer panel starts a :class:`BackgroundTask` and polls it from a ``QTimer`` on the main thread; the task's
function (the array-level inference) never touches MRML. Cancel sets an event that the inference checks between
batches of slices, so it stops within one batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..callbacks import CancelCheck, ProgressCallback

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: fraction done (0-1) and a short message."""

    fraction: float
    message: str


class BackgroundTask:
    """Runs ``function(progress, cancel)`` in a daemon thread.

    ``progress(fraction, message)`` calls are queued and returned by :meth:`poll` on the caller's thread;
    ``cancel()`` (the function's second argument) turns True after :meth:`cancel`.

    Example::

        task = BackgroundTask(lambda progress, cancel: logic.compute(job, progress=progress, cancel=cancel))
        task.start()
        ...  # on a timer, in the main thread:
        for event in task.poll():
            progressBar.value = int(100 * event.fraction)
        if task.done:
            node = logic.apply(job, task.result())   # raises the worker's error, if any
    """

    def __init__(self, function: Callable[[ProgressCallback, CancelCheck], Any], name: str = "RMAMambaSegmentation"):
        self._function = function
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._result: Any = None
        self._error: BaseException | None = None

    def start(self) -> BackgroundTask:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._function(self._report, self._cancelled.is_set)
        except BaseException as error:  # handed to the main thread by result()
            self._error = error
        finally:
            self._finished.set()

    def _report(self, fraction: float, message: str) -> None:
        self._events.put(ProgressEvent(float(fraction), str(message)))

    def cancel(self) -> None:
        """Ask the function to stop at its next cancel check (between batches of slices)."""
        self._cancelled.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        """True once the function returned or raised."""
        return self._finished.is_set()

    @property
    def error(self) -> BaseException | None:
        """The exception the function raised (only meaningful once :attr:`done`)."""
        return self._error

    def poll(self) -> list[ProgressEvent]:
        """The progress events queued since the last call (non-blocking)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the function is done (tests and scripts); True when it finished within ``timeout``."""
        return self._finished.wait(timeout)

    def result(self) -> Any:
        """The function's return value; re-raises its exception. Only call once :attr:`done`."""
        if not self.done:
            raise RuntimeError("the background task is still running")
        if self._error is not None:
            raise self._error
        return self._result
