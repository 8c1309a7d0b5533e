"""The measured CPU engine of ``--engine auto``: candidates timed once per machine and model.

On first use of a model on a machine, :func:`tune` builds candidate CPU paths from the model's
ONNX export, checks each against ONNX Runtime fp32 on face crops, times them interleaved and
keeps the fastest that passed, with a batch plan; the record is cached in
``cache_dir("tuning")`` (:mod:`tracker.engines.cache`) and later loads reuse it.

Candidates, in three rounds (each round's candidates timed in turns, so load from other
processes falls on all of them alike):

1. precision: OpenVINO bf16 (where the CPU has native bfloat16), fp16 (native half), fp32, each
   with the LATENCY hint, one stream, one thread, no pinning; ONNX Runtime fp32 (one thread,
   all graph optimisations: the ``--engine onnxruntime`` settings).
2. settings of the round-1 winner. OpenVINO: CPU pinning on, the THROUGHPUT hint (one stream),
   two threads, denormals flushed to zero (``CPU_DENORMALS_OPTIMIZATION``); ONNX Runtime: two
   threads, the extended or basic optimisation level. (The KV-cache properties only apply to
   attention layers, so they are not tried.)
3. batch sizes 2, 4, 8 and 16 of the winner: the plan (:func:`make_plan`) runs n faces as the
   mix of measured batch sizes that is fastest, so no batch is slower per face than one face
   at a time.

A candidate passes when its points (heatmap decode of its logits) are within
:data:`TOLERANCE_PX` heatmap pixels of ONNX Runtime fp32's at the 99th percentile, on every
batch size it would run. A candidate with more threads than another must beat it by
:data:`THREADS_MARGIN` (the pipeline's other stages need the other cores).

The cache key (:func:`tuning_key`): the CPU model, its instruction-set flags and logical CPU
count, the OpenVINO and ONNX Runtime versions, the ONNX export's checksum and
:data:`TUNING_FORMAT`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tracker.engines.base import Engine, EngineError
from tracker.engines.cache import cache_dir

TUNING_FORMAT = 1  # bump when candidates, the gate or the record change
TOLERANCE_PX = 0.5  # p99 point error vs ONNX Runtime fp32, heatmap pixels
# more threads must be this much faster per call: in `tracker run --out` the other stages keep
# the other core busy (on the 2-core Xeon, OpenVINO bf16 with 2 threads was 11 % faster alone
# and no faster in the annotate pipeline: 162-172 vs 162-177 fps)
THREADS_MARGIN = 0.25
SETTINGS_MARGIN = 0.03  # a round-2 setting must beat the round-1 winner's defaults by this much
BATCHES = (2, 4, 8, 16)  # batch sizes timed for the plan (besides 1)
PLAN_LIMIT = 64  # the plan covers 1..PLAN_LIMIT faces; more run in pieces of this size
SAMPLE_S = 0.004  # one timing sample: this long a run of calls
ROUND_S = 0.5  # timing budget of one round

_FLAG = re.compile(r"^(avx|amx|fma|f16c|sse4|vnni|bmi|sve|neon|asimd)")


@dataclass(frozen=True)
class Candidate:
    """One way to run the model: a backend and its options (JSON-able)."""

    backend: str  # "openvino" | "onnxruntime" (or a test's own)
    options: dict[str, Any] = field(default_factory=dict)
    make: Callable[[bytes], Engine] | None = field(default=None, compare=False, repr=False)

    @property
    def threads(self) -> int:
        return int(self.options.get("threads", 1))

    @property
    def label(self) -> str:
        o = self.options
        if self.backend == "openvino":
            extra = [k for k in ("pinning", "denormals") if o.get(k)]
            hint = "" if o.get("hint", "LATENCY") == "LATENCY" else f" {o['hint'].lower()}"
            return (f"openvino {o.get('precision', 'fp32')} {self.threads}t{hint}"
                    + "".join(f" +{e}" for e in extra))
        if self.backend == "onnxruntime":
            return f"onnxruntime fp32 {self.threads}t {o.get('level', 'all')}"
        return " ".join([self.backend, *(f"{k}={v}" for k, v in sorted(o.items()))])

    def build(self, onnx: bytes, cache: bool = False) -> Engine:
        """The engine this candidate describes, over the ONNX export ``onnx`` (``cache``:
        OpenVINO keeps its compiled graphs on disk, for the chosen engine only)."""
        if self.make is not None:
            return self.make(onnx)
        o = self.options
        if self.backend == "openvino":
            from tracker.engines.openvino import OpenVinoEngine

            props: dict[str, object] = {
                "PERFORMANCE_HINT": o.get("hint", "LATENCY"),
                "ENABLE_CPU_PINNING": bool(o.get("pinning", False)),
            }
            if o.get("denormals"):
                props["CPU_DENORMALS_OPTIMIZATION"] = True
            return OpenVinoEngine(onnx, self.threads, o.get("precision", "fp32"),
                                  properties=props, cache=cache)
        if self.backend == "onnxruntime":
            from tracker.engines.cpu import OnnxRuntimeEngine

            return OnnxRuntimeEngine(onnx, self.threads, level=o.get("level", "all"))
        raise EngineError(f"unknown tuning backend {self.backend!r}")

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "options": dict(self.options), "label": self.label}


# -- the machine --------------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "flags", "features", "cpu model") and key not in out:
            out[key] = value.strip()
    return out


def logical_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_signature() -> dict[str, Any]:
    """The CPU model, its vector/matrix instruction-set flags and the usable CPU count."""
    info = _cpuinfo()
    flags = (info.get("flags") or info.get("features") or "").split()
    return {
        "cpu": info.get("model name") or info.get("cpu model") or platform.processor()
        or platform.machine(),
        "machine": platform.machine(),
        "flags": sorted(f for f in set(flags) if _FLAG.match(f)),
        "cpus": logical_cpus(),
    }


def library_versions() -> dict[str, str | None]:
    """Versions of the inference libraries (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("openvino", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def tuning_key(model_sha256: str, threads: int | None = None) -> dict[str, Any]:
    """Everything a tuning record depends on (all must match for it to be reused)."""
    return {"format": TUNING_FORMAT, **cpu_signature(), "libraries": library_versions(),
            "model_sha256": model_sha256, "threads": threads}


def record_path(name: str, key: dict[str, Any]) -> Path:
    """The cache file of the tuning record for ``key``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("tuning") / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{digest}.json"


# -- candidates ---------------------------------------------------------------------------------


def _openvino_capabilities() -> list[str] | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    try:
        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - no usable CPU plugin
        return None


def _onnxruntime_present() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def first_round(threads: int | None = None) -> list[Candidate]:
    """Round 1: each precision this machine runs natively, at default settings."""
    t = int(threads or 1)
    out = []
    caps = _openvino_capabilities()
    if caps is not None:
        precisions = [p for p, cap in (("bf16", "BF16"), ("fp16", "FP16")) if cap in caps]
        for p in [*precisions, "fp32"]:
            out.append(Candidate("openvino", {"precision": p, "threads": t}))
    if _onnxruntime_present():
        out.append(Candidate("onnxruntime", {"threads": t, "level": "all"}))
    return out


def second_round(best: Candidate, threads: int | None = None) -> list[Candidate]:
    """Round 2: the settings worth trying around the round-1 winner."""
    o = dict(best.options)
    more = [] if threads or logical_cpus() < 2 else [2]
    if best.backend == "openvino":
        return [Candidate("openvino", {**o, "pinning": True}),
                Candidate("openvino", {**o, "hint": "THROUGHPUT"}),
                Candidate("openvino", {**o, "denormals": True}),
                *(Candidate("openvino", {**o, "threads": n}) for n in more)]
    if best.backend == "onnxruntime":
        return [Candidate("onnxruntime", {**o, "level": "extended"}),
                Candidate("onnxruntime", {**o, "level": "basic"}),
                *(Candidate("onnxruntime", {**o, "threads": n}) for n in more)]
    return []


def reference_candidate() -> Candidate:
    """What candidates are checked against: ONNX Runtime fp32 (OpenVINO fp32 without it)."""
    if _onnxruntime_present():
        return Candidate("onnxruntime", {"threads": 1, "level": "all"})
    return Candidate("openvino", {"precision": "fp32", "threads": 1})


# -- the batch plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How many faces run in which batch sizes, from measured ms per call of each size."""

    ms_per_call: dict[int, float]
    limit: int = PLAN_LIMIT
    _chunks: dict[int, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if 1 not in self.ms_per_call:
            raise ValueError("a plan needs the time of batch 1")
        sizes = sorted((s for s in self.ms_per_call if s <= self.limit), reverse=True)
        best = [0.0] * (self.limit + 1)
        first = [0] * (self.limit + 1)
        for n in range(1, self.limit + 1):
            best[n] = math.inf
            for s in sizes:  # largest first: ties keep fewer calls
                if s <= n and self.ms_per_call[s] + best[n - s] < best[n]:
                    best[n], first[n] = self.ms_per_call[s] + best[n - s], s
        for n in range(1, self.limit + 1):
            parts, m = [], n
            while m:
                parts.append(first[m])
                m -= first[m]
            self._chunks[n] = tuple(sorted(parts, reverse=True))

    def chunks(self, n: int) -> tuple[int, ...]:
        """Batch sizes that run ``n`` faces, largest first."""
        if n <= 0:
            return ()
        full, rest = divmod(n, self.limit)
        return (*(self._chunks[self.limit] * full), *(self._chunks[rest] if rest else ()))

    def ms(self, n: int) -> float:
        """Predicted ms to run ``n`` faces."""
        return sum(self.ms_per_call[s] for s in self.chunks(n))

    def sizes(self, max_faces: int) -> list[int]:
        """Every batch size used for 1..``max_faces`` faces."""
        return sorted({s for n in range(1, max(1, max_faces) + 1)
                       for s in self.chunks(min(n, self.limit))})

    def to_json(self) -> dict[str, Any]:
        return {"ms_per_call": {str(k): round(v, 4) for k, v in sorted(self.ms_per_call.items())},
                "chunks": {str(n): list(self._chunks[n]) for n in (1, 2, 3, 4, 6, 8, 16, 32, 64)
                           if n <= self.limit}}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Plan:
        return Plan({int(k): float(v) for k, v in d["ms_per_call"].items()})


def make_plan(ms_per_call: dict[int, float], limit: int = PLAN_LIMIT) -> Plan:
    """The fastest mix of measured batch sizes for every face count up to ``limit``; running
    one face at a time is always a choice, so no count costs more per face than batch 1."""
    return Plan(dict(ms_per_call), limit)


class PlannedEngine:
    """An engine whose batches run in the sizes of a :class:`Plan` (outputs concatenated)."""

    def __init__(self, engine: Engine, plan: Plan, record: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.plan = plan
        self.record = record or {}
        self.name = engine.name
        self.precision = getattr(engine, "precision", None)
        self.choice = (self.record.get("choice") or {}).get("label", engine.name)

    def _split(self, batch: np.ndarray) -> list[np.ndarray]:
        out, i = [], 0
        for s in self.plan.chunks(batch.shape[0]):
            out.append(batch[i:i + s])
            i += s
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        parts = self._split(batch)
        if len(parts) == 1:
            return self.engine.infer(parts[0])
        return np.concatenate([np.array(self.engine.infer(p), copy=True) for p in parts])

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = self._split(batch)
        if len(parts) == 1:
            return self.engine.predict(parts[0])
        outs = [self.engine.predict(p) for p in parts]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def warm_sizes(self, max_faces: int) -> list[int]:
        """The batch sizes 1..``max_faces`` faces run in."""
        return self.plan.sizes(max_faces)


# -- measuring ----------------------------------------------------------------------------------


def time_calls(runs: dict[str, Callable[[], object]], seconds: float = ROUND_S,
               min_samples: int = 7) -> dict[str, dict[str, float]]:
    """ms per call of each runner, timed in turns (rotating order) for about ``seconds``.

    A sample is one untimed call (caches warm for this runner, as when one batch size runs
    frame after frame) then about ``SAMPLE_S`` of timed calls. Returns ``p25`` (the figure
    candidates are ranked by: robust to time lost to other processes), ``p50`` and the number
    of samples."""
    if not runs:
        return {}
    per: dict[str, float] = {}
    for name, fn in runs.items():  # warm up, then estimate the cost of one call
        for _ in range(2):
            fn()
        t0 = time.perf_counter()
        fn()
        per[name] = max(time.perf_counter() - t0, 1e-6)
    reps = {n: max(1, int(SAMPLE_S / t)) for n, t in per.items()}
    lap = sum((reps[n] + 1) * per[n] for n in runs)
    laps = max(min_samples, min(60, int(seconds / max(lap, 1e-6))))
    names = list(runs)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for i in range(laps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            fn, k = runs[name], reps[name]
            fn()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) * 1e3 / k)
    return {n: {"p25": float(np.percentile(v, 25)), "p50": float(np.median(v)), "samples": len(v)}
            for n, v in samples.items()}


def point_error(points: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Mean, p99 and max distance (heatmap px) between two point sets; non-finite = inf."""
    err = np.linalg.norm(np.asarray(points, np.float64) - ref, axis=-1).ravel()
    err = np.where(np.isfinite(err), err, np.inf)
    return {"mean": round(float(err.mean()), 4), "p99": round(float(np.percentile(err, 99)), 4),
            "max": round(float(err.max()), 4)}


def _points(engine: Engine, x: np.ndarray, batch: int) -> np.ndarray:
    """Points of ``x`` run through ``engine`` in batches of ``batch`` (the last one padded by
    repeating crops, as a fixed-size graph sees them)."""
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        if len(part) < batch:
            part = np.concatenate([part, x[:batch - len(part)]])
        pts, _ = engine.predict(np.ascontiguousarray(part))
        out.append(np.array(pts[: min(batch, len(x) - i)], copy=True))
    return np.concatenate(out)


def _rank(c: dict[str, Any]) -> float:
    return (c.get("ms_per_call") or {}).get("1", math.inf) if c.get("passed") else math.inf


def _pick(rows: Sequence[dict[str, Any]], control: dict[str, Any] | None = None
          ) -> dict[str, Any] | None:
    """The fastest passing row of one round. A row with more threads than a slower one must
    beat it by THREADS_MARGIN; any row must beat ``control`` (the defaults it varies) by
    SETTINGS_MARGIN."""
    ok = sorted((c for c in rows if math.isfinite(_rank(c))), key=_rank)
    if not ok:
        return None
    best = ok[0]
    for c in ok[1:]:
        if c["candidate"].threads < best["candidate"].threads and \
                _rank(best) > _rank(c) * (1 - THREADS_MARGIN):
            best = c  # the fewer-threads one is within the margin: keep the cores free
    if control is not None and best is not control and math.isfinite(_rank(control)) and \
            _rank(best) > _rank(control) * (1 - SETTINGS_MARGIN):
        best = control
    return best


def tune(onnx: bytes, inputs: np.ndarray, *, candidates: Sequence[Candidate] | None = None,
         reference: Candidate | None = None, threads: int | None = None,
         batches: Sequence[int] = BATCHES, seconds: float = ROUND_S, source: str = "",
         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the candidates on ``inputs`` (preprocessed crops ``(N, C, S, S)``) and return
    the tuning record: every candidate's timings and accuracy, the choice and its plan.

    ``candidates`` replaces round 1 and skips round 2 (tests inject their own).
    """
    started = time.perf_counter()
    x = np.ascontiguousarray(inputs, np.float32)
    one = np.ascontiguousarray(x[:1])
    ref = reference or reference_candidate()
    ref_points = _points(ref.build(onnx), x, len(x))
    results: list[dict[str, Any]] = []
    engines: dict[int, Engine] = {}

    def run_round(cands: Sequence[Candidate], number: int) -> list[dict[str, Any]]:
        timed: dict[str, Callable[[], object]] = {}
        rows = []
        for cand in cands:
            row: dict[str, Any] = {"candidate": cand, "round": number, **cand.to_json(),
                                   "passed": False, "error": None}
            try:
                engine = cand.build(onnx)
                acc = point_error(_points(engine, x, 1), ref_points)
                row["accuracy"] = {"1": acc}
                row["passed"] = bool(acc["p99"] <= TOLERANCE_PX)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is skipped
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                rows.append(row)
                continue
            rows.append(row)
            if row["passed"]:
                engines[id(row)] = engine
                timed[str(id(row))] = (lambda e=engine: e.predict(one))
        times = time_calls(timed, seconds)
        for row in rows:
            t = times.get(str(id(row)))
            if t is not None:
                row["ms_per_call"] = {"1": round(t["p25"], 4)}
                row["ms_per_call_p50"] = {"1": round(t["p50"], 4)}
        results.extend(rows)
        if log:
            for row in rows:
                log(_describe(row))
        return rows

    first = run_round(list(candidates) if candidates is not None else first_round(threads), 1)
    winner = _pick(first)
    if candidates is None and winner is not None:
        variants = second_round(winner["candidate"], threads)
        if variants:  # the winner again, as the control timed in turns with its variants
            second = run_round([winner["candidate"], *variants], 2)
            winner = _pick(second, control=second[0]) or winner
    if winner is None:
        raise EngineError("no CPU engine passed its accuracy check: "
                          + "; ".join(_describe(r) for r in results))
    engine = engines[id(winner)]
    sizes = [b for b in batches if 1 < b <= len(x)]
    runs: dict[str, Callable[[], object]] = {"1": lambda: engine.predict(one)}
    for b in sizes:
        acc = point_error(_points(engine, x, b), ref_points)
        winner["accuracy"][str(b)] = acc
        if acc["p99"] <= TOLERANCE_PX:  # a batch size that fails is never used
            xb = np.ascontiguousarray(x[:b])
            runs[str(b)] = (lambda xb=xb: engine.predict(xb))
    times = time_calls(runs, seconds)  # batch 1 again, in turns with the others
    per_call = {int(b): t["p25"] for b, t in times.items()}
    winner["batch_ms_per_call"] = {b: round(t["p25"], 4) for b, t in times.items()}
    winner["batch_ms_per_call_p50"] = {b: round(t["p50"], 4) for b, t in times.items()}
    plan = make_plan(per_call)
    record = {
        "format": TUNING_FORMAT,
        "choice": winner["candidate"].to_json(),
        "plan": plan.to_json(),
        "reference": ref.label,
        "check_inputs": source or f"{len(x)} crops",
        "tolerance_px_p99": TOLERANCE_PX,
        "candidates": [{k: v for k, v in r.items() if k != "candidate"} for r in results],
        "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tuning_seconds": round(time.perf_counter() - started, 2),
    }
    record["_engine"] = engine  # handed to the caller, never written
    return record


def _describe(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['label']}: failed ({row['error']})"
    acc = (row.get("accuracy") or {}).get("1", {})
    ms = (row.get("ms_per_call") or {}).get("1")
    timing = f"{ms:.3f} ms" if ms is not None else "not timed"
    verdict = "passed" if row.get("passed") else "rejected"
    return f"{row['label']}: {timing}, p99 {acc.get('p99', float('nan')):.3f} px ({verdict})"


# -- the cache ----------------------------------------------------------------------------------


def read_record(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record at ``path`` when it was made for ``key``, else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != json.loads(json.dumps(key)):
        return None
    if "choice" not in record or "plan" not in record:
        return None
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically (a cache that cannot be written only costs a retune)."""
    data = {k: v for k, v in record.items() if not k.startswith("_")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass


def tuned_engine(onnx: bytes, model_sha256: str, name: str, inputs: Callable[[], tuple[np.ndarray, str]],
                 *, threads: int | None = None, retune: bool = False,
                 log: Callable[[str], None] | None = None) -> PlannedEngine:
    """The engine of the cached tuning record for this model and machine, tuning first when
    there is none (or ``retune``). ``inputs()`` gives the check crops (preprocessed) and
    their description; it is called only when tuning."""
    key = tuning_key(model_sha256, threads)
    path = record_path(name, key)
    record = None if retune else read_record(path, key)
    if record is not None:
        choice = record["choice"]
        try:
            engine = Candidate(choice["backend"], dict(choice.get("options") or {})).build(
                onnx, cache=True)
            return PlannedEngine(engine, Plan.from_json(record["plan"]),
                                 {**record, "path": str(path), "reused": True})
        except (EngineError, KeyError, ValueError, TypeError, RuntimeError):
            record = None  # the cached choice cannot be built here any more: tune again
    if log:
        log(f"measuring the CPU engines for {name} on this machine (once; cached in {path})")
    x, source = inputs()
    record = tune(onnx, x, threads=threads, source=source, log=log)
    record["key"] = key
    engine = record.pop("_engine")
    write_record(path, record)
    return PlannedEngine(engine, Plan.from_json(record["plan"]),
                         {**record, "path": str(path), "reused": False})
