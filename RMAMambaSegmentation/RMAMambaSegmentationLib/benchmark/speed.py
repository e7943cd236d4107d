"""Speed of RMA-Mamba per slice (SRMA-Mamba per 3D window), next to the sequential-scan reference and the FLOP
floor of the device.

The FLOP floor is the time the network's arithmetic would take at the device's measured float32 matmul rate:
``gflop_per_slice / matmul_gflops`` (SRMA: ``srma_mamba.gflop_per_window``). A ratio ``ms / floor`` near 1 means
nothing is wasted. For SRMA-Mamba the rows' "slice" is one window (default 224 x 224 x 64 voxels).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.network.srma_mamba import DEFAULT_WINDOW, gflop_per_window
from RMAMambaSegmentationLib.network.variants import VARIANTS
from RMAMambaSegmentationLib.runtime.compiled import compile_available, compiled_forward
from RMAMambaSegmentationLib.runtime.heap_reuse import reuse_freed_memory

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkRow:
    """One measured configuration."""

    variant: str
    batch: int
    scan: str
    ms_per_slice: float
    slices_per_s: float
    floor_ms_per_slice: float

    @property
    def times_floor(self) -> float:
        return self.ms_per_slice / self.floor_ms_per_slice

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "times_floor": round(self.times_floor, 2)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(device: torch.device, size: int = 1024, min_seconds: float = 1.0) -> float:
    """Sustained float32 matrix-multiply rate of ``device`` in GFLOP/s (best of repeated runs)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.matmul(a, b)
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        _synchronize(device)
        elapsed = (time.perf_counter() - start) / 4
        best, spent = min(best, elapsed), spent + 4 * elapsed
    return 2 * size**3 / best / 1e9


def seconds_per_call(function: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``function`` after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_benchmark(
    variants: Sequence[str] = ("T", "S"),
    batches: Sequence[int] = (1, 8),
    *,
    device: str | torch.device = "cpu",
    size: int = 256,
    repeats: int = 3,
    reference_scan: bool = True,
    progress: Callable[[str], None] | None = None,
    window: Sequence[int] = DEFAULT_WINDOW,
    compile: bool = False,
) -> tuple[float, list[BenchmarkRow]]:
    """Measure every (variant, batch); returns the matmul GFLOP/s and the rows.

    With ``reference_scan`` each variant is also timed once at batch 1 with the sequential scan. ``"SRMA"`` times
    SRMA-Mamba on random ``window`` volumes (batch 1 only on the CPU). With ``compile`` the 2D rows at the default
    scan are also timed through ``torch.compile`` (scan ``"compiled"``; compiling happens in the warm-up call).
    """
    device = torch.device(device)
    gflops = matmul_gflops(device)
    area = (size / 256) ** 2
    rows = []
    for name in variants:
        if name.upper() == "SRMA":
            rows += _srma_rows(batches, device, window, repeats, reference_scan, gflops, progress)
            continue
        variant = VARIANTS[name.upper()]
        floor_ms = 1e3 * variant.gflop_per_slice * area / gflops
        model = build_model(variant.name).to(device).eval()
        configurations = [(batch, "auto") for batch in batches]
        if compile and compile_available(device.type):
            configurations += [(batch, "compiled") for batch in batches]
        if reference_scan:
            configurations.append((1, "reference"))
        for batch, scan in configurations:
            if progress:
                progress(f"RMA-Mamba-{variant.name} batch {batch} scan {scan}")
            model.set_scan_backend("auto" if scan == "compiled" else scan)
            forward = compiled_forward(model, device) if scan == "compiled" else model
            x = torch.rand(batch, 3, size, size, device=device)
            with torch.inference_mode():
                seconds = seconds_per_call(lambda m=forward, x=x: m(x), device,
                                           repeats=1 if scan == "reference" else repeats)
            ms = 1e3 * seconds / batch
            rows.append(BenchmarkRow(variant.name, batch, scan, ms, 1e3 / ms, floor_ms))
            logger.debug("%s", rows[-1])
        del model
    return gflops, rows


def _srma_rows(batches: Sequence[int], device: torch.device, window: Sequence[int], repeats: int,
               reference_scan: bool, gflops: float, progress: Callable[[str], None] | None) -> list[BenchmarkRow]:
    """SRMA-Mamba rows: ms per window, default scan at each batch (1 on CPU) and the sequential scan at batch 1."""
    window = tuple(int(w) for w in window)
    floor_ms = 1e3 * gflop_per_window(window) / gflops  # type: ignore[arg-type]
    model = build_model("SRMA").to(device).eval()
    configurations = [(batch, "auto") for batch in (batches if device.type == "cuda" else [1])]
    if reference_scan:
        configurations.append((1, "reference"))
    rows = []
    for batch, scan in configurations:
        if progress:
            progress(f"SRMA-Mamba {'x'.join(map(str, window))} batch {batch} scan {scan}")
        model.set_scan_backend(scan)
        x = torch.randn(batch, 1, *window, device=device)
        with torch.inference_mode(), reuse_freed_memory():  # as segment_image runs the windows
            seconds = seconds_per_call(lambda m=model, x=x: m(x), device, repeats=1 if scan == "reference" else repeats)
        ms = 1e3 * seconds / batch
        rows.append(BenchmarkRow("SRMA", batch, scan, ms, 1e3 / ms, floor_ms))
    return rows


_SCAN_LABELS = {"reference": "sequential reference", "auto": "default", "compiled": "default, torch.compile"}


def bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (oneDNN's check: AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def format_table(gflops: float, rows: Sequence[BenchmarkRow], device: str) -> str:
    """A Markdown table of the rows, headed by the device and its matmul rate."""
    lines = [
        f"device: {device}, float32 matmul {gflops:.1f} GFLOP/s, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
        f"native bfloat16 matmul: {'yes' if bf16_native() else 'no'}, "
        f"torch.compile: {'available' if compile_available('cpu') else 'not available (no C++ compiler)'}",
    ]
    windows = [row for row in rows if row.variant == "SRMA"]
    slices = [row for row in rows if row.variant != "SRMA"]
    if slices:
        lines += ["", "| model | batch | scan | ms/slice | slices/s | FLOP floor ms/slice | x floor |",
                  "|---|---:|---|---:|---:|---:|---:|"]
    for row in slices:
        scan = _SCAN_LABELS.get(row.scan, row.scan)
        lines.append(f"| RMA-Mamba-{row.variant} | {row.batch} | {scan} | {row.ms_per_slice:.0f} | "
                     f"{row.slices_per_s:.2f} | {row.floor_ms_per_slice:.0f} | {row.times_floor:.2f} |")
    if windows:
        lines += ["", "| model | batch | scan | s/window | windows/s | FLOP floor s/window | x floor |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for row in windows:
            scan = "sequential reference" if row.scan == "reference" else "default"
            lines.append(f"| SRMA-Mamba | {row.batch} | {scan} | {row.ms_per_slice / 1e3:.2f} | "
                         f"{row.slices_per_s:.3f} | {row.floor_ms_per_slice / 1e3:.2f} | {row.times_floor:.2f} |")
    return "\n".join(lines)
