"""The RMA-Mamba decoder: translayers, the coarse map, and Reverse Mamba Attention modules (spec 5.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from RMAMambaSegmentationLib.network.vss_block import channel_first_vss_block

DECODER_WIDTH = 32


class BasicConv2d(nn.Module):
    """Convolution without bias followed by BatchNorm. The official module's ReLU is never applied, so none here."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to an explicit size (align_corners=False, no antialiasing)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ReverseMambaAttention(nn.Module):
    """Refines a coarse logit map with features weighted by the reverse attention 1 - sigmoid(coarse)."""

    def __init__(self, channels: int = DECODER_WIDTH, drop_path: float = 0.1) -> None:
        super().__init__()
        self.st_block1 = channel_first_vss_block(channels, drop_path)
        self.st_block2 = channel_first_vss_block(channels, drop_path)
        self.ra_conv1 = BasicConv2d(channels, channels, kernel_size=3, padding=1)
        self.ra_conv2 = BasicConv2d(channels, channels, kernel_size=3, padding=1)
        self.ra_conv3 = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = upsample_to(coarse, x.shape[-2:])
        reverse = -1 * torch.sigmoid(coarse) + 1
        y = self.st_block1(x)
        y = self.ra_conv1(reverse * y)
        y = self.st_block2(y) + x
        y = self.ra_conv3(self.ra_conv2(y))
        return y + coarse
