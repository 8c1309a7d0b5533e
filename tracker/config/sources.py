"""Several sources in one run: the ``[[sources]]`` list of a config, and the streams' names.

A config may list its inputs as TOML tables instead of ``[run] source``::

    [[sources]]
    source = "rtsp://10.0.0.5/cam"
    name = "door"          # optional: names the stream in outputs ({name}) and the summary

    [[sources]]
    source = "lavfi:testsrc2=size=640x360:rate=30"

Keys other than ``source`` and ``name`` are errors, as elsewhere in a config.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.errors import ConfigError, UsageError
from tracker.io.specs import source_kind

ENTRY_KEYS = ("source", "name")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # safe in a file name


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One input of a run with several sources: its spec and an optional name."""

    source: str
    name: str | None = None


def parse_sources(value: Any) -> tuple[SourceEntry, ...]:
    """The ``[[sources]]`` entries of a config file (raises :class:`ConfigError`)."""
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise ConfigError("'sources' must be a list of tables: write each input as "
                          "a [[sources]] entry with source = \"...\"")
    entries = []
    for i, table in enumerate(value):
        unknown = sorted(set(table) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"unknown config key 'sources[{i}].{unknown[0]}' "
                              f"(known in [[sources]]: {', '.join(ENTRY_KEYS)})")
        source, name = table.get("source"), table.get("name")
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"config key 'sources[{i}].source' must be a non-empty "
                              f"string, got {source!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"config key 'sources[{i}].name' must be str, "
                              f"got {type(name).__name__} {name!r}")
        entries.append(SourceEntry(source.strip(), name or None))
    return tuple(entries)


def stream_names(entries: Sequence[SourceEntry]) -> list[str]:
    """A unique, file-name-safe name per entry: its ``name``, else a file's stem, else
    ``streamN`` (N: its 0-based place in the list). Raises :class:`UsageError` for a bad or
    repeated explicit name."""
    given = [e.name for e in entries if e.name]
    for name in given:
        if not _NAME.match(name):
            raise UsageError(f"stream name {name!r} may hold only letters, digits, '.', '_' "
                             "and '-'")
    repeated = sorted({n for n in given if given.count(n) > 1})
    if repeated:
        raise UsageError(f"two sources are named {repeated[0]!r}; give each a different name")
    names = [e.name or _default_name(e.source, i) for i, e in enumerate(entries)]
    counts = Counter(names)
    names = [n if e.name or counts[n] == 1 else f"stream{i}"
             for i, (e, n) in enumerate(zip(entries, names, strict=True))]
    if len(set(names)) != len(names):
        raise UsageError("the sources' names repeat; give each source a different name")
    return names


def _default_name(spec: str, index: int) -> str:
    stem = Path(spec).stem if source_kind(spec) == "file" else ""
    return stem if stem and _NAME.match(stem) else f"stream{index}"


TEMPLATE_KEYS = ("{stream}", "{name}")


def stream_path(template: str | None, index: int, name: str) -> str | None:
    """``template`` for one stream: ``{stream}`` becomes its 0-based index, ``{name}`` its
    name."""
    if template is None:
        return None
    return template.replace("{stream}", str(index)).replace("{name}", name)


def is_template(path: str | None) -> bool:
    """Whether ``path`` names a file per stream (holds ``{stream}`` or ``{name}``)."""
    return path is not None and any(k in path for k in TEMPLATE_KEYS)
