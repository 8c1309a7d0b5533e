"""The browser demo in headless Chromium: it connects, draws, and the pixels are where the stream
put the points (driven through chromedriver's WebDriver HTTP API; skipped without Chromium)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from streaming import face_points, landmarks, server, wait_until

from tracker.outputs.headpose import estimate_pose, project
from tracker.types import Frame, TrackedFrame

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs the chromium and chromium-driver packages",
)
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1000,800", "--force-device-scale-factor=1",
]
WIDTH, HEIGHT = 640, 480
POINT_RGB = (0, 255, 102)  # the page's point colour (#00ff66)
BACKGROUND_RGB = (17, 17, 17)  # the page's canvas fill (#111111)
AXIS_X_RGB = (255, 64, 64)  # the page's x axis colour (#ff4040)


class WebDriver:
    """The few W3C WebDriver commands this test needs, over plain HTTP."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webdriver {method} {path}: {exc.read()[:500]!r}") from None

    def start(self, user_data_dir: str) -> None:
        options = {"binary": CHROMIUM, "args": [*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"]}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def js(self, script: str) -> Any:
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": script, "args": []})

    def open(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def screenshot(self) -> np.ndarray:
        """The viewport as an RGB array."""
        png = base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def quit(self) -> None:
        if self.session:
            try:
                self.call("DELETE", f"/session/{self.session}")
            except (RuntimeError, OSError):
                pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    port = _free_port()
    assert CHROMEDRIVER is not None
    proc = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    driver = WebDriver(port)
    try:
        def ready() -> bool:
            try:
                return bool(driver.call("GET", "/status").get("ready"))
            except (OSError, RuntimeError, ValueError):
                return False

        assert wait_until(ready, 30.0), "chromedriver did not start"
        with tempfile.TemporaryDirectory(prefix="tracker-chromium-") as profile:
            driver.start(profile)
            try:
                yield driver
            finally:
                driver.quit()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _scene() -> TrackedFrame:
    """One face, turned 30 degrees so its pose axes are visible."""
    pts = face_points(WIDTH, HEIGHT, yaw=30.0, pitch=10.0, distance=600.0)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    return TrackedFrame(Frame(0, 0.0, image, time.time()), (landmarks(0, 0, pts),))


def _near(image: np.ndarray, x: float, y: float, rgb: tuple[int, int, int], tol: int,
          radius: int = 1) -> bool:
    """Whether some pixel within ``radius`` of (x, y) has colour ``rgb`` (+- tol per channel)."""
    xi, yi = int(round(x)), int(round(y))
    patch = image[max(0, yi - radius): yi + radius + 1, max(0, xi - radius): xi + radius + 1]
    diff = np.abs(patch.astype(np.int32) - np.array(rgb)).max(axis=-1)
    return bool((diff <= tol).any())


def _publish_until(srv: Any, frame: TrackedFrame, stop: threading.Event) -> None:
    index = 0
    while not stop.is_set():
        f = frame.frame
        srv.publish(TrackedFrame(Frame(index, index / 30, f.image, time.time()), frame.faces))
        index += 1
        stop.wait(0.03)


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_page_draws_points_mesh_and_axes_where_the_stream_put_them(
    browser: WebDriver, token: str | None
) -> None:
    scene = _scene()
    points = scene.faces[0].points
    with server(WIDTH, HEIGHT, serve_demo=True, token=token) as srv:
        stop = threading.Event()
        pub = threading.Thread(target=_publish_until, args=(srv, scene, stop))
        pub.start()
        try:
            query = f"?token={token}" if token else ""
            browser.open(f"http://127.0.0.1:{srv.port}/{query}")
            drawn = wait_until(lambda: (browser.js(
                "return window.trackerDemo ? window.trackerDemo.drawn : 0") or 0) >= 3, 30.0)
            assert drawn, browser.js("return window.trackerDemo && window.trackerDemo.status")
            info = browser.js(
                "const r = document.getElementById('view').getBoundingClientRect();"
                "return {left: r.left, top: r.top, width: r.width, height: r.height,"
                " dpr: window.devicePixelRatio, status: window.trackerDemo.status,"
                " hud: document.getElementById('hud').textContent};")
            shot = browser.screenshot()
        finally:
            stop.set()
            pub.join()
    assert info["status"].startswith("connected") and "latency" in info["hud"]
    sx = info["width"] / WIDTH * info["dpr"]
    sy = info["height"] / HEIGHT * info["dpr"]

    def screen(x: float, y: float) -> tuple[float, float]:
        return info["left"] * info["dpr"] + x * sx, info["top"] * info["dpr"] + y * sy

    hits = [_near(shot, *screen(x, y), POINT_RGB, tol=40) for x, y in points]
    assert all(hits), f"points missing at {[i for i, h in enumerate(hits) if not h]}"
    for x, y in ((40, 440), (600, 440), (600, 300)):  # far from the face: canvas background
        assert _near(shot, *screen(x, y), BACKGROUND_RGB, tol=6, radius=0)
    # the x axis (red) runs from the nose tip toward the face's side: check along its far half
    pose = estimate_pose(points, WIDTH, HEIGHT)
    assert pose is not None
    origin, end = project(np.array([[0.0, 0.0, 0.0], [60.0, 0.0, 0.0]]), pose.rvec, pose.tvec,
                          WIDTH, HEIGHT)
    along = [origin + (end - origin) * f for f in (0.6, 0.75, 0.9)]
    assert any(_near(shot, *screen(*p), AXIS_X_RGB, tol=60, radius=2) for p in along)


def test_page_follows_one_stream_of_several(browser: WebDriver) -> None:
    """A server of several streams: the page lists them, shows the first and subscribes to it
    alone; choosing another in the list switches to it."""
    from tracker.serve.protocol import SourceMeta
    from tracker.serve.server import StreamOptions, StreamServer

    srv = StreamServer(StreamOptions(port=0, serve_demo=True), streams=["left", "right"])
    srv.start()
    stop = threading.Event()
    scene = _scene()

    def publish() -> None:
        index = 0
        while not stop.is_set():
            for name in ("left", "right"):
                frame = Frame(index, index / 30, scene.frame.image, time.time())
                srv.publish(TrackedFrame(frame, scene.faces), name)
            index += 1
            stop.wait(0.03)

    def page(script: str) -> Any:
        return browser.js(f"const s = window.trackerDemo; return s && ({script});")

    for name in ("left", "right"):
        srv.describe_stream(name, SourceMeta(WIDTH, HEIGHT, 30.0))
    pub = threading.Thread(target=publish)
    pub.start()
    try:
        browser.open(f"http://127.0.0.1:{srv.port}/")
        assert wait_until(lambda: page("s.frame && s.frame.stream === 'left'"), 30.0), \
            page("s.status")
        listed = browser.js("const e = document.getElementById('stream');"
                            "return {hidden: e.hidden, names: [...e.options].map(o => o.value)};")
        assert listed == {"hidden": False, "names": ["left", "right"]}
        assert wait_until(lambda: [c.sub.streams for c in srv._clients.values()]
                          == [("left",)], 30.0)
        browser.js("const e = document.getElementById('stream'); e.value = 'right';"
                   "e.dispatchEvent(new Event('change'));")
        assert wait_until(lambda: page("s.frame && s.frame.stream === 'right'"), 30.0)
        assert [c.sub.streams for c in srv._clients.values()] == [("right",)]
    finally:
        stop.set()
        pub.join()
        srv.close()
