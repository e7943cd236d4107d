"""Pair image, mask and prediction files by case name, never by sort order.

A file's *case key* is its name without the image extension and without role suffixes such as ``_liver``,
``_seg``, ``.seg``, ``_mask``, ``_image`` (stripped repeatedly, case-insensitively), so that
``chaos_mr_t2spir_01_image.nii.gz``, ``chaos_mr_t2spir_01_liver.nii.gz`` and ``chaos_mr_t2spir_01.seg.nrrd`` all
have the key ``chaos_mr_t2spir_01``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from RMAMambaSegmentationLib.errors import InputFileError

#: Volume file extensions understood by SimpleITK that the tools look for in folders (longest first).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Role suffixes stripped from file stems to find the case key.
ROLE_SUFFIXES = (
    "_liver",
    "_seg",
    ".seg",
    "-seg",
    "_segmentation",
    "_mask",
    "_masks",
    "_label",
    "_labels",
    "_labelmap",
    "_pred",
    "_prediction",
    "_gt",
    "_image",
    "_img",
    "_volume",
)


def strip_extension(name: str, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> str | None:
    """``name`` without its volume extension, or None when it has none of ``extensions``."""
    lower = name.lower()
    for extension in extensions:
        if lower.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return None


def case_key(path: str | Path, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> str:
    """The case key of a file name (see the module docstring)."""
    name = Path(path).name
    stem = strip_extension(name, extensions)
    if stem is None:
        stem = name
    changed = True
    while changed:
        changed = False
        lower = stem.lower()
        for suffix in ROLE_SUFFIXES:
            if lower.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                changed = True
                break
    return stem


def list_volume_files(folder: str | Path, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> list[Path]:
    """The volume files directly in ``folder`` (hidden files skipped), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder} is not a folder")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and strip_extension(p.name, extensions)
    )


def index_by_key(paths: Iterable[Path], what: str, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> dict[str, Path]:
    """``{case key: path}``; InputFileError when two files share a key."""
    index: dict[str, Path] = {}
    for path in paths:
        key = case_key(path, extensions)
        if key in index:
            raise InputFileError(
                f"{what}: {index[key].name} and {path.name} both name case {key!r}; keep one file per case"
            )
        index[key] = path
    return index


def _names(keys: Iterable[str], index: dict[str, Path], limit: int = 10) -> str:
    names = [index[k].name for k in sorted(keys)]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def pair_by_key(
    left: dict[str, Path],
    right: dict[str, Path],
    *,
    left_name: str,
    right_name: str,
    allow_unpaired: bool = False,
) -> list[tuple[str, Path, Path]]:
    """``[(key, left path, right path)]`` sorted by key; InputFileError listing unpaired files unless allowed."""
    only_left = set(left) - set(right)
    only_right = set(right) - set(left)
    if (only_left or only_right) and not allow_unpaired:
        problems = []
        if only_left:
            problems.append(f"{len(only_left)} {left_name} without a {right_name}: {_names(only_left, left)}")
        if only_right:
            problems.append(f"{len(only_right)} {right_name} without a {left_name}: {_names(only_right, right)}")
        raise InputFileError("unpaired files (pairing is by case name): " + "; ".join(problems))
    common = sorted(set(left) & set(right))
    if not common:
        raise InputFileError(f"no {left_name} has a {right_name} with the same case name")
    return [(key, left[key], right[key]) for key in common]
