"""``rmamamba segment`` end to end with the real RMA-Mamba-T network (seeded weights) on the CT and MR examples."""

from __future__ import annotations

import argparse
import csv
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import TOTALSEG, official_seeded_state_dict
from RMAMambaSegmentationLib.cli import segment_command
from RMAMambaSegmentationLib.weights.checkpoints import file_sha256, save_checkpoint

CT = TOTALSEG / "example_ct_sm.nii.gz"
MR = TOTALSEG / "example_mr_sm.nii.gz"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*argv: str) -> int:
    """Parse and run ``rmamamba segment ARGV`` in this process."""
    parser = argparse.ArgumentParser(prog="rmamamba")
    segment_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["segment", *argv])
    return args.run(args)


def _seeded_weights(path):
    """RMA-Mamba-T filled with the official fixtures' seeded weights (seed 0), saved as a checkpoint."""
    return save_checkpoint(path, official_seeded_state_dict("T", seed=0))


def _bad_inputs(folder):
    good = sitk.GetArrayFromImage(sitk.ReadImage(str(MR)))[:4].astype(np.float32)
    nan = good.copy()
    nan[1, 2, 3] = np.nan
    images = {
        "flat2d.nii.gz": sitk.GetImageFromArray(good[0]),
        "four_d.nii.gz": sitk.JoinSeries([sitk.GetImageFromArray(good)] * 2),
        "rgb.mha": sitk.GetImageFromArray(np.stack([good] * 3, axis=-1).astype(np.uint8), isVector=True),
        "nan.nrrd": sitk.GetImageFromArray(nan),
        "constant.nii.gz": sitk.GetImageFromArray(np.full((4, 30, 30), 7, np.int16)),
        "one_slice.nii.gz": sitk.GetImageFromArray(good[:1]),
    }
    paths = {}
    for name, image in images.items():
        sitk.WriteImage(image, str(folder / name))
        paths[name] = folder / name
    (folder / "unreadable.nii.gz").write_bytes(b"\x1f\x8b but not really gzip")
    paths["unreadable.nii.gz"] = folder / "unreadable.nii.gz"
    return paths


EXPECTED_ERRORS = {
    "flat2d": "2D",
    "four_d": "4D",
    "rgb": "components per voxel",
    "nan": "NaN or infinite",
    "constant": "constant",
    "one_slice": "single slice",
    "unreadable": "cannot read",
}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """Two runs into one folder: the CT (CT window, probability), then the MR among seven bad inputs (NRRD)."""
    folder = tmp_path_factory.mktemp("cli")
    weights = _seeded_weights(folder / "rmamamba_t_seed0.pt")
    out = folder / "out"
    bad = _bad_inputs(folder)
    ct_code = run_cli(str(CT), "-o", str(out), "--weights", str(weights), "--device", "cpu", "--modality", "CT",
                      "--probability", "--batch-size", "8", "-q")
    mr_code = run_cli(str(MR), *[str(p) for p in bad.values()], "-o", str(out), "--weights", str(weights),
                      "--device", "cpu", "--mask-format", "nrrd", "-q")
    with (out / "summary.csv").open(newline="") as handle:
        summary = {row["case"]: row for row in csv.DictReader(handle)}
    return {"weights": weights, "out": out, "codes": (ct_code, mr_code), "summary": summary}


