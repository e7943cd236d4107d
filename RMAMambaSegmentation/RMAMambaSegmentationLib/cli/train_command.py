"""``rmamamba train DATA -o OUT``: train RMA-Mamba with the paper's protocol (every value overridable)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from RMAMambaSegmentationLib.training.recipes import RECIPES, recipe_settings

logger = logging.getLogger(__name__)


DESCRIPTION = """\
Train RMA-Mamba on liver masks. DATA is one of:
  * a CirrMRI600+ 3D archive: {train,valid,test}_{images,masks}/<id>.nii.gz (split by folder);
  * the official 2D PNG release: {train,valid,test}/<case>/{images,masks}/*.png (mask > 127 = liver);
  * a folder with an image folder (images/) and a label folder (liver_masks/, masks/, labels/), or give
    --images and --masks; split with --split FILE (JSON {"train": [...], "valid": [...]}) or --valid-fraction;
  * a packed slice file FILE.npz written by --pack-slices: the prepared slices of both splits, read without
    SimpleITK (for a machine that has only PyTorch and NumPy); --input-size and --intensity must be the packed ones.
Images and masks are paired by case name (suffixes such as _image, _liver, _mask, _seg are ignored), never by
order. Each layout may be nested one folder deeper. Volumes are sliced axially with the inference preprocessing.

Defaults come from --recipe. scratch (the default from random weights): batch 8, 25 epochs, lr 1e-3 with a
per-step cosine decay to 1e-5 (U-Net: Adam; RMA-Mamba-T/S: AdamW, weight decay 0.05, 1 warm-up epoch), rotation
+-15 deg (p 0.7), zoom 0.87-1.15 (p 0.7), gamma 0.67-1.5 (p 0.5), no flips. paper (the default with --pretrained or
--init-weights, and for SRMA): 256x256, batch 16, Adam lr 1e-4, ReduceLROnPlateau (patience 5) on the validation
loss, up to 500 epochs, early stopping after 50 epochs without a better validation Dice, rotation +-35 deg / flips /
coarse dropout (each with probability 0.3). Loss: Dice+BCE summed over the deep-supervision outputs (four for
RMA-Mamba, one for the U-Net). Any option given explicitly overrides the recipe.
Writes OUT/last.pt and OUT/best.pt (each with a model card .json), OUT/training_state.pt (for --resume),
OUT/log.csv and OUT/config.json. Multi-GPU: torchrun --nproc_per_node N -m RMAMambaSegmentationLib.cli train ...
(--batch-size is then per GPU)."""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").replace(",", " ").split()
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return int(parts[0]), int(parts[1])


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _from_recipe(key: str, what: str = "") -> str:
    """Help text of an option whose default comes from the recipe: the values of both recipes, read from them."""
    rma, unet = recipe_settings("scratch", "T")[key], recipe_settings("scratch", "UNET")[key]
    paper, srma = recipe_settings("paper", "T")[key], recipe_settings("paper", "SRMA")[key]
    scratch = _value(rma) if rma == unet else f"{_value(unet)} (U-Net) / {_value(rma)} (RMA-Mamba)"
    paper_text = _value(paper) if paper == srma else f"{_value(paper)} ({_value(srma)} for SRMA)"
    return f"{what + '; ' if what else ''}default from the recipe: scratch {scratch}, paper {paper_text}"


RECIPE_NOTE = ("Options whose help says 'default from the recipe' take that value from --recipe when they are not "
               "given; a value given on the command line overrides the recipe.")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train RMA-Mamba on your data", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("data", nargs="?", metavar="DATA", help="data folder or packed slice file .npz (see above)")
    data.add_argument("--pack-slices", metavar="FILE.npz",
                      help="prepare the training and validation slices of DATA, write them to FILE.npz and exit "
                           "without training (nothing is written to -o)")
    data.add_argument("--images", metavar="DIR", help="image folder (paired layout, with --masks)")
    data.add_argument("--masks", metavar="DIR", help="label folder (paired layout, with --images)")
    data.add_argument("--layout", default="auto", choices=("auto", "cirrmri3d", "png2d", "paired"))
    data.add_argument("--split", metavar="FILE", help='JSON {"train": [...], "valid": [...], "test": [...]}')
    data.add_argument("--valid-fraction", type=float, default=0.2,
                      help="share of cases held out for validation when there is no split (default 0.2)")
    data.add_argument("--label", type=int, default=None,
                      help="liver value in the label maps (default: nonzero; TotalSegmentator: 5)")
    data.add_argument("--intensity", default="MRI", choices=("MRI", "MRI-tissue", "CT"),
                      help="intensity preset (MRI: percentiles 0.5-99.5; MRI-tissue: 0.5th percentile to 4x the "
                           "median tissue value; CT: -150..250 HU)")
    data.add_argument("--workers", type=int, default=0, help="threads reading volumes at start (default 0)")
    data.add_argument("--licence", default="", help="data licence recorded in the model cards")

    model = parser.add_argument_group("model")
    model.add_argument("--variant", "--model", dest="variant", type=_model_name, default="T",
                       choices=("T", "S", "SRMA", "UNET"),
                       help="T/S: 2D RMA-Mamba on slices; SRMA: 3D SRMA-Mamba on volume crops; unet: the 2D U-Net "
                            "baseline on slices (default T)")
    model.add_argument("--crop-size", nargs=3, type=int, default=(224, 224, 64), metavar=("I", "J", "K"),
                       help="SRMA: training crop = validation window, multiples of 16 (default 224 224 64)")
    model.add_argument("--overlap", type=float, default=0.25, help="SRMA: validation window overlap (0.25)")
    model.add_argument("--foreground-p", type=float, default=0.5,
                       help="SRMA: share of crops centred on a liver voxel (default 0.5)")
    model.add_argument("--context-slices", type=int, choices=(0, 1), default=0,
                       help="1: feed the previous and next slice in the outer input channels (2.5D, not in the "
                            "paper); 0: the slice in all three channels (default)")
    model.add_argument("--input-size", type=_size, default=(256, 256), metavar="N|HxW", help="default 256")
    model.add_argument("--pretrained", metavar="FILE", help="VMamba ImageNet checkpoint for the encoder")
    model.add_argument("--init-weights", metavar="FILE", help="RMA-Mamba checkpoint to fine-tune")

    optim = parser.add_argument_group("optimisation", RECIPE_NOTE)
    optim.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    optim.add_argument("--recipe", choices=RECIPES, default=None,
                       help="where the options marked 'default from the recipe' get their defaults: scratch (from "
                            "random weights; the default without --pretrained/--init-weights) or paper (the "
                            "paper's protocol; the default with them and for SRMA). Options given explicitly "
                            "override it")
    optim.add_argument("--batch-size", type=int, default=None,
                       help=_from_recipe("batch_size", "slices per step (SRMA: crops); per GPU with torchrun"))
    optim.add_argument("--lr", type=float, default=None, help=_from_recipe("lr", "learning rate"))
    optim.add_argument("--optimizer", choices=("adam", "adamw"), default=None, help=_from_recipe("optimizer"))
    optim.add_argument("--weight-decay", type=float, default=None, help=_from_recipe("weight_decay"))
    optim.add_argument("--schedule", choices=("plateau", "cosine"), default=None,
                       help=_from_recipe("schedule", "cosine: per-step decay to --min-lr after --warmup-epochs; "
                                                     "plateau: ReduceLROnPlateau on the validation loss"))
    optim.add_argument("--min-lr", type=float, default=None,
                       help=_from_recipe("min_lr", "cosine: final learning rate"))
    optim.add_argument("--warmup-epochs", type=float, default=None,
                       help=_from_recipe("warmup_epochs", "cosine: linear warm-up epochs"))
    optim.add_argument("--grad-clip", type=float, default=None,
                       help="clip the gradient norm (default: none; 1.0 for SRMA, not from the recipe)")
    optim.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    optim.add_argument("--epochs", type=int, default=None, help=_from_recipe("epochs"))
    optim.add_argument("--lr-patience", type=int, default=5, help="plateau: epochs without a lower validation loss "
                                                                    "before the learning rate drops (default 5)")
    optim.add_argument("--lr-factor", type=float, default=0.1,
                       help="plateau: factor of each learning-rate drop (default 0.1)")
    optim.add_argument("--early-stop", type=int, default=None,
                       help=_from_recipe("early_stop", "epochs without a better validation Dice"))
    optim.add_argument("--select-by", choices=("slice", "volume"), default="slice",
                       help="validation Dice that picks best.pt and drives early stopping: mean per slice (paper) "
                            "or mean per volume (each validation case's slices pooled)")
    optim.add_argument("--slices-per-epoch", type=int, default=None, help="default: every training slice")
    optim.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    optim.add_argument("--valid-max-slices", type=int, default=None, help="validate on at most N slices")
    optim.add_argument("--seed", type=int, default=42)
    optim.add_argument("--device", default="auto",
                       help="auto (CUDA when available, else the CPU: training stays off the Apple GPU), cpu, cuda, "
                            "cuda:N or mps (default auto)")
    optim.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                       help="mixed precision (auto: bf16 or fp16 on CUDA, float32 on CPU; bf16 on CPU only when "
                            "asked: about 15%% faster on CPUs with AMX)")
    optim.add_argument("--keep-every", type=int, default=0, metavar="N", help="also keep epoch_NNNN.pt every N")
    optim.add_argument("--resume", action="store_true", help="continue from OUTPUT/training_state.pt")
    optim.add_argument("--resume-from", metavar="STATE", help="continue from this training_state.pt (or its folder)")
    optim.add_argument("--teacher", action="append", metavar="PATH",
                       help="distil from this trained 2D model (repeat for an ensemble; its intensity preset must be "
                            "the student's): a weights file, or a --folds output folder (with --folds, fold k learns "
                            "from that folder's fold k model, which never saw fold k's cases; without, from all of "
                            "its fold models)")
    optim.add_argument("--kd-weight", type=float, default=1.0, help="weight of the distillation term (default 1)")
    optim.add_argument("--kd-temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    optim.add_argument("--guide-weight", type=float, default=0.0, metavar="W",
                       help="feature guidance: the student's encoder stages 1-2 imitate the (first) U-Net teacher's "
                            "features at the same stride, with this weight (default 0: off)")
    optim.add_argument("--guide-epochs", type=int, default=0, metavar="N",
                       help="feature guidance runs in the first N epochs only (default 0: off)")
    optim.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                       help="validate and save an exponential moving average of the weights with this decay per "
                            "step (e.g. 0.999; default 0: the raw weights)")
    optim.add_argument("--overwrite", action="store_true",
                       help="start afresh in an output folder that holds an earlier run (its files are replaced)")
    optim.add_argument("--folds", type=int, default=None, metavar="K",
                       help="subject-level cross-validation: train K models (case i held out in fold i mod K, "
                            "training and validation cases together), segment each held-out case with its fold's "
                            "final weights and write OUT/crossval.csv (Dice, HD95, volume error, verdict per case)")
    optim.add_argument("--no-progress", dest="show_progress", action="store_false", help="no progress bar")

    aug = parser.add_argument_group("augmentation", RECIPE_NOTE)
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation at all")
    aug.add_argument("--rotate-p", type=float, default=None, help=_from_recipe("rotate_p", "probability of a rotation"))
    aug.add_argument("--max-angle", type=float, default=None,
                     help=_from_recipe("max_angle", "largest rotation in degrees"))
    aug.add_argument("--hflip-p", type=float, default=None,
                     help=_from_recipe("hflip_p", "probability of a left-right flip"))
    aug.add_argument("--vflip-p", type=float, default=None,
                     help=_from_recipe("vflip_p", "probability of an up-down flip"))
    aug.add_argument("--dropout-p", type=float, default=None,
                     help=_from_recipe("dropout_p", "probability of coarse dropout (square holes)"))
    aug.add_argument("--holes", type=int, default=None, help=_from_recipe("holes", "most holes per image"))
    aug.add_argument("--hole-fraction", type=float, default=32 / 256,
                     help="hole side / image side (default 32/256, not from the recipe)")
    aug.add_argument("--gamma-p", type=float, default=None,
                     help=_from_recipe("gamma_p", "not in the paper: probability of a random gamma on the image"))
    aug.add_argument("--max-gamma", type=float, default=None,
                     help=_from_recipe("max_gamma", "gamma log-uniform in [1/G, G]"))
    aug.add_argument("--scale-p", type=float, default=None,
                     help=_from_recipe("scale_p", "not in the paper: probability of a random zoom about the centre"))
    aug.add_argument("--max-scale", type=float, default=None,
                     help=_from_recipe("max_scale", "zoom log-uniform in [1/S, S]"))
    aug.add_argument("--shading-p", type=float, default=0.0,
                     help="not in the paper: probability of a smooth gain field (MR bias field) (default 0)")
    aug.add_argument("--max-shading", type=float, default=1.3,
                     help="gain field within [1/S, S] (default 1.3)")
    parser.set_defaults(run=run)
    return parser


class ProgressBar:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise)."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.last_decile = -1

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        if progress.step == 1:
            self.started, self.last_decile = now, -1
        fraction = progress.step / max(progress.steps, 1)
        speed = f" {(progress.step - 1) / (now - self.started):.2f} it/s" if progress.step > 1 else ""
        filled = int(30 * fraction)
        line = (f"epoch {progress.epoch}/{progress.epochs} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{progress.step}/{progress.steps} loss {progress.loss:.4f} lr {progress.lr:.2g}{speed}")
        if self.interactive:
            end = "\n" if progress.step == progress.steps else ""
            self.stream.write("\r" + line + end)
            self.stream.flush()
        elif int(10 * fraction) > self.last_decile:
            self.last_decile = int(10 * fraction)
            self.stream.write(line + "\n")


def _model_name(text: str) -> str:
    from RMAMambaSegmentationLib.registry import normalise_variant

    return normalise_variant(text)


def recipe_values(args: argparse.Namespace) -> tuple[str, argparse.Namespace]:
    """The recipe's name and ``args`` with every option left unset filled in from that recipe."""
    from RMAMambaSegmentationLib.training.recipes import default_recipe, recipe_settings

    name = args.recipe or default_recipe(args.variant, bool(args.pretrained or args.init_weights))
    values = vars(args).copy()
    for key, value in recipe_settings(name, args.variant).items():
        if values.get(key) is None:
            values[key] = value
    return name, argparse.Namespace(**values)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of the parsed arguments (unset options from the recipe)."""
    from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
    from RMAMambaSegmentationLib.training.augmentation import AugmentationConfig
    from RMAMambaSegmentationLib.training.config import TrainConfig

    recipe, args = recipe_values(args)
    augmentation = AugmentationConfig(
        rotate_p=args.rotate_p, max_angle_deg=args.max_angle, hflip_p=args.hflip_p, vflip_p=args.vflip_p,
        dropout_p=args.dropout_p, holes=args.holes, hole_fraction=args.hole_fraction, gamma_p=args.gamma_p,
        max_gamma=args.max_gamma, scale_p=args.scale_p, max_scale=args.max_scale,
        shading_p=args.shading_p, max_shading=args.max_shading, enabled=args.augment,
    )
    return TrainConfig(
        variant=args.variant, input_size=args.input_size, intensity=IntensityPreset.from_name(args.intensity),
        context_slices=args.context_slices, label=args.label, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, schedule=args.schedule, min_lr=args.min_lr, warmup_epochs=args.warmup_epochs,
        grad_clip=args.grad_clip, recipe=recipe, batch_size=args.batch_size,
        crop_size=tuple(args.crop_size), overlap=args.overlap, foreground_p=args.foreground_p,
        epochs=args.epochs, lr_patience=args.lr_patience,
        lr_factor=args.lr_factor, early_stop=args.early_stop, select_by=args.select_by,
        slices_per_epoch=args.slices_per_epoch, max_steps=args.max_steps, valid_max_slices=args.valid_max_slices,
        augmentation=augmentation,
        seed=args.seed, device=args.device, amp=args.amp, workers=args.workers, pretrained=args.pretrained,
        init_weights=args.init_weights, keep_every=args.keep_every, licence=args.licence,
        teachers=tuple(teacher_files(args.teacher or [])), kd_weight=args.kd_weight,
        kd_temperature=args.kd_temperature, ema=args.ema, guide_weight=args.guide_weight,
        guide_epochs=args.guide_epochs,
    )


def teacher_files(paths: list[str], fold: int | None = None) -> list[str]:
    """Weights files of ``--teacher`` paths: a file as it is; a ``--folds`` output folder as its fold ``fold``
    model, or all of its fold models when ``fold`` is None."""
    from pathlib import Path

    from RMAMambaSegmentationLib.errors import InputFileError

    files: list[str] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("fold_*/last.pt")) if fold is None else [path / f"fold_{fold}" / "last.pt"]
            if not found or not all(f.is_file() for f in found):
                raise InputFileError(f"teacher folder {path} holds no fold model "
                                     f"{'fold_*/last.pt' if fold is None else f'fold_{fold}/last.pt'}")
            files.extend(str(f) for f in found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise InputFileError(f"teacher weights {path} not found")
    return files


#: Files whose presence marks an output folder as holding an earlier run.
RUN_FILES = ("last.pt", "best.pt", "training_state.pt", "log.csv", "config.json", "fold_1")


def earlier_run(output: str) -> str | None:
    """The first file of an earlier run in ``output`` (None for a new or empty folder)."""
    from pathlib import Path

    for name in RUN_FILES:
        if (Path(output) / name).exists():
            return name
    return None


def remove_earlier_run(output: str) -> None:
    """Delete the files an earlier run wrote into ``output`` (weights, cards, state, log, config; fold folders)."""
    import shutil
    from pathlib import Path

    folder = Path(output)
    patterns = ("last.pt*", "best.pt*", "epoch_*.pt*", "training_state.pt", "log.csv", "config.json", "crossval.csv",
                "evaluation.csv")
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink()
    for pattern in ("fold_*", "out_of_fold", "references"):
        for path in folder.glob(pattern):
            shutil.rmtree(path)


def training_data(args: argparse.Namespace):
    """The split cases of a data folder, or the slices of a packed file (DATA ending in .npz)."""
    from RMAMambaSegmentationLib.errors import InputFileError
    from RMAMambaSegmentationLib.training.layouts import find_training_data
    from RMAMambaSegmentationLib.training.packed_slices import is_packed_path, read_packed_slices

    if not is_packed_path(args.data):
        return find_training_data(
            args.data, images=args.images, masks=args.masks, layout=args.layout, split_file=args.split,
            valid_fraction=args.valid_fraction, seed=args.seed,
        )
    if args.folds is not None or args.pack_slices or args.images or args.masks or args.split:
        raise InputFileError(f"{args.data} is a packed slice file: it already holds its split, and --folds, "
                             "--pack-slices, --images, --masks and --split need a data folder")
    return read_packed_slices(args.data)


def pack_slices(args: argparse.Namespace) -> int:
    """``--pack-slices FILE``: write the prepared slices of DATA to FILE; no training."""
    from RMAMambaSegmentationLib.errors import RMAMambaError
    from RMAMambaSegmentationLib.training.packed_slices import pack_training_slices

    try:
        pack_training_slices(config_from_args(args), training_data(args), args.pack_slices)
    except (RMAMambaError, ValueError) as error:
        logger.error("%s", error)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    from RMAMambaSegmentationLib.errors import RMAMambaError
    from RMAMambaSegmentationLib.training.run import run_training

    if args.pack_slices:
        return pack_slices(args)
    found = earlier_run(args.output)
    if found and not (args.resume or args.resume_from or args.overwrite):
        logger.error("%s already holds a training run (%s): add --resume to continue it or --overwrite to start "
                     "afresh", args.output, found)
        return 2
    if found and args.overwrite and not (args.resume or args.resume_from):
        remove_earlier_run(args.output)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        config = config_from_args(args)
        data = training_data(args)
        progress = ProgressBar() if args.show_progress else None
        if args.folds is not None:
            from RMAMambaSegmentationLib.cli.crossval import run_crossval

            teachers = None
            if args.teacher:
                teachers = [teacher_files(args.teacher, fold) for fold in range(1, args.folds + 1)]
            run_crossval(config, data, args.output, folds=args.folds, resume=args.resume, progress=progress,
                         segment_options=["--device", args.device], fold_teachers=teachers)
            return 0
        resume = args.resume_from if args.resume_from else ("" if args.resume else None)
        result = run_training(config, data, args.output, resume=resume, progress=progress)
    except (RMAMambaError, ValueError) as error:
        logger.error("%s", error)
        return 2
    logger.info("best validation Dice %.4f at epoch %d: %s", result.best_dice, result.best_epoch, result.best_path)
    return 0
