"""End-to-end speed of :func:`segment_image` on whole volumes: seconds, seconds per slice against the FLOP floor,
and the peak resident memory of the process while it ran (``rmamamba benchmark --volume``).

Everything the user waits for is inside the time: reading the file, intensity preprocessing, resizing, the
network, post-processing. The cases: the bundled CHAOS T2-SPIR example (when this is a source checkout) and a
synthetic CT (default 512 x 512 x 300 voxels, 0.8 x 0.8 x 1.5 mm, random soft tissue in air).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

#: The bundled example of a source checkout (not installed with the package).
EXAMPLE_IMAGE = Path(__file__).resolve().parents[3] / "Resources" / "Example" / "chaos_mr_t2spir_20_image.nii.gz"
SYNTHETIC_CT_SIZE = (512, 512, 300)


@dataclass
class VolumeRow:
    """One end-to-end measurement."""

    case: str
    slices: int
    seconds: float
    peak_rss_mb: float
    floor_ms_per_slice: float

    @property
    def ms_per_slice(self) -> float:
        return 1e3 * self.seconds / self.slices

    @property
    def times_floor(self) -> float:
        return self.ms_per_slice / self.floor_ms_per_slice


def resident_bytes() -> int:
    """Resident memory of this process now (Linux /proc; elsewhere the peak so far from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Context manager sampling the resident memory every ``interval`` seconds; ``peak`` in bytes afterwards."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, resident_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def synthetic_ct(size: tuple[int, int, int] = SYNTHETIC_CT_SIZE, seed: int = 0) -> sitk.Image:
    """A CT-like int16 volume (i, j, k voxels): an ellipse of soft tissue (~40 HU, noisy) in air (-1000 HU)."""
    rng = np.random.default_rng(seed)
    i, j, k = size
    jj, ii = np.mgrid[:j, :i]
    body = ((ii - i / 2) / (0.42 * i)) ** 2 + ((jj - j / 2) / (0.32 * j)) ** 2 <= 1.0
    array = np.full((k, j, i), -1000, dtype=np.int16)
    array[:, body] = 40
    array += rng.normal(0.0, 20.0, array.shape).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 1.5))
    return image


def time_volume(case: str, path: Path, floor_ms_per_slice: float, *, device: str = "auto",
                batch_size: int | None = None, compile: bool = False,
                intensity: str | None = None) -> VolumeRow:
    """Read ``path`` and segment it with the default weights, timing both; peak memory of the whole call."""
    from RMAMambaSegmentationLib.inference.pipeline import segment_image

    with PeakMemory() as memory:
        start = time.perf_counter()
        image = sitk.ReadImage(str(path))
        result = segment_image(image, device=device, batch_size=batch_size, compile=compile, intensity=intensity)
        seconds = time.perf_counter() - start
    slices = result.n_slices
    logger.debug("%s: %d slices in %.2f s, liver %.1f mL", case, slices, seconds, result.volume_ml)
    return VolumeRow(case, slices, seconds, memory.peak / 2**20, floor_ms_per_slice)


def run_volume_benchmark(floor_ms_per_slice: float, *, device: str = "auto", batch_size: int | None = None,
                         compile: bool = False, example: Path | None = EXAMPLE_IMAGE,
                         ct_size: tuple[int, int, int] | None = SYNTHETIC_CT_SIZE) -> list[VolumeRow]:
    """The example (when present) and a synthetic CT written to a temporary NIfTI file, each timed end to end.

    The first case also pays for loading the weights; a warm-up call on a 3-slice crop runs before either.
    """
    from RMAMambaSegmentationLib.inference.pipeline import segment_image

    warmup = synthetic_ct((256, 256, 3))
    segment_image(warmup, device=device, batch_size=batch_size, compile=compile)
    rows = []
    if example is not None and Path(example).is_file():
        rows.append(time_volume(Path(example).name, Path(example), floor_ms_per_slice, device=device,
                                batch_size=batch_size, compile=compile))
    elif example is not None:
        logger.warning("the bundled example %s is not here (installed package?): skipped", example)
    if ct_size is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "synthetic_ct.nii.gz"
            sitk.WriteImage(synthetic_ct(ct_size), str(path))
            label = f"synthetic CT {'x'.join(map(str, ct_size))}"
            rows.append(time_volume(label, path, floor_ms_per_slice, device=device, batch_size=batch_size,
                                    compile=compile, intensity="CT"))
    return rows


def format_volume_table(rows: list[VolumeRow]) -> str:
    """A Markdown table of the end-to-end rows."""
    lines = ["| volume | slices | seconds | ms/slice | FLOP floor ms/slice | x floor | peak memory MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.case} | {row.slices} | {row.seconds:.1f} | {row.ms_per_slice:.0f} | "
                     f"{row.floor_ms_per_slice:.0f} | {row.times_floor:.2f} | {row.peak_rss_mb:.0f} |")
    return "\n".join(lines)
