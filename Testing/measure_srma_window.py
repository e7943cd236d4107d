"""Time one SRMA-Mamba forward pass on a random window and show where the time goes. Prints numbers; not a test.

    PYTHONPATH=RMAMambaSegmentation python Testing/measure_srma_window.py [--window 224 224 64] [--threads 2]
        [--no-heap-reuse] [--plain-scan]

Prints wall, user and system seconds, minor page faults and peak resident memory of the pass (``getrusage``,
Unix). ``--no-heap-reuse`` runs without :func:`reuse_freed_memory`, ``--plain-scan`` without the direction-tiled
scan, to measure what each contributes.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

from RMAMambaSegmentationLib import build_model
from RMAMambaSegmentationLib.network import direction_tiled_scan
from RMAMambaSegmentationLib.runtime.heap_reuse import reuse_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, nargs=3, default=(224, 224, 64), metavar=("I", "J", "K"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-heap-reuse", action="store_true")
    parser.add_argument("--plain-scan", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.plain_scan:
        direction_tiled_scan.MIN_LENGTH = 1 << 62
    model = build_model("SRMA").eval()
    x = torch.randn(1, 1, *args.window)
    heap = contextlib.nullcontext(False) if args.no_heap_reuse else reuse_freed_memory()
    with torch.inference_mode(), heap as reusing:
        model(torch.randn(1, 1, 32, 32, 32))  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        model(x)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    print(f"window {'x'.join(map(str, args.window))}, {args.threads} threads, heap reuse {'on' if reusing else 'off'}, "
          f"{'plain' if args.plain_scan else 'direction-tiled'} scan: wall {wall:.2f} s, "
          f"user {after.ru_utime - before.ru_utime:.2f} s, system {after.ru_stime - before.ru_stime:.2f} s, "
          f"minor faults {after.ru_minflt - before.ru_minflt}, peak RSS {after.ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
