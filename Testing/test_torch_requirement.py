"""The PyTorch check of the Slicer module (runtime_info): version comparison, the installed torch read from its
metadata, and what the panel does when torch is missing, too old, or fails to install (issue 30, item 7)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib.panel.runtime_info import (
    TORCH_REQUIREMENT,
    ensure_torch,
    installed_version,
    torch_install_arguments,
    torch_problem,
    version_satisfies,
)

INSTALLED = importlib.metadata.version("torch")


@pytest.mark.parametrize(("version", "requirement", "expected"), [
    ("2.1.0", ">=2.1", True),
    ("2.1", ">=2.1.0", True),
    ("2.13.0+cpu", ">=2.1", True),  # 13 > 1: numbers, not text
    ("2.0.1+cu118", ">=2.1", False),
    ("1.13.1", ">=2.1", False),
    ("2.1.0rc1", ">=2.1", False),  # a pre-release comes before its release
    ("2.1.0.dev20230801", ">=2.1", False),
    ("2.1.0.post1", ">=2.1", True),
    ("2.5.1", ">=2.1,<3", True),
    ("3.0.0", ">=2.1,<3", False),
    ("2.4.0", "==2.4", True),
    ("2.4.1", "!=2.4.1", False),
    ("2.4.1", ">2.4", True),
    ("2.4.0", "<=2.3.9", False),
    ("v2.2.0", ">=2.1", True),
])
def test_version_satisfies(version, requirement, expected):
    assert version_satisfies(version, requirement) is expected


def test_unreadable_versions_and_requirements_are_refused():
    with pytest.raises(ValueError, match="not a version"):
        version_satisfies("nightly", ">=2.1")
    with pytest.raises(ValueError, match="unsupported version requirement"):
        version_satisfies("2.1.0", "~=2.1")


def test_requirement_is_the_projects():
    """The panel asks for the torch the package declares (pyproject.toml)."""
    text = (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'"torch\s*([<>=!~][^"]*)"', text).group(1).replace(" ", "")
    assert declared == TORCH_REQUIREMENT


def test_installed_torch_is_read_from_its_metadata_without_importing_it():
    code = ("import sys\nfrom RMAMambaSegmentationLib.panel.runtime_info import installed_version, torch_problem\n"
            "print(installed_version('torch'), torch_problem(), torch_problem('>=99'))\n"
            "assert 'torch' not in sys.modules\n")
    env = {"PYTHONPATH": str(PROJECT_ROOT / "RMAMambaSegmentation"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{INSTALLED} None PyTorch {INSTALLED} is installed, but this extension needs "
                                  "torch>=99.")
    assert installed_version("no-such-distribution-here") is None


def test_outdated_torch_is_detected():
    assert torch_problem() is None  # the suite's torch meets the requirement
    assert torch_problem(">=99") == f"PyTorch {INSTALLED} is installed, but this extension needs torch>=99."


def test_install_arguments_are_torch_only():
    assert torch_install_arguments() == ["install", "torch>=2.1"]
    assert not [argument for argument in torch_install_arguments(">=99") if "torchvision" in argument]


class Dialogs:
    """Records what the Slicer module's dialogs would show, and answers the question."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.questions: list[str] = []
        self.errors: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def show_error(self, message: str) -> None:
        self.errors.append(message)


def test_a_usable_torch_asks_nothing():
    dialogs = Dialogs()
    installs = []
    assert ensure_torch(interactive=True, confirm=dialogs.confirm, install=installs.append,
                        show_error=dialogs.show_error)
    assert (dialogs.questions, dialogs.errors, installs) == ([], [], [])


def test_console_use_installs_nothing_and_says_what_to_do():
    installs = []
    with pytest.raises(RuntimeError, match=r"PyTorch .* needs torch>=99\. Click 'Segment liver'"):
        ensure_torch(interactive=False, confirm=lambda q: True, install=installs.append, show_error=print,
                     requirement=">=99")
    assert installs == []


def test_refusing_the_install_is_one_clear_message():
    dialogs = Dialogs(answer=False)
    installs = []
    assert not ensure_torch(interactive=True, confirm=dialogs.confirm, install=installs.append,
                            show_error=dialogs.show_error, requirement=">=99")
    assert installs == []
    assert "install torch>=99 now?" in dialogs.questions[0] and INSTALLED in dialogs.questions[0]
    assert dialogs.errors == [f"PyTorch {INSTALLED} is installed, but this extension needs torch>=99. "
                              "PyTorch was not installed, so the liver cannot be segmented."]


def test_a_failing_install_ends_in_a_dialog_not_a_traceback(caplog):
    dialogs = Dialogs()

    def failing_install(arguments):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "light_the_torch", *arguments])

    assert not ensure_torch(interactive=True, confirm=dialogs.confirm, install=failing_install,
                            show_error=dialogs.show_error, requirement=">=99")
    assert len(dialogs.errors) == 1
    assert dialogs.errors[0].startswith("PyTorch could not be installed (CalledProcessError: Command ")
    assert "light_the_torch', 'install', 'torch>=99']' returned non-zero exit status 1" in dialogs.errors[0]
    assert "installing PyTorch failed" in caplog.text  # the traceback goes to the log


def test_an_install_that_leaves_torch_too_old_says_restart():
    dialogs = Dialogs()
    installs = []
    assert not ensure_torch(interactive=True, confirm=dialogs.confirm, install=installs.append,
                            show_error=dialogs.show_error, requirement=">=99")
    assert installs == [["install", "torch>=99"]]
    assert len(dialogs.errors) == 1 and "restart Slicer" in dialogs.errors[0]


def test_an_install_that_fixes_it_succeeds(monkeypatch):
    """The version is read again after the install (here the "install" meets the requirement by lowering it)."""
    import RMAMambaSegmentationLib.panel.runtime_info as runtime_info

    dialogs = Dialogs()
    wanted = {"requirement": ">=99"}

    def install(arguments):
        wanted["requirement"] = TORCH_REQUIREMENT

    real = runtime_info.torch_problem
    monkeypatch.setattr(runtime_info, "torch_problem", lambda requirement: real(wanted["requirement"]))
    assert ensure_torch(interactive=True, confirm=dialogs.confirm, install=install, show_error=dialogs.show_error,
                        requirement=">=99")
    assert len(dialogs.questions) == 1 and dialogs.errors == []
