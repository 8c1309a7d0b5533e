"""The ``tracker`` command line.

``tracker run`` is defined here. Other commands (``train``, ``eval``, ``bench``, ...) are listed
in :data:`COMMANDS` as ``"module:function"`` and imported only when the CLI is built, so each
lives in its own module; keep heavy imports (torch) inside the command function.

Known errors print one ``error: ...`` line on stderr and exit with a code from
:class:`ExitCode`; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from tracker import __version__
from tracker.cli.errors import CliError, ExitCode, known_errors  # noqa: F401 (re-exported)
from tracker.cli.errors import error_line as _error_line
from tracker.config.schema import Config
from tracker.engines.names import ENGINE_HELP

if TYPE_CHECKING:
    from tracker.api import Tracker, TrackerOptions
from tracker.outputs.paths import check_writable  # noqa: F401 (used by the commands)

# name -> "module:function" of commands defined outside this file (imported lazily)
COMMANDS: dict[str, str] = {
    "train": "tracker.cli.model_commands:train_command",
    "eval": "tracker.cli.model_commands:eval_command",
    "bench": "tracker.cli.bench:bench_command",
    "build-engine": "tracker.cli.build_engine:build_engine_command",
    "devices": "tracker.cli.devices:devices_command",
    "batch": "tracker.cli.batch:batch_command",
}


def _load_command(name: str, target: str) -> Any:
    """The click command for ``module:function``, or None when that module has no command yet."""
    module_name, _, attr = target.partition(":")
    if importlib.util.find_spec(module_name) is None:
        return None
    fn = getattr(importlib.import_module(module_name), attr, None)
    if fn is None:
        return None
    if isinstance(fn, typer.Typer):
        return typer.main.get_command(fn)
    sub = typer.Typer()
    sub.command(name=name)(fn)
    return typer.main.get_command(sub)


class _Commands(TyperGroup):
    """Typer group that adds the commands of :data:`COMMANDS` when they exist."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(n for n in COMMANDS if self.get_command(ctx, n) is not None)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in COMMANDS:
            cmd = _load_command(cmd_name, COMMANDS[cmd_name])
            if cmd is not None:
                self.commands[cmd_name] = cmd
            return cmd
        return None


