"""Checkpoints: shipped weights by name, the model card that travels with them, loading and saving.

Importing this module does not import torch (loading and saving do): :class:`ModelInfo`, what
the landmarker needs besides the network, is built without it from the export cache
(:mod:`tracker.engines.export`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tracker.errors import WeightsError  # noqa: F401 (re-exported)
from tracker.models.configs import DKMConfig, NetConfig, dkm_config, net_config
from tracker.models.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "rcn_lite.pt"


def fuse(rcn: Checkpoint, dkm: Checkpoint, weight: float = 1.0) -> Checkpoint:
    """RCN from one checkpoint, DKM from another (trained with ``--dkm``), as one fused model."""
    from tracker.models.networks import DKM, Fused

    if dkm.dkm is None:
        raise WeightsError("the second checkpoint holds no denoising keypoint model")
    cfg = replace(dkm.dkm, weight=weight)
    model = Fused(rcn.model, DKM(cfg))
    model.dkm.load_state_dict(dkm.model.dkm.state_dict())
    return Checkpoint(model.eval(), rcn.net, cfg, dict(rcn.meta))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Meta:
    """What the landmarker reads from a model's configs and metadata."""

    net: NetConfig
    dkm: DKMConfig | None
    meta: dict[str, Any]

    @property
    def preprocess(self) -> Preprocess:
        """How crops become this model's input (saved with the weights)."""
        return Preprocess(self.net.size, self.net.in_channels,
                          bool(self.meta.get("preprocess", {}).get("lcn")))

    @property
    def point_offset(self) -> np.ndarray | None:
        """Per-landmark calibration offset, heatmap px ``(K, 2)`` (see :mod:`tracker.training.calibrate`)."""
        offset = self.meta.get("point_offset")
        return None if offset is None else np.asarray(offset, np.float32)


@dataclass(frozen=True)
class ModelInfo(_Meta):
    """A model's configs and metadata without its weights (no torch needed)."""

    net: NetConfig
    dkm: DKMConfig | None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_json` reads back."""
        return {"net": asdict(self.net), "dkm": asdict(self.dkm) if self.dkm else None,
                "meta": json.loads(json.dumps(self.meta, default=str))}

    @staticmethod
    def from_json(d: dict[str, Any]) -> ModelInfo:
        return ModelInfo(net_config(d["net"]), dkm_config(d.get("dkm")), dict(d.get("meta") or {}))


@dataclass(frozen=True)
class Checkpoint(_Meta):
    """A loaded landmark model and the metadata saved with it."""

    model: nn.Module
    net: NetConfig
    dkm: DKMConfig | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> ModelInfo:
        """The configs and metadata alone."""
        return ModelInfo(self.net, self.dkm, self.meta)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, net: NetConfig, dkm: DKMConfig | None,
                    meta: dict[str, Any]) -> None:
    """Save weights with their configs (configs travel with the weights)."""
    import torch

    blob = {"state_dict": model.state_dict(), "net": asdict(net),
            "dkm": asdict(dkm) if dkm else None, "meta": meta}
    tmp = Path(str(path) + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def resolve_weights(path: str | Path | None) -> Path:
    """A weights file: ``None``/"" = the default; a bare name (no folder, no suffix) that is
    not a file here = one shipped with tracker (``rcn_lite_fast`` -> ``weights/rcn_lite_fast.pt``)."""
    if not path or path == "default":
        return DEFAULT_WEIGHTS
    p = Path(path)
    if not p.exists() and p.name == str(path) and not p.suffix:
        return WEIGHTS_DIR / f"{path}.pt"
    return p


def list_models() -> list[str]:
    """Names of the shipped landmark models (``default`` is the first)."""
    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    default = DEFAULT_WEIGHTS.stem
    return ["default", *([default] if default in shipped else []),
            *(n for n in shipped if n != default)]


def load_checkpoint(path: str | Path | None = None) -> Checkpoint:
    """Load a checkpoint saved by ``save_checkpoint`` (RCN alone or RCN+DKM fused); ``path`` as
    :func:`resolve_weights` takes it."""
    import torch

    from tracker.models.networks import DKM, Fused, build_model

    path = resolve_weights(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = net_config(blob["net"])
        model: nn.Module = build_model(net)
        dkm_cfg = dkm_config(blob.get("dkm"))
        if dkm_cfg is not None:
            model = Fused(model, DKM(dkm_cfg))
        model.load_state_dict(blob["state_dict"])
    except WeightsError:
        raise
    except Exception as exc:  # corrupt pickle, wrong keys, truncated file
        raise WeightsError(
            f"cannot load weights {path}: {type(exc).__name__} (file corrupt or not a tracker "
            "checkpoint; reinstall or pass --weights with a file from `tracker train`)"
        ) from exc
    model.eval()
    return Checkpoint(model, net, dkm_cfg, blob.get("meta", {}))


def meta_json(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a weights file (``x.pt`` -> ``x.json``), or {}."""
    side = Path(path).with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}
