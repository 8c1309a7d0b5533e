"""tracker against MediaPipe's face mesh on the same clip and machine, in one run.

Two measurements, each repeated ``--repeats`` times with the two sides taking turns:

1. **Per-frame tracking cost.** MediaPipe: ``mp.solutions.face_mesh.FaceMesh`` in tracking
   mode (``static_image_mode=False``, one face, no iris refinement), wall ms of ``process`` on
   every frame where it returns a face (MediaPipe says nothing about when it re-detects).
   tracker: ``Tracker.process`` with the detector gated off (one face, no periodic rescan),
   the track stage plus smoothing, on frames where the detector did not run and one face came
   out (as ``tracker bench``). Both on frames decoded beforehand.
2. **The whole annotate job** on the clip looped ``--loops`` times (video stream copied, no
   audio): decode, landmarks, draw, encode with libx264 at the same preset and CRF, wall time
   of the whole command from process start (imports and model loading included).
   tracker: ``tracker run LOOPED --out OUT --preset P``. MediaPipe: a script in its own venv
   doing the same with PyAV and MediaPipe's drawing utilities (the face-mesh contours), twice:
   as one loop (how MediaPipe's examples do it) and with decoding and encoding on their own
   threads (as tracker's pipeline runs them).

MediaPipe 0.10.21 lives in its own venv (never a dependency of the package)::

    python benchmarks/vs_mediapipe.py --setup          # python3 -m venv /tmp/mp-venv; pip install
    python benchmarks/vs_mediapipe.py [--clip CLIP] [--loops 10] [--repeats 3]

Prints each side's figures, the ratios (tracker / MediaPipe) against the targets (tracking
<= 0.5x, annotate job <= 0.6x) and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tracker.outputs.encode import DEFAULT_CRF

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
MP_VENV = Path(os.environ.get("MP_VENV", "/tmp/mp-venv"))
MP_VERSION = "0.10.21"
TARGET_TRACK, TARGET_JOB = 0.5, 0.6

MP_WORKER = r'''
import json, queue, sys, threading, time
t_start = time.perf_counter()
import av, cv2, numpy as np
import mediapipe as mp

mode, src = sys.argv[1], sys.argv[2]
mesh = mp.solutions.face_mesh
fm = mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)

if mode == "track":
    with av.open(src) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for img in frames[:5]:
        fm.process(img)
    fm.close()
    fm = mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)
    ms, faces = [], []
    for img in frames:
        t0 = time.perf_counter()
        r = fm.process(img)
        ms.append((time.perf_counter() - t0) * 1e3)
        faces.append(r.multi_face_landmarks is not None)
    print(json.dumps({"ms": ms, "faces": faces}))
    sys.exit(0)

out_path, preset, crf, threaded = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1"
draw = mp.solutions.drawing_utils
style = draw.DrawingSpec(color=(0, 255, 0), thickness=1, circle_radius=1)
decoded, drawn = queue.Queue(maxsize=8), queue.Queue(maxsize=32)
inp = av.open(src)
vin = inp.streams.video[0]
out = av.open(out_path, "w")
vout = out.add_stream("libx264", rate=vin.average_rate)
vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
vout.codec_context.thread_count = 0
vout.options = {"preset": preset, "crf": crf}

def decode():
    for f in inp.decode(vin):
        decoded.put(f.to_ndarray(format="rgb24"))
    decoded.put(None)

def encode():
    while (img := drawn.get()) is not None:
        for p in vout.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in vout.encode():
        out.mux(p)

def annotate(img):
    r = fm.process(img)
    for lm in r.multi_face_landmarks or []:
        draw.draw_landmarks(img, lm, mesh.FACEMESH_CONTOURS, landmark_drawing_spec=None,
                            connection_drawing_spec=style)
    return img

t_frames, n = time.perf_counter(), 0
if threaded:  # decode and encode on their own threads, as tracker's pipeline
    threads = [threading.Thread(target=decode), threading.Thread(target=encode)]
    for t in threads:
        t.start()
    while (img := decoded.get()) is not None:
        drawn.put(annotate(img))
        n += 1
    drawn.put(None)
    for t in threads:
        t.join()
else:  # one loop, as MediaPipe's examples
    for f in inp.decode(vin):
        img = annotate(f.to_ndarray(format="rgb24"))
        for p in vout.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
        n += 1
    for p in vout.encode():
        out.mux(p)
out.close()
inp.close()
now = time.perf_counter()
print(json.dumps({"frames": n, "processing_s": now - t_frames, "in_process_s": now - t_start}))
'''


def cpu_name() -> str:
    from tracker.engines.tuning import cpu_signature

    sig = cpu_signature()
    amx = ", ".join(f for f in sig["flags"] if f.startswith("amx")) or "no AMX"
    return f"{sig['cpu']}, {sig['cpus']} CPUs ({amx})"


def setup(venv: Path) -> None:
    """Create the MediaPipe venv (python3 -m venv; pip install mediapipe==0.10.21 av)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"mediapipe=={MP_VERSION}", "av"],
                   check=True)


