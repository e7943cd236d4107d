"""SRMA-Mamba end to end on a real CHAOS MR volume (seeded weights, 128x128x32 windows from the model card to keep
the CPU cost low): the ``segment`` command (model detected from the checkpoint) and the headless Slicer logic give
the same mask; a 2D model name with SRMA weights is refused before anything is written."""

from __future__ import annotations

import argparse
import csv
import logging

import numpy as np
import pytest
import SimpleITK as sitk
from srma_seeded import srma_seeded_state_dict

from conftest import DATA, exported_segment
from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.cli import segment_command
from RMAMambaSegmentationLib.inference import provenance
from RMAMambaSegmentationLib.mrml.volume_node import ijk_to_ras, lps_geometry
from RMAMambaSegmentationLib.weights.checkpoints import file_sha256, save_checkpoint
from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CASE = DATA / "chaos_mr_t2spir" / "images" / "chaos_mr_t2spir_20_image.nii.gz"  # 256 x 256 x 31 voxels


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rmamamba")
    segment_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["segment", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def srma_weights(tmp_path_factory):
    path = save_checkpoint(tmp_path_factory.mktemp("srma") / "srma_seeded.pth", srma_seeded_state_dict(0))
    write_model_card(path, ModelCard(variant="SRMA", inference="window-3d", window=(128, 128, 32), overlap=0.0))
    return path


@pytest.fixture(scope="module")
def cli_mask(srma_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert run_cli(str(CASE), "-o", str(out), "--weights", str(srma_weights), "--device", "cpu", "-q") == 0
    return out


def test_segment_command_detects_srma_and_writes_outputs(cli_mask, srma_weights) -> None:
    image = sitk.ReadImage(str(CASE))
    mask = sitk.ReadImage(str(cli_mask / "chaos_mr_t2spir_20_image_liver.nii.gz"))
    assert mask.GetSize() == image.GetSize() and mask.GetDirection() == image.GetDirection()
    assert mask.GetOrigin() == image.GetOrigin() and mask.GetSpacing() == image.GetSpacing()
    fraction = sitk.GetArrayViewFromImage(mask).mean()
    assert 0.0 < fraction < 1.0
    with open(cli_mask / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "ok" and row["variant"] == "SRMA"
    assert row["weights_sha256"] == file_sha256(srma_weights)
    assert row["intensity"].startswith("z-score-nonzero")


def test_headless_logic_gives_the_same_mask(mrml, srma_weights, cli_mask) -> None:
    volume = mrml.load_volume(CASE)
    logic = SegmentationLogic()
    seg = logic.segment(volume, weights=srma_weights, variant="SRMA", device="cpu")
    assert seg.GetAttribute(provenance.MODEL_VARIANT) == "SRMA-Mamba"
    exported, _ = exported_segment(seg, volume, SegmentationLogic.liverSegmentId(seg))
    # The panel's path (worker process) gives the same result as the console's blocking call. The worker runs
    # its own thread count, so float sums may differ in the last bits: probabilities agree to 1e-4, and masks may
    # differ only where a voxel's probability lies that close to the threshold.
    run = logic.start(volume, weights=srma_weights, variant="SRMA", device="cpu", probabilityMap=True)
    try:
        assert run.wait(300), "the worker did not finish"
        worker_seg = run.finish()
    finally:
        logic.shutdown()
    assert worker_seg.GetAttribute(provenance.MODEL_VARIANT) == "SRMA-Mamba"
    worker_mask, _ = exported_segment(worker_seg, volume, SegmentationLogic.liverSegmentId(worker_seg))
    import slicer  # only the tests that take the mrml fixture need slicer-core

    worker_probability = slicer.util.arrayFromVolume(SegmentationLogic.probabilityVolume(worker_seg))
    reference_seg = logic.segment(volume, weights=srma_weights, variant="SRMA", device="cpu", probabilityMap=True)
    reference_probability = slicer.util.arrayFromVolume(SegmentationLogic.probabilityVolume(reference_seg))
    np.testing.assert_allclose(worker_probability, reference_probability, atol=1e-4)
    near_threshold = np.abs(reference_probability - 0.5) < 1e-4
    differing = worker_mask != exported
    assert np.count_nonzero(differing & ~near_threshold) <= 1e-4 * exported.size
    # Slicer stores this NIfTI with its slice order reversed: compare the two masks in patient space.
    spacing, origin, direction = lps_geometry(ijk_to_ras(volume))
    logic_mask = sitk.GetImageFromArray(exported.astype(np.uint8))
    logic_mask.SetSpacing(spacing)
    logic_mask.SetOrigin(origin)
    logic_mask.SetDirection(np.asarray(direction).ravel().tolist())
    cli = sitk.ReadImage(str(cli_mask / "chaos_mr_t2spir_20_image_liver.nii.gz"))
    back = sitk.Resample(logic_mask, cli, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(cli))


def test_2d_model_name_with_srma_weights_is_refused(srma_weights, tmp_path, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_cli(str(CASE), "-o", str(tmp_path / "out"), "--weights", str(srma_weights), "--model", "T",
                       "-q") == 2
    assert "SRMA-Mamba (3D) weights but RMA-Mamba-T was selected" in caplog.text
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.ERROR):
        assert run_cli(str(CASE), "-o", str(tmp_path / "out"), "--model", "SRMA", "-q") == 2
    assert "no SRMA-Mamba weights are installed" in caplog.text