def test_real_network_runs_end_to_end_on_both_volumes(cli_run):
    assert cli_run["codes"] == (0, 1)  # the MR run had bad inputs beside it
    summary, out = cli_run["summary"], cli_run["out"]
    for name, source, mask_name in (("example_ct_sm", CT, "example_ct_sm_liver.nii.gz"),
                                    ("example_mr_sm", MR, "example_mr_sm_liver.nrrd")):
        row = summary[name]
        assert row["status"] == "ok" and row["device"] == "cpu" and row["variant"] == "T"
        assert row["weights_sha256"] == file_sha256(cli_run["weights"])
        image, mask = sitk.ReadImage(str(source)), sitk.ReadImage(str(out / mask_name))
        assert mask.GetSize() == image.GetSize()
        np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
        voxels = np.count_nonzero(sitk.GetArrayViewFromImage(mask))
        assert float(row["liver_ml"]) == pytest.approx(voxels * 27 / 1000, abs=1e-3)
        assert int(row["slices"]) == image.GetSize()[2]
    assert summary["example_ct_sm"]["intensity"] == "CT [-150, 250]"
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "example_ct_sm_probability.nii.gz")))
    assert probability.dtype == np.float32 and 0 <= probability.min() <= probability.max() <= 1
    assert not (out / "example_mr_sm_probability.nrrd").exists()


@pytest.mark.parametrize("name", ["example_ct_sm", "example_mr_sm"])
def test_seg_nrrd_reads_back_with_the_input_geometry(cli_run, name):
    source = CT if name == "example_ct_sm" else MR
    image = sitk.ReadImage(str(source))
    segmentation = slicerio.read_segmentation(str(cli_run["out"] / f"{name}.seg.nrrd"))
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(segmentation["ijkToLPS"], ijk_to_lps, atol=1e-4)
    assert segmentation["voxels"].shape == image.GetSize()
    assert [segment["name"] for segment in segmentation["segments"]] == ["Liver"]
    mask_file = next(cli_run["out"].glob(f"{name}_liver.*"))
    np.testing.assert_array_equal(segmentation["voxels"],
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(mask_file))).transpose(2, 1, 0))


def test_each_bad_input_gets_its_error_and_writes_nothing(cli_run):
    summary, out = cli_run["summary"], cli_run["out"]
    for name, message in EXPECTED_ERRORS.items():
        assert summary[name]["status"] == "error", name
        assert message in summary[name]["message"], (name, summary[name]["message"])
        assert not list(out.glob(f"{name}*")), name
    assert not list(out.glob(".part-*"))


def test_existing_outputs_are_kept_without_overwrite(cli_run, caplog):
    out = cli_run["out"]
    before = (out / "example_ct_sm_liver.nii.gz").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        code = run_cli(str(CT), "-o", str(out), "--weights", str(cli_run["weights"]), "--device", "cpu", "-q")
    assert code == 0
    assert (out / "example_ct_sm_liver.nii.gz").stat().st_mtime_ns == before
    assert any("overwrite option" in record.getMessage() for record in caplog.records)


def test_wrong_kind_of_checkpoint_is_one_error_line_and_writes_nothing(tmp_path, caplog):
    """Through the real ``rmamamba`` entry point."""
    from RMAMambaSegmentationLib.cli import main

    wrong = tmp_path / "vmamba_backbone.pth"
    torch.save({"model": {"patch_embed.0.weight": torch.zeros(96, 3, 4, 4)}}, wrong)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main(["segment", str(MR), "-o", str(out), "--weights", str(wrong), "--device", "cpu", "-q"])
    assert code == 2
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "VMamba backbone" in errors[0] and "\n" not in errors[0]
    assert not out.exists()


def test_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(str(MR), "-o", str(tmp_path), "--shard", "5/4")
    assert "shard" in capsys.readouterr().err
    code = run_cli(str(MR), "-o", str(tmp_path / "x"), "--window", "-100", "200", "--percentiles", "1", "99")
    assert code == 2 and not (tmp_path / "x").exists()


def test_progress_bar_goes_to_stderr(cli_run, tmp_path, capsys):
    """Without -q a bar is drawn on stderr (not a terminal here: one line per step); stdout stays clean."""
    small = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(MR))[30:94, 20:84, 8:11], str(small))
    code = run_cli(str(small), "-o", str(tmp_path / "out"), "--weights", str(cli_run["weights"]), "--device", "cpu",
                   "--no-overlay", "--no-postprocess")
    captured = capsys.readouterr()
    assert code == 0 and captured.out == ""
    assert "100.0%" in captured.err and "case 1/1 small" in captured.err
