"""Measure the memory of one run through the panel's path (``SegmentationLogic.start`` -> worker -> ``finish``)
on a synthetic CT, headless (slicer-core). Prints numbers; not a test.

    PYTHONPATH=RMAMambaSegmentation python Testing/measure_worker_memory.py --shape 600 512 512 [--weights W.pt]

* worker: its peak resident memory (``getrusage`` in the worker, reported with the result);
* this process: the peak resident memory above the level reached once the volume node exists (sampled every
  20 ms from ``/proc/self/statm``, Linux).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """The highest RSS seen while running (a background thread sampling every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)

    def _sample(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """int16 HU: air, an elliptic body of soft tissue with noise, a brighter liver-like ellipsoid, and a few bright
    specks far from it (stray false positives for the post-processing)."""
    slices, rows, cols = shape
    rng = np.random.default_rng(seed)
    volume = np.full(shape, -1000, dtype=np.int16)
    y, x = np.mgrid[0:rows, 0:cols]
    body = ((y - rows / 2) / (0.4 * rows)) ** 2 + ((x - cols / 2) / (0.45 * cols)) ** 2 <= 1.0
    for k in range(slices):
        z = (k - 0.55 * slices) / (0.25 * slices)
        tissue = rng.normal(40.0, 15.0, size=(rows, cols)).astype(np.int16)
        slice_ = np.where(body, tissue, np.int16(-1000))
        liver = ((y - 0.45 * rows) / (0.2 * rows)) ** 2 + ((x - 0.35 * cols) / (0.22 * cols)) ** 2 + z**2 <= 1.0
        slice_[liver] += 60
        if k % 97 == 0:
            slice_[rows // 5: rows // 5 + 6, cols - cols // 5: cols - cols // 5 + 6] = 120
        volume[k] = slice_
    return volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(600, 512, 512), metavar=("SLICES", "ROWS", "COLS"))
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--probability", action="store_true", help="also ask for the probability map")
    args = parser.parse_args()

    import slicer

    from conftest import HeadlessMRML
    from RMAMambaSegmentationLib import SegmentationLogic

    mrml = HeadlessMRML()  # the scene wired as in the tests (Segmentations logic registered)
    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "synthetic CT")
    slicer.util.updateVolumeFromArray(volume, synthetic_ct(tuple(args.shape)))
    volume.SetSpacing(0.8, 0.8, 1.5)
    logic = SegmentationLogic()
    baseline = rss_mb()
    started = time.monotonic()
    with PeakSampler() as sampler:
        run = logic.start(volume, weights=args.weights, device=args.device, intensity="CT",
                          probabilityMap=args.probability)
        while not run.done:
            time.sleep(0.1)
        seg = run.finish()
    seconds = time.monotonic() - started
    voxels = int(np.prod(args.shape))
    print(f"volume {tuple(args.shape)} int16 = {voxels * 2 / 2**20:.0f} MB, probability map: {args.probability}")
    print(f"run: {seconds:.0f} s on {run.provenance.device}, liver {seg.GetAttribute('RMAMamba.LiverVolumeMl')} mL")
    print(f"worker peak RSS: {run.workerPeakMemoryMb:.0f} MB")
    print(f"calling process: baseline {baseline:.0f} MB, peak {sampler.peak:.0f} MB, "
          f"extra {sampler.peak - baseline:.0f} MB")
    logic.shutdown(wait=5.0)


if __name__ == "__main__":
    main()
