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

from collections.abc import Callable

import torch

from RMAMambaSegmentationLib.network.selective_scan import DEFAULT_CHUNK, scalar_scan_into, scan_tile_values

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


def _scan_into(out: torch.Tensor, u: torch.Tensor, delta_with_bias: Callable[[], torch.Tensor],
               args: tuple) -> torch.Tensor:
    """Scan one tile (m, L) of one direction into ``out``; ``args`` = (A, B, C, D) for that tile.

    ``delta_with_bias()`` makes the tile's ``delta`` with the bias already added: the fast scan consumes it in place,
    the fallback (a chunk that decays too much) makes it again.
    """
    A, B, C, D = args
    if scalar_scan_into(out[None], u[None], delta_with_bias()[None], A[None], B[None], C[None], D[None], None, True,
                        DEFAULT_CHUNK):
        return out
    no_bias = D.new_zeros(D.shape)
    packed = (u[None], delta_with_bias()[None], A[None], B[None], C[None], D[None], no_bias[None], True, DEFAULT_CHUNK)
    return out.copy_(scan_tile_values(*packed)[0])


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
) -> torch.Tensor:
    """(B, D, H, W) -> float32 (B, D, H*W): SS2D's cross scan, d_state-1 selective scan and cross merge.

    Per tile of channels: row-major order (direction 0) is a view of ``u``, column-major order (direction 1) one
    transposed copy; directions 2 and 3 are their reversals. As in the official merge, the two row-major results
    are summed, the two column-major ones are summed, and the latter are transposed back once.
    """
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
    out = u.new_empty(batch, inner, height, width)
    rows = max(1, min(inner, tile_elements // length))
    for b in range(batch):
        column_major = projected[b].transpose(-2, -1).flatten(-2)
        ordered = [projected[b, 0].flatten(-2), column_major[1], projected[b, 2].flatten(-2).flip(-1),
                   column_major[3].flip(-1)]  # (R + 2, L) in each direction's token order
        for start in range(0, inner, rows):
            stop = min(inner, start + rows)
            tile = u[b, start:stop]
            sequences = (tile.flatten(-2), tile.transpose(-2, -1).contiguous().flatten(-2))
            results = []
            for k in range(DIRECTIONS):
                forward = sequences[k % 2]
                sequence = forward.flip(-1) if k >= 2 else forward
                low, B_k, C_k = ordered[k][:rank], ordered[k][rank:rank + 1], ordered[k][rank + 1:rank + 2]
                weight, shift = dt_weight[k, start:stop], bias[k, start:stop, None]
                args = (A[k, start:stop], B_k, C_k, D[k, start:stop])
                y = _scan_into(torch.empty_like(sequence), sequence,
                               lambda w=weight, b=shift, x=low: torch.addmm(b, w, x), args)
                if k < 2:
                    results.append(y)
                else:
                    results[k - 2] += y.flip(-1)
            rows_result = results[0].view(stop - start, height, width)
            columns_result = results[1].view(stop - start, width, height).transpose(-2, -1)
            torch.add(rows_result, columns_result, out=out[b, start:stop])
    return out.flatten(2)


__all__ = ["MIN_LENGTH", "direction_tiled_scan", "wants_direction_tiles"]
