"""The module's in-Slicer self-test checks (panel/self_test.py), run here on a real headless MRML scene with the
library's SegmentationLogic: the same code the Slicer self-test runs, so a broken check fails in CI too."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PROJECT_ROOT, exported_segment
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.panel import self_test

EXAMPLE = PROJECT_ROOT / "RMAMambaSegmentation" / "Resources" / "Testing" / "example_mr_sm.nii.gz"
WORKER = {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}


@pytest.fixture
def logic():
    core = SegmentationLogic(workerOptions=WORKER)
    yield core
    core.shutdown()


def test_liver_mask_reads_the_segment_back_exactly(mrml, logic):
    volume = mrml.load_volume(EXAMPLE)
    node = logic.segment(volume, model=self_test.stand_in_model(), intensity="MRI")
    nodes = mrml.node_ids()
    mask = self_test.liver_mask(node, volume)
    back, _ = exported_segment(node, volume, SegmentationLogic.liverSegmentId(node))
    assert mask.dtype == bool and mask.shape == back.shape and np.array_equal(mask, back)
    assert 0 < mask.sum() < mask.size
    assert mrml.node_ids() == nodes  # read back without adding a node


def test_segment_matches_library_and_rerun_checks_pass(mrml, logic):
    volume = mrml.load_volume(EXAMPLE)
    node = self_test.check_segment_matches_library(logic, volume, EXAMPLE)
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    self_test.check_rerun_and_cancel(logic, volume)


def test_checks_fail_when_the_logic_is_wrong(mrml, logic):
    """A logic that writes another mask (a different stand-in level) is caught by the library comparison."""

    class OtherLevel:
        def segment(self, volume, **options):
            options["model"] = self_test.stand_in_model(0.3)
            return logic.segment(volume, **options)

    volume = mrml.load_volume(EXAMPLE)
    with pytest.raises(AssertionError, match="differs from the library's mask"):
        self_test.check_segment_matches_library(OtherLevel(), volume, EXAMPLE)


def test_weights_file_check_runs_the_worker(mrml, logic):
    volume = mrml.load_volume(EXAMPLE)
    idles = []
    node = self_test.check_weights_file(logic, volume, idle=lambda: idles.append(1) or __import__("time").sleep(0.05))
    assert node.GetAttribute("RMAMamba.ModelVariant") == "RMA-Mamba-T"
    assert idles  # polled between checks, as Slicer processes events
    assert logic.workerProcessId is None  # the worker was shut down
