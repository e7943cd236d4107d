"""Find the training cases of a data folder in one of three layouts, and split them into train / valid / test.

* ``cirrmri3d`` -- the CirrMRI600+ 3D archives as downloaded: ``{train,valid,test}_{images,masks}/<id>.nii.gz``
  (possibly nested one level deeper, ``Cirrhosis_T2_3D/Cirrhosis_T2_3D/...``); the split is given by the folders.
* ``png2d`` -- the official 2D PNG release: ``{train,valid,test}/<case>/{images,masks}/*.png`` (also nested one
  level); the split is given by the folders; mask > 127 is liver.
* ``paired`` -- any image folder and label folder (NIfTI, NRRD, MHA), e.g. ``images/`` + ``liver_masks/``; the
  split comes from a split file or a seeded random choice of validation cases.

Images and masks are always paired by case name (:mod:`.pairing`), never by sort order. A split file
(JSON ``{"train": [...], "valid": [...], "test": [...]}`` of case keys or file names) overrides any split.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from RMAMambaSegmentationLib.errors import InputFileError
from RMAMambaSegmentationLib.files.pairing import case_key, index_by_key, list_volume_files, pair_by_key

logger = logging.getLogger(__name__)

LAYOUTS = ("cirrmri3d", "png2d", "paired")
SPLITS = ("train", "valid", "test")
#: Folder names recognised as the image / mask folder of the paired layout (first match wins for images).
IMAGE_FOLDERS = ("images", "imagesTr", "image", "imgs", "img", "volumes")
MASK_FOLDERS = ("liver_masks", "masks", "labels", "labelsTr", "segmentations", "mask", "label")
PNG_EXTENSIONS = (".png",)
_IGNORED_FOLDERS = ("__MACOSX",)


@dataclass(frozen=True)
class CaseSource:
    """One training case: a volume and its label map (``kind="volume"``) or two folders of PNG slices (``"png"``)."""

    key: str
    image: Path
    mask: Path
    kind: str = "volume"


@dataclass
class DataSplits:
    """The cases of each split and how they were found."""

    layout: str
    root: Path
    train: list[CaseSource] = field(default_factory=list)
    valid: list[CaseSource] = field(default_factory=list)
    test: list[CaseSource] = field(default_factory=list)
    split_source: str = "folders"

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary (for model cards and logs)."""
        return {
            "layout": self.layout,
            "root": str(self.root),
            "split": self.split_source,
            "train_cases": [c.key for c in self.train],
            "valid_cases": [c.key for c in self.valid],
            "n_test_cases": len(self.test),
        }


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in _IGNORED_FOLDERS)


def _is_cirrmri3d(folder: Path) -> bool:
    return (folder / "train_images").is_dir() and (folder / "train_masks").is_dir()


def _is_png2d(folder: Path) -> bool:
    train = folder / "train"
    return train.is_dir() and any((c / "images").is_dir() and (c / "masks").is_dir() for c in _subfolders(train))


def _paired_folders(folder: Path) -> tuple[Path, Path] | None:
    images = [folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()]
    masks = [folder / n for n in MASK_FOLDERS if (folder / n).is_dir()]
    if not images or not masks:
        return None
    if len(masks) > 1:
        names = ", ".join(p.name for p in masks)
        raise InputFileError(f"{folder} has several label folders ({names}): give the image and label folders "
                             "explicitly")
    return images[0], masks[0]


_DETECTORS = {
    "cirrmri3d": _is_cirrmri3d,
    "png2d": _is_png2d,
    "paired": lambda folder: _paired_folders(folder) is not None,
}


