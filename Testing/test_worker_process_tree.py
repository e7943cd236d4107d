"""The worker's whole process tree ends on cancel, scene close, shutdown and Reload, also when a launcher stands in
front of the interpreter (Slicer's ``PythonSlicer`` starts the real interpreter as its child); how the worker is
started on each platform; and a run sent just as the worker exits goes to a new worker instead of failing.

The launcher stand-in is a small script, put in front of the interpreter with ``RMAMAMBA_WORKER_PYTHON``, that
starts the interpreter as a child process with the same arguments, stdin and stdout, and waits for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODULE_EXAMPLE, PROJECT_ROOT, TEST_WORKER_OPTIONS, exported_segment
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.errors import SegmentationCancelledError, WorkerStoppedError
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.mrml.segmentation_run import SegmentationRun
from RMAMambaSegmentationLib.worker import client, protocol
from RMAMambaSegmentationLib.worker.client import WorkerProcess

EXAMPLE = MODULE_EXAMPLE
WORKER = TEST_WORKER_OPTIONS
LINUX_ONLY = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table in /proc")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ the process table
def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of process ``pid`` from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[1])


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process whose parent has not reaped it)."""
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every running process below ``pid`` (children, their children, ...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = process_state(int(entry.name))
            if state is not None and state[0] != "Z":
                parents[int(entry.name)] = state[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def all_gone(pids: set[int], within: float) -> set[int]:
    """The pids still running after ``within`` seconds (empty as soon as all have ended)."""
    deadline = time.monotonic() + within
    left = {pid for pid in pids if running(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {pid for pid in left if running(pid)}
    return left


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    """An executable that starts the real interpreter as its CHILD (same arguments, stdin, stdout) and waits."""
    path = tmp_path_factory.mktemp("launcher") / "PythonLauncher"
    path.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        f"sys.exit(subprocess.call([{sys.executable!r}] + sys.argv[1:]))\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def launched(launcher, monkeypatch) -> Path:
    monkeypatch.setenv(client.WORKER_PYTHON_VARIABLE, str(launcher))
    return launcher






def computing(run) -> set[int]:
    """Wait until ``run`` computes slices; its worker's process tree then (the launcher and its descendants)."""
    deadline = time.monotonic() + 180
    seen = []
    while not any("slices" in e.message for e in seen):
        assert time.monotonic() < deadline, "no slice progress within 180 s"
        assert not run.done, f"the run ended early: {run.error!r}"
        seen += run.poll()
        time.sleep(0.02)
    return {run.processId} | descendants(run.processId)


def node_contents(scene) -> dict[str, int]:
    return {scene.GetNthNode(i).GetID(): scene.GetNthNode(i).GetMTime() for i in range(scene.GetNumberOfNodes())}


# ------------------------------------------------------------------ cancel, scene close, shutdown, Reload
@LINUX_ONLY
def test_cancel_stops_the_launcher_and_the_interpreter_it_started(mrml, tiny_t_weights, long_volume, launched,
                                                                   logic):
    volume = mrml.load_volume(long_volume)
    before = node_contents(mrml.scene)
    run = logic.start(volume, weights=tiny_t_weights, device="cpu", batchSize=1)
    tree = computing(run)
    interpreter = run.interpreterProcessId
    assert interpreter is not None and interpreter != run.processId  # the launcher really stands in front
    assert interpreter in tree and process_state(interpreter)[1] == run.processId

    run.cancel()
    assert all_gone(tree, within=3.0) == set()
    with pytest.raises(SegmentationCancelledError):
        run.finish()
    assert node_contents(mrml.scene) == before
    assert logic.workerProcessId is None


@LINUX_ONLY
def test_scene_close_and_shutdown_stop_the_whole_tree(mrml, tiny_t_weights, long_volume, launched, logic):
    from RMAMambaSegmentationLib.panel.controller import PanelController

    volume = mrml.load_volume(long_volume)
    panel = PanelController(logic)
    panel.inputChanged(True)
    assert panel.apply(volume, weightsPath=str(tiny_t_weights), device="CPU", variant="T", intensity="MRI",
                       postprocess=True, probabilityMap=False)
    tree = computing(panel.run)
    panel.abandon()  # what the Widget does when the scene closes
    assert all_gone(tree, within=3.0) == set()

    tree = computing(logic.start(volume, weights=tiny_t_weights, device="cpu", batchSize=1))
    logic.shutdown()  # module cleanup during a run, without waiting
    assert all_gone(tree, within=3.0) == set()

    small = mrml.load_volume(EXAMPLE)
    done = logic.start(small, weights=tiny_t_weights, device="cpu")
    assert done.wait(180)
    done.finish()
    idle = {done.processId} | descendants(done.processId)
    assert len(idle) == 2 and done.interpreterProcessId in idle
    logic.shutdown()  # an idle worker: its stdin ends and the interpreter exits by itself
    assert all_gone(idle, within=3.0) == set()


@LINUX_ONLY
def test_a_worker_that_does_not_see_the_end_of_its_input_is_stopped_after_the_grace(tmp_path, monkeypatch):
    """A launcher that relays stdin to the interpreter but not its end: asked to exit without waiting, the tree
    is still stopped once the grace period has passed."""
    relay = tmp_path / "RelayLauncher"
    relay.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys, threading\n"
        f"child = subprocess.Popen([{sys.executable!r}] + sys.argv[1:], stdin=subprocess.PIPE)\n"
        "def relay():\n"
        "    for line in sys.stdin.buffer:\n"
        "        child.stdin.write(line); child.stdin.flush()\n"
        "threading.Thread(target=relay, daemon=True).start()\n"
        "sys.exit(child.wait())\n",
        encoding="utf-8",
    )
    relay.chmod(0o755)
    monkeypatch.setenv(client.WORKER_PYTHON_VARIABLE, str(relay))
    worker = ready_worker()
    tree = {worker.pid} | descendants(worker.pid)
    assert worker.serverPid in tree and len(tree) == 2
    worker.close(grace_s=2.0)  # returns at once
    assert all_gone(tree, within=1.0) == tree  # the end of input did not reach the interpreter ...
    assert all_gone(tree, within=4.0) == set()  # ... the hard stop after the grace did


@LINUX_ONLY
def test_reload_stops_workers_of_the_previous_load(launched, tmp_path):
    """Reload (``unload_library``) stops a worker even while its client object and stdin are still alive."""
    library = str(PROJECT_ROOT / "RMAMambaSegmentation")
    script = (
        f"import sys, time; sys.path.insert(0, {library!r})\n"
        "from RMAMambaSegmentationLib.worker.client import WorkerProcess\n"
        "from RMAMambaSegmentationLib.panel.reload import unload_library\n"
        "worker = WorkerProcess()\n"
        "while worker.serverPid is None: worker.messages(); time.sleep(0.02)\n"
        "print(worker.pid, worker.serverPid, flush=True)\n"
        "sys.stdin.readline()\n"
        "unload_library()\n"
        "print('unloaded', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        pids = {int(p) for p in parent.stdout.readline().split()}
        assert len(pids) == 2, "the launcher and the interpreter it started"
        assert all_gone(pids, within=1.0) == pids  # alive before the Reload
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "unloaded"
        assert all_gone(pids, within=3.0) == set()
        assert parent.poll() is None  # the parent (Slicer) is still running, its worker object too
    finally:
        parent.kill()
        parent.wait(10)


# ------------------------------------------------------------------ how the worker is started
def test_popen_arguments_per_platform(tmp_path):
    command = ["PythonSlicer", "-m", "RMAMambaSegmentationLib.worker"]
    environment = {"PYTHONPATH": "/lib"}
    windows = client.popen_arguments(command, environment, 7, platform="win32")
    assert windows["creationflags"] == 0x08000000 | 0x00000200  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    assert "start_new_session" not in windows
    posix = client.popen_arguments(command, environment, 7, platform="linux")
    assert posix["start_new_session"] is True and "creationflags" not in posix
    for arguments in (windows, posix):
        assert arguments["args"] == command and arguments["env"] == environment and arguments["stderr"] == 7
        assert arguments["stdin"] == arguments["stdout"] == subprocess.PIPE
    if sys.platform.startswith("win"):
        assert windows["creationflags"] & subprocess.CREATE_NO_WINDOW
    assert client.taskkill_command([12, 34, 12]) == ["taskkill", "/F", "/T", "/PID", "12", "/PID", "34"]


def test_worker_python_variable(launcher, monkeypatch):
    monkeypatch.delenv(client.WORKER_PYTHON_VARIABLE, raising=False)
    assert client.python_executable() == sys.executable  # outside Slicer
    monkeypatch.setenv(client.WORKER_PYTHON_VARIABLE, str(launcher))
    assert client.python_executable() == str(launcher)
    monkeypatch.setenv(client.WORKER_PYTHON_VARIABLE, str(launcher.parent / "missing"))
    with pytest.raises(WorkerStoppedError, match=client.WORKER_PYTHON_VARIABLE):
        WorkerProcess()


# ------------------------------------------------------------------ a run sent as the worker exits
def liver(seg, volume) -> np.ndarray:
    return exported_segment(seg, volume, SegmentationLogic.liverSegmentId(seg))[0]


def ready_worker() -> WorkerProcess:
    worker = WorkerProcess(**WORKER)
    deadline = time.monotonic() + 120
    while worker.serverPid is None:
        assert time.monotonic() < deadline and worker.alive, "the worker did not start"
        worker.messages()
        time.sleep(0.02)
    return worker


def test_run_sent_to_a_worker_that_has_exited_goes_to_a_new_one(mrml, tiny_t_weights):
    volume = mrml.load_volume(EXAMPLE)
    logic = SegmentationLogic(workerOptions=WORKER)
    options = RunOptions(weights=str(tiny_t_weights), device="cpu", intensity="MRI")
    reference = liver(logic.segment(volume, options=options), volume)
    exited = ready_worker()
    exited.send({"type": protocol.QUIT})  # as after its idle timeout
    assert exited.wait(30) and exited.returncode == 0

    with pytest.raises(WorkerStoppedError, match="not running"):  # without a way to restart: the old error
        SegmentationRun(logic.prepare(volume, options=options), exited, write=logic.apply,
                        on_worker_gone=lambda worker: None)

    gone, started = [], []

    def restart():
        started.append(WorkerProcess(**WORKER))
        return started[-1]

    run = SegmentationRun(logic.prepare(volume, options=options), exited, write=logic.apply,
                          on_worker_gone=gone.append, restart=restart)
    assert gone == [exited] and len(started) == 1 and run.processId == started[0].pid
    try:
        assert run.wait(180)
        assert np.array_equal(liver(run.finish(), volume), reference)
    finally:
        started[0].close(wait_s=5.0)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_worker_ending_before_it_takes_the_run_is_replaced_once(mrml, tiny_t_weights, logic):
    """The worker is still there when the run is sent, then ends before reading it (held with SIGSTOP, then
    killed): the run goes to a new worker. A worker that ends after taking the run is an error (test_worker_run)."""
    volume = mrml.load_volume(EXAMPLE)
    first = logic.start(volume, weights=tiny_t_weights, device="cpu")
    assert first.wait(180)
    reference = liver(first.finish(), volume)

    old = logic.workerProcessId
    os.kill(old, signal.SIGSTOP)
    try:
        run = logic.start(volume, weights=tiny_t_weights, device="cpu")
        assert run.processId == old  # sent to the stopped worker, which is still alive ...
    finally:
        os.kill(old, signal.SIGKILL)  # ... and now dies without having read it
    assert run.wait(180)
    assert run.processId != old and logic.workerProcessId == run.processId
    assert np.array_equal(liver(run.finish(), volume), reference)
