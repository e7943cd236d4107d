"""The 2D U-Net baseline: network, registry entry, checkpoint recognition, ``rmamamba train --model unet`` with
resume, inference by name, and the training recipes."""

from __future__ import annotations

import argparse
import shutil

import pytest
import SimpleITK as sitk
import torch
from test_train_run import paired_dataset, read_log, train

from conftest import TOTALSEG
from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.cli import train_command
from RMAMambaSegmentationLib.errors import VariantMismatchError
from RMAMambaSegmentationLib.inference.pipeline import segment_image
from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.network.loss import deep_supervision_loss, dice_bce_loss
from RMAMambaSegmentationLib.network.unet import UNET_WIDTHS, UNet
from RMAMambaSegmentationLib.training.optimisation import cosine_factor
from RMAMambaSegmentationLib.weights.checkpoints import (
    default_weights_path,
    detect_variant,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from RMAMambaSegmentationLib.weights.model_card import read_model_card

FAST = ["--input-size", "64", "--batch-size", "4", "--valid-max-slices", "6", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _expected_parameters() -> int:
    """Parameter count from the architecture's description (conv without bias + BN, transposed conv, 1x1 head)."""
    def block(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out  # two convs, two BNs (weight + bias)

    total, previous = 0, 3
    for width in UNET_WIDTHS:
        total += block(previous, width)
        previous = width
    for coarse, fine in zip(UNET_WIDTHS[:0:-1], UNET_WIDTHS[-2::-1]):
        total += 4 * coarse * fine + fine + block(2 * fine, fine)
    return total + UNET_WIDTHS[0] + 1


def test_build_and_forward_shapes():
    model = build_model("unet")
    assert isinstance(model, UNet) and model.variant.name == "UNET"
    count = sum(p.numel() for p in model.parameters())
    assert count == _expected_parameters() and 1.08e6 < count < 1.10e6
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 96))
    assert logits.shape == (2, 1, 64, 96)
    outputs = model.train()(torch.rand(2, 3, 32, 32))
    assert isinstance(outputs, tuple) and len(outputs) == 1 and outputs[0].shape == (2, 1, 32, 32)
    # One output: the deep-supervision loss is that output's Dice+BCE.
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    assert torch.equal(deep_supervision_loss(outputs, target), dice_bce_loss(outputs[0], target))
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 32, 32))


def test_registry_entry_and_spellings():
    for spelling in ("unet", "U-Net", "u_net", "UNET"):
        assert registry.normalise_variant(spelling) == "UNET"
        assert registry.entry(spelling).key == "UNET"
    entry = registry.entry("unet")
    assert entry.inference == registry.SLICE_2D and entry.channels == 3 and entry.intensity == registry.PRESET_01
    assert entry.window == (256, 256) and not entry.is_volumetric


def test_checkpoint_recognition_and_mismatch_errors(tmp_path):
    unet = build_model("unet")
    path = save_checkpoint(tmp_path / "unet.pt", unet, half=True)
    checkpoint = load_checkpoint(path)
    assert checkpoint.variant == "UNET" and detect_variant(checkpoint.state_dict) == "UNET"
    assert registry.entry(detect_variant(checkpoint.state_dict)).key == "UNET"
    loaded = load_model(path, variant="u-net")
    for key, value in unet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().float() if value.is_floating_point() else value)
    with pytest.raises(VariantMismatchError, match=r"holds U-Net .* weights but RMA-Mamba-T was selected"):
        load_checkpoint(path, variant="T")
    with pytest.raises(VariantMismatchError, match=r"holds RMA-Mamba-T weights but U-Net .* was selected.*not "
                                                   "interchangeable"):
        load_checkpoint(default_weights_path(), variant="unet")


