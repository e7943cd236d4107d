"""Before the network: does the scan (and the chosen intensity preset) fit what the weights were trained on?

Each mismatch is one sentence in :func:`scan_warnings`'s list, which goes into ``Provenance.warnings`` (the row's
message in summary.csv, the panel, the Segmentation node's provenance). With ``strict`` :func:`check_scan` raises
:class:`ScanMismatchError` instead. What is compared:

* the DICOM Modality tag (``CT``, ``MR``, ...) with the model card's ``modality``;
* the intensities: CT in Hounsfield units has air at -1000 (at least :data:`CT_AIR_SHARE` of the voxels at or below
  :data:`CT_AIR_HU`); MR has no such values -- against the card's modality and against the preset (a CT window on
  a volume without Hounsfield units, an MRI preset on one with them);
* the preset chosen with the card's preset (e.g. CT with weights trained with MRI-tissue);
* T1 against T2, when both the card's ``sequence`` and the scan's description (DICOM series description, protocol
  or sequence name) name one.

Every model of the registry gets these checks: 2D slice models with their intensity preset, 3D window models
(SRMA-Mamba, which z-scores the volume itself) without the preset comparisons (``preset=None``). A warning names
the remedy that works; the option is spelled for the caller (:func:`option_style`): ``intensity="CT"`` in the Python
API, ``--modality CT`` on the command line.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from RMAMambaSegmentationLib.errors import InvalidImageError
from RMAMambaSegmentationLib.files.dicom_checks import DESCRIPTION_TAGS, MODALITY_TAG
from RMAMambaSegmentationLib.imaging.intensity import WINDOW, IntensityPreset
from RMAMambaSegmentationLib.weights.model_card import ModelCard

logger = logging.getLogger(__name__)

#: A voxel at or below this value is air in Hounsfield units (MR intensities are not that negative).
CT_AIR_HU = -500.0
#: A volume with at least this share of "air" voxels looks like CT.
CT_AIR_SHARE = 0.01
#: At most this many voxels are looked at to judge the intensities (a regular subsample).
_SAMPLE = 1 << 20
#: DICOM tags read into :class:`ScanInfo` (kept as image metadata by :mod:`image_io`).
_MODALITY_WORDS = {"MR": "MR", "MRI": "MR", "CT": "CT"}
_WEIGHTING = re.compile(r"(?<![A-Z0-9])T([12])(?![0-9])", re.IGNORECASE)
#: How a run option is spelled in a warning, per caller: the Python API (and the panel) or the command line.
OPTION_SPELLINGS = {
    "api": {"CT": 'intensity="CT"', "presets": 'intensity="MRI-tissue", "MRI" or "CT"'},
    "cli": {"CT": "--modality CT", "presets": "--intensity MRI-tissue, MRI or CT"},
}
_OPTION_STYLE: ContextVar[str] = ContextVar("rmamamba_option_style", default="api")
#: Measured with the default weights (RMA-Mamba-T, MR T2-SPIR) on the CHAOS CT case of the project data: what the CT
#: preset buys a CT run through MR weights (docs/cli.md, "Foreign scans").
CT_PRESET_EVIDENCE = "on a CHAOS CT scan the default MR weights reached Dice 0.86 with it against 0.65 without"


@contextlib.contextmanager
def option_style(style: str) -> Iterator[None]:
    """Within the block, warnings spell run options for ``style`` (``"api"`` or ``"cli"``)."""
    if style not in OPTION_SPELLINGS:
        raise ValueError(f"unknown option style {style!r}: use {', '.join(OPTION_SPELLINGS)}")
    token = _OPTION_STYLE.set(style)
    try:
        yield
    finally:
        _OPTION_STYLE.reset(token)


def option_text(key: str) -> str:
    """The spelling of option ``key`` (``"CT"``, ``"presets"``) for the current caller (:func:`option_style`)."""
    return OPTION_SPELLINGS[_OPTION_STYLE.get()][key]


class ScanMismatchError(InvalidImageError):
    """With ``strict``: the scan or the preset does not match the weights' model card."""


@dataclass(frozen=True)
class ScanInfo:
    """What the file says about the scan: the DICOM modality (``"MR"``, ``"CT"``...) and its description."""

    modality: str | None = None
    description: str | None = None

    @classmethod
    def from_metadata(cls, get) -> ScanInfo:
        """From a ``get(tag) -> str | None`` lookup of DICOM tags (``"0008|0060"``...)."""
        modality = (get(MODALITY_TAG) or "").strip().upper() or None
        texts = [(get(tag) or "").strip() for tag in DESCRIPTION_TAGS]
        return cls(modality, " / ".join(t for t in texts if t) or None)

    @classmethod
    def from_image(cls, image) -> ScanInfo:
        """From a SimpleITK image's metadata (empty for files that carry no DICOM tags)."""
        keys = set(image.GetMetaDataKeys())
        return cls.from_metadata(lambda tag: image.GetMetaData(tag) if tag in keys else None)


def card_modality(card: ModelCard | None) -> str | None:
    """The card's modality as a DICOM code (``"MR"``, ``"CT"``), or None when it does not say."""
    if card is None or not card.modality:
        return None
    return _MODALITY_WORDS.get(card.modality.strip().upper(), card.modality.strip().upper())


def weighting(text: str | None) -> str | None:
    """``"T1"`` or ``"T2"`` when ``text`` names exactly one of them (``"T2-SPIR"``, ``"t1_vibe"``), else None."""
    found = {f"T{m}" for m in _WEIGHTING.findall(text or "")}
    return found.pop() if len(found) == 1 else None


