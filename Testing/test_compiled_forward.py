"""The optional compiled forward: used only where available, cached per module, falls back to eager on failure."""

from __future__ import annotations

import torch

from RMAMambaSegmentationLib.runtime import compiled
from RMAMambaSegmentationLib.runtime.compiled import compiled_forward


def test_disabled_or_unavailable_returns_the_module_itself(monkeypatch) -> None:
    module = torch.nn.Linear(3, 2)
    assert compiled_forward(module, "cpu", enabled=False) is module
    monkeypatch.setattr(compiled, "compile_available", lambda device_type: False)
    assert compiled_forward(module, "cpu") is module


def test_a_failing_compiler_falls_back_to_eager_once_and_the_wrapper_is_cached(monkeypatch) -> None:
    attempts = []

    def broken_compile(module, dynamic):
        def run(*args):
            attempts.append(args)
            raise RuntimeError("no compiler today")
        return run

    monkeypatch.setattr(compiled, "compile_available", lambda device_type: True)
    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    module = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    forward = compiled_forward(module, "cpu")
    assert forward is compiled_forward(module, "cpu")
    assert torch.equal(forward(x), module(x))
    assert torch.equal(forward(x), module(x))
    assert len(attempts) == 1  # after the first failure it stays eager
