"""``tracker bench``: throughput and latency of the real pipeline on a source.

Three measurements, in this order:

1. the pipeline ``tracker run`` builds (decode -> track -> smooth [-> render -> video with
   ``--out``]) over up to ``--frames`` frames: fps, per-stage p50/p99, queue depths, drops and
   detector calls;
2. per-frame tracking cost with the detector gated off: a second pass over the same frames,
   one face, detector only when the face is lost; each timed frame is track (crop + model +
   decode + ROI loop-back) plus smoothing, counted only when it ran without the detector and
   produced one face;
3. where the microseconds of one tracked frame go (:mod:`tracker.tracking.profile`: cut check,
   gating, crop warp, preprocessing, engine, decode, points to the frame, temporal model,
   smoothing, the rest), a third pass over the frames with each step timed;
4. model + heatmap decode per face at several batch sizes (the engine alone, on a real crop;
   a tuned engine runs each batch as its plan says).

With ``--engine auto`` on a CPU the report also gives the measured engine choice and every
candidate's timing and accuracy (:mod:`tracker.engines.tuning`); ``--retune`` measures again.
Heavy imports (models, engines) happen inside the functions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from tracker.cli.app import CliError, ExitCode, known_errors
from tracker.engines.names import ENGINE_HELP

DEFAULT_BATCHES = (1, 4, 8, 32)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50/p99/mean of a list of milliseconds."""

    p50: float
    p99: float
    mean: float
    count: int

    @staticmethod
    def of(ms: list[float]) -> Percentiles:
        import numpy as np

        if not ms:
            return Percentiles(0.0, 0.0, 0.0, 0)
        a = np.asarray(ms, dtype=np.float64)
        p50, p99 = np.percentile(a, [50, 99])
        return Percentiles(float(p50), float(p99), float(a.mean()), int(a.size))


