"""What ``tracker batch`` reads: inputs expanded to sources, and each source's output names.

An input is a video file, a folder (searched recursively for :data:`VIDEO_EXTENSIONS`), a glob
(``**`` recursive), a text file listing one path or URL a line (``#`` starts a comment;
relative paths are relative to the list's folder), or ``-`` for such a list on stdin. Files are
made absolute; URLs (and ``lavfi:`` graphs) are kept as given. Outputs mirror each file's path
relative to the files' common folder (``--root`` overrides it); URLs go under ``urls/HOST/``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tracker.errors import UsageError
from tracker.io.source import source_kind

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".y4m",
})
LIST_EXTENSIONS = frozenset({".txt", ".list", ".lst"})
_GLOB = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")


@dataclass(frozen=True, slots=True)
class Job:
    """One input to process: what the worker opens and where its outputs go."""

    source: str  # an absolute file path, or a URL / lavfi graph as given
    key: str  # output name relative to the out-dir, without extension ("sub/clip")
    fingerprint: dict[str, Any]  # {"size", "mtime_ns"} of a file, {"url"} otherwise

    @property
    def is_file(self) -> bool:
        return "url" not in self.fingerprint


def fingerprint(source: str) -> dict[str, Any]:
    """What identifies this version of an input: size and mtime of a file, else the URL."""
    if source_kind(source) != "file":
        return {"url": source}
    try:
        st = os.stat(source)
    except OSError:
        return {"missing": True}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_text_list(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in LIST_EXTENSIONS:
        return True
    if suffix in VIDEO_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return b"\0" not in head and bool(head.strip())


def _list_lines(lines: Iterable[str], base: Path) -> Iterator[str]:
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if source_kind(line) != "file":
            yield line
        else:
            p = Path(line).expanduser()
            yield str(p if p.is_absolute() else base / p)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _videos_under(folder: Path, exclude: Path | None) -> Iterator[str]:
    visited: set[str] = set()  # real paths: a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        real = os.path.realpath(dirpath)
        if _inside(here, exclude) or real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                yield str(here / name)


def _expand_one(spec: str, exclude: Path | None, from_list: bool) -> Iterator[str]:
    if source_kind(spec) != "file":
        yield spec
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        yield from _videos_under(path.resolve(), exclude)
    elif path.is_file():
        if not from_list and _is_text_list(path):
            with open(path, encoding="utf-8") as f:
                for line in _list_lines(f, path.resolve().parent):
                    yield from _expand_one(line, exclude, True)
        else:
            yield str(path.resolve())
    elif _GLOB.search(spec):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches and not from_list:
            raise UsageError(f"no files match {spec}")
        wanted = path.suffix.lower()  # "*.dat" takes .dat files; "*" only videos
        for m in map(Path, matches):
            if m.is_dir():
                yield from _videos_under(m.resolve(), exclude)
            elif m.suffix.lower() in VIDEO_EXTENSIONS or m.suffix.lower() == wanted:
                if not _inside(m.resolve(), exclude):
                    yield str(m.resolve())
    else:
        yield str(path.absolute())  # missing: reported as a failed input, not fatal


def expand_inputs(inputs: Sequence[str], exclude: Path | None = None) -> list[str]:
    """Every source the inputs name, in order, without duplicates; files under ``exclude``
    (the out-dir) are skipped when searching folders."""
    exclude = exclude.resolve() if exclude is not None else None
    seen: dict[str, None] = {}
    for spec in inputs:
        if spec == "-":
            for line in _list_lines(sys.stdin, Path.cwd()):
                for s in _expand_one(line, exclude, True):
                    seen.setdefault(s)
        else:
            for s in _expand_one(spec, exclude, False):
                seen.setdefault(s)
    return list(seen)


def common_root(sources: Sequence[str]) -> Path | None:
    """The deepest folder holding every file source (None when there are none)."""
    folders = [os.path.dirname(s) for s in sources if source_kind(s) == "file"]
    if not folders:
        return None
    try:
        return Path(os.path.commonpath(folders))
    except ValueError:  # different drives (Windows)
        return None


def _url_key(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc or parts.scheme or "source"
    stem = os.path.splitext(parts.path.strip("/"))[0] or "index"
    key = f"urls/{host}/{stem}" if parts.netloc else f"urls/{url}"
    key = _UNSAFE.sub("_", key).strip("/")
    key = "/".join(p for p in key.split("/") if p not in ("", ".", ".."))
    if parts.query or not parts.netloc:
        key += "-" + hashlib.sha1(url.encode()).hexdigest()[:8]
    return key


def _file_key(source: str, root: Path | None) -> str:
    p = Path(source)
    if root is not None:
        try:
            return p.with_suffix("").relative_to(root).as_posix()
        except ValueError:
            pass
    # outside the root: its absolute path, mirrored under abs/
    return "abs/" + p.with_suffix("").as_posix().lstrip("/").replace(":", "")


def plan_jobs(sources: Sequence[str], root: Path | None = None) -> list[Job]:
    """A :class:`Job` per source; output names mirror the files' paths below ``root``.

    Two inputs that would share a name (``clip.mp4``, ``clip.mov``) both keep their
    extension in it (``clip.mp4.jsonl``, ``clip.mov.jsonl``).
    """
    root = root.resolve() if root is not None else common_root(sources)
    keys = [_file_key(s, root) if source_kind(s) == "file" else _url_key(s) for s in sources]
    clashes = {k for k, n in Counter(keys).items() if n > 1}
    jobs: list[Job] = []
    taken: set[str] = set()
    for source, key in zip(sources, keys, strict=True):
        if key in clashes:
            suffix = Path(source).suffix if source_kind(source) == "file" else ""
            key += suffix or "-" + hashlib.sha1(source.encode()).hexdigest()[:8]
        if key in taken:  # still taken (a.mp4, a.mov and a.mp4.mkv): make it unique
            key += "-" + hashlib.sha1(source.encode()).hexdigest()[:8]
        taken.add(key)
        jobs.append(Job(source, key, fingerprint(source)))
    return jobs


def output_names(key: str, jsonl: bool, video: bool) -> list[str]:
    """The output files of one job, relative to the out-dir (landmarks first)."""
    return ([f"{key}.jsonl"] if jsonl else []) + ([f"{key}.mp4"] if video else [])
