"""Reading input volumes (NIfTI, NRRD, MHA/MHD, DICOM series folder) and expanding lists of inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.files.dicom_checks import check_series_files, copy_scan_tags
from RMAMambaSegmentationLib.files.integrity import check_image_file

logger = logging.getLogger(__name__)

#: File endings read as one volume each (longest first so ".nii.gz" wins over ".gz").
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File endings read as lists of inputs, one path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
_MAX_LIST_DEPTH = 8


@dataclass(frozen=True)
class InputCase:
    """One volume to segment: its name (for output files) and where it is."""

    name: str
    path: Path
    kind: str  # "file" or "dicom"


def image_suffix(path: str | Path) -> str | None:
    """The recognised image ending of ``path`` (lower case), or None."""
    lower = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)


def case_name(path: str | Path) -> str:
    """``NAME`` for outputs: the file name without its image ending, or the DICOM folder's name."""
    path = Path(path)
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or one with the DICOM preamble magic ``DICM`` at byte 128."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def looks_like_dicom_folder(folder: str | Path, probe: int = 16) -> bool:
    """Whether one of the first ``probe`` files directly in ``folder`` is a DICOM file (cheap; no ITK warnings)."""
    folder = Path(folder)
    try:
        files = [child for child in sorted(folder.iterdir()) if child.is_file()]
        return any(_is_dicom_file(child) for child in files[:probe])
    except OSError:
        return False


def dicom_series_ids(folder: str | Path) -> list[str]:
    """The DICOM series found directly in ``folder`` (empty when none)."""
    if not looks_like_dicom_folder(folder):
        return []
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    except RuntimeError:
        return []


def read_dicom_series(folder: str | Path) -> sitk.Image:
    """Read the one DICOM series in ``folder``; InputFileError for mixed series, missing or duplicated slices.

    The image keeps the first file's Modality, series description, protocol and sequence name tags as metadata.
    """
    folder = Path(folder)
    series = dicom_series_ids(folder)
    if not series:
        raise InputFileError(f"{folder}: no DICOM series found in this folder")
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    if len(series) > 1:
        counts = ", ".join(f"{sid} ({len(files_by_series[sid])} files)" for sid in series)
        raise InputFileError(f"{folder}: mixed DICOM series in one folder ({len(series)} series: {counts}); "
                             "put each series in its own folder")
    files = list(files_by_series[series[0]])
    check_series_files(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputFileError(f"{folder}: cannot read the DICOM series: {_first_line(error)}") from error
    copy_scan_tags(files[0], image)
    return image


def read_image(path: str | Path) -> sitk.Image:
    """Read a volume file or a DICOM series folder; InputFileError when missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file or folder")
    check_image_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputFileError(f"{path}: cannot read it as a medical image: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK messages start with a file/line location; the description is the last meaningful line
    return lines[-1] if lines else type(error).__name__


def _read_list(path: Path) -> list[Path]:
    """Paths listed one per line (blank lines and ``#`` comments skipped; relative to the list's folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"{path}: cannot read the list of inputs: {error}") from error
    entries = []
    for line in text.splitlines():
        entry_text = line.strip()
        if entry_text and not entry_text.startswith("#"):
            entry = Path(entry_text).expanduser()
            entries.append(entry if entry.is_absolute() else path.parent / entry)
    return entries


def _folder_cases(folder: Path) -> list[InputCase]:
    """A folder is one DICOM series, or holds image files and/or DICOM series sub-folders."""
    if dicom_series_ids(folder):
        return [InputCase(folder.name, folder, "dicom")]
    cases = []
    for child in sorted(folder.iterdir()):
        if child.is_file() and image_suffix(child):
            cases.append(InputCase(case_name(child), child, "file"))
        elif child.is_dir() and dicom_series_ids(child):
            cases.append(InputCase(child.name, child, "dicom"))
    if not cases:
        logger.warning("%s: no image files or DICOM series found", folder)
    return cases


def expand_inputs(paths: list[str | Path]) -> list[InputCase]:
    """Turn command-line inputs into cases: files, DICOM folders, folders of images, text lists of paths.

    Paths that do not exist are kept as cases (reading them fails with a clear error later), so a batch reports
    them in its summary instead of stopping. A path given twice (directly or through a folder or list) is kept once.
    """
    cases: list[InputCase] = []
    seen: set[Path] = set()
    for case in _expand(paths, depth=0):
        key = case.path.resolve()
        if key not in seen:
            seen.add(key)
            cases.append(case)
    return cases


def _expand(paths: list[str | Path], depth: int) -> list[InputCase]:
    cases: list[InputCase] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            cases += _folder_cases(path)
        elif path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
            if depth >= _MAX_LIST_DEPTH:
                raise InputFileError(f"{path}: lists of inputs nested more than {_MAX_LIST_DEPTH} deep (a loop?)")
            cases += _expand(_read_list(path), depth + 1)
        else:
            cases.append(InputCase(case_name(path), path, "file"))
    return cases


def read_case(case: InputCase) -> sitk.Image:
    """Read one case's volume."""
    return read_dicom_series(case.path) if case.kind == "dicom" else read_image(case.path)
