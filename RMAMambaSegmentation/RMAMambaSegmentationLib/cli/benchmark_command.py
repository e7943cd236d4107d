"""``rmamamba benchmark``: ms per slice for T and S (s per 3D window for SRMA), next to the sequential scan and the
FLOP floor."""

from __future__ import annotations

import argparse
import json
import sys
import time

DESCRIPTION = """\
Times RMA-Mamba on random 256x256 slices (SRMA-Mamba on random 224x224x64 windows) and prints a table: ms per slice
(s per window) next to the FLOP floor of this machine's matrix multiplications.

By default the table includes the sequential-scan reference rows (batch 1, the selective scan step by step): they
are slow, from seconds per slice on a GPU to minutes per SRMA window on a CPU; --no-reference skips them. Each
configuration is announced on stderr as it starts, with the time elapsed so far."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="measure inference speed (ms/slice) against the sequential scan and the FLOP floor",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variants", nargs="+", type=str.upper, default=["T", "S", "SRMA"],
                        choices=["T", "S", "SRMA"], help="models to time (default: T S SRMA)")
    parser.add_argument("--window", nargs=3, type=int, default=[224, 224, 64], metavar=("I", "J", "K"),
                        help="SRMA-Mamba window in voxels (default: 224 224 64)")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, else the Apple GPU, else the CPU), cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--size", type=int, default=256, help="slice size in pixels (default: 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the sequential-scan reference rows, which are included by default and are the "
                             "slow part (minutes per SRMA window on a CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="also time T/S through torch.compile (when a C++ compiler is present)")
    parser.add_argument("--volume", action="store_true",
                        help="also time segment_image end to end (seconds, peak memory) on the bundled example and "
                             "a synthetic CT, with the default weights")
    parser.add_argument("--ct-size", nargs=3, type=int, default=[512, 512, 300], metavar=("I", "J", "K"),
                        help="voxels of the synthetic CT of --volume (default: 512 512 300)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    parser.set_defaults(run=run)


class Progress:
    """Progress lines on stderr: the configuration being timed and the time elapsed since the start."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        slow = " (sequential reference, slow; --no-reference skips it)" if message.endswith("scan reference") else ""
        self.stream.write(f"[{time.perf_counter() - self.started:5.0f} s] timing {message}{slow} ...\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    import torch

    from RMAMambaSegmentationLib.benchmark.speed import format_table, run_benchmark
    from RMAMambaSegmentationLib.runtime.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = str(resolve_device(args.device))
    except ValueError as error:
        print(f"rmamamba benchmark: {error}", file=sys.stderr)
        return 2
    if any(batch < 1 for batch in args.batch) or args.size < 32 or args.repeats < 1:
        print("rmamamba benchmark: batch sizes and repeats must be >= 1 and --size >= 32", file=sys.stderr)
        return 2
    if any(w < 1 for w in args.ct_size):
        print("rmamamba benchmark: --ct-size must be positive", file=sys.stderr)
        return 2
    if any(w < 16 or w % 16 for w in args.window):
        print("rmamamba benchmark: --window sizes must be multiples of 16", file=sys.stderr)
        return 2
    if not args.no_reference:
        print("rmamamba benchmark: the table includes the sequential-scan reference rows, the slow part; "
              "--no-reference skips them", file=sys.stderr)
    progress = Progress()
    gflops, rows = run_benchmark(
        args.variants, args.batch, device=device, size=args.size, repeats=args.repeats,
        reference_scan=not args.no_reference, progress=progress, window=tuple(args.window), compile=args.compile,
    )
    volume_rows = []
    if args.volume:
        from RMAMambaSegmentationLib.benchmark.volume import run_volume_benchmark
        from RMAMambaSegmentationLib.network.variants import VARIANTS

        progress("segment_image end to end")
        floor_ms = 1e3 * VARIANTS["T"].gflop_per_slice / gflops  # the default weights are RMA-Mamba-T
        volume_rows = run_volume_benchmark(floor_ms, device=device, compile=args.compile,
                                           ct_size=tuple(args.ct_size))
    name = "Apple GPU (MPS)" if device == "mps" else "CPU"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    if args.json:
        for row in rows:
            print(json.dumps({"device": name, "matmul_gflops": round(gflops, 1), **row.to_dict()}))
        for volume in volume_rows:
            print(json.dumps({"device": name, "matmul_gflops": round(gflops, 1), "case": volume.case,
                              "slices": volume.slices, "seconds": round(volume.seconds, 2),
                              "ms_per_slice": round(volume.ms_per_slice, 1),
                              "times_floor": round(volume.times_floor, 2),
                              "peak_rss_mb": round(volume.peak_rss_mb)}))
    else:
        print(format_table(gflops, rows, name))
        if volume_rows:
            from RMAMambaSegmentationLib.benchmark.volume import format_volume_table

            print("\nsegment_image end to end (default weights, RMA-Mamba-T):\n")
            print(format_volume_table(volume_rows))
    return 0
