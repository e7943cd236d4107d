"""The variant record every member of the model family carries as ``model.variant`` (torch-free).

The 2D RMA-Mamba sizes (T and S) are tabled here; SRMA-Mamba and the U-Net baseline define their own record beside
their network (``srma_mamba.SRMA_VARIANT``, ``unet.UNET_VARIANT``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """What tells the family members apart (``name`` is the registry key: "T", "S", "SRMA", "UNET")."""

    name: str
    depths: tuple[int, int, int, int]
    drop_path_rate: float
    bridge: bool
    gflop_per_slice: float  # forward FLOPs of one 256x256 slice (multiply-adds counted as 2)


#: RMA-Mamba-T and -S: encoder depths, drop-path rate, bridge VSS blocks, cost.
VARIANTS = {
    "T": Variant("T", (2, 2, 5, 2), 0.2, bridge=False, gflop_per_slice=13.2),
    "S": Variant("S", (2, 2, 15, 2), 0.3, bridge=True, gflop_per_slice=27.4),
}
