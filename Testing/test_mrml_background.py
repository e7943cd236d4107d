"""The panel's non-blocking run: prepare (main thread) -> compute in a BackgroundTask -> poll -> apply.

The stand-in network waits on a gate for every batch, so the test decides exactly when each batch may run: no
sleeps, no timing assertions.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from conftest import TOTALSEG
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.errors import SegmentationCancelledError
from RMAMambaSegmentationLib.mrml.background import BackgroundTask

WAIT_S = 60.0  # generous upper bound on a 2-core machine; never reached when the code is right


class GatedModel(torch.nn.Module):
    """Thresholds intensity; each forward call waits until the test opens the gate once more."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.entered.release()
        assert self.gate.acquire(timeout=WAIT_S), "the test never let this batch run"
        return 8.0 * (x[:, :1] - 0.5)


def node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def test_worker_thread_run_then_apply_on_main_thread(mrml):
    volume = mrml.load_volume(TOTALSEG / "example_mr_sm.nii.gz")  # 20 slices -> 5 batches of 4
    logic = SegmentationLogic()
    model = GatedModel()
    job = logic.prepare(volume, model=model, batchSize=4)
    before = node_ids(mrml.scene)
    task = BackgroundTask(lambda progress, cancel: logic.compute(job, progress=progress, cancel=cancel)).start()

    for _ in range(5):
        assert model.entered.acquire(timeout=WAIT_S)
        assert not task.done and node_ids(mrml.scene) == before  # the scene is untouched while it runs
        model.gate.release()
    assert task.wait(WAIT_S)
    events = task.poll()
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions) and len(events) >= 5
    assert any("20/20" in event.message for event in events)
    assert task.poll() == []

    seg = logic.apply(job, task.result())
    reference = SegmentationLogic().segment(volume, model=GatedModelOpen(), batchSize=4)
    assert np.array_equal(
        logic.lastResult.mask,
        _mask_of(reference, volume),
    )
    assert seg.GetSegmentation().GetNumberOfSegments() == 1


class GatedModelOpen(torch.nn.Module):
    """Same function as GatedModel, without the gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * (x[:, :1] - 0.5)


def _mask_of(seg, volume) -> np.ndarray:
    import slicer
    import vtk
    from vtk.util import numpy_support

    ids = vtk.vtkStringArray()
    ids.InsertNextValue(SegmentationLogic.liverSegmentId(seg))
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        seg, volume, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged
    )
    shape = tuple(reversed(merged.GetDimensions()))
    return (numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(shape) != 0).astype(np.uint8)


def test_cancel_stops_after_the_current_batch(mrml):
    volume = mrml.load_volume(TOTALSEG / "example_mr_sm.nii.gz")
    logic = SegmentationLogic()
    model = GatedModel()
    job = logic.prepare(volume, model=model, batchSize=4, probabilityMap=True)
    before = node_ids(mrml.scene)
    task = BackgroundTask(lambda progress, cancel: logic.compute(job, progress=progress, cancel=cancel)).start()

    assert model.entered.acquire(timeout=WAIT_S)  # batch 1 is running
    model.gate.release()
    assert model.entered.acquire(timeout=WAIT_S)  # batch 2 is running
    task.cancel()
    assert task.cancel_requested
    model.gate.release()  # batch 2 finishes; the check before batch 3 stops the run
    assert task.wait(WAIT_S)
    assert model.calls == 2
    assert isinstance(task.error, SegmentationCancelledError)
    with pytest.raises(SegmentationCancelledError):
        task.result()
    assert node_ids(mrml.scene) == before


def test_worker_error_is_raised_on_the_main_thread():
    def failing(progress, cancel):
        progress(0.5, "half way")
        raise ValueError("broken input")

    task = BackgroundTask(failing).start()
    assert task.wait(WAIT_S)
    assert [(e.fraction, e.message) for e in task.poll()] == [(0.5, "half way")]
    with pytest.raises(ValueError, match="broken input"):
        task.result()


def test_result_before_the_end_is_refused():
    release = threading.Event()
    task = BackgroundTask(lambda progress, cancel: release.wait(WAIT_S)).start()
    with pytest.raises(RuntimeError, match="still running"):
        task.result()
    release.set()
    assert task.wait(WAIT_S) and task.result() is True
