"""SS2D's scan core for long sequences at inference: the four directions are never materialised.

:meth:`~.ss2d.SS2D._scan` builds the cross scan of the whole map (four copies of ``u``), the four ``delta`` maps
and the four outputs before merging them. For SRMA-Mamba's planar views the sequence is the whole window
(``L`` = 401,408 tokens at stage 1 of a 224x224x64 window), so each of those tensors is hundreds of megabytes and
the CPU spends its time moving memory rather than computing. Here, without autograd and for d_state 1:

* the x-projection commutes with the direction permutations (it mixes channels, the directions permute tokens),
  so it runs once on ``u`` and only its few output rows are permuted per direction;
* each direction is then scanned a few channels at a time: the tile's inputs are gathered from ``u`` in that
  direction's order, its ``delta`` comes from a small matrix product, the tile is scanned with the chunked
  scalar scan, and the result is added straight into the merged, row-major output.

The result equals :func:`~.cross_scan.cross_merge` of the full computation up to the order of float additions.
"""

from __future__ import annotations

import torch

from .selective_scan import DEFAULT_CHUNK, scalar_scan_into, scan_tile_values

DIRECTIONS = 4
#: Below this sequence length the plain cross scan is as fast (and is what the 2D models were tuned with).
MIN_LENGTH = 1 << 16
#: About this many values per tile and temporary (4 MB in float32: stays in the last-level cache).
TILE_ELEMENTS = 1 << 20


def wants_direction_tiles(u: torch.Tensor, d_state: int, backend: str) -> bool:
    """Whether :func:`direction_tiled_scan` should replace the plain path for this (B, D, H, W) input."""
    return (
        backend == "chunked"
        and d_state == 1
        and u.device.type == "cpu"
        and u.shape[-2] * u.shape[-1] >= MIN_LENGTH
        and not (torch.is_grad_enabled() and u.requires_grad)
    )


def _direction_order(t: torch.Tensor, direction: int) -> torch.Tensor:
    """(..., H, W) -> (..., H*W) in the token order of ``direction`` (row-major, column-major, both reversed)."""
    flat = t.flatten(-2) if direction % 2 == 0 else t.transpose(-2, -1).flatten(-2)
    return flat.flip(-1) if direction >= 2 else flat


def _row_major(y: torch.Tensor, direction: int, height: int, width: int) -> torch.Tensor:
    """(..., H*W) in ``direction``'s order -> (..., H, W) view or copy in row-major order."""
    if direction >= 2:
        y = y.flip(-1)
    if direction % 2 == 0:
        return y.unflatten(-1, (height, width))
    return y.unflatten(-1, (width, height)).transpose(-2, -1)


@torch.no_grad()
def direction_tiled_scan(
    u: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_projs_weight: torch.Tensor,
    dt_projs_bias: torch.Tensor,
    A_logs: torch.Tensor,
    Ds: torch.Tensor,
    *,
    tile_elements: int = TILE_ELEMENTS,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """(B, D, H, W) -> float32 (B, D, H*W): SS2D's cross scan, d_state-1 selective scan and cross merge."""
    batch, inner, height, width = u.shape
    length = height * width
    rank = dt_projs_weight.shape[-1]
    u = u.float()
    # (B, K, R + 2, H, W): every direction's projection, still in row-major token order
    projected = torch.einsum("kcd,bdl->bkcl", x_proj_weight.float(), u.flatten(2)).unflatten(-1, (height, width))
    A = -torch.exp(A_logs.float()).view(DIRECTIONS, inner, 1)
    D = Ds.float().view(DIRECTIONS, inner)
    bias = dt_projs_bias.float().view(DIRECTIONS, inner)
    dt_weight = dt_projs_weight.float()
    out = u.new_zeros(batch, inner, height, width)
    rows = max(1, min(inner, tile_elements // length))
    for b in range(batch):
        for k in range(DIRECTIONS):
            ordered = _direction_order(projected[b, k], k)  # (R + 2, L)
            dt_low, B_k, C_k = ordered[:rank], ordered[rank:rank + 1], ordered[rank + 1:rank + 2]
            for start in range(0, inner, rows):
                stop = min(inner, start + rows)
                u_tile = _direction_order(u[b, start:stop], k).contiguous()[None]  # (1, m, L)
                delta = torch.matmul(dt_weight[k, start:stop], dt_low)[None]
                args = (u_tile, delta, A[k, start:stop][None], B_k[None], C_k[None],
                        D[k, start:stop][None], bias[k, start:stop][None], True, chunk)
                y = u_tile.new_empty(u_tile.shape)
                if not scalar_scan_into(y, *args):
                    y = scan_tile_values(*args)
                out[b, start:stop] += _row_major(y[0], k, height, width)
    return out.flatten(2)


__all__ = ["MIN_LENGTH", "direction_tiled_scan", "wants_direction_tiles"]
