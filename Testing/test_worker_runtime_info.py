"""What the panel shows about weights and devices (runtime_info), on real files."""

from __future__ import annotations

import pytest
import torch

from RMAMambaSegmentationLib.panel.runtime_info import (
    describe_device,
    inspect_weights,
    mamba_ssm_available,
    torch_available,
)
from RMAMambaSegmentationLib.runtime.devices import device_from_choice


@pytest.fixture(scope="module")
def s_weights(tmp_path_factory):
    """RMA-Mamba-S with seeded random weights, stored in float16."""
    from RMAMambaSegmentationLib.network.build import build_model
    from RMAMambaSegmentationLib.weights.checkpoints import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "rmamamba_s.pt"
    save_checkpoint(path, build_model("S"), half=True)
    return path


def test_good_weights_show_their_variant(s_weights):
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256

    status = inspect_weights(s_weights)
    assert status.ok and status.variant == "S"
    assert status.sha256 == file_sha256(s_weights)
    assert status.message.startswith("RMA-Mamba-S weights")
    assert inspect_weights(s_weights, "S").ok


def test_mismatched_missing_and_corrupt_weights(s_weights, tmp_path, monkeypatch):
    mismatch = inspect_weights(s_weights, "T")
    assert not mismatch.ok and mismatch.message.startswith("Variant mismatch") and "RMA-Mamba-S" in mismatch.message

    missing = inspect_weights(tmp_path / "nothing.pt")
    assert not missing.ok and missing.message.startswith("Weights missing")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(s_weights.read_bytes()[:4096])
    broken = inspect_weights(corrupt)
    assert not broken.ok and broken.message.startswith("Unusable weights")

    not_rma = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, not_rma)
    assert inspect_weights(not_rma).message.startswith("Unusable weights")

    import RMAMambaSegmentationLib.weights.location as weights_location

    monkeypatch.setattr(weights_location, "MODELS_DIR", tmp_path / "no_models")
    default = inspect_weights(None)
    assert not default.ok and "no default weights" in default.message


def test_devices():
    assert device_from_choice("GPU") == "cuda"
    assert device_from_choice(None) == "auto"
    assert device_from_choice(" CPU ") == "cpu"
    assert describe_device("cpu").startswith("CPU")
    if torch.cuda.is_available():
        assert describe_device("auto").startswith("GPU ")
    else:
        assert describe_device("auto").startswith("CPU")
        assert "none is usable" in describe_device("cuda")
    assert torch_available()


def test_mamba_ssm_is_detected_without_importing_it(tmp_path, monkeypatch):
    """Absent here (the pure-PyTorch scan is used); a package of that name on the path is found, not imported."""
    import importlib
    import sys

    if importlib.util.find_spec("mamba_ssm") is None:
        assert mamba_ssm_available() is False
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert mamba_ssm_available() is True
    assert "mamba_ssm" not in sys.modules


def test_panel_weights_label_reads_only_the_card(s_weights, tmp_path):
    """describe_weights_file: variant and licence from the model card, mismatch and missing files said plainly,
    the result cached until the file or its card changes."""
    import os
    import shutil

    from RMAMambaSegmentationLib.panel.runtime_info import describe_weights_file
    from RMAMambaSegmentationLib.weights.model_card import ModelCard, model_card_path, write_model_card

    weights = tmp_path / "mine.pt"
    shutil.copy(s_weights, weights)
    no_card = describe_weights_file(weights, "S")
    assert no_card.ok and "no model card" in no_card.message
    write_model_card(weights, ModelCard(variant="S", licence="CC BY 4.0"))
    os.utime(model_card_path(weights), ns=(1, 1))  # a different card mtime than any earlier one
    status = describe_weights_file(weights, "S")
    assert status.ok and status.variant == "S" and status.message == "RMA-Mamba-S weights (mine.pt); licence: CC BY 4.0"
    assert describe_weights_file(weights, "S") is status  # cached
    mismatch = describe_weights_file(weights, "T")
    assert not mismatch.ok
    assert mismatch.message.startswith("Variant mismatch: the model card of mine.pt says RMA-Mamba-S")
    write_model_card(weights, ModelCard(variant="T"))
    os.utime(model_card_path(weights), ns=(2, 2))
    assert describe_weights_file(weights, "T").ok  # the new card is read
    missing = describe_weights_file(tmp_path / "gone.pt", "T")
    assert not missing.ok and missing.message.startswith("Weights missing: weights file not found")
    (tmp_path / "bad.pt").write_bytes(b"x")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert describe_weights_file(tmp_path / "bad.pt").message.startswith("Unusable weights: model card")


def test_default_weights_are_named_with_their_licence(s_weights, tmp_path, monkeypatch):
    """With weights installed as the default and a model card beside them, the panel names both."""
    import shutil

    import RMAMambaSegmentationLib.weights.location as weights_location
    from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

    installed = tmp_path / "models" / weights_location.DEFAULT_WEIGHTS_NAME
    installed.parent.mkdir()
    shutil.copy(s_weights, installed)
    write_model_card(installed, ModelCard(variant="S", licence="CC BY-NC-SA 4.0"))
    monkeypatch.setattr(weights_location, "MODELS_DIR", installed.parent)
    status = inspect_weights(None)
    assert status.ok and status.path == str(installed)
    assert status.message.startswith("Default RMA-Mamba-S weights")
    assert status.message.endswith("licence: CC BY-NC-SA 4.0")


def test_no_weights_file_means_the_weights_shipped_for_that_model():
    """Issue 30 item 4: an empty path with the U-Net chosen describes the shipped U-Net weights (it showed the
    default RMA-Mamba-T file, in red, as a "Variant mismatch"); a model shipped without weights says so."""
    from RMAMambaSegmentationLib.panel.runtime_info import describe_weights_file
    from RMAMambaSegmentationLib.weights.location import BUNDLED_WEIGHTS, MODELS_DIR

    unet = describe_weights_file(None, "UNET")
    assert unet.ok and unet.variant == "UNET" and unet.path == str(MODELS_DIR / BUNDLED_WEIGHTS["UNET"])
    assert unet.message.startswith("Default U-Net (2D baseline) weights (unet_chaos_t2spir.pt). 2D U-Net baseline")
    assert "licence: CC BY-NC-SA 4.0" in unet.message
    assert describe_weights_file("", "U-Net (2D baseline)").path == unet.path
    default = describe_weights_file(None, "T")
    assert default.ok and default.variant == "T" and default.path == str(MODELS_DIR / BUNDLED_WEIGHTS["T"])
    assert describe_weights_file(None).path == default.path
    for variant, label in (("S", "RMA-Mamba-S"), ("SRMA", "SRMA-Mamba")):
        status = describe_weights_file(None, variant)
        assert not status.ok and status.message == f"No weights are shipped for {label}: choose its weights file"
