"""`tracker batch`: inputs, the manifest, resume, a local pool run and a real local Ray cluster
with a worker killed mid-video (its video is retried; outputs match the local run's bytes)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tracker.batch import worker
from tracker.batch.inputs import expand_inputs, output_names, plan_jobs
from tracker.batch.manifest import MANIFEST_NAME, Manifest, read_manifest
from tracker.batch.worker import PART

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / \
    "short_hamilton_clip.mp4"
GOOD = {"a": 82, "sub/b": 211, "sub/c": 0}  # output key -> first frame of the hamilton clip
FRAMES = 45
RAY_BIN = Path(sys.executable).with_name("ray")


def cut(dst: Path, start: int, n: int = FRAMES) -> Path:
    """``n`` frames of the hamilton clip from ``start``, re-encoded (no audio)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(CLIP)) as inp, av.open(str(dst), "w") as out:
        vs = inp.streams.video[0]
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = vs.width, vs.height, "yuv420p"
        st.options = {"preset": "ultrafast", "bframes": "0"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= start + n:
                break
            if i >= start:
                f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                f.pts, f.time_base = i - start, Fraction(1, 30)
                for packet in st.encode(f):
                    out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for key, start in GOOD.items():
        cut(root / f"{key}.mp4", start)
    (root / "sub" / "bad.mp4").write_bytes(os.urandom(30_000))  # corrupt: random bytes
    (root / "notes.txt").write_text("not a video\n")  # folders yield video extensions only
    return root


def batch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", "batch", *args], capture_output=True,
                          text=True, timeout=timeout)


def latest(out: Path) -> dict[str, dict]:
    return {row["input"]: row for row in read_manifest(out / MANIFEST_NAME)}


def frames_in(video: Path) -> int:
    with av.open(str(video)) as c:
        return sum(1 for _ in c.decode(video=0))


def outputs_of(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in (".jsonl", ".mp4")
            and p.name != MANIFEST_NAME}


@pytest.fixture(scope="module")
def local_run(inputs: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("batch") / "out"
    proc = batch(str(inputs), "--out-dir", str(out), "--jsonl", "--out", "--workers", "2")
    return out, proc


# -- inputs and the manifest, in-process --------------------------------------------------------


def test_inputs_expand_folders_globs_and_lists(tmp_path: Path) -> None:
    for name in ("a.mp4", "x/b.MOV", "x/y/c.mkv", "x/skip.txt", "out/old.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0video")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nx/y/c.mkv\nhttps://example.com/v/talk.mp4?t=1\n a.mp4 \n")
    found = expand_inputs([str(tmp_path), str(tmp_path / "x" / "*.MOV"), str(listing)],
                          exclude=tmp_path / "out")
    assert found == [str(tmp_path / p) for p in ("a.mp4", "x/b.MOV", "x/y/c.mkv")] + [
        "https://example.com/v/talk.mp4?t=1"]
    jobs = plan_jobs(found)
    assert [j.key for j in jobs][:3] == ["a", "x/b", "x/y/c"]
    assert jobs[3].key.startswith("urls/example.com/v/talk-") and jobs[3].fingerprint == {
        "url": found[3]}
    assert set(jobs[0].fingerprint) == {"size", "mtime_ns"}
    assert output_names("x/b", True, True) == ["x/b.jsonl", "x/b.mp4"]
    # two inputs that would share outputs keep their extensions apart
    (tmp_path / "a.mov").write_bytes(b"\0")
    clash = plan_jobs([str(tmp_path / "a.mp4"), str(tmp_path / "a.mov")])
    assert [j.key for j in clash] == ["a.mp4", "a.mov"]


def test_manifest_latest_line_wins_and_a_torn_line_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "v.jsonl").write_text("{}\n")
    with Manifest(tmp_path) as m:
        m.append({"input": "/v.mp4", "status": "failed", "fingerprint": {"size": 1}})
        m.append({"input": "/v.mp4", "status": "done", "fingerprint": {"size": 1},
                  "settings": "s", "outputs": ["v.jsonl"]})
    with open(tmp_path / MANIFEST_NAME, "a") as f:
        f.write('{"input": "/v.mp4", "status": "fai')  # a crash mid-line
    with Manifest(tmp_path) as m:
        assert m.is_complete("/v.mp4", {"size": 1}, "s", ["v.jsonl"])
        assert not m.is_complete("/v.mp4", {"size": 2}, "s", ["v.jsonl"])  # input changed
        assert not m.is_complete("/v.mp4", {"size": 1}, "other", ["v.jsonl"])  # settings changed
        assert not m.is_complete("/v.mp4", {"size": 1}, "s", ["v.jsonl", "v.mp4"])  # new output
        assert m.append({"input": "/v.mp4", "status": "done"})["attempt"] == 3
    rows = read_manifest(tmp_path / MANIFEST_NAME)
    assert [r["attempt"] for r in rows] == [1, 2, 3]