app = typer.Typer(
    name="tracker",
    cls=_Commands,
    help="Real-time face-landmark tracking (68 points) on videos, webcams and streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tracker {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Real-time face-landmark tracking (68 points) on videos, webcams and streams."""


_D = Config()  # the defaults quoted in the help texts
_SERVE = _D.stream.options()  # where the websocket serves by default

RUN_EPILOG = (
    "Examples:  tracker run clip.mp4 --out annotated.mp4 --jsonl landmarks.jsonl  |  "
    "tracker run photos/ --csv faces.csv  |  tracker run --source webcam --vmc 39539  |  "
    "tracker run --source webcam --show  |  "
    "tracker run --source lavfi:testsrc2=size=320x240:rate=30:duration=2 --jsonl -"
)


@app.command("run", epilog=RUN_EPILOG)
def run_command(
    ctx: typer.Context,
    source_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="SOURCE", show_default=False,
            help="Video file to process (or use --source); or still images: a photo, a folder "
            "or a quoted pattern such as \"*.png\" (one JSONL line / CSV rows per image)."
        ),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source", "-s", metavar="SPEC", show_default=False,
            help="Input: a video file, webcam, webcam:N, an rtsp/rtmp/http(s)/udp/tcp URL, "
            "or lavfi:GRAPH (an FFmpeg test source). Repeat it for several streams at once "
            "(outputs then need {stream} or {name} in their names, e.g. out_{stream}.mp4).",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", show_default=False,
                     help="Write the annotated video (with the input's audio) to this .mp4."),
    ] = None,
    jsonl: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="Write landmarks as one JSON line per frame to this file ('-' = stdout)."),
    ] = None,
    csv: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="Write one CSV row per face per frame (pose, expression, points; "
                     "README 'CSV format') to this file ('-' = stdout)."),
    ] = None,
    vmc: Annotated[
        str | None,
        typer.Option("--vmc", metavar="[HOST:]PORT", show_default=False,
                     help="Send head pose and blendshapes to an avatar app over the VMC protocol "
                     "(UDP; host 127.0.0.1 unless given; marionettes listen on 39539). Needs "
                     "pip install 'tracker[vmc]'."),
    ] = None,
    fov: Annotated[
        float | None,
        typer.Option("--fov", metavar="DEG", min=1.0, max=179.0, show_default=False,
                     help="The camera's field of view across the frame's longer side, for the "
                     "head pose (default: focal length = the longer side, 53 degrees; "
                     "[pose] fx/fy/cx/cy in a config give exact intrinsics)."),
    ] = None,
    draw_pose: Annotated[
        bool | None,
        typer.Option("--draw-pose/--no-draw-pose", show_default=False,
                     help="Draw each face's head-pose axes, id and angles in --out / --show."),
    ] = None,
    mirror: Annotated[
        bool | None,
        typer.Option("--mirror/--no-mirror", show_default=False,
                     help="Flip the view left-right (selfie): every output shows the mirrored "
                     "frame; left/right labels keep meaning the subject's (README)."),
    ] = None,
    show: Annotated[
        bool | None,
        typer.Option("--show/--no-show", show_default=False,
                     help="Show a live preview window (q or Esc stops)."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", show_default=False,
                     help="TOML config file, or a shipped preset: default, webcam, offline, fast. "
                     "Options given here override it."),
    ] = None,
    max_faces: Annotated[
        int | None,
        typer.Option(min=1, show_default=False,
                     help=f"Faces tracked at once (default {_D.track.max_faces})."),
    ] = None,
    rescan_every: Annotated[
        int | None,
        typer.Option(min=0, show_default=False,
                     help="Rerun the face detector every N frames; 0 = only when a face is "
                     f"missing (default {_D.track.rescan_every})."),
    ] = None,
    discard_after: Annotated[
        int | None,
        typer.Option(min=0, show_default=False,
                     help="A face lost at most N frames ago that comes back near where it was "
                     f"lost gets its old id; later, or elsewhere, a new one (default "
                     f"{_D.track.discard_after})."),
    ] = None,
    temporal: Annotated[
        bool | None,
        typer.Option("--temporal/--no-temporal", show_default=False,
                     help="Correct occluded or implausible points with the temporal denoising "
                     f"model (default {'on' if _D.track.temporal else 'off'})."),
    ] = None,
    smooth: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help=f"Landmark smoothing: one_euro or none (default {_D.smooth.filter})."),
    ] = None,
    min_cutoff: Annotated[
        float | None,
        typer.Option(min=0.001, show_default=False,
                     help="One Euro cutoff (Hz) of a still face (with rigid smoothing: of its "
                     "shape): lower = steadier, more lag "
                     f"(default {_D.smooth.min_cutoff:g})."),
    ] = None,
    beta: Annotated[
        float | None,
        typer.Option(min=0.0, show_default=False,
                     help="One Euro speed coefficient (per face size/s of a point's speed; "
                     "with rigid smoothing, its speed within the face): higher = less lag "
                     f"when moving (default {_D.smooth.beta:g})."),
    ] = None,
    d_cutoff: Annotated[
        float | None,
        typer.Option(min=0.001, show_default=False,
                     help="One Euro cutoff (Hz) of the speed estimates "
                     f"(default {_D.smooth.d_cutoff:g})."),
    ] = None,
    rigid_smoothing: Annotated[
        bool | None,
        typer.Option("--rigid-smoothing/--no-rigid-smoothing", show_default=False,
                     help="Smooth the face's motion apart from its shape, so a moving head "
                     "does not lag; --no-rigid-smoothing filters every coordinate alike, as "
                     f"before (default {'on' if _D.smooth.rigid else 'off'})."),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="Landmark engine: " + ENGINE_HELP),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="Landmark model weights; default: the weights shipped with tracker."),
    ] = None,
    max_frames: Annotated[
        int | None,
        typer.Option(min=0, show_default=False,
                     help="Stop after this many frames (0 = until the source ends)."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="x264 preset of --out: ultrafast (fastest, larger file) ... veryslow; "
                     f"default {_D.run.preset}."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(show_default=False,
                     help="Queue overflow policy: auto (files block, live drop_oldest), block "
                     "or drop_oldest."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.01, show_default=False,
                     help="Seconds to wait for a stream or camera to open or send data "
                     f"(default {_D.source.open_timeout_s:g})."),
    ] = None,
    reconnect: Annotated[
        bool | None,
        typer.Option("--reconnect/--no-reconnect", show_default=False,
                     help="When a live stream or camera stalls or disconnects: reopen it with "
                     "backoff, or end the run "
                     f"(default: {'reopen' if _D.source.reconnect else 'end'})."),
    ] = None,
    ws: Annotated[
        str | None,
        typer.Option("--ws", metavar="[HOST:]PORT", show_default=False,
                     help=f"Stream landmarks to websocket clients on PORT (host {_SERVE.host} "
                     f"unless given, e.g. 0.0.0.0:{_SERVE.port}); see docs/protocol.md."),
    ] = None,
    ws_token: Annotated[
        str | None,
        typer.Option("--ws-token", envvar="TRACKER_WS_TOKEN", show_default=False,
                     help="Websocket clients must give this token (?token= or Authorization: "
                     "Bearer)."),
    ] = None,
    ws_origin: Annotated[
        list[str] | None,
        typer.Option("--ws-origin", show_default=False,
                     help="Allow browser pages from this origin (repeatable; '*' = any, 'null' = "
                     "pages opened from disk). Default: pages served from loopback only."),
    ] = None,
    ws_preview: Annotated[
        bool | None,
        typer.Option("--ws-preview/--no-ws-preview", show_default=False,
                     help="Also send downscaled annotated JPEG frames to websocket clients."),
    ] = None,
    serve_demo: Annotated[
        bool | None,
        typer.Option("--serve-demo/--no-serve-demo", show_default=False,
                     help="Serve the browser demo at http://HOST:PORT/ (without --ws: "
                     f"{_SERVE.host}:{_SERVE.port})."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors.")
    ] = False,
) -> None:
    """Track face landmarks in a video, webcam or stream, or find them in still images (a
    photo, a folder or a "*.png" pattern); write an annotated video, JSONL, CSV or VMC."""
    with known_errors(debug):
        if source_arg is not None and source:
            raise CliError("give the source once: as SOURCE or as --source", ExitCode.USAGE)
        several = source if source and len(source) > 1 else None  # one stream per source
        overrides = {
            "run.source": source_arg if source_arg is not None else
            (source[0] if source and not several else None),
            "run.out": out,
            "run.jsonl": jsonl,
            "run.csv": csv,
            "run.vmc": vmc,
            "run.mirror": mirror,
            "pose.fov_deg": fov,
            "pose.draw": draw_pose,
            "run.show": show,
            "run.max_frames": max_frames,
            "run.preset": preset,
            "track.max_faces": max_faces,
            "track.rescan_every": rescan_every,
            "track.discard_after": discard_after,
            "track.temporal": temporal,
            "smooth.filter": smooth,
            "smooth.min_cutoff": min_cutoff,
            "smooth.beta": beta,
            "smooth.d_cutoff": d_cutoff,
            "smooth.rigid": rigid_smoothing,
            "model.engine": engine,
            "model.weights": weights,
            "pipeline.policy": policy,
            "source.open_timeout_s": timeout,
            "source.read_timeout_s": timeout,
            "source.reconnect": reconnect,
            "stream.ws": ws,
            "stream.token": ws_token,
            "stream.origins": ",".join(ws_origin) if ws_origin else None,
            "stream.preview": ws_preview,
            "stream.serve_demo": serve_demo,
        }
        from tracker.cli.run import run_tracker
        from tracker.runtime.signals import graceful_signals

        factory = (ctx.obj or {}).get("tracker_factory")
        with graceful_signals() as signals:  # Ctrl-C/SIGTERM: finalise outputs; a second exits
            try:
                code = run_tracker(config, overrides, signals, factory, several)
            except KeyboardInterrupt:  # before the pipeline ran (e.g. while models load)
                if debug:
                    raise
                term = signals.first == signal.SIGTERM
                _error_line("terminated" if term else "interrupted")
                code = ExitCode.TERMINATED if term else ExitCode.INTERRUPTED
    raise typer.Exit(int(code))


def _click_error(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) of a click usage error, else None (typer may vendor click)."""
    fmt: Callable[[], str] | None = getattr(exc, "format_message", None)
    code = getattr(exc, "exit_code", None)
    if fmt is None or not isinstance(code, int):
        return None
    message = fmt()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message = f"{message} (see '{ctx.command_path} --help')"
    return message, code


def main(argv: Sequence[str] | None = None, *,
         tracker_factory: Callable[[TrackerOptions], Tracker] | None = None) -> int:
    """Console entry point; returns the exit code.

    ``tracker_factory`` builds the :class:`~tracker.api.Tracker` of ``tracker run`` from its
    options (default ``Tracker(options)``): the seam that lets tests and embedders run the
    real CLI with other models, e.g. ``lambda o: Tracker(o, detector=d, landmarker=m)``.
    """
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = command.main(args=args, prog_name="tracker", standalone_mode=False,
                          obj={"tracker_factory": tracker_factory})
    except (KeyboardInterrupt, typer.Abort):
        _error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        found = _click_error(exc)
        if found is None:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())  # type: ignore[attr-defined]
            return 0
        _error_line(found[0])
        return found[1]
    return rv if isinstance(rv, int) else 0

