"""An optional compiled forward pass (``torch.compile``), used only where it can work, falling back silently.

On the CPU, inductor generates C++ and needs a C++ compiler; on CUDA it needs Triton. Where neither is present,
or compiling fails for any reason, the module runs as it is (eager) and the reason is logged at debug level.
Compiled graphs are specialised per input shape (``dynamic=False``) and cached by PyTorch, so each batch shape
compiles once per process; a new shape (the last, smaller batch of a volume) compiles once more.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

#: C++ compilers inductor can use on the CPU (the environment variable ``CXX`` is tried first).
_CXX_CANDIDATES = ("g++", "c++", "clang++")


@functools.cache
def compile_available(device_type: str = "cpu") -> bool:
    """Whether ``torch.compile`` can generate code for ``device_type`` here ("cpu": a C++ compiler; "cuda": Triton)."""
    if not hasattr(torch, "compile"):
        return False
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device_type != "cpu":
        return False
    candidates = ([os.environ["CXX"]] if os.environ.get("CXX") else []) + list(_CXX_CANDIDATES)
    return any(shutil.which(name) for name in candidates)


class _Compiled:
    """Calls the compiled module; on the first failure logs it and runs the eager module from then on."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.compiled: Callable[..., object] | None = torch.compile(module, dynamic=False)

    def __call__(self, *args: object) -> object:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:  # any compiler or runtime failure: fall back to eager
                logger.debug("compiled forward failed, running eagerly: %s", error)
                self.compiled = None
        return self.module(*args)


_ATTRIBUTE = "_rmamamba_compiled_forward"


def compiled_forward(module: torch.nn.Module, device: torch.device | str = "cpu",
                     enabled: bool = True) -> Callable[..., object]:
    """``module``'s forward, compiled when ``enabled`` and :func:`compile_available`, else ``module`` itself.

    The compiled wrapper is cached per module, so repeated calls (one per volume) reuse its compiled graphs.
    """
    device_type = torch.device(device).type
    if not enabled or not compile_available(device_type):
        if enabled:
            logger.debug("torch.compile is not available for %s here: running eagerly", device_type)
        return module
    wrapper = getattr(module, _ATTRIBUTE, None)
    if wrapper is None:
        wrapper = _Compiled(module)
        object.__setattr__(module, _ATTRIBUTE, wrapper)  # lives and dies with the module, not a submodule
    return wrapper