def detect_layout(root: str | Path, layout: str = "auto") -> tuple[str, Path]:
    """``(layout, folder)``: the layout of ``root`` or of its only matching subfolder (one level of nesting)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"data folder {root} does not exist")
    names = LAYOUTS if layout == "auto" else (layout,)
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)} or auto")
    for folder in (root, *_subfolders(root)):
        found = [name for name in names if _DETECTORS[name](folder)]
        if found:
            if folder != root:
                logger.info("data found one level deeper, in %s", folder)
            return found[0], folder
    expected = {
        "cirrmri3d": "train_images/ and train_masks/",
        "png2d": "train/<case>/images/ and train/<case>/masks/",
        "paired": f"an image folder ({'/'.join(IMAGE_FOLDERS)}) and a label folder ({'/'.join(MASK_FOLDERS)})",
    }
    wanted = "; or ".join(expected[n] for n in names)
    raise InputFileError(
        f"{root} does not look like a training data folder: expected {wanted} (here or one level down)"
    )


def pair_volume_folders(images: Path, masks: Path) -> list[CaseSource]:
    """Cases of an image folder and a label folder, paired by case key; InputFileError for unpaired files."""
    image_files = index_by_key(list_volume_files(images), f"images in {images}")
    mask_files = index_by_key(list_volume_files(masks), f"masks in {masks}")
    if not image_files:
        raise InputFileError(f"no volume file (.nii.gz, .nrrd, .mha, ...) in {images}")
    pairs = pair_by_key(image_files, mask_files, left_name="image", right_name="mask")
    return [CaseSource(key, image, mask, "volume") for key, image, mask in pairs]


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``slice2`` before ``slice10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def png_slice_pairs(case: CaseSource) -> list[tuple[Path, Path]]:
    """The (image, mask) PNG files of a 2D case, paired by file name, in natural order."""
    images = {p.name: p for p in case.image.iterdir() if p.suffix.lower() in PNG_EXTENSIONS}
    masks = {p.name: p for p in case.mask.iterdir() if p.suffix.lower() in PNG_EXTENSIONS}
    if not images:
        raise InputFileError(f"case {case.key}: no PNG file in {case.image}")
    lonely = sorted(set(images) ^ set(masks))
    if lonely:
        shown = ", ".join(lonely[:5]) + (f" and {len(lonely) - 5} more" if len(lonely) > 5 else "")
        raise InputFileError(f"case {case.key}: PNG slices without a partner of the same name in images/ and "
                             f"masks/: {shown}")
    return [(images[name], masks[name]) for name in sorted(images, key=natural_key)]


def _cirrmri3d_cases(folder: Path) -> dict[str, list[CaseSource]]:
    splits: dict[str, list[CaseSource]] = {}
    for split in SPLITS:
        images, masks = folder / f"{split}_images", folder / f"{split}_masks"
        if images.is_dir() != masks.is_dir():
            raise InputFileError(f"{folder}: {split}_images and {split}_masks must both exist")
        splits[split] = pair_volume_folders(images, masks) if images.is_dir() else []
    return splits


def _png2d_cases(folder: Path) -> dict[str, list[CaseSource]]:
    splits: dict[str, list[CaseSource]] = {}
    for split in SPLITS:
        cases = []
        if (folder / split).is_dir():
            for case_dir in _subfolders(folder / split):
                images, masks = case_dir / "images", case_dir / "masks"
                if not (images.is_dir() and masks.is_dir()):
                    raise InputFileError(f"{case_dir} needs both images/ and masks/ folders")
                cases.append(CaseSource(case_dir.name, images, masks, "png"))
        splits[split] = sorted(cases, key=lambda c: natural_key(c.key))
    return splits


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` with entries normalised to case keys."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputFileError(f"split file {path} does not exist") from error
    except (OSError, ValueError) as error:
        raise InputFileError(f"split file {path} is not valid JSON: {error}") from error
    if not isinstance(content, dict) or "train" not in content:
        raise InputFileError(f"split file {path} must be a JSON object with a 'train' list (and 'valid', 'test')")
    unknown = set(content) - set(SPLITS)
    if unknown:
        raise InputFileError(f"split file {path}: unknown keys {sorted(unknown)} (allowed: {', '.join(SPLITS)})")
    result: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        entries = content.get(split, [])
        if not isinstance(entries, list) or not all(isinstance(e, (str, int)) for e in entries):
            raise InputFileError(f"split file {path}: '{split}' must be a list of case names")
        keys = [case_key(str(e)) for e in entries]
        for key in keys:
            if key in seen:
                raise InputFileError(f"split file {path}: case {key!r} is in both '{seen[key]}' and '{split}'")
            seen[key] = split
        result[split] = keys
    return result


def apply_split_file(cases: list[CaseSource], split: dict[str, list[str]], source: str) -> dict[str, list[CaseSource]]:
    """Assign ``cases`` to splits by key; InputFileError naming split-file cases that are not in the data."""
    by_key = {case.key: case for case in cases}
    missing = sorted(k for keys in split.values() for k in keys if k not in by_key)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputFileError(f"split file {source} names cases that are not in the data: {shown}")
    listed = {k for keys in split.values() for k in keys}
    unused = len(by_key) - len(listed)
    if unused:
        logger.info("%d cases are in no split of %s and are not used", unused, source)
    return {name: [by_key[k] for k in split.get(name, [])] for name in SPLITS}


def random_split(cases: list[CaseSource], valid_fraction: float, seed: int) -> dict[str, list[CaseSource]]:
    """A seeded choice of ``round(valid_fraction * n)`` validation cases (at least one); the rest trains."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    if len(cases) < 2:
        raise InputFileError(f"{len(cases)} case found: at least 2 are needed (one to train, one to validate)")
    n_valid = min(len(cases) - 1, max(1, round(valid_fraction * len(cases))))
    chosen = set(random.Random(seed).sample(sorted(c.key for c in cases), n_valid))
    return {
        "train": [c for c in cases if c.key not in chosen],
        "valid": [c for c in cases if c.key in chosen],
        "test": [],
    }


