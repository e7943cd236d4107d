"""``build_model``: one entry point that builds any member of the family with freshly initialised weights."""

from __future__ import annotations

from torch import nn

from RMAMambaSegmentationLib.network.rma_mamba import build_rma_mamba
from RMAMambaSegmentationLib.network.srma_mamba import build_srma_mamba
from RMAMambaSegmentationLib.network.unet import build_unet
from RMAMambaSegmentationLib.network.variants import VARIANTS
from RMAMambaSegmentationLib.registry import SRMA, UNET, normalise_variant


def build_model(variant: str = "T", *, scan_backend: str = "auto") -> nn.Module:
    """Build RMA-Mamba-``variant`` ("T" or "S"; "SRMA" gives the 3D SRMA-Mamba, "UNET" the 2D U-Net baseline)
    with freshly initialised weights. Spellings such as "rma-mamba-s", "SRMA-Mamba" or "U-Net" are accepted.

    Example::

        model = build_model("T").eval()
        logits = model(torch.rand(1, 3, 256, 256))   # (1, 1, 256, 256)
    """
    key = normalise_variant(variant)
    if key == SRMA:
        return build_srma_mamba(scan_backend=scan_backend)
    if key == UNET:
        return build_unet()
    if key not in VARIANTS:
        raise ValueError(f"unknown RMA-Mamba variant {variant!r}; choose 'T', 'S', 'SRMA' or 'UNET'")
    return build_rma_mamba(key, scan_backend=scan_backend)
