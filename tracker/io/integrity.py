"""Whether a video file is whole, from its container structure alone (no decoding).

The frame count in a header is no evidence either way (AVI pads it with skipped frames, an
edit list hides decoded frames), so a file counts as truncated only when its structure says so.
"""

from __future__ import annotations

from pathlib import Path

_TS_PACKET = 188


def mp4_problem(path: Path) -> str | None:
    """Why an MP4/MOV file cannot be opened (cut off, no index), or None if it is not one.

    Walks the top-level boxes: a box running past the end of the file means the file was cut
    off; no ``moov`` box means its index was never written (recording not finished).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[4:8] != b"ftyp":
                return None
            pos, seen = 0, set()
            while pos + 8 <= size:
                f.seek(pos)
                header = f.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    box_size = size - pos
                if box_size < 8:
                    return "a damaged MP4 (bad box structure)"
                seen.add(kind)
                pos += box_size
    except OSError:
        return None
    if b"moov" in seen and pos <= size:
        return None
    return ("an incomplete MP4: it was cut off or its index (moov atom) was never written, so "
            "no frame can be located; recover it with a tool such as untrunc, or re-export it")


def _ebml_number(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length number at ``pos``: ``(value, next position)``; sizes drop the
    length marker and use -1 for "unknown" (all ones), IDs keep it."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos:pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            value = -1
    return value, pos + length


def _matroska_end(data: bytes) -> int | None:
    """Where the Matroska segment says the file ends (None: unknown size or not Matroska)."""
    header_id = _ebml_number(data, 0, keep_marker=True)
    header_size = header_id and _ebml_number(data, header_id[1], keep_marker=False)
    if not header_id or header_id[0] != 0x1A45DFA3 or not header_size or header_size[0] < 0:
        return None
    segment_id = _ebml_number(data, header_size[1] + header_size[0], keep_marker=True)
    segment_size = segment_id and _ebml_number(data, segment_id[1], keep_marker=False)
    if not segment_id or segment_id[0] != 0x18538067 or not segment_size or \
            segment_size[0] < 0:
        return None
    return segment_size[1] + segment_size[0]


def _riff_end(path: Path, size: int) -> int:
    """Where the RIFF chunks of an AVI say the file ends (an OpenDML file has several)."""
    pos = 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(8)
            if head[:4] != b"RIFF":
                break
            chunk = int.from_bytes(head[4:8], "little")
            pos += 8 + chunk + (chunk & 1)
    return pos


def truncation(path: str | Path) -> str | None:
    """How a file's container shows it was cut short, or None when it looks whole (or its
    format has no way to tell): an MP4 box, a Matroska segment or an AVI RIFF chunk that runs
    past the end of the file, or an MPEG-TS file that ends inside a packet."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if head[4:8] == b"ftyp":
        return "the file ends inside an MP4 box" if mp4_problem(path) else None
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "the file ends inside its AVI data" if _riff_end(path, size) > size else None
    end = _matroska_end(head)
    if end is not None:
        return "the file ends inside its Matroska segment" if end > size else None
    for packet, lead in ((_TS_PACKET, 0), (_TS_PACKET + 4, 4)):  # MPEG-TS, M2TS
        if len(head) > lead and head[lead] == 0x47 and size >= 2 * packet:
            with open(path, "rb") as f:
                f.seek(packet + lead)
                if f.read(1) == b"\x47":
                    return "the file ends inside an MPEG-TS packet" if size % packet else None
    return None
