"""One registry of the model family: its names and labels, how each member is fed, read out and recognised.

The lowest layer of the library: torch-free, it imports nothing from the rest of it.

Each :class:`ModelEntry` carries the label users see ("RMA-Mamba-T", "SRMA-Mamba", ...: the one table of labels),
whether the network sees 2D slices (RMA-Mamba-T, -S and the U-Net baseline) or 3D windows (SRMA-Mamba), its input
channels, intensity recipe, window (slice size or 3D window) and overlap, which output is the prediction, the
threshold, and how its checkpoints are recognised. A model trained with ``rmamamba train`` records the same fields
in its model card; :func:`entry_for` applies them over the family's defaults.

Example::

    entry = registry.entry("SRMA")
    entry.inference, entry.window, entry.overlap     # ('window-3d', (224, 224, 64), 0.25)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SLICE_2D = "slice-2d"
#: The 2D members' network input size (rows, columns), as in the official training; the default of the model card
#: and of ``imaging.preprocessing``.
NETWORK_INPUT_SIZE = (256, 256)
WINDOW_3D = "window-3d"
#: SRMA-Mamba's intensity recipe: z-score over the volume's non-zero voxels (zeros stay 0), as the authors' test.
ZSCORE_NONZERO = "zscore-nonzero"
#: The 2D models' recipe: an :class:`~volume.intensity.IntensityPreset` mapping the volume to [0, 1].
PRESET_01 = "preset-0-1"
SRMA = "SRMA"
#: Spellings of SRMA-Mamba (upper case, without "-" and "_"); the network builder accepts the same.
SRMA_ALIASES = ("SRMA", "SRMAMAMBA")
#: The 2D U-Net baseline (``--model unet``); spellings "unet", "U-Net", "u_net" all select it.
UNET = "UNET"
UNET_ALIASES = ("UNET",)


def normalise_variant(variant: str) -> str:
    """"T", "S", "SRMA" or "UNET" from the spellings users type ("t", "RMA-Mamba-S", "srma-mamba", "U-Net", ...)."""
    key = str(variant).strip().upper().replace("_", "-")
    for prefix in ("RMAMAMBA-", "RMA-MAMBA-"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    compact = key.replace("-", "")
    if compact in UNET_ALIASES:
        return UNET
    return SRMA if compact in SRMA_ALIASES else key


@dataclass(frozen=True)
class ModelEntry:
    """How one member of the family is used."""

    key: str  # "T", "S", "SRMA", "UNET": what build_model / --model take
    label: str  # what users see: "RMA-Mamba-T", "RMA-Mamba-S", "SRMA-Mamba", "U-Net (2D baseline)"
    inference: str  # SLICE_2D or WINDOW_3D
    channels: int  # network input channels
    intensity: str  # PRESET_01 or ZSCORE_NONZERO
    window: tuple[int, ...]  # slice size (rows, cols) or 3D window (i, j, k) in the network's axes
    overlap: float  # fraction of the window shared by neighbouring windows (0 for slices)
    output_index: int  # which deep-supervision output is the prediction (0 = finest)
    threshold: float
    recognised_by: str  # how its checkpoints are told apart

    @property
    def is_volumetric(self) -> bool:
        return self.inference == WINDOW_3D

    def with_overrides(self, window: Sequence[int] | None = None, overlap: float | None = None,
                       threshold: float | None = None) -> ModelEntry:
        """A copy with another window, overlap or threshold (validated)."""
        changes: dict[str, Any] = {}
        if window is not None:
            window = tuple(int(w) for w in window)
            if len(window) != len(self.window) or min(window) < 1:
                raise ValueError(f"{self.label} needs a window of {len(self.window)} positive sizes, got {window}")
            if self.is_volumetric and any(w % 16 for w in window):
                raise ValueError(f"{self.label} windows must be multiples of 16 along every axis, got {window}")
            changes["window"] = window
        if overlap is not None:
            if not 0.0 <= float(overlap) < 1.0:
                raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
            changes["overlap"] = float(overlap)
        if threshold is not None:
            changes["threshold"] = float(threshold)
        return dataclasses.replace(self, **changes) if changes else self


_2D_RECOGNITION = ("2D RMA-Mamba layout: encoder.layers.* with 4-D convs and an out_conv1.weight head; "
                   "{detail}")
ENTRIES: dict[str, ModelEntry] = {
    "T": ModelEntry("T", "RMA-Mamba-T", SLICE_2D, 3, PRESET_01, NETWORK_INPUT_SIZE, 0.0, 0, 0.5,
                    _2D_RECOGNITION.format(detail="no st_block bridges, 2 blocks in stage 3")),
    "S": ModelEntry("S", "RMA-Mamba-S", SLICE_2D, 3, PRESET_01, NETWORK_INPUT_SIZE, 0.0, 0, 0.5,
                    _2D_RECOGNITION.format(detail="st_block1..4 bridges, 15 blocks in stage 3")),
    "SRMA": ModelEntry("SRMA", "SRMA-Mamba", WINDOW_3D, 1, ZSCORE_NONZERO, (224, 224, 64), 0.25, 0, 0.5,
                       "3D layout: MONAI-style out_conv1.conv.conv head and 5-D encoder convs (484 keys)"),
    UNET: ModelEntry(UNET, "U-Net (2D baseline)", SLICE_2D, 3, PRESET_01, NETWORK_INPUT_SIZE, 0.0, 0, 0.5,
                     "2D U-Net layout: down.0..4 / up.0..3 / merge.0..3 conv blocks and a head.weight 1x1 conv"),
}


#: The models the Slicer panel offers, in its order (its choices are their labels).
PANEL_MODELS = ("T", "S", SRMA, UNET)


def panel_choices() -> list[str]:
    """The panel's model choices: "RMA-Mamba-T", "RMA-Mamba-S", "SRMA-Mamba", "U-Net (2D baseline)"."""
    return [ENTRIES[key].label for key in PANEL_MODELS]


def variant_of_choice(choice: str) -> str:
    """The registry key of a panel choice (its label, or any spelling :func:`entry` takes)."""
    for key in PANEL_MODELS:
        if ENTRIES[key].label == choice:
            return key
    return entry(choice.split("(")[0].strip()).key


def entry(key: str) -> ModelEntry:
    """The entry for "T", "S", "SRMA" or "UNET" (any usual spelling: "RMA-Mamba-S", "srma-mamba", "unet", ...)."""
    name = normalise_variant(key)
    if name not in ENTRIES:
        raise ValueError(f"unknown model {key!r}: choose one of {', '.join(ENTRIES)}")
    return ENTRIES[name]


def entry_for(variant: str | None, card: Any = None) -> ModelEntry:
    """The family entry of ``variant`` (default T) with what a trained model's card records applied over it."""
    base = entry(variant or (getattr(card, "variant", None) if card is not None else None) or "T")
    if card is None:
        return base
    inference = getattr(card, "inference", None) or base.inference
    if inference != base.inference:
        raise ValueError(f"model card says {inference} inference but {base.label} uses {base.inference}")
    window = getattr(card, "window", None) or (None if base.is_volumetric else getattr(card, "input_size", None))
    overlap = getattr(card, "overlap", None)
    return base.with_overrides(window=window, overlap=overlap, threshold=getattr(card, "threshold", None))


__all__ = ["ENTRIES", "NETWORK_INPUT_SIZE", "PANEL_MODELS", "SLICE_2D", "SRMA", "UNET", "WINDOW_3D", "ZSCORE_NONZERO",
           "ModelEntry", "entry", "entry_for", "normalise_variant", "panel_choices", "variant_of_choice"]
