"""Issue 22's matrix through the real ``rmamamba`` entry point with the default weights: damaged files fail, foreign
scans are flagged, files that are not checkpoints are refused, reruns add what is missing.

Real files only: the bundled example (and copies of it damaged inside tmp_path), the CHAOS CT DICOM series, the
TotalSegmentator MR example, hand-made weights files. The network runs once over the example, the CT and the MR
(module fixture) and on a few small crops; damaged inputs fail before it runs.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import pickle
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATA, PROJECT_ROOT, TOTALSEG
from RMAMambaSegmentationLib.cli import main
from RMAMambaSegmentationLib.files.overlay import CHECK_RGB
from RMAMambaSegmentationLib.inference import provenance
from RMAMambaSegmentationLib.weights.checkpoints import default_weights_path, file_sha256

EXAMPLE = PROJECT_ROOT / "Resources" / "Example" / "chaos_mr_t2spir_20_image.nii.gz"  # damaged copies only
CT_DICOM = DATA / "chaos_ct_case" / "DICOM_anon"
MR = TOTALSEG / "example_mr_sm.nii.gz"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def segment(*argv: str) -> int:
    return main(["segment", *map(str, argv), "--device", "cpu", "-q"])


def overlay_corner(out, name) -> tuple[int, ...]:
    """The top-left pixel of a case's overlay PNG (red when the quality verdict asks for a check)."""
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_overlay.png")))
    return tuple(int(v) for v in picture[0, 0])


def summary(out) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _copy_dicom(folder, indices, extra=()):
    folder.mkdir()
    files = sorted(CT_DICOM.iterdir())
    for index in indices:
        shutil.copy(files[index], folder / files[index].name)
    for name, index in extra:
        shutil.copy(files[index], folder / name)
    return folder


