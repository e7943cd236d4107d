"""SS2D: VMamba's 2D selective-scan layer in the ``v3noz`` form used by RMA-Mamba (spec section 5.4)."""

from __future__ import annotations

import math

import torch
from torch import nn

from RMAMambaSegmentationLib.network.cross_scan import cross_merge, cross_scan
from RMAMambaSegmentationLib.network.direction_tiled_scan import direction_tiled_scan, wants_direction_tiles
from RMAMambaSegmentationLib.network.layers import default_linear_bound, inverse_softplus
from RMAMambaSegmentationLib.network.selective_scan import resolve_backend, selective_scan

DIRECTIONS = 4


class SS2D(nn.Module):
    """Channel-last (B, H, W, C) -> (B, H, W, C): projection, depthwise conv, 4-way selective scan, projection."""

    def __init__(self, channels: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank: int | None = None) -> None:
        super().__init__()
        inner = int(ssm_ratio * channels)
        rank = dt_rank if dt_rank is not None else math.ceil(channels / 16)
        self.channels, self.inner, self.rank, self.d_state = channels, inner, rank, d_state
        self.scan_backend = "auto"
        k = DIRECTIONS
        # Raw parameters first: they come first in the state dict, as in the official checkpoints.
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, inner))
        self.A_logs = nn.Parameter(torch.empty(k * inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.in_proj = nn.Linear(channels, inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner, bias=False)
        self.out_proj = nn.Linear(inner, channels, bias=False)
        self.dropout = nn.Identity()
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba "v0" initialisation of the raw SSM parameters (spec section 8)."""
        rank_bound = self.rank**-0.5
        nn.init.uniform_(self.dt_projs_weight, -rank_bound, rank_bound)
        log_dt = torch.rand(DIRECTIONS, self.inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.dt_projs_bias.copy_(inverse_softplus(torch.exp(log_dt).clamp(min=dt_floor)))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(states).repeat(DIRECTIONS * self.inner, 1))
        self.Ds.fill_(1.0)
        bound = default_linear_bound(self.inner)
        nn.init.uniform_(self.x_proj_weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        # The depthwise conv runs on the channel-last projection (faster than channel-first on the CPU for the long
        # planar views of SRMA-Mamba); the activated map is then made channel-first, as the scan reads it.
        u = self.act(self.conv2d(self.in_proj(x).permute(0, 3, 1, 2))).contiguous()
        y = self._scan(u)
        y = self.out_norm(y.transpose(1, 2)).view(batch, height, width, self.inner).to(x.dtype)
        return self.dropout(self.out_proj(y))

    def _scan(self, u: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, H*W): cross scan, per-direction projections, selective scan, cross merge."""
        batch, inner, height, width = u.shape
        length = height * width
        if wants_direction_tiles(u, self.d_state, resolve_backend(self.scan_backend, u.device)):
            return direction_tiled_scan(
                u, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds
            )
        xs = cross_scan(u)  # (B, 4, D, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dt_low, Bs, Cs = torch.split(projected, [self.rank, self.d_state, self.d_state], dim=2)
        delta = torch.einsum("bkrl,kdr->bkdl", dt_low, self.dt_projs_weight)
        y = selective_scan(
            xs.reshape(batch, DIRECTIONS * inner, length),
            delta.reshape(batch, DIRECTIONS * inner, length),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return cross_merge(y.view(batch, DIRECTIONS, inner, length), height, width)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inner={self.inner}, dt_rank={self.rank}, d_state={self.d_state}"


def set_scan_backend(module: nn.Module, backend: str) -> None:
    """Choose the selective-scan backend ("auto", "reference", "chunked", "cuda") for every SS2D in ``module``."""
    for layer in module.modules():
        if isinstance(layer, SS2D):
            layer.scan_backend = backend


__all__ = ["SS2D", "set_scan_backend"]
