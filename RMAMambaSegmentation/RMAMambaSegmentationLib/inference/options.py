"""The options of one segmentation run, as one object: from the panel, through the worker process, to
:func:`~RMAMambaSegmentationLib.inference.pipeline.segment_array`.

Torch-free and JSON-friendly (:meth:`RunOptions.to_dict` / :meth:`RunOptions.from_dict`), so the panel can build one
without importing PyTorch and the worker can receive it on a pipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset


@dataclass(frozen=True)
class RunOptions:
    """How to segment: which weights, where, with which intensity preset, and what to keep.

    Attributes:
        weights: checkpoint file; None = the default weights installed with the extension.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (``"gpu"`` is accepted and normalised by the caller).
        variant: ``"T"``/``"S"`` to check the weights' variant; None accepts either.
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
        """``options`` with ``keywords`` (field names) applied; TypeError names an unknown keyword."""
        unknown = sorted(set(keywords) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}: use {', '.join(cls.names())}")
        base = options if options is not None else cls()
        return replace(base, **keywords) if keywords else base

    def checked(self) -> RunOptions:
        """The same options with ``variant`` upper-cased, after checking every value (ValueError names the bad one).

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
        return replace(self, variant=variant, batch_size=batch, postprocess=bool(self.postprocess),
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
