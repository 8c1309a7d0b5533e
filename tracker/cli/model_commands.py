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
    train: Annotated[list[str] | None, typer.Option(
        "--data", "--train",
        help="Training folder (images + .pts); repeat for several; DIR@W draws W times its "
             "images each epoch (@3, @0.5). Default: faces68/train.")] = None,
    val: Annotated[str, typer.Option(
        help="Select checkpoints on this folder instead of a split of the training data "
             "(never one named val or test).")] = "",
    select_frac: Annotated[float | None, typer.Option(
        help="Fraction of the training persons/photos held out for checkpoint selection "
             "(stable hash of the file-name prefix; default 0.1; not with --val).")] = None,
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
    flip_folders: Annotated[list[str] | None, typer.Option(
        "--flip-folder",
        help="A training folder (as given to --data, without @W) whose images are flipped "
             "even with --no-flip (mirror-symmetric labels, e.g. 300-W); repeat for several.")
    ] = None,
    select_on: Annotated[str, typer.Option(
        help="A training folder whose selection NME alone picks best.pt (default: all).")] = "",
    teacher: Annotated[str, typer.Option(
        help="Distil from this checkpoint (same input size): its softmax maps are a target.")] = "",
    kd_weight: Annotated[float, typer.Option(help="With --teacher: weight of its maps.")] = 0.5,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    minutes: Annotated[float, typer.Option(
        help="Wall-clock budget: the schedule shrinks to the epochs that fit (0 = off).")] = 0.0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train RCN / SumNet on 68-point data (or the DKM with --dkm); checkpoints every epoch,
    selected on a held-out split of the training data, with NME per data folder."""
    with known_errors(debug):
        folders = train or [TRAIN_DIR]
        if val and select_frac is not None:
            raise CliError("--val and --select-frac exclude each other", ExitCode.USAGE)
        from tracker.training.splits import SELECT_FRAC, folder_weight

        for spec in [*folders, *([val] if val else [])]:
            try:
                folder = folder_weight(spec)[0] if spec != val else spec
            except ValueError as exc:
                raise CliError(str(exc), ExitCode.USAGE) from None
            if not Path(folder).is_dir():
                raise CliError(f"data folder not found: {folder}", ExitCode.SOURCE)
        if teacher and not Path(teacher).is_file():
            raise CliError(f"teacher checkpoint not found: {teacher}", ExitCode.USAGE)
        from tracker.training.train import TrainConfig, Trainer

        frac = SELECT_FRAC if select_frac is None else select_frac
        try:
            cfg = TrainConfig(
                model=model, train=tuple(folders), val=val, select_frac=frac, out=out,
                epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay, sigma=sigma,
                seed=seed, threads=threads, channels=channels, lcn=lcn, dkm=dkm,
                dkm_width=dkm_width, rcn_weights=rcn_weights, init=init, limit=limit,
                resume=resume, ema=ema, rotate_sigma=rotate_sigma, occlude_p=occlude_p,
                flip=flip, flip_shift=flip_shift, teacher=teacher, kd_weight=kd_weight,
                device=device, minutes=minutes, flip_folders=tuple(flip_folders or ()),
                select_on=select_on)
            trainer = Trainer(cfg)
        except ValueError as exc:  # a bad --device or folder, a mismatched teacher, held-out or no data
            raise CliError(str(exc), ExitCode.USAGE) from None
        best = trainer.run()
        typer.echo(f"best selection NME {best * 100:.2f}% -> {out}/best.pt")
        counts = trainer.data.counts()
        for folder, value in trainer.best_by_folder.items():
            typer.echo(f"  {folder}: {value * 100:.2f}% (n={counts[folder][1]})")


def model_labels(models: list[str | None]) -> list[str]:
    """Legend/report names: ``default``, a shipped name, or the file stem (with its folder
    when two stems clash)."""
    def short(m: str | None, parts: int) -> str:
        if not m or m == "default":
            return "default"
        p = Path(m)
        return "/".join(p.with_suffix("").parts[-parts:]) if p.suffix else m

    labels = [short(m, 1) for m in models]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = short(models[i], 2)
    for i, label in enumerate(labels):  # still clashing: number them
        if labels.count(label) > 1:
            labels[i] = f"{label}#{i + 1}"
    return labels


def eval_command(
    data: Annotated[list[str] | None, typer.Option(
        help="Folder of images + .pts (300-W style); repeat for several (reported per folder). "
             "Default: faces68/val.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "--weights",
        help="Weights file or shipped name (default: embedded model); repeat to compare.")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="A further model to compare (after --model, default: the embedded one).")] = None,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "auto",
    detector: Annotated[bool, typer.Option("--detector",
                                           help="Use the package's face detector (a miss fails).")] = False,
    occlude: Annotated[str | None, typer.Option(help="Cover 'eyes' or 'mouth' with a noise patch.")] = None,
    init: Annotated[str, typer.Option(help="Start from the weights of this checkpoint.")] = "",
    limit: Annotated[int, typer.Option(help="Only the first N images (0 = all).")] = 0,
    plots: Annotated[str | None, typer.Option(
        help="Folder for ced.png (one curve per model), ced_<folder>.png with several folders, "
             "and representative*.png.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (fractions of the inter-ocular distance); with "
                       "several models {\"models\": [...]}.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Evaluate landmarks: NME (outer-eye-corner normalised), failure rate, AUC@0.10, ms/face,
    per-region NME and the mean signed offset (predicted - true), overall and per folder."""
    with known_errors(debug):
        from tracker.evaluation import stills
        from tracker.landmarker import load_landmarker
        from tracker.models.checkpoint import WeightsError

        if occlude is not None and occlude not in stills.OCCLUDERS:
            raise CliError(f"--occlude must be one of {', '.join(stills.OCCLUDERS)}", ExitCode.USAGE)
        models: list[str | None] = [*(model or [None]), *(compare or [])]
        labels = model_labels(models)
        try:
            samples, groups = stills.load_eval_sets(data or [VAL_DIR], limit or None)
        except FileNotFoundError as exc:
            raise CliError(str(exc), ExitCode.SOURCE) from None
        det = None
        if detector:
            from tracker.detect.detectors import create_detector

            det = create_detector()
        results = {}
        for label, weights in zip(labels, models, strict=True):
            try:
                lm = load_landmarker(weights, engine)
            except WeightsError as exc:
                raise CliError(str(exc), ExitCode.MODEL) from None
            results[label] = stills.evaluate(samples, lm, det, occlude, groups)
        if plots:
            stills.write_plots(samples, results, plots)
        reports = [{"name": label, "weights": weights or "default", **r.report()}
                   for (label, r), weights in zip(results.items(), models, strict=True)]
        if as_json:
            typer.echo(json.dumps(reports[0] if len(reports) == 1 else {"models": reports}))
            return
        for i, report in enumerate(reports):
            if len(reports) > 1:
                typer.echo(("" if i == 0 else "\n") + f"== {report['name']} ({report['weights']})")
            for line in stills.format_report(report):
                typer.echo(line)
