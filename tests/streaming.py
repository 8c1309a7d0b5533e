"""Helpers for websocket tests: synthetic tracked frames and a started server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from websockets.asyncio.client import ClientConnection

from tracker.outputs.headpose import FACE_MODEL_68, project, rotation_from_angles
from tracker.serve.protocol import SourceMeta
from tracker.serve.server import StreamOptions, StreamServer
from tracker.types import Box, Frame, Landmarks, TrackedFrame

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "protocol.schema.json"
WATCHDOG_S = 30.0  # a hang, not slowness, is what this catches


def run(coro: Any) -> Any:
    """Run a websocket test coroutine, failing after :data:`WATCHDOG_S` instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, WATCHDOG_S))


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    """The next text message (binary preview frames skipped), parsed."""
    while True:
        msg = await ws.recv()
        if isinstance(msg, str):
            return json.loads(msg)


def face_points(width: int, height: int, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                x: float = 0.0, distance: float = 700.0) -> np.ndarray:
    """68 points of the generic face seen with a pose, ``x`` mm right of the optical axis."""
    rvec = cv2.Rodrigues(rotation_from_angles(yaw, pitch, roll))[0]
    return project(FACE_MODEL_68, rvec, np.array([x, 0.0, distance]), width, height).astype(
        np.float32)


def landmarks(index: int, face_id: int, points: np.ndarray) -> Landmarks:
    p = np.asarray(points, np.float32)
    box = Box(*(float(v) for v in p.min(0)), *(float(v) for v in p.max(0)))
    return Landmarks(index, index / 30.0, face_id, p, np.full(68, 0.9, np.float32), 0.95, box)


def tracked_frame(index: int, width: int = 320, height: int = 240, faces: int = 1,
                  image: np.ndarray | None = None) -> TrackedFrame:
    """A frame with ``faces`` synthetic faces side by side, turning a little with ``index``."""
    img = np.zeros((height, width, 3), np.uint8) if image is None else image
    spread = 180.0
    found = tuple(
        landmarks(index, k, face_points(width, height, yaw=10.0 * np.sin(index / 7.0),
                                        x=(k - (faces - 1) / 2) * spread,
                                        distance=700.0 + 300.0 * (faces > 1)))
        for k in range(faces)
    )
    return TrackedFrame(Frame(index, index / 30.0, img, time.time()), found)


@contextmanager
def server(width: int = 320, height: int = 240, fps: float = 30.0,
           **options: Any) -> Iterator[StreamServer]:
    """A started server on a free loopback port; closed afterwards."""
    srv = StreamServer(StreamOptions(port=0, **options), SourceMeta(width, height, fps))
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def wait_until(condition: Any, timeout: float = 20.0) -> bool:
    """Poll ``condition()`` until true; False after ``timeout`` (a hang guard, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def validator() -> Any:
    """A JSON Schema validator for protocol messages (jsonschema is a test dependency)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
