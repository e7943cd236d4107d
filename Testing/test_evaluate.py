"""``rmamamba evaluate``: the CHAOS organisers' published scores, folders paired by name, JSON/CSV, empty masks."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, TOTALSEG
from RMAMambaSegmentationLib.cli import evaluate_command
from RMAMambaSegmentationLib.errors import InputFileError, InvalidImageError
from RMAMambaSegmentationLib.evaluation import metrics
from RMAMambaSegmentationLib.evaluation.evaluate import evaluate, evaluate_pair

CHAOS = DATA / "chaos_ct_case" / "nifti"
CHAOS_SAMPLE = CHAOS / "chaos_ct_case_sample_segmentation_not_expert.nii.gz"
CHAOS_EXPERT = CHAOS / "chaos_ct_case_liver_expert.nii.gz"
MAIN_KEYS = ("dice", "iou", "recall", "precision", "f2", "hd_mm", "hd95_mm")


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    evaluate_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return args.run(args)


def test_chaos_sample_segmentation_reproduces_the_published_scores():
    # CHAOS-evaluation README: DICE=0.978 RAVD=0.665 ASSD=0.734 MSSD=14 (mm), against the expert mask.
    result = evaluate_pair(CHAOS_SAMPLE, CHAOS_EXPERT)
    scores = result.scores
    assert round(scores["dice"], 3) == 0.978
    assert round(scores["ravd_percent"], 3) == 0.665
    assert round(scores["assd_mm"], 3) == 0.734
    assert scores["hd_mm"] == pytest.approx(14.0, abs=1e-4)
    assert scores["hd95_mm"] < scores["hd_mm"]
    assert scores["ref_ml"] == pytest.approx(1342595 * 0.7265625**2 * 2.0 / 1000)  # SOURCE.md voxel count
    assert result.n_slices == 78 and 0.9 < scores["slice_dice"] <= 1.0


def test_per_slice_scores_are_the_paper_protocol_on_axial_slices():
    result = evaluate_pair(CHAOS_SAMPLE, CHAOS_EXPERT, slice_size=(256, 256))
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(CHAOS_SAMPLE))) > 0
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(CHAOS_EXPERT))) > 0
    # Identity direction: the axial stack is the (k, j, i) array; 512 -> 256 bilinear then > 0.5, as the paper.
    from RMAMambaSegmentationLib.evaluation.evaluate import resize_bilinear

    expected = metrics.slice_scores(resize_bilinear(pred, (256, 256)) > 0.5, resize_bilinear(ref, (256, 256)) > 0.5)
    for key, value in expected.means().items():
        assert result.scores[key] == pytest.approx(value)
    # 7 slices without liver where the sample has none either count as Dice 1.
    empty_both = [i for i in range(ref.shape[0]) if not ref[i].any() and not pred[i].any()]
    assert len(empty_both) >= 1
    assert all(expected.scores["slice_dice"][i] == 1.0 for i in empty_both)


def test_label_selects_the_liver_of_a_multi_label_map(tmp_path):
    labels = sitk.ReadImage(str(TOTALSEG / "example_seg.nii.gz"))
    prediction = sitk.Cast(labels == 5, sitk.sitkUInt8)
    path = tmp_path / "ct_pred.nii.gz"
    sitk.WriteImage(prediction, str(path))
    scores = evaluate_pair(path, TOTALSEG / "example_seg.nii.gz", label=5).scores
    assert scores["dice"] == 1.0 and scores["hd_mm"] == 0.0
    unlabelled = evaluate_pair(path, TOTALSEG / "example_seg.nii.gz").scores  # nonzero = every organ
    assert unlabelled["precision"] == 1.0 and unlabelled["recall"] < 0.5


def _folders(tmp_path):
    """pred/ and ref/ with the CHAOS pair and a synthetic case whose prediction is empty."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    (pred_dir / "chaos_ct_case_seg.nii.gz").symlink_to(CHAOS_SAMPLE)
    (ref_dir / "chaos_ct_case_liver.nii.gz").symlink_to(CHAOS_EXPERT)
    reference = np.zeros((4, 10, 12), dtype=np.uint8)
    reference[1:3, 2:6, 3:9] = 1
    for folder, name, array in ((ref_dir, "synthetic_liver.nii.gz", reference),
                                (pred_dir, "synthetic_seg.nii.gz", np.zeros_like(reference))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 3.0))
        sitk.WriteImage(image, str(folder / name))
    return pred_dir, ref_dir


