"""Per-stage timings and the pipeline's metrics snapshot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tracker.runtime.channel import ChannelMetrics

_MAX_SAMPLES = 100_000  # per-stage timing samples kept (oldest half discarded beyond this)


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """Per-item time spent inside one stage (queue waits excluded)."""

    name: str
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


class StageTimer:
    """Collects per-item durations of one stage; written by one thread, read by any."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self._samples: list[float] = []

    def add(self, seconds: float) -> None:
        self.count += 1
        self._samples.append(seconds * 1e3)
        if len(self._samples) > _MAX_SAMPLES:
            del self._samples[: _MAX_SAMPLES // 2]

    def metrics(self) -> StageMetrics:
        samples = np.asarray(self._samples[:], dtype=np.float64)
        if samples.size == 0:
            return StageMetrics(self.name, self.count, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(samples, [50, 99])
        return StageMetrics(self.name, self.count, float(p50), float(p99), float(samples.mean()))


@dataclass(frozen=True, slots=True)
class Metrics:
    """Snapshot of a pipeline run: throughput, per-stage latency, queue depths and drops."""

    frames: int
    seconds: float
    stages: tuple[StageMetrics, ...]
    channels: tuple[ChannelMetrics, ...]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.channels)

    def stage(self, name: str) -> StageMetrics:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) for reports and ``tracker bench``."""
        return {
            "frames": self.frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "dropped": self.dropped,
            "stages": [asdict(s) for s in self.stages],
            "channels": [asdict(c) for c in self.channels],
        }
