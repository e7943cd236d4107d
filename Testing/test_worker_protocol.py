"""The worker's protocol and process life: provenance and options survive the trip, errors keep their class,
the worker exits when idle or when its parent dies, and the model cache does not keep a model moved off its
device (the out-of-memory fallback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib.errors import SegmentationCancelledError, VariantMismatchError, WorkerStoppedError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.inference.result import Provenance
from RMAMambaSegmentationLib.mrml.segmentation_run import worker_error
from RMAMambaSegmentationLib.weights.cache import ModelCache
from RMAMambaSegmentationLib.worker import protocol
from RMAMambaSegmentationLib.worker.client import WorkerProcess


def trip(value):
    """Through JSON text, as on the pipe."""
    return protocol.from_jsonable(json.loads(protocol.encode({"type": "x", "v": protocol.to_jsonable(value)}))["v"])


def test_provenance_round_trip_is_exact():
    original = Provenance(device="cpu", batch_size=4, n_slices=20, intensity=IntensityPreset.ct(),
                          intensity_bounds=(-150.0, 250.0), postprocessed=True, weights_path="/w.pt",
                          variant="T", oblique_deg=12.5, seconds=1.25, warnings=["oblique volume", "OOM: CPU"])
    back = trip(original)
    assert type(back) is Provenance and back == original
    assert isinstance(back.intensity_bounds, tuple) and back.intensity.label == "CT"


@dataclass
class Inner:
    status: str
    reasons: list = field(default_factory=list)
    measures: dict = field(default_factory=dict)


@dataclass
class Outer:
    name: str
    inner: Inner
    pairs: tuple = ()
    more: list = field(default_factory=list)


def test_nested_dataclasses_and_unknown_classes():
    value = Outer("p", Inner("warn", ["a", "b"], {"ml": np.float32(2.5)}), (1, (2, 3)), [Inner("ok")])
    back = trip(value)
    assert back == Outer("p", Inner("warn", ["a", "b"], {"ml": 2.5}), (1, (2, 3)), [Inner("ok")])
    # a class this process has not imported (or whose fields differ) comes back as a Record with the same values
    data = protocol.to_jsonable(value)
    data["inner"]["__dataclass__"] = "not.imported.module:QualityVerdict"
    data["more"][0]["extra"] = 1
    record = protocol.from_jsonable(data)
    assert isinstance(record.inner, protocol.Record)
    assert (record.inner.status, record.inner.reasons, record.inner.measures) == ("warn", ["a", "b"], {"ml": 2.5})
    assert isinstance(record.more[0], protocol.Record) and record.more[0].extra == 1
    with pytest.raises(ValueError):
        protocol.decode('["not", "a", "message"]')


def test_run_options_round_trip_and_checks():
    options = RunOptions(weights="/w.pt", device="cpu", variant="t", intensity=IntensityPreset.mri_tissue(),
                         postprocess=False, probability_map=True, batch_size=3).checked()
    assert options.variant == "T"
    assert RunOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    with pytest.raises(TypeError, match="unknown run option"):
        RunOptions.build(weight="/w.pt")
    with pytest.raises(ValueError, match="variant"):
        RunOptions(variant="X").checked()
    with pytest.raises(ValueError, match="unknown intensity preset"):
        RunOptions(intensity="PET").checked()
    with pytest.raises(ValueError, match="batch size"):
        RunOptions(batch_size=0).checked()


def test_worker_errors_keep_their_class():
    assert type(worker_error("VariantMismatchError", "m")) is VariantMismatchError
    assert type(worker_error("SegmentationCancelledError", "m")) is SegmentationCancelledError
    assert type(worker_error("ValueError", "bad")) is ValueError
    from RMAMambaSegmentationLib.mrml.segment_writer import SegmentExistsError

    assert type(worker_error("SegmentExistsError", "m")) is SegmentExistsError
    other = worker_error("CudaError", "device-side assert")
    assert "CudaError: device-side assert" in str(other)


def wait_for_messages(worker: WorkerProcess, count: int, timeout: float) -> list[dict]:
    """The worker's first ``count`` replies (fewer when ``timeout`` seconds pass first), polling as the panel does."""
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found.extend(worker.messages())
        time.sleep(0.02)
    return found


def test_idle_worker_exits_by_itself():
    worker = WorkerProcess(idle_timeout_s=0.5)
    ready, exited = wait_for_messages(worker, 2, timeout=60)
    assert ready["type"] == protocol.READY and ready["pid"] == worker.pid
    assert worker.wait(30) and worker.returncode == 0
    assert exited["type"] == "exited"


def test_worker_exits_when_its_parent_dies():
    library = str(PROJECT_ROOT / "RMAMambaSegmentation")
    parent = (
        f"import sys; sys.path.insert(0, {library!r})\n"
        "from RMAMambaSegmentationLib.worker.client import WorkerProcess\n"
        "import time\nw = WorkerProcess()\nwhile not w.messages(): time.sleep(0.02)\nprint(w.pid, flush=True)\n"
        "import os; os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the worker outlived its parent")


def test_stopped_worker_error_says_how():
    worker = WorkerProcess()
    assert wait_for_messages(worker, 1, timeout=60)[0]["type"] == protocol.READY
    worker.kill()
    assert worker.wait(5)
    error = worker.stopped_error(worker.returncode)
    assert isinstance(error, WorkerStoppedError) and "killed by signal 9" in str(error)
    with pytest.raises(WorkerStoppedError, match="not running"):
        for _ in range(50):
            worker.send({"type": protocol.QUIT})
            time.sleep(0.02)


def test_model_moved_off_its_device_is_not_reused(tiny_t_weights):
    """The CUDA out-of-memory fallback moves the cached model to the CPU; the cache must not hand that model out
    again under the CUDA key. Here the 'fallback' moves it to the meta device (no data), which any reuse would
    expose; the cache loads it again on the asked device."""
    cache = ModelCache()
    first = cache.get(tiny_t_weights, variant="T", device="cpu")
    assert cache.get(tiny_t_weights, device="cpu") is first and cache.loads == 1  # reuse, any variant accepted
    with torch.inference_mode(False):
        first.to(torch.device("meta"))
    again = cache.get(tiny_t_weights, variant="T", device="cpu")
    assert again is not first and cache.loads == 2 and again.device == torch.device("cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        out = again.module(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert torch.isfinite(out).all()
    with pytest.raises(VariantMismatchError):
        cache.get(tiny_t_weights, variant="S", device="cpu")
