"""RMA-Mamba-T and -S: the VMamba encoder, the optional bridge VSS blocks (S) and the RMA decoder."""

from __future__ import annotations

import torch
from torch import nn

from RMAMambaSegmentationLib.network.backbone import STAGE_WIDTHS, VMambaEncoder
from RMAMambaSegmentationLib.network.decoder import DECODER_WIDTH, BasicConv2d, ReverseMambaAttention, upsample_to
from RMAMambaSegmentationLib.network.ss2d import set_scan_backend
from RMAMambaSegmentationLib.network.variants import VARIANTS, Variant
from RMAMambaSegmentationLib.network.vss_block import channel_first_vss_block

#: Slices per forward pass in CPU inference; larger batches are split (same result, better cache use).
CPU_EVAL_MICRO_BATCH = 1


class RMAMamba(nn.Module):
    """RMA-Mamba for binary liver segmentation of (B, 3, H, W) slices in [0, 1].

    In eval mode ``forward`` returns the final logits (B, 1, H, W). In training mode it returns the four
    deep-supervision logit maps ``(out1, out2, out3, out4)``, finest first, each upsampled to (H, W).
    """

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.variant = variant
        self.encoder = VMambaEncoder(variant.depths, variant.drop_path_rate)
        for index, width in enumerate(STAGE_WIDTHS, start=1):
            if variant.bridge:
                self.add_module(f"st_block{index}", channel_first_vss_block(width, drop_path=0.1))
            self.add_module(f"translayer{index}_st", BasicConv2d(width, DECODER_WIDTH, kernel_size=1))
        self.out_conv1 = nn.Conv2d(DECODER_WIDTH, 1, kernel_size=1)
        self.attention1 = ReverseMambaAttention(DECODER_WIDTH)
        self.attention2 = ReverseMambaAttention(DECODER_WIDTH)
        self.attention3 = ReverseMambaAttention(DECODER_WIDTH)

    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder logit maps ``[a1, a2, a3, a4]`` at 1/4 ... 1/32 of the input size."""
        trans = []
        for index, feature in enumerate(features, start=1):
            if self.variant.bridge:
                feature = getattr(self, f"st_block{index}")(feature)
            trans.append(getattr(self, f"translayer{index}_st")(feature))
        a4 = self.out_conv1(trans[3])
        a3 = self.attention3(trans[2], a4)
        a2 = self.attention2(trans[1], a3)
        a1 = self.attention1(trans[0], a2)
        return [a1, a2, a3, a4]

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All four outputs ``(out1, out2, out3, out4)`` at the input size, in any mode."""
        _check_input(x)
        size = x.shape[-2:]
        a1, a2, a3, a4 = self.decode(self.encoder(x))
        return upsample_to(a1, size), upsample_to(a2, size), upsample_to(a3, size), upsample_to(a4, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.training:
            return self.forward_all(x)
        _check_input(x)
        if x.device.type == "cpu" and x.shape[0] > CPU_EVAL_MICRO_BATCH:
            # On a CPU the activations of one slice fit in cache; a whole batch does not and runs slower per slice.
            return torch.cat([self(part) for part in x.split(CPU_EVAL_MICRO_BATCH)])
        a1 = self.decode(self.encoder(x))[0]
        return upsample_to(a1, x.shape[-2:])

    def set_scan_backend(self, backend: str) -> RMAMamba:
        """Select the selective-scan backend of every SS2D layer; returns ``self``."""
        set_scan_backend(self, backend)
        return self


def _check_input(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"RMA-Mamba expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")


def build_rma_mamba(variant: str = "T", *, scan_backend: str = "auto") -> RMAMamba:
    """RMA-Mamba-``variant`` ("T" or "S") with freshly initialised weights (any family member:
    :func:`~RMAMambaSegmentationLib.network.build.build_model`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown RMA-Mamba variant {variant!r}; choose 'T' or 'S'")
    return RMAMamba(VARIANTS[variant]).set_scan_backend(scan_backend)
