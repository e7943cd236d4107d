"""Building blocks of SRMA-Mamba (spec sections 4-5): 3D convs, the GSC block, ABSS and the SABMamba block.

The module paths reproduce the official state dict (spec section 7), so the authors' checkpoints load strictly:
the MONAI ``UnetOutBlock`` 1x1x1 conv keeps its ``conv.conv.`` path, the SABMamba block is the project's
:class:`~.vss_block.VSSBlock` with an :class:`ABSS` token mixer, and the three planar mixers are the project's
:class:`~.ss2d.SS2D` (same selective-scan operator and cross scan as RMA-Mamba).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from RMAMambaSegmentationLib.network.layers import Permute
from RMAMambaSegmentationLib.network.ss2d import SS2D
from RMAMambaSegmentationLib.network.vss_block import VSSBlock

#: Channel-last (B, I, J, K, C) <-> channel-first (B, C, I, J, K).
TO_CHANNEL_LAST = (0, 2, 3, 4, 1)
TO_CHANNEL_FIRST = (0, 4, 1, 2, 3)


class BasicConv3d(nn.Module):
    """1x1x1 convolution without bias followed by BatchNorm3d (the decoder's ``translayer``; no activation)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _ConvHolder(nn.Module):
    """Holds one Conv3d under the attribute ``conv`` (MONAI's ``Convolution`` wrapper, reduced to its key path)."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OutBlock3d(nn.Module):
    """A 1x1x1 Conv3d with bias, keys ``conv.conv.weight/bias`` (MONAI ``UnetOutBlock(3, in, out)``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _ConvHolder(nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _conv_norm_relu(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """ReLU(InstanceNorm3d(conv(x))), instance norm without affine parameters (eps 1e-5)."""
    return F.relu(F.instance_norm(conv(x), eps=1e-5))


class GSCBlock(nn.Module):
    """Gated spatial convolution, additive form (spec 4.3); channel-last (B, I, J, K, C) in and out.

    ``y = CBR1(CBR3(CBR3(x)) + CBR1(x)) + x`` with CBR = conv, instance norm, ReLU.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.proj2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.proj3 = nn.Conv3d(channels, channels, kernel_size=1)
        self.proj4 = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.permute(*TO_CHANNEL_FIRST)
        a = _conv_norm_relu(self.proj2, _conv_norm_relu(self.proj, residual))
        b = _conv_norm_relu(self.proj3, residual)
        y = _conv_norm_relu(self.proj4, a + b) + residual
        return y.permute(*TO_CHANNEL_LAST)


class ABSS(nn.Module):
    """The anatomy-based token mixer (spec 4.5): three SS2D on planar views of the volume, summed.

    ``sh`` sees rows i x columns (j, k), ``sw`` rows j x columns (i, k), ``sd`` rows k x columns (i, j).
    Channel-last (B, I, J, K, C) in and out.
    """

    def __init__(self, channels: int, d_state: int = 1) -> None:
        super().__init__()
        self.sh = SS2D(channels, d_state=d_state)
        self.sw = SS2D(channels, d_state=d_state)
        self.sd = SS2D(channels, d_state=d_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, size_i, size_j, size_k, channels = x.shape
        out = self.sh(x.reshape(batch, size_i, size_j * size_k, channels)).view(x.shape)
        by_j = x.permute(0, 2, 1, 3, 4).reshape(batch, size_j, size_i * size_k, channels)
        out = out + self.sw(by_j).view(batch, size_j, size_i, size_k, channels).permute(0, 2, 1, 3, 4)
        by_k = x.permute(0, 3, 1, 2, 4).reshape(batch, size_k, size_i * size_j, channels)
        return out + self.sd(by_k).view(batch, size_k, size_i, size_j, channels).permute(0, 2, 3, 1, 4)


def sabmamba_block(channels: int, drop_path: float) -> VSSBlock:
    """The SABMamba block: pre-norm residual ABSS, then pre-norm residual MLP (spec 4.4), channel-last."""
    return VSSBlock(channels, drop_path=drop_path, op=ABSS(channels))


def channel_first_sabmamba_block(channels: int, drop_path: float = 0.1) -> nn.Sequential:
    """A SABMamba block for channel-first maps, wrapped in permutes (keys ``.1.*``, as the official decoder)."""
    return nn.Sequential(Permute(*TO_CHANNEL_LAST), sabmamba_block(channels, drop_path), Permute(*TO_CHANNEL_FIRST))


def stem(width: int = 48) -> nn.Sequential:
    """Patch embedding "v4" (spec 4.1): (B, 1, I, J, K) -> channel-last (B, I/2, J/2, K/2, width)."""
    half = width // 2
    return nn.Sequential(
        nn.Conv3d(1, half, kernel_size=3, stride=2, padding=1),
        Permute(*TO_CHANNEL_LAST),
        nn.LayerNorm(half),
        Permute(*TO_CHANNEL_FIRST),
        nn.GELU(),
        nn.Conv3d(half, width, kernel_size=1),
        Permute(*TO_CHANNEL_LAST),
        nn.LayerNorm(width),
    )


def downsampling3d(width: int) -> nn.Sequential:
    """Downsample "v4": channel-last (B, i, j, k, C) -> (B, ceil(i/2), ceil(j/2), ceil(k/2), 2C)."""
    return nn.Sequential(
        Permute(*TO_CHANNEL_FIRST),
        nn.Conv3d(width, 2 * width, kernel_size=3, stride=2, padding=1),
        Permute(*TO_CHANNEL_LAST),
        nn.LayerNorm(2 * width),
    )


def upsample3d(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize to an explicit size (align_corners=False)."""
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


class SpatialReverseMambaAttention(nn.Module):
    """The SRMA module (spec 5.2): refines a coarse logit map with reverse-attention-weighted 16-channel features."""

    def __init__(self, channels: int = 16, drop_path: float = 0.1) -> None:
        super().__init__()
        self.st_block1 = channel_first_sabmamba_block(channels, drop_path)
        self.st_block2 = channel_first_sabmamba_block(channels, drop_path)
        self.ra_conv1 = OutBlock3d(channels, channels)
        self.ra_conv2 = OutBlock3d(channels, channels)
        self.ra_conv3 = OutBlock3d(channels, 1)

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = upsample3d(coarse, tuple(x.shape[-3:]))
        reverse = 1.0 - torch.sigmoid(coarse)
        y = self.ra_conv1(reverse * self.st_block1(x))
        y = self.st_block2(y) + x
        return self.ra_conv3(self.ra_conv2(y)) + coarse
