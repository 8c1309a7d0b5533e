"""Run configuration: frozen dataclasses loaded from TOML, with single-field overrides.

Each section is the options dataclass of the module that uses it, defined there with its
defaults: ``[track]`` :class:`~tracker.tracking.face_tracker.TrackConfig`, ``[smooth]``
:class:`~tracker.temporal.smoothing.SmoothConfig`, ``[detector]``
:class:`~tracker.detect.detectors.DetectorConfig`, ``[pipeline]``
:class:`~tracker.runtime.pipeline.PipelineConfig`, ``[source]``
:class:`~tracker.io.source.SourceOptions`, ``[stream]``
:class:`~tracker.serve.server.StreamConfig` and ``[pose]``
:class:`~tracker.outputs.headpose.PoseConfig`; ``[run]`` and ``[model]`` are defined here.
:class:`Config` composes them and re-exports their names.

A TOML file only lists what it changes; everything else keeps the dataclass defaults (which
``tracker/config/presets/default.toml`` mirrors). Keys are addressed as ``section.field``, e.g.
``track.max_faces``. Unknown sections or keys and wrongly typed values raise
:class:`ConfigError` naming the key. Empty strings in TOML mean "none" for optional fields
(TOML has no null).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tracker.errors import ConfigError, UsageError  # noqa: F401 (ConfigError re-exported)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from tracker.config.sources import SourceEntry, parse_sources
from tracker.detect.detectors import DetectorConfig
from tracker.io.source import SourceConfig, SourceOptions  # noqa: F401 (re-exported)
from tracker.outputs.encode import DEFAULT_CRF, DEFAULT_PRESET, X264_PRESETS
from tracker.outputs.headpose import PoseConfig
from tracker.outputs.vmc import parse_vmc_address
from tracker.runtime.pipeline import POLICIES, PipelineConfig
from tracker.serve.access import parse_address
from tracker.serve.server import StreamConfig
from tracker.temporal.smoothing import FILTERS, SmoothConfig
from tracker.tracking.face_tracker import TrackConfig

CONFIG_DIR = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What to read and where to write."""

    source: str | None = None  # file | webcam | webcam:N | URL | lavfi:GRAPH
    out: str | None = None  # annotated video
    jsonl: str | None = None  # one JSON line of landmarks per frame ("-" = stdout)
    show: bool = False  # preview window
    max_frames: int = 0  # stop after this many frames (0 = until the source ends)
    preset: str = DEFAULT_PRESET  # x264 preset of the annotated video (one of X264_PRESETS)
    crf: int = DEFAULT_CRF  # x264 constant rate factor of the annotated video (0-51, lower = better)
    csv: str | None = None  # one CSV row per face per frame ("-" = stdout)
    vmc: str | None = None  # [HOST:]PORT: VMC protocol (OSC over UDP) to an avatar app
    mirror: bool = False  # flip the view left-right (selfie); labels stay the subject's


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The landmark engine."""

    engine: str = "auto"  # one of ENGINES
    weights: str | None = None  # None = the embedded default weights


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of ``tracker run``."""

    run: RunConfig = field(default_factory=RunConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    smooth: SmoothConfig = field(default_factory=SmoothConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    source: SourceOptions = field(default_factory=SourceOptions)
    stream: StreamConfig = field(default_factory=StreamConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    sources: tuple[SourceEntry, ...] = ()  # [[sources]]: several inputs (tracker.config.sources)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with ``{"section.field": value}`` replaced; None values are skipped."""
        cfg = self
        for key, value in overrides.items():
            if value is None:
                continue
            section, name = _split_key(key)
            sec = getattr(cfg, section)
            value = _coerce(key, _field_types(type(sec))[name], value)
            cfg = replace(cfg, **{section: replace(sec, **{name: value})})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check value ranges; raises ConfigError naming the key."""
        checks = [
            ("track.max_faces", self.track.max_faces >= 1, "must be >= 1"),
            ("track.rescan_every", self.track.rescan_every >= 0, "must be >= 0"),
            ("track.presence_threshold", 0.0 <= self.track.presence_threshold <= 1.0,
             "must be in [0, 1]"),
            ("track.iou_threshold", 0.0 <= self.track.iou_threshold <= 1.0, "must be in [0, 1]"),
            ("track.roi_scale", 1.0 <= self.track.roi_scale <= 3.0, "must be in [1, 3]"),
            ("track.discard_after", self.track.discard_after >= 0, "must be >= 0"),
            ("track.motion", self.track.motion >= 0, "must be >= 0"),
            ("track.roi_hold", self.track.roi_hold >= 0, "must be >= 0"),
            ("track.cut_threshold", self.track.cut_threshold >= 0, "must be >= 0"),
            ("track.weak_presence", 0.0 <= self.track.weak_presence <= 1.0, "must be in [0, 1]"),
            ("track.search_every", self.track.search_every >= 1, "must be >= 1"),
            ("track.weak_rescan_every", self.track.weak_rescan_every >= 1, "must be >= 1"),
            ("smooth.filter", self.smooth.filter in FILTERS, f"must be {' or '.join(FILTERS)}"),
            ("smooth.min_cutoff", self.smooth.min_cutoff > 0, "must be > 0"),
            ("smooth.beta", self.smooth.beta >= 0, "must be >= 0"),
            ("smooth.d_cutoff", self.smooth.d_cutoff > 0, "must be > 0"),
            ("smooth.rigid_min_cutoff", self.smooth.rigid_min_cutoff > 0, "must be > 0"),
            ("smooth.rigid_beta", self.smooth.rigid_beta >= 0, "must be >= 0"),
            ("smooth.rigid_gate", self.smooth.rigid_gate >= 0, "must be >= 0"),
            ("run.max_frames", self.run.max_frames >= 0, "must be >= 0"),
            ("run.preset", self.run.preset in X264_PRESETS, f"must be one of {', '.join(X264_PRESETS)}"),
            ("run.crf", 0 <= self.run.crf <= 51, "must be in [0, 51]"),
            ("run.vmc", _vmc_ok(self.run.vmc), "must be [HOST:]PORT with PORT 1-65535"),
            *((f"pose.{k}", getattr(self.pose, k) >= 0, "must be >= 0 (0 = unknown)")
              for k in ("fx", "fy", "cx", "cy")),
            ("pose.fov_deg", 0 <= self.pose.fov_deg < 180, "must be in [0, 180) (0 = unknown)"),
            ("pipeline.queue_size", self.pipeline.queue_size >= 1, "must be >= 1"),
            ("pipeline.sink_queue_size", self.pipeline.sink_queue_size >= 1, "must be >= 1"),
            ("pipeline.batch_wait_ms", self.pipeline.batch_wait_ms >= 0, "must be >= 0"),
            ("pipeline.policy", self.pipeline.policy in ("auto", *POLICIES),
             f"must be one of auto, {', '.join(POLICIES)}"),
            ("source.open_timeout_s", self.source.open_timeout_s > 0, "must be > 0"),
            ("source.read_timeout_s", self.source.read_timeout_s > 0, "must be > 0"),
            ("source.reconnect_attempts", self.source.reconnect_attempts >= 0, "must be >= 0"),
            ("source.reconnect_backoff_s", self.source.reconnect_backoff_s >= 0, "must be >= 0"),
            ("source.reconnect_backoff_max_s",
             self.source.reconnect_backoff_max_s >= self.source.reconnect_backoff_s,
             "must be >= source.reconnect_backoff_s"),
            ("stream.ws", _address_ok(self.stream.ws), "must be [HOST:]PORT with PORT 0-65535"),
            ("stream.preview_fps", self.stream.preview_fps > 0, "must be > 0"),
            ("stream.preview_width", self.stream.preview_width >= 16, "must be >= 16"),
            ("stream.stall_timeout_s", self.stream.stall_timeout_s > 0, "must be > 0"),
        ]
        for key, ok, what in checks:
            if not ok:
                raise ConfigError(f"config key {key!r} {what}, got {_get(self, key)!r}")

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _vmc_ok(address: str | None) -> bool:
    if address is None:
        return True
    try:
        parse_vmc_address(address)
    except UsageError:
        return False
    return True


def _address_ok(address: str | None) -> bool:
    if address is None:
        return True
    try:
        parse_address(address)
    except ValueError:
        return False
    return True


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _sections() -> dict[str, Any]:
    """The ``[section]`` tables of a Config (not its ``[[sources]]`` list)."""
    return {n: t for n, t in _field_types(Config).items() if dataclasses.is_dataclass(t)}


def _split_key(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    sections = _sections()
    if section not in sections:
        raise ConfigError(f"unknown config section {section!r} (known: {', '.join(sections)})")
    names = _field_types(sections[section])
    if name not in names:
        raise ConfigError(
            f"unknown config key {key!r} (known in [{section}]: {', '.join(names)})"
        )
    return section, name


def _coerce(key: str, typ: Any, value: Any) -> Any:
    """Check ``value`` against the field type ``typ``; ints are accepted for floats."""
    optional = isinstance(typ, types.UnionType) and type(None) in typ.__args__
    base = next(a for a in typ.__args__ if a is not type(None)) if optional else typ
    if optional and (value is None or value == ""):
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (base is int and isinstance(value, bool)) or not isinstance(value, base):
        raise ConfigError(
            f"config key {key!r} must be {base.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def config_from_dict(data: dict[str, Any], origin: str = "config") -> Config:
    """Build a Config from nested ``{section: {field: value}}`` data."""
    overrides: dict[str, Any] = {}
    try:
        sources: tuple[SourceEntry, ...] = ()
        for section, table in data.items():
            if section == "sources":
                sources = parse_sources(table)
                continue
            if not isinstance(table, dict):
                homes = [n for n, t in _sections().items() if section in _field_types(t)]
                hint = f"; put it under [{homes[0]}]" if homes else ""
                raise ConfigError(f"config key {section!r} must be inside a [section]{hint}")
            for name, value in table.items():
                _split_key(f"{section}.{name}")
                overrides[f"{section}.{name}"] = value
        if sources and overrides.get("run.source"):
            raise ConfigError("give the input as [run] source or as [[sources]] entries, "
                              "not both")
        return replace(Config().with_overrides(overrides), sources=sources)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def resolve_config_path(name_or_path: str) -> Path:
    """A config file path; a bare name like ``webcam`` means ``presets/webcam.toml``."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if path.suffix == "" and path.parent == Path("."):
        named = CONFIG_DIR / f"{name_or_path}.toml"
        if named.exists():
            return named
    raise ConfigError(f"config file not found: {name_or_path}")


def load_config(path: str | Path | None = None) -> Config:
    """Defaults, updated from the TOML file at ``path`` (or named config) when given."""
    if path is None:
        return Config()
    p = resolve_config_path(str(path))
    if p.is_dir():
        raise ConfigError(f"config path is a directory: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {p}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from None
    return config_from_dict(data, origin=str(p))
