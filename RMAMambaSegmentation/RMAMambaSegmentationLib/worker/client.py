"""Start the worker process with Slicer's own Python and talk to it.

Inside Slicer the worker runs on ``PythonSlicer``, found on the ``PATH`` that Slicer sets up for its own
processes (as ``slicer.util.pip_install`` finds it); outside Slicer (tests, scripts) on ``sys.executable``; the
environment variable ``RMAMAMBA_WORKER_PYTHON``, when set, names the interpreter instead. The worker inherits this
process's environment (Slicer's, so ``PythonSlicer`` finds its libraries), with the folder holding
``RMAMambaSegmentationLib`` first on ``PYTHONPATH``.

``PythonSlicer`` is a launcher: the interpreter that computes is its child. So the worker is started as a process
tree of its own (POSIX: a new session, i.e. its own process group; Windows: a new process group, no console
window), and stopping it stops the whole tree: ``os.killpg`` on POSIX, ``taskkill /T /F`` on Windows. Closing
the worker's stdin asks it to exit on its own (the interpreter shares the launcher's stdin and exits at its end).

Replies are read by a small thread into a queue, so :meth:`WorkerProcess.messages` never blocks; the process's
stderr goes to a log file whose end is quoted when the worker stops unexpectedly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from RMAMambaSegmentationLib.errors import WorkerStoppedError
from RMAMambaSegmentationLib.worker import protocol

logger = logging.getLogger(__name__)

#: Folder that holds the ``RMAMambaSegmentationLib`` package (put first on the worker's ``PYTHONPATH``).
LIBRARY_PARENT = Path(__file__).resolve().parents[2]
#: Reply type the reader thread queues when the worker's reply pipe ends (``returncode`` set).
EXITED = "exited"
_LOG_TAIL_CHARS = 2000
#: Environment variable naming the worker's interpreter (used instead of ``PythonSlicer`` / ``sys.executable``).
WORKER_PYTHON_VARIABLE = "RMAMAMBA_WORKER_PYTHON"
#: Seconds a worker asked to exit (stdin closed, no waiting) gets before its process tree is stopped.
EXIT_GRACE_S = 5.0
# Windows process creation flags (the subprocess module defines them on Windows only).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000

_workers: weakref.WeakSet = weakref.WeakSet()


def python_executable() -> str:
    """``$RMAMAMBA_WORKER_PYTHON`` when set; else ``PythonSlicer`` inside Slicer (on the PATH Slicer gives its
    processes), else ``sys.executable``."""
    chosen = os.environ.get(WORKER_PYTHON_VARIABLE, "").strip()
    if chosen:
        return chosen
    try:
        from slicer import app  # noqa: F401  (only the Slicer application has it; the slicer-core wheel does not)
    except ImportError:
        return sys.executable
    found = shutil.which("PythonSlicer")
    if not found:
        raise WorkerStoppedError("cannot start the segmentation worker: the PythonSlicer executable was not found")
    return found


def _is_windows(platform: str) -> bool:
    return platform.startswith("win")


def popen_arguments(command: Sequence[str], environment: dict[str, str], log: IO[bytes] | int,
                    platform: str = sys.platform) -> dict[str, Any]:
    """The keywords of the worker's ``subprocess.Popen``: the one place that decides how it is started.

    Pipes for requests (stdin) and replies (stdout), stderr to ``log``; the worker and any child its launcher
    starts form a process tree of their own, so that :func:`stop_process_tree` ends all of it. POSIX: a new
    session (its own process group). Windows: a new process group and no console window.
    """
    arguments: dict[str, Any] = dict(
        args=list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=environment,
        text=True, encoding="utf-8", bufsize=1,
    )
    if _is_windows(platform):
        arguments["creationflags"] = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    else:
        arguments["start_new_session"] = True
    return arguments


def taskkill_command(pids: Sequence[int]) -> list[str]:
    """Windows: the command that force-stops the processes ``pids`` and every process they started."""
    command = ["taskkill", "/F", "/T"]
    for pid in dict.fromkeys(int(p) for p in pids):
        command += ["/PID", str(pid)]
    return command


def stop_process_tree(process: subprocess.Popen, server_pid: int | None = None,
                      platform: str = sys.platform) -> None:
    """Force-stop the worker ``process`` and every process it started (a launcher's interpreter included).

    POSIX: SIGKILL to the worker's process group (it leads a session of its own, see :func:`popen_arguments`).
    Windows: ``taskkill /T /F`` on the launcher while it runs and on ``server_pid`` (the interpreter that said
    ``ready``; pass it only while that process is known to run). Never waits for the processes to end.
    """
    if _is_windows(platform):
        pids = ([process.pid] if process.poll() is None else []) + ([server_pid] if server_pid else [])
        if pids:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(taskkill_command(pids), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, creationflags=CREATE_NO_WINDOW)
    elif process.pid != os.getpgrp():  # never this process's own group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()


def stop_all_workers() -> int:
    """Stop every worker this process started whose process tree still runs (module Reload); returns how many."""
    stopped = 0
    for worker in list(_workers):
        if worker._tree_running():
            worker.kill()
            stopped += 1
    return stopped


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
            try:
                self._process = subprocess.Popen(**popen_arguments(command, environment, log))
            except OSError as error:
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
                raise WorkerStoppedError(
                    f"cannot start the segmentation worker with {command[0]!r}: {error}"
                    f" (check {WORKER_PYTHON_VARIABLE} when it is set)"
                ) from error
        #: The started process (``PythonSlicer``, a launcher, inside Slicer).
        self.pid = self._process.pid
        #: The interpreter that runs the worker (the launcher's child inside Slicer), once it said ``ready``.
        self.serverPid: int | None = None
        self._replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"rmamamba-worker-{self.pid}", daemon=True)
        self._reader.start()
        self._finalizer = weakref.finalize(self, _stop, self._process, self.log_path)
        _workers.add(self)
        logger.info("started the segmentation worker (pid %d): %s", self.pid, " ".join(command))

    def _read(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        for line in stream:
            try:
                message = protocol.decode(line)
            except ValueError:
                logger.warning("worker %d: unexpected output %r", self.pid, line[:200])
                continue
            if message["type"] == protocol.READY and self.serverPid is None:
                self.serverPid = int(message.get("pid") or self.pid)
            self._replies.put(message)
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
        """Stop the worker's whole process tree at once (cancel, scene close, crash clean-up); does not wait.

        Its stdin is closed too, so that a process the hard stop could not reach sees the end of its input."""
        running = self._tree_running()
        if running:
            stop_process_tree(self._process, self.serverPid)
        self._close_stdin()
        if running:
            logger.info("killed the segmentation worker (pid %d, interpreter pid %s)", self.pid, self.serverPid)

    def close(self, wait_s: float = 0.0, grace_s: float = EXIT_GRACE_S) -> None:
        """Ask the worker to exit (its stdin ends), then make sure its process tree ends.

        ``wait_s`` > 0: wait that long, then stop whatever is left of the tree. ``wait_s`` = 0: return at once; a
        background thread stops the tree if it has not ended within ``grace_s`` seconds."""
        self._close_stdin()
        if wait_s > 0:
            self._stop_after(wait_s)
        else:
            threading.Thread(target=self._stop_after, args=(grace_s,), name=f"rmamamba-worker-stop-{self.pid}",
                             daemon=True).start()

    def _close_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._process.stdin is not None:
                self._process.stdin.close()

    def _tree_running(self) -> bool:
        """True while the launcher runs or any process of its tree still holds the reply pipe open."""
        return self.alive or self._reader.is_alive()

    def _stop_after(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the tree to end by itself, then stop what is left of it."""
        self.wait(seconds)
        self._reader.join(0.5)  # the reply pipe ends once the last process of the tree has exited
        if self._tree_running():
            logger.warning("the segmentation worker (pid %d) did not exit when asked: stopping it", self.pid)
            stop_process_tree(self._process, self.serverPid)

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
    """Finalizer: the worker's process tree does not outlive its client object or this process."""
    if process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            if process.stdin is not None:
                process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1.0)
        stop_process_tree(process)
    with contextlib.suppress(OSError):
        log_path.unlink()


