"""A small JSON model card kept beside the weights: how the model expects its input, and where it came from.

``weights/best.pt`` has its card in ``weights/best.json``. Inference reads the intensity preset, the input size
and the variant from it, so a checkpoint trained differently can say so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.imaging.orientation import ORIENTATION_CONVENTION
from RMAMambaSegmentationLib.registry import NETWORK_INPUT_SIZE

logger = logging.getLogger(__name__)

CARD_FORMAT = "rmamamba-model-card/1"
#: Allowed ``context_slices``: 0, the slice repeated in the three input channels (the paper); 1, channels
#: (previous slice, slice, next slice) in the axial stack (2.5D; the volume's end slices stand in for missing ones).
CONTEXT_SLICES = (0, 1)


@dataclass
class ModelCard:
    """What inference must know about a checkpoint, plus free provenance fields."""

    variant: str = "T"
    intensity: IntensityPreset = field(default_factory=IntensityPreset.mri)
    input_size: tuple[int, int] = NETWORK_INPUT_SIZE
    context_slices: int = 0
    orientation: str = ORIENTATION_CONVENTION
    threshold: float = 0.5
    #: Registry fields (``registry.ModelEntry``): "slice-2d" or "window-3d", the 3D window and overlap (3D only).
    inference: str = "slice-2d"
    window: tuple[int, ...] | None = None
    overlap: float | None = None
    modality: str = ""  # what the weights were trained on, as a DICOM Modality code: "MR", "CT" ("" unknown)
    sequence: str = ""  # for MR, the sequence ("T2-SPIR", "T1 in-phase"...; "" unknown)
    training: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "variant": self.variant,
            "intensity": self.intensity.to_dict(),
            "input_size": list(self.input_size),
            "context_slices": self.context_slices,
            "orientation": self.orientation,
            "threshold": self.threshold,
            "inference": self.inference,
            "window": list(self.window) if self.window is not None else None,
            "overlap": self.overlap,
            "modality": self.modality,
            "sequence": self.sequence,
            "training": self.training,
            "provenance": self.provenance,
            "licence": self.licence,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ValueError("a model card must be a JSON object")
        size = data.get("input_size", NETWORK_INPUT_SIZE)
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise ValueError(f"invalid input_size {size!r}")
        intensity = data.get("intensity")
        context = data.get("context_slices", 0)
        if context not in CONTEXT_SLICES or isinstance(context, bool):
            raise ValueError(f"invalid context_slices {context!r} (0 or 1)")
        inference = str(data.get("inference", "slice-2d"))
        if inference not in ("slice-2d", "window-3d"):
            raise ValueError(f"invalid inference {inference!r} (slice-2d or window-3d)")
        window = data.get("window")
        if window is not None and (len(window) != 3 or any(int(w) < 1 for w in window)):
            raise ValueError(f"invalid window {window!r} (three positive sizes)")
        overlap = data.get("overlap")
        if overlap is not None and not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"invalid overlap {overlap!r} (in [0, 1))")
        return cls(
            variant=str(data.get("variant", "T")),
            intensity=IntensityPreset.from_dict(intensity) if intensity is not None else IntensityPreset.mri(),
            input_size=(int(size[0]), int(size[1])),
            context_slices=int(context),
            orientation=str(data.get("orientation", ORIENTATION_CONVENTION)),
            threshold=float(data.get("threshold", 0.5)),
            inference=inference,
            window=tuple(int(w) for w in window) if window is not None else None,
            overlap=float(overlap) if overlap is not None else None,
            modality=str(data.get("modality") or ""),
            sequence=str(data.get("sequence") or ""),
            training=dict(data.get("training") or {}),
            provenance=dict(data.get("provenance") or {}),
            licence=str(data.get("licence", "")),
            notes=str(data.get("notes", "")),
        )


def model_card_path(weights_path: str | Path) -> Path:
    """The card's path for a weights file: same folder, weights stem + ``.json``."""
    path = Path(weights_path)
    return path.with_name(path.stem + ".json")


def read_model_card(weights_path: str | Path) -> ModelCard | None:
    """The card beside ``weights_path``, or None when there is none; CheckpointError when it is malformed."""
    path = model_card_path(weights_path)
    if not path.is_file():
        return None
    try:
        card = ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"model card {path} is not valid: {error}") from error
    logger.debug("model card %s: variant %s, intensity %s", path, card.variant, card.intensity)
    return card


def write_model_card(weights_path: str | Path, card: ModelCard) -> Path:
    """Write ``card`` beside ``weights_path``; returns the card's path."""
    path = model_card_path(weights_path)
    path.write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
