"""``segment_files``: outputs, .seg.nrrd read back by slicerio and by MRML, summary, skip/overwrite, shards, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import DATA, TOTALSEG
from RMAMambaSegmentationLib import segment_image
from RMAMambaSegmentationLib.batch.segment_files import (
    SUMMARY_COLUMNS,
    case_outputs,
    parse_shard,
    read_summary,
    segment_files,
    select_shard,
    summary_path,
)
from RMAMambaSegmentationLib.errors import CheckpointError, InputFileError, SegmentationCancelledError
from RMAMambaSegmentationLib.files.seg_nrrd import LIVER_TERMINOLOGY
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EchoLogits(torch.nn.Module):
    """Stand-in network: its input as logits, centred on the 0.5 threshold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - 0.5


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _ijk_to_lps(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


@pytest.fixture(scope="module")
def liver_inputs(tmp_path_factory) -> dict[str, tuple]:
    """CT and MR files whose voxels are the reference liver masks (NIfTI and NRRD), with those masks."""
    folder = tmp_path_factory.mktemp("inputs")
    made = {}
    sources = (("ct", "example_seg.nii.gz", ".nii.gz"), ("mr", "example_seg_mr.nii.gz", ".nrrd"))
    for name, labels_file, suffix in sources:
        labels = sitk.ReadImage(str(TOTALSEG / labels_file))
        mask = (sitk.GetArrayFromImage(labels) == 5).astype(np.uint8)
        image = sitk.GetImageFromArray(mask.astype(np.int16) * 100)
        image.CopyInformation(labels)
        path = folder / f"{name}{suffix}"
        sitk.WriteImage(image, str(path))
        made[name] = (path, image, mask)
    return made


@pytest.fixture(scope="module")
def batch_run(liver_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    paths = [liver_inputs["ct"][0], liver_inputs["mr"][0]]
    reports = []
    rows = segment_files(paths, out, model=EchoLogits(), device="cpu", probability=True, intensity="MRI",
                         progress=lambda f, m: reports.append((f, m)))
    return out, rows, reports


def test_every_output_is_written_in_the_input_geometry(liver_inputs, batch_run):
    out, rows, _ = batch_run
    assert [row["status"] for row in rows] == ["ok", "ok"]
    for name, (_, image, reference) in liver_inputs.items():
        mask = sitk.ReadImage(str(out / f"{name}_liver.nii.gz"))
        probability = sitk.ReadImage(str(out / f"{name}_probability.nii.gz"))
        for written in (mask, probability):
            assert written.GetSize() == image.GetSize()
            np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), atol=1e-6)
            np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
        assert mask.GetPixelID() == sitk.sitkUInt8 and probability.GetPixelID() == sitk.sitkFloat32
        array = sitk.GetArrayFromImage(mask)
        dice = 2 * np.count_nonzero(array & reference) / (np.count_nonzero(array) + np.count_nonzero(reference))
        assert dice >= 0.97
        assert (out / f"{name}_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}{s}" for n in ("ct", "mr") for s in ("_liver.nii.gz", "_probability.nii.gz", ".seg.nrrd",
                                                  "_overlay.png")] + ["summary.csv"]
    )


def test_seg_nrrd_reads_back_with_slicerio(liver_inputs, batch_run):
    out, _, _ = batch_run
    for name, (_, image, _) in liver_inputs.items():
        segmentation = slicerio.read_segmentation(str(out / f"{name}.seg.nrrd"))
        (segment,) = segmentation["segments"]
        assert segment["name"] == "Liver" and segment["labelValue"] == 1
        assert segment["terminology"]["type"] == ["SCT", "10200004", "Liver"]
        assert segment["color"] == pytest.approx([221 / 255, 130 / 255, 101 / 255], abs=1e-5)
        np.testing.assert_allclose(segmentation["ijkToLPS"], _ijk_to_lps(image), atol=1e-4)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_liver.nii.gz")))
        np.testing.assert_array_equal(segmentation["voxels"], mask.transpose(2, 1, 0))


