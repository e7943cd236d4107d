"""The benchmark measures what it says (a functional check on small slices; no timing assertions)."""

from __future__ import annotations

import torch

from RMAMambaSegmentationLib.benchmark import format_table, matmul_gflops, run_benchmark


def test_matmul_rate_is_positive() -> None:
    assert matmul_gflops(torch.device("cpu"), size=256, min_seconds=0.05) > 0


def test_rows_cover_every_configuration_and_the_reference_scan() -> None:
    gflops, rows = run_benchmark(["T"], [1, 2], size=64, repeats=1)
    assert [(r.variant, r.batch, r.scan) for r in rows] == [("T", 1, "auto"), ("T", 2, "auto"), ("T", 1, "reference")]
    expected_floor = 1e3 * 13.2 * (64 / 256) ** 2 / gflops
    for row in rows:
        assert row.ms_per_slice > 0
        assert abs(row.slices_per_s * row.ms_per_slice - 1e3) < 1e-6
        assert abs(row.floor_ms_per_slice - expected_floor) < 1e-9
    table = format_table(gflops, rows, "CPU").splitlines()
    assert table[0].startswith("device: CPU, float32 matmul")
    assert len(table) == 4 + len(rows)
    assert "| RMA-Mamba-T | 1 | sequential reference |" in table[-1]