def test_ray_missing_is_a_one_line_usage_error(inputs: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; from tracker.cli import main; "
            f"sys.exit(main(['batch', {str(inputs)!r}, '--out-dir', {str(tmp_path)!r}, "
            "'--ray', 'auto']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "pip install 'tracker[ray]'" in proc.stderr


# -- the local pool -----------------------------------------------------------------------------


def test_local_pool_finishes_good_clips_and_reports_the_corrupt_one(
        local_run: tuple[Path, subprocess.CompletedProcess[str]], inputs: Path) -> None:
    out, proc = local_run
    assert proc.returncode == 1, proc.stderr  # FAILED: one input failed
    assert "3 done" in proc.stderr and "1 failed" in proc.stderr and "bad.mp4" in proc.stderr
    for key in GOOD:
        lines = (out / f"{key}.jsonl").read_text().splitlines()
        assert [json.loads(line)["frame"] for line in lines] == list(range(FRAMES))
        assert frames_in(out / f"{key}.mp4") == FRAMES
    rows = latest(out)
    assert len(rows) == 4
    bad = rows[str(inputs / "sub" / "bad.mp4")]
    assert bad["status"] == "failed" and bad["outputs"] == []
    assert bad["error_type"] == "SourceError" and "\n" not in bad["error"]
    for key in GOOD:
        row = rows[str(inputs / f"{key}.mp4")]
        assert row["status"] == "done" and row["frames"] == FRAMES
        assert row["outputs"] == [f"{key}.jsonl", f"{key}.mp4"]
        assert row["video_seconds"] == pytest.approx(FRAMES / 30, abs=1e-3)
    assert not list(out.rglob(f"*{PART}*")) and not list(out.glob("sub/bad.*"))
    assert len({r["worker"] for r in rows.values()}) <= 2  # processes are reused


def test_a_worker_keeps_its_tracker_between_videos() -> None:
    settings = {"track.max_faces": 2}
    first = worker.cached_tracker(settings, "digest-1")
    assert worker.cached_tracker(settings, "digest-1") is first  # models load once
    assert worker.cached_tracker({}, "digest-2") is not first  # new settings: a new tracker


def test_a_rerun_skips_what_is_done_and_retries_what_failed(
        local_run: tuple[Path, subprocess.CompletedProcess[str]], inputs: Path) -> None:
    out, _ = local_run
    before, lines = outputs_of(out), read_manifest(out / MANIFEST_NAME)
    proc = batch(str(inputs), "--out-dir", str(out), "--jsonl", "--out")
    assert proc.returncode == 1 and "3 skipped" in proc.stderr and "0 done" in proc.stderr
    assert outputs_of(out) == before  # not rewritten
    new = read_manifest(out / MANIFEST_NAME)[len(lines):]
    assert [(r["input"], r["status"], r["attempt"]) for r in new] == [
        (str(inputs / "sub" / "bad.mp4"), "failed", 2)]
    # a changed input is processed again; a crash's leftovers do not confuse the next run
    c = inputs / "sub" / "c.mp4"
    os.utime(c, ns=(time.time_ns(), time.time_ns()))
    stale = out / "sub" / f".c.jsonl{PART}otherhost-1.jsonl"
    stale.write_text('{"frame": 0')
    with open(out / MANIFEST_NAME, "a") as f:
        f.write('{"input": "' + str(c))  # torn line
    proc = batch(str(inputs), "--out-dir", str(out), "--jsonl", "--out")
    assert proc.returncode == 1 and "1 done" in proc.stderr and "2 skipped" in proc.stderr
    assert latest(out)[str(c)]["status"] == "done" and not stale.exists()
    after = outputs_of(out)
    assert after["sub/c.jsonl"][1] == before["sub/c.jsonl"][1]  # same bytes, rewritten
    assert after["a.jsonl"] == before["a.jsonl"]


# -- a real Ray cluster on this machine -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pytest.importorskip("ray")
    # token authentication with a fresh token (for ray start and every driver started here),
    # whatever ~/.ray/auth_token holds
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are limited
    log = open(Path(temp) / "ray-start.log", "w")
    head = subprocess.Popen(
        [str(RAY_BIN), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", "--object-store-memory=100000000", f"--temp-dir={temp}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (Path(temp) / "ray-start.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, "ray start failed"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:  # stop exactly the cluster started here (ray start --block stops its processes)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_cluster_survives_a_killed_worker_with_identical_outputs(
        ray_cluster: str, local_run: tuple[Path, subprocess.CompletedProcess[str]],
        inputs: Path, tmp_path: Path) -> None:
    reference, _ = local_run
    out = tmp_path / "ray-out"
    clips = [str(inputs / f"{key}.mp4") for key in GOOD]
    proc = subprocess.Popen([sys.executable, "-m", "tracker", "batch", *clips, "--out-dir",
                             str(out), "--jsonl", "--ray", ray_cluster],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for part in out.rglob(f"*{PART}*.jsonl") if out.exists() else ():
            m = re.search(r"-(\d+)\.jsonl$", part.name)  # .NAME.part-HOST-PID.jsonl
            if m and part.exists():
                killed = int(m.group(1))
                os.kill(killed, signal.SIGKILL)  # the Ray worker, mid-video
                break
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=180)
    assert killed is not None, "no worker was seen mid-video: " + stderr
    assert proc.returncode == 0, stderr
    assert "3 done" in stderr and "Ray cluster" in stderr
    rows = latest(out)
    assert {r["status"] for r in rows.values()} == {"done"} and len(rows) == 3
    assert all(not r["worker"].endswith(f":{killed}") for r in rows.values())
    for key in GOOD:
        assert (out / f"{key}.jsonl").read_bytes() == (reference / f"{key}.jsonl").read_bytes()
    assert not list(out.rglob(f"*{PART}*"))
