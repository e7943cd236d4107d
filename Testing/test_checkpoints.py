"""Checkpoints: wrappers and prefixes, variant detection, safe loading and specific errors."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch

from RMAMambaSegmentationLib import build_model, load_checkpoint, load_model
from RMAMambaSegmentationLib.errors import CheckpointError, VariantMismatchError, WeightsNotFoundError
from RMAMambaSegmentationLib.weights import location as weights_location
from RMAMambaSegmentationLib.weights.checkpoints import (
    default_weights_path,
    file_sha256,
    load_vmamba_backbone,
    save_checkpoint,
)
from RMAMambaSegmentationLib.weights.location import DEFAULT_WEIGHTS_NAME, MODELS_DIR


def shape_only_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """Right keys and shapes at almost no storage cost (stride-0 views of one number)."""
    with torch.device("meta"):
        skeleton = build_model(variant).state_dict()
    return {key: torch.zeros((), dtype=value.dtype).expand(value.shape) for key, value in skeleton.items()}


@pytest.fixture(scope="module")
def t_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("T").eval()


@pytest.fixture(scope="module")
def t_file(tmp_path_factory, t_model) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "t.pt", t_model)


def test_round_trip_gives_the_same_network(t_model, t_file) -> None:
    checkpoint = load_checkpoint(t_file)
    assert checkpoint.variant == "T"
    assert checkpoint.sha256 == file_sha256(t_file)
    torch.manual_seed(5)  # load_model builds its network with other random weights than t_model's seed 0
    loaded = load_model(t_file)
    assert not loaded.training
    assert loaded.weights_sha256 == checkpoint.sha256
    x = torch.rand(1, 3, 64, 64)
    torch.manual_seed(5)
    unloaded = build_model("T").eval()
    with torch.no_grad():
        expected = t_model(x)
        assert not torch.allclose(unloaded(x), expected), "an unloaded network must differ, or this proves nothing"
        assert torch.equal(loaded(x), expected)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd, "epoch": 7},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"model_state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "optimizer": {}},
        lambda sd: {"checkpoint": 1, "model": {"model": sd}},
    ],
    ids=["model", "state_dict+module", "compiled", "nested"],
)
def test_usual_wrappers_are_unwrapped(tmp_path, t_model, wrap) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(t_model.state_dict()), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.variant == "T"
    for key, value in t_model.state_dict().items():
        assert torch.equal(checkpoint.state_dict[key], value), key


def test_variant_is_detected_and_mismatch_is_refused(tmp_path, t_file) -> None:
    s_path = tmp_path / "s.pt"
    torch.save(shape_only_state_dict("S"), s_path)
    assert load_checkpoint(s_path).variant == "S"
    with pytest.raises(VariantMismatchError, match="holds RMA-Mamba-T weights but RMA-Mamba-S was selected"):
        load_model(t_file, variant="S")
    with pytest.raises(VariantMismatchError, match="RMA-Mamba-S weights"):
        load_checkpoint(s_path, variant="T")


def test_half_precision_file_loads_as_float32(tmp_path, t_model) -> None:
    path = save_checkpoint(tmp_path / "half.pt", t_model, half=True)
    assert path.stat().st_size < 0.6 * 4 * sum(p.numel() for p in t_model.parameters())
    model = load_model(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), t_model(x), atol=5e-2)


def test_saved_files_are_readable_like_ordinary_files(tmp_path, t_model) -> None:
    """Weights and training states follow the umask (the temporary file behind the atomic write is private)."""
    import os
    import stat

    from RMAMambaSegmentationLib.training.state import save_training_state

    previous = os.umask(0o022)
    try:
        weights = save_checkpoint(tmp_path / "shared" / "t.pt", t_model, half=True)
        state = save_training_state(tmp_path / "shared" / "training_state.pt", {"epoch": 1})
    finally:
        os.umask(previous)
    for path in (weights, state):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in weights.parent.iterdir()) == ["t.pt", "training_state.pt"]  # no temporary left


def test_missing_file() -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_checkpoint("no/such/weights.pt")


@pytest.mark.parametrize(("content", "kind"), [(b"", "empty"), (b"not a checkpoint at all" * 10, "a text file"),
                                             (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image")],
                         ids=["empty", "text", "png"])
def test_file_that_is_not_a_checkpoint(tmp_path, content: bytes, kind: str) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"is not a PyTorch checkpoint: it is {kind}"):
        load_checkpoint(path)


def test_truncated_file(tmp_path, t_file) -> None:
    path = tmp_path / "truncated.pt"
    path.write_bytes(t_file.read_bytes()[: t_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path, t_model) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"model": t_model.state_dict(), "created": datetime.datetime(2025, 1, 1)}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)


def test_other_networks_are_not_rma_mamba(tmp_path) -> None:
    path = tmp_path / "unet.pt"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match="is not an RMA-Mamba checkpoint"):
        load_checkpoint(path)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path, t_model) -> None:
    state = dict(t_model.state_dict())
    del state["attention1.ra_conv3.weight"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["out_conv1.weight"] = torch.zeros(1, 16, 1, 1)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert "1 missing keys (e.g. attention1.ra_conv3.weight)" in message
    assert "1 unexpected keys (e.g. decoder.extra.weight)" in message
    assert "out_conv1.weight (1, 16, 1, 1) (expected (1, 32, 1, 1))" in message


def test_the_shipped_default_weights_are_found() -> None:
    path = default_weights_path()
    assert path == MODELS_DIR / DEFAULT_WEIGHTS_NAME and path.is_file()
    assert load_checkpoint(path).variant == "T"


def test_missing_default_weights_are_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(weights_location, "MODELS_DIR", tmp_path)
    with pytest.raises(WeightsNotFoundError, match=r"no default weights are installed \(.*\); give a weights file"):
        default_weights_path()


def vmamba_style_checkpoint(model: torch.nn.Module) -> dict:
    """A VMamba ImageNet checkpoint as the official repository writes it: legacy names, classifier, wrapper."""
    legacy = {}
    for key, value in model.encoder.state_dict().items():
        if key.startswith("outnorm"):
            continue  # RMA-Mamba's own layers, not in the ImageNet backbone
        key = key.replace("patch_embed.0.", "patch_embed.proj.").replace(".op.", ".self_attention.")
        legacy[key] = value.clone()
    legacy["classifier.head.weight"] = torch.zeros(1000, 768)
    return {"model": legacy, "epoch": 299}


def test_encoder_initialised_from_vmamba_backbone(tmp_path, t_model) -> None:
    path = tmp_path / "vssm_tiny.pth"
    torch.save(vmamba_style_checkpoint(t_model), path)
    fresh = build_model("T")
    counts = load_vmamba_backbone(fresh, path)
    assert counts["ignored"] == 1 and counts["kept_initial"] == 8
    for key, value in t_model.encoder.state_dict().items():
        if not key.startswith("outnorm"):
            assert torch.equal(fresh.encoder.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="VMamba backbone"):
        load_checkpoint(path)


def test_backbone_loader_refuses_whole_models(t_file) -> None:
    with pytest.raises(CheckpointError, match="whole RMA-Mamba checkpoint"):
        load_vmamba_backbone(build_model("T"), t_file)
