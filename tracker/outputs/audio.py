"""The input's audio for an output video: stream-copied when the output can carry the codec
as it is, else re-encoded to AAC; its timestamps kept increasing across discontinuities.

MP4 takes a copy only of the codecs in :data:`MP4_COPY_CODECS` (each checked by a round trip
through the writer). FFmpeg's MP4 muxer accepts PCM too, but writes no index for 16-bit or
float PCM in a fragmented file, and marks 24-bit PCM as 16-bit for most players: PCM
(cameras, screen recorders) and every other codec are re-encoded to AAC instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import av

from tracker.io.opening import stream_fps
from tracker.io.timeline import MAX_GAP_S, Timeline, allows_resets

log = logging.getLogger(__name__)

MP4_COPY_CODECS = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
_NEEDS_CONFIG = frozenset({"aac", "alac", "opus", "flac"})  # MP4 needs their extradata first
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_LAYOUTS = ("mono", "stereo", "3.0", "4.0", "5.0", "5.1", "7.1")
AAC_FRAME = 1024  # samples per AAC frame
MAX_HELD = 200  # audio packets held back at a discontinuity waiting for the video's


class AudioFeed:
    """The audio of ``path`` added to ``output`` as a new stream; packets are muxed in time
    order, interleaved with the video, by :meth:`mux_until`.

    ``stream`` is None when the input has no audio or it cannot go in ``output`` (a warning is
    logged); ``copied`` says whether it is a stream copy or AAC. Undecodable packets of a
    re-encoded stream are skipped (counted in ``bad_packets``).
    """

    def __init__(self, path: str, output: av.container.OutputContainer, out_path: str, *,
                 mp4: bool) -> None:
        self.input = av.open(path)
        self.stream: av.audio.stream.AudioStream | None = None
        self.copied = False
        self.bad_packets = 0
        self.dropped = 0  # packets overlapping the segment before after a discontinuity
        self.packets_written = 0
        self._end: int | None = None  # where the last audio packet passed on ends (ticks)
        self._pending: av.Packet | None = None
        self._packets: Iterator[av.Packet] | None = None
        if not self.input.streams.audio:
            return
        src = self.input.streams.audio[0]
        ctx = src.codec_context
        codec = ctx.codec.canonical_name if ctx is not None else "unknown"
        can_copy = codec in MP4_COPY_CODECS if mp4 else codec in output.supported_codecs
        packets, config = self._source_packets(src), None
        if can_copy and mp4 and codec in _NEEDS_CONFIG and not src.codec_context.extradata:
            # MP4 needs the codec config up front; AAC from MPEG-TS (ADTS) carries it inline
            if codec == "aac":
                packets, config = self._from_adts(src, packets)
            if config is None:  # re-encoded from the start instead
                self.input.seek(0)
                packets, can_copy = self._source_packets(src), False
        if can_copy:
            self.stream = output.add_stream_from_template(src)
            if config is not None:
                self.stream.codec_context.extradata = config
            self.copied = True
            self._packets = packets
        elif src.codec_context is not None and "aac" in output.supported_codecs:
            self._packets = self._reencoded(src, output, packets)
            log.info("audio %s of %s is re-encoded to AAC", codec, path)
        else:
            log.warning("audio codec %s cannot go in %s; output has no audio", codec, out_path)

    def _source_packets(self, src: av.audio.stream.AudioStream) -> Iterator[av.Packet]:
        """The input's audio packets in order, with increasing timestamps.

        At a discontinuity the audio takes the shift that the video's timestamps get there (as
        the decoder shifts the frames, see :class:`~tracker.io.timeline.Timeline`), so each
        segment keeps its sync; audio that then overlaps the segment before is dropped
        (counted in ``dropped``). Without a matching video jump the audio follows on.
        """
        atb = src.time_base or Fraction(1, src.rate or 48000)
        resets = allows_resets(self.input)
        own = Timeline(resets, round(MAX_GAP_S / atb))  # the audio's own jumps
        default = max(1, round(Fraction(AAC_FRAME, src.rate or 48000) / atb))
        video = self.input.streams.video[0] if self.input.streams.video else None
        shifts = [0]  # the video's shift after each of its jumps, in audio ticks
        if video is not None:
            vtb = video.time_base
            frames = Timeline(resets, round(MAX_GAP_S / vtb))
            step = max(1, round(1 / (Fraction(stream_fps(video) or 30.0) * vtb)))
        held: list[tuple[av.Packet, int, int]] = []  # (packet, segment, own shift)
        for packet in self.input.demux([src, video] if video is not None else [src]):
            if packet.dts is None:
                continue  # the demuxer's empty packet at the end
            if video is not None and packet.stream.index == video.index:
                jumps = frames.jumps
                frames.place(packet.dts, step)
                if frames.jumps > jumps:
                    shifts.append(round(frames.offset * vtb / atb))
            else:
                ts = packet.pts if packet.pts is not None else packet.dts
                own.place(ts, packet.duration or default)
                held.append((packet, own.jumps, own.offset))
            # audio waits (a little) for the video's jump, which may come later in the file
            while held and (held[0][1] < len(shifts) or video is None or len(held) > MAX_HELD):
                yield from self._shifted(*held.pop(0), shifts)
        for entry in held:
            yield from self._shifted(*entry, shifts)

    def _shifted(self, packet: av.Packet, segment: int, own: int,
                 shifts: list[int]) -> Iterator[av.Packet]:
        """``packet`` of ``segment`` moved by the video's shift there (``own``, the audio's
        own, when the video has none). After a discontinuity a packet starting well inside the
        audio already sent is dropped; one that overlaps it a little goes to its end."""
        ts = packet.pts if packet.pts is not None else packet.dts
        placed = ts + (shifts[segment] if segment < len(shifts) else own)
        duration = packet.duration or 0
        if segment and self._end is not None and placed < self._end:
            if duration and self._end - placed > duration // 2:
                self.dropped += 1
                return
            placed = self._end
        if placed != ts:
            packet.dts += placed - ts
            if packet.pts is not None:
                packet.pts += placed - ts
        self._end = placed + max(1, duration)
        yield packet

    @staticmethod
    def _from_adts(src: av.audio.stream.AudioStream, packets: Iterator[av.Packet]
                   ) -> tuple[Iterator[av.Packet], bytes | None]:
        """ADTS AAC packets as MP4 holds them (``aac_adtstoasc``), and the AAC config from
        the first (None when it has none)."""
        bsf = av.bitstream.BitStreamFilterContext("aac_adtstoasc", src)
        head: list[av.Packet] = []
        for packet in packets:
            head += bsf.filter(packet)
            if head:
                break
        config = next((bytes(d) for p in head for d in p.iter_sidedata()
                       if d.data_type == "new_extradata"), None)

        def rest() -> Iterator[av.Packet]:
            yield from head
            for packet in packets:
                yield from bsf.filter(packet)

        return rest(), config

    def _reencoded(self, src: av.audio.stream.AudioStream, output: av.container.OutputContainer,
                   packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
        """AAC packets of the decoded input (any sample format, converted by a resampler)."""
        rate = src.rate if src.rate in AAC_RATES else 48000
        layout = src.layout.name if src.layout.name in AAC_LAYOUTS else "stereo"
        channels = av.AudioLayout(layout).nb_channels
        stream = output.add_stream("aac", rate=rate, layout=layout)
        stream.bit_rate = 96000 * min(channels, 2) + 64000 * max(0, channels - 2)
        stream.time_base = Fraction(1, rate)
        self.stream = stream
        return self._encode(packets, stream, av.AudioResampler("fltp", layout, rate, AAC_FRAME))

    def _encode(self, packets: Iterator[av.Packet], stream: av.audio.stream.AudioStream,
                resampler: av.AudioResampler) -> Iterator[av.Packet]:
        for packet in packets:
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError):
                self.bad_packets += 1
                continue
            for frame in frames:
                for chunk in resampler.resample(frame):
                    yield from stream.encode(chunk)
        for chunk in resampler.resample(None):
            yield from stream.encode(chunk)
        yield from stream.encode(None)

    def mux_until(self, output: av.container.OutputContainer, limit: Fraction, *,
                  inclusive: bool) -> None:
        """Mux the packets that start before ``limit`` seconds (or at it, ``inclusive``)."""
        while self._packets is not None:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    self._packets = None
                    return
            packet = self._pending
            ts = packet.pts if packet.pts is not None else packet.dts
            start = ts * Fraction(packet.time_base)
            if start > limit or (start == limit and not inclusive):
                return
            packet.stream = self.stream
            output.mux(packet)
            self.packets_written += 1
            self._pending = None

    def close(self) -> None:
        self.input.close()
