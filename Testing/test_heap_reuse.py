"""Freed memory is reused inside ``reuse_freed_memory`` (glibc): measured with the process's page-fault count."""

from __future__ import annotations

import resource
import sys
import threading

import pytest
import torch

from RMAMambaSegmentationLib.volume.heap_reuse import heap_reuse_available, reuse_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not heap_reuse_available(),
                                reason="glibc's mallopt is needed")
SIZE = 256 * 1024 * 1024  # far above glibc's largest mmap threshold (32 MB)


def _faults_of_second_allocation() -> int:
    """Minor page faults while a block is allocated, filled, freed, then allocated and filled again."""
    first = torch.ones(SIZE, dtype=torch.uint8)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.ones(SIZE, dtype=torch.uint8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


def test_a_freed_block_is_reused_only_inside_the_block() -> None:
    outside = _faults_of_second_allocation()
    with reuse_freed_memory() as active:
        assert active
        inside = _faults_of_second_allocation()
    after = _faults_of_second_allocation()
    # a fresh mapping each time outside: the kernel faults every page (or transparent huge page) in again
    assert outside >= SIZE // (2 * 1024 * 1024)
    assert inside * 10 < outside
    assert after * 2 > outside  # defaults restored on leaving


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