def test_cli_json_lines_csv_and_the_empty_mask_rule(tmp_path, capsys):
    pred_dir, ref_dir = _folders(tmp_path)
    csv_path = tmp_path / "scores.csv"
    assert run_cli(str(pred_dir), str(ref_dir), "--json", "-o", str(csv_path)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["case"] for line in lines] == ["chaos_ct_case", "synthetic", "mean"]
    for line in lines:
        assert set(MAIN_KEYS) <= set(line)
    chaos, synthetic, mean = lines
    assert round(chaos["dice"], 3) == 0.978 and chaos["hd_mm"] == pytest.approx(14.0)
    # Empty prediction, non-empty reference: overlap 0 (precision 1 by the 0/0 rule), distances undefined.
    assert (synthetic["dice"], synthetic["recall"], synthetic["precision"]) == (0.0, 0.0, 1.0)
    assert synthetic["hd_mm"] is None and synthetic["hd95_mm"] is None
    assert mean["dice"] == pytest.approx((chaos["dice"] + 0.0) / 2)
    assert mean["hd_mm"] == pytest.approx(chaos["hd_mm"]) and mean["hd_mm_undefined"] == 1
    # Per-slice means pool all slices of all cases: 78 CHAOS slices + 4 synthetic (2 empty-empty, 2 missed).
    assert mean["n_slices"] == 82
    expected = (chaos["slice_dice"] * 78 + 2 * 1.0 + 2 * 0.0) / 82
    assert mean["slice_dice"] == pytest.approx(expected)

    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == ["chaos_ct_case", "synthetic", "mean"]
    assert rows[1]["hd_mm"] == "inf" and float(rows[0]["dice"]) == pytest.approx(chaos["dice"])


def test_cli_table(tmp_path, capsys):
    pred_dir, ref_dir = _folders(tmp_path)
    assert run_cli(str(pred_dir / "chaos_ct_case_seg.nii.gz"), str(ref_dir / "chaos_ct_case_liver.nii.gz")) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["case", "dice", "iou"]
    assert table[1].split()[0] == "chaos_ct_case" and table[1].split()[1] == "0.9784"


def test_a_segment_output_folder_is_evaluated_as_it_is(tmp_path):
    """``rmamamba segment`` writes NAME_liver.nii.gz beside NAME.seg.nrrd (same case): the mask is the one scored."""
    out, refs = tmp_path / "out", tmp_path / "refs"
    out.mkdir()
    refs.mkdir()
    sample = sitk.ReadImage(str(CHAOS_SAMPLE))
    sitk.WriteImage(sample, str(out / "chaos_ct_case_liver.nii.gz"))
    sitk.WriteImage(sitk.Image(sample.GetSize(), sitk.sitkUInt8), str(out / "chaos_ct_case.seg.nrrd"))  # decoy
    sitk.WriteImage(sitk.ReadImage(str(CHAOS_EXPERT)), str(refs / "chaos_ct_case_liver.nii.gz"))
    report = evaluate(out, refs)
    assert [case.case for case in report.cases] == ["chaos_ct_case"]
    assert round(report.cases[0].scores["dice"], 3) == 0.978


def test_both_empty_scores_one_and_zero_distance(tmp_path):
    image = sitk.Image(8, 8, 3, sitk.sitkUInt8)
    for name in ("a_seg.nii.gz", "a_liver.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
    scores = evaluate_pair(tmp_path / "a_seg.nii.gz", tmp_path / "a_liver.nii.gz").scores
    assert all(scores[key] == 1.0 for key in ("dice", "iou", "recall", "precision", "f2"))
    assert scores["hd_mm"] == 0.0 and scores["hd95_mm"] == 0.0


def test_errors(tmp_path):
    pred_dir, ref_dir = _folders(tmp_path)
    (ref_dir / "extra_liver.nii.gz").symlink_to(CHAOS_EXPERT)
    with pytest.raises(InputFileError, match=r"extra_liver\.nii\.gz"):
        evaluate(pred_dir, ref_dir)
    report = evaluate(pred_dir, ref_dir, allow_unpaired=True, per_slice=False)
    assert [case.case for case in report.cases] == ["chaos_ct_case", "synthetic"]
    assert run_cli(str(pred_dir), str(ref_dir)) == 2
    with pytest.raises(InvalidImageError, match="same voxel grid"):
        evaluate_pair(pred_dir / "synthetic_seg.nii.gz", CHAOS_EXPERT)
    with pytest.raises(InputFileError, match="does not exist"):
        evaluate(tmp_path / "nothing", ref_dir)
    assert math.isinf(metrics.volume_scores(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), (1, 1, 1))["hd_mm"])
