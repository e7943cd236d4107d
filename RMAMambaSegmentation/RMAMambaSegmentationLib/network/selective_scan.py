"""The selective-scan operator of Mamba (as called by VMamba's SS2D), with interchangeable backends.

Semantics (spec section 5.5): for inputs ``u, delta`` (b, M, L), ``A`` (M, N), ``B, C`` (b, G, N, L), ``D`` and
``delta_bias`` (M,), every channel ``m`` (group ``g = m // (M / G)``) runs, with state ``h`` in R^N and h_0 = 0::

    dt_t = softplus(delta_t + delta_bias_m)
    h_t  = exp(dt_t * A_m) * h_{t-1} + dt_t * u_t * B_{g,t}
    y_t  = sum_n C_{g,n,t} * h_{t,n} + D_m * u_t

and the result is float32 (b, M, L).

Backends:

* ``"reference"`` -- the recurrence step by step; slow, for tests only.
* ``"chunked"`` -- a pure-PyTorch chunked scan: the sequence is cut into chunks of ``chunk`` steps; inside a chunk
  the recurrence is solved in closed form with cumulative sums (stable because the chunk's total decay is bounded,
  see :func:`linear_recurrence`), and the chunk-to-chunk carries are combined with a logarithmic-depth scan. Rows
  are processed in cache-sized tiles so that large batches stay fast. Default on CPU and the GPU fallback.
* ``"cuda"`` -- the CUDA kernel of the optional ``mamba-ssm`` package, imported lazily, for CUDA tensors.

``"auto"`` picks ``"cuda"`` for CUDA tensors when ``mamba-ssm`` imports, else ``"chunked"``; the environment
variable ``RMAMAMBA_SCAN_BACKEND`` overrides the automatic choice.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "chunked", "cuda")
DEFAULT_CHUNK = 64
DEFAULT_TILE_ELEMENTS = 1 << 18
# The closed form inside a chunk multiplies by exp(+decay); keep the chunk's total log-decay below this.
_MAX_CHUNK_LOG_DECAY = 60.0


@functools.lru_cache(maxsize=1)
def mamba_ssm_available() -> bool:
    """Whether the optional ``mamba-ssm`` CUDA kernels can be imported (checked once, lazily)."""
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception:  # any failure (missing package, CUDA or ABI mismatch) means "not available"
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` (possibly "auto") on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = os.environ.get("RMAMAMBA_SCAN_BACKEND", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"RMAMAMBA_SCAN_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuda" if device.type == "cuda" and mamba_ssm_available() else "chunked"
    if backend == "cuda" and (device.type != "cuda" or not mamba_ssm_available()):
        raise RuntimeError(
            "the 'cuda' scan backend needs CUDA tensors and the mamba-ssm package (pip install mamba-ssm)"
        )
    return backend


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    *,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Run the selective scan with the chosen backend; returns float32 (b, M, L)."""
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    chosen = resolve_backend(backend, u.device)
    if chosen == "cuda":
        return selective_scan_mamba_ssm(u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus)
    if chosen == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus)


