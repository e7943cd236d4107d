"""One training run from a data folder (find and split the cases, cache the slices) or from a packed slice file
(:mod:`.packed_slices`): train, clean up."""

from __future__ import annotations

import logging
from pathlib import Path

from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.distributed import cleanup_distributed, setup_distributed
from RMAMambaSegmentationLib.training.layouts import DataSplits
from RMAMambaSegmentationLib.training.packed_slices import PackedSlices
from RMAMambaSegmentationLib.training.progress import ProgressCallback, TrainResult
from RMAMambaSegmentationLib.training.slices import build_slice_set
from RMAMambaSegmentationLib.training.state import resolve_resume_path
from RMAMambaSegmentationLib.training.trainer import Trainer

logger = logging.getLogger(__name__)


def run_training(
    config: TrainConfig,
    data: DataSplits | PackedSlices,
    output_dir: str | Path,
    *,
    resume: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train on ``data`` (from :func:`.layouts.find_training_data`, or :func:`.packed_slices.read_packed_slices`)
    into ``output_dir``.

    ``resume``: a ``training_state.pt`` or a folder holding one ("" means ``output_dir``). Under ``torchrun``
    every process runs this same function.
    """
    if isinstance(data, PackedSlices):
        config = data.config_for(config)
    context = setup_distributed(config.device)
    try:
        if isinstance(data, PackedSlices):  # prepared slices: no volume to read
            train_set, valid_set = data.slice_sets()
            trainer_class = Trainer
        elif config.is_volumetric:  # SRMA-Mamba: whole 3D volumes, random crops
            from RMAMambaSegmentationLib.training.trainer3d import VolumeTrainer
            from RMAMambaSegmentationLib.training.volume_set import build_volume_set

            train_set = build_volume_set(data.train, label=config.label, workers=config.workers)
            valid_set = build_volume_set(data.valid, label=config.label, workers=config.workers)
            trainer_class = VolumeTrainer
        else:
            options = {"preset": config.intensity, "size": config.input_size, "label": config.label,
                       "workers": config.workers}
            train_set = build_slice_set(data.train, **options)
            valid_set = build_slice_set(data.valid, **options)
            trainer_class = Trainer
        trainer = trainer_class(config, train_set, valid_set, output_dir, context=context,
                                data_description=data.describe(), progress=progress)
        if resume is not None:
            trainer.resume(resolve_resume_path(resume, output_dir))
        return trainer.fit()
    finally:
        cleanup_distributed(context)
