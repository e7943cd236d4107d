"""What the panel shows before a run: the weights' variant, licence and problems, the compute device, and whether
the installed PyTorch is recent enough.

Qt-free. :func:`describe_weights_file` and :func:`describe_device_choice` never import torch and never read the
checkpoint (the panel calls them on open and on every path change); :func:`inspect_weights`, :func:`describe_device`
and :func:`cuda_device_name` import torch and read the whole file (command line, the worker, tests).
:func:`torch_problem` and :func:`ensure_torch` read the installed version from the package metadata (no import).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.errors import CheckpointError, VariantMismatchError, WeightsNotFoundError
from RMAMambaSegmentationLib.runtime.devices import device_from_choice

logger = logging.getLogger(__name__)


def _label(variant: str | None) -> str:
    """The registry's label of ``variant`` ("RMA-Mamba-S", ...); the name itself when the registry does not know it."""
    try:
        return registry.entry(str(variant)).label
    except ValueError:
        return str(variant)


def _variant_key(variant: str | None) -> str | None:
    """The registry key ("T", "UNET", ...) of a model's key, spelling or panel label; None stays None."""
    if not variant:
        return None
    try:
        return registry.variant_of_choice(str(variant))
    except ValueError:
        return registry.normalise_variant(variant)


@dataclass(frozen=True)
class WeightsStatus:
    """Result of :func:`inspect_weights`: ``ok`` is True when the file can be used for ``expected_variant``."""

    ok: bool
    message: str
    variant: str | None = None
    path: str | None = None
    sha256: str | None = None


def torch_available() -> bool:
    """True when the ``torch`` package is installed (without importing it)."""
    return importlib.util.find_spec("torch") is not None


#: The PyTorch this extension needs: the requirement of pyproject.toml (Testing/test_torch_requirement.py checks it).
TORCH_REQUIREMENT = ">=2.1"
_VERSION = re.compile(r"^\s*[vV]?(\d+(?:\.\d+)*)(.*)$")
_PRE_RELEASE = re.compile(r"^[-_.]?(a|b|c|rc|alpha|beta|pre|preview|dev)\d*", re.IGNORECASE)
_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([^\s,]+)\s*$")


def _version_key(version: str) -> tuple[tuple[int, ...], int]:
    """(release numbers, 0 for a pre-release or 1) of a PEP 440 version; the local part ("+cu121") is ignored."""
    match = _VERSION.match(str(version))
    if match is None:
        raise ValueError(f"not a version number: {version!r}")
    release = tuple(int(part) for part in match.group(1).split("."))
    return release, 0 if _PRE_RELEASE.match(match.group(2)) else 1


