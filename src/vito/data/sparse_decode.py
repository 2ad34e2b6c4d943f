"""Decoding only the frames a clip shows: the fast path of ``vito.data.video.VideoReader``.

Keyframes are rare in typical H.264 files (every ~8 s in the shared videos), so most of a clip's cost is
decoding the frames between the keyframe and the wanted ones. For H.264/HEVC in MP4 or Matroska (which store
presentation timestamps), the reader first demuxes the packets (cheap) to learn which packets hold the wanted
frames (``packets_through``, ``plan_stamps``), then has FFmpeg skip every other frame that no later frame
references (``skip_frame`` "NONREF", mostly B-frames: about half the frames of the shared videos) and stops
after the last wanted packet (``decode_stamps``). Every function answers None where the stream is not as
expected; the reader then decodes every frame, which defines the results. FFmpeg's own failures are raised
as ``av.FFmpegError`` for the reader to name the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

try:  # reading prepared shards needs no PyAV (see vito.data.video)
    import av
except ImportError:  # pragma: no cover - PyAV is a core dependency
    av = None
import numpy as np

# Frame times within this of a wanted time count as on screen at it (float rounding of stamp * time base).
TIME_EPSILON = 1e-9

Seconds = Callable[..., "float | np.ndarray"]  # stream timestamp(s) -> seconds since the first frame
Checked = Callable[[list], list]  # the reader's check of decoded frames (raises for a corrupt one after a seek)


def packets_through(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    last_time: float, seconds: Seconds) -> list[av.Packet] | None:
    """Demux (no decoding) from the seek point until the decode stamps pass ``last_time``: a frame is never
    presented before it is decoded, so every frame shown up to ``last_time`` is in these packets.

    None where the stamps cannot identify the frames: a packet without stamps, no frame to show, or a stream
    with B-frames whose presentation stamps equal its decode stamps (so not really stored).
    """
    packets = []
    for packet in container.demux(stream):
        if packet.size == 0:  # the end-of-stream marker
            continue
        if packet.pts is None or packet.dts is None:
            return None
        packets.append(packet)
        if seconds(packet.dts) > last_time + TIME_EPSILON:
            break
    reordered = any(p.pts != p.dts for p in packets)
    if all(p.is_discard for p in packets) or (stream.codec_context.has_b_frames and not reordered):
        return None
    return packets


def plan_stamps(packets: list[av.Packet], times: np.ndarray, seconds: Seconds,
                start_pts: int) -> dict[float, int] | None:
    """For each sorted time the stamp of the frame on screen (the largest stamp <= t); times before the
    stream's first frame (``start_pts``) get that frame. None if ``times[0]`` is before the first frame here
    but not before the stream's (open GOP: the seek must go further back)."""
    stamps = np.unique([p.pts for p in packets if not p.is_discard])
    shown = np.searchsorted(seconds(stamps), times + TIME_EPSILON, side="right") - 1
    if shown[0] < 0 and stamps[0] > start_pts:
        return None
    return dict(zip(times.tolist(), stamps[np.maximum(shown, 0)].tolist()))


def decode_stamps(context: av.codec.context.CodecContext, packets: list[av.Packet], needed: set[int],
                  checked: Checked) -> dict[int, av.VideoFrame] | None:
    """The frames stamped ``needed``, decoded from ``packets`` up to the last needed one with the others
    skipped where no later frame references them (see ``_decode_skipping``). None unless every needed frame
    came out and all came out in display order (then the caller decodes everything)."""
    last = max(i for i, packet in enumerate(packets) if packet.pts in needed)
    stamps: list[int | None] = []
    found: dict[int, av.VideoFrame] = {}
    for frame in _decode_skipping(context, packets[: last + 1], needed, checked):
        stamps.append(frame.pts)
        if frame.pts in needed:
            found[frame.pts] = frame  # only these are kept: holding every frame costs fresh buffers
    if len(found) < len(needed) or None in stamps or stamps != sorted(stamps):
        return None
    return found


def _decode_skipping(context: av.codec.context.CodecContext, packets: list[av.Packet], needed: set[int],
                     checked: Checked) -> Iterator[av.VideoFrame]:
    """Decode ``packets`` and drain the decoder, letting it skip unneeded non-reference frames.

    Why per packet: H.264/HEVC decoders read ``skip_frame`` at each slice, so a needed non-reference frame is
    decoded ("DEFAULT") while its unneeded neighbours are skipped ("NONREF"). Reference frames are always
    decoded, so the needed frames come out exactly as in a full decode.
    """
    try:
        for packet in packets:
            context.skip_frame = "DEFAULT" if packet.pts in needed else "NONREF"
            yield from checked(context.decode(packet))
        context.skip_frame = "DEFAULT"
        yield from checked(context.decode(None))  # drain the frames held back for reordering
    finally:
        context.skip_frame = "DEFAULT"
