"""A small 2D U-Net: the baseline that tells whether RMA-Mamba is worth it on a given data set.

Four down-sampling levels with 12-24-48-96-192 channels; every level is two (3x3 convolution, batch norm, ReLU)
layers; max-pooling down, a 2x2 transposed convolution up, the skip connection concatenated, and a 1x1
convolution to one logit map. About 1.09 M parameters. It is fed exactly as RMA-Mamba-T and -S: (B, 3, H, W)
slices in [0, 1] (the slice in all three channels, or its neighbours with ``context_slices=1``), H and W
multiples of 16, and returns logits of the same size. It has one output, so in training mode ``forward``
returns a 1-tuple, which the deep-supervision loss (a sum over outputs) handles unchanged.

Example::

    model = build_unet().eval()
    logits = model(torch.rand(1, 3, 256, 256))   # (1, 1, 256, 256)
"""

from __future__ import annotations

import torch
from torch import nn

from RMAMambaSegmentationLib.network.variants import Variant

#: Channels per level, finest first.
UNET_WIDTHS = (12, 24, 48, 96, 192)
IN_CHANNELS = 3
#: Input sizes must be multiples of this (four 2x poolings).
SIZE_MULTIPLE = 2 ** (len(UNET_WIDTHS) - 1)
NAME = "UNET"
#: What the rest of the library reads from ``model.variant``; forward FLOPs of one 256x256 slice (2 per MAC).
UNET_VARIANT = Variant(NAME, (0, 0, 0, 0), 0.0, bridge=False, gflop_per_slice=3.42)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 convolution without bias, batch norm, ReLU) layers."""
    layers = []
    for channels_in in (in_channels, out_channels):
        layers += [nn.Conv2d(channels_in, out_channels, kernel_size=3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """The 2D U-Net baseline for (B, 3, H, W) slices; eval ``forward`` gives logits (B, 1, H, W)."""

    def __init__(self, widths: tuple[int, ...] = UNET_WIDTHS, in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        self.variant = UNET_VARIANT
        self.widths = tuple(widths)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in self.widths:
            self.down.append(conv_block(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for coarse, fine in zip(self.widths[:0:-1], self.widths[-2::-1]):
            self.up.append(nn.ConvTranspose2d(coarse, fine, kernel_size=2, stride=2))
            self.merge.append(conv_block(2 * fine, fine))
        self.head = nn.Conv2d(self.widths[0], 1, kernel_size=1)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The one output, as a 1-tuple (the trainer's interface for deep supervision), in any mode."""
        _check_input(x)
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return (self.head(x),)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor]:
        outputs = self.forward_all(x)
        return outputs if self.training else outputs[0]

    def set_scan_backend(self, backend: str) -> UNet:
        """No selective scan here: accepted for interface parity with RMA-Mamba; returns ``self``."""
        return self


def _check_input(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != IN_CHANNELS:
        raise ValueError(f"the U-Net expects a (B, {IN_CHANNELS}, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
        raise ValueError(f"the U-Net needs H and W divisible by {SIZE_MULTIPLE}, got {tuple(x.shape[-2:])}")


def is_unet_state_dict(state_dict) -> bool:
    """The U-Net's layout: ``down.N`` / ``up.N`` / ``merge.N`` modules and a ``head`` convolution."""
    return "head.weight" in state_dict and any(str(k).startswith("down.0.") for k in state_dict)


def build_unet(**_: object) -> UNet:
    """A freshly initialised U-Net (keyword arguments such as ``scan_backend`` are ignored)."""
    return UNet()
