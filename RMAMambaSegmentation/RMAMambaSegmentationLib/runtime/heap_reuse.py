"""Keep freed memory for reuse while SRMA-Mamba runs its windows on the CPU (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it back
with ``munmap`` when freed, so the kernel zero-fills the pages again for the next tensor. One 224x224x64 window
allocates tens of gigabytes of such tensors in turn: measured on a 2-core EPYC, 7.5 million page faults and
18 s of system time against 20 s of user time. With mmap disabled and trimming deferred, freed blocks are reused
from the heap (system time under 1 s, the window about 1.6x faster). On leaving, the defaults come back and
``malloc_trim`` hands the heap's free memory back to the system.

Only in the main thread (other threads' glibc arenas cannot grow past 64 MB without mmap) and never inside the
Slicer application, whose other threads may allocate while the windows run (the panel's runs go through the worker
process, where it applies). A no-op off glibc, and when ``RMAMAMBA_HEAP_REUSE=0``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import sys
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_NEVER_TRIM = 2**31 - 1
_ENVIRONMENT = "RMAMAMBA_HEAP_REUSE"
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt and malloc_trim present), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def _inside_slicer_application() -> bool:
    slicer = sys.modules.get("slicer")
    return slicer is not None and getattr(slicer, "app", None) is not None


def heap_reuse_available() -> bool:
    """Whether :func:`reuse_freed_memory` changes anything in this thread and process."""
    return (
        os.environ.get(_ENVIRONMENT, "1") != "0"
        and threading.current_thread() is threading.main_thread()
        and not _inside_slicer_application()
        and _glibc() is not None
    )


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, large freed blocks stay in the heap for the next allocation; yields whether active."""
    libc = _glibc() if heap_reuse_available() else None
    if libc is None or not _lock.acquire(blocking=False):
        yield False
        return
    try:
        active = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
        logger.debug("heap reuse %s", "on" if active else "refused by mallopt")
        yield active
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
        _lock.release()


__all__ = ["heap_reuse_available", "reuse_freed_memory"]
