"""The panel's Qt-free controller: states, status line, buttons, weights/device labels, warnings and quality,
with real MRML (slicer-core) and a real worker process. Includes the four panel bugs of issue 21:

* an out-of-memory fallback left the cached model on the CPU under a CUDA key, with no warning in the panel
  (cache: test_worker_protocol.py; warnings shown: here);
* the device label showed the previous choice;
* after the module's Reload, Cancel showed an error dialog;
* warnings reached only the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.panel.controller import PanelController, PanelState, quality_text
from RMAMambaSegmentationLib.worker import protocol

EXAMPLE = PROJECT_ROOT / "RMAMambaSegmentation" / "Resources" / "Testing" / "example_mr_sm.nii.gz"
WORKER = {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
LIB_PARENT = str(PROJECT_ROOT / "RMAMambaSegmentation")


@pytest.fixture
def controller():
    panel = PanelController(SegmentationLogic(workerOptions=WORKER))
    yield panel
    panel.shutdown()


def run_to_end(panel: PanelController, timeout: float = 180.0) -> list[str]:
    """Poll like the panel's timer until the run ends; returns the status lines seen while running."""
    statuses = []
    deadline = time.monotonic() + timeout
    while not panel.poll():
        assert time.monotonic() < deadline, "the run did not end"
        statuses.append(panel.view().status)
        time.sleep(0.05)
    return statuses


def start(panel: PanelController, volume, weights, **changes) -> bool:
    options = dict(weightsPath=str(weights), device="CPU", variant="T", intensity="MRI", postprocess=True,
                   probabilityMap=False)
    options.update(changes)
    return panel.apply(volume, **options)


