"""``rmamamba train --folds K`` (subject-level cross-validation) and the refusal to replace an earlier run.

Cross-validation runs for real on four CHAOS T2-SPIR subjects: the U-Net baseline trained for a few steps at 64x64
per fold, each held-out subject segmented by ``rmamamba segment`` with its fold's final weights and scored by
``rmamamba evaluate``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch

from conftest import SHARED
from RMAMambaSegmentationLib.cli import train_command
from RMAMambaSegmentationLib.cli.crossval import fold_splits
from RMAMambaSegmentationLib.training.layouts import find_training_data

CHAOS = SHARED / "data" / "chaos_mr_t2spir"
SUBJECTS = ("01", "02", "03", "08")
FAST = ["--model", "unet", "--input-size", "64", "--batch-size", "4", "--max-steps", "2", "--epochs", "1",
        "--valid-max-slices", "4", "--no-progress", "--threads", "1", "--device", "cpu"]

pytestmark = pytest.mark.needs_shared  # the CHAOS T2-SPIR subjects of the shared data


def train(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.run(args)


@pytest.fixture
def four_subjects(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for folder, suffix in (("images", "image"), ("liver_masks", "liver")):
        (root / folder).mkdir(parents=True)
        for subject in SUBJECTS:
            name = f"chaos_mr_t2spir_{subject}_{suffix}.nii.gz"
            (root / folder / name).symlink_to(CHAOS / folder / name)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_folds_hold_out_every_case_once(four_subjects: Path) -> None:
    data = find_training_data(four_subjects, valid_fraction=0.25)
    splits = fold_splits(data, 2)
    held_out = [case.key for split in splits for case in split.valid]
    assert sorted(held_out) == [f"chaos_mr_t2spir_{s}" for s in SUBJECTS]
    assert [c.key for c in splits[0].valid] == ["chaos_mr_t2spir_01", "chaos_mr_t2spir_03"]
    for split in splits:
        assert not {c.key for c in split.train} & {c.key for c in split.valid}
        assert len(split.train) == 2


def test_more_folds_than_cases_is_refused(four_subjects: Path) -> None:
    from RMAMambaSegmentationLib.errors import InputFileError

    with pytest.raises(InputFileError, match="cannot fill 5 folds"):
        fold_splits(find_training_data(four_subjects, valid_fraction=0.25), 5)


def test_crossval_writes_out_of_fold_predictions_and_a_table(four_subjects: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    assert train(str(four_subjects), "--folds", "2", "-o", str(out), *FAST) == 0
    with (out / "crossval.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    cases = {row["case"]: row for row in rows}
    assert set(cases) == {*(f"chaos_mr_t2spir_{s}" for s in SUBJECTS), "mean"}
    assert cases["chaos_mr_t2spir_01"]["fold"] == "1" and cases["chaos_mr_t2spir_02"]["fold"] == "2"
    for subject in SUBJECTS:
        row = cases[f"chaos_mr_t2spir_{subject}"]
        assert 0.0 <= float(row["dice"]) <= 1.0
        assert float(row["ref_ml"]) > 500.0  # the expert mask's volume, read through evaluate
        assert row["quality"].startswith(("ok", "check"))
        assert (out / "out_of_fold" / f"chaos_mr_t2spir_{subject}_image_liver.nii.gz").is_file()
    assert cases["mean"]["quality"].endswith("of 4 flagged")
    for fold in (1, 2):
        assert (out / f"fold_{fold}" / "last.pt").is_file() and (out / f"fold_{fold}" / "finished.json").is_file()

    # a second call without --resume is refused; with --resume it re-uses the trained folds
    assert train(str(four_subjects), "--folds", "2", "-o", str(out), *FAST) == 2
    stamp = (out / "fold_1" / "last.pt").stat().st_mtime_ns
    assert train(str(four_subjects), "--folds", "2", "-o", str(out), "--resume", *FAST) == 0
    assert (out / "fold_1" / "last.pt").stat().st_mtime_ns == stamp


def test_train_refuses_to_replace_an_earlier_run(four_subjects: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    assert train(str(four_subjects), "-o", str(out), *FAST) == 0
    log_before = (out / "log.csv").read_text()
    assert train(str(four_subjects), "-o", str(out), *FAST) == 2
    assert "already holds a training run" in caplog.text and "--overwrite" in caplog.text
    assert (out / "log.csv").read_text() == log_before
    assert train(str(four_subjects), "-o", str(out), "--overwrite", *FAST) == 0
    epochs = [row["epoch"] for row in csv.DictReader((out / "log.csv").open(newline=""))]
    assert epochs == ["1"]
