"""RMA-Mamba liver segmentation: the network, the volume pipeline, the MRML logic and the command line.

Public names (imported lazily so that ``import RMAMambaSegmentationLib`` stays cheap and works without Slicer):

* :func:`build_model` -- the RMA-Mamba-T or -S network (``"SRMA"``: the 3D SRMA-Mamba) as a ``torch.nn.Module``.
* :func:`load_checkpoint`, :func:`load_model` -- read weights safely and detect the variant.
* :func:`segment_image` -- segment the liver in a 3D SimpleITK image.
* :class:`SegmentationLogic` -- the same, on MRML volume nodes (needs Slicer or the ``slicer-core`` wheel).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "RMAMambaSegmentationLib.network.build",
    "RMAMamba": "RMAMambaSegmentationLib.network.rma_mamba",
    "load_checkpoint": "RMAMambaSegmentationLib.weights.checkpoints",
    "load_model": "RMAMambaSegmentationLib.weights.checkpoints",
    "segment_image": "RMAMambaSegmentationLib.inference.pipeline",
    "SegmentationResult": "RMAMambaSegmentationLib.inference.result",
    "SegmentationLogic": "RMAMambaSegmentationLib.mrml.segmentation_logic",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
