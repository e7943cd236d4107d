"""Start the worker process with Slicer's own Python and talk to it.

Inside Slicer the worker runs on ``PythonSlicer``, found on the ``PATH`` that Slicer sets up for its own
processes (as ``slicer.util.pip_install`` finds it); outside Slicer (tests, scripts) on ``sys.executable``. The
worker inherits this process's environment (Slicer's, so ``PythonSlicer`` finds its libraries), with the folder
holding ``RMAMambaSegmentationLib`` first on ``PYTHONPATH``.

Replies are read by a small thread into a queue, so :meth:`WorkerProcess.messages` never blocks; the process's
stderr goes to a log file whose end is quoted when the worker stops unexpectedly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib.errors import WorkerStoppedError
from RMAMambaSegmentationLib.worker import protocol

logger = logging.getLogger(__name__)

#: Folder that holds the ``RMAMambaSegmentationLib`` package (put first on the worker's ``PYTHONPATH``).
LIBRARY_PARENT = Path(__file__).resolve().parents[2]
#: Reply type the reader thread queues when the worker's reply pipe ends (``returncode`` set).
EXITED = "exited"
_LOG_TAIL_CHARS = 2000


def python_executable() -> str:
    """``PythonSlicer`` inside Slicer (on the PATH Slicer gives its processes), else ``sys.executable``."""
    try:
        from slicer import app  # noqa: F401  (only the Slicer application has it; the slicer-core wheel does not)
    except ImportError:
        return sys.executable
    found = shutil.which("PythonSlicer")
    if not found:
        raise WorkerStoppedError("cannot start the segmentation worker: the PythonSlicer executable was not found")
    return found


class WorkerProcess:
    """One running worker: send requests, read replies without blocking, kill it."""

    def __init__(self, *, python: str | None = None, idle_timeout_s: float | None = None,
                 env: dict[str, str] | None = None) -> None:
        command = [python or python_executable(), "-m", "RMAMambaSegmentationLib.worker"]
        if idle_timeout_s is not None:
            command += ["--idle-timeout", str(float(idle_timeout_s))]
        environment = dict(os.environ)
        environment.update(env or {})
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(LIBRARY_PARENT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        environment["PYTHONUNBUFFERED"] = "1"
        handle, log_name = tempfile.mkstemp(prefix="rmamamba-worker-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(handle, "wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=environment,
                text=True, encoding="utf-8", bufsize=1,
            )
        self.pid = self._process.pid
        self._replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"rmamamba-worker-{self.pid}", daemon=True)
        self._reader.start()
        self._finalizer = weakref.finalize(self, _stop, self._process, self.log_path)
        logger.info("started the segmentation worker (pid %d): %s", self.pid, " ".join(command))

    def _read(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        for line in stream:
            try:
                self._replies.put(protocol.decode(line))
            except ValueError:
                logger.warning("worker %d: unexpected output %r", self.pid, line[:200])
        returncode = self._process.wait()
        self._replies.put({"type": EXITED, "returncode": returncode})

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def send(self, message: dict[str, Any]) -> None:
        """Write one request; WorkerStoppedError when the worker is gone."""
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(protocol.encode(message))
            self._process.stdin.flush()
        except (OSError, ValueError) as error:
            raise WorkerStoppedError(f"the segmentation worker (pid {self.pid}) is not running: {error}") from error

    def messages(self) -> list[dict[str, Any]]:
        """The replies received since the last call (never blocks)."""
        found = []
        while True:
            try:
                found.append(self._replies.get_nowait())
            except queue.Empty:
                return found

    def kill(self) -> None:
        """Stop the worker at once (cancel, crash clean-up); does not wait."""
        if self.alive:
            self._process.kill()
            logger.info("killed the segmentation worker (pid %d)", self.pid)

    def close(self, wait_s: float = 0.0) -> None:
        """Ask the worker to exit (its stdin ends); after ``wait_s`` seconds, kill it if it is still there."""
        try:
            if self._process.stdin is not None:
                self._process.stdin.close()
        except OSError:
            pass
        if wait_s > 0:
            try:
                self._process.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait(self, timeout: float) -> bool:
        """True when the process has exited within ``timeout`` seconds."""
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self) -> str:
        """The end of the worker's stderr log (what it said before stopping)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-_LOG_TAIL_CHARS:].strip()

    def stopped_error(self, returncode: int | None) -> WorkerStoppedError:
        """The error for a worker that stopped while a run needed it."""
        if returncode is not None and returncode < 0:
            how = f"was killed by signal {-returncode}"
        elif returncode is not None:
            how = f"exited with code {returncode}"
        else:
            how = "stopped answering"
        tail = self.log_tail().splitlines()[-5:]
        detail = ("\nLast worker messages:\n" + "\n".join(tail)) if tail else ""
        return WorkerStoppedError(
            f"the segmentation worker (pid {self.pid}) {how} before finishing (out of memory, a GPU error or a "
            f"crash). Nothing was changed; the next run starts a new worker.{detail}"
        )


def _stop(process: subprocess.Popen, log_path: Path) -> None:
    """Finalizer: the worker does not outlive its client object or this process."""
    if process.poll() is None:
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(1.0)
        except subprocess.TimeoutExpired:
            process.kill()
    with contextlib.suppress(OSError):
        log_path.unlink()


