"""A small JSON model card kept beside the weights: how the model expects its input, and where it came from.

``weights/best.pt`` has its card in ``weights/best.json``. Inference reads the intensity preset, the input size
and the variant from it, so a checkpoint trained differently can say so; the quality verdict reads its
model-uncertainty limits (``quality``, :class:`QualityThresholds`) from it.
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
class QualityThresholds:
    """The quality verdict's model-uncertainty limits for one model (``quality`` in the card), with the record of
    how they were calibrated on cases the model never trained on (free keys: the cases, the stated false-alarm rate
    on unseen good cases, the detection rate on foreign scans, the table and script that made them).

    ``uncertain_share_max``: the most liver voxels with 0.1 < p < 0.9 an accepted result may have (a share);
    ``outside_share_max``: the most thresholded voxels outside the largest component (a share).
    """

    uncertain_share_max: float
    outside_share_max: float
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("uncertain_share_max", "outside_share_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
                raise ValueError(f"invalid quality.{name} {value!r} (a share in (0, 1])")
            setattr(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"uncertain_share_max": self.uncertain_share_max, "outside_share_max": self.outside_share_max,
                "calibration": dict(self.calibration)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityThresholds:
        if not isinstance(data, dict):
            raise ValueError("quality must be a JSON object")
        missing = [key for key in ("uncertain_share_max", "outside_share_max") if key not in data]
        if missing:
            raise ValueError(f"quality lacks {', '.join(missing)}")
        return cls(data["uncertain_share_max"], data["outside_share_max"], dict(data.get("calibration") or {}))


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
    #: The quality verdict's model-uncertainty limits (None: the verdict's documented defaults).
    quality: QualityThresholds | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
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
        if self.quality is not None:  # cards without calibration keep their earlier keys
            data["quality"] = self.quality.to_dict()
        return data

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
            quality=QualityThresholds.from_dict(data["quality"]) if data.get("quality") is not None else None,
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
