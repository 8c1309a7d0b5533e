"""What the websocket server sends besides JSON: preview JPEGs and the browser demo's files."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tracker.types import Box, TrackedFrame

DEMO_DIR = Path(__file__).resolve().parent / "demo"
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def preview_jpeg(tracked: TrackedFrame, width: int, quality: int) -> tuple[dict[str, Any], bytes]:
    """``(header, jpeg)``: the annotated frame scaled to at most ``width`` pixels wide."""
    from tracker.outputs.render import annotate

    image = tracked.frame.image
    h, w = image.shape[:2]
    s = min(1.0, width / w) if w else 1.0
    faces = tracked.faces
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        faces = tuple(
            replace(f, points=np.asarray(f.points, np.float32) * s,
                    box=Box(f.box.x0 * s, f.box.y0 * s, f.box.x1 * s, f.box.y1 * s, f.box.score))
            for f in faces
        )
    drawn = annotate(image, TrackedFrame(tracked.frame, faces), radius=1)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    header = {"type": "preview", "frame": int(tracked.frame.index),
              "time": round(t, 6) if math.isfinite(t := float(tracked.frame.time)) else 0.0,
              "width": int(drawn.shape[1]), "height": int(drawn.shape[0]), "scale": round(s, 6)}
    return header, buf.tobytes()


def load_demo(folder: Path) -> dict[str, tuple[str, bytes]]:
    """The demo page's files by name (read once; only these names are ever served).

    Raises FileNotFoundError when ``folder`` has no index.html.
    """
    index = folder / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"demo page not found at {index}")
    return {
        p.name: (_CONTENT_TYPES[p.suffix], p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in _CONTENT_TYPES
    }
