"""Device choice: the panel's labels, ``auto`` (CUDA, then the Apple GPU, then the CPU), and fallbacks.

No CUDA or Apple GPU is needed: ``torch.cuda.is_available`` and ``torch.backends.mps.is_available`` are replaced by
stand-ins, so what is tested is the selection logic, not that a Metal or CUDA device runs the network.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib.runtime.devices import (
    DEVICE_CHOICES,
    MPS_FALLBACK_VARIABLE,
    auto_batch_size,
    device_from_choice,
    resolve_device,
)
from RMAMambaSegmentationLib.training.distributed import setup_distributed


@pytest.fixture
def machine(monkeypatch):
    """Set which accelerators torch reports: ``machine(cuda=..., mps=...)``."""

    def set_available(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


def test_the_panel_lists_auto_cpu_cuda_and_apple_gpu():
    assert DEVICE_CHOICES == ("auto", "CPU", "CUDA GPU", "Apple GPU")
    assert [device_from_choice(label) for label in DEVICE_CHOICES] == ["auto", "cpu", "cuda", "mps"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "auto"), ("GPU", "cuda"), ("gpu", "cuda"), (" CPU ", "cpu"), ("cuda:1", "cuda:1"), ("MPS", "mps")],
)
def test_old_labels_and_device_names_map_to_device_names(given, expected):
    assert device_from_choice(given) == expected


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_the_apple_gpu_then_the_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("auto", allow_mps=False).type == ("cuda" if cuda else "cpu")


def test_labels_are_accepted_where_device_names_are(machine):
    machine(cuda=False, mps=True)
    assert resolve_device("Apple GPU") == torch.device("mps")
    assert resolve_device("CPU") == torch.device("cpu")


def test_an_accelerator_asked_for_but_absent_falls_back_to_the_cpu_with_a_warning(machine, caplog):
    machine(cuda=False, mps=False)
    with caplog.at_level(logging.WARNING, logger="RMAMambaSegmentationLib.runtime.devices"):
        assert resolve_device("mps") == torch.device("cpu")
        assert resolve_device("Apple GPU") == torch.device("cpu")
        assert resolve_device("cuda") == torch.device("cpu")
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Apple GPU (MPS) was asked for" in m for m in messages) == 1  # once per process
    assert sum("CUDA was asked for" in m for m in messages) == 1


def test_an_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'quantum'"):
        resolve_device("quantum")


def test_the_apple_gpu_gets_the_small_fixed_batch(machine):
    machine(cuda=False, mps=True)
    assert auto_batch_size(torch.device("mps")) == auto_batch_size(torch.device("cpu")) == 4


def test_training_on_auto_stays_off_the_apple_gpu(machine, monkeypatch):
    """Training accumulates its validation counts in float64, which MPS lacks: ``auto`` trains on the CPU there."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    machine(cuda=False, mps=True)
    assert setup_distributed("auto").device == torch.device("cpu")


def _run_python(code: str, fallback: str | None) -> str:
    """Run ``code`` in a fresh interpreter with PYTORCH_ENABLE_MPS_FALLBACK unset (None) or set to ``fallback``."""
    env = {key: value for key, value in os.environ.items() if key != MPS_FALLBACK_VARIABLE}
    env["PYTHONPATH"] = str(PROJECT_ROOT / "RMAMambaSegmentation")
    if fallback is not None:
        env[MPS_FALLBACK_VARIABLE] = fallback
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_device_list_imports_no_torch_and_the_fallback_is_set_before_torch():
    code = (
        "import os, sys\n"
        "from RMAMambaSegmentationLib.runtime import devices\n"
        "print('torch' in sys.modules, devices.enable_mps_fallback(), os.environ['PYTORCH_ENABLE_MPS_FALLBACK'])\n"
        "import torch\n"
        "print(devices.enable_mps_fallback())\n"
    )
    assert _run_python(code, None).split() == ["False", "True", "1", "False"]


def test_a_user_setting_of_the_fallback_is_kept():
    code = (
        "import os\n"
        "from RMAMambaSegmentationLib.runtime import devices\n"
        "devices.enable_mps_fallback()\n"
        "print(os.environ['PYTORCH_ENABLE_MPS_FALLBACK'])\n"
    )
    assert _run_python(code, "0") == "0"
