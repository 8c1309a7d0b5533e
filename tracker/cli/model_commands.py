"""``tracker train`` and ``tracker eval`` (torch is imported only when they run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tracker.cli.app import CliError, ExitCode, known_errors
from tracker.engines.names import ENGINE_HELP

TRAIN_DIR = "../shared/data/faces68/train"
VAL_DIR = "../shared/data/faces68/val"


def train_command(
    model: Annotated[str, typer.Option(
        help="Variant: rcn_lite80, rcn_lite, rcn, sumnet_lite, sumnet (tracker/model.py).")] = "rcn_lite",
    train: Annotated[str, typer.Option(help="Training folder (images + .pts).")] = TRAIN_DIR,
    val: Annotated[str, typer.Option(help="Validation folder (images + .pts).")] = VAL_DIR,
    out: Annotated[str, typer.Option(help="Run folder: log.txt, last.pt, best.pt.")] = "runs/rcn_lite",
    epochs: Annotated[int, typer.Option(min=1)] = 45,
    batch: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option()] = 1e-4,
    sigma: Annotated[float, typer.Option(help="Gaussian target sigma (px).")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    channels: Annotated[int, typer.Option(help="1 = grayscale, 3 = colour input.")] = 1,
    lcn: Annotated[bool, typer.Option(help="Local contrast normalisation of the input.")] = False,
    dkm: Annotated[bool, typer.Option(help="Train the denoising keypoint model instead.")] = False,
    dkm_width: Annotated[int, typer.Option(help="With --dkm: channels of the DKM.")] = 64,
    rcn_weights: Annotated[str, typer.Option(help="With --dkm: the RCN to fuse with.")] = "",
    init: Annotated[str, typer.Option(help="Start from the weights of this checkpoint.")] = "",
    limit: Annotated[int, typer.Option(help="Use only the first N images (0 = all).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    ema: Annotated[float, typer.Option(help="Decay of a weight moving average (0 = off).")] = 0.0,
    rotate_sigma: Annotated[float, typer.Option(
        help="Rotation augmentation: 0 = uniform in +-30 deg, else normal(0, sigma) clipped.")] = 0.0,
    occlude_p: Annotated[float, typer.Option(help="Probability of an occluding patch.")] = 0.3,
    flip: Annotated[bool, typer.Option(help="Horizontal flip augmentation (left/right swap).")] = True,
    flip_shift: Annotated[float, typer.Option(
        help="Labels' x offset (fraction of the crop side) that flipped labels keep.")] = 0.0,
    teacher: Annotated[str, typer.Option(
        help="Distil from this checkpoint (same input size): its softmax maps are a target.")] = "",
    kd_weight: Annotated[float, typer.Option(help="With --teacher: weight of its maps.")] = 0.5,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    minutes: Annotated[float, typer.Option(
        help="Wall-clock budget: the schedule shrinks to the epochs that fit (0 = off).")] = 0.0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train RCN / SumNet on 68-point data (or the DKM with --dkm); checkpoints every epoch."""
    with known_errors(debug):
        for folder in (train, val):
            if not Path(folder).is_dir():
                raise CliError(f"data folder not found: {folder}", ExitCode.SOURCE)
        if teacher and not Path(teacher).is_file():
            raise CliError(f"teacher checkpoint not found: {teacher}", ExitCode.USAGE)
        from tracker.training.train import TrainConfig, Trainer

        cfg = TrainConfig(model=model, train=train, val=val, out=out, epochs=epochs, batch=batch,
                          lr=lr, weight_decay=weight_decay, sigma=sigma, seed=seed, threads=threads,
                          channels=channels, lcn=lcn, dkm=dkm, dkm_width=dkm_width,
                          rcn_weights=rcn_weights, init=init, limit=limit, resume=resume, ema=ema,
                          rotate_sigma=rotate_sigma, occlude_p=occlude_p, flip=flip,
                          flip_shift=flip_shift, teacher=teacher, kd_weight=kd_weight,
                          device=device, minutes=minutes)
        try:
            trainer = Trainer(cfg)
        except ValueError as exc:  # a bad --device, a mismatched teacher, unreadable data
            raise CliError(str(exc), ExitCode.USAGE) from None
        best = trainer.run()
        typer.echo(f"best val NME {best * 100:.2f}% -> {out}/best.pt")


def eval_command(
    data: Annotated[str, typer.Option(help="Folder of images + .pts (300-W style).")] = VAL_DIR,
    model: Annotated[str | None, typer.Option("--model", "--weights",
                                              help="Weights file (default: embedded model).")] = None,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "auto",
    detector: Annotated[bool, typer.Option("--detector",
                                           help="Use the package's face detector (a miss fails).")] = False,
    occlude: Annotated[str | None, typer.Option(help="Cover 'eyes' or 'mouth' with a noise patch.")] = None,
    init: Annotated[str, typer.Option(help="Start from the weights of this checkpoint.")] = "",
    limit: Annotated[int, typer.Option(help="Only the first N images (0 = all).")] = 0,
    plots: Annotated[str | None, typer.Option(help="Folder for ced.png and representative.png.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Evaluate landmarks: NME (outer-eye-corner normalised), failure rate, AUC@0.10, ms/face."""
    with known_errors(debug):
        from tracker.evaluation.stills import OCCLUDERS, evaluate, load_eval_set, write_plots
        from tracker.landmarker import load_landmarker
        from tracker.models.checkpoint import WeightsError

        if occlude is not None and occlude not in OCCLUDERS:
            raise CliError(f"--occlude must be one of {', '.join(OCCLUDERS)}", ExitCode.USAGE)
        try:
            samples = load_eval_set(data, limit or None)
        except FileNotFoundError as exc:
            raise CliError(str(exc), ExitCode.SOURCE) from None
        try:
            lm = load_landmarker(model, engine)
        except WeightsError as exc:
            raise CliError(str(exc), ExitCode.MODEL) from None
        det = None
        if detector:
            from tracker.detect.detectors import create_detector

            det = create_detector()
        result = evaluate(samples, lm, det, occlude)
        summary = result.summary()
        if plots:
            write_plots(samples, result, plots, Path(model).stem if model else "default")
        if as_json:
            typer.echo(json.dumps(summary))
            return
        for key, value in summary.items():
            shown = f"{value * 100:.2f}%" if key.startswith(("nme", "fr", "auc")) else value
            typer.echo(f"{key:12s} {shown}")
