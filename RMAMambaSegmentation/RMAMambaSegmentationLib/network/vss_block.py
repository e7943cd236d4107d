"""The VSS block: pre-norm residual SS2D followed by a pre-norm residual MLP, channel-last (spec section 5.3)."""

from __future__ import annotations

import torch
from torch import nn

from RMAMambaSegmentationLib.network.layers import DropPath, Mlp, Permute
from RMAMambaSegmentationLib.network.ss2d import SS2D


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))); input and output (B, H, W, C).

    ``op`` replaces the SS2D token mixer (SRMA-Mamba's 3D ABSS mixer; the input is then (B, I, J, K, C)).
    """

    def __init__(self, channels: int, drop_path: float = 0.0, d_state: int = 1, mlp_ratio: float = 4.0,
                 op: nn.Module | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.op = op if op is not None else SS2D(channels, d_state=d_state)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def channel_first_vss_block(channels: int, drop_path: float = 0.1) -> nn.Sequential:
    """A VSS block for channel-first maps: permute to (B, H, W, C), block, permute back (keys ``.1.*``)."""
    return nn.Sequential(Permute(0, 2, 3, 1), VSSBlock(channels, drop_path=drop_path), Permute(0, 3, 1, 2))
