"""SRMA-Mamba in ``rmamamba benchmark``: the FLOP count behind its floor, and the rows it prints (no timing asserts)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from RMAMambaSegmentationLib import build_model
from RMAMambaSegmentationLib.benchmark.speed import format_table, run_benchmark
from RMAMambaSegmentationLib.network.srma_mamba import FLOPS_PER_VOXEL, gflop_per_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size", [(32, 32, 16), (16, 48, 32)])
def test_flop_count_scales_with_the_voxels(size) -> None:
    model = build_model("SRMA").eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, *size))
    assert counter.get_total_flops() == FLOPS_PER_VOXEL * size[0] * size[1] * size[2]
    assert gflop_per_window() == pytest.approx(316.87, abs=0.01)


def test_srma_rows_and_table() -> None:
    gflops, rows = run_benchmark(["SRMA"], [1, 2], repeats=1, window=(32, 32, 16))
    assert [(r.variant, r.batch, r.scan) for r in rows] == [("SRMA", 1, "auto"), ("SRMA", 1, "reference")]
    for row in rows:
        assert row.ms_per_slice > 0
        assert row.floor_ms_per_slice == pytest.approx(1e3 * gflop_per_window((32, 32, 16)) / gflops)
    table = format_table(gflops, rows, "CPU").splitlines()
    assert "| model | batch | scan | s/window | windows/s | FLOP floor s/window | x floor |" in table
    assert table[-1].startswith("| SRMA-Mamba | 1 | sequential reference |")
