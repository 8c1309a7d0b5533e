"""Where the CPU of ``tracker run CLIP --out OUT.mp4 --jsonl OUT.jsonl`` goes, stage by stage.

Each pipeline stage runs on its own Python thread; its CPU time (``time.thread_time`` when the
thread ends) is printed in ms a frame, with the rest of the process's CPU ("native": FFmpeg's
decoder threads, x264's threads, the engine's threads), its system time and its context
switches a frame. CPU a frame, not fps, is what to compare on a machine that other work shares.

Run: python benchmarks/stage_cpu.py [CLIP] [--runs 3]
(a before/after comparison: run it in turns with PYTHONPATH pointing at the other tree)
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from tracker import Tracker
from tracker.runtime import pipeline

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/videos/short_hamilton_clip.mp4"
_cpu: dict[str, float] = {}
_run_node = pipeline.Pipeline._run_node


def _timed_node(self: pipeline.Pipeline, node: pipeline._Node) -> None:
    try:
        _run_node(self, node)
    finally:
        _cpu[node.stage.name] = time.thread_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip", nargs="?", type=Path, default=CLIP)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    pipeline.Pipeline._run_node = _timed_node  # type: ignore[method-assign]
    with Tracker.from_config(None) as tracker, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            _cpu.clear()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            c0, w0 = time.process_time(), time.perf_counter()
            report = tracker.run(str(args.clip), [f"{tmp}/out.mp4", f"{tmp}/out.jsonl"])
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            ru = resource.getrusage(resource.RUSAGE_SELF)
            n = max(1, report.metrics.frames)
            stages = " ".join(f"{k} {v * 1e3 / n:.2f}" for k, v in _cpu.items())
            print(f"{n / wall:.1f} fps; CPU ms/frame {cpu * 1e3 / n:.2f}: {stages} native "
                  f"{(cpu - sum(_cpu.values())) * 1e3 / n:.2f}; sys "
                  f"{(ru.ru_stime - ru0.ru_stime) * 1e3 / n:.2f}; context switches/frame "
                  f"{(ru.ru_nvcsw - ru0.ru_nvcsw) / n:.1f} voluntary, "
                  f"{(ru.ru_nivcsw - ru0.ru_nivcsw) / n:.1f} forced", flush=True)


if __name__ == "__main__":
    main()
