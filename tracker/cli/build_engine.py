"""``tracker build-engine``: compile the landmark model with TensorRT and cache it (in
``$TRACKER_CACHE/tensorrt``, default ``~/.cache/tracker/tensorrt``).

torch and torch-tensorrt are imported only when the command runs.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tracker.cli.app import CliError, ExitCode, known_errors


def build_engine_command(
    weights: Annotated[str | None, typer.Option(
        show_default=False, help="Landmark weights (default: the shipped model).")] = None,
    batch: Annotated[int, typer.Option(
        min=1, help="Fixed batch of the engine (fewer faces are padded; `tracker run` uses 8).")] = 8,
    precision: Annotated[str, typer.Option(help="fp16 or fp32.")] = "fp16",
    out: Annotated[str | None, typer.Option(
        show_default=False,
        help="Engine folder (default: tensorrt/ in the cache: $TRACKER_CACHE, else "
        "$XDG_CACHE_HOME/tracker or ~/.cache/tracker).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a valid engine exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sidecar as JSON.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Build (or verify) the TensorRT engine of the landmark model for this GPU.

    Keyed by model, input size, batch, precision, TensorRT version and GPU; written with a JSON
    sidecar (model config, weights checksum, build time, accuracy vs fp32). A valid engine is
    reused, a stale or mismatched one rebuilt.
    """
    with known_errors(debug):
        if precision not in ("fp16", "fp32"):
            raise CliError(f"--precision must be fp16 or fp32, got {precision!r}", ExitCode.USAGE)
        from dataclasses import asdict

        from tracker.engines.base import TENSORRT_HINT, EngineError, tensorrt_available

        if not tensorrt_available():
            raise CliError(TENSORRT_HINT, ExitCode.MODEL)
        from tracker.engines.cache import EngineCacheError, read_sidecar
        from tracker.engines.gpu import open_tensorrt
        from tracker.landmarker import model_name
        from tracker.models.checkpoint import WeightsError, load_checkpoint

        try:
            ckpt = load_checkpoint(weights)
        except WeightsError as exc:
            raise CliError(str(exc), ExitCode.MODEL) from None
        config = {"net": asdict(ckpt.net), "dkm": asdict(ckpt.dkm) if ckpt.dkm else None}
        try:
            _, path, built = open_tensorrt(
                ckpt.model, ckpt.net.size, ckpt.net.in_channels, max_batch=batch,
                precision=precision, name=model_name(weights), config=config, directory=out,
                force=force, log=lambda m: typer.echo(m, err=True))
        except (EngineCacheError, EngineError) as exc:
            raise CliError(str(exc), ExitCode.MODEL) from None
        side = read_sidecar(path) or {}
        if as_json:
            typer.echo(json.dumps({"path": str(path), "built": built, **side}))
            return
        acc = side.get("accuracy", {})
        typer.echo(f"{'built' if built else 'up to date'}: {path}")
        typer.echo(f"accuracy vs fp32 ({acc.get('inputs')}): p99 {acc.get('point_err_px_p99')} px, "
                   f"max {acc.get('point_err_px_max')} px (heatmap pixels)")