def test_seg_nrrd_opens_in_mrml_as_an_editable_liver_segment(liver_inputs, batch_run, mrml):
    """Slicer's own segmentation reader: one segment "Liver", same voxels on the input volume's grid."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    out, _, _ = batch_run
    for name, (path, _, _) in liver_inputs.items():
        node = mrml.logics["Segmentations"].LoadSegmentationFromFile(str(out / f"{name}.seg.nrrd"), True, name)
        assert node is not None
        segmentation = node.GetSegmentation()
        assert segmentation.GetNumberOfSegments() == 1
        segment = segmentation.GetNthSegment(0)
        assert segment.GetName() == "Liver" and not segment.GetNameAutoGenerated()
        assert segment.GetTerminology() == LIVER_TERMINOLOGY
        volume = mrml.load_volume(path)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetNthSegmentID(0))
        merged = slicer.vtkOrientedImageData()
        slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
            node, volume, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged
        )
        back = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(
            tuple(reversed(merged.GetDimensions()))
        )
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_liver.nii.gz")))
        np.testing.assert_array_equal(back != 0, mask != 0)
        to_world, ijk_to_ras = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        merged.GetImageToWorldMatrix(to_world)
        volume.GetIJKToRASMatrix(ijk_to_ras)
        np.testing.assert_allclose(
            [to_world.GetElement(r, c) for r in range(4) for c in range(4)],
            [ijk_to_ras.GetElement(r, c) for r in range(4) for c in range(4)],
            atol=1e-4,
        )


def test_summary_has_one_row_per_case_and_progress_covers_the_batch(liver_inputs, batch_run):
    out, rows, reports = batch_run
    with (out / "summary.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        summary = list(reader)
    assert [row["case"] for row in summary] == ["ct", "mr"]
    assert len(rows) == len(summary)
    for row, returned in zip(summary, rows):
        assert row["status"] == "ok" and row["device"] == "cpu"
        assert float(row["liver_ml"]) == pytest.approx(returned["liver_ml"])
        assert float(row["seconds"]) >= 0
    assert summary[0]["slices"] == "30" and summary[1]["slices"] == "20"
    assert summary[0]["size"] == "122x101x30"
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("case 2/2 mr: slices") for _, m in reports)


def test_existing_outputs_are_skipped_unless_overwrite(liver_inputs, tmp_path):
    path = liver_inputs["mr"][0]
    first = segment_files([path], tmp_path, model=EchoLogits(), device="cpu", overlay=False)
    mask_file = tmp_path / "mr_liver.nii.gz"
    mask_file.write_bytes(b"edited by hand")
    again = segment_files([path], tmp_path, model=EchoLogits(), device="cpu", overlay=False)
    assert again[0]["status"] == "skipped" and "overwrite option" in again[0]["message"]
    assert mask_file.read_bytes() == b"edited by hand"
    assert read_summary(summary_path(tmp_path))[0]["status"] == "ok"  # the earlier row is kept
    assert read_summary(summary_path(tmp_path))[0]["liver_ml"] == str(first[0]["liver_ml"])
    replaced = segment_files([path], tmp_path, model=EchoLogits(), device="cpu", overlay=False, overwrite=True)
    assert replaced[0]["status"] == "ok"
    assert sitk.ReadImage(str(mask_file)).GetSize() == liver_inputs["mr"][1].GetSize()


def test_bad_inputs_get_one_line_errors_and_write_nothing_while_others_complete(liver_inputs, tmp_path):
    unreadable = tmp_path / "broken.nii.gz"
    unreadable.write_bytes(b"this is not an image")
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image(20, 20, 5, sitk.sitkInt16), str(flat))
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# inputs\n{liver_inputs['ct'][0]}\n{unreadable.name}\n\n{flat}\nmissing.mha\n")
    out = tmp_path / "out"
    rows = segment_files([listing], out, model=EchoLogits(), device="cpu")
    status = {row["case"]: (row["status"], row["message"]) for row in rows}
    assert status["ct"][0] == "ok"
    assert status["broken"][0] == "error" and "cannot read" in status["broken"][1]
    assert status["flat"][0] == "error" and "constant" in status["flat"][1]
    assert status["missing"][0] == "error" and "no such file" in status["missing"][1]
    assert all("\n" not in message for _, message in status.values())
    produced = {p.name for p in out.iterdir()}
    assert not {p for p in produced if p.startswith(("broken", "flat", "missing", ".part"))}
    assert {"ct_liver.nii.gz", "ct.seg.nrrd", "ct_overlay.png", "summary.csv"} <= produced


def test_duplicate_case_names_are_refused(liver_inputs, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    copy = other / "mr.nii.gz"
    sitk.WriteImage(liver_inputs["mr"][1], str(copy))
    rows = segment_files([liver_inputs["mr"][0], copy], tmp_path / "out", model=EchoLogits(), device="cpu",
                         overlay=False)
    assert [row["status"] for row in rows] == ["ok", "error"]
    assert "same name" in rows[1]["message"]


def test_shards_split_the_inputs_without_overlap(liver_inputs, tmp_path):
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    items = list(range(7))
    parts = [select_shard(items, (i, 3)) for i in (1, 2, 3)]
    assert sorted(item for part in parts for item in part) == items and parts[0] == [0, 3, 6]
    inputs = [liver_inputs["ct"][0], liver_inputs["mr"][0]]
    done = []
    for index in (1, 2):
        rows = segment_files(inputs, tmp_path, model=EchoLogits(), device="cpu", overlay=False, shard=f"{index}/2")
        done += [row["case"] for row in rows]
        assert summary_path(tmp_path, (index, 2)).is_file()
    assert done == ["ct", "mr"]
    assert not (tmp_path / "summary.csv").exists()


def test_cancel_keeps_finished_cases_and_leaves_no_partial_files(liver_inputs, tmp_path):
    inputs = [liver_inputs["ct"][0], liver_inputs["mr"][0]]
    seen = []

    def cancel() -> bool:
        return any(m.startswith("case 2/2") and "slices" in m for m in seen)

    with pytest.raises(SegmentationCancelledError):
        segment_files(inputs, tmp_path, model=EchoLogits(), device="cpu", batch_size=4, cancel=cancel,
                      progress=lambda f, m: seen.append(m))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"ct_liver.nii.gz", "ct.seg.nrrd", "ct_overlay.png", "summary.csv"} == names
    assert [row["case"] for row in read_summary(tmp_path / "summary.csv")] == ["ct"]


def test_fatal_problems_write_nothing(liver_inputs, tmp_path):
    out = tmp_path / "out"
    wrong = tmp_path / "wrong.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, wrong)
    with pytest.raises(CheckpointError):
        segment_files([liver_inputs["mr"][0]], out, weights=wrong, device="cpu")
    empty_list = tmp_path / "empty.txt"
    empty_list.write_text("# nothing yet\n")
    with pytest.raises(InputFileError, match="no input images"):
        segment_files([empty_list], out, model=EchoLogits())
    with pytest.raises(ValueError, match="mask format"):
        segment_files([liver_inputs["mr"][0]], out, model=EchoLogits(), mask_format="png")
    assert not out.exists()


def test_nrrd_mask_format(liver_inputs, tmp_path):
    outputs = case_outputs("x", tmp_path, mask_format="nrrd", probability_map=True, overlay=False)
    assert [p.name for p in outputs.values()] == ["x_liver.nrrd", "x.seg.nrrd", "x_probability.nrrd"]
    rows = segment_files([liver_inputs["ct"][0]], tmp_path, model=EchoLogits(), device="cpu", mask_format="nrrd",
                         overlay=False)
    assert rows[0]["mask"].endswith("ct_liver.nrrd")
    assert _geometry(sitk.ReadImage(rows[0]["mask"]))[0] == liver_inputs["ct"][1].GetSize()


def test_dicom_series_folder(tmp_path):
    """The CHAOS CT DICOM folder is one case named after the folder; outputs have the series' geometry."""
    dicom = DATA / "chaos_ct_case" / "DICOM_anon"
    reference = sitk.ReadImage(str(DATA / "chaos_ct_case" / "nifti" / "chaos_ct_case_ct_HU.nii.gz"))
    rows = segment_files([dicom.parent], tmp_path, model=EchoLogits(), device="cpu", batch_size=26,
                         intensity=IntensityPreset.ct(), overlay=False)
    (row,) = rows
    assert row["case"] == "DICOM_anon" and row["status"] == "ok" and row["slices"] == 78
    mask = sitk.ReadImage(str(tmp_path / "DICOM_anon_liver.nii.gz"))
    assert mask.GetSize() == reference.GetSize() == (512, 512, 78)
    np.testing.assert_allclose(mask.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), reference.GetDirection(), atol=1e-6)
    # the DICOM path gives exactly what the pipeline gives on the NIfTI export of the same scan
    expected = segment_image(reference, model=EchoLogits(), device="cpu", batch_size=26, intensity="CT")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(expected.mask))
    assert row["liver_ml"] == pytest.approx(expected.volume_ml, abs=1e-3)
