"""Packed slice files (``rmamamba train DATA --pack-slices FILE.npz``, then ``rmamamba train FILE.npz``) on real data:
the TotalSegmentator MR and CT examples (liver = 5) at 64x64, as in test_train_run.py.

Training from a pack must see exactly the slices that training from the folder sees, and must not need SimpleITK
(a lent GPU machine has none).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_run import FAST, paired_dataset, train

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.training.layouts import find_training_data
from RMAMambaSegmentationLib.training.packed_slices import FORMAT, read_packed_slices
from RMAMambaSegmentationLib.training.slices import build_slice_set

pytestmark = pytest.mark.needs_shared  # every test packs the TotalSegmentator examples

TEACHER = PROJECT_ROOT / "RMAMambaSegmentation" / "RMAMambaSegmentationLib" / "models" / "unet_chaos_t2spir.pt"
#: Two optimizer steps in one epoch, few validation slices: the same run from the folder and from the pack.
STEPS = ["--label", "5", "--slices-per-epoch", "8", "--max-steps", "2", "--epochs", "1", *FAST]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, its packed slices at 64x64 with the MRI preset)."""
    root = tmp_path_factory.mktemp("packed")
    data = paired_dataset(root / "data")
    pack = root / "ts_64.npz"
    assert train(str(data), "--split", str(data / "split.json"), "--pack-slices", str(pack), "-o",
                 str(root / "unused"), *STEPS) == 0
    assert pack.is_file() and not (root / "unused").exists()
    yield data, pack
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)  # checkpoints are large


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_pack_holds_exactly_the_slices_of_the_folder(packed):
    data, pack = packed
    content = read_packed_slices(pack)
    assert content.input_size == (64, 64) and content.intensity == IntensityPreset.mri() and content.label == 5
    assert content.describe()["train_cases"] == ["ts_mr"] and content.describe()["packed_slices"] == pack.name
    splits = find_training_data(data, split_file=data / "split.json")
    for cases, from_pack in zip((splits.train, splits.valid), content.slice_sets()):
        direct = build_slice_set(cases, preset=IntensityPreset.mri(), size=(64, 64), label=5)
        assert from_pack.keys == direct.keys
        assert from_pack.images.dtype == torch.float16 and torch.equal(from_pack.images, direct.images)
        assert from_pack.masks.dtype == torch.uint8 and torch.equal(from_pack.masks, direct.masks)
        assert torch.equal(from_pack.case_index, direct.case_index)


def test_training_from_the_pack_equals_training_from_the_folder(packed, workdir):
    data, pack = packed
    folder_run, pack_run = workdir / "folder", workdir / "pack"
    assert train(str(data), "--split", str(data / "split.json"), "-o", str(folder_run), *STEPS) == 0
    assert train(str(pack), "-o", str(pack_run), *STEPS) == 0
    a, b = _rows(folder_run / "log.csv"), _rows(pack_run / "log.csv")
    for key in ("steps", "train_loss", "valid_loss", "valid_dice", "valid_dice_volume"):
        assert [row[key] for row in a] == [row[key] for row in b], key
    weights_a = torch.load(folder_run / "last.pt", weights_only=True)
    weights_b = torch.load(pack_run / "last.pt", weights_only=True)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
    card = json.loads((pack_run / "last.json").read_text())["training"]["data"]
    assert card["packed_slices"] == pack.name and card["label"] == 5 and card["valid_cases"] == ["ts_ct"]


def test_a_damaged_or_foreign_file_is_a_clear_error(packed, workdir, caplog):
    _, pack = packed
    truncated = workdir / "truncated.npz"
    truncated.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    with pytest.raises(InputFileError, match=r"damaged, truncated or not a \.npz file"):
        read_packed_slices(truncated)
    assert train(str(truncated), "-o", str(workdir / "out"), *STEPS) == 2
    assert "damaged, truncated" in caplog.text and not (workdir / "out" / "last.pt").exists()

    foreign = workdir / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(InputFileError, match="is not a packed slice file"):
        read_packed_slices(foreign)
    with np.load(pack) as content:
        arrays = {name: content[name] for name in content.files}
    meta = json.loads(str(arrays["meta"]))
    other = workdir / "other_version.npz"
    np.savez(other, **{**arrays, "meta": np.array(json.dumps({**meta, "format": "rmamamba-packed-slices/9"}))})
    with pytest.raises(InputFileError, match=f"format 'rmamamba-packed-slices/9', expected '{FORMAT}'"):
        read_packed_slices(other)
    inconsistent = workdir / "inconsistent.npz"
    np.savez(inconsistent, **{**arrays, "train_counts": arrays["train_counts"] + 1})
    with pytest.raises(InputFileError, match="do not describe its 20 slices"):
        read_packed_slices(inconsistent)
    with pytest.raises(InputFileError, match="does not exist"):
        read_packed_slices(workdir / "missing.npz")


def test_a_pack_that_does_not_fit_the_command_is_refused(packed, workdir, caplog):
    _, pack = packed
    out = workdir / "out"
    size = list(STEPS)
    size[size.index("--input-size") + 1] = "96"
    assert train(str(pack), "-o", str(out), *size) == 2
    assert "are 64x64, the run asks for input size 96x96" in caplog.text
    assert train(str(pack), "-o", str(out), "--intensity", "CT", *STEPS) == 2
    assert "normalised with the MRI preset" in caplog.text and "asks for CT" in caplog.text
    assert train(str(pack), "-o", str(out), "--folds", "2", *STEPS) == 2
    assert "is a packed slice file" in caplog.text
    assert not (out / "last.pt").exists()


BLOCKED_RUN = """
import sys


class NoSimpleITK:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "SimpleITK":
            raise ImportError("SimpleITK is blocked: the lent GPU machine has none")
        return None


sys.meta_path.insert(0, NoSimpleITK())
sys.modules.pop("SimpleITK", None)
from RMAMambaSegmentationLib.cli import main

status = main(sys.argv[1:])
assert "SimpleITK" not in sys.modules
sys.exit(status)
"""


def test_training_from_a_pack_needs_no_simpleitk(packed, workdir):
    """The device script's path: the U-Net teacher, feature guidance and the weight average, without SimpleITK."""
    _, pack = packed
    out = workdir / "out"
    library = str(PROJECT_ROOT / "RMAMambaSegmentation")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (library, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-c", BLOCKED_RUN, "train", str(pack), "-o", str(out), "--device", "cpu",
               "--teacher", str(TEACHER), "--guide-weight", "1", "--guide-epochs", "1", "--ema", "0.998",
               "--schedule", "cosine", "--grad-clip", "5", *STEPS]
    result = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(out / "log.csv")
    assert len(rows) == 1 and rows[0]["steps"] == "2"
    assert (out / "last.pt").is_file() and "distilling from 1 teacher" in result.stderr