def model_ms_per_face(landmarker: Any, image: Any, box: Any, batches: tuple[int, ...],
                      repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per face of ``engine.predict`` (model + decode) on copies of one real crop.

    Returns wall-clock and calling-thread CPU medians: on a busy machine the wall clock of a
    long call includes time-slices lost to other processes; the CPU time does not (for CPU
    engines that compute on the calling thread).
    """
    import numpy as np

    lm = landmarker
    crops = np.repeat(_crop(lm, image, box)[None], max(batches), axis=0)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for b in batches:
        x = np.ascontiguousarray(lm.preprocess(crops[:b]))
        for _ in range(3):
            lm.engine.predict(x)
        walls, cpus = [], []
        for _ in range(max(1, repeats)):
            t0, c0 = time.perf_counter(), time.thread_time()
            lm.engine.predict(x)
            cpus.append(time.thread_time() - c0)
            walls.append(time.perf_counter() - t0)
        wall[str(b)] = round(float(np.median(walls)) * 1e3 / b, 4)
        cpu[str(b)] = round(float(np.median(cpus)) * 1e3 / b, 4)
    return wall, cpu


def _crop(lm: Any, image: Any, box: Any) -> Any:
    import cv2

    from tracker.geometry import box_affine

    m = box_affine(box, lm.size)
    return cv2.warpAffine(image, m, (lm.size, lm.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def tracking_cost(tracker: Any) -> tuple[Percentiles, Percentiles, Any, Any]:
    """Per-frame track + smooth ms over the tracker's source, one face, detector gated off.

    Returns wall-clock and thread-CPU percentiles, a frame image with a face and that face's
    box (for the model benchmark; the frame centre when no face was found).
    """
    from tracker.api import assembly
    from tracker.types import Box

    cfg = tracker.config
    source = assembly.open_video(cfg)
    times: list[float] = []
    cpu: list[float] = []
    image = box = last = None
    try:
        for frame in source.items():
            runs = tracker.stats.detector_runs if tracker.stats else 0
            t0, c0 = time.perf_counter(), time.thread_time()
            tracked = tracker.process(frame.image, frame.time)
            dc, dt = time.thread_time() - c0, time.perf_counter() - t0
            if tracker.stats.detector_runs == runs and len(tracked.faces) == 1:
                times.append(dt * 1e3)
                cpu.append(dc * 1e3)
            if box is None and tracked.faces:
                image, box = frame.image, tracked.faces[0].box
            last = frame.image
    finally:
        source.close()
    if last is None:
        raise CliError(f"no frames decoded from {cfg.run.source}", ExitCode.SOURCE)
    if box is None:
        h, w = last.shape[:2]
        image, box = last, Box(0.35 * w, 0.3 * h, 0.65 * w, 0.7 * h)
    return Percentiles.of(times), Percentiles.of(cpu), image, box


def tracking_profile(cfg: Any, landmarker: Any) -> dict[str, Any]:
    """Median microseconds per step of one tracked frame (one face, detector gated off, with
    smoothing as configured): see :mod:`tracker.tracking.profile`."""
    from tracker.api import assembly
    from tracker.tracking.profile import profile_frames

    stage = assembly.track_stage(cfg, assembly.load_detector(cfg), landmarker,
                                 assembly.load_denoiser(cfg))
    source = assembly.open_video(cfg)
    try:
        profile = profile_frames(stage, source.items(), assembly.smooth_stage(cfg))
    finally:
        source.close()
    return profile.to_json()


def engine_choice(landmarker: Any) -> dict[str, Any] | None:
    """The measured engine choice of a tuned engine: the choice, its batch plan, whether the
    cached record was reused, and every candidate's ms per call and accuracy."""
    record = getattr(landmarker.engine, "record", None)
    if not record:
        return None
    return {
        "choice": record["choice"]["label"],
        "options": record["choice"]["options"],
        "reused": record.get("reused"),
        "cache": record.get("path"),
        "tuned_at": record.get("tuned_at"),
        "tuning_seconds": record.get("tuning_seconds"),
        "cpu": (record.get("key") or {}).get("cpu"),
        "check_inputs": record.get("check_inputs"),
        "reference": record.get("reference"),
        "plan": record["plan"],
        "candidates": [
            {"label": c["label"], "round": c.get("round"), "passed": c.get("passed"),
             "error": c.get("error"), "ms_per_call": (c.get("ms_per_call") or {}).get("1"),
             "p99_px": ((c.get("accuracy") or {}).get("1") or {}).get("p99"),
             **({"batch_ms_per_call": c["batch_ms_per_call"]} if "batch_ms_per_call" in c
                else {})}
            for c in record.get("candidates", [])
        ],
    }


def run_bench(cfg: Any, batches: tuple[int, ...], repeats: int,
              retune: bool = False) -> dict[str, Any]:
    """Everything ``tracker bench`` measures, as one JSON-ready dict."""
    from tracker.api import Tracker, TrackerOptions, assembly

    probe = assembly.open_video(cfg)
    probe.close()
    if probe.info.is_live and not cfg.run.max_frames:
        raise CliError("a live source needs --frames N (> 0) to bench", ExitCode.USAGE)
    models: dict[str, Any] = {}
    if retune:  # measured again before the run, then used (and cached) as usual
        from tracker.landmarker import load_landmarker

        models = {"landmarker": load_landmarker(cfg.model.weights, cfg.model.engine,
                                                max_faces=cfg.track.max_faces, retune=True),
                  "denoiser": assembly.load_denoiser(cfg)}
    with Tracker(TrackerOptions(cfg), **models) as tracker:
        report = tracker.run(outputs=[cfg.run.out] if cfg.run.out else [])
        landmarker = tracker.landmarker
        gated_cfg = cfg.with_overrides({"track.max_faces": 1, "track.rescan_every": 0})
        with Tracker(TrackerOptions(gated_cfg)) as gated:
            per_frame, per_frame_cpu, image, box = tracking_cost(gated)
        breakdown = tracking_profile(gated_cfg, landmarker)
        wall, cpu = model_ms_per_face(landmarker, image, box, batches, repeats)
    m, stats, info = report.metrics, report.stats, report.info
    tracked = stats.frames
    return {
        "source": cfg.run.source,
        "size": [info.width, info.height],
        "engine": landmarker.engine.name,
        "precision": getattr(landmarker.engine, "precision", None),
        "frames": tracked,
        "seconds": round(m.seconds, 4),
        "fps": round(tracked / m.seconds, 2) if m.seconds else 0.0,
        "dropped": sum(c.dropped for c in m.channels),
        "detector_calls": stats.detector_runs,
        "stages": {s.name: {"count": s.count, "p50_ms": round(s.p50_ms, 4),
                            "p99_ms": round(s.p99_ms, 4), "mean_ms": round(s.mean_ms, 4)}
                   for s in m.stages},
        "queues": {c.name: {"capacity": c.capacity, "max_depth": c.max_depth,
                            "dropped": c.dropped, "policy": c.policy} for c in m.channels},
        "model_ms_per_face": wall,
        "model_cpu_ms_per_face": cpu,
        "tracking_ms_per_frame": {"p50": round(per_frame.p50, 4), "p99": round(per_frame.p99, 4),
                                  "mean": round(per_frame.mean, 4), "frames": per_frame.count,
                                  "cpu_p50": round(per_frame_cpu.p50, 4),
                                  "cpu_p99": round(per_frame_cpu.p99, 4),
                                  "smoothing": cfg.smooth.filter != "none"},
        "tracking_breakdown": breakdown,
        "engine_choice": engine_choice(landmarker),
        "cpu": _cpu_name(),
    }


def _cpu_name() -> str:
    from tracker.engines.tuning import cpu_signature

    sig = cpu_signature()
    return f"{sig['cpu']} ({sig['cpus']} CPUs)"


def format_report(r: dict[str, Any]) -> str:
    """The human-readable report of :func:`run_bench`."""
    w, h = r["size"]
    lines = [
        f"source   {r['source']} ({w}x{h}), engine {r['engine']}"
        + (f" ({r['precision']})" if r.get("precision") else ""),
        f"speed    {r['fps']:.1f} fps: {r['frames']} frames in {r['seconds']:.2f} s, "
        f"{r['dropped']} dropped, detector ran {r['detector_calls']} times",
        "stage    p50 ms   p99 ms   items",
    ]
    for name, s in r["stages"].items():
        lines.append(f"  {name:8s} {s['p50_ms']:7.3f} {s['p99_ms']:8.3f}   {s['count']}")
    lines.append("queue    max depth   dropped")
    for name, q in r["queues"].items():
        lines.append(f"  {name:8s} {q['max_depth']:3d}/{q['capacity']:<3d}   {q['dropped']:7d}")
    t = r["tracking_ms_per_frame"]
    smooth = "with smoothing" if t["smoothing"] else "no smoothing"
    lines.append(f"tracking one face, detector gated off ({smooth}, {t['frames']} frames): "
                 f"p50 {t['p50']:.3f} ms, p99 {t['p99']:.3f} ms "
                 f"(thread CPU p50 {t['cpu_p50']:.3f} ms)")
    b = r.get("tracking_breakdown") or {}
    if b.get("frames"):
        steps = ", ".join(f"{k} {v:.0f}" for k, v in b["steps_us_p50"].items())
        lines.append(f"  where it goes, us p50 ({b['frames']} frames, total {b['total_us_p50']:.0f}): "
                     f"{steps}")
    per_face = ", ".join(f"b{b}: {ms:.3f}" for b, ms in r["model_ms_per_face"].items())
    per_face_cpu = ", ".join(f"b{b}: {ms:.3f}" for b, ms in r["model_cpu_ms_per_face"].items())
    lines.append(f"model + decode ms/face  {per_face}")
    lines.append(f"  thread CPU ms/face    {per_face_cpu}")
    choice = r.get("engine_choice")
    if choice:
        how = "cached" if choice["reused"] else f"measured now in {choice['tuning_seconds']} s"
        lines.append(f"engine choice  {choice['choice']} ({how}; {choice['cache']})")
        chunks = ", ".join(f"{n}: {'+'.join(map(str, c))}" for n, c in choice["plan"]["chunks"].items())
        lines.append(f"  batch plan   {chunks}")
        for c in choice["candidates"]:
            if c["error"]:
                lines.append(f"  round {c['round']}  {c['label']:34s} failed: {c['error']}")
                continue
            ms = "not timed" if c["ms_per_call"] is None else f"{c['ms_per_call']:.3f} ms"
            verdict = "passed" if c["passed"] else "rejected"
            lines.append(f"  round {c['round']}  {c['label']:34s} {ms:>10s}  p99 "
                         f"{c['p99_px']:.3f} px  {verdict}")
    lines.append(f"cpu      {r['cpu']}")
    return "\n".join(lines)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise CliError(f"--batches must be positive integers like 1,4,8,32, got {text!r}",
                       ExitCode.USAGE)
    return values


def bench_command(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Video file, webcam, URL or "
                                          "lavfi:GRAPH (as for `tracker run`).")],
    frames: Annotated[int, typer.Option(min=0, help="Frames to process (0 = all).")] = 300,
    engine: Annotated[str | None, typer.Option(
        show_default=False, help=ENGINE_HELP)] = None,
    weights: Annotated[str | None, typer.Option(
        show_default=False, help="Landmark weights (default: the shipped model).")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", show_default=False,
                                               help="TOML config, or a shipped preset: default, webcam, "
                                               "offline, fast.")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", "-o", show_default=False,
        help="Also render and encode to this .mp4 (as `tracker run --out`).")] = None,
    preset: Annotated[str | None, typer.Option(
        show_default=False, help="x264 preset of --out (as `tracker run --preset`).")] = None,
    batches: Annotated[str, typer.Option(help="Batch sizes for model ms/face.")] = "1,4,8,32",
    repeats: Annotated[int, typer.Option(min=1, help="Timed calls per batch size.")] = 50,
    retune: Annotated[bool, typer.Option(
        "--retune", help="Measure the CPU engines again (--engine auto) instead of reusing the "
        "cached choice.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Benchmark the pipeline: fps, per-stage p50/p99, queues, drops, model ms/face, where a
    tracked frame's time goes, and the measured engine choice."""
    with known_errors(debug):
        from tracker.config.schema import load_config

        sizes = _batches(batches)
        cfg = load_config(config).with_overrides({
            "run.source": source, "run.max_frames": frames, "run.out": out, "run.preset": preset,
            "model.engine": engine, "model.weights": weights,
        })
        report = run_bench(cfg, sizes, repeats, retune)
        typer.echo(json.dumps(report) if as_json else format_report(report))
