"""The checks of the module's in-Slicer self-test (``RMAMambaSegmentationTest`` calls them), kept in the library so
that the pytest suite runs the same code on a real headless MRML scene (Testing/test_panel_self_test.py).

Each check takes the logic to test (the module's Logic inside Slicer, the library's ``SegmentationLogic`` in pytest)
and a volume node of the MR example; it raises AssertionError when the logic does not do what it should. They need
PyTorch; run :func:`RMAMambaSegmentationLib.panel.runtime_info.torch_problem` first to skip without it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _check(condition: bool, message: str) -> None:
    """``assert`` that stays when Python runs with -O."""
    if not condition:
        raise AssertionError(message)


def stand_in_model(level: float = 0.5) -> Any:
    """A tiny network for geometry checks: logits from the intensity plus a left-to-right ramp (not mirror-symmetric,
    so a flip or an axis swap between two code paths changes the mask)."""
    import torch

    class RampModel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ramp = torch.linspace(-1.0, 1.0, x.shape[-1]).view(1, 1, 1, -1)
            return 8.0 * (x[:, :1] - level) + ramp

    return RampModel()


def liver_mask(segmentation_node, volume_node) -> np.ndarray:
    """The Liver segment on the volume's voxel grid, (K, J, I) booleans, read back without adding a node."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    from RMAMambaSegmentationLib.mrml.terminology import find_liver_segment_id

    segment_id = find_liver_segment_id(segmentation_node)
    _check(segment_id is not None, "the segmentation has no Liver segment")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, volume_node, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged)
    scalars = merged.GetPointData().GetScalars()
    _check(scalars is not None and merged.GetDimensions() == volume_node.GetImageData().GetDimensions(),
           "the Liver segment could not be read back on the volume's grid")
    voxels = numpy_support.vtk_to_numpy(scalars)
    return voxels.reshape(tuple(reversed(merged.GetDimensions()))) != 0


def check_segment_matches_library(logic, volume_node, image_path: str | Path) -> Any:
    """The logic's Liver segment equals the library's mask of the same file voxel for voxel, with its name and
    terminology and provenance; returns the segmentation node."""
    import SimpleITK as sitk

    from RMAMambaSegmentationLib.inference.pipeline import segment_image
    from RMAMambaSegmentationLib.mrml.terminology import LIVER_TERMINOLOGY, find_liver_segment_id, segment_terminology

    node = logic.segment(volume_node, model=stand_in_model(), intensity="MRI")
    expected = sitk.GetArrayFromImage(
        segment_image(sitk.ReadImage(str(image_path)), model=stand_in_model(), intensity="MRI").mask) != 0
    _check(0 < int(expected.sum()) < expected.size, "the stand-in network's mask is empty or full")
    _check(np.array_equal(liver_mask(node, volume_node), expected), "the Liver segment differs from the library's mask")
    segment = node.GetSegmentation().GetSegment(find_liver_segment_id(node))
    _check(segment.GetName() == "Liver", f"segment named {segment.GetName()!r}, not 'Liver'")
    _check(segment_terminology(segment) == LIVER_TERMINOLOGY, "the Liver segment lacks its terminology")
    _check(bool(node.GetAttribute("RMAMamba.WeightsSHA256")), "no provenance on the segmentation")
    return node


def check_rerun_and_cancel(logic, volume_node) -> None:
    """A cancelled run changes nothing; a re-run with ``replace`` replaces only the Liver segment."""
    from RMAMambaSegmentationLib.errors import SegmentationCancelledError

    scene = volume_node.GetScene()
    node = logic.segment(volume_node, model=stand_in_model(0.4))
    other = node.GetSegmentation().AddEmptySegment("", "Tumour", (1.0, 1.0, 0.0))
    nodes = scene.GetNumberOfNodes()
    before = liver_mask(node, volume_node)
    try:
        logic.segment(volume_node, model=stand_in_model(0.6), segmentationNode=node, replace=True, batchSize=4,
                      cancel=lambda: True)
    except SegmentationCancelledError:
        pass
    else:
        raise AssertionError("a cancelled run did not raise SegmentationCancelledError")
    _check(scene.GetNumberOfNodes() == nodes, "a cancelled run added or removed nodes")
    _check(np.array_equal(liver_mask(node, volume_node), before), "a cancelled run changed the Liver segment")
    logic.segment(volume_node, model=stand_in_model(0.6), segmentationNode=node, replace=True)
    _check(node.GetSegmentation().GetNumberOfSegments() == 2, "the re-run did not keep exactly Liver and Tumour")
    _check(node.GetSegmentation().GetSegment(other) is not None, "the re-run removed the other segment")
    _check(not np.array_equal(liver_mask(node, volume_node), before), "the re-run did not replace the Liver segment")


def check_weights_file(logic, volume_node, idle: Callable[[], None] = lambda: time.sleep(0.05),
                       timeout_s: float = 300.0) -> Any:
    """The real RMA-Mamba-T from a weights file (seeded random weights, 64x64 input): refused as RMA-Mamba-S,
    recorded with its sha256, and the same mask from the worker process as in this one. ``idle`` runs between
    polls (Slicer: process events). Returns the segmentation node written in this process."""
    import torch

    from RMAMambaSegmentationLib.errors import VariantMismatchError
    from RMAMambaSegmentationLib.network.build import build_model
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256, save_checkpoint
    from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        weights = str(Path(folder) / "rmamamba_t_selftest.pt")
        save_checkpoint(weights, build_model("T"), half=True)
        write_model_card(weights, ModelCard(variant="T", input_size=(64, 64)))
        try:
            logic.segment(volume_node, weights=weights, variant="S", device="cpu")
        except VariantMismatchError:
            pass
        else:
            raise AssertionError("RMA-Mamba-T weights were accepted as RMA-Mamba-S")
        node = logic.segment(volume_node, weights=weights, variant="T", device="cpu")
        _check(node.GetAttribute("RMAMamba.WeightsSHA256") == file_sha256(weights), "wrong weights sha256 recorded")
        _check(node.GetAttribute("RMAMamba.ModelVariant") == "RMA-Mamba-T", "wrong model variant recorded")
        run = logic.start(volume_node, weights=weights, variant="T", device="cpu")
        deadline = time.monotonic() + timeout_s
        while not run.done:
            _check(time.monotonic() < deadline, f"the worker's run did not end within {timeout_s:.0f} s")
            idle()
        from_worker = run.finish()
        logic.shutdown()
    _check(np.array_equal(liver_mask(from_worker, volume_node), liver_mask(node, volume_node)),
           "the worker's mask differs from the one computed in this process")
    logger.info("self-test segmentation: %s mL", node.GetAttribute("RMAMamba.LiverVolumeMl"))
    return node
