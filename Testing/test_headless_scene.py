"""A bare headless MRML scene (no Segmentations module logic): ``segment`` and ``start`` refuse it before any work,
naming what to set up, and the setup lines of docs/slicer.md make the same call work.

Slicer registers the segment representations once per process, so each case runs in a fresh Python process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT_ROOT

pytest.importorskip("slicer", reason="needs the slicer-core wheel (none for this Python)")

DOCS = PROJECT_ROOT / "docs" / "slicer.md"

#: A bare scene with a 24 x 20 x 6 volume; a stand-in network that counts its calls.
BARE_SCENE = '''
import json, sys
import numpy as np, slicer, torch, vtk
from vtk.util import numpy_support
from RMAMambaSegmentationLib import SegmentationLogic

class Counting(torch.nn.Module):
    calls = 0
    def forward(self, x):
        Counting.calls += 1
        return 8.0 * (x[:, :1] - 0.5)

def new_volume(scene):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "bare")
    image = vtk.vtkImageData()
    image.SetDimensions(24, 20, 6)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    voxels[:] = np.arange(voxels.size) % 977
    volume.SetAndObserveImageData(image)
    return volume

def contents(scene):
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime()) for i in range(scene.GetNumberOfNodes())]

def attempt(call):
    try:
        call()
    except Exception as error:
        return [type(error).__name__, [c.__name__ for c in type(error).__mro__], str(error)]
    return None
'''

REFUSED = BARE_SCENE + '''
scene = slicer.vtkMRMLScene()
volume = new_volume(scene)
before = contents(scene)
logic = SegmentationLogic()
segment = attempt(lambda: logic.segment(volume, model=Counting()))
start = attempt(lambda: logic.start(volume))
print(json.dumps({"segment": segment, "start": start, "calls": Counting.calls,
                  "unchanged": contents(scene) == before, "worker": logic.workerProcessId}))
'''

SET_UP = BARE_SCENE + '''
{setup}
volume = new_volume(scene)
seg = SegmentationLogic().segment(volume, model=Counting())
segment = seg.GetSegmentation().GetSegment(SegmentationLogic.liverSegmentId(seg))
print(json.dumps({{"calls": Counting.calls, "segment": segment.GetName(),
                  "ml": float(seg.GetAttribute("RMAMamba.LiverVolumeMl"))}}))
'''


def run_python(script: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "RMAMambaSegmentation"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def docs_setup_block() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Setting up a headless scene", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_bare_scene_is_refused_before_the_network_runs():
    found = run_python(REFUSED)
    for name in ("segment", "start"):
        error_name, classes, message = found[name]
        assert error_name == "SceneSetupError" and "SegmentationWriteError" in classes, found[name]
        assert "no Segmentations module logic" in message and "Nothing was run or changed" in message
        assert "slicer.vtkSlicerSegmentationsModuleLogic()" in message and "SetMRMLScene(scene)" in message
    assert found["calls"] == 0  # the network never ran
    assert found["unchanged"] and found["worker"] is None  # no node touched, no worker process started


def test_the_documented_setup_lines_make_a_bare_scene_work():
    setup = docs_setup_block()
    assert "vtkSlicerSegmentationsModuleLogic" in setup and len(setup.strip().splitlines()) <= 8
    found = run_python(SET_UP.format(setup=textwrap.dedent(setup)))
    assert found["calls"] >= 1 and found["segment"] == "Liver" and found["ml"] > 0


def test_documented_polling_loop_sleeps_between_polls():
    text = DOCS.read_text(encoding="utf-8")
    loop = re.search(r"\nwhile not run\.done:\n((?:    .*\n)+)", text)
    assert loop is not None
    assert re.search(r"^    time\.sleep\(0?\.\d+\)", loop.group(1), re.M), loop.group(1)
