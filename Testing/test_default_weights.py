"""The shipped weights (the default RMA-Mamba-T and the U-Net baseline) segment real CHAOS T2-SPIR livers:
weights, preprocessing and pipeline fit.

The subject is a validation subject of the committed split (never trained on); the image and its expert mask come
from ``../shared/data``. README's main job (``rmamamba segment`` on the bundled copy of that image) must give the
library's mask voxel for voxel.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, PROJECT_ROOT
from RMAMambaSegmentationLib import load_checkpoint, segment_image
from RMAMambaSegmentationLib.cli import main
from RMAMambaSegmentationLib.evaluation.metrics import overlap_scores
from RMAMambaSegmentationLib.files.overlay import CHECK_RGB
from RMAMambaSegmentationLib.panel.runtime_info import inspect_weights
from RMAMambaSegmentationLib.weights.checkpoints import default_weights_path, file_sha256
from RMAMambaSegmentationLib.weights.location import BUNDLED_WEIGHTS, MODELS_DIR
from RMAMambaSegmentationLib.weights.model_card import read_model_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAOS = DATA / "chaos_mr_t2spir"
VALIDATION_CASE = "chaos_mr_t2spir_20"
EXAMPLE = PROJECT_ROOT / "Resources" / "Example" / f"{VALIDATION_CASE}_image.nii.gz"
MIN_DICE = 0.85


def expert_mask(case: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(CHAOS / "liver_masks" / f"{case}_liver.nii.gz")))


def test_default_weights_ship_with_their_model_card() -> None:
    path = default_weights_path()
    assert path.parent == MODELS_DIR and path.stat().st_size < 70e6
    checkpoint = load_checkpoint(path)
    assert checkpoint.variant == "T"
    card = read_model_card(path)
    assert card is not None and card.variant == "T" and card.intensity.name == "MRI"
    assert tuple(card.input_size) == (256, 256)
    assert (card.modality, card.sequence) == ("MR", "T2-SPIR")  # what the scan checks compare with
    assert "CC BY-NC-SA 4.0" in card.licence and "Not for clinical use" in card.notes
    assert card.provenance["sha256"] == file_sha256(path)
    split = json.loads((MODELS_DIR / "chaos_t2spir_split.json").read_text())
    assert card.training["data"]["train_cases"] == split["train"]
    assert VALIDATION_CASE in card.training["data"]["valid_cases"]
    assert card.training["valid_dice_per_volume_mean"] == pytest.approx(
        np.mean(list(card.training["valid_dice_per_volume"].values())), abs=1e-4)
    status = inspect_weights(None, "T")  # what the Slicer panel shows when no file is chosen
    assert status.ok and "Default" in status.message and "CC BY-NC-SA 4.0" in status.message
    assert "Not for clinical use" in status.message


@pytest.fixture(scope="module")
def library_result():
    image = sitk.ReadImage(str(CHAOS / "images" / f"{VALIDATION_CASE}_image.nii.gz"))
    return image, segment_image(image, device="cpu")


def test_default_weights_segment_a_validation_liver(library_result) -> None:
    image, result = library_result
    assert result.weights_sha256 == file_sha256(default_weights_path())
    assert result.mask.GetSize() == image.GetSize() and result.mask.GetDirection() == image.GetDirection()
    score = overlap_scores(sitk.GetArrayFromImage(result.mask), expert_mask(VALIDATION_CASE))["dice"]
    assert score >= MIN_DICE, f"Dice {score:.3f} on {VALIDATION_CASE}"
    # the scan fits the weights' card and the quality verdict finds nothing to check
    assert result.provenance.warnings == [] and result.provenance.quality.summary() == "ok"


def test_readme_main_job_on_the_bundled_example(tmp_path, library_result) -> None:
    """``rmamamba segment Resources/Example/... -o output``: no --weights, the liver, a .seg.nrrd and an overlay."""
    shared_copy = CHAOS / "images" / EXAMPLE.name
    assert EXAMPLE.read_bytes() == shared_copy.read_bytes()
    out = tmp_path / "output"
    assert main(["segment", str(EXAMPLE), "-o", str(out), "--device", "cpu", "-q"]) == 0
    name = EXAMPLE.name.removesuffix(".nii.gz")
    assert (out / f"{name}.seg.nrrd").stat().st_size > 0
    overlay = sitk.ReadImage(str(out / f"{name}_overlay.png"))
    assert overlay.GetNumberOfComponentsPerPixel() == 3
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_liver.nii.gz")))
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(library_result[1].mask))
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["status"], row["quality"], row["message"]) == ("ok", "ok", "")
    assert row["intensity"].startswith("MRI-tissue")
    assert tuple(sitk.GetArrayFromImage(overlay)[0, 0]) != CHECK_RGB  # no "CHECK QUALITY" frame


def test_unet_weights_ship_with_their_model_card() -> None:
    path = default_weights_path("unet")
    assert path == MODELS_DIR / BUNDLED_WEIGHTS["UNET"] and path.stat().st_size < 5e6
    assert load_checkpoint(path).variant == "UNET"
    card = read_model_card(path)
    assert card is not None and card.variant == "UNET" and all(n % 16 == 0 for n in card.input_size)
    assert card.intensity.name == "MRI" and card.intensity.kind == "tissue"
    assert "CC BY-NC-SA 4.0" in card.licence and "Not for clinical use" in card.notes
    assert card.provenance["sha256"] == file_sha256(path)
    split = json.loads((MODELS_DIR / "chaos_t2spir_split.json").read_text())
    assert card.training["data"]["train_cases"] == split["train"]
    assert card.training["valid_dice_per_volume_mean"] == pytest.approx(
        np.mean(list(card.training["valid_dice_per_volume"].values())), abs=1e-4)
    status = inspect_weights(None, "UNET")  # the Slicer panel with "U-Net (baseline)" and no file chosen
    assert status.ok and status.variant == "UNET" and "Default" in status.message


def test_unet_weights_segment_a_validation_liver(tmp_path) -> None:
    """``rmamamba segment --model unet`` (no --weights): the shipped U-Net finds the same liver at Dice >= 0.85."""
    out = tmp_path / "unet"
    assert main(["segment", str(EXAMPLE), "-o", str(out), "--model", "unet", "--device", "cpu", "-q",
                 "--no-overlay"]) == 0
    name = EXAMPLE.name.removesuffix(".nii.gz")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_liver.nii.gz")))
    score = overlap_scores(mask, expert_mask(VALIDATION_CASE))["dice"]
    assert score >= MIN_DICE, f"U-Net Dice {score:.3f} on {VALIDATION_CASE}"
    image = sitk.ReadImage(str(EXAMPLE))
    result = segment_image(image, model="unet", device="cpu")
    assert result.weights_sha256 == file_sha256(default_weights_path("unet"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask), mask)
