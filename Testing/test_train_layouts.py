"""Finding training cases in the three layouts, pairing by name, split files, and the errors for bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.training.layouts import (
    CaseSource,
    detect_layout,
    find_training_data,
    png_slice_pairs,
    read_split_file,
)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_paired_layout_pairs_by_name_not_order(tmp_path):
    # Sorted orders disagree (b_image < c_image but c_liver sorts after b_liver... and "a" has an odd suffix).
    _touch(tmp_path / "images", "case_b_image.nii.gz", "case_a_img.nii.gz", "case_c.nrrd")
    _touch(tmp_path / "liver_masks", "case_c_liver.nii.gz", "case_a_label.nii.gz", "case_b_seg.nii.gz")
    _touch(tmp_path / "labels_4organ", "case_a.nii.gz")  # not a recognised label folder name: ignored
    (tmp_path / "split.json").write_text(json.dumps({"train": ["case_a", "case_b_image.nii.gz"], "valid": ["case_c"]}))
    data = find_training_data(tmp_path, split_file=tmp_path / "split.json")
    assert data.layout == "paired"
    pairs = {c.key: (c.image.name, c.mask.name) for c in data.train + data.valid}
    assert pairs == {
        "case_a": ("case_a_img.nii.gz", "case_a_label.nii.gz"),
        "case_b": ("case_b_image.nii.gz", "case_b_seg.nii.gz"),
        "case_c": ("case_c.nrrd", "case_c_liver.nii.gz"),
    }
    assert [c.key for c in data.valid] == ["case_c"]
    assert data.describe()["split"] == "file split.json"


def test_real_chaos_folder_is_recognised(shared_dir):
    # The committed MR data: images/ + liver_masks/ (+ labels_4organ/, not a mask folder name).
    folder = shared_dir / "data" / "chaos_mr_t2spir"
    data = find_training_data(folder, valid_fraction=0.25, seed=3)
    assert len(data.train) + len(data.valid) == 16 and len(data.valid) == 4
    for case in data.train + data.valid:
        assert case.image.name == f"{case.key}_image.nii.gz" and case.mask.name == f"{case.key}_liver.nii.gz"
    again = find_training_data(folder, valid_fraction=0.25, seed=3)
    assert [c.key for c in again.valid] == [c.key for c in data.valid]  # seeded


def test_unpaired_and_ambiguous_files_are_errors(tmp_path):
    _touch(tmp_path / "images", "p1_image.nii.gz", "p2_image.nii.gz")
    _touch(tmp_path / "masks", "p1_mask.nii.gz", "p3_mask.nii.gz")
    with pytest.raises(InputFileError, match=r"p2_image\.nii\.gz.*p3_mask\.nii\.gz"):
        find_training_data(tmp_path)
    _touch(tmp_path / "masks", "p2_mask.nii.gz")
    (tmp_path / "masks" / "p3_mask.nii.gz").unlink()
    _touch(tmp_path / "images", "p1.nii.gz")  # same case key as p1_image
    with pytest.raises(InputFileError, match="both name case 'p1'"):
        find_training_data(tmp_path)


def test_explicit_folders_and_several_label_folders(tmp_path):
    _touch(tmp_path / "images", "x_image.nii.gz", "y_image.nii.gz")
    _touch(tmp_path / "masks", "x_liver.nii.gz", "y_liver.nii.gz")
    _touch(tmp_path / "labels", "x.nii.gz", "y.nii.gz")
    with pytest.raises(InputFileError, match="several label folders"):
        find_training_data(tmp_path)
    data = find_training_data(images=tmp_path / "images", masks=tmp_path / "labels")
    assert {c.mask.parent.name for c in data.train + data.valid} == {"labels"}


def test_cirrmri3d_nested_one_level(tmp_path):
    root = tmp_path / "Cirrhosis_T2_3D" / "Cirrhosis_T2_3D"
    for split, ids in (("train", ("10", "11", "2")), ("valid", ("31",)), ("test", ("40",))):
        _touch(root / f"{split}_images", *(f"{i}.nii.gz" for i in ids))
        _touch(root / f"{split}_masks", *(f"{i}.nii.gz" for i in ids))
    assert detect_layout(tmp_path / "Cirrhosis_T2_3D") == ("cirrmri3d", root)
    data = find_training_data(tmp_path / "Cirrhosis_T2_3D")
    assert (data.layout, data.split_source) == ("cirrmri3d", "folders")
    assert [c.key for c in data.train] == ["10", "11", "2"]
    assert [c.key for c in data.valid] == ["31"] and [c.key for c in data.test] == ["40"]
    assert all(c.image.parent.name == "train_images" and c.mask.parent.name == "train_masks" for c in data.train)
    # A split file re-splits the pooled cases.
    (tmp_path / "s.json").write_text(json.dumps({"train": ["10", "31"], "valid": ["40"]}))
    resplit = find_training_data(tmp_path / "Cirrhosis_T2_3D", split_file=tmp_path / "s.json")
    assert [c.key for c in resplit.train] == ["10", "31"] and [c.mask.parent.name for c in resplit.valid] == [
        "test_masks"
    ]


def test_png2d_layout_and_slice_pairing(tmp_path):
    for split, cases in (("train", ("7", "12")), ("valid", ("30",))):
        for case in cases:
            _touch(tmp_path / split / case / "images", "slice_10.png", "slice_2.png")
            _touch(tmp_path / split / case / "masks", "slice_2.png", "slice_10.png")
    data = find_training_data(tmp_path)
    assert data.layout == "png2d" and [c.key for c in data.train] == ["7", "12"]
    assert all(c.kind == "png" for c in data.train + data.valid)
    pairs = png_slice_pairs(data.train[0])
    assert [(a.name, b.name) for a, b in pairs] == [("slice_2.png", "slice_2.png"), ("slice_10.png", "slice_10.png")]
    _touch(tmp_path / "train" / "7" / "masks", "slice_11.png")
    with pytest.raises(InputFileError, match=r"slice_11\.png"):
        png_slice_pairs(CaseSource("7", tmp_path / "train/7/images", tmp_path / "train/7/masks", "png"))


def test_split_file_errors(tmp_path):
    _touch(tmp_path / "images", "a_image.nii.gz", "b_image.nii.gz")
    _touch(tmp_path / "masks", "a_mask.nii.gz", "b_mask.nii.gz")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a"], "valid": ["a"]}))
    with pytest.raises(InputFileError, match="both"):
        read_split_file(split)
    split.write_text(json.dumps({"train": ["a"], "valid": ["zz"]}))
    with pytest.raises(InputFileError, match="not in the data: zz"):
        find_training_data(tmp_path, split_file=split)
    split.write_text(json.dumps({"train": ["a", "b"]}))
    with pytest.raises(InputFileError, match="no validation case"):
        find_training_data(tmp_path, split_file=split)
    split.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        read_split_file(split)


def test_not_a_data_folder(tmp_path):
    _touch(tmp_path / "stuff", "a.nii.gz")
    with pytest.raises(InputFileError, match="does not look like a training data folder"):
        find_training_data(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        find_training_data(tmp_path / "missing")
