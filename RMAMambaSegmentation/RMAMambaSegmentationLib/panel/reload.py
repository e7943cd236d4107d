"""The module's developer Reload: forget every library module so the next import loads them all afresh.

Reloading modules one by one in place (``importlib.reload``) leaves modules holding the classes of the previous
load (an ``except SegmentationCancelledError`` in one module no longer matches the class another module raises);
dropping them all from ``sys.modules`` makes the next import consistent.
"""

from __future__ import annotations

import sys

LIBRARY = "RMAMambaSegmentationLib"


def unload_library(package: str = LIBRARY) -> list[str]:
    """Remove ``package`` and its submodules from ``sys.modules``; returns their names."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return sorted(names)