def _check_shapes(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, M, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (M, N) with M={channels}; got {tuple(A.shape)}")
    groups_shape = (batch, B.shape[1], A.shape[1], length)
    if B.dim() != 4 or tuple(B.shape) != groups_shape or tuple(C.shape) != groups_shape:
        raise ValueError(f"B and C must be (b, G, N, L) = {groups_shape}; got {tuple(B.shape)}, {tuple(C.shape)}")
    if channels % B.shape[1]:
        raise ValueError(f"channels ({channels}) must be a multiple of the groups ({B.shape[1]})")
    if D.shape != (channels,) or delta_bias.shape != (channels,):
        raise ValueError(f"D and delta_bias must be ({channels},); got {tuple(D.shape)}, {tuple(delta_bias.shape)}")


def _time_steps(delta: torch.Tensor, delta_bias: torch.Tensor, delta_softplus: bool) -> torch.Tensor:
    dt = delta.float() + delta_bias.float()[:, None]
    return F.softplus(dt) if delta_softplus else dt


def selective_scan_reference(
    u, delta, A, B, C, D, delta_bias, *, delta_softplus: bool = True
) -> torch.Tensor:
    """The recurrence one step at a time (float32). Slow: a test oracle, not for production."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    u = u.float()
    dt = _time_steps(delta, delta_bias, delta_softplus)
    Bm = B.float().repeat_interleave(channels // groups, dim=1)  # (b, M, N, L)
    Cm = C.float().repeat_interleave(channels // groups, dim=1)
    A = A.float()
    state = u.new_zeros(batch, channels, A.shape[1])
    outputs = []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        state = torch.exp(dt_t * A) * state + dt_t * u[:, :, t, None] * Bm[..., t]
        outputs.append((state * Cm[..., t]).sum(-1))
    y = torch.stack(outputs, dim=-1)
    return y + D.float()[:, None] * u


def _reverse_recurrence(log_a: torch.Tensor, grad_h: torch.Tensor, chunk: int) -> torch.Tensor:
    """``G_t = g_t + exp(log_a_{t+1}) G_{t+1}``: the gradient of a linear recurrence with respect to its inputs."""
    reversed_decay = F.pad(log_a.flip(-1)[..., :-1], (1, 0))
    return linear_recurrence(reversed_decay, grad_h.flip(-1), chunk).flip(-1)


def linear_recurrence(log_a: torch.Tensor, x: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Solve ``h_t = exp(log_a_t) * h_{t-1} + x_t`` (h_{-1} = 0) along the last axis, for ``log_a <= 0``.

    Not meant for autograd (differentiating the closed form cancels huge terms): the scan's gradients come from
    :class:`_ScanTile`, which solves the reversed recurrence with this same function.

    Inside each chunk of ``T`` steps with inclusive log-decay ``P_t = sum_{s<=t} log_a_s``,
    ``h_t = exp(P_t) * (H + sum_{s<=t} exp(-P_s) x_s)`` where ``H`` is the state entering the chunk. The factor
    ``exp(-P_s)`` stays finite as long as the chunk's total decay is moderate; when it is not, the chunk is
    halved (down to single steps, where the closed form is the recurrence itself).
    """
    length = x.shape[-1]
    steps = 1 << max(0, (min(chunk, length) - 1).bit_length())  # next power of two >= min(chunk, L)
    while True:
        pad = (-length) % steps
        la = F.pad(log_a, (0, pad)) if pad else log_a
        xx = F.pad(x, (0, pad)) if pad else x
        la = la.unflatten(-1, (-1, steps))
        xx = xx.unflatten(-1, (-1, steps))
        if steps == 1:
            decay, local = torch.exp(la), xx
            break
        cumulative = la.cumsum(-1)
        if -float(cumulative[..., -1].detach().min()) > _MAX_CHUNK_LOG_DECAY:
            steps //= 2
            continue
        growth = cumulative.neg_().exp_()  # every tensor from here on is fresh: update in place
        decay = growth.reciprocal()
        local = growth.mul_(xx).cumsum_(-1)
        break
    chunk_decay = decay[..., -1]
    chunk_end = local[..., -1] * chunk_decay if steps > 1 else local[..., -1]
    carried = _inclusive_scan(chunk_decay, chunk_end)
    entering = F.pad(carried[..., :-1], (1, 0))
    if steps > 1:
        h = local.add_(entering[..., None]).mul_(decay)
    else:
        h = local + decay * entering[..., None]
    h = h.flatten(-2)
    return h[..., :length] if pad else h


def _inclusive_scan(decay: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of ``h_c = decay_c * h_{c-1} + value_c`` along the last axis in log2(n) doubling steps."""
    n = value.shape[-1]
    offset = 1
    while offset < n:
        value = torch.cat((value[..., :offset], value[..., offset:] + decay[..., offset:] * value[..., :-offset]), -1)
        if offset * 2 < n:
            decay = torch.cat((decay[..., :offset], decay[..., offset:] * decay[..., :-offset]), -1)
        offset *= 2
    return value


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    *,
    delta_softplus: bool = True,
    chunk: int = DEFAULT_CHUNK,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> torch.Tensor:
    """Chunked pure-PyTorch scan, processed in tiles of about ``tile_elements`` state values (float32 out)."""
    batch, channels, length = u.shape
    groups, states = B.shape[1], A.shape[1]
    per_group = channels // groups
    blocks = batch * groups
    u3 = u.float().reshape(blocks, per_group, length)
    d3 = delta.float().reshape(blocks, per_group, length)
    B3 = B.float().reshape(blocks, states, length)
    C3 = C.float().reshape(blocks, states, length)
    A3 = A.float().reshape(groups, per_group, states)
    D3 = D.float().reshape(groups, per_group)
    bias3 = delta_bias.float().reshape(groups, per_group)

    rows = max(1, tile_elements // (states * length))
    tile_blocks = max(1, rows // per_group)
    tile_rows = min(per_group, rows)
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D, delta_bias))
    out = None if keep_graph else u3.new_empty(blocks, per_group, length)
    # split() rather than slicing: its backward is one concatenation, not one full-size zero tensor per tile
    block_tiles = []
    # every split below cuts tensors of the same leading size into the same pieces, so the zips pair them exactly
    block_parts = zip(u3.split(tile_blocks), d3.split(tile_blocks), B3.split(tile_blocks), C3.split(tile_blocks))
    for index, (u_b, d_b, B_b, C_b) in enumerate(block_parts):
        b0 = index * tile_blocks
        group_index = torch.arange(b0, b0 + u_b.shape[0], device=u.device) % groups
        row_parts = zip(u_b.split(tile_rows, 1), d_b.split(tile_rows, 1), A3[group_index].split(tile_rows, 1),
                        D3[group_index].split(tile_rows, 1), bias3[group_index].split(tile_rows, 1))
        row_tiles = []
        for row_index, (u_t, d_t, A_t, D_t, bias_t) in enumerate(row_parts):
            if keep_graph:
                row_tiles.append(_ScanTile.apply(u_t, d_t, A_t, B_b, C_b, D_t, bias_t, delta_softplus, chunk))
                continue
            m0 = row_index * tile_rows
            target = out[b0:b0 + u_b.shape[0], m0:m0 + u_t.shape[1]]
            if states == 1 and scalar_scan_into(target, u_t, d_t, A_t, B_b, C_b, D_t, bias_t, delta_softplus, chunk):
                continue
            target.copy_(scan_tile_values(u_t, d_t, A_t, B_b, C_b, D_t, bias_t, delta_softplus, chunk))
        if out is None:
            block_tiles.append(torch.cat(row_tiles, dim=1) if len(row_tiles) > 1 else row_tiles[0])
    if out is None:
        out = torch.cat(block_tiles, dim=0) if len(block_tiles) > 1 else block_tiles[0]
    return out.reshape(batch, channels, length)


def _softplus_(x: torch.Tensor) -> torch.Tensor:
    """``softplus(x)`` written over ``x`` (PyTorch's defaults: beta 1, threshold 20)."""
    return torch._C._nn.softplus(x, 1, 20, out=x)


def scalar_scan_into(out, u, delta, A, B, C, D, bias, delta_softplus: bool, chunk: int) -> bool:
    """One d_state-1 tile without autograd, written into ``out``; False (nothing written) when a chunk decays too much.

    Fewer passes over memory than :func:`linear_recurrence`: ``cumsum(dt * A) = A * cumsum(dt)`` (A is constant
    per channel), the growth factor is kept and divided out instead of taking its reciprocal, every temporary is
    updated in place and the last operation writes into ``out``. u, delta (k, m, L); A (k, m, 1); B, C (k, 1, L).
    ``bias`` None: ``delta`` already holds the bias and is overwritten (it is then lost, also when False is returned).
    """
    length = u.shape[-1]
    steps = 1 << max(0, (min(chunk, length) - 1).bit_length())
    if steps == 1:
        return False
    dt = delta if bias is None else delta + bias[..., None]
    if delta_softplus:
        _softplus_(dt)
    x = (dt * u).mul_(B)
    pad = (-length) % steps
    if pad:
        dt, x = F.pad(dt, (0, pad)), F.pad(x, (0, pad))
    growth = dt.unflatten(-1, (-1, steps)).cumsum_(-1).mul_(-A[..., None])  # -P_t >= 0, in place over dt
    if float(growth[..., -1].max()) > _MAX_CHUNK_LOG_DECAY:
        return False
    growth.exp_()
    local = x.unflatten(-1, (-1, steps)).mul_(growth).cumsum_(-1)
    chunk_decay = growth[..., -1].reciprocal()
    carried = _inclusive_scan(chunk_decay, local[..., -1] * chunk_decay)
    h = local.add_(F.pad(carried[..., :-1], (1, 0))[..., None]).div_(growth).flatten(-2)
    if pad:
        h = h[..., :length]
    torch.addcmul(h.mul_(C), D[..., None], u, out=out)
    return True


def scan_tile_values(u, delta, A, B, C, D, bias, delta_softplus: bool, chunk: int) -> torch.Tensor:
    """One tile's output without autograd, temporaries updated in place (fewer passes over memory).

    u, delta (k, m, L); A (k, m, N); B, C (k, N, L); D, bias (k, m).
    """
    dt = delta + bias[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    if A.shape[-1] == 1:  # d_state 1: every channel is a scalar recurrence
        x = (dt * u).mul_(B)
        h = linear_recurrence(dt.mul_(A), x, chunk)
        return h.mul_(C).addcmul_(D[..., None], u)
    log_a = dt[:, :, None, :] * A[..., None]
    x = (dt * u)[:, :, None, :] * B[:, None]
    h = linear_recurrence(log_a, x, chunk)
    return (h * C[:, None]).sum(2).addcmul_(D[..., None], u)


class _ScanTile(torch.autograd.Function):
    """Autograd for one tile that keeps only its inputs and recomputes the states in the backward pass.

    With ``z = delta + bias``, ``dt = softplus(z)``, ``log_a = dt A``, ``x = dt u B``, ``h`` the recurrence and
    ``y = sum_n C h + D u``, the backward runs the reversed recurrence for ``G = dL/dx`` and applies the chain
    rule to each product. Memory: no per-step intermediates survive the forward pass (training batch 16 fits).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, bias, delta_softplus: bool, chunk: int) -> torch.Tensor:
        ctx.save_for_backward(u, delta, A, B, C, D, bias)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        return scan_tile_values(u, delta, A, B, C, D, bias, delta_softplus, chunk)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u, delta, A, B, C, D, bias = ctx.saved_tensors
        z = delta + bias[..., None]
        dt = F.softplus(z) if ctx.delta_softplus else z
        log_a = dt[:, :, None, :] * A[..., None]  # (k, m, N, L)
        dtu = dt * u
        h = linear_recurrence(log_a, dtu[:, :, None, :] * B[:, None], ctx.chunk)
        grad_x = _reverse_recurrence(log_a, grad_y[:, :, None, :] * C[:, None], ctx.chunk)
        grad_log_a = grad_x * torch.exp(log_a) * F.pad(h[..., :-1], (1, 0))
        grad_dtu = (grad_x * B[:, None]).sum(2)
        grad_dt = (grad_log_a * A[..., None]).sum(2) + grad_dtu * u
        grad_z = grad_dt * torch.sigmoid(z) if ctx.delta_softplus else grad_dt
        return (
            grad_dtu * dt + grad_y * D[..., None],  # u
            grad_z,  # delta
            (grad_log_a * dt[:, :, None, :]).sum(-1),  # A
            (grad_x * dtu[:, :, None, :]).sum(1),  # B
            (grad_y[:, :, None, :] * h).sum(1),  # C
            (grad_y * u).sum(-1),  # D
            grad_z.sum(-1),  # bias
            None,
            None,
        )


def selective_scan_mamba_ssm(
    u, delta, A, B, C, D, delta_bias, *, delta_softplus: bool = True
) -> torch.Tensor:
    """The ``mamba-ssm`` CUDA kernel (optional dependency, imported here, on first use)."""
    interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    y = interface.selective_scan_fn(
        u.contiguous(), delta.contiguous(), A.float().contiguous(), B.contiguous(), C.contiguous(),
        D.float().contiguous(), z=None, delta_bias=delta_bias.float().contiguous(), delta_softplus=delta_softplus,
    )
    return y.float()