def mp_python(venv: Path) -> Path | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    ok = subprocess.run([str(py), "-c", "import mediapipe, av; print(mediapipe.__version__)"],
                        capture_output=True, text=True)
    return py if ok.returncode == 0 else None


def looped(src: Path, dst: Path, loops: int) -> int:
    """``src``'s video stream copied ``loops`` times into ``dst`` (timestamps shifted; no
    re-encoding, no audio); returns the number of frames."""
    import av

    with av.open(str(src)) as probe:
        packets = [p for p in probe.demux(probe.streams.video[0]) if p.dts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
    with av.open(str(dst), "w") as out, av.open(str(src)) as first:
        ovs = out.add_stream_from_template(first.streams.video[0])
        for k in range(loops):
            with av.open(str(src)) as inp:
                for p in inp.demux(inp.streams.video[0]):
                    if p.dts is None:
                        continue
                    p.pts += k * span
                    p.dts += k * span
                    p.stream = ovs
                    out.mux(p)
    with av.open(str(dst)) as check:
        frames = sum(1 for _ in check.decode(video=0))
    return frames


def frames_of(clip: Path) -> list[np.ndarray]:
    import av

    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def ours_tracking(frames: list[np.ndarray], fps: float) -> dict[str, float]:
    """tracker's per-frame track + smooth ms (detector gated off), as ``tracker bench``."""
    from tracker import Tracker

    with Tracker.from_config(None, max_faces=1, **{"track.rescan_every": 0}) as t:
        for i, img in enumerate(frames[:5]):  # warm: models loaded, kernels run
            t.process(img, i / fps)
        t.reset()
        ms = []
        for i, img in enumerate(frames):
            runs = t.stats.detector_runs if t.stats else 0
            t0 = time.perf_counter()
            out = t.process(img, i / fps)
            dt = (time.perf_counter() - t0) * 1e3
            if t.stats.detector_runs == runs and len(out.faces) == 1:
                ms.append(dt)
    return {"p50": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "frames": len(ms)}


def mp_tracking(py: Path, clip: Path) -> dict[str, float]:
    proc = subprocess.run([str(py), "-c", MP_WORKER, "track", str(clip)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"MediaPipe worker failed: {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    ms = [m for m, f in zip(r["ms"], r["faces"], strict=True) if f]
    return {"p50": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "frames": len(ms)}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {proc.stderr[-2000:]}")
    return wall, proc.stdout


def ours_job(video: Path, out: Path, preset: str, crf: int) -> float:
    tracker = Path(sys.executable).with_name("tracker")
    cmd = [str(tracker) if tracker.exists() else sys.executable, *([] if tracker.exists() else
           ["-m", "tracker"]), "run", str(video), "--out", str(out), "--preset", preset]
    if crf != DEFAULT_CRF:
        cfg = out.with_suffix(".toml")
        cfg.write_text(f"[run]\ncrf = {crf}\n")
        cmd += ["--config", str(cfg)]
    return timed(cmd)[0]


def mp_job(py: Path, video: Path, out: Path, preset: str, crf: int, threaded: bool) -> float:
    return timed([str(py), "-c", MP_WORKER, "annotate", str(video), str(out), preset, str(crf),
                  "1" if threaded else "0"])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--loops", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="superfast")
    ap.add_argument("--crf", type=int, default=DEFAULT_CRF)
    ap.add_argument("--venv", type=Path, default=MP_VENV, help="MediaPipe's venv")
    ap.add_argument("--setup", action="store_true", help="create the MediaPipe venv first")
    ap.add_argument("--skip-job", action="store_true", help="only the per-frame tracking cost")
    args = ap.parse_args()
    if args.setup:
        setup(args.venv)
    print(f"cpu      {cpu_name()}")
    print(f"clip     {args.clip}")
    py = mp_python(args.venv)
    if py is None:
        print(f"MediaPipe {MP_VERSION} is not installed in {args.venv}: run with --setup "
              "(needs the package index), or set MP_VENV; nothing compared")
        return
    frames = frames_of(args.clip)
    fps = 30000 / 1001
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        loop = tmpdir / "looped.mp4"
        n_loop = looped(args.clip, loop, args.loops) if not args.skip_job else 0
        if n_loop:
            print(f"looped   {args.loops}x: {n_loop} frames")
        ours_t, mp_t, ours_j, mp_j, mp_jt = [], [], [], [], []
        for rep in range(args.repeats):  # the two sides take turns
            mp_t.append(mp_tracking(py, args.clip))
            ours_t.append(ours_tracking(frames, fps))
            if n_loop:
                mp_j.append(mp_job(py, loop, tmpdir / "mp.mp4", args.preset, args.crf, False))
                ours_j.append(ours_job(loop, tmpdir / "ours.mp4", args.preset, args.crf))
                mp_jt.append(mp_job(py, loop, tmpdir / "mp.mp4", args.preset, args.crf, True))
            print(f"round {rep + 1}: tracking ms/frame p50 MediaPipe {mp_t[-1]['p50']:.3f} "
                  f"tracker {ours_t[-1]['p50']:.3f}"
                  + (f"; annotate job s MediaPipe {mp_j[-1]:.2f} (threaded {mp_jt[-1]:.2f}) "
                     f"tracker {ours_j[-1]:.2f}" if n_loop else ""), flush=True)
    mt = float(np.median([r["p50"] for r in mp_t]))
    ot = float(np.median([r["p50"] for r in ours_t]))
    print(f"tracking ms/frame p50 (median of {args.repeats}): MediaPipe {mt:.3f} "
          f"({mp_t[0]['frames']} frames with a face), tracker {ot:.3f} "
          f"({ours_t[0]['frames']} frames tracked without the detector)")
    print(f"  ratio tracker / MediaPipe {ot / mt:.2f} (target <= {TARGET_TRACK}: "
          f"{'met' if ot / mt <= TARGET_TRACK else 'not met'})")
    if n_loop:
        mj, mjt, oj = (float(np.median(v)) for v in (mp_j, mp_jt, ours_j))
        print(f"annotate job, {n_loop} frames, x264 {args.preset} crf {args.crf}, wall s of the "
              f"whole command (median of {args.repeats}): tracker {oj:.2f} ({n_loop / oj:.0f} "
              f"fps); MediaPipe one loop {mj:.2f} ({n_loop / mj:.0f} fps), MediaPipe with "
              f"decode/encode threads {mjt:.2f} ({n_loop / mjt:.0f} fps)")
        for name, m in (("one loop", mj), ("threaded", mjt)):
            print(f"  ratio tracker / MediaPipe ({name}) {oj / m:.2f} (target <= {TARGET_JOB}: "
                  f"{'met' if oj / m <= TARGET_JOB else 'not met'})")


if __name__ == "__main__":
    main()
