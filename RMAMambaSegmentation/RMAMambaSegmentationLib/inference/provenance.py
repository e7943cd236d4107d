"""Provenance of a segmentation: MRML node attributes (saved with the scene) and the same values as tags of the
Liver segment (saved in the ``.seg.nrrd`` header, where node attributes are not).

Names are prefixed ``RMAMamba.``; values are plain strings without ``|`` so any tool can read them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import PureWindowsPath
from typing import Any

PREFIX = "RMAMamba."
MODEL_VARIANT = PREFIX + "ModelVariant"
WEIGHTS_SHA256 = PREFIX + "WeightsSHA256"
WEIGHTS_FILE = PREFIX + "WeightsFile"
VERSION = PREFIX + "Version"
DEVICE = PREFIX + "Device"
DATE = PREFIX + "Date"
INTENSITY_PRESET = PREFIX + "IntensityPreset"
POSTPROCESSED = PREFIX + "PostProcessed"
LIVER_VOLUME_ML = PREFIX + "LiverVolumeMl"
SOURCE_VOLUME = PREFIX + "SourceVolume"
QUALITY = PREFIX + "Quality"
QUALITY_MEASURES = PREFIX + "QualityMeasures"
WARNINGS = PREFIX + "Warnings"

ALL_ATTRIBUTES = (
    MODEL_VARIANT,
    WEIGHTS_SHA256,
    WEIGHTS_FILE,
    VERSION,
    DEVICE,
    DATE,
    INTENSITY_PRESET,
    POSTPROCESSED,
    LIVER_VOLUME_ML,
    SOURCE_VOLUME,
    QUALITY,
    QUALITY_MEASURES,
    WARNINGS,
)


def now_iso() -> str:
    """Current local date and time, ISO 8601 with the UTC offset, to the second."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def result_values(info: Any, volume_ml: float, source: str | None, weights: object = None) -> dict[str, object]:
    """The provenance of one result (an ``inference.Provenance``), as attribute name -> value: the same values
    for the Segmentation node (panel, console logic) and the ``.seg.nrrd`` of ``rmamamba segment``.

    ``weights``: the weights file asked for, used when the provenance knows none (a model given in code). The
    weights are recorded by file name and sha256, never by their local folder (the ``.seg.nrrd`` and the scene
    travel to other machines).
    """
    from RMAMambaSegmentationLib import __version__
    quality = quality_verdict(info)
    return {
        MODEL_VARIANT: _model_label(info.variant),
        WEIGHTS_SHA256: info.weights_sha256 or "unknown (model given in code)",
        WEIGHTS_FILE: weights_file_name(info.weights_path or weights),
        VERSION: __version__,
        DEVICE: info.device,
        DATE: now_iso(),
        INTENSITY_PRESET: info.intensity.label,
        POSTPROCESSED: "yes" if info.postprocessed else "no",
        LIVER_VOLUME_ML: f"{volume_ml:.2f}",
        SOURCE_VOLUME: source,
        QUALITY: quality.summary() if quality is not None else None,
        QUALITY_MEASURES: (measures_text(quality.measures)
                           if quality is not None else None),
        WARNINGS: "; ".join(info.warnings) if info.warnings else "none",
    }


def weights_file_name(weights: object) -> str | None:
    """The weights file's name without its folder (``/home/me/w/rmamamba_t.pt`` -> ``rmamamba_t.pt``)."""
    if weights is None or str(weights).strip() == "":
        return None
    return PureWindowsPath(str(weights)).name  # "/" and "\\" both separate folders here


def _model_label(variant: str | None) -> str:
    """"RMA-Mamba-T", "SRMA-Mamba", ... from a registry key (the key itself when the registry does not know it)."""
    from RMAMambaSegmentationLib import registry

    if not variant:
        return "unknown"
    try:
        return registry.entry(variant).label
    except ValueError:
        return str(variant)


def _as_text(value: object) -> str:
    return "unknown" if value is None else str(value).replace("|", "/")


def set_provenance(node, values: Mapping[str, object]) -> None:
    """Write ``values`` (attribute name -> value; None becomes "unknown") as attributes of ``node``."""
    for name, value in values.items():
        node.SetAttribute(name, _as_text(value))


def set_segment_provenance(segment, values: Mapping[str, object]) -> None:
    """Write ``values`` as tags of a ``vtkSegment`` (kept in ``.seg.nrrd`` files)."""
    for name, value in values.items():
        segment.SetTag(name, _as_text(value))


def measures_text(measures: dict[str, float]) -> str:
    """The verdict's measures as the ``QualityMeasures`` value: ``"liver_ml=1646 uncertain_share=0.1464 ..."``."""
    return " ".join(f"{key}={value:.4g}" for key, value in measures.items())


def parse_measures(text: str) -> dict[str, float]:
    """The measures of a ``QualityMeasures`` value (:func:`measures_text`)."""
    pairs = (item.split("=", 1) for item in text.split() if "=" in item)
    return {key: float(value) for key, value in pairs}


def quality_verdict(info: Any):
    """The ``QualityVerdict`` of a result's provenance (also one sent back by the worker process), or None."""
    from RMAMambaSegmentationLib.inference.quality import QualityVerdict

    quality = getattr(info, "quality", None)
    if quality is None or isinstance(quality, QualityVerdict):
        return quality
    return QualityVerdict(quality.status, list(quality.reasons), dict(quality.measures),
                          str(getattr(quality, "hint", "") or ""))


def read_segment_provenance(segment) -> dict[str, str]:
    """The ``RMAMamba.*`` tags of a ``vtkSegment`` that are set."""
    import vtk

    found = {}
    for name in ALL_ATTRIBUTES:
        value = vtk.reference("")
        if segment.GetTag(name, value):
            found[name] = str(value)
    return found


def read_provenance(node) -> dict[str, str]:
    """The ``RMAMamba.*`` attributes of ``node`` that are set."""
    found = {}
    for name in ALL_ATTRIBUTES:
        value = node.GetAttribute(name)
        if value is not None:
            found[name] = value
    return found
