"""The options of one segmentation run, as one object: from the panel, the command line and the batch, through the
worker process, to :func:`~RMAMambaSegmentationLib.inference.pipeline.segment_array`.

:meth:`RunOptions.build` is the one place where keywords become options (older keyword spellings such as
``probability`` or ``probabilityMap`` included, see :data:`KEYWORD_ALIASES`); :meth:`RunOptions.checked` is the one
place where they are checked and normalised. Torch-free and JSON-friendly (:meth:`RunOptions.to_dict` /
:meth:`RunOptions.from_dict`), so the panel can build one without importing PyTorch and the worker can receive it
on a pipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.runtime.devices import device_from_choice

#: Public keyword spellings kept for callers (``segment_image(probability=...)``, ``SegmentationLogic.segment(
#: probabilityMap=..., batchSize=...)``, ``segment_files(probability=...)``) -> the option's one name.
KEYWORD_ALIASES = {"probability": "probability_map", "probabilityMap": "probability_map", "batchSize": "batch_size"}


@dataclass(frozen=True)
class RunOptions:
    """How to segment: which weights, where, with which intensity preset, and what to keep.

    Attributes:
        weights: checkpoint file; None = the default weights installed with the extension.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``; panel labels ("CPU", "CUDA GPU", the old
            "GPU") are normalised by :meth:`checked`.
        variant: registry model ("T", "S", "SRMA", "UNET"): the weights must hold it, and without ``weights`` the
            weights shipped for it are used; None accepts any.
        intensity: preset name ("MRI", "MRI-tissue", "CT") or object; None = the weights' model card, else MRI.
        postprocess: keep the largest 3D component and fill holes.
        probability_map: also return the whole-volume liver probability (float32; costs 4 bytes per voxel).
        batch_size: slices per network call (3D windows per call for volumetric models); None = automatic.
        window_size: a 3D-window model's window (i, j, k); None = its registry entry or model card.
        overlap: a 3D-window model's window overlap in [0, 1); None = its registry entry or model card.
        strict: a scan that does not match the model card (modality, sequence, intensity range) is an error
            instead of a warning.
        compile: run the 2D network through ``torch.compile`` where a compiler is present (minutes to compile on
            a CPU, so off by default there).
    """

    weights: str | None = None
    device: str = "auto"
    variant: str | None = None
    intensity: IntensityPreset | str | None = None
    postprocess: bool = True
    probability_map: bool = False
    batch_size: int | None = None
    window_size: tuple[int, ...] | None = None
    overlap: float | None = None
    strict: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.weights is not None and not isinstance(self.weights, str):
            object.__setattr__(self, "weights", str(self.weights))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def build(cls, options: RunOptions | None = None, **keywords: Any) -> RunOptions:
        """``options`` (default: ``RunOptions()``) with ``keywords`` applied on top.

        Keywords are field names or their :data:`KEYWORD_ALIASES`; TypeError names an unknown keyword, or an option
        given twice under two spellings.
        """
        values: dict[str, Any] = {}
        for key, value in keywords.items():
            name = KEYWORD_ALIASES.get(key, key)
            if name in values:
                raise TypeError(f"run option {name} given twice (as {key} and under another spelling)")
            values[name] = value
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}: use {', '.join(cls.names())}")
        base = options if options is not None else cls()
        return replace(base, **values) if values else base

    def checked(self) -> RunOptions:
        """The same options normalised (``variant`` upper-cased, ``device`` a device name, numbers and flags of
        their types), after checking every value (ValueError names the bad one).

        Nothing is read from disk: a missing weights file is the caller's check.
        """
        variant = None if self.variant is None else registry.normalise_variant(self.variant)
        if variant is not None and variant not in registry.ENTRIES:
            choices = ", ".join(repr(key) for key in registry.ENTRIES)
            raise ValueError(f"unknown model variant {self.variant!r}: use {choices}")
        if isinstance(self.intensity, str):
            IntensityPreset.from_name(self.intensity)  # "unknown intensity preset ..."
        elif self.intensity is not None and not isinstance(self.intensity, IntensityPreset):
            raise ValueError(f"intensity must be a preset name or an IntensityPreset, got {self.intensity!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1):
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        batch = None if self.batch_size is None else int(self.batch_size)
        window = None if self.window_size is None else tuple(int(w) for w in self.window_size)
        if window is not None and (len(window) != 3 or min(window) < 1):
            raise ValueError(f"window size must be three positive voxel counts (i, j, k), got {self.window_size}")
        overlap = None if self.overlap is None else float(self.overlap)
        if overlap is not None and not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")
        device = device_from_choice(None if self.device is None else str(self.device))
        return replace(self, variant=variant, device=device, batch_size=batch, postprocess=bool(self.postprocess),
                       probability_map=bool(self.probability_map), window_size=window, overlap=overlap,
                       strict=bool(self.strict), compile=bool(self.compile))

    @property
    def weights_path(self) -> Path | None:
        return Path(self.weights) if self.weights else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (an intensity preset object becomes its dict)."""
        data = asdict(self)
        if isinstance(self.intensity, IntensityPreset):
            data["intensity"] = self.intensity.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        values = dict(data)
        if isinstance(values.get("intensity"), dict):
            values["intensity"] = IntensityPreset.from_dict(values["intensity"])
        return cls.build(**values)
