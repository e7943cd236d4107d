"""``torchrun`` runs the unchanged train command as two DistributedDataParallel processes (Gloo on CPU)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT_ROOT, TOTALSEG

RUNNER = textwrap.dedent(
    """
    import argparse, logging, sys
    logging.basicConfig(level=logging.INFO)
    from RMAMambaSegmentationLib.cli import train_command
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.run(args))
    """
)


@pytest.mark.parametrize("model", ["T", "unet"])
def test_torchrun_two_processes(tmp_path, model):
    data = tmp_path / "data"
    for name, image, labels in (("mr", "example_mr_sm", "example_seg_mr"), ("ct", "example_ct_sm", "example_seg")):
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "images" / f"{name}.nii.gz").symlink_to(TOTALSEG / f"{image}.nii.gz")
        (data / "labels" / f"{name}.nii.gz").symlink_to(TOTALSEG / f"{labels}.nii.gz")
    (data / "split.json").write_text(json.dumps({"train": ["mr"], "valid": ["ct"]}))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    out = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT / "RMAMambaSegmentation")}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(runner),
        "train", str(data), "--split", str(data / "split.json"), "--label", "5", "-o", str(out),
        "--input-size", "64", "--batch-size", "2", "--slices-per-epoch", "8", "--epochs", "1",
        "--valid-max-slices", "6", "--device", "cpu", "--no-progress", "--model", model,
    ]
    try:
        completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "rank 1 of 2" in completed.stderr
        card = json.loads((out / "last.json").read_text())
        assert card["training"]["world_size"] == 2 and card["variant"] == model.upper()
        with (out / "log.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        # 8 slices per epoch shared by 2 processes with batches of 2: 2 steps each.
        assert len(rows) == 1 and rows[0]["steps"] == "2"
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
