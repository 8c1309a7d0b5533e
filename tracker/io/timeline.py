"""Timestamps that always increase: FFmpeg's best-effort choice between a frame's pts and its
packet's dts, and continuity across timestamp discontinuities (concatenated MPEG-TS segments,
clock resets), for decoded video and for the audio remuxed next to it."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

TS_DISCONT = 0x0200  # AVFMT_TS_DISCONT: the format may have timestamp discontinuities
MAX_GAP_S = 10.0  # in such a format a jump further ahead is one (ffmpeg's dts_delta_threshold)


def allows_resets(container: Any) -> bool:
    """True for formats whose timestamps may jump (MPEG-TS, HLS): forward jumps count too."""
    return bool(container.format.flags & TS_DISCONT)


class BestEffort:
    """FFmpeg's ``guess_correct_pts``: a frame's pts, or its packet's dts once the pts have gone
    backwards more often than the dts (AVI stores no pts, so B-frames scramble them). Frames
    flushed from the decoder at the end have no dts; then the dts are carried on."""

    def __init__(self) -> None:
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._dts_step = 1
        self._bad_pts = self._bad_dts = 0

    def observe(self, pts: int | None, dts: int | None) -> int | None:
        """Count a frame's timestamps in; returns its dts (carried on when it has none)."""
        last = self._last_dts
        if dts is None and last is not None and self._bad_pts > self._bad_dts:
            dts = last + self._dts_step
        if dts is not None:
            if last is not None:
                self._bad_dts += dts <= last
                self._dts_step = dts - last if dts > last else self._dts_step
            self._last_dts = dts
        if pts is not None:
            self._bad_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        return dts

    def choose(self, pts: int | None, dts: int | None) -> int | None:
        """The timestamp to use for a frame observed with ``pts`` and ``dts``."""
        if pts is not None and (dts is None or self._bad_pts <= self._bad_dts):
            return pts
        return dts


def best_effort(frames: Iterable[Any], lookahead: int = 0) -> Iterator[tuple[Any, int | None]]:
    """Each frame (anything with ``pts`` and ``dts``) with its :class:`BestEffort` timestamp,
    chosen once ``lookahead`` more frames are seen, so the first frames of a file with
    scrambled pts are timed as the rest. An error of ``frames`` is raised after the frames
    before it."""
    guess, window = BestEffort(), deque[tuple[Any, int | None]]()
    it, error = iter(frames), None
    while True:
        try:
            frame = next(it)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 (raised again below)
            error = exc
            break
        window.append((frame, guess.observe(frame.pts, getattr(frame, "dts", None))))
        if len(window) > lookahead:
            frame, dts = window.popleft()
            yield frame, guess.choose(frame.pts, dts)
    while window:
        frame, dts = window.popleft()
        yield frame, guess.choose(frame.pts, dts)
    if error is not None:
        raise error


class Timeline:
    """Maps a stream's timestamps (integer ticks, in stream order) to ones that increase.

    A timestamp at most two ``duration`` s behind the previous one (a repeated time, B-frame
    reordering) moves, with every later one, to one tick after it. One further back, or (with
    ``resets``) more than ``max_gap`` ticks after the previous item ends, is a discontinuity:
    it and every later timestamp are shifted so it starts where the previous item ends. Other forward gaps
    (variable frame rate) are kept. ``jumps`` counts the discontinuities; ``first`` is
    ``(ticks, jump)`` of the first: where it was, and how far the times jumped there.
    """

    def __init__(self, resets: bool, max_gap: int) -> None:
        self.resets = resets
        self.max_gap = max_gap
        self.offset = 0
        self.jumps = 0
        self.first: tuple[int, int] | None = None
        self._last: int | None = None
        self._end = 0

    def place(self, ts: int, duration: int) -> int:
        """``ts`` on the increasing timeline; ``duration`` (ticks) is where the next item is
        expected (a frame interval, a packet duration)."""
        duration = max(1, duration)
        out = ts + self.offset
        if self._last is not None:
            back = self._last - out
            if 0 <= back <= 2 * duration:
                self.offset += back + 1
                out = self._last + 1
            elif back > 0 or (self.resets and out - self._end > self.max_gap):
                if self.first is None:
                    self.first = (self._end, out - self._end)
                self.offset += self._end - out
                self.jumps += 1
                out = self._end
        self._last, self._end = out, out + duration
        return out
