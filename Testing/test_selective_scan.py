"""The fast selective-scan backends agree with the sequential reference, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch

from RMAMambaSegmentationLib.network.selective_scan import (
    linear_recurrence,
    mamba_ssm_available,
    resolve_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)


def realistic_inputs(batch: int, channels: int, groups: int, d_state: int, length: int, seed: int = 0,
                     dt_range: tuple[float, float] = (1e-3, 1e-1), device: str = "cpu") -> list[torch.Tensor]:
    """Inputs distributed like an initialised SS2D's: Mamba's A = -(1..N), dt in dt_range, Gaussian u, B, C."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, channels, length, generator=generator)
    delta = 0.5 * torch.randn(batch, channels, length, generator=generator)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    A = A * torch.exp(0.1 * torch.randn(channels, d_state, generator=generator))
    B = torch.randn(batch, groups, d_state, length, generator=generator)
    C = torch.randn(batch, groups, d_state, length, generator=generator)
    D = torch.ones(channels) + 0.1 * torch.randn(channels, generator=generator)
    low, high = math.log(dt_range[0]), math.log(dt_range[1])
    dt = torch.exp(low + (high - low) * torch.rand(channels, generator=generator))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    return [t.to(device) for t in (u, delta, A, B, C, D, delta_bias)]


def relative_error(mine: torch.Tensor, reference: torch.Tensor) -> float:
    mine, reference = mine.detach(), reference.detach()
    return float((mine - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("d_state", [1, 16])
def test_chunked_matches_reference_forward_and_backward_at_4096(d_state: int) -> None:
    inputs = realistic_inputs(batch=1, channels=8, groups=4, d_state=d_state, length=4096)
    leaves_fast = [t.clone().requires_grad_(True) for t in inputs]
    leaves_slow = [t.clone().requires_grad_(True) for t in inputs]
    fast = selective_scan(*leaves_fast, backend="chunked")
    slow = selective_scan(*leaves_slow, backend="reference")
    assert relative_error(fast, slow) <= 1e-5
    weight = torch.randn(fast.shape, generator=torch.Generator().manual_seed(3))
    (fast * weight).sum().backward()
    (slow * weight).sum().backward()
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    assert len(leaves_fast) == len(leaves_slow) == len(names)
    for name, a, b in zip(names, leaves_fast, leaves_slow):
        assert relative_error(a.grad, b.grad) <= 1e-5, name


def test_chunked_matches_reference_across_batch_groups_and_ragged_length() -> None:
    inputs = realistic_inputs(batch=3, channels=12, groups=4, d_state=4, length=1000, seed=1)
    assert relative_error(selective_scan_chunked(*inputs), selective_scan_reference(*inputs)) <= 1e-5


@pytest.mark.parametrize("tile_elements", [1, 4096, 1 << 22])
def test_tiling_does_not_change_the_result(tile_elements: int) -> None:
    inputs = realistic_inputs(batch=2, channels=16, groups=4, d_state=2, length=300, seed=2)
    tiled = selective_scan_chunked(*inputs, tile_elements=tile_elements)
    whole = selective_scan_chunked(*inputs, tile_elements=1 << 30)
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-6)


def test_strong_decay_stays_exact() -> None:
    """dt up to 10 with |A| up to 16 makes a chunk's log-decay reach thousands: the chunk is split, not overflowed."""
    inputs = realistic_inputs(batch=1, channels=4, groups=1, d_state=16, length=512, seed=4, dt_range=(0.5, 10.0))
    fast = selective_scan_chunked(*inputs)
    assert torch.isfinite(fast).all()
    assert relative_error(fast, selective_scan_reference(*inputs)) <= 1e-5


def test_linear_recurrence_solves_the_recurrence() -> None:
    generator = torch.Generator().manual_seed(5)
    log_a = -torch.rand(2, 3, 200, generator=generator)
    x = torch.randn(2, 3, 200, generator=generator)
    expected, state = [], torch.zeros(2, 3)
    for t in range(200):
        state = torch.exp(log_a[..., t]) * state + x[..., t]
        expected.append(state)
    assert torch.allclose(linear_recurrence(log_a, x, chunk=16), torch.stack(expected, -1), atol=1e-5)


def test_backend_selection() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "chunked"
    assert resolve_backend("reference", cpu) == "reference"
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        resolve_backend("cuda", cpu)
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        resolve_backend("fastest", cpu)


def test_environment_variable_overrides_auto(monkeypatch) -> None:
    monkeypatch.setenv("RMAMAMBA_SCAN_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    monkeypatch.setenv("RMAMAMBA_SCAN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="RMAMAMBA_SCAN_BACKEND"):
        resolve_backend("auto", torch.device("cpu"))


def test_shape_errors_are_specific() -> None:
    u, delta, A, B, C, D, bias = realistic_inputs(1, 8, 4, 1, 16)
    with pytest.raises(ValueError, match="B and C must be"):
        selective_scan(u, delta, A, B[:, :, :, :8], C, D, bias)


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba_ssm_available()), reason="needs CUDA and mamba-ssm")
@pytest.mark.parametrize("d_state", [1, 16])
def test_cuda_kernel_matches_reference(d_state: int) -> None:
    inputs = realistic_inputs(batch=1, channels=8, groups=4, d_state=d_state, length=4096)
    cuda_leaves = [t.cuda().requires_grad_(True) for t in inputs]
    cpu_leaves = [t.clone().requires_grad_(True) for t in inputs]
    fast = selective_scan(*cuda_leaves, backend="cuda")
    slow = selective_scan(*cpu_leaves, backend="reference")
    assert relative_error(fast.cpu(), slow) <= 1e-5
    weight = torch.randn(slow.shape, generator=torch.Generator().manual_seed(3))
    (fast * weight.cuda()).sum().backward()
    (slow * weight).sum().backward()
    assert len(cuda_leaves) == len(cpu_leaves)
    for a, b in zip(cuda_leaves, cpu_leaves):
        assert relative_error(a.grad.cpu(), b.grad) <= 1e-5


@pytest.mark.parametrize("length,dt_range", [(1000, (1e-3, 1e-1)), (4096, (1e-3, 1e-1)), (300, (2.0, 8.0))])
def test_inference_scan_of_scalar_states_matches_reference(length: int, dt_range: tuple[float, float]) -> None:
    """d_state 1 under inference_mode takes the in-place path (ragged lengths padded; strong decay falls back)."""
    inputs = realistic_inputs(batch=2, channels=12, groups=4, d_state=1, length=length, seed=5, dt_range=dt_range)
    with torch.inference_mode():
        fast = selective_scan_chunked(*inputs, tile_elements=6 * length)
    slow = selective_scan_reference(*inputs)
    assert relative_error(fast, slow) <= 1e-5