def run_script(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=LIB_PARENT + os.pathsep + str(PROJECT_ROOT / "Testing"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


NO_TORCH_GUARD = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the panel imported torch")
        return None
sys.meta_path.insert(0, NoTorch())
"""


def test_panel_open_and_path_changes_import_no_torch(tiny_t_weights, tmp_path):
    """Opening the panel, changing the weights path, the model and the device: no torch, no checkpoint read."""
    other = tmp_path / "other.pt"
    other.write_bytes(b"not read by the panel")
    (tmp_path / "other.json").write_text(json.dumps({"variant": "S", "licence": "CC0"}), encoding="utf-8")
    code = NO_TORCH_GUARD + f"""
from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic
from RMAMambaSegmentationLib.panel.controller import PanelController
panel = PanelController(SegmentationLogic())
view = panel.open(hasInput=True, weightsPath="", variant="T", device="auto")
assert view.applyEnabled and view.weightsText.startswith("Default"), view
view = panel.weightsChanged({str(tiny_t_weights)!r}, "T")
assert view.weightsOk and "licence: test licence" in view.weightsText, view
view = panel.weightsChanged({str(other)!r}, "T")
assert not view.weightsOk and "says RMA-Mamba-S" in view.weightsText, view
view = panel.weightsChanged({str(other)!r}, "S")
assert view.weightsOk and view.weightsText.endswith("licence: CC0"), view
view = panel.deviceChanged("GPU")
panel.shutdown()
assert "torch" not in sys.modules
print("OK", sorted(m for m in sys.modules if m.startswith("RMAMambaSegmentationLib.")))
"""
    done = run_script(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK")
    assert "pipeline" not in done.stdout and "prepared_model" not in done.stdout


def test_device_label_follows_the_new_choice(controller):
    assert controller.deviceChanged("CPU").deviceText.startswith("CPU")
    assert controller.deviceChanged("GPU").deviceText.startswith("CUDA GPU")
    assert controller.deviceChanged("auto").deviceText.startswith("auto")
    assert controller.open(hasInput=False, weightsPath=None, variant="T", device="CPU").deviceText.startswith("CPU")


def test_run_states_buttons_and_result(mrml, tiny_t_weights, controller):
    volume = mrml.load_volume(EXAMPLE)
    idle = controller.open(hasInput=False, weightsPath=str(tiny_t_weights), variant="T", device="CPU")
    assert idle.state is PanelState.IDLE and not idle.applyEnabled and not idle.cancelEnabled
    assert controller.inputChanged(True).applyEnabled

    assert start(controller, volume, tiny_t_weights)
    running = controller.view()
    assert running.state is PanelState.RUNNING
    assert (running.applyEnabled, running.cancelEnabled, running.optionsEnabled, running.progressVisible) == (
        False, True, False, True)
    assert not start(controller, volume, tiny_t_weights)  # a second click while running does nothing

    statuses = run_to_end(controller)
    assert any(s.startswith("slices ") for s in statuses)
    done = controller.view()
    assert done.state is PanelState.DONE and done.progress == 100
    assert (done.applyEnabled, done.cancelEnabled, done.optionsEnabled, done.progressVisible) == (
        True, False, True, False)
    volume_ml = controller.outputNode.GetAttribute("RMAMamba.LiverVolumeMl")
    assert done.status.startswith("Done in") and f"on cpu: liver volume {volume_ml} mL." in done.status
    # The run's quality verdict is shown (tiny random weights: whatever it says, it is the node's verdict).
    node_quality = controller.outputNode.GetAttribute("RMAMamba.Quality")
    assert done.warnings == [] and done.quality.startswith(f"Quality: {node_quality.split(':')[0]}")
    assert done.deviceText.endswith("last run on cpu")
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256

    assert done.weightsText.endswith(f"licence: test licence (last run: sha256 {file_sha256(tiny_t_weights)[:12]}...)")
    assert controller.takeErrorDialog() is None


def test_warnings_of_the_run_are_shown(mrml, tiny_t_weights, controller):
    """A tilted volume: the warning made in the worker reaches the panel (it used to reach only the log)."""
    import vtk

    volume = mrml.load_volume(EXAMPLE)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    tilt = vtk.vtkTransform()
    tilt.RotateY(15.0)
    tilted = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(tilt.GetMatrix(), matrix, tilted)
    volume.SetIJKToRASMatrix(tilted)
    controller.inputChanged(True)
    assert start(controller, volume, tiny_t_weights)
    run_to_end(controller)
    view = controller.view()
    assert view.state is PanelState.DONE
    assert [w for w in view.warnings if "oblique volume (15.0 degrees)" in w]
    assert view.status.endswith("1 warning(s) below.")


def test_cancel_goes_back_to_idle_without_an_error(mrml, tiny_t_weights, controller):
    volume = mrml.load_volume(EXAMPLE)
    nodes = mrml.scene.GetNumberOfNodes()
    controller.inputChanged(True)
    assert start(controller, volume, tiny_t_weights, device="auto")
    pid = controller.run.processId
    cancelling = controller.cancel()
    assert cancelling.state is PanelState.CANCELLING and not cancelling.cancelEnabled and not cancelling.applyEnabled
    run_to_end(controller, timeout=5.0)
    view = controller.view()
    assert view.state is PanelState.IDLE and view.status.startswith("Cancelled after") and view.applyEnabled
    assert controller.takeErrorDialog() is None
    assert mrml.scene.GetNumberOfNodes() == nodes
    assert controller.logic.workerProcessId is None and controller.outputNode is None
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.02)


def test_failures_are_shown_once(mrml, tiny_t_weights, controller, tmp_path):
    volume = mrml.load_volume(EXAMPLE)
    controller.inputChanged(True)
    assert not start(controller, volume, tmp_path / "missing.pt")
    failed = controller.view()
    assert failed.state is PanelState.FAILED and failed.status.startswith("Cannot start: weights file not found")
    assert failed.applyEnabled and "missing.pt" in controller.takeErrorDialog()
    assert controller.takeErrorDialog() is None

    assert start(controller, volume, tiny_t_weights, variant="S")  # the card says T: the worker refuses it
    run_to_end(controller)
    assert controller.view().state is PanelState.FAILED
    assert "RMA-Mamba-T weights" in controller.takeErrorDialog()


def test_scene_close_abandons_the_run_without_waiting(mrml, tiny_t_weights, controller):
    volume = mrml.load_volume(EXAMPLE)
    controller.inputChanged(True)
    assert start(controller, volume, tiny_t_weights)
    began = time.monotonic()
    controller.abandon()
    assert time.monotonic() - began < 0.5
    assert controller.run is None and controller.view().state is PanelState.IDLE
    assert not controller.poll()


def test_cancel_after_reload_shows_no_error_dialog(tiny_t_weights):
    """The module's Reload drops every library module (panel.reload.unload_library); the freshly imported
    classes are consistent, and Cancel then ends in "Cancelled", not in an error dialog."""
    pytest.importorskip("slicer", reason="needs the slicer-core wheel (none for this Python)")
    code = f"""
import sys, time
from conftest import HeadlessMRML
from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic
from RMAMambaSegmentationLib.panel.controller import PanelController
from RMAMambaSegmentationLib.panel.reload import unload_library
mrml = HeadlessMRML()
volume = mrml.load_volume({str(EXAMPLE)!r})
options = dict(weightsPath={str(tiny_t_weights)!r}, device="cpu", variant="T", intensity="MRI", postprocess=True,
               probabilityMap=False)
old = PanelController(SegmentationLogic())
old.inputChanged(True)
assert old.apply(volume, **options)
old.shutdown()                       # what the Widget's onReload does first
dropped = unload_library()
assert "RMAMambaSegmentationLib.errors" in dropped and "RMAMambaSegmentationLib.mrml.segmentation_run" in dropped
from RMAMambaSegmentationLib.errors import SegmentationCancelledError
from RMAMambaSegmentationLib.mrml import segmentation_run
from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic
from RMAMambaSegmentationLib.panel.controller import PanelController
assert segmentation_run.SegmentationCancelledError is SegmentationCancelledError
panel = PanelController(SegmentationLogic())
panel.inputChanged(True)
assert panel.apply(volume, **options)
while not panel.run.poll():
    time.sleep(0.02)
panel.cancel()
while not panel.poll():
    time.sleep(0.02)
assert panel.view().status.startswith("Cancelled"), panel.view()
assert panel.takeErrorDialog() is None
panel.shutdown()
print("OK")
"""
    done = run_script(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("OK")


@dataclass
class QualityVerdictLike:
    status: str
    reasons: list = field(default_factory=list)
    measures: dict = field(default_factory=dict)


@dataclass
class ProvenanceLike:
    device: str
    warnings: list = field(default_factory=list)
    quality: QualityVerdictLike | None = None


def test_quality_verdict_is_shown_when_present():
    """``provenance.quality`` (a dataclass another part of the library fills) as it arrives from the worker."""
    verdict = QualityVerdictLike("doubtful", ["liver volume 4200 mL", "touches the volume's edge"], {"ml": 4200.0})
    record = protocol.from_jsonable(json.loads(json.dumps(protocol.to_jsonable(ProvenanceLike("cpu", [], verdict)))))
    assert quality_text(record) == "Quality: doubtful (liver volume 4200 mL; touches the volume's edge)"
    assert quality_text(ProvenanceLike("cpu")) == ""
    assert quality_text(protocol.Record(device="cpu")) == ""  # a provenance without the field at all
    assert quality_text({"quality": {"status": "ok", "reasons": []}}) == "Quality: ok"
    flagged = {"quality": {"status": "check", "reasons": ["no liver found"], "hint": "the network found no liver"}}
    assert quality_text(flagged) == "Quality: check (no liver found). The network found no liver"

