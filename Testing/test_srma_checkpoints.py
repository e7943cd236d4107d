"""SRMA-Mamba checkpoints: recognised in the usual wrappers, loaded strictly, refused clearly for a 2D model."""

from __future__ import annotations

import pytest
import torch

from RMAMambaSegmentationLib import build_model, load_checkpoint, load_model, registry
from RMAMambaSegmentationLib.errors import CheckpointError, VariantMismatchError
from RMAMambaSegmentationLib.network.srma_mamba import SRMAMamba
from RMAMambaSegmentationLib.weights.checkpoints import detect_variant, save_checkpoint


def shape_only_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """Right keys and shapes at almost no storage cost (stride-0 views of one number)."""
    with torch.device("meta"):
        skeleton = build_model(variant).state_dict()
    return {key: torch.zeros((), dtype=value.dtype).expand(value.shape) for key, value in skeleton.items()}


def test_round_trip_gives_the_same_network(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("SRMA").eval()
    path = save_checkpoint(tmp_path / "srma.pth", model)
    checkpoint = load_checkpoint(path)
    assert checkpoint.variant == "SRMA"
    loaded = load_model(path)
    assert isinstance(loaded, SRMAMamba) and not loaded.training
    x = torch.randn(1, 1, 16, 32, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_model(path, variant="srma-mamba").variant.name == "SRMA"


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 7},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {"model_state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "optimizer": {}},
])
def test_usual_wrappers_are_recognised(tmp_path, wrap) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(shape_only_state_dict("SRMA")), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.variant == "SRMA"
    assert len(checkpoint.state_dict) == 484


def test_srma_weights_for_a_2d_model_are_refused_clearly(tmp_path) -> None:
    path = tmp_path / "srma.pth"
    torch.save(shape_only_state_dict("SRMA"), path)
    message = r"SRMA-Mamba \(3D\) weights but RMA-Mamba-[TS] was.*2D slice.*not interchangeable"
    for asked in ("T", "S"):
        with pytest.raises(VariantMismatchError, match=message):
            load_checkpoint(path, variant=asked)


def test_2d_weights_for_srma_are_refused_clearly(tmp_path) -> None:
    path = tmp_path / "t.pth"
    torch.save({"state_dict": shape_only_state_dict("T")}, path)
    message = r"RMA-Mamba-T weights but SRMA-Mamba \(3D\) was selected.*3D volume model"
    with pytest.raises(VariantMismatchError, match=message):
        load_checkpoint(path, variant="SRMA")


def test_incomplete_srma_file_names_the_problem(tmp_path) -> None:
    state = shape_only_state_dict("SRMA")
    del state["attention2.ra_conv2.conv.conv.bias"]
    state["encoder.outnorm0.weight"] = torch.zeros(7)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"does not fit SRMA-Mamba \(3D\): 1 missing keys.*ra_conv2.*wrong shape"):
        load_checkpoint(path)


def test_detect_variant_tells_the_family_apart() -> None:
    assert detect_variant(shape_only_state_dict("SRMA")) == "SRMA"
    assert registry.entry(detect_variant(shape_only_state_dict("SRMA"))).inference == registry.WINDOW_3D
    assert registry.entry(detect_variant(shape_only_state_dict("S"))).inference == registry.SLICE_2D
    assert detect_variant(shape_only_state_dict("T")) == "T"
    assert detect_variant(shape_only_state_dict("S")) == "S"
