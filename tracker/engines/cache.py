"""The cache of compiled artefacts, and compiled-engine files: names keyed by what they were
built for, JSON sidecars, stale checks.

Everything compiled is cached under one root, :func:`cache_root` (``$TRACKER_CACHE``, else
``$XDG_CACHE_HOME/tracker``, else ``~/.cache/tracker``), one folder per kind
(:func:`cache_dir`): ``models/`` for the CPU engines' ONNX exports with the model's configs
(:mod:`tracker.engines.export`), ``tuning/`` for the measured engine choices
(:mod:`tracker.engines.tuning`), ``openvino/`` for OpenVINO's compiled graphs, ``onnx/`` for
exports of torch modules given directly, ``tensorrt/`` for TensorRT engines.

An engine file is only valid for one model, input size, batch, precision, TensorRT version and
GPU. Its name says so (:func:`engine_name`); its sidecar ``<name>.json`` records the same fields
plus the model config, the weights checksum, the artifact's checksum, the build time and the
accuracy check against eager fp32. :func:`load_or_build` loads a cached engine only when every
recorded field matches what is wanted now; otherwise it rebuilds (never loads blindly).

This module has no torch import: building and loading are passed in as functions, so the logic
is testable on any machine with a fake artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

FORMAT = 1  # bump when the artifact layout or sidecar meaning changes
T = TypeVar("T")


class EngineCacheError(RuntimeError):
    """A build that failed or whose accuracy check failed (nothing is cached then)."""


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything a compiled engine depends on; all must match for a cached file to be used."""

    model: str  # model name, e.g. "rcn_lite"
    size: int  # input side in pixels
    channels: int
    batch: int  # fixed batch the engine was built for (smaller batches are padded)
    precision: str  # "fp16" or "fp32"
    backend: str  # "tensorrt"
    backend_version: str  # TensorRT version
    device: str  # GPU name
    capability: str  # compute capability, e.g. "8.9"
    weights_sha256: str  # checksum of the weights the engine was compiled from
    runtime: str = ""  # versions of the compiling libraries (torch, torch-tensorrt)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


def engine_name(spec: EngineSpec) -> str:
    """File stem: model, input size, batch, precision, backend version, GPU and capability."""
    return "-".join([
        _slug(spec.model),
        f"{spec.size}x{spec.size}x{spec.channels}",
        f"b{spec.batch}",
        spec.precision,
        f"{_slug(spec.backend)}{_slug(spec.backend_version)}",
        _slug(spec.device),
        f"sm{spec.capability.replace('.', '')}",
    ])


def cache_root() -> Path:
    """The root of every cached artefact: ``$TRACKER_CACHE``, else the user's cache folder
    (``$XDG_CACHE_HOME/tracker`` when that is an absolute path, else ``~/.cache/tracker``)."""
    root = os.environ.get("TRACKER_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "tracker"


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of artefact, e.g. ``onnx`` or ``tensorrt`` (a backend)."""
    return cache_root() / _slug(kind)


def engine_path(spec: EngineSpec, directory: str | Path | None = None, suffix: str = ".ep") -> Path:
    """The file of the engine for ``spec``: in ``directory``, by default the cache folder of
    its backend (``cache_dir(spec.backend)``)."""
    folder = Path(directory) if directory is not None else cache_dir(spec.backend)
    return folder / (engine_name(spec) + suffix)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_suffix(".json")


def read_sidecar(artifact: Path) -> dict[str, Any] | None:
    """The sidecar of ``artifact`` as a dict, or None when missing or unreadable."""
    try:
        data = json.loads(sidecar_path(artifact).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale_reason(artifact: Path, spec: EngineSpec, model_config: Mapping[str, Any]) -> str | None:
    """Why the engine at ``artifact`` must not be used for ``spec`` (None: it is valid)."""
    if not artifact.is_file():
        return "no engine built yet"
    side = read_sidecar(artifact)
    if side is None:
        return "its JSON sidecar is missing or unreadable"
    if side.get("format") != FORMAT:
        return f"engine format {side.get('format')} != {FORMAT}"
    recorded = side.get("spec") or {}
    for key, want in asdict(spec).items():
        if recorded.get(key) != want:
            return f"built for {key}={recorded.get(key)!r}, need {want!r}"
    if side.get("model_config") != _jsonable(model_config):
        return "the model config changed"
    if not (side.get("accuracy") or {}).get("passed"):
        return "it did not pass its accuracy check"
    size = artifact.stat().st_size
    if side.get("artifact_bytes") != size or side.get("artifact_sha256") != file_sha256(artifact):
        return "the engine file does not match its sidecar (truncated or replaced)"
    return None


def _jsonable(value: Mapping[str, Any]) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(dict(value)))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_or_build(
    directory: str | Path | None,
    spec: EngineSpec,
    model_config: Mapping[str, Any],
    build: Callable[[Path], None],
    load: Callable[[Path], T],
    check: Callable[[T], dict[str, Any]],
    *,
    suffix: str = ".ep",
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[T, Path, bool]:
    """The engine for ``spec`` from ``directory`` (None: :func:`engine_path`'s default), built
    first when missing or stale.

    ``build(path)`` writes a new artifact; ``load(path)`` opens one; ``check(engine)`` returns
    the accuracy record, whose ``passed`` must be true for the engine to be kept. Returns
    ``(engine, path, built)``. A failed build or check leaves no file behind and raises
    :class:`EngineCacheError`.
    """
    path = engine_path(spec, directory, suffix)
    reason = "rebuild requested" if force else stale_reason(path, spec, model_config)
    if reason is None:
        try:
            return load(path), path, False
        except Exception as exc:  # noqa: BLE001 - an unloadable cache entry is rebuilt
            reason = f"cannot load it ({type(exc).__name__}: {exc})"
    if log is not None:
        log(f"building engine {path.name}: {reason}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + suffix)
    started = time.perf_counter()
    try:
        build(partial)
        engine = load(partial)
        seconds = time.perf_counter() - started
        accuracy = check(engine)
        if not accuracy.get("passed"):
            raise EngineCacheError(f"engine {path.name} failed its accuracy check: {accuracy}")
        sidecar = {
            "format": FORMAT,
            "spec": asdict(spec),
            "model_config": _jsonable(model_config),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(seconds, 2),
            "accuracy": accuracy,
            "artifact": path.name,
            "artifact_bytes": partial.stat().st_size,
            "artifact_sha256": file_sha256(partial),
        }
        sidecar_path(path).unlink(missing_ok=True)  # never a new artifact with an old sidecar
        partial.replace(path)
        _atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=2, sort_keys=True))
    except EngineCacheError:
        raise
    except Exception as exc:
        raise EngineCacheError(f"cannot build engine {path.name}: {type(exc).__name__}: {exc}") \
            from exc
    finally:
        partial.unlink(missing_ok=True)
    return engine, path, True
