"""The track stage: detector gating, rotated-ROI loop-back, temporal denoising and face ids.

Per frame:

1. Every tracked face gets its region from its own final points of the previous frame: a square
   ``roi_scale`` times the face (the larger side of its landmarks' upright box), rotated so the
   eye line is level. The default 1.25 is the crop the model was trained on; 1.5 (MediaPipe's
   enlargement) cost the RCN 35 % more error on the synthetic video benchmark. The region can
   be moved ahead by ``motion`` times the face's last per-frame displacement (off by default:
   it fed noise back and did not lower the error). While the new region differs from the last
   one by less than ``roi_hold`` (centre shift and size change relative to its side, angle in
   radians) the last one is kept: a still face keeps an identical crop, so point noise is not
   fed back into the next crop (synthetic benchmark: raw jitter 0.98 -> 0.59 % of the
   inter-ocular distance for the RCN alone, 0.97 -> 0.25 % with the temporal model). The
   landmark model sees an upright crop; points come back through the crop's inverse affine.
2. The detector runs only when fewer than ``max_faces`` faces are tracked (every
   ``search_every`` frames once a run has left a slot free, until a face is lost), every
   ``rescan_every`` frames, or on a scene cut (the frame's 32x18 thumbnail changed by more than
   ``cut_threshold`` grey levels on average): a cut drops every tracked face at once (the old
   shot's faces are stale) and the detector starts afresh. Detections overlapping a tracked face
   (IoU of boxes) confirm it; the others fill the free slots, best score first. A new face is
   located once on the detector's box and once more on the upright ROI of that first result.
3. Faces whose presence (mean point confidence) falls below ``presence_threshold`` are lost.
4. The optional temporal denoiser corrects each face's points from its two previous final
   point sets (see :mod:`tracker.temporal.denoiser`); its output is the face's final points.

Ids: a new face gets the next unused id, except that a face appearing within
``discard_after`` frames of losing one, near where that one was lost (centre within 1.5 face
sizes, size within 2x), takes the lost face's id back. ``discard_after = 0`` never reuses ids,
and no id survives a scene cut.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from tracker.detect.detectors import DetectorConfig
from tracker.geometry import MARGIN, box_from_points, rotated_roi, square_box
from tracker.runtime.pipeline import Stage
from tracker.types import Box, Frame, Landmarks, TrackedFrame

if TYPE_CHECKING:
    from tracker.temporal.denoiser import TemporalDenoiser

CUT_THUMB = (32, 18)


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """Detector gating, crop placement and face ids of :class:`TrackStage` (the ``[track]``
    config section; ``temporal`` and ``temporal_weights`` choose the denoiser it is given)."""

    max_faces: int = 1  # faces tracked at once
    rescan_every: int = 30  # rerun the detector every N frames (0 = only when faces are missing)
    # while a slot is free, a detector run that left one free is repeated only every N frames
    # (a newcomer waits at most N - 1 frames) until a tracked face is lost or the shot cuts;
    # 1 = every frame
    search_every: int = 3
    presence_threshold: float = 0.17  # drop faces whose presence is below this (default model)
    iou_threshold: float = 0.3  # detections overlapping a track by more keep its id
    roi_scale: float = MARGIN  # next frame's crop: this many face sizes (default: the trained crop)
    discard_after: int = 30  # a face lost this many frames ago or less can get its id back
    motion: float = 0.0  # move the crop ahead by this many times the face's last displacement
    roi_hold: float = 0.03  # keep the last crop while the new one differs by less (0 = never)
    cut_threshold: float = 20.0  # scene cut: thumbnail changed by more grey levels (0 = off)
    # a face tracked with a presence below this is weak: the detector runs every
    # ``weak_rescan_every`` frames while it is, and a detection no tracked face covers takes the
    # place of the weakest uncovered one (a crop that slid off the face in fast motion can hold
    # there just above presence_threshold); 0 = off
    weak_presence: float = 0.30  # chosen on train-select clips (README "Tracking and smoothing")
    weak_rescan_every: int = 5
    temporal: bool = True  # temporal denoising keypoint model (when its weights exist)
    temporal_weights: str | None = None  # None = tracker/weights/temporal_dkm.npz


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]: ...


class Prediction(Protocol):
    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class Landmarker(Protocol):
    def predict(self, image: np.ndarray, boxes: Sequence[Box],
                angles: Sequence[float] | None = None) -> Sequence[Prediction]: ...


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def associate(
    tracked: Sequence[tuple[int, Box]], detections: Sequence[Box], threshold: float
) -> tuple[dict[int, Box], list[Box]]:
    """Greedy IoU matching: ``({face_id: detection}, unmatched detections)``."""
    pairs = sorted(
        ((iou(box, det), fid, j) for fid, box in tracked for j, det in enumerate(detections)),
        key=lambda p: -p[0],
    )
    matched: dict[int, Box] = {}
    used: set[int] = set()
    for score, fid, j in pairs:
        if score < threshold or score <= 0.0:
            break
        if fid in matched or j in used:
            continue
        matched[fid] = detections[j]
        used.add(j)
    return matched, [d for j, d in enumerate(detections) if j not in used]


@dataclass(frozen=True, slots=True)
class Roi:
    """A square crop region: centre and side in frame pixels, rotation in radians."""

    center: tuple[float, float]
    side: float
    angle: float = 0.0

    @property
    def box(self) -> Box:
        """The face box whose standard crop is this square (what the landmarker is given)."""
        return square_box(self.center, self.side)

    def face_box(self, scale: float) -> Box:
        """Axis-aligned box of the face inside (side / ``scale``), for overlap tests."""
        half = 0.5 * self.side / scale
        cx, cy = self.center
        return Box(cx - half, cy - half, cx + half, cy + half)


@dataclass(slots=True)
class _Track:
    face_id: int
    points: np.ndarray  # final points of the last frame (frame pixels)
    history: list[np.ndarray] = field(default_factory=list)  # final points, newest first
    velocity: tuple[float, float] = (0.0, 0.0)  # ROI centre displacement per frame
    roi: Roi | None = None  # region used in the last frame
    upright: tuple[tuple[float, float], float, float] | None = None  # rotated_roi(points, 1)
    presence: float = 1.0  # the landmarker's presence in the last frame
    reseated: bool = False  # this frame's region is a detection's, not the last points'

    def upright_roi(self) -> tuple[tuple[float, float], float, float]:
        """``rotated_roi(points, 1.0)`` of the last points (computed once per frame)."""
        if self.upright is None:
            self.upright = rotated_roi(self.points, 1.0)
        return self.upright


@dataclass(frozen=True, slots=True)
class _Lost:
    face_id: int
    box: Box
    frame: int


@dataclass(frozen=True, slots=True)
class TrackStats:
    """Counters of a track stage."""

    frames: int
    frames_with_faces: int
    faces_found: int  # distinct face ids that appeared in the output
    detector_runs: int
    cuts: int = 0  # scene cuts seen


def accepts_angles(landmarker: Any) -> bool:
    """Whether ``landmarker.predict`` takes the ROI angles (older models take boxes only)."""
    try:
        params = inspect.signature(landmarker.predict).parameters
    except (TypeError, ValueError):
        return True
    return "angles" in params or any(p.kind is p.VAR_POSITIONAL for p in params.values())


class TrackStage(Stage):
    """Frame -> TrackedFrame, with the detector, landmarker and denoiser injected; ``options``
    sets the gating, crops and ids (``temporal``/``temporal_weights`` are not read here)."""

    name = "track"

    def __init__(
        self,
        detector: Detector,
        landmarker: Landmarker,
        options: TrackConfig = TrackConfig(),
        *,
        min_score: float = DetectorConfig().min_score,
        denoiser: TemporalDenoiser | None = None,
    ) -> None:
        """``min_score``: detections scoring below it are ignored (``detector.min_score``)."""
        if options.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {options.max_faces}")
        if options.roi_scale <= 0:
            raise ValueError(f"roi_scale must be > 0, got {options.roi_scale}")
        self.detector = detector
        self.landmarker = landmarker
        self.options = options
        self.min_score = min_score
        self.denoiser = denoiser
        self._angles = accepts_angles(landmarker)
        self._tracks: list[_Track] = []
        self._lost: list[_Lost] = []
        self._next_id = 0
        self._since_detect = 0
        self._searched = False  # the last detector run left a slot free; no face lost since
        self._thumb: np.ndarray | None = None
        self._frames = 0
        self._frames_with_faces = 0
        self._detector_runs = 0
        self._cuts = 0
        self._seen_ids: set[int] = set()
        self.detected = False  # whether the detector ran on the last frame

    @property
    def stats(self) -> TrackStats:
        return TrackStats(self._frames, self._frames_with_faces, len(self._seen_ids),
                          self._detector_runs, self._cuts)

    # -- regions ------------------------------------------------------------------------------

    def roi_of(self, track: _Track) -> Roi:
        """Next frame's region of a tracked face (rotated, enlarged, motion-predicted)."""
        o = self.options
        center, extent, angle = track.upright_roi()
        side = o.roi_scale * extent  # == rotated_roi(track.points, o.roi_scale)[1]
        vx, vy = track.velocity
        center = (center[0] + o.motion * vx, center[1] + o.motion * vy)
        old, h = track.roi, o.roi_hold
        if old is not None and h > 0:
            moved = math.dist(center, old.center) / old.side
            if moved < h and abs(side / old.side - 1) < h and abs(angle - old.angle) < h:
                return old  # a still face keeps its crop: no feedback of point noise
        return Roi(center, side, angle)

    @staticmethod
    def roi_of_detection(box: Box) -> Roi:
        """Upright region of a detector box (the standard crop of a landmark box)."""
        return Roi(box.center, MARGIN * max(box.width, box.height, 1.0), 0.0)

    def _is_cut(self, image: np.ndarray) -> bool:
        if self.options.cut_threshold <= 0:
            return False
        # area-average a strided sample about twice the thumbnail's size (a full-frame
        # INTER_AREA resize cost ~0.13 ms a 640x360 frame; this ~0.01 ms)
        h, w = image.shape[:2]
        step = max(1, min(h // (2 * CUT_THUMB[1]), w // (2 * CUT_THUMB[0])))
        small = cv2.resize(image[::step, ::step], CUT_THUMB,
                           interpolation=cv2.INTER_AREA).astype(np.int16)
        prev, self._thumb = self._thumb, small
        if prev is None or prev.shape != small.shape:
            return False
        return float(np.abs(small - prev).mean()) > self.options.cut_threshold

    def _needs_detection(self, cut: bool) -> bool:
        o = self.options
        if cut:
            return True
        if len(self._tracks) < o.max_faces and (
                not self._searched or self._since_detect >= max(1, o.search_every)):
            return True
        if self._weak() and self._since_detect >= max(1, o.weak_rescan_every):
            return True
        return o.rescan_every > 0 and self._since_detect >= o.rescan_every

    # -- per frame ----------------------------------------------------------------------------

    def _plan(self, image: np.ndarray, cut: bool) -> list[tuple[_Track | None, Roi, Box | None]]:
        """This frame's ``(track or None for a new face, region, detection)`` list."""
        if cut:  # a new shot: every tracked face is stale, ids start afresh
            self._tracks = []
            self._lost.clear()
        plan: list[tuple[_Track | None, Roi, Box | None]] = [
            (t, self.roi_of(t), None) for t in self._tracks
        ]
        self.detected = self._needs_detection(cut)
        if not self.detected:
            self._since_detect += 1
            return plan
        self._detector_runs += 1
        self._since_detect = 1
        found = [d for d in self.detector.detect(image) if d.score >= self.min_score]
        found.sort(key=lambda d: -d.score)
        tracked = [(i, roi.face_box(self.options.roi_scale)) for i, (_, roi, _) in enumerate(plan)]
        matched, new = associate(tracked, found, self.options.iou_threshold)
        free = max(0, self.options.max_faces - len(plan))
        for det in new[:free]:
            plan.append((None, self.roi_of_detection(det), det))
        # a weak face no detection covers moves to a detection left over (same id, no history)
        weak = sorted((i for i in self._weak() if i not in matched),
                      key=lambda i: self._tracks[i].presence)
        for i, det in zip(weak, new[free:], strict=False):
            track = self._tracks[i]
            track.history, track.upright, track.reseated = [], None, True
            plan[i] = (track, self.roi_of_detection(det), det)
        return plan

    def _weak(self) -> list[int]:
        """Indices (into ``self._tracks``) of the faces tracked with a weak presence."""
        below = self.options.weak_presence
        return [i for i, t in enumerate(self._tracks) if t.presence < below] if below > 0 else []

    def _predict(self, image: np.ndarray, rois: Sequence[Roi]) -> Sequence[Prediction]:
        boxes = [r.box for r in rois]
        if self._angles:
            return self.landmarker.predict(image, boxes, [r.angle for r in rois])
        return self.landmarker.predict(image, boxes)

    def process(self, item: Frame) -> TrackedFrame:
        self._frames += 1
        cut = self._is_cut(item.image)
        self._cuts += int(cut)
        plan = self._plan(item.image, cut)
        preds = list(self._predict(item.image, [roi for _, roi, _ in plan])) if plan else []
        refine = [i for i, (t, _, _) in enumerate(plan)
                  if (t is None or t.reseated)
                  and preds[i].presence >= self.options.presence_threshold
                  and np.isfinite(preds[i].points).all()]
        if refine:  # new faces: once more on the upright ROI of the first estimate
            rois = [Roi(*rotated_roi(preds[i].points, self.options.roi_scale)) for i in refine]
            for i, roi, p in zip(refine, rois, self._predict(item.image, rois), strict=True):
                plan[i] = (plan[i][0], roi, plan[i][2])
                preds[i] = p
        kept: list[tuple[_Track | None, Roi, np.ndarray, Prediction]] = []
        lost = False
        for (track, roi, _), p in zip(plan, preds, strict=True):
            ok = p.presence >= self.options.presence_threshold and np.isfinite(p.points).all()
            if not ok:
                if track is not None:
                    self._lose(track, item.index)
                    lost = True
                continue
            points = np.asarray(p.points, np.float32)
            if self.denoiser is not None:
                history = track.history if track is not None else []
                points = self.denoiser.refine(points, np.asarray(p.confidence, np.float32),
                                              history, roi.center, roi.side, roi.angle)
            kept.append((track, roi, points, p))
        faces = self._update(self._dedupe(kept), item)
        if lost:  # search again at once: the face may be found a frame later
            self._searched = False
        elif self.detected:
            self._searched = len(self._tracks) < self.options.max_faces
        if faces:
            self._frames_with_faces += 1
            self._seen_ids.update(f.face_id for f in faces)
        return TrackedFrame(item, tuple(faces))

    def _dedupe(self, kept: list[tuple[_Track | None, Roi, np.ndarray, Prediction]]
                ) -> list[tuple[_Track | None, Roi, np.ndarray, Prediction]]:
        """Two regions that converged on one face: the older track keeps it."""
        if len(kept) < 2:
            return kept
        order = sorted(kept, key=lambda k: (k[0] is None, k[0].face_id if k[0] else 0))
        out: list[tuple[_Track | None, Roi, np.ndarray, Prediction]] = []
        for entry in order:
            box = box_from_points(entry[2])
            if all(iou(box, box_from_points(o[2])) < 0.5 for o in out):
                out.append(entry)
        return out

    def _update(self, kept: list[tuple[_Track | None, Roi, np.ndarray, Prediction]],
                item: Frame) -> list[Landmarks]:
        tracks: list[_Track] = []
        faces: list[Landmarks] = []
        for track, roi, points, p in kept:
            if track is None:
                track = _Track(self._new_id(points, item.index), points)
            elif track.reseated:  # moved to a detection: its old points say nothing of motion
                track.points, track.velocity, track.reseated = points, (0.0, 0.0), False
            else:
                old = track.upright_roi()[0]
                upright = rotated_roi(points, 1.0)
                new = upright[0]
                track.velocity = (new[0] - old[0], new[1] - old[1])
                track.history = [points, *track.history[:1]]
                track.points = points
                track.upright = upright
            if not track.history:
                track.history = [points]
            track.roi = roi
            track.presence = float(p.presence)
            tracks.append(track)
            faces.append(Landmarks(
                frame_index=item.index, time=item.time, face_id=track.face_id, points=points,
                confidence=np.asarray(p.confidence, np.float32), presence=float(p.presence),
                box=box_from_points(points),
            ))
        self._tracks = sorted(tracks, key=lambda t: t.face_id)
        return sorted(faces, key=lambda f: f.face_id)

    # -- ids ----------------------------------------------------------------------------------

    def _lose(self, track: _Track, frame_index: int) -> None:
        if self.options.discard_after > 0:
            self._lost.append(_Lost(track.face_id, box_from_points(track.points), frame_index))

    def _new_id(self, points: np.ndarray, frame_index: int) -> int:
        """A lost id that fits (recent, near, similar size), else the next unused one."""
        self._lost = [x for x in self._lost if frame_index - x.frame <= self.options.discard_after]
        active = {t.face_id for t in self._tracks}
        box = box_from_points(points)
        size = max(box.width, box.height, 1.0)
        best, best_d = None, math.inf
        for lost in self._lost:
            if lost.face_id in active:
                continue
            lsize = max(lost.box.width, lost.box.height, 1.0)
            d = math.dist(box.center, lost.box.center)
            if d <= 1.5 * max(size, lsize) and 0.5 <= size / lsize <= 2.0 and d < best_d:
                best, best_d = lost, d
        if best is not None:
            self._lost.remove(best)
            return best.face_id
        fid = self._next_id
        self._next_id += 1
        return fid