def find_training_data(
    root: str | Path | None = None,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    layout: str = "auto",
    split_file: str | Path | None = None,
    valid_fraction: float = 0.2,
    seed: int = 42,
) -> DataSplits:
    """Discover and split the training cases (see the module docstring).

    Either ``root`` (a folder in one of the layouts) or ``images`` and ``masks`` (two folders, paired layout).
    Raises InputFileError for missing folders, unpaired files, an unusable split, or an empty train/valid split.
    """
    if images is not None or masks is not None:
        if images is None or masks is None:
            raise InputFileError("give both an image folder and a mask folder")
        name, folder = "paired", Path(images).parent
        cases_by_split = {"all": pair_volume_folders(Path(images), Path(masks))}
    else:
        if root is None:
            raise InputFileError("give a data folder, or an image folder and a mask folder")
        name, folder = detect_layout(root, layout)
        if name == "cirrmri3d":
            cases_by_split = _cirrmri3d_cases(folder)
        elif name == "png2d":
            cases_by_split = _png2d_cases(folder)
        else:
            image_dir, mask_dir = _paired_folders(folder)  # type: ignore[misc]
            cases_by_split = {"all": pair_volume_folders(image_dir, mask_dir)}
    all_cases = [case for cases in cases_by_split.values() for case in cases]
    if split_file is not None:
        splits = apply_split_file(all_cases, read_split_file(split_file), str(split_file))
        source = f"file {Path(split_file).name}"
    elif "all" in cases_by_split:
        splits = random_split(all_cases, valid_fraction, seed)
        source = f"random (valid fraction {valid_fraction}, seed {seed})"
    else:
        splits, source = cases_by_split, "folders"
    result = DataSplits(name, folder, splits["train"], splits["valid"], splits["test"], source)
    if not result.train:
        raise InputFileError(f"no training case found in {folder} ({source})")
    if not result.valid:
        raise InputFileError(f"no validation case found in {folder} ({source}): validation drives the learning "
                             "rate, early stopping and the best checkpoint")
    logger.info("%s layout in %s: %d train, %d valid, %d test cases (split: %s)", name, folder,
                len(result.train), len(result.valid), len(result.test), source)
    return result
