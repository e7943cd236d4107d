"""The network's state-dict layout equals the specification's listing, key for key and shape for shape."""

from __future__ import annotations

import json
import re

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
def test_strict_load_copies_every_saved_value_into_a_differently_initialised_model(variant: str) -> None:
    torch.manual_seed(1)
    # noise on every entry: many initial values do not depend on the seed (zero biases, unit norms, A_logs)
    saved = {key: value + 1 + torch.rand(value.shape).to(value.dtype) if value.is_floating_point() else value + 3
             for key, value in build_model(variant).state_dict().items()}
    torch.manual_seed(2)
    target = build_model(variant)
    before = target.state_dict()
    same = [key for key, value in saved.items() if torch.equal(before[key], value)]
    assert same == [], "every saved value must differ from the target's, or loading proves nothing"
    result = target.load_state_dict(saved, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    loaded = target.state_dict()
    assert list(loaded) == list(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_strict_load_refuses_missing_unexpected_and_misshapen_entries() -> None:
    torch.manual_seed(1)
    good = build_model("T").state_dict()
    target = build_model("T")
    removed = "attention1.ra_conv3.weight"
    missing = {key: value for key, value in good.items() if key != removed}
    with pytest.raises(RuntimeError, match=rf"Missing key\(s\) in state_dict: \"{re.escape(removed)}\""):
        target.load_state_dict(missing, strict=True)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"decoder\.extra\.weight\""):
        target.load_state_dict({**good, "decoder.extra.weight": torch.zeros(1)}, strict=True)
    misshapen = {**good, "out_conv1.weight": torch.zeros(1, 16, 1, 1)}
    with pytest.raises(RuntimeError, match=r"size mismatch for out_conv1\.weight"):
        target.load_state_dict(misshapen, strict=True)
    with torch.device("meta"):
        small = build_model("S")
    with pytest.raises(RuntimeError, match=r"Error\(s\) in loading state_dict"):
        small.load_state_dict(good, strict=True, assign=True)  # assign: no copy into meta tensors


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
