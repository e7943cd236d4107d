"""Checks of a DICOM series' files before they are stacked into a volume.

ITK stacks whatever files it is given: with a slice missing the volume is squeezed (the liver shortened), with a
slice twice it is stretched. Here the slice positions (Image Position along the slice normal) must be distinct
and evenly spaced, and every file must share the first file's orientation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.errors import InputFileError

MODALITY_TAG = "0008|0060"
DESCRIPTION_TAGS = ("0008|103e", "0018|1030", "0018|0024")  # series description, protocol name, sequence name

logger = logging.getLogger(__name__)

POSITION_TAG = "0020|0032"
ORIENTATION_TAG = "0020|0037"
#: Two positions closer than this share of the usual spacing are the same slice.
DUPLICATE_FRACTION = 0.1
#: A gap wider than this many usual spacings means slices are missing.
GAP_FACTOR = 1.5


def _numbers(text: str) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in text.strip().split("\\")], dtype=float)
    except ValueError:
        return None


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def _tag(reader: sitk.ImageFileReader, tag: str) -> str | None:
    return reader.GetMetaData(tag) if reader.HasMetaDataKey(tag) else None


def check_series_files(folder: str | Path, files: Sequence[str]) -> None:
    """InputFileError when the slices of a series are missing, duplicated or differently oriented.

    Files without position or orientation tags (some secondary captures) are left to ITK.
    """
    if len(files) < 2:
        return
    positions, normal = [], None
    for name in files:
        try:
            reader = _header(name)
        except RuntimeError as error:
            raise InputFileError(f"{folder}: cannot read the DICOM file {Path(name).name}") from error
        position = _numbers(_tag(reader, POSITION_TAG) or "")
        orientation = _numbers(_tag(reader, ORIENTATION_TAG) or "")
        if position is None or orientation is None or position.size != 3 or orientation.size != 6:
            return
        row, column = orientation[:3], orientation[3:]
        this_normal = np.cross(row, column)
        if normal is None:
            normal = this_normal
        elif not np.allclose(this_normal, normal, atol=1e-3):
            raise InputFileError(f"{folder}: the DICOM files do not share one slice orientation "
                                 f"({Path(name).name} differs): mixed series?")
        positions.append((float(np.dot(position, normal)), Path(name).name))
    positions.sort()
    locations = np.array([p for p, _ in positions])
    steps = np.diff(locations)
    usual = float(np.median(steps))
    duplicates = [(positions[i][1], positions[i + 1][1]) for i in np.flatnonzero(steps <= DUPLICATE_FRACTION * usual)]
    if usual <= 0 or duplicates:
        first = duplicates[0] if duplicates else (positions[0][1], positions[1][1])
        raise InputFileError(f"{folder}: {max(len(duplicates), 1)} duplicated DICOM slice position(s) (e.g. "
                             f"{first[0]} and {first[1]} are at the same place): remove the copies")
    gaps = np.flatnonzero(steps > GAP_FACTOR * usual)
    if gaps.size:
        missing = int(sum(round(steps[i] / usual) - 1 for i in gaps))
        where = locations[gaps[0]]
        raise InputFileError(f"{folder}: about {missing} DICOM slice(s) missing (a gap of {steps[gaps[0]]:.3g} mm "
                             f"after position {where:.6g} mm where slices are {usual:.3g} mm apart): "
                             "the series is incomplete")


def copy_scan_tags(first_file: str, image: sitk.Image) -> None:
    """Copy the Modality and description tags of ``first_file`` into ``image``'s metadata (for scan_check)."""
    try:
        reader = _header(first_file)
    except RuntimeError:
        return
    for tag in (MODALITY_TAG, *DESCRIPTION_TAGS):
        value = _tag(reader, tag)
        if value is not None:
            image.SetMetaData(tag, value.strip())
