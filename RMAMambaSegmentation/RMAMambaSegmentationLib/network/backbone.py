"""The VMamba v1 encoder used by RMA-Mamba: conv stem, four VSS stages, conv downsampling (spec 5.1-5.6)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from RMAMambaSegmentationLib.network.layers import Permute, trunc_normal_
from RMAMambaSegmentationLib.network.ss2d import SS2D
from RMAMambaSegmentationLib.network.vss_block import VSSBlock

STAGE_WIDTHS = (96, 192, 384, 768)


def patch_embedding(in_channels: int = 3, width: int = 96) -> nn.Sequential:
    """Two stride-2 3x3 convs with LayerNorms, (B, 3, H, W) -> channel-last (B, H/4, W/4, width)."""
    half = width // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, half, kernel_size=3, stride=2, padding=1),
        Permute(0, 2, 3, 1),
        nn.LayerNorm(half),
        Permute(0, 3, 1, 2),
        nn.GELU(),
        nn.Conv2d(half, width, kernel_size=3, stride=2, padding=1),
        Permute(0, 2, 3, 1),
        nn.LayerNorm(width),
    )


def downsampling(width: int) -> nn.Sequential:
    """Channel-last (B, h, w, C) -> (B, ceil(h/2), ceil(w/2), 2C) with a stride-2 3x3 conv and a LayerNorm."""
    return nn.Sequential(
        Permute(0, 3, 1, 2),
        nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1),
        Permute(0, 2, 3, 1),
        nn.LayerNorm(2 * width),
    )


class VMambaEncoder(nn.Module):
    """Returns the four stage outputs, LayerNorm-ed, channel-first and contiguous."""

    def __init__(self, depths: Sequence[int], drop_path_rate: float, widths: Sequence[int] = STAGE_WIDTHS) -> None:
        super().__init__()
        self.depths, self.widths = tuple(depths), tuple(widths)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.patch_embed = patch_embedding(3, widths[0])
        if len(self.depths) != len(self.widths):
            raise ValueError(f"{len(self.depths)} stage depths but {len(self.widths)} stage widths")
        stages = []
        for index, (depth, width) in enumerate(zip(depths, widths)):
            first = sum(depths[:index])
            blocks = nn.Sequential(*(VSSBlock(width, drop_path=rates[first + j]) for j in range(depth)))
            down = downsampling(width) if index < len(depths) - 1 else nn.Identity()
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
            norm = getattr(self, f"outnorm{index}")
            features.append(norm(out).permute(0, 3, 1, 2).contiguous())
            if index < len(self.layers) - 1:
                x = stage.downsample(out)
        return features


def _init_encoder_module(module: nn.Module) -> None:
    """VMamba's encoder init: truncated-normal Linear weights, zero biases, unit LayerNorms, "v0" SSM params."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, SS2D):
        module.reset_ssm_parameters()
