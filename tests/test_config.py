"""Configs load from TOML over the defaults; bad keys and values are named in the error."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from tracker.api.assembly import open_video
from tracker.config.schema import (
    CONFIG_DIR,
    Config,
    ConfigError,
    SourceConfig,
    load_config,
    resolve_config_path,
)
from tracker.io.source import SourceOptions

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_default_toml_mirrors_the_built_in_defaults() -> None:
    assert load_config(CONFIG_DIR / "default.toml") == Config() == load_config(None)


def test_default_toml_lists_every_key() -> None:
    data = tomllib.loads((CONFIG_DIR / "default.toml").read_text(encoding="utf-8"))
    sections = {name: cls for name, cls in typing.get_type_hints(Config).items()
                if dataclasses.is_dataclass(cls)}  # not the [[sources]] list
    want = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in sections.items()}
    assert {section: list(table) for section, table in data.items()} == want


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("webcam", "run.source", "webcam"),
        ("webcam", "pipeline.policy", "drop_oldest"),
        ("offline", "pipeline.policy", "block"),
        ("offline", "track.max_faces", 4),
        ("fast", "model.weights", "rcn_lite_fast"),
    ],
)
def test_shipped_configs_load_by_name(name: str, key: str, value: Any) -> None:
    cfg = load_config(name)
    section, field = key.split(".")
    assert getattr(getattr(cfg, section), field) == value


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("[track]\nmax_faces = 3\n", "track.max_faces", 3),
        ("[source]\nopen_timeout_s = 2\n", "source.open_timeout_s", 2.0),  # int for float
        ('[model]\nweights = ""\n', "model.weights", None),  # "" means none
        ('[model]\nweights = "w.pt"\n', "model.weights", "w.pt"),
        ("[run]\nshow = true\n", "run.show", True),
    ],
)
def test_values_are_read_and_typed(tmp_path: Path, text: str, key: str, value: Any) -> None:
    cfg = load_config(write(tmp_path, text))
    section, field = key.split(".")
    got = getattr(getattr(cfg, section), field)
    assert got == value and type(got) is type(value)
    assert cfg.detector == Config().detector  # untouched sections keep defaults


@pytest.mark.parametrize(
    "text, message",
    [
        ("[track]\nmax_face = 2\n", r"unknown config key 'track\.max_face'"),
        ("[trak]\nmax_faces = 2\n", r"unknown config section 'trak'"),
        ('source = "x.mp4"\n', r"'source' must be inside a \[section\]; put it under \[run\]"),
        ('[track]\nmax_faces = "2"\n', r"'track\.max_faces' must be int, got str"),
        ("[track]\nmax_faces = 2.5\n", r"'track\.max_faces' must be int"),
        ("[run]\nshow = 1\n", r"'run\.show' must be bool"),
        ("[track]\nmax_faces = true\n", r"'track\.max_faces' must be int, got bool"),
        ("[track]\nmax_faces = 0\n", r"'track\.max_faces' must be >= 1"),
        ("[track]\nrescan_every = -1\n", r"'track\.rescan_every' must be >= 0"),
        ("[track]\nsearch_every = 0\n", r"'track\.search_every' must be >= 1"),
        ("[track]\nroi_hold = -0.1\n", r"'track\.roi_hold' must be >= 0"),
        ('[pipeline]\npolicy = "newest"\n', r"'pipeline\.policy' must be one of"),
        ("[pipeline]\nqueue_size = 0\n", r"'pipeline\.queue_size' must be >= 1"),
        ("[track]\npresence_threshold = 1.5\n", r"presence_threshold' must be in \[0, 1\]"),
        ("[track\n", r"invalid TOML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["missing.toml", "nosuchname"])
def test_missing_config_files(spec: str) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(spec)


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


def test_named_configs_resolve_to_the_configs_folder() -> None:
    assert resolve_config_path("offline") == CONFIG_DIR / "offline.toml"


@pytest.mark.parametrize(
    "overrides, key, value",
    [
        ({"track.max_faces": 2}, "track.max_faces", 2),
        ({"track.max_faces": None}, "track.max_faces", 4),  # None = not given: keep offline
        ({"run.source": "webcam:1"}, "run.source", "webcam:1"),
        ({"model.engine": "onnx"}, "model.engine", "onnx"),
        ({"pipeline.policy": "block"}, "pipeline.policy", "block"),
    ],
)
def test_overrides_replace_single_fields(overrides: dict[str, Any], key: str, value: Any) -> None:
    base = load_config("offline")
    cfg = base.with_overrides(overrides)
    section, field = key.split(".")
    assert getattr(getattr(cfg, section), field) == value
    assert cfg.pipeline.queue_size == base.pipeline.queue_size  # the rest is kept


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"track.nope": 1}, r"unknown config key 'track\.nope'"),
        ({"nope.x": 1}, r"unknown config section 'nope'"),
        ({"track.max_faces": 0}, r"must be >= 1"),
        ({"track.max_faces": "3"}, r"must be int"),
        ({"run.preset": "warp"}, r"'run\.preset' must be one of ultrafast, superfast"),
        ({"run.crf": 52}, r"'run\.crf' must be in \[0, 51\]"),
    ],
)
def test_bad_overrides(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config().with_overrides(overrides)


def test_configs_are_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.track.max_faces = 3  # type: ignore[misc]


def test_source_section_is_the_source_options() -> None:
    assert SourceConfig is SourceOptions
    cfg = Config().with_overrides({"source.open_timeout_s": 1.5, "run.max_frames": 7})
    video = open_video(cfg.with_overrides({"run.source": "lavfi:testsrc2=size=32x32:rate=30"}))
    try:
        assert video.options is cfg.source and video.options.open_timeout_s == 1.5
        assert video.max_frames == 7 and video.info.frame_count == 7
    finally:
        video.close()
