"""The CPU engines' model files: the ONNX export of a weights file and the model's configs,
cached together by the weights file's checksum so that a warm start imports no torch.

``cache_dir("models")`` holds ``<model>-<sha16>.onnx`` and ``<model>-<sha16>.json`` (the
:class:`~tracker.models.checkpoint.ModelInfo` the landmarker needs: input size and channels,
preprocessing, calibration offsets, the DKM config; the weights and export checksums; the torch
version that exported it). :func:`model_files` reads them when both are there and agree with the
weights file; otherwise it loads the checkpoint with torch, exports it and writes them. A
cached export whose checksum no longer matches its record is deleted and reported (the next
run exports it again).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tracker.engines.cache import cache_dir, file_sha256
from tracker.errors import EngineError, WeightsError
from tracker.models.checkpoint import ModelInfo, resolve_weights

EXPORT_FORMAT = 1  # bump when the export or the record changes meaning


@dataclass(frozen=True)
class ModelFiles:
    """A model ready for the ONNX-based CPU engines."""

    name: str  # the weights file's stem, e.g. "rcn_lite"
    weights: Path
    weights_sha256: str
    info: ModelInfo
    onnx: bytes  # the ONNX export (dynamic batch axis)
    onnx_sha256: str
    onnx_path: Path | None  # where it is cached (None: the cache could not be written)
    exported: bool  # True when this call exported it (torch was imported)


def _paths(name: str, sha: str) -> tuple[Path, Path]:
    stem = f"{name}-{sha[:16]}"
    folder = cache_dir("models")
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def _read(name: str, path: Path, sha: str) -> ModelFiles | None:
    onnx_path, meta_path = _paths(name, sha)
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
        if record.get("format") != EXPORT_FORMAT or record.get("weights_sha256") != sha:
            return None
        data = onnx_path.read_bytes()
    except (OSError, ValueError):
        return None
    onnx_sha = hashlib.sha256(data).hexdigest()
    if onnx_sha != record.get("onnx_sha256"):  # damaged or replaced: reported, as ORT would
        onnx_path.unlink(missing_ok=True)
        raise EngineError(f"cannot load ONNX engine {onnx_path}: it does not match its export "
                          "record (damaged); it was removed, rerun")
    try:
        info = ModelInfo.from_json(record["info"])
    except (KeyError, TypeError, ValueError):
        return None
    return ModelFiles(name, path, sha, info, data, onnx_sha, onnx_path, False)


def _write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


def _export(name: str, path: Path, sha: str) -> ModelFiles:
    import torch

    from tracker.engines.cpu import onnx_bytes
    from tracker.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    data = onnx_bytes(ckpt.model, ckpt.net.size, ckpt.net.in_channels)
    onnx_sha = hashlib.sha256(data).hexdigest()
    info = ckpt.info
    record: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "model": name,
        "weights": str(path),
        "weights_sha256": sha,
        "onnx_sha256": onnx_sha,
        "torch": torch.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "info": info.to_json(),
    }
    onnx_path, meta_path = _paths(name, sha)
    try:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # never a new export with an old record
        _write(onnx_path, data)
        _write(meta_path, json.dumps(record, indent=2, sort_keys=True))
    except OSError:
        onnx_path = None  # a read-only cache only costs the export time
    return ModelFiles(name, path, sha, ModelInfo.from_json(record["info"]), data, onnx_sha,
                      onnx_path, True)


def model_files(weights: str | Path | None = None) -> ModelFiles:
    """The ONNX export and configs of ``weights`` (as :func:`resolve_weights` takes it), from
    the cache when it holds them for this file's checksum, else exported now (imports torch)."""
    path = resolve_weights(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    name = path.stem
    sha = file_sha256(path)
    return _read(name, path, sha) or _export(name, path, sha)
