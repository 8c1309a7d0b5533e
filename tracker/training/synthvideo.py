"""Synthetic videos with exact landmark ground truth, made from labelled stills.

A clip moves one still (face and its surroundings, feathered at the edges) over a static
background along a smooth random similarity trajectory made of segments:

``still`` (no motion), ``slow``, ``fast`` (with motion blur: the shutter is averaged over
sub-frame positions), ``occluded`` (still, while an occluder sweeps across the face),
``exit`` (the face leaves the frame and comes back), ``jump`` (between two frames the face
moves :data:`JUMP` face sizes at once, then stays still: the step response of a tracker) and
``drift`` (a slow steady sway, :data:`DRIFT` face sizes per second, as a seated person's).
Each frame then gets camera noise; the clip is H.264-encoded and decoded again by the caller
if it wants compression (:func:`write_clip`). Ground-truth points follow the same transforms
exactly (at the middle of the shutter).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from tracker.geometry import box_from_points, transform_points
from tracker.io.pts import Sample

SEGMENTS = ("still", "slow", "fast", "occluded", "exit", "jump", "drift")
JUMP = 0.25  # face sizes a ``jump`` segment moves the face by, on its first frame
DRIFT = (0.05, 0.2)  # face sizes per second of a ``drift`` segment (uniform in this range)
# default plan: (segment, frames)
PLAN: tuple[tuple[str, int], ...] = (
    ("still", 30), ("slow", 30), ("fast", 20), ("still", 20), ("occluded", 24), ("slow", 20),
    ("exit", 30), ("still", 20),
)


@dataclass(frozen=True)
class ClipTruth:
    """Per-frame ground truth of a clip (F frames)."""

    points: np.ndarray  # (F, 68, 2) frame pixels
    segment: np.ndarray  # (F,) index into SEGMENTS
    segment_start: np.ndarray  # (F,) frame index where this frame's segment began
    visible: np.ndarray  # (F,) fraction of points inside the frame
    occluded: np.ndarray  # (F, 68) point under the occluder
    fps: float


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    angle: float  # radians
    size: float  # face size in pixels


def _ease(a: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * min(max(a, 0.0), 1.0))


def _lerp(p: _Pose, q: _Pose, a: float) -> _Pose:
    e = _ease(a)
    return _Pose(p.cx + e * (q.cx - p.cx), p.cy + e * (q.cy - p.cy),
                 p.angle + e * (q.angle - p.angle), p.size * (q.size / p.size) ** e)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A face-free static background: smooth colour field plus some texture (float32 RGB)."""
    cells = rng.uniform(30, 220, (4, 6, 3)).astype(np.float32)
    cells = 0.4 * cells + 0.6 * cells.mean(axis=2, keepdims=True)  # muted colours
    low = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 14, (height // 8, width // 8)).astype(np.float32)
    mid = cv2.resize(grain, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    return np.clip(low + mid, 0, 255).astype(np.float32)


class ClipMaker:
    """Renders one clip for one still; ``frames()`` yields RGB uint8 frames."""

    def __init__(self, sample: Sample, rng: np.random.Generator, width: int = 480,
                 height: int = 270, fps: float = 30.0,
                 plan: tuple[tuple[str, int], ...] = PLAN, noise: float = 2.5) -> None:
        self.sample = sample
        self.rng = rng
        self.width, self.height, self.fps, self.noise = width, height, fps, noise
        self.bg = background(rng, width, height)
        box = box_from_points(sample.points)
        self.face_size = max(box.width, box.height, 1.0)
        self.face_center = np.array(box.center)
        h, w = sample.image.shape[:2]
        mask = np.zeros((h, w), np.float32)
        border = max(2, int(0.06 * min(h, w)))
        mask[border:-border, border:-border] = 1.0
        self.mask = cv2.GaussianBlur(mask, (0, 0), border / 2)[..., None]
        self.poses, self.segments, self.starts = self._trajectory(plan)
        self.occluder = self._occluder()

    # -- trajectory ---------------------------------------------------------------------------

    def _random_pose(self, around: _Pose, shift: float, rot_deg: float, zoom: float) -> _Pose:
        r = self.rng
        margin = 0.6 * around.size
        cx = float(np.clip(around.cx + r.uniform(-shift, shift) * around.size, margin,
                           self.width - margin))
        cy = float(np.clip(around.cy + r.uniform(-shift, shift) * around.size, margin,
                           self.height - margin))
        angle = float(np.clip(around.angle + math.radians(r.uniform(-rot_deg, rot_deg)),
                              -0.6, 0.6))
        lo = min(60.0, 0.3 * self.height)
        size = float(np.clip(around.size * math.exp(r.uniform(-zoom, zoom)), lo, 0.55 * self.height))
        return _Pose(cx, cy, angle, size)

    def _jumped(self, pose: _Pose) -> _Pose:
        """``pose`` moved :data:`JUMP` face sizes in a random direction (the opposite one
        where the first would leave the frame)."""
        phi = self.rng.uniform(0, 2 * math.pi)
        margin = 0.6 * pose.size
        for sign in (1.0, -1.0):
            cx = pose.cx + sign * JUMP * pose.size * math.cos(phi)
            cy = pose.cy + sign * JUMP * pose.size * math.sin(phi)
            if margin <= cx <= self.width - margin and margin <= cy <= self.height - margin:
                break
        cx = float(np.clip(cx, margin, self.width - margin))
        cy = float(np.clip(cy, margin, self.height - margin))
        return _Pose(cx, cy, pose.angle, pose.size)

    def _drift(self, pose: _Pose, n: int) -> list[_Pose]:
        """``n`` frames of steady motion at a :data:`DRIFT` speed, in a random direction (the
        opposite one where the first would leave the frame)."""
        step = self.rng.uniform(*DRIFT) * pose.size / self.fps
        phi = self.rng.uniform(0, 2 * math.pi)
        margin = 0.6 * pose.size
        dx, dy = step * math.cos(phi), step * math.sin(phi)
        end_x, end_y = pose.cx + n * dx, pose.cy + n * dy
        if not (margin <= end_x <= self.width - margin and margin <= end_y <= self.height - margin):
            dx, dy = -dx, -dy
        return [_Pose(float(np.clip(pose.cx + (i + 1) * dx, margin, self.width - margin)),
                      float(np.clip(pose.cy + (i + 1) * dy, margin, self.height - margin)),
                      pose.angle, pose.size) for i in range(n)]

    def _trajectory(self, plan: tuple[tuple[str, int], ...]
                    ) -> tuple[list[_Pose], list[int], list[int]]:
        r = self.rng
        size = r.uniform(min(70, 0.3 * self.height), min(150, 0.5 * self.height))
        pose = _Pose(self.width / 2 + r.uniform(-0.2, 0.2) * self.width,
                     self.height / 2 + r.uniform(-0.1, 0.1) * self.height,
                     math.radians(r.uniform(-10, 10)), size)
        poses: list[_Pose] = []
        segs: list[int] = []
        starts: list[int] = []
        for name, n in plan:
            start = len(poses)
            if name in ("still", "occluded"):
                path = [pose] * n
            elif name == "slow":
                end = self._random_pose(pose, 0.8, 12, 0.15)
                path = [_lerp(pose, end, (i + 1) / n) for i in range(n)]
                pose = end
            elif name == "fast":
                end = self._random_pose(pose, 2.5, 25, 0.3)
                path = [_lerp(pose, end, (i + 1) / n) for i in range(n)]
                pose = end
            elif name == "jump":
                pose = self._jumped(pose)
                path = [pose] * n
            elif name == "drift":
                path = self._drift(pose, n)
                pose = path[-1]
            elif name == "exit":
                out_x = -0.9 * pose.size if pose.cx < self.width / 2 else self.width + 0.9 * pose.size
                gone = _Pose(out_x, pose.cy, pose.angle, pose.size)
                k = n // 3
                path = ([_lerp(pose, gone, (i + 1) / k) for i in range(k)] + [gone] * (n - 2 * k)
                        + [_lerp(gone, pose, (i + 1) / k) for i in range(k)])
            else:
                raise ValueError(f"unknown segment {name!r}")
            poses += path
            segs += [SEGMENTS.index(name)] * n
            starts += [start] * n
        return poses, segs, starts

    def _occluder(self) -> tuple[np.ndarray, np.ndarray]:
        """Texture and alpha of the occluder (a hand-sized blob of another image)."""
        s = 256
        alpha = np.zeros((s, s), np.float32)
        cv2.ellipse(alpha, (s // 2, s // 2), (s // 2 - 8, s // 3), 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 3)[..., None]
        colour = self.rng.integers(60, 220, 3).astype(np.float32)
        tex = np.clip(colour + self.rng.normal(0, 12, (s, s, 3)), 0, 255).astype(np.float32)
        return tex, alpha

    # -- rendering ----------------------------------------------------------------------------

    def affine(self, pose: _Pose) -> np.ndarray:
        """2x3 still -> frame affine of a pose."""
        k = pose.size / self.face_size
        c, s = math.cos(pose.angle) * k, math.sin(pose.angle) * k
        fx, fy = self.face_center
        return np.array([[c, -s, pose.cx - (c * fx - s * fy)],
                         [s, c, pose.cy - (s * fx + c * fy)]])

    def _pose_at(self, t: float) -> _Pose:
        i = min(max(t, 0.0), len(self.poses) - 1.0)
        lo = int(math.floor(i))
        hi = min(lo + 1, len(self.poses) - 1)
        a = i - lo
        p, q = self.poses[lo], self.poses[hi]
        return _Pose(p.cx + a * (q.cx - p.cx), p.cy + a * (q.cy - p.cy),
                     p.angle + a * (q.angle - p.angle), p.size + a * (q.size - p.size))

    def _render(self, pose: _Pose) -> np.ndarray:
        m = self.affine(pose)
        size = (self.width, self.height)
        fg = cv2.warpAffine(self.sample.image.astype(np.float32), m, size, flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(self.mask, m, size, flags=cv2.INTER_LINEAR)[..., None]
        return fg * a + self.bg * (1 - a)

    def _occluder_affine(self, i: int) -> np.ndarray | None:
        """Occluder placement in frame ``i`` (sweeps across the face), or None."""
        if SEGMENTS[self.segments[i]] != "occluded":
            return None
        start = self.starts[i]
        n = sum(1 for s in self.starts if s == start)
        a = (i - start + 0.5) / n
        pose = self.poses[i]
        width = 0.9 * pose.size
        x = pose.cx + (2.0 * a - 1.0) * 1.2 * pose.size
        y = pose.cy + 0.1 * pose.size
        k = width / 256
        return np.array([[k, 0, x - 128 * k], [0, k, y - 128 * k]])

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``i`` (RGB uint8), its true points and the occluded-point mask."""
        pose = self.poses[i]
        if SEGMENTS[self.segments[i]] == "fast":
            img = np.mean([self._render(self._pose_at(i + d)) for d in np.linspace(-0.4, 0.4, 5)],
                          axis=0)
        else:
            img = self._render(pose)
        pts = transform_points(self.affine(pose), self.sample.points)
        occluded = np.zeros(len(pts), bool)
        om = self._occluder_affine(i)
        if om is not None:
            tex, alpha = self.occluder
            size = (self.width, self.height)
            a = cv2.warpAffine(alpha, om, size)[..., None]
            img = cv2.warpAffine(tex, om, size) * a + img * (1 - a)
            inv = cv2.invertAffineTransform(om)
            local = np.round(transform_points(inv, pts)).astype(int)
            inside = ((local >= 0) & (local < 256)).all(1)
            occluded[inside] = alpha[local[inside, 1], local[inside, 0], 0] > 0.5
        if self.noise > 0:
            img = img + self.rng.normal(0, self.noise, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8), pts, occluded

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for i in range(len(self.poses)):
            yield self.frame(i)

    def truth(self, points: list[np.ndarray], occluded: list[np.ndarray]) -> ClipTruth:
        pts = np.stack(points)
        inside = ((pts[..., 0] >= 0) & (pts[..., 0] <= self.width - 1)
                  & (pts[..., 1] >= 0) & (pts[..., 1] <= self.height - 1))
        return ClipTruth(pts.astype(np.float32), np.array(self.segments), np.array(self.starts),
                         inside.mean(1), np.stack(occluded), self.fps)


def write_clip(maker: ClipMaker, path: str | Path, crf: int = 26) -> ClipTruth:
    """Render a clip to an H.264 .mp4 (real compression) and return its ground truth."""
    import av

    rate = Fraction(maker.fps).limit_denominator(1001)
    points, occluded = [], []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = maker.width, maker.height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf), "bframes": "0"}
        for i, (img, pts, occ) in enumerate(maker.frames()):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
            points.append(pts)
            occluded.append(occ)
        for packet in stream.encode():
            out.mux(packet)
    return maker.truth(points, occluded)


def save_truth(truth: ClipTruth, path: str | Path) -> None:
    np.savez(path, points=truth.points, segment=truth.segment, segment_start=truth.segment_start,
             visible=truth.visible, occluded=truth.occluded, fps=np.float64(truth.fps))


def load_truth(path: str | Path) -> ClipTruth:
    with np.load(path) as z:
        return ClipTruth(z["points"], z["segment"], z["segment_start"], z["visible"],
                         z["occluded"], float(z["fps"]))