def _other_series_file(path, source_index=32):
    """A real slice of the CT written again as a DICOM file of another series (new Series Instance UID)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(sorted(CT_DICOM.iterdir())[source_index]))
    image = reader.Execute()
    for key in reader.GetMetaDataKeys():
        image.SetMetaData(key, reader.GetMetaData(key))
    image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.22.1")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)


#: case name -> a specific part of its error message
DAMAGED = {
    "example_cut60": "compressed data end early",
    "example_crc": "checksum",
    "example_short": "bytes of voxel data its header announces (60 %)",
    "example_short_nrrd": "bytes of voxel data its header announces (60 %)",
    "example_short_mha": "bytes of voxel data its header announces (60 %)",
    "example_gz_cut_nrrd": "compressed data end early",
    "example_nan": "NaN or infinite",
    "example_nan_mha": "NaN or infinite",
    "dicom_gap": "DICOM slice(s) missing",
    "dicom_duplicate": "duplicated DICOM slice position",
    "dicom_mixed": "mixed DICOM series",
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> list:
    """Damaged copies of the bundled example and of the CT series, made here."""
    folder = tmp_path_factory.mktemp("damaged")
    data = EXAMPLE.read_bytes()
    (folder / "example_cut60.nii.gz").write_bytes(data[: int(0.6 * len(data))])
    crc = bytearray(data)
    crc[-8] ^= 0xFF  # the gzip trailer's CRC32
    (folder / "example_crc.nii.gz").write_bytes(bytes(crc))
    raw = gzip.decompress(data)
    (folder / "example_short.nii").write_bytes(raw[: 352 + int(0.6 * (len(raw) - 352))])
    image = sitk.ReadImage(str(EXAMPLE))
    for name, compress in (("example_short_nrrd.nrrd", False), ("example_short_mha.mha", False),
                           ("example_gz_cut_nrrd.nrrd", True)):
        whole = folder / f"whole_{name}"
        sitk.WriteImage(image, str(whole), useCompression=compress)
        written = whole.read_bytes()
        header = len(written) - image.GetNumberOfPixels() * 8 if not compress else 0
        (folder / name).write_bytes(written[: header + int(0.6 * (len(written) - header))])
        whole.unlink()
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    voxels[15, 128, 128] = np.nan
    voxels[16, 10, 10] = np.inf
    nan_image = sitk.GetImageFromArray(voxels)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(folder / "example_nan.nii.gz"))
    sitk.WriteImage(nan_image, str(folder / "example_nan_mha.mha"))
    paths = sorted(folder.iterdir())
    paths.append(_copy_dicom(folder / "dicom_gap", [30, 31, 32, 34, 35, 36]))
    paths.append(_copy_dicom(folder / "dicom_duplicate", [30, 31, 32, 33], extra=[("copy_of_31.dcm", 31)]))
    mixed = _copy_dicom(folder / "dicom_mixed", [30, 31, 32, 33])
    _other_series_file(mixed / "other_series.dcm")
    paths.append(mixed)
    return paths


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, damaged) -> dict:
    """One run of the default weights: the CT series, the foreign MR, and every damaged file (the bundled example
    itself, quality ok, is test_default_weights' job)."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = segment(CT_DICOM, MR, *damaged, "-o", out)
    return {"code": code, "rows": summary(out), "out": out}


def test_batch_with_failed_cases_exits_1(default_run):
    assert default_run["code"] == 1
    assert {row["status"] for row in default_run["rows"].values()} == {"ok", "error"}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_is_an_error_row_and_writes_nothing(default_run, name):
    row = default_run["rows"][name]
    assert row["status"] == "error" and DAMAGED[name] in row["message"], row["message"]
    assert row["quality"] == "" and "\n" not in row["message"]
    assert not list(default_run["out"].glob(f"{name}*")) and not list(default_run["out"].glob(".part-*"))


def test_ct_series_with_mr_weights_is_flagged_before_and_after_the_network(default_run):
    row = default_run["rows"]["DICOM_anon"]
    assert row["status"] == "ok"
    assert "the scan is CT (DICOM Modality tag) but the weights were trained on MR T2-SPIR" in row["message"]
    assert row["quality"].startswith("check: ")
    assert overlay_corner(default_run["out"], "DICOM_anon") == CHECK_RGB


def test_foreign_mr_sequence_is_flagged_by_the_quality_verdict(default_run):
    row = default_run["rows"]["example_mr_sm"]
    assert row["status"] == "ok" and float(row["liver_ml"]) < 200  # reference 499 mL
    assert row["quality"].startswith("check: liver volume")
    assert overlay_corner(default_run["out"], "example_mr_sm") == CHECK_RGB  # red frame and "CHECK QUALITY"


def test_seg_nrrd_carries_the_panels_provenance_tags(default_run, mrml):
    """Read back by Slicer's own reader: the tags the panel writes, with the row's quality and message."""
    from RMAMambaSegmentationLib import __version__

    node = mrml.logics["Segmentations"].LoadSegmentationFromFile(
        str(default_run["out"] / "DICOM_anon.seg.nrrd"), True, "ct")
    tags = provenance.read_segment_provenance(node.GetSegmentation().GetNthSegment(0))
    assert set(tags) == set(provenance.ALL_ATTRIBUTES)
    row = default_run["rows"]["DICOM_anon"]
    assert tags[provenance.WEIGHTS_SHA256] == file_sha256(default_weights_path()) == row["weights_sha256"]
    assert tags[provenance.INTENSITY_PRESET] == "MRI-tissue" and tags[provenance.VERSION] == __version__
    assert tags[provenance.QUALITY] == row["quality"] and tags[provenance.WARNINGS] == row["message"]
    assert float(tags[provenance.LIVER_VOLUME_ML]) == pytest.approx(float(row["liver_ml"]), abs=0.01)


@pytest.fixture(scope="module")
def ct_crop(tmp_path_factory):
    """Six consecutive real slices of the CT series (cheap to segment)."""
    return _copy_dicom(tmp_path_factory.mktemp("ct") / "ct_crop", range(36, 42))


def test_ct_preset_with_mr_weights_is_a_warning_in_the_row_and_an_error_with_strict(ct_crop, tmp_path):
    out = tmp_path / "out"
    assert segment(ct_crop, "-o", out, "--modality", "CT") == 0
    message = summary(out)["ct_crop"]["message"]
    assert "the scan is CT (DICOM Modality tag)" in message
    assert "CT intensity preset with weights trained with MRI-tissue" in message
    strict_out = tmp_path / "strict"
    assert segment(ct_crop, "-o", strict_out, "--modality", "CT", "--strict") == 1
    row = summary(strict_out)["ct_crop"]
    assert row["status"] == "error" and "(strict check)" in row["message"]
    assert sorted(p.name for p in strict_out.iterdir()) == ["summary.csv"]


@pytest.fixture(scope="module")
def mr_crop(tmp_path_factory):
    path = tmp_path_factory.mktemp("mr") / "mr_crop.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(MR))[:, :, 6:10], str(path))
    return path


def _evil_pickle(path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this should never run",))

    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    return path


WEIGHTS_FILES = {
    "text": (lambda p: p.write_text("epoch 3, dice 0.88\n"), "is not a PyTorch checkpoint: it is a text file"),
    "image": (lambda p: shutil.copy(PROJECT_ROOT / "Resources" / "Screenshots" / "example_segmentation.png", p),
              "is not a PyTorch checkpoint: it is a PNG image"),
    "empty": (lambda p: p.write_bytes(b""), "is not a PyTorch checkpoint: it is empty"),
    "pickle": (_evil_pickle, "was refused for safety: loading it would import or call posix.system"),
}


@pytest.mark.parametrize("kind", sorted(WEIGHTS_FILES))
def test_weights_file_that_is_not_a_checkpoint_is_exit_2_and_one_line(kind, mr_crop, tmp_path, caplog):
    make, expected = WEIGHTS_FILES[kind]
    weights = tmp_path / "weights.pt"
    make(weights)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert segment(mr_crop, "-o", out, "--weights", weights) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0]
    assert "corrupt" not in errors[0] and not out.exists()


def test_typo_in_the_input_is_exit_2_before_the_weights_load(tmp_path, caplog):
    text_weights = tmp_path / "weights.pt"
    text_weights.write_text("not read: the input is checked first")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert segment(tmp_path / "scna.nii.gz", "-o", out, "--weights", text_weights) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "input not found" in errors[0] and "checkpoint" not in errors[0]
    assert not out.exists()


def test_checkpoint_without_its_card_warns_with_the_preset_used(mr_crop, tmp_path):
    weights = tmp_path / "copied.pt"
    shutil.copy(default_weights_path(), weights)
    out = tmp_path / "out"
    assert segment(mr_crop, "-o", out, "--weights", weights) == 0
    row = summary(out)["mr_crop"]
    assert "no model card (copied.json beside them): using the MRI intensity preset" in row["message"]
    assert "--intensity MRI-tissue" in row["message"] and row["intensity"].startswith("MRI [")


def test_rerun_adds_a_missing_output_and_keeps_the_others(mr_crop, tmp_path, caplog):
    out = tmp_path / "out"
    assert segment(mr_crop, "-o", out, "--modality", "MRI") == 0
    first = summary(out)["mr_crop"]
    assert first["intensity"].startswith("MRI-tissue")  # --modality MRI means the card's MRI preset
    mask_time = (out / "mr_crop_liver.nii.gz").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        assert segment(mr_crop, "-o", out, "--probability") == 0
    row = summary(out)["mr_crop"]
    assert row["status"] == "ok" and "wrote the missing mr_crop_probability.nii.gz" in row["message"]
    assert "kept the existing mr_crop_liver.nii.gz" in row["message"]
    assert any("wrote the missing" in r.getMessage() for r in caplog.records)
    assert (out / "mr_crop_probability.nii.gz").is_file()
    assert (out / "mr_crop_liver.nii.gz").stat().st_mtime_ns == mask_time
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert segment(mr_crop, "-o", out, "--probability") == 0
    assert any("outputs already exist" in r.getMessage() for r in caplog.records)
    assert summary(out)["mr_crop"]["message"] == row["message"]  # a skipped case keeps its row


class EchoLogits(torch.nn.Module):
    """Stand-in network: its input as logits, centred on the 0.5 threshold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - 0.5


def test_segmentation_node_keeps_the_quality_verdict_and_scan_warnings(mrml):
    from RMAMambaSegmentationLib import SegmentationLogic

    volume = mrml.load_volume(TOTALSEG / "example_ct_sm.nii.gz")
    logic = SegmentationLogic()
    node = logic.segment(volume, model=EchoLogits(), intensity="MRI")
    attributes = provenance.read_provenance(node)
    assert "MRI preset but the intensities look like CT Hounsfield units" in attributes[provenance.WARNINGS]
    # The echo "network" calls 0.5 + 0.5 * intensity liver: the whole bright body, all of it uncertain.
    quality = attributes[provenance.QUALITY]
    assert quality.startswith("check: liver volume") and "outside the adult range" in quality
    assert "% of the liver voxels are uncertain" in quality
    assert "liver_ml=" in attributes[provenance.QUALITY_MEASURES]