def ct_air_share(array: np.ndarray) -> float:
    """Share of (a regular subsample of) the voxels at or below :data:`CT_AIR_HU`."""
    flat = np.asarray(array).reshape(-1)
    step = max(1, flat.size // _SAMPLE)
    sample = flat[::step]
    if sample.dtype.kind == "u":
        return 0.0
    return float(np.count_nonzero(sample <= CT_AIR_HU)) / max(sample.size, 1)


def _weights_label(card: ModelCard) -> str:
    parts = [p for p in (card.modality, card.sequence) if p]
    return " ".join(parts) if parts else f"the {card.intensity.label} preset"


def _ct_remedy(preset: IntensityPreset | None) -> str:
    """What to do about a CT run through MR weights: the CT preset when a 2D model runs another one."""
    if preset is None:  # a 3D model z-scores the volume itself: no preset can help
        return "use weights trained on CT"
    if preset.kind == WINDOW:
        return "the CT preset in use helps; weights trained on CT would do better"
    return (f"use weights trained on CT, or at least the CT intensity preset ({option_text('CT')}): "
            f"{CT_PRESET_EVIDENCE}")


def _modality_warnings(looks_ct: bool, preset: IntensityPreset | None, card: ModelCard | None,
                       scan: ScanInfo) -> list[str]:
    """The scan's modality (DICOM tag, else Hounsfield-like intensities) against the card's."""
    trained = card_modality(card)
    if card is None or not trained:
        return []
    if scan.modality and scan.modality != trained:
        remedy = f"; {_ct_remedy(preset)}" if scan.modality == "CT" and trained == "MR" else ""
        return [f"the scan is {scan.modality} (DICOM Modality tag) but the weights were trained on "
                f"{_weights_label(card)}: expect a wrong segmentation{remedy}"]
    if trained == "MR" and looks_ct:
        return [f"the intensities look like CT Hounsfield units (air at -1000) but the weights were trained on "
                f"{_weights_label(card)}: expect a wrong segmentation; {_ct_remedy(preset)}"]
    return []


def _preset_warnings(looks_ct: bool, preset: IntensityPreset, card: ModelCard | None) -> list[str]:
    """The preset in use against the card's and against the intensities."""
    warnings = []
    if card is not None and (preset.kind != card.intensity.kind or preset.name.upper() != card.intensity.name.upper()):
        warnings.append(f"{preset.label} intensity preset with weights trained with {card.intensity.label} "
                        f"({_weights_label(card)}): expect a worse segmentation")
    if preset.kind == WINDOW and not looks_ct:
        warnings.append(f"{preset.label} window preset but the intensities do not look like Hounsfield units "
                        "(no air at -1000)")
    elif preset.kind != WINDOW and looks_ct and card is None:
        warnings.append(f"{preset.label} preset but the intensities look like CT Hounsfield units: choose the CT "
                        f"preset ({option_text('CT')}) and weights trained on CT")
    return warnings


def scan_warnings(
    array: np.ndarray,
    preset: IntensityPreset | None,
    card: ModelCard | None,
    scan: ScanInfo | None = None,
) -> list[str]:
    """One sentence per mismatch between the scan, the preset in use and the weights' model card; ``preset``
    None (a 3D model that normalises the volume itself) skips the preset comparisons."""
    scan = scan or ScanInfo()
    looks_ct = ct_air_share(array) >= CT_AIR_SHARE
    warnings = _modality_warnings(looks_ct, preset, card, scan)
    if preset is not None:
        warnings += _preset_warnings(looks_ct, preset, card)
    trained_weighting = weighting(card.sequence) if card is not None else None
    scan_weighting = weighting(scan.description)
    if trained_weighting and scan_weighting and trained_weighting != scan_weighting and scan.modality != "CT":
        warnings.append(f"the scan's description says {scan_weighting} ({scan.description}) but the weights were "
                        f"trained on {_weights_label(card)}: expect a worse segmentation")  # type: ignore[arg-type]
    return warnings


def check_scan(
    array: np.ndarray,
    preset: IntensityPreset | None,
    card: ModelCard | None,
    scan: ScanInfo | None = None,
    *,
    strict: bool = False,
) -> list[str]:
    """:func:`scan_warnings`; with ``strict`` a mismatch raises :class:`ScanMismatchError` instead."""
    warnings = scan_warnings(array, preset, card, scan)
    if strict and warnings:
        raise ScanMismatchError("scan does not match the weights (strict check): " + "; ".join(warnings))
    return warnings


def missing_card_warning(weights_path: object, preset: IntensityPreset) -> str:
    """The warning for a checkpoint file that has no model card beside it."""
    from RMAMambaSegmentationLib.weights.model_card import model_card_path

    return (f"the weights {weights_path} have no model card ({model_card_path(str(weights_path)).name} beside "
            f"them): using the {preset.label} intensity preset; if they were trained otherwise choose it "
            f"({option_text('presets')}) or put their model card beside them")


def run_scan_checks(
    array: np.ndarray,
    preset: IntensityPreset | None,
    card: ModelCard | None,
    scan: ScanInfo | None,
    *,
    strict: bool,
    weights_path: object = None,
    intensity_chosen: bool = False,
) -> list[str]:
    """The checks of one run, before its network (2D and 3D models alike): :func:`check_scan` (ScanMismatchError
    with ``strict``), plus :func:`missing_card_warning` for a 2D model whose weights file (``weights_path``) has
    no card when no preset was chosen; every warning is logged."""
    warnings = check_scan(array, preset, card, scan, strict=strict)
    if card is None and weights_path is not None and preset is not None and not intensity_chosen:
        warnings.insert(0, missing_card_warning(weights_path, preset))
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
