"""The panel's model choices come from the model registry (torch-free) and map back to its keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib import registry
from RMAMambaSegmentationLib.runtime.devices import device_from_choice


def test_every_panel_choice_is_a_registry_model() -> None:
    choices = registry.panel_choices()
    assert choices == ["RMA-Mamba-T", "RMA-Mamba-S", "SRMA-Mamba", "U-Net (2D baseline)"]
    assert [registry.variant_of_choice(label) for label in choices] == list(registry.PANEL_MODELS)
    # Spellings users type, and the label of an earlier release, still find their model.
    assert registry.variant_of_choice("U-Net (baseline)") == "UNET"
    assert registry.variant_of_choice("rma-mamba-s") == "S"
    with pytest.raises(ValueError, match="unknown model"):
        registry.variant_of_choice("nnU-Net")


@pytest.mark.parametrize(("label", "device"), [("auto", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda"),
                                               ("Apple GPU", "mps"), ("GPU", "cuda"), (None, "auto")])
def test_panel_device_labels_become_torch_devices(label, device) -> None:
    assert device_from_choice(label) == device


def test_the_module_script_imports_of_choices_stay_torch_free() -> None:
    """The module script imports these at Slicer start-up: they must not pull PyTorch."""
    code = ("import sys; from RMAMambaSegmentationLib.registry import panel_choices, variant_of_choice; "
            "from RMAMambaSegmentationLib.runtime.devices import DEVICE_CHOICES; print('torch' in sys.modules)")
    env_path = str(PROJECT_ROOT / "RMAMambaSegmentation")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": env_path, "PATH": ""})
    assert out.stdout.strip() == "False"