def version_satisfies(version: str, requirement: str) -> bool:
    """True when ``version`` ("2.0.1+cu118", "2.1.0rc1") meets every comma-separated clause of ``requirement``
    (">=2.1", ">=2.1,<3"); a pre-release comes before its release. ValueError for a clause it cannot read."""
    release, rank = _version_key(version)
    for clause in str(requirement).split(","):
        if not clause.strip():
            continue
        match = _CLAUSE.match(clause)
        if match is None:
            raise ValueError(f"unsupported version requirement: {clause.strip()!r}")
        operator, bound = match.groups()
        bound_release, bound_rank = _version_key(bound)
        width = max(len(release), len(bound_release))
        left = (release + (0,) * (width - len(release)), rank)
        right = (bound_release + (0,) * (width - len(bound_release)), bound_rank)
        holds = {">=": left >= right, "<=": left <= right, ">": left > right, "<": left < right,
                 "==": left == right, "!=": left != right}[operator]
        if not holds:
            return False
    return True


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` from its metadata (nothing is imported), None when there is none."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_problem(requirement: str = TORCH_REQUIREMENT) -> str | None:
    """None when the installed PyTorch meets ``requirement``; else what is wrong, in a sentence (torch not imported)."""
    importlib.invalidate_caches()  # a package installed since the last call must be seen
    if not torch_available():
        return f"PyTorch (torch{requirement}) is not installed."
    version = installed_version("torch")
    if version is None:  # e.g. a source build without metadata: nothing to compare, let the run decide
        logger.warning("torch is importable but has no package metadata; its version is not checked")
        return None
    if not version_satisfies(version, requirement):
        return f"PyTorch {version} is installed, but this extension needs torch{requirement}."
    return None


def torch_install_arguments(requirement: str = TORCH_REQUIREMENT) -> list[str]:
    """The light-the-torch command line that installs (or upgrades to) PyTorch ``requirement``: torch only, no
    torchvision (unused here; PyTorchUtils adds it unpinned, and an old torchvision can pull an old torch)."""
    return ["install", f"torch{requirement}"]


def ensure_torch(*, interactive: bool, confirm: Callable[[str], bool], install: Callable[[list[str]], None],
                 show_error: Callable[[str], None], requirement: str = TORCH_REQUIREMENT) -> bool:
    """Make sure PyTorch ``requirement`` is installed; True when it is.

    ``interactive=False`` installs nothing and raises RuntimeError saying what to do. Otherwise the user is asked
    (``confirm(question)``), ``install(arguments)`` runs light-the-torch with :func:`torch_install_arguments`, and
    every failure (refusal, an install error, a version still too old) ends in one ``show_error(message)``.
    """
    problem = torch_problem(requirement)
    if problem is None:
        return True
    if not interactive:
        raise RuntimeError(f"{problem} Click 'Segment liver' in the module panel (it asks before installing), or "
                           "call RMAMambaSegmentationLogic.setupPythonRequirements(interactive=True).")
    question = (f"{problem} Download and install torch{requirement} now? light-the-torch picks the build that "
                "fits your GPU driver; it may take several minutes (up to a few GB).")
    if not confirm(question):
        show_error(f"{problem} PyTorch was not installed, so the liver cannot be segmented.")
        return False
    try:
        install(torch_install_arguments(requirement))
    except Exception as error:  # pip / network / permission: one clear message, the details in the log
        logger.exception("installing PyTorch failed")
        show_error(f"PyTorch could not be installed ({type(error).__name__}: {error}). Check the internet "
                   "connection and the Python console's log, restart Slicer, then try again.")
        return False
    problem = torch_problem(requirement)
    if problem is not None:
        show_error(f"{problem} The installation did not fix it: restart Slicer (a PyTorch already in use cannot be "
                   "replaced), then try again.")
        return False
    return True


def mamba_ssm_available() -> bool:
    """True when the optional ``mamba-ssm`` CUDA kernels are installed (without importing them)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def cuda_device_name() -> str | None:
    """Name of the first CUDA GPU (e.g. "NVIDIA RTX A4000"), or None without a usable GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken driver must not break the panel
        logger.debug("CUDA query failed", exc_info=True)
    return None


def describe_device(device: str) -> str:
    """A sentence for the status line: where ``device`` ("auto", "cpu", "cuda"/"gpu") will run, and how."""
    choice = str(device).lower()
    gpu = cuda_device_name()
    if choice == "cpu" or (choice == "auto" and gpu is None):
        return "CPU (pure-PyTorch selective scan)"
    if gpu is None:
        return "GPU requested but none is usable: CPU will be used"
    kernels = "mamba-ssm CUDA kernels" if mamba_ssm_available() else "pure-PyTorch selective scan (mamba-ssm absent)"
    return f"GPU {gpu} ({kernels})"


def inspect_weights(path: str | Path | None, expected_variant: str | None = None) -> WeightsStatus:
    """Read a weights file (safely) and say whether it fits ``expected_variant`` ("T"/"S", None = any).

    ``path`` None means the default weights shipped with the extension. Never raises for a bad file: the
    problem is in the returned message.
    """
    from RMAMambaSegmentationLib.weights.checkpoints import default_weights_path, load_checkpoint

    try:
        resolved = Path(path) if path else default_weights_path(expected_variant)
        checkpoint = load_checkpoint(resolved, variant=expected_variant)
    except VariantMismatchError as error:
        return WeightsStatus(False, f"Variant mismatch: {error}", path=str(path) if path else None)
    except WeightsNotFoundError as error:
        return WeightsStatus(False, f"Weights missing: {error}", path=str(path) if path else None)
    except CheckpointError as error:
        return WeightsStatus(False, f"Unusable weights: {error}", path=str(path) if path else None)
    from RMAMambaSegmentationLib.weights.model_card import read_model_card

    label = _label(checkpoint.variant)
    message = f"{'Default ' if not path else ''}{label} weights (sha256 {checkpoint.sha256[:12]}...)"
    try:
        card = read_model_card(resolved)
    except CheckpointError:
        card = None
    if card is not None and card.notes and not path:
        message += f". {card.notes.rstrip('.')}"  # what the shipped model is and is not
    if card is not None and card.licence:
        message += f"; licence: {card.licence}"
    return WeightsStatus(
        True,
        message,
        variant=checkpoint.variant,
        path=str(resolved),
        sha256=checkpoint.sha256,
    )


#: What each device choice means, said without asking PyTorch (the panel shows it before any run).
DEVICE_CHOICE_TEXT = {
    "auto": "auto: a GPU when PyTorch finds one, else the CPU (the device used is shown after the run)",
    "cpu": "CPU (pure-PyTorch selective scan)",
    "cuda": "CUDA GPU (falls back to the CPU when none is usable)",
}


def describe_device_choice(choice: str | None) -> str:
    """A sentence for the device label from the choice itself (torch-free, so it can follow the combo box at once)."""
    key = device_from_choice(choice)
    return DEVICE_CHOICE_TEXT.get(key, key)


_describe_lock = threading.Lock()
_described: dict[tuple, WeightsStatus] = {}


def describe_weights_file(path: str | Path | None, expected_variant: str | None = None) -> WeightsStatus:
    """What the panel can say about a weights file without PyTorch: present or not, and its model card (variant,
    licence, notes). Cached by path, size and modification time (of the file and its card) and variant, so
    repeated calls cost two ``stat`` calls.

    The checkpoint itself is read and checked (variant, shape, sha256) by the worker when the run starts.
    Never raises for a bad file: the problem is in the returned message.
    """
    from RMAMambaSegmentationLib.weights.location import BUNDLED_WEIGHTS, bundled_weights_path
    from RMAMambaSegmentationLib.weights.model_card import read_model_card

    expected_variant = _variant_key(expected_variant)
    if not path and expected_variant and expected_variant not in BUNDLED_WEIGHTS:
        return WeightsStatus(False, f"No weights are shipped for {_label(expected_variant)}: choose its weights file")
    # no path: the weights shipped for this model (the U-Net baseline has its own), as the run resolves them
    resolved = Path(path).expanduser() if path else bundled_weights_path(expected_variant)
    shown = str(path) if path else None
    try:
        stat = resolved.stat()
    except OSError:
        what = "no default weights are installed" if not path else "weights file not found"
        return WeightsStatus(False, f"Weights missing: {what} ({resolved})", path=shown)
    from RMAMambaSegmentationLib.weights.model_card import model_card_path

    try:
        card_stat = model_card_path(resolved).stat()
        card_key: tuple = (card_stat.st_size, card_stat.st_mtime_ns)
    except OSError:
        card_key = ()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns, card_key, expected_variant, bool(path))
    with _describe_lock:
        if key in _described:
            return _described[key]
    try:
        card = read_model_card(resolved)
    except CheckpointError as error:
        status = WeightsStatus(False, f"Unusable weights: {error}", path=shown)
    else:
        status = _status_from_card(resolved, card, expected_variant, default=not path)
    with _describe_lock:
        _described[key] = status
    return status


def _status_from_card(path: Path, card, expected_variant: str | None, *, default: bool) -> WeightsStatus:
    prefix = "Default " if default else ""
    if card is None:
        return WeightsStatus(True, f"{prefix}weights {path.name} (no model card: the variant is checked when the "
                                   "run starts)", path=str(path))
    label = _label(card.variant)
    wanted = registry.normalise_variant(expected_variant) if expected_variant is not None else None
    if wanted is not None and registry.normalise_variant(card.variant) != wanted:
        expected = _label(expected_variant)
        return WeightsStatus(False, f"Variant mismatch: the model card of {path.name} says {label}, not {expected}",
                             variant=card.variant, path=str(path))
    message = f"{prefix}{label} weights ({path.name})"
    if card.notes and default:
        message += f". {card.notes.rstrip('.')}"
    if card.licence:
        message += f"; licence: {card.licence}"
    return WeightsStatus(True, message, variant=card.variant, path=str(path))
