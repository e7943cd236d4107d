"""The direction-tiled SS2D scan (long sequences, inference) equals the plain cross scan / merge path."""

from __future__ import annotations

import pytest
import torch

from RMAMambaSegmentationLib import build_model
from RMAMambaSegmentationLib.network import direction_tiled_scan as tiled
from RMAMambaSegmentationLib.network.ss2d import SS2D

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layer(channels: int, seed: int, decay_scale: float = 1.0) -> SS2D:
    torch.manual_seed(seed)
    layer = SS2D(channels)
    with torch.no_grad():  # spread dt and A beyond their initial values so that decays differ per channel
        layer.dt_projs_bias.add_(torch.randn_like(layer.dt_projs_bias) * decay_scale)
        layer.A_logs.add_(torch.randn_like(layer.A_logs) * 0.5)
    return layer


def _plain(layer: SS2D, u: torch.Tensor, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(tiled, "MIN_LENGTH", 1 << 62)
    with torch.no_grad():
        return layer._scan(u)


@pytest.mark.parametrize(("batch", "channels", "height", "width", "tile"), [
    (1, 8, 16, 256, 1 << 20),  # several channels per tile
    (2, 6, 37, 29, 500),  # odd sizes, one channel per tile, a partial last chunk
    (1, 4, 9, 513, 3 * 9 * 513),  # tiles that do not divide the channels
])
def test_equals_the_plain_cross_scan(batch, channels, height, width, tile, monkeypatch) -> None:
    layer = _layer(channels, seed=height)
    u = torch.randn(batch, layer.inner, height, width)
    expected = _plain(layer, u, monkeypatch)
    result = tiled.direction_tiled_scan(u, layer.x_proj_weight, layer.dt_projs_weight, layer.dt_projs_bias,
                                        layer.A_logs, layer.Ds, tile_elements=tile)
    assert result.shape == expected.shape == (batch, layer.inner, height * width)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_strong_decay_takes_the_halving_path_and_still_agrees(monkeypatch) -> None:
    """dt near 10 per step: a 64-step chunk decays beyond the closed form's bound, the tile falls back."""
    layer = _layer(4, seed=3)
    with torch.no_grad():
        layer.dt_projs_bias.fill_(10.0)
    u = torch.randn(1, layer.inner, 12, 40)
    expected = _plain(layer, u, monkeypatch)
    result = tiled.direction_tiled_scan(u, layer.x_proj_weight, layer.dt_projs_weight, layer.dt_projs_bias,
                                        layer.A_logs, layer.Ds)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_used_only_for_long_cpu_sequences_without_gradients() -> None:
    long = torch.zeros(1, 2, 256, 256)
    assert tiled.wants_direction_tiles(long, 1, "chunked")
    assert not tiled.wants_direction_tiles(long, 16, "chunked")
    assert not tiled.wants_direction_tiles(long, 1, "reference")
    assert not tiled.wants_direction_tiles(torch.zeros(1, 2, 64, 64), 1, "chunked")
    assert not tiled.wants_direction_tiles(long.requires_grad_(), 1, "chunked")


def test_srma_mamba_output_is_unchanged(monkeypatch) -> None:
    """The whole network, with every planar view long enough to be tiled, against the plain path."""
    torch.manual_seed(0)
    model = build_model("SRMA").eval()
    x = torch.randn(1, 1, 32, 32, 16)
    monkeypatch.setattr(tiled, "MIN_LENGTH", 1 << 62)
    with torch.inference_mode():
        expected = model(x)
    monkeypatch.setattr(tiled, "MIN_LENGTH", 1)
    calls = []
    original = tiled.direction_tiled_scan
    monkeypatch.setattr("RMAMambaSegmentationLib.network.ss2d.direction_tiled_scan",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.inference_mode():
        result = model(x)
    assert len(calls) == 30  # 4 encoder stages + 3 decoder modules x 2 blocks, three planar views each
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4 * (1 + float(expected.abs().max())))
