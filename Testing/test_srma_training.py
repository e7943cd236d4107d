"""``rmamamba train --model SRMA`` on tiny 3D crops of real CHAOS MR volumes: steps, checkpoints with a 3D model card,
resume equal to a straight run, and the trained weights segmenting through the registry's 3D path."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATA
from RMAMambaSegmentationLib.cli import train_command
from RMAMambaSegmentationLib.inference.pipeline import segment_image
from RMAMambaSegmentationLib.training.layouts import CaseSource
from RMAMambaSegmentationLib.training.volume_set import build_volume_set
from RMAMambaSegmentationLib.weights.checkpoints import load_model
from RMAMambaSegmentationLib.weights.model_card import read_model_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHAOS = DATA / "chaos_mr_t2spir"
CASES = ("01", "02", "19")  # two to train, one to validate
FAST = ["--model", "SRMA", "--crop-size", "32", "32", "16", "--batch-size", "2", "--no-progress", "--seed", "3"]


def train(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.run(args)


def small_dataset(root: Path) -> Path:
    """images/ + liver_masks/ with 64 x 48 x 24 crops around the liver of three CHAOS cases; a split file."""
    for case in CASES:
        image = sitk.ReadImage(str(CHAOS / "images" / f"chaos_mr_t2spir_{case}_image.nii.gz"))
        mask = sitk.ReadImage(str(CHAOS / "liver_masks" / f"chaos_mr_t2spir_{case}_liver.nii.gz"))
        box = (slice(64, 128), slice(100, 148), slice(6, 30))
        for folder, volume in (("images", image), ("liver_masks", mask)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(volume[box], str(root / folder / f"c{case}.nii.gz"))
    split = {"train": [f"c{c}" for c in CASES[:2]], "valid": [f"c{CASES[2]}"]}
    (root / "split.json").write_text(json.dumps(split))
    return root


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)  # checkpoints are large


def test_crops_are_balanced_flipped_and_zscored(tmp_path) -> None:
    data = small_dataset(tmp_path / "data")
    cases = [CaseSource(f"c{c}", data / "images" / f"c{c}.nii.gz", data / "liver_masks" / f"c{c}.nii.gz")
             for c in CASES]
    volumes = build_volume_set(cases)
    assert volumes.cases[0].image.shape == (64, 48, 24)  # network axes (i, j, k) of an (almost) axial volume
    generator = torch.Generator().manual_seed(0)
    x, y = volumes.crops([0, 1, 2] * 4, (32, 32, 16), generator, foreground_p=1.0, augment=False)
    assert x.shape == y.shape == (12, 1, 32, 32, 16)
    assert bool((y.flatten(1).amax(1) == 1).all())  # every foreground-centred crop holds liver
    for patch in x[:, 0]:
        values = patch[patch != 0].double()
        assert abs(float(values.mean())) < 1e-4 and abs(float(values.std(unbiased=False)) - 1) < 1e-3


def test_train_resume_and_segment(workdir) -> None:
    data = small_dataset(workdir / "data")
    common = [str(data), "--split", str(data / "split.json"), *FAST]
    straight, resumed = workdir / "straight", workdir / "resumed"
    assert train(*common, "--epochs", "2", "-o", str(straight)) == 0
    assert train(*common, "--epochs", "1", "-o", str(resumed)) == 0
    assert train(*common, "--epochs", "2", "-o", str(resumed), "--resume") == 0
    state = torch.load(resumed / "training_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 2
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert len(a) == 484 and a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key

    card = read_model_card(resumed / "best.pt")
    assert card is not None and card.variant == "SRMA" and card.inference == "window-3d"
    assert card.window == (32, 32, 16) and card.overlap == 0.25
    assert card.training["data"]["n_train_volumes"] == 2
    log = (resumed / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header and two epochs
    model = load_model(resumed / "last.pt")
    assert model.variant.name == "SRMA" and not model.training

    image = sitk.ReadImage(str(data / "images" / "c19.nii.gz"))
    result = segment_image(image, weights=resumed / "best.pt", device="cpu")
    assert result.mask.GetSize() == image.GetSize() and result.provenance.variant == "SRMA"
    assert np.isfinite(sitk.GetArrayViewFromImage(result.probability)).all()


def test_srma_refuses_2d_only_options(workdir, caplog) -> None:
    data = small_dataset(workdir / "data")
    assert train(str(data), "--split", str(data / "split.json"), "-o", str(workdir / "out"), *FAST,
                 "--pretrained", str(data / "split.json")) == 2
    assert "SRMA-Mamba has none" in caplog.text
    assert train(str(data), "--split", str(data / "split.json"), "-o", str(workdir / "out"), "--model", "SRMA",
                 "--crop-size", "30", "32", "16") == 2
    assert "multiples of 16" in caplog.text
