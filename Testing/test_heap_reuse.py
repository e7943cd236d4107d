"""Inside ``reuse_freed_memory`` large blocks come from glibc's heap (reusable) instead of fresh mappings.

Checked on where a block lands in ``/proc/self/maps``: page-fault counts are not reliable on machines whose kernel
reclaims idle pages on its own (DAMON), the address is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

from RMAMambaSegmentationLib.benchmark.volume import resident_bytes
from RMAMambaSegmentationLib.runtime.heap_reuse import heap_reuse_available, reuse_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not heap_reuse_available(),
                                reason="glibc's mallopt is needed")
SIZE = 256 * 1024 * 1024  # far above glibc's largest mmap threshold (32 MB)


def _heap_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            if line.rstrip().endswith("[heap]"):
                start, stop = line.split()[0].split("-")
                ranges.append((int(start, 16), int(stop, 16)))
    return ranges


def _block_is_in_the_heap(size: int = SIZE) -> bool:
    block = torch.ones(size, dtype=torch.uint8)
    address = block.data_ptr()
    return any(start <= address and address + size <= stop for start, stop in _heap_ranges())


def _check_blocks() -> None:
    assert not _block_is_in_the_heap()  # glibc's default: a fresh mapping, zero-filled again by the kernel
    with reuse_freed_memory() as active:
        assert active
        assert _block_is_in_the_heap()
        assert _block_is_in_the_heap()
        kept = resident_bytes()  # the freed block stays resident, ready for the next tensor
    assert kept - resident_bytes() > SIZE // 2  # handed back on leaving (malloc_trim)


def test_large_blocks_come_from_the_heap_only_inside_the_block() -> None:
    """In a fresh process: earlier tests may leave free blocks in this one's heap, which glibc would reuse."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, __file__], env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "checked"


def test_inactive_in_other_threads_and_when_switched_off(monkeypatch) -> None:
    seen = []

    def probe() -> None:
        with reuse_freed_memory() as active:
            seen.append(active)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [False]
    monkeypatch.setenv("RMAMAMBA_HEAP_REUSE", "0")
    with reuse_freed_memory() as active:
        assert not active


def test_inactive_inside_the_slicer_application(monkeypatch) -> None:
    """The Slicer GUI process (``slicer.app`` set) keeps glibc's defaults: its other threads may allocate."""
    import types

    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=object()))
    with reuse_freed_memory() as active:
        assert not active


if __name__ == "__main__":
    _check_blocks()
    print("checked")