def _namespace(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", "data", "-o", "out", *argv])


def test_recipes_fill_unset_options_only():
    unet = train_command.config_from_args(_namespace("--model", "unet"))
    assert unet.variant == "UNET" and unet.recipe == "scratch"
    assert (unet.optimizer, unet.lr, unet.schedule, unet.min_lr, unet.batch_size, unet.epochs) == (
        "adam", 1e-3, "cosine", 1e-5, 8, 25)
    aug = unet.augmentation
    assert (aug.rotate_p, aug.max_angle_deg, aug.scale_p, aug.max_scale, aug.gamma_p, aug.max_gamma) == (
        0.7, 15.0, 0.7, 1.15, 0.5, 1.5)
    assert aug.hflip_p == aug.vflip_p == aug.dropout_p == 0.0
    rma = train_command.config_from_args(_namespace())
    assert (rma.variant, rma.recipe, rma.optimizer, rma.weight_decay, rma.warmup_epochs) == (
        "T", "scratch", "adamw", 0.05, 1.0)
    paper = train_command.config_from_args(_namespace("--recipe", "paper", "--lr", "3e-4"))
    assert (paper.optimizer, paper.schedule, paper.lr, paper.batch_size, paper.epochs) == (
        "adam", "plateau", 3e-4, 16, 500)
    assert paper.augmentation.max_angle_deg == 35.0 and paper.augmentation.holes == 10
    fine_tune = train_command.config_from_args(_namespace("--init-weights", "w.pt"))
    assert fine_tune.recipe == "paper"
    assert train_command.config_from_args(_namespace("--model", "SRMA")).batch_size == 2


def test_cosine_schedule_factors():
    assert cosine_factor(0, 100, 0, 0.01) == 1.0
    assert cosine_factor(50, 100, 0, 0.01) == pytest.approx(0.505)
    assert cosine_factor(100, 100, 0, 0.01) == pytest.approx(0.01)
    assert cosine_factor(0, 100, 10, 0.01) == pytest.approx(0.01)
    assert cosine_factor(5, 100, 10, 0.01) == pytest.approx(0.505)
    assert cosine_factor(10, 100, 10, 0.01) == 1.0


def test_train_unet_resume_and_segment(tmp_path):
    data = paired_dataset(tmp_path / "data")
    common = [str(data), "--split", str(data / "split.json"), "--label", "5", "--slices-per-epoch", "8",
              "--model", "unet", *FAST]
    straight, first = tmp_path / "straight", tmp_path / "resumed"
    try:
        assert train(*common, "--epochs", "3", "-o", str(straight)) == 0
        # Interrupted after epoch 1 (the cosine schedule spans --epochs, whatever --max-steps), then resumed.
        assert train(*common, "--epochs", "3", "--max-steps", "2", "-o", str(first)) == 0
        assert len(read_log(first / "log.csv")) == 1
        assert train(*common, "--epochs", "3", "-o", str(first), "--resume") == 0
        state = torch.load(first / "training_state.pt", weights_only=True)
        assert state["epoch"] == 3 and state["global_step"] == 6 and state["config"]["schedule"] == "cosine"
        a = torch.load(straight / "last.pt", weights_only=True)
        b = torch.load(first / "last.pt", weights_only=True)
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
        rows = read_log(first / "log.csv")
        assert [row["epoch"] for row in rows] == ["1", "2", "3"]
        # The cosine schedule decays per step from 1e-3 to 1e-5 over the run's 6 steps.
        assert [float(row["lr"]) for row in rows] == pytest.approx(
            [1e-3 * cosine_factor(step, 6, 0, 0.01) for step in (2, 4, 6)])

        card = read_model_card(first / "best.pt")
        assert card is not None and card.variant == "UNET" and card.input_size == (64, 64)
        assert card.training["settings"]["recipe"] == "scratch"
        assert load_model(first / "last.pt").variant.name == "UNET"
        image = sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz"))
        result = segment_image(image, weights=first / "best.pt", device="cpu", batch_size=10)
        assert result.mask.GetSize() == image.GetSize() and result.provenance.variant == "UNET"
        with pytest.raises(VariantMismatchError):
            segment_image(image, weights=first / "best.pt", model="T", device="cpu")
        # Resuming with another schedule is refused.
        assert train(*common, "--epochs", "4", "-o", str(first), "--resume", "--schedule", "plateau") == 2
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
