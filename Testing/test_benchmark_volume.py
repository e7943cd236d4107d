"""``rmamamba benchmark --volume``: end-to-end rows on a real (small) synthetic CT with the default weights."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from RMAMambaSegmentationLib.benchmark.volume import (
    PeakMemory,
    format_volume_table,
    run_volume_benchmark,
    synthetic_ct,
)


def test_synthetic_ct_is_soft_tissue_in_air() -> None:
    image = synthetic_ct((40, 30, 4))
    array = sitk.GetArrayFromImage(image)
    assert array.shape == (4, 30, 40) and image.GetSpacing() == (0.8, 0.8, 1.5)
    assert abs(float(np.median(array[:, 15, 20])) - 40) < 30 and float(array[:, 0, 0].max()) < -900


def test_peak_memory_sees_an_allocation_made_inside() -> None:
    with PeakMemory(interval=0.005) as before:
        pass
    with PeakMemory(interval=0.005) as during:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched, alive until the sampler has stopped
    del block
    assert during.peak >= before.peak + 32 * 2**20


def test_rows_time_every_slice_of_each_case() -> None:
    rows = run_volume_benchmark(100.0, device="cpu", example=None, ct_size=(64, 48, 3))
    assert [(row.case, row.slices) for row in rows] == [("synthetic CT 64x48x3", 3)]
    assert rows[0].seconds > 0 and rows[0].peak_rss_mb > 0
    assert abs(rows[0].times_floor - rows[0].ms_per_slice / 100.0) < 1e-9
    assert "synthetic CT 64x48x3" in format_volume_table(rows)
