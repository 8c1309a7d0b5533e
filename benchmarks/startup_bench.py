"""Start-up of ``tracker run CLIP --max-frames 1 --jsonl OUT`` with warm caches: wall time of
the whole command, whether torch was imported, and the slowest imports (``python -X importtime``).

The first run fills the caches (ONNX export, engine tuning, OpenVINO's compiled graphs) and is
reported separately; then ``--runs`` warm runs. The CPU is named with the figures.

Run: python benchmarks/startup_bench.py [--clip CLIP] [--runs 5] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
PROBE = """
import runpy, sys
sys.argv = ["tracker", *sys.argv[1:]]
try:
    runpy.run_module("tracker", run_name="__main__")
except SystemExit:
    pass
print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""


def command(clip: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tracker", "run", str(clip), "--max-frames", "1", "--jsonl",
            str(out)]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def slowest_imports(cmd: list[str], env: dict[str, str], top: int = 12) -> list[tuple[float, str]]:
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True,
                          text=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) <= 3:  # top-level and their direct imports
            rows.append((int(m.group(1)) / 1e3, m.group(3)))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=None, help="TRACKER_CACHE (default: a new one)")
    args = ap.parse_args()
    from tracker.engines.tuning import cpu_signature

    sig = cpu_signature()
    print(f"cpu    {sig['cpu']} ({sig['cpus']} CPUs), load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        env = {**os.environ, "TRACKER_CACHE": str(cache)}
        cmd = command(args.clip, Path(tmp) / "x.jsonl")
        print(f"first run (fills {cache}): {wall(cmd, env):.2f} s")
        wall(cmd, env)  # OpenVINO writes its compiled graph on the first warm start
        runs = [wall(cmd, env) for _ in range(args.runs)]
        print(f"warm runs: {', '.join(f'{r:.2f}' for r in runs)} s; median {np.median(runs):.2f} s")
        probe = subprocess.run([sys.executable, "-c", PROBE, *cmd[3:]], env=env,
                               capture_output=True, text=True)
        print(f"torch imported on the warm path: {probe.stdout.split()[-1] == 'TORCH'}")
        print("slowest imports (cumulative ms):")
        for ms, name in slowest_imports(cmd, env):
            print(f"  {ms:7.1f}  {name}")


if __name__ == "__main__":
    main()
