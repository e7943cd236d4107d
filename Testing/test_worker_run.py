"""The panel's path on real MRML (slicer-core) with a real worker process: start -> poll -> finish, reuse of the
worker and its loaded model, cancel, a worker killed mid-run, and errors raised in the worker.

The network is the real RMA-Mamba-T with seeded weights saved to a file by the test (64x64 model card, so the
suite stays fast); one test runs the default weights when they are installed.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from conftest import MODULE_EXAMPLE, TEST_WORKER_OPTIONS, exported_segment
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.errors import (
    SegmentationCancelledError,
    VariantMismatchError,
    WeightsNotFoundError,
    WorkerStoppedError,
)
from RMAMambaSegmentationLib.inference.options import RunOptions

EXAMPLE = MODULE_EXAMPLE
WORKER = TEST_WORKER_OPTIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def t_weights(tiny_t_weights):
    return tiny_t_weights






def node_contents(scene) -> dict[str, int]:
    """Node ID -> modification time: equal before and after means no node was added, removed or modified."""
    return {scene.GetNthNode(i).GetID(): scene.GetNthNode(i).GetMTime() for i in range(scene.GetNumberOfNodes())}


def liver_mask(seg, volume) -> np.ndarray:
    return exported_segment(seg, volume, SegmentationLogic.liverSegmentId(seg))[0]


def process_gone(pid: int, within: float) -> bool:
    """True when process ``pid`` has ended (and was reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def wait_for_event(run, text: str, timeout: float = 120.0) -> list:
    """Poll until a progress event whose message contains ``text`` (the run must still be going)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += run.poll()
        if any(text in e.message for e in seen):
            return seen
        assert not run.done, f"the run ended before a {text!r} event: {run.error!r}"
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} event within {timeout} s")


def test_start_poll_finish_equals_segment_and_reuses_the_worker(mrml, t_weights, logic):
    volume = mrml.load_volume(EXAMPLE)
    options = dict(weights=t_weights, device="cpu", intensity="MRI", variant="T")
    reference = liver_mask(SegmentationLogic().segment(volume, **options), volume)
    assert 0 < reference.sum() < reference.size

    seen = []
    run = logic.start(volume, progress=lambda f, m: seen.append((f, m)), **options)
    assert run.wait(180), "the worker did not finish"
    events = run.poll()
    seg = run.finish()
    assert np.array_equal(liver_mask(seg, volume), reference)
    assert seen[0][1] == "loading the model" and seen[-1][1].startswith("done: liver")
    assert [m for _, m in seen].count("loading the model") == 1
    assert all(0.0 <= f <= 0.95 for f, _ in seen) and [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert events == [] or all(e.fraction <= 0.95 for e in events)
    assert seg.GetAttribute("RMAMamba.ModelVariant") == "RMA-Mamba-T"
    assert run.provenance.n_slices == 20 and run.provenance.intensity.label == "MRI"
    assert run.modelLoads == 1

    second = logic.start(volume, options=RunOptions(weights=str(t_weights), device="cpu", intensity="MRI"))
    assert second.processId == run.processId  # the same worker ...
    assert second.wait(120)
    seg2 = second.finish()
    assert second.modelLoads == 1  # ... and the same loaded model (not read again)
    assert np.array_equal(liver_mask(seg2, volume), reference)
    assert seg2 is not seg


def test_cancel_kills_the_worker_and_changes_nothing(mrml, t_weights, long_volume, logic):
    volume = mrml.load_volume(long_volume)
    small = mrml.load_volume(EXAMPLE)
    existing = SegmentationLogic().segment(small, weights=t_weights, device="cpu")
    before = node_contents(mrml.scene)
    run = logic.start(volume, weights=t_weights, device="cpu", segmentationNode=existing, replace=True,
                      batchSize=1)
    pid = run.processId
    while not run.poll():
        assert not run.done
        time.sleep(0.01)
    run.cancel()
    assert process_gone(pid, within=2.0)
    assert run.done and run.cancelled
    with pytest.raises(SegmentationCancelledError):
        run.finish()
    assert node_contents(mrml.scene) == before

    again = logic.start(small, weights=t_weights, device="cpu", segmentationNode=existing, replace=True)
    assert again.processId != pid  # a fresh worker
    assert again.wait(180)
    assert again.finish() is existing and existing.GetSegmentation().GetNumberOfSegments() == 1


def test_killed_worker_is_a_clear_error_and_the_next_run_works(mrml, t_weights, long_volume, logic):
    volume = mrml.load_volume(long_volume)
    before = node_contents(mrml.scene)
    run = logic.start(volume, weights=t_weights, device="cpu", batchSize=1)
    wait_for_event(run, "slices")
    os.kill(run.processId, signal.SIGKILL)
    killed = time.monotonic()
    while not run.done:
        assert time.monotonic() - killed < 3.0, "no error within 3 s of the worker's death"
        time.sleep(0.02)
    with pytest.raises(WorkerStoppedError, match=r"killed by signal 9.*Nothing was changed"):
        run.finish()
    assert not run.cancelled
    assert node_contents(mrml.scene) == before

    small = mrml.load_volume(EXAMPLE)
    retry = logic.start(small, weights=t_weights, device="cpu")
    assert retry.processId != run.processId
    assert retry.wait(180)
    assert retry.finish().GetAttribute("RMAMamba.ModelVariant") == "RMA-Mamba-T"


def test_errors_in_the_worker_and_before_it(mrml, t_weights, tmp_path, logic):
    volume = mrml.load_volume(EXAMPLE)
    before = node_contents(mrml.scene)
    with pytest.raises(WeightsNotFoundError, match="not found"):
        logic.start(volume, weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown intensity preset"):
        logic.start(volume, weights=t_weights, intensity="PET")
    assert logic.workerProcessId is None  # refused before any worker was started

    run = logic.start(volume, weights=t_weights, variant="S", device="cpu")
    assert run.wait(120)
    with pytest.raises(VariantMismatchError, match="RMA-Mamba-T weights"):
        run.finish()
    assert node_contents(mrml.scene) == before
    assert logic.workerProcessId == run.processId  # an error in a run does not end the worker

    with pytest.raises(TypeError, match="model"):  # a network object cannot travel to the worker: use segment()
        logic.start(volume, weights=t_weights, model=object())


def test_tilted_volume_warning_and_probability_come_back(mrml, t_weights, logic):
    """Provenance travels whole (warnings included) and the probability map is written only when asked."""
    import vtk

    volume = mrml.load_volume(EXAMPLE)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    tilt = vtk.vtkTransform()
    tilt.RotateX(12.0)
    tilted = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(tilt.GetMatrix(), matrix, tilted)
    volume.SetIJKToRASMatrix(tilted)
    run = logic.start(volume, weights=t_weights, device="cpu", probabilityMap=True, postprocess=False)
    assert run.wait(120)
    seg = run.finish()
    assert any("oblique volume (12.0 degrees)" in w for w in run.provenance.warnings)
    probability = SegmentationLogic.probabilityVolume(seg)
    assert probability is not None
    import slicer

    values = slicer.util.arrayFromVolume(probability)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    assert not run.provenance.postprocessed
    assert np.array_equal(values > run.provenance.threshold, liver_mask(seg, volume))


def test_default_weights_start_finish_equals_segment(mrml, logic):
    """The shipped weights (30M parameters, 256x256) on the module's own 20-slice MR test volume."""
    from RMAMambaSegmentationLib.weights.location import DEFAULT_WEIGHTS_NAME, MODELS_DIR

    if not (MODELS_DIR / DEFAULT_WEIGHTS_NAME).is_file():
        pytest.skip("no default weights installed")
    volume = mrml.load_volume(EXAMPLE)
    reference = liver_mask(SegmentationLogic().segment(volume, device="cpu"), volume)
    run = logic.start(volume, device="cpu")
    assert run.wait(300)
    seg = run.finish()
    assert np.array_equal(liver_mask(seg, volume), reference)
    assert seg.GetAttribute("RMAMamba.WeightsFile") == DEFAULT_WEIGHTS_NAME  # the name, not a local folder


class EditorWidgetStandIn:
    """The two calls the module's undo hook makes on Slicer's ``qMRMLSegmentEditorWidget`` (a Qt widget, absent
    headless): ``segmentationNode()`` and ``saveStateForUndo()``, which here keeps a real deep copy of the
    segmentation, as the editor's undo stack does, so the test can undo."""

    def __init__(self, node) -> None:
        self.node = node
        self.states = []

    def segmentationNode(self):
        return self.node

    def saveStateForUndo(self) -> None:
        import slicer

        state = slicer.vtkSegmentation()
        state.DeepCopy(self.node.GetSegmentation())
        self.states.append(state)


def test_segment_editor_undo_hook_restores_the_previous_liver(mrml, t_weights, logic):
    """The module's hook (``undo.save_editor_state``) runs just before the worker's result replaces the Liver
    segment that a Segment Editor (a real vtkMRMLSegmentEditorNode) is editing; undoing brings the old one back."""
    from RMAMambaSegmentationLib.mrml.undo import save_editor_state

    volume = mrml.load_volume(EXAMPLE)
    seg = SegmentationLogic().segment(volume, weights=t_weights, device="cpu")
    editor = EditorWidgetStandIn(seg)
    logic.undoHook = lambda node: save_editor_state(editor, node)

    run = logic.start(volume, weights=t_weights, device="cpu", intensity="CT", segmentationNode=seg, replace=True)
    assert run.wait(120)
    run.finish()
    assert editor.states == []  # no Segment Editor node edits it: no undo state
    ct_liver = liver_mask(seg, volume)

    editor_node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(seg)
    run = logic.start(volume, weights=t_weights, device="cpu", segmentationNode=seg, replace=True)
    assert run.wait(120)
    run.finish()
    assert len(editor.states) == 1
    mri_liver = liver_mask(seg, volume)
    assert not np.array_equal(mri_liver, ct_liver)

    seg.GetSegmentation().DeepCopy(editor.states[0])  # what the editor's Undo does
    assert np.array_equal(liver_mask(seg, volume), ct_liver)  # the state was saved before the write
    assert save_editor_state(None, seg) is False
