"""SRMA-Mamba (Zeng et al. 2025): the volumetric model of the family (spec ``srma_mamba_architecture.md``).

Input (B, 1, I, J, K), float32, the axes of the NIfTI voxel array (i, j, k), z-scored over non-zero voxels. In eval
mode ``forward`` returns the final logits (B, 1, I, J, K); in training mode the four deep-supervision logit maps
``(out1, out2, out3, out4)``, finest first, each resized to (I, J, K). Module paths follow the official state dict
(484 keys, 18,300,244 parameters), so the authors' checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from RMAMambaSegmentationLib.network.backbone import _init_encoder_module
from RMAMambaSegmentationLib.network.srma_blocks import (
    BasicConv3d,
    GSCBlock,
    OutBlock3d,
    SpatialReverseMambaAttention,
    downsampling3d,
    sabmamba_block,
    stem,
    upsample3d,
)
from RMAMambaSegmentationLib.network.ss2d import set_scan_backend
from RMAMambaSegmentationLib.network.variants import Variant

STAGE_WIDTHS_3D = (48, 96, 192, 384)
DECODER_WIDTH_3D = 16
#: The encoder's drop-path rates: linspace(0, 0.1, 4) (the official class swallows the yaml's 0.2, spec 2).
ENCODER_DROP_PATH = 0.1
#: Sizes that every stage halves exactly (four stride-2 stages).
SIZE_MULTIPLE = 16
#: The authors' sliding window (i, j, k) and its overlap.
DEFAULT_WINDOW = (224, 224, 64)
#: Forward FLOPs per input voxel: convolutions and matrix products as counted by ``torch.utils.flop_counter``
#: (multiply-add = 2), exact for sizes divisible by 16 (every layer then scales with the voxel count); the scan's
#: element-wise work (about 2 % more) is not included. 224 x 224 x 64 -> 316.9 GFLOP.
FLOPS_PER_VOXEL = 98674.9453125
NAME = "SRMA"
#: What the rest of the library reads from ``model.variant`` (its ``name`` says which family member it is).
SRMA_VARIANT = Variant(NAME, (1, 1, 1, 1), ENCODER_DROP_PATH, bridge=False, gflop_per_slice=float("nan"))


class SABMambaEncoder(nn.Module):
    """Stem, four stages of (GSC, SABMamba) with 3D downsampling; returns four LayerNorm-ed channel-first maps."""

    def __init__(self, widths: tuple[int, ...] = STAGE_WIDTHS_3D, drop_path_rate: float = ENCODER_DROP_PATH) -> None:
        super().__init__()
        self.widths = tuple(widths)
        rates = torch.linspace(0, drop_path_rate, len(widths), device="cpu").tolist()
        self.patch_embed = stem(widths[0])
        stages = []
        for index, width in enumerate(widths):
            blocks = nn.Sequential(GSCBlock(width), sabmamba_block(width, rates[index]))
            down = downsampling3d(width) if index < len(widths) - 1 else nn.Identity()
            stages.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=down)))
        self.layers = nn.ModuleList(stages)
        for index, width in enumerate(widths):
            self.add_module(f"outnorm{index}", nn.LayerNorm(width))
        self.apply(_init_encoder_module)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        features = []
        for index, stage in enumerate(self.layers):
            out = stage.blocks(x)
            features.append(getattr(self, f"outnorm{index}")(out).permute(0, 4, 1, 2, 3).contiguous())
            if index < len(self.layers) - 1:
                x = stage.downsample(out)
        return features


class SRMAMamba(nn.Module):
    """SRMA-Mamba for binary liver segmentation of single-channel volumes (B, 1, I, J, K)."""

    name = NAME
    dimensions = 3
    variant = SRMA_VARIANT

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SABMambaEncoder()
        for index, width in enumerate(STAGE_WIDTHS_3D, start=1):
            self.add_module(f"translayer{index}_st", BasicConv3d(width, DECODER_WIDTH_3D))
        self.out_conv1 = OutBlock3d(DECODER_WIDTH_3D, 1)
        self.attention1 = SpatialReverseMambaAttention(DECODER_WIDTH_3D)
        self.attention2 = SpatialReverseMambaAttention(DECODER_WIDTH_3D)
        self.attention3 = SpatialReverseMambaAttention(DECODER_WIDTH_3D)

    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder logit maps ``[a1, a2, a3, a4]`` at 1/2 ... 1/16 of the input size."""
        trans = [getattr(self, f"translayer{i}_st")(f) for i, f in enumerate(features, start=1)]
        a4 = self.out_conv1(trans[3])
        a3 = self.attention3(trans[2], a4)
        a2 = self.attention2(trans[1], a3)
        a1 = self.attention1(trans[0], a2)
        return [a1, a2, a3, a4]

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All four outputs ``(out1, out2, out3, out4)`` at the input size, in any mode."""
        check_volume_input(x)
        size = tuple(x.shape[-3:])
        a1, a2, a3, a4 = self.decode(self.encoder(x))
        return upsample3d(a1, size), upsample3d(a2, size), upsample3d(a3, size), upsample3d(a4, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.training:
            return self.forward_all(x)
        check_volume_input(x)
        return upsample3d(self.decode(self.encoder(x))[0], tuple(x.shape[-3:]))

    def set_scan_backend(self, backend: str) -> SRMAMamba:
        """Select the selective-scan backend of every SS2D layer; returns ``self``."""
        set_scan_backend(self, backend)
        return self


def check_volume_input(x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is (B, 1, I, J, K) with every spatial size >= 2."""
    if x.dim() != 5 or x.shape[1] != 1:
        raise ValueError(f"SRMA-Mamba expects a (B, 1, I, J, K) tensor, got shape {tuple(x.shape)}")
    if min(x.shape[2:]) < 2:
        raise ValueError(f"SRMA-Mamba needs at least 2 voxels along every axis, got {tuple(x.shape[2:])}")


def gflop_per_window(window: tuple[int, int, int] = DEFAULT_WINDOW) -> float:
    """Forward GFLOP of one window (see :data:`FLOPS_PER_VOXEL`)."""
    return FLOPS_PER_VOXEL * window[0] * window[1] * window[2] / 1e9


def build_srma_mamba(*, scan_backend: str = "auto") -> SRMAMamba:
    """SRMA-Mamba with freshly initialised weights.

    Example::

        model = build_srma_mamba().eval()
        logits = model(torch.randn(1, 1, 64, 64, 32))   # (1, 1, 64, 64, 32)
    """
    return SRMAMamba().set_scan_backend(scan_backend)
