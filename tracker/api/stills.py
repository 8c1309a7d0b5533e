"""Still images: ``tracker run photo.jpg|DIR|"*.png" --jsonl/--csv``.

Each image is processed on its own (:class:`~tracker.api.Tracker` in ``image`` mode: the
detector runs on every image and no temporal state carries over), with up to
``max(track.max_faces, MAX_STILL_FACES)`` faces, and written as one JSONL line (``"file"``,
``"frame"`` = the image's number in the run, ``"time"`` 0, ``"faces"``) or one CSV row per
face. An image that cannot be read or processed gets a one-line warning naming it, and the run
goes on.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from tracker.api import assembly
from tracker.api.tracker import Tracker, TrackerOptions
from tracker.config.schema import Config
from tracker.errors import SourceError, TrackerError, UsageError
from tracker.types import TrackedFrame

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_STILL_FACES = 16  # faces found per image at least (more when track.max_faces says so)
_GLOB = set("*?[")


def is_stills(spec: str | None) -> bool:
    """True for a folder, a glob pattern, or a path ending in an image suffix."""
    if not spec or "://" in spec or spec.startswith(("lavfi:", "webcam")):
        return False
    path = Path(spec)
    return path.is_dir() or bool(_GLOB & set(spec)) or path.suffix.lower() in IMAGE_SUFFIXES


def list_images(spec: str) -> list[Path]:
    """The images of a file, a folder (its image files, sorted, not recursive) or a pattern
    (``**`` recurses); raises :class:`SourceError` when there are none."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif _GLOB & set(spec) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    else:
        if not path.is_file():
            raise SourceError(f"input file not found: {spec}")
        found = [path]
    if not found:
        what = "is a directory with no" if path.is_dir() else "matches no"
        raise SourceError(f"{spec} {what} images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_rgb(path: Path) -> np.ndarray | None:
    """An image file as ``uint8`` RGB (EXIF orientation applied), or None when unreadable."""
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, slots=True)
class StillsReport:
    """What a stills run did."""

    images: int  # images processed
    faces: int  # faces found in them
    skipped: tuple[str, ...]  # one warning per image that could not be read or processed
    outputs: tuple[str, ...]
    seconds: float
    interrupted: bool = False


def stills_config(cfg: Config) -> Config:
    """``cfg`` with room for every face of a still (``MAX_STILL_FACES`` at least)."""
    faces = max(cfg.track.max_faces, MAX_STILL_FACES)
    return replace(cfg, track=replace(cfg.track, max_faces=faces))


def run_stills(cfg: Config, factory: Callable[[TrackerOptions], Tracker] | None = None,
               warn: Callable[[str], None] | None = None) -> StillsReport:
    """Process the images of ``cfg.run.source`` and write ``run.jsonl`` / ``run.csv``."""
    r = cfg.run
    video_only = [flag for flag, on in (("--out", r.out), ("--show", r.show), ("--vmc", r.vmc),
                                        ("--ws", cfg.stream.ws)) if on]
    if video_only:
        verb = "needs" if len(video_only) == 1 else "need"
        raise UsageError(f"{', '.join(video_only)} {verb} a video; with still images use "
                         "--jsonl and/or --csv")
    images = list_images(r.source or "")
    assembly.check_outputs(cfg, {"--jsonl": r.jsonl, "--csv": r.csv})
    tracker = (factory or Tracker)(TrackerOptions(stills_config(cfg), mode="image"))
    skipped: list[str] = []
    faces = done = 0
    start = time.perf_counter()
    interrupted = False
    with ExitStack() as stack:
        stack.callback(tracker.close)
        tracker.landmarker  # noqa: B018 (load the models before any output is truncated)
        sinks = []
        if r.jsonl:
            sinks.append(stack.enter_context(closing(assembly.jsonl_sink(r.jsonl))))
        if r.csv:
            sinks.append(stack.enter_context(closing(assembly.csv_sink(r.csv))))
        try:
            for i, path in enumerate(images):
                tracked = _one(tracker, path, i, skipped, warn)
                if tracked is None:
                    continue
                for sink in sinks:
                    sink.write(tracked, file=str(path))  # type: ignore[attr-defined]
                faces += len(tracked.faces)
                done += 1
        except KeyboardInterrupt:
            interrupted = True
    if done == 0 and not interrupted:
        raise SourceError(f"no image could be read in {r.source}")
    outputs = tuple(p for p in (r.jsonl, r.csv) if p)
    return StillsReport(done, faces, tuple(skipped), outputs, time.perf_counter() - start,
                        interrupted)


def _one(tracker: Tracker, path: Path, index: int, skipped: list[str],
         warn: Callable[[str], None] | None) -> TrackedFrame | None:
    """One image's faces, numbered ``index``; None (and a warning) when it cannot be used."""
    image = read_rgb(path)
    problem = None
    if image is None:
        problem = f"cannot read image {path} (skipped)"
    else:
        try:
            tracked = tracker.process(image, time=0.0)
        except (TrackerError, ValueError, cv2.error) as exc:
            problem = f"cannot process image {path}: {exc} (skipped)"
    if problem is not None:
        skipped.append(problem)
        if warn is not None:
            warn(problem)
        return None
    faces = tuple(replace(f, frame_index=index) for f in tracked.faces)
    return TrackedFrame(replace(tracked.frame, index=index), faces)
