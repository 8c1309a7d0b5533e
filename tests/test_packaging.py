"""A wheel install must work: build the wheel, install it into a clean venv, run from there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
LAVFI = "lavfi:testsrc2=size=320x240:rate=30"
# every runtime data file, relative to tracker/ (code: every *.py of every subpackage)
DATA_GLOBS = ("py.typed", "weights/*", "detectors/*", "config/presets/*.toml", "serve/demo/*")
CMD_TIMEOUT = 120.0


@dataclass(frozen=True)
class CleanVenv:
    python: Path
    tracker: Path
    site: Path
    cwd: Path
    env: dict[str, str]

    def run(self, args: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=CMD_TIMEOUT)


def clean_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TRACKER_CACHE"] = str(cache)  # engines exported from the installed weights, not reused
    env["PYTHONNOUSERSITE"] = "1"
    return env


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def source_files() -> set[str]:
    """What the wheel must hold: tracker's modules and data, as wheel names."""
    pkg = ROOT / "tracker"
    files = {p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    for pattern in DATA_GLOBS:
        files |= {p for p in pkg.glob(pattern) if p.is_file()}
    return {p.relative_to(ROOT).as_posix() for p in files}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the source (no stale build/, nothing written to the repo)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "tracker", src / "tracker",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = base / "dist"
    env = clean_env(base / "cache")
    check(subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                          str(dist), str(src)], cwd=base, env=env, capture_output=True, text=True,
                         timeout=CMD_TIMEOUT))
    wheels = sorted(dist.glob("tracker-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    """A fresh venv with only the wheel installed; dependencies seen through a .pth file."""
    base = tmp_path_factory.mktemp("venv")
    home = base / "venv"
    cwd = base / "work"
    cwd.mkdir()
    env = clean_env(base / "cache")
    check(subprocess.run([sys.executable, "-m", "venv", str(home)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=CMD_TIMEOUT))
    python = home / "bin" / "python"
    site = Path(check(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=cwd, env=env, capture_output=True, text=True)).stdout.strip())
    # the main venv's packages (torch, numpy, ...) without its own .pth files (the editable finder)
    (site / "_tracker_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    v = CleanVenv(python=python, tracker=home / "bin" / "tracker", site=site, cwd=cwd, env=env)
    check(v.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                 "-q", wheel]))
    return v


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the wheel ---------------------------------------------------------------------------------


def test_wheel_has_every_runtime_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    expected = source_files()
    for must in ("tracker/py.typed", "tracker/config/presets/offline.toml",
                 "tracker/config/presets/webcam.toml", "tracker/serve/demo/index.html",
                 "tracker/serve/demo/app.js", "tracker/serve/demo/style.css",
                 "tracker/weights/rcn_lite.pt", "tracker/weights/temporal_dkm.npz",
                 "tracker/detectors/blazeface_short.onnx"):
        assert must in expected, must
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as z:
        assert "tracker = tracker.cli:main" in z.read(entry_points).decode()


# --- the installed package ---------------------------------------------------------------------


def test_imports_from_the_clean_venv(venv: CleanVenv) -> None:
    out = check(venv.run([venv.python, "-c", "import tracker; print(tracker.__file__)"])).stdout
    where = Path(out.strip()).resolve()
    assert where.is_relative_to(venv.site.resolve()), where
    assert not where.is_relative_to(ROOT), where


def test_py_typed_is_installed(venv: CleanVenv) -> None:
    code = ("import importlib.resources as r, tracker; "
            "p = r.files('tracker') / 'py.typed'; assert p.is_file(), p; print(p)")
    out = check(venv.run([venv.python, "-c", code])).stdout.strip()
    assert Path(out).resolve().is_relative_to(venv.site.resolve()), out


@pytest.mark.skipif(not CLIP.is_file(), reason=f"test clip missing: {CLIP}")
def test_run_clip_with_named_preset(venv: CleanVenv) -> None:
    out = venv.cwd / "offline.jsonl"
    check(venv.run([venv.tracker, "run", CLIP, "--config", "offline", "--max-frames", "5",
                    "--jsonl", out]))
    lines = read_jsonl(out)
    assert len(lines) == 5
    assert all("frame" in line and "faces" in line for line in lines), lines[0]
    assert [line["frame"] for line in lines] == list(range(5))


def test_run_lavfi_with_webcam_preset(venv: CleanVenv) -> None:
    out = venv.cwd / "webcam.jsonl"
    # the preset turns the preview window on; --no-show overrides it (headless OpenCV)
    proc = check(venv.run([venv.tracker, "run", "--source", LAVFI, "--config", "webcam", "--no-show",
                           "--max-frames", "3", "--jsonl", out]))
    assert "drop_oldest" in proc.stdout + proc.stderr  # the preset's queue policy was applied
    lines = read_jsonl(out)
    assert 1 <= len(lines) <= 3  # a live source under drop_oldest may lose a frame on a busy machine
    assert all("frame" in line and "faces" in line for line in lines), lines[0]


def test_serve_demo_from_the_wheel(venv: CleanVenv) -> None:
    port = free_port()
    log = venv.cwd / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([str(venv.tracker), "run", "--source", LAVFI, "--serve-demo",
                                 "--ws", f"127.0.0.1:{port}"], cwd=venv.cwd, env=venv.env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        page: tuple[int, str] | None = None
        while page is None:
            if proc.poll() is not None:
                pytest.fail(f"tracker exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"demo page not served within 60 s:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    page = (resp.status, resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:  # answering, but not with the page
                page = (exc.code, "")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        status, html = page
        assert status == 200
        assert "<canvas" in html
        for name in ("app.js", "style.css"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=5) as resp:
                assert resp.status == 200 and resp.read(), name
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
