"""``rmamamba train`` end to end on tiny real datasets (TotalSegmentator examples, liver = 5) in each layout.

The real RMA-Mamba-T network is trained at 64x64 for a handful of steps; checkpoints are ~120 MB each, so every
test deletes its output folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TOTALSEG
from RMAMambaSegmentationLib.cli import train_command
from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.evaluation.metrics import overlap_scores
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.inference.pipeline import segment_image
from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.network.loss import deep_supervision_loss
from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.layouts import CaseSource
from RMAMambaSegmentationLib.training.slices import build_slice_set
from RMAMambaSegmentationLib.training.trainer import Trainer
from RMAMambaSegmentationLib.weights.checkpoints import load_model, save_checkpoint
from RMAMambaSegmentationLib.weights.model_card import read_model_card

FAST = ["--input-size", "64", "--batch-size", "4", "--valid-max-slices", "6", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)  # checkpoints are large


def train(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.run(args)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def paired_dataset(root: Path) -> Path:
    """images/ + liver_masks/ named like the CHAOS MR data; a split file."""
    _link(TOTALSEG / "example_mr_sm.nii.gz", root / "images" / "ts_mr_image.nii.gz")
    _link(TOTALSEG / "example_seg_mr.nii.gz", root / "liver_masks" / "ts_mr_liver.nii.gz")
    _link(TOTALSEG / "example_ct_sm.nii.gz", root / "images" / "ts_ct_image.nii.gz")
    _link(TOTALSEG / "example_seg.nii.gz", root / "liver_masks" / "ts_ct_liver.nii.gz")
    (root / "split.json").write_text(json.dumps({"train": ["ts_mr"], "valid": ["ts_ct"]}))
    return root


def cirrmri_dataset(root: Path) -> Path:
    """Cirrhosis_T2_3D/Cirrhosis_T2_3D/{train,valid}_{images,masks}/<id>.nii.gz with binary masks."""
    folder = root / "Cirrhosis_T2_3D" / "Cirrhosis_T2_3D"
    for split, image, labels in (("train", "example_mr_sm", "example_seg_mr"), ("valid", "example_ct_sm",
                                                                                   "example_seg")):
        _link(TOTALSEG / f"{image}.nii.gz", folder / f"{split}_images" / "7.nii.gz")
        mask = sitk.ReadImage(str(TOTALSEG / f"{labels}.nii.gz")) == 5
        (folder / f"{split}_masks").mkdir(parents=True)
        sitk.WriteImage(mask, str(folder / f"{split}_masks" / "7.nii.gz"))
    return root / "Cirrhosis_T2_3D"


def png_dataset(root: Path) -> Path:
    """{train,valid}/<case>/{images,masks}/*.png from the MR example (8-bit, liver 255)."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_seg_mr.nii.gz")))
    grey = np.round(255 * (image - image.min()) / (image.max() - image.min())).astype(np.uint8)
    for split, case, slices in (("train", "21", range(0, 12)), ("valid", "40", range(12, 16))):
        for folder in ("images", "masks"):
            (root / split / case / folder).mkdir(parents=True)
        for index in slices:
            sitk.WriteImage(sitk.GetImageFromArray(grey[index]), str(root / split / case / "images" / f"{index}.png"))
            mask = np.where(labels[index] == 5, 255, 0).astype(np.uint8)
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / split / case / "masks" / f"{index}.png"))
    return root


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    case = CaseSource("mr", TOTALSEG / "example_mr_sm.nii.gz", TOTALSEG / "example_seg_mr.nii.gz")
    slices = build_slice_set([case], preset=IntensityPreset.mri(), size=(64, 64), label=5)
    images, targets = slices.batch([4, 8, 12, 16])
    model = build_model("T").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(8):
        loss = deep_supervision_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    # Measured on this batch: 6.17 -> 5.55 in 8 steps (the first step may go up while BatchNorm settles).
    assert losses[-1] < 0.95 * losses[0], losses
    assert losses[-1] < min(losses[:4]) and losses[-1] <= min(losses), losses


def test_train_resume_and_segment(workdir):
    data = paired_dataset(workdir / "data")
    # The paper's plateau schedule: a 1-epoch run resumed to 2 epochs equals a 2-epoch run (a cosine schedule spans
    # --epochs, so there the interrupted run must be given the same --epochs: test_unet.py).
    common = [str(data), "--split", str(data / "split.json"), "--label", "5", "--slices-per-epoch", "8",
              "--recipe", "paper", *FAST]
    straight, first = workdir / "straight", workdir / "resumed"
    assert train(*common, "--epochs", "2", "-o", str(straight)) == 0
    assert train(*common, "--epochs", "1", "-o", str(first)) == 0
    state = torch.load(first / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 2
    assert train(*common, "--epochs", "2", "-o", str(first), "--resume") == 0

    # Resuming continues the epoch count, the optimizer state and the random streams: same weights as straight.
    resumed_state = torch.load(first / "training_state.pt", weights_only=True)
    assert resumed_state["epoch"] == 2 and resumed_state["global_step"] == 4
    adam_steps = {float(s["step"]) for s in resumed_state["optimizer"]["state"].values()}
    assert adam_steps == {4.0}
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(first / "last.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    log_a, log_b = read_log(straight / "log.csv"), read_log(first / "log.csv")
    assert [row["epoch"] for row in log_b] == ["1", "2"]
    assert float(log_b[1]["valid_loss"]) == pytest.approx(float(log_a[1]["valid_loss"]), rel=1e-4)

    # Checkpoints load through the library with their model cards and segment a volume.
    card = read_model_card(first / "best.pt")
    assert card is not None and card.variant == "T" and card.input_size == (64, 64)
    assert card.intensity == IntensityPreset.mri() and card.training["data"]["label"] == 5
    assert card.training["data"]["train_cases"] == ["ts_mr"] and card.training["epoch"] in (1, 2)
    model = load_model(first / "last.pt")
    assert model.variant.name == "T" and not model.training
    image = sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz"))
    result = segment_image(image, weights=first / "best.pt", device="cpu", batch_size=10)
    assert result.mask.GetSize() == image.GetSize() and result.provenance.variant == "T"
    assert result.provenance.weights_path == str(first / "best.pt")


def test_train_cirrmri3d_layout_with_max_steps(workdir):
    data = cirrmri_dataset(workdir / "data")
    out = workdir / "out"
    assert train(str(data), "-o", str(out), "--max-steps", "1", "--epochs", "5", *FAST) == 0
    rows = read_log(out / "log.csv")
    assert len(rows) == 1 and rows[0]["steps"] == "1"
    card = json.loads((out / "last.json").read_text())
    assert card["training"]["data"]["layout"] == "cirrmri3d" and card["training"]["data"]["split"] == "folders"
    assert load_model(out / "best.pt").variant.name == "T"
    # Resuming a finished run (max steps reached) does nothing more; a missing state is a clear error.
    assert train(str(data), "-o", str(out), "--max-steps", "1", "--resume", *FAST) == 0
    assert len(read_log(out / "log.csv")) == 1


def test_resume_refuses_a_different_selection_metric(workdir, caplog):
    """best.pt was picked by per-slice Dice: resuming with --select-by volume would compare unlike scores."""
    data = cirrmri_dataset(workdir / "data")
    out = workdir / "out"
    assert train(str(data), "-o", str(out), "--max-steps", "1", "--epochs", "2", *FAST) == 0
    before = (out / "log.csv").read_bytes()
    assert train(str(data), "-o", str(out), "--epochs", "2", "--resume", "--select-by", "volume", *FAST) == 2
    assert "trained with select_by 'slice', this run asks for 'volume'" in caplog.text
    assert (out / "log.csv").read_bytes() == before


def test_resume_without_a_state_is_an_error(workdir, caplog):
    data = cirrmri_dataset(workdir / "data")
    assert train(str(data), "-o", str(workdir / "out"), "--resume-from", str(workdir / "none"), *FAST) == 2
    assert "nothing to resume" in caplog.text


def test_train_png2d_layout(workdir):
    data = png_dataset(workdir / "data")
    out = workdir / "out"
    assert train(str(data), "-o", str(out), "--epochs", "1", "--keep-every", "1", *FAST) == 0
    rows = read_log(out / "log.csv")
    assert len(rows) == 1 and rows[0]["steps"] == "3"  # 12 slices, batch 4
    assert (out / "epoch_0001.pt").is_file() and (out / "epoch_0001.json").is_file()
    card = read_model_card(out / "last.pt")
    assert card is not None and "divided by 255" in card.notes
    assert card.training["data"]["n_valid_slices"] == 4


def test_bad_data_exits_with_an_error_and_writes_nothing(workdir, caplog):
    (workdir / "images").mkdir()
    (workdir / "images" / "a_image.nii.gz").write_bytes(b"")
    (workdir / "masks").mkdir()
    out = workdir / "out"
    assert train(str(workdir), "-o", str(out), *FAST) == 2
    assert "without a mask" in caplog.text
    assert not out.exists()
    assert train(str(workdir), "-o", str(out), "--resume", *FAST, "--input-size", "16") == 2
    assert "too small" in caplog.text


def test_encoder_from_vmamba_checkpoint_and_fine_tuning_init(workdir):
    case = CaseSource("mr", TOTALSEG / "example_mr_sm.nii.gz", TOTALSEG / "example_seg_mr.nii.gz")
    slices = build_slice_set([case], preset=IntensityPreset.mri(), size=(64, 64), label=5)
    torch.manual_seed(123)
    donor = build_model("T")
    # An ImageNet-style VMamba file: {"model": encoder weights + a classifier head}.
    backbone = {**donor.encoder.state_dict(), "classifier.head.weight": torch.zeros(1000, 768)}
    torch.save({"model": backbone}, workdir / "vssm_tiny.pth")
    trainer = Trainer(TrainConfig(input_size=(64, 64), pretrained=str(workdir / "vssm_tiny.pth")), slices, slices,
                      workdir / "out")
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[f"encoder.{k}"], v) for k, v in donor.encoder.state_dict().items())
    assert not torch.equal(loaded["out_conv1.weight"], donor.state_dict()["out_conv1.weight"])  # decoder: fresh

    save_checkpoint(workdir / "start.pt", donor)
    tuned = Trainer(TrainConfig(input_size=(64, 64), init_weights=str(workdir / "start.pt")), slices, slices,
                    workdir / "out")
    assert all(torch.equal(tuned.model.state_dict()[k], v) for k, v in donor.state_dict().items())


def test_bf16_autocast_on_cpu_when_asked(workdir):
    """``--amp bf16`` runs the CPU forward pass in bfloat16 (float32 master weights); ``auto`` stays float32."""
    data = cirrmri_dataset(workdir / "data")
    weights, logs = {}, {}
    for amp in ("auto", "bf16"):
        out = workdir / amp
        assert train(str(data), "-o", str(out), "--max-steps", "2", "--epochs", "1", "--seed", "3", "--amp", amp,
                     *FAST) == 0
        weights[amp] = torch.load(out / "last.pt", weights_only=True)
        logs[amp] = read_log(out / "log.csv")[0]
    floats = [key for key, value in weights["bf16"].items() if value.is_floating_point()]
    assert all(weights["bf16"][key].dtype == torch.float32 for key in floats)
    assert any(not torch.equal(weights["bf16"][key], weights["auto"][key]) for key in floats)  # bf16 did run
    for column in ("train_loss", "valid_loss"):  # the same two steps from the same start, to bf16 precision
        assert float(logs["bf16"][column]) == pytest.approx(float(logs["auto"][column]), rel=0.03), column


def test_per_volume_validation_dice_and_selection_by_it(workdir):
    """``valid_dice_volume`` is each validation case's Dice over its own slices (what ``evaluate`` scores, at network
    size), averaged over cases; ``select_by="volume"`` picks best.pt by it."""
    cases = {name: CaseSource(name, TOTALSEG / f"example_{name}_sm.nii.gz", TOTALSEG / f"example_seg{suffix}.nii.gz")
             for name, suffix in (("mr", "_mr"), ("ct", ""))}
    preset, size = IntensityPreset.mri(), (64, 64)
    train_set = build_slice_set([cases["mr"]], preset=preset, size=size, label=5)
    valid_set = build_slice_set(list(cases.values()), preset=preset, size=size, label=5)
    config = TrainConfig(input_size=size, batch_size=4, epochs=2, slices_per_epoch=8, seed=5, select_by="volume")
    trainer = Trainer(config, train_set, valid_set, workdir / "out")
    result = trainer.fit()

    scores = trainer.validate()
    with torch.no_grad():
        for index, key in enumerate(valid_set.keys):
            images, targets = valid_set.batch((valid_set.case_index == index).nonzero().flatten())
            prediction = torch.sigmoid(trainer.model.forward_all(images)[0]) > 0.5
            expected = overlap_scores(prediction.numpy(), (targets > 0.5).numpy())["dice"]
            assert scores["valid_dice_per_volume"][key] == pytest.approx(expected, abs=1e-9), key
    assert scores["valid_dice_volume"] == pytest.approx(np.mean(list(scores["valid_dice_per_volume"].values())))

    rows = read_log(workdir / "out" / "log.csv")
    volume_dice = [float(row["valid_dice_volume"]) for row in rows]
    assert result.best_epoch == 1 + int(np.argmax(volume_dice))
    assert result.best_dice == pytest.approx(max(volume_dice), rel=1e-5)
    card = read_model_card(workdir / "out" / "best.pt")
    assert card.training["epoch"] == result.best_epoch and card.training["settings"]["select_by"] == "volume"
    assert set(card.training["valid_dice_per_volume"]) == {"mr", "ct"}
    assert card.training["valid_dice_volume"] == pytest.approx(max(volume_dice), rel=1e-5)


def test_context_slices_run_trains_validates_and_segments_with_neighbours(workdir):
    """A 2.5D run (``context_slices`` 1) validates on neighbour-stacked slices, writes the setting into its model
    card, and ``segment_image`` then feeds the neighbours too."""
    case = CaseSource("mr", TOTALSEG / "example_mr_sm.nii.gz", TOTALSEG / "example_seg_mr.nii.gz")
    size = (64, 64)
    slices = build_slice_set([case], preset=IntensityPreset.mri(), size=size, label=5)
    config = TrainConfig(input_size=size, batch_size=4, epochs=1, slices_per_epoch=8, seed=3, context_slices=1)
    trainer = Trainer(config, slices, slices, workdir / "ctx")
    trainer.fit()
    scores = trainer.validate()
    with torch.no_grad():
        images, targets = slices.batch(torch.arange(len(slices)), context_slices=1)
        prediction = torch.sigmoid(trainer.model.forward_all(images)[0]) > 0.5
    expected = overlap_scores(prediction.numpy(), (targets > 0.5).numpy())["dice"]
    assert scores["valid_dice_per_volume"]["mr"] == pytest.approx(expected, abs=1e-9)
    card = read_model_card(workdir / "ctx" / "best.pt")
    assert card.context_slices == 1 and card.training["settings"]["context_slices"] == 1
    result = segment_image(sitk.ReadImage(str(case.image)), weights=workdir / "ctx" / "best.pt", device="cpu")
    assert result.provenance.context_slices == 1
    with pytest.raises(ValueError, match="context_slices"):
        TrainConfig(context_slices=2)
    with pytest.raises(CheckpointError, match="context_slices"):
        Trainer(TrainConfig(input_size=size, epochs=2), slices, slices, workdir / "ctx0").resume(workdir / "ctx")
