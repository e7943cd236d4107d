"""The network's state-dict layout equals the specification's listing, key for key and shape for shape."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SPEC
from RMAMambaSegmentationLib import build_model
from RMAMambaSegmentationLib.network.decoder import upsample_to


def _spec_entries(variant: str) -> dict:
    with open(SPEC / f"rma_mamba_{variant.lower()}_state_dict.json") as handle:
        return json.load(handle)


@pytest.mark.parametrize("variant", ["T", "S"])
def test_keys_shapes_and_order_match_the_spec(variant: str) -> None:
    spec = _spec_entries(variant)
    with torch.device("meta"):
        model = build_model(variant)
    state = model.state_dict()
    ours = [(key, list(tensor.shape)) for key, tensor in state.items()]
    expected = [(entry["key"], entry["shape"]) for entry in spec["entries"]]
    assert ours == expected
    assert len(ours) == spec["n_keys"]
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == spec["n_parameters"]
    buffer_kinds = {entry["key"]: entry["kind"] for entry in spec["entries"]}
    assert {name for name, _ in model.named_buffers()} == {k for k, kind in buffer_kinds.items() if kind != "parameter"}


@pytest.mark.parametrize("variant", ["T", "S"])
def test_strict_load_round_trip(variant: str) -> None:
    source = build_model(variant)
    target = build_model(variant)
    target.load_state_dict(source.state_dict(), strict=True)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_build_model_rejects_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown RMA-Mamba variant"):
        build_model("B")


def test_eval_forward_maps_slices_to_one_logit_channel() -> None:
    model = build_model("T").eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1, 64, 64)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_cpu_inference_of_a_batch_equals_slice_by_slice() -> None:
    """CPU eval splits batches into cache-sized parts; the result must not depend on it."""
    model = build_model("T").eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        together = model(x)
        separately = torch.cat([model.decode(model.encoder(x[i : i + 1]))[0] for i in range(3)])
    assert torch.allclose(together, upsample_to(separately, (64, 64)), atol=1e-5)
