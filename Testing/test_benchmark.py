"""The benchmark measures what it says: checked with a scripted clock and a stand-in timer, no timing assertions."""

from __future__ import annotations

import pytest
import torch

from RMAMambaSegmentationLib import build_model
from RMAMambaSegmentationLib.benchmark import speed as benchmark
from RMAMambaSegmentationLib.benchmark.speed import format_table, matmul_gflops, run_benchmark, seconds_per_call
from RMAMambaSegmentationLib.network.ss2d import SS2D


def test_matmul_rate_is_positive() -> None:
    assert matmul_gflops(torch.device("cpu"), size=256, min_seconds=0.05) > 0


def test_seconds_per_call_is_the_median_of_the_timed_calls_after_warmup(monkeypatch) -> None:
    durations = iter([0.1, 0.2, 9.0, 5.0, 7.0, 60.0, 6.0])  # two warm-up calls, then five timed calls
    clock = [0.0]
    calls = []

    def function() -> None:
        calls.append(clock[0])
        clock[0] += next(durations)

    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    assert seconds_per_call(function, torch.device("cpu"), repeats=5, warmup=2) == 7.0  # median of 9, 5, 7, 60, 6
    assert len(calls) == 7


def test_rows_divide_the_time_of_a_real_forward_pass_by_the_batch(monkeypatch) -> None:
    built, timed = [], []

    def build(name):
        built.append(build_model(name))
        return built[-1]

    def stand_in_timer(function, device, repeats, warmup=1):
        output = function()  # the benchmark's own call: the network on its batch
        scans = {layer.scan_backend for layer in built[-1].modules() if isinstance(layer, SS2D)}
        timed.append((tuple(output.shape), repeats, scans))
        return 0.5  # seconds per call

    monkeypatch.setattr(benchmark, "build_model", build)
    monkeypatch.setattr(benchmark, "seconds_per_call", stand_in_timer)
    monkeypatch.setattr(benchmark, "matmul_gflops", lambda device: 100.0)
    gflops, rows = run_benchmark(["T"], [1, 2], size=64, repeats=3)
    assert len(built) == 1
    assert gflops == 100.0
    assert [(r.variant, r.batch, r.scan) for r in rows] == [("T", 1, "auto"), ("T", 2, "auto"), ("T", 1, "reference")]
    assert timed == [((1, 1, 64, 64), 3, {"auto"}), ((2, 1, 64, 64), 3, {"auto"}), ((1, 1, 64, 64), 1, {"reference"})]
    assert [r.ms_per_slice for r in rows] == [500.0, 250.0, 500.0]
    assert [r.slices_per_s for r in rows] == [2.0, 4.0, 2.0]
    floor = 1e3 * 13.2 * (64 / 256) ** 2 / 100.0  # RMA-Mamba-T: 13.2 GFLOP per 256x256 slice
    assert [r.floor_ms_per_slice for r in rows] == pytest.approx([floor] * 3, rel=1e-12)
    assert rows[1].times_floor == pytest.approx(250.0 / floor)
    table = format_table(gflops, rows, "CPU").splitlines()
    assert table[0].startswith("device: CPU, float32 matmul")
    assert len(table) == 4 + len(rows)
    assert "| RMA-Mamba-T | 2 | default | 250 | 4.00 | 8 |" in table[-2]
    assert "| RMA-Mamba-T | 1 | sequential reference |" in table[-1]
