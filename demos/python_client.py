#!/usr/bin/env python3
"""Print or forward a tracker landmark stream (websocket protocol v1, see docs/protocol.md).

Written against the documented protocol only: it needs the `websockets` package, not tracker.

    python demos/python_client.py                              # print one line per frame
    python demos/python_client.py ws://127.0.0.1:8765/ --csv faces.csv --quiet
    python demos/python_client.py --fields points pose --faces 0 --jsonl -   # raw frames to stdout

Each CSV row is one face in one frame: frame, time, wall_time, latency_ms, face id, presence,
yaw, pitch, roll, then x0, y0, ... x67, y67; from a server of several streams (tracker run
--source A --source B --ws PORT) a first column names the stream, and --streams NAME... picks
some of them. Exit status: 0 when the stream ended normally, 1 on
connection problems, 2 when the server refused the client (token or origin), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from typing import IO, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

try:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.sync.client import connect
except ImportError:  # pragma: no cover - explained to the user
    sys.exit("error: this client needs the websockets package (pip install websockets)")

PROTOCOL = 1
FIELDS = ("presence", "box", "points", "confidence", "pose")
REFUSED = {4401: "missing or wrong token (--token or TRACKER_WS_TOKEN)",
           4403: "origin or host not allowed", 1013: "too many clients",
           4408: "this client stalled and was dropped"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/", help="server URL")
    p.add_argument("--token", default=os.environ.get("TRACKER_WS_TOKEN"),
                   help="access token (default: $TRACKER_WS_TOKEN)")
    p.add_argument("--fields", nargs="+", choices=FIELDS, help="per-face fields to receive")
    p.add_argument("--faces", nargs="+", type=int, metavar="ID", help="only these face ids")
    p.add_argument("--streams", nargs="+", metavar="NAME",
                   help="only these streams (a server of several streams)")
    p.add_argument("--csv", metavar="FILE", help="write one row per face per frame ('-': stdout)")
    p.add_argument("--jsonl", metavar="FILE", help="forward each frame message as a JSON line")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: no limit)")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-frame lines on stderr")
    return p.parse_args(argv)


def with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))


def open_output(path: str | None) -> IO[str] | None:
    if path is None:
        return None
    return sys.stdout if path == "-" else open(path, "w", newline="", encoding="utf-8")


def csv_header(streams: bool = False) -> list[str]:
    coords = [f"{axis}{i}" for i in range(68) for axis in ("x", "y")]
    return [*(["stream"] if streams else []), "frame", "time", "wall_time", "latency_ms",
            "face", "presence", "yaw", "pitch", "roll", *coords]


def csv_rows(msg: dict[str, Any], latency_ms: float) -> list[list[Any]]:
    rows = []
    for face in msg["faces"]:
        pose = face.get("pose") or {}
        points = face.get("points") or [[None, None]] * 68
        flat = [v for xy in points for v in xy]
        named = [msg["stream"]] if "stream" in msg else []
        rows.append([*named, msg["frame"], msg["time"], msg["wall_time"], round(latency_ms, 1),
                     face["id"], face.get("presence"), pose.get("yaw"), pose.get("pitch"),
                     pose.get("roll"), *flat])
    return rows


def describe(msg: dict[str, Any], latency_ms: float) -> str:
    faces = []
    for face in msg["faces"]:
        pose = face.get("pose")
        angles = (f" yaw {pose['yaw']:+.0f} pitch {pose['pitch']:+.0f} roll {pose['roll']:+.0f}"
                  if pose else "")
        faces.append(f"[id {face['id']}{angles}]")
    dropped = f" dropped {msg['dropped']}" if msg["dropped"] else ""
    named = f"[{msg['stream']}] " if "stream" in msg else ""
    return (f"{named}frame {msg['frame']:6d} t={msg['time']:8.3f}s latency {latency_ms:6.1f} ms "
            f"faces {len(msg['faces'])} {' '.join(faces)}{dropped}")


def run(args: argparse.Namespace) -> int:
    csv_file, jsonl_file = open_output(args.csv), open_output(args.jsonl)
    writer = csv.writer(csv_file) if csv_file else None
    frames = dropped = 0
    try:
        with connect(with_token(args.url, args.token), max_size=2**24) as ws:
            subscribe: dict[str, Any] = {"type": "subscribe", "preview": False}
            if args.fields:
                subscribe["fields"] = args.fields
            if args.faces:
                subscribe["faces"] = args.faces
            if args.streams:
                subscribe["streams"] = args.streams
            ws.send(json.dumps(subscribe))
            for raw in ws:
                if isinstance(raw, bytes):
                    continue  # preview JPEGs (we unsubscribed; one may already be in flight)
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "hello":
                    if msg["protocol"] != PROTOCOL:
                        print(f"warning: server speaks protocol {msg['protocol']}, this client "
                              f"{PROTOCOL}", file=sys.stderr)
                    streams = msg.get("streams")
                    if writer:
                        writer.writerow(csv_header(streams is not None))
                    for s in streams or [{"name": None, "source": msg["source"]}]:
                        src, name = s["source"], f" stream {s['name']}" if s["name"] else ""
                        about = (f"{src['width']}x{src['height']} at {src['fps']} fps" if src
                                 else "could not be opened")
                        print(f"connected to tracker {msg['tracker']}:{name} {about}",
                              file=sys.stderr)
                elif kind == "frame":
                    latency_ms = (time.time() - msg["wall_time"]) * 1e3
                    frames += 1
                    dropped += msg["dropped"]
                    if writer:
                        writer.writerows(csv_rows(msg, latency_ms))
                    if jsonl_file:
                        jsonl_file.write(raw + "\n")
                        jsonl_file.flush()
                    if not args.quiet:
                        print(describe(msg, latency_ms), file=sys.stderr)
                    if args.max_frames and frames >= args.max_frames:
                        break
                elif kind == "error":
                    print(f"server: {msg['message']}", file=sys.stderr)
                elif kind == "stream_end":
                    print(f"stream {msg['stream']} ended: {msg['reason']}", file=sys.stderr)
                elif kind == "bye":
                    print(f"stream ended: {msg['reason']}", file=sys.stderr)
        code = ws.close_code
        if code in REFUSED:
            print(f"error: {REFUSED[code]}", file=sys.stderr)
            return 2
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        print(f"error: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code in REFUSED:
            print(f"error: {REFUSED[code]}", file=sys.stderr)
            return 2
        print(f"error: connection lost: {exc}", file=sys.stderr)
        return 1
    finally:
        for f in (csv_file, jsonl_file):
            if f is not None and f is not sys.stdout:
                f.close()
    print(f"{frames} frames received, {dropped} missed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
