"""The track stage: detector gating, ROI loop-back and face ids.

Per frame: the detector runs when fewer faces are tracked than ``max_faces`` or every
``rescan_every`` frames; otherwise each tracked face's box is the tight box of its landmarks in
the previous frame. The landmarker predicts every box at once; faces whose presence falls below
the threshold are dropped (and so re-detected on the next frame). Detections keep the id of the
tracked face they overlap (greedy IoU); new faces get fresh ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tracker.pipeline import Stage
from tracker.roi import box_from_points
from tracker.types import Box, Frame, Landmarks, TrackedFrame

if TYPE_CHECKING:
    from tracker.config import Config


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]: ...


class Prediction(Protocol):
    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class Landmarker(Protocol):
    def predict(self, image: np.ndarray, boxes: Sequence[Box]) -> Sequence[Prediction]: ...


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
class TrackStats:
    """Counters of a track stage."""

    frames: int
    frames_with_faces: int
    faces_found: int  # distinct face ids that appeared in the output
    detector_runs: int


class TrackStage(Stage):
    """Frame -> TrackedFrame, with the detector and landmarker injected."""

    name = "track"

    def __init__(
        self,
        detector: Detector,
        landmarker: Landmarker,
        *,
        max_faces: int = 1,
        rescan_every: int = 30,
        presence_threshold: float = 0.2,
        iou_threshold: float = 0.3,
        min_score: float = 0.0,
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.detector = detector
        self.landmarker = landmarker
        self.max_faces = max_faces
        self.rescan_every = rescan_every
        self.presence_threshold = presence_threshold
        self.iou_threshold = iou_threshold
        self.min_score = min_score
        self._faces: list[Landmarks] = []
        self._next_id = 0
        self._since_detect = 0
        self._frames = 0
        self._frames_with_faces = 0
        self._detector_runs = 0
        self._seen_ids: set[int] = set()

    @property
    def stats(self) -> TrackStats:
        return TrackStats(
            self._frames, self._frames_with_faces, len(self._seen_ids), self._detector_runs
        )

    def _needs_detection(self) -> bool:
        if len(self._faces) < self.max_faces:
            return True
        return self.rescan_every > 0 and self._since_detect >= self.rescan_every

    def _boxes(self, image: np.ndarray) -> list[tuple[int, Box]]:
        """This frame's ``(face_id, box)`` list, at most ``max_faces`` long."""
        tracked = [(f.face_id, box_from_points(f.points)) for f in self._faces]
        if not self._needs_detection():
            self._since_detect += 1
            return tracked
        self._detector_runs += 1
        self._since_detect = 1
        found = [d for d in self.detector.detect(image) if d.score >= self.min_score]
        found.sort(key=lambda d: -d.score)
        matched, new = associate(tracked, found, self.iou_threshold)
        # matched tracks take the detector's box; unmatched tracks keep their landmark box
        # (presence decides whether they are still faces); new faces fill the free slots.
        boxes = [(fid, matched.get(fid, box)) for fid, box in tracked]
        # new faces get provisional ids -1, -2, ... (made real only if they pass presence)
        for k, det in enumerate(new[: max(0, self.max_faces - len(boxes))]):
            boxes.append((-1 - k, det))
        return boxes

    def process(self, item: Frame) -> TrackedFrame:
        self._frames += 1
        boxes = self._boxes(item.image)
        faces: list[Landmarks] = []
        if boxes:
            preds = self.landmarker.predict(item.image, [b for _, b in boxes])
            for (fid, _), p in zip(boxes, preds, strict=True):
                if not p.presence >= self.presence_threshold:
                    continue
                faces.append(
                    Landmarks(
                        frame_index=item.index,
                        time=item.time,
                        face_id=fid,
                        points=p.points,
                        confidence=p.confidence,
                        presence=float(p.presence),
                        box=p.box,
                    )
                )
        faces = self._assign_ids(self._dedupe(faces))
        self._faces = faces
        if faces:
            self._frames_with_faces += 1
            self._seen_ids.update(f.face_id for f in faces)
        return TrackedFrame(item, tuple(faces))

    def _assign_ids(self, faces: list[Landmarks]) -> list[Landmarks]:
        """Give surviving new faces (provisional negative ids) the next free ids."""
        out = []
        for face in faces:
            if face.face_id < 0:
                face = replace(face, face_id=self._next_id)
                self._next_id += 1
            out.append(face)
        return sorted(out, key=lambda f: f.face_id)

    def _dedupe(self, faces: list[Landmarks]) -> list[Landmarks]:
        """Two tracks that converged on one face: keep the older id (tracked before new)."""
        kept: list[Landmarks] = []
        for face in sorted(faces, key=lambda f: (f.face_id < 0, abs(f.face_id))):
            box = box_from_points(face.points)
            if all(iou(box, box_from_points(k.points)) < 0.5 for k in kept):
                kept.append(face)
        return kept


def create_track_stage(cfg: Config) -> TrackStage:
    """A track stage with the configured detector and landmark engine (loads the models)."""
    from tracker.detect import create_detector
    from tracker.landmarker import load_landmarker

    detector = create_detector(cfg.detector.name)
    landmarker = load_landmarker(cfg.model.weights, cfg.model.engine)
    t = cfg.track
    return TrackStage(
        detector,
        landmarker,
        max_faces=t.max_faces,
        rescan_every=t.rescan_every,
        presence_threshold=t.presence_threshold,
        iou_threshold=t.iou_threshold,
        min_score=cfg.detector.min_score,
    )
