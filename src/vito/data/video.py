"""Frame-exact random access into video files with PyAV.

Training samples a few frames at random times from each clip, so the reader must answer "which frame is on
screen at time t?" exactly, also for B-frames (decode order != display order) and variable frame rates, and
cheaply: it seeks to the keyframe before the earliest wanted time, decodes forward and converts to RGB only
the frames it keeps (the colour conversion costs as much as the decode), resizing in the same call. Times
are seconds since the first frame's timestamp.

Keyframes are rare in typical H.264 files, so for H.264/HEVC in MP4 or Matroska the reader decodes only the
frames the wanted ones need (``vito.data.sparse_decode``); anything unexpected falls back to decoding every
frame, which defines the results. A frame that the decoder flags as corrupt after a seek makes the reader
retry with the state of the stream start.

Every failure to read a file (missing, empty, not a regular file, truncated, not a video, undecodable) is a
``DataError`` that names the file and the reason, so callers can skip bad videos and count them. Files are
handed to FFmpeg as open Python file objects, never as names: a name is always a local file, never a
protocol such as ``pipe:0`` (see ``vito.data.local_files``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

try:  # reading prepared shards needs no PyAV (a bare GPU machine may lack it); opening a video then says so
    import av
    from av.video.reformatter import VideoReformatter
except ImportError:  # pragma: no cover - PyAV is a core dependency
    av = VideoReformatter = None
import numpy as np
import torch

from vito.data.local_files import error_text, open_local_file
from vito.data.sparse_decode import TIME_EPSILON, decode_stamps, packets_through, plan_stamps
from vito.errors import DataError, VitoError

# Times further apart than this are read with separate seeks instead of decoding through the gap.
SEEK_GAP_SECONDS = 2.0
# FFmpeg decoder threading: one thread per reader. On 2 shared cores benchmarks/bench_loader.py found no
# reliable gain from automatic (frame + slice) threading for the few frames a clip needs, and DataLoader
# workers already occupy the cores (see benchmarks/results/loader.md).
THREAD_TYPE = "SLICE"
THREAD_COUNT = 1
# Decoders that honour ``skip_frame`` per packet and put one frame in each packet, and containers whose
# packets carry the stored presentation stamps (in AVI or raw streams FFmpeg guesses them from decode order,
# which cannot say which packet holds the frame shown at t): only these use the frame-skipping path.
SKIPPING_CODECS = frozenset({"h264", "hevc"})
SKIPPING_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
# Packets read to find the first displayed timestamp (B-frames reorder at most a few frames).
START_PACKETS = 16
# A stream whose packets end this much before the header's duration is treated as truncated.
TRUNCATION_TOLERANCE_SECONDS = 1.0


class _CorruptAfterSeek(Exception):
    """A frame decoded after a seek is flagged corrupt: decode from the stream start instead."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds, from the first frame's timestamp to the end of the last frame
    fps: float
    num_frames: int | None  # from the header; None when the container does not say
    width: int  # as displayed: with the stream's rotation applied (a portrait phone video is portrait)
    height: int
    rotation: int = 0  # counter-clockwise quarter turns applied to the stored frames for display (0-3)


class VideoReader:
    """One open video file. Use as a context manager so the container is always closed."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if av is None:
            raise VitoError("PyAV is not installed: `pip install av` to read videos (prepared shards need none)")
        self._file = open_local_file(path)
        try:
            self._container = av.open(self._file, metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            self._file.close()
            raise DataError(f"{self.path}: not a readable video ({error_text(exc)})") from None
        try:
            if not self._container.streams.video:
                raise DataError(f"{self.path}: no video stream")
            if _is_image_format(self._container.format.name):
                raise DataError(f"{self.path}: a still image ({self._container.format.name}), not a video")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = THREAD_TYPE
            self._stream.codec_context.thread_count = THREAD_COUNT
            self._time_base = float(self._stream.time_base)
            self._info: VideoInfo | None = None
            self._start_pts: int | None = None
            self._rotation: int | None = None
            self._use_dts = False  # see _decode_until
            self._from_start = True  # whether decoding began at the stream start (see _read_group)
            self._can_skip = (self._stream.codec_context.name in SKIPPING_CODECS
                              and self._container.format.name in SKIPPING_FORMATS)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._container.close()
        finally:
            self._file.close()

    # ----------------------------------------------------------------------------------------------
    # Metadata

    @property
    def start_pts(self) -> int:
        """Timestamp of the first frame in stream units (the origin of all times).

        The header's start time is not always the first frame's (AVI files with packed B-frames), so it is
        read from the first packets: the smallest timestamp among them is the first one displayed.
        """
        if self._start_pts is None:
            self._start_pts = self._first_packet_pts()
        return self._start_pts

    def _first_packet_pts(self) -> int:
        header = self._stream.start_time
        try:
            self._container.seek(header or 0, stream=self._stream, backward=True, any_frame=False)
            stamps = []
            for packet in self._container.demux(self._stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None and not packet.is_discard:
                    stamps.append(stamp)
                if len(stamps) >= START_PACKETS:
                    break
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: unreadable data ({error_text(exc)})") from None
        if not stamps:
            raise DataError(f"{self.path}: video stream holds no packets")
        return int(min(stamps))

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        stream = self._stream
        header = _header_duration(self._container, stream)
        end = self._data_end(header)
        if header is not None and end < header - TRUNCATION_TOLERANCE_SECONDS:
            raise DataError(f"{self.path}: truncated (data ends at {end:.2f} s, header says {header:.2f} s)")
        duration = header if header is not None else end
        if not duration > 0:
            raise DataError(f"{self.path}: no decodable video frames")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise DataError(f"{self.path}: video stream has no frame size")
        turns = self.rotation
        if turns % 2:
            width, height = height, width
        return VideoInfo(self.path, duration, fps, int(stream.frames) or None, width, height, turns)

    @property
    def rotation(self) -> int:
        """Counter-clockwise quarter turns that show the stored frames as displayed (0-3).

        Why: phones store portrait video as landscape frames plus a display matrix (rotation side data);
        players rotate, and so must we, or portrait videos train and evaluate on their side. FFmpeg attaches
        the matrix to every decoded frame (PyAV exposes no stream-level getter), so the first frame is
        decoded once to read it. Flips in the matrix are rare and ignored.
        """
        if self._rotation is None:
            self._rotation = self._read_rotation()
        return self._rotation

    def _read_rotation(self) -> int:
        self._seek(0.0)
        try:
            for frame in self._container.decode(self._stream):
                return round((frame.rotation or 0) / 90) % 4
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: decoding failed ({error_text(exc)})") from None
        return 0

    def _data_end(self, header: float | None) -> float:
        """End time of the last packet actually present: demux (no decoding) the tail of the stream.

        Why: a file cut short often keeps a complete index, so only reading its last packets reveals the
        truncation; and WebM files may lack a duration field entirely.
        """
        self._seek(0.0 if header is None else max(0.0, header - 2 * TRUNCATION_TOLERANCE_SECONDS))
        end = -math.inf
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is None:
                    continue
                length = packet.duration or 0
                end = max(end, (packet.pts + length - self.start_pts) * self._time_base)
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: unreadable data ({error_text(exc)})") from None
        return end

    # ----------------------------------------------------------------------------------------------
    # Frames

    def frames_at(self, times: Sequence[float] | np.ndarray, short_side: int | None = None) -> torch.Tensor:
        """uint8 [N, H, W, 3]: for each time, the frame on screen then (last frame with timestamp <= t)."""
        times = np.clip(np.asarray(times, dtype=np.float64).reshape(-1), 0.0, None)
        if times.size == 0:
            raise ValueError("frames_at needs at least one time")
        self.info  # validates the file (truncation) before any decoding
        wanted = np.unique(times)
        picked: dict[float, av.VideoFrame] = {}
        for group in _seek_groups(wanted, SEEK_GAP_SECONDS):
            picked.update(self._read_group(group))
        size = self._output_size(short_side)
        rgb: dict[int, np.ndarray] = {}  # one conversion per distinct frame, resized in the same call
        for frame in picked.values():
            if id(frame) not in rgb:
                rgb[id(frame)] = self._to_rgb(frame, size)
        return torch.from_numpy(np.stack([rgb[id(picked[t])] for t in times]))

    def _read_group(self, times: np.ndarray) -> dict[float, av.VideoFrame]:
        """The frame shown at each time, decoded from the keyframe before ``times[0]``.

        If the decoder flags a frame decoded after that seek as corrupt, the decoder is first given the
        stream's first packet and the seek is tried again, then the group is decoded from the stream start.
        Why: a decoder may need state that only the stream start holds. FFmpeg applies its workarounds for
        old x264 bugs only after reading x264's version note in the first packet, so imageio/cockatoo.mp4
        (x264, 4:4:4) decodes to green garbage after any seek unless that packet was decoded first.
        """
        try:
            return self._read_from(times[0], times)
        except _CorruptAfterSeek:
            self._decode_first_packet()
        try:
            return self._read_from(times[0], times)
        except _CorruptAfterSeek:
            return self._read_from(0.0, times)

    def _decode_first_packet(self) -> None:
        """Decode the stream's first packet: the decoder keeps what it learns there across seeks."""
        self._seek(0.0)
        try:
            for packet in self._container.demux(self._stream):
                self._stream.codec_context.decode(packet)
                return
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: decoding failed ({error_text(exc)})") from None

    def _read_from(self, seek_time: float, times: np.ndarray) -> dict[float, av.VideoFrame]:
        """Decode forward from the keyframe before ``seek_time``; keep the frame shown at each time."""
        back_off = 0.0
        while True:
            used_dts = self._use_dts
            start = max(0.0, seek_time - back_off)
            picked, complete = self._decode_from(start, times)
            if complete:
                return picked
            if not picked and self._use_dts and not used_dts:
                continue  # timestamps switched to decode stamps: same seek again
            # The keyframe found by the seek is displayed after times[0] (B-frame delay): go back further.
            if start <= 0:
                raise DataError(f"{self.path}: first decodable frame is later than the stream start")
            back_off = max(1.0, 2 * back_off)

    def _decode_from(self, start: float, times: np.ndarray) -> tuple[dict[float, av.VideoFrame], bool]:
        """Seek to ``start`` and pick the frames for ``times``: skipping unneeded frames where the packet
        stamps allow it, else decoding every frame. ``complete`` False: the seek must go further back."""
        self._seek(start)
        if self._can_skip and not self._use_dts:
            result = self._decode_planned(times)
            if result is not None:
                return result
            self._seek(start)
        return self._decode_until(times)

    def _decode_planned(self, times: np.ndarray) -> tuple[dict[float, av.VideoFrame], bool] | None:
        """Pick the frames for ``times`` from packet stamps, then decode only what they need
        (``vito.data.sparse_decode``). None where the stamps or the decoder's output are not as expected."""
        try:
            packets = packets_through(self._container, self._stream, times[-1], self._seconds)
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: unreadable data ({error_text(exc)})") from None
        if packets is None:
            return None
        plan = plan_stamps(packets, times, self._seconds, self.start_pts)
        if plan is None:
            return {}, False
        frames = self._decode_stamps(packets, set(plan.values()))
        if frames is None:
            return None
        return {t: frames[stamp] for t, stamp in plan.items()}, True

    def _decode_stamps(self, packets: list[av.Packet], needed: set[int]) -> dict[int, av.VideoFrame] | None:
        """``decode_stamps`` on this stream, a frame flagged corrupt after a seek checked (``_checked``)."""
        try:
            return decode_stamps(self._stream.codec_context, packets, needed, self._checked)
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: decoding failed ({error_text(exc)})") from None

    def _decode_until(self, times: np.ndarray) -> tuple[dict[float, av.VideoFrame], bool]:
        picked: dict[float, av.VideoFrame] = {}
        previous: av.VideoFrame | None = None
        index = 0
        last_t = -math.inf
        try:
            for frame in self._container.decode(self._stream):
                self._checked([frame])
                t = self._frame_time(frame)
                if t is None:
                    continue
                if t < last_t:
                    # The decoder emits frames in display order, so these presentation stamps are wrong
                    # (AVI with packed B-frames). Like FFmpeg's "best effort" stamps, fall back to the
                    # decode stamps, which are monotone, and read this group again.
                    if self._use_dts:
                        raise DataError(f"{self.path}: frame timestamps are not monotone")
                    self._use_dts = True
                    return {}, False
                last_t = t
                while index < len(times) and times[index] < t - TIME_EPSILON:
                    if previous is None:
                        if self._is_first(frame):  # a time before the first frame: clamp to it
                            picked[times[index]] = frame
                            index += 1
                            continue
                        return picked, False
                    picked[times[index]] = previous
                    index += 1
                if index == len(times):
                    return picked, True
                previous = frame
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: decoding failed ({error_text(exc)})") from None
        if previous is None:
            raise DataError(f"{self.path}: no decodable frame after {times[0]:.3f} s")
        for t in times[index:]:  # past the last frame: clamp to it
            picked[t] = previous
        return picked, True

    def iter_frames(self, max_frames: int, short_side: int | None = None) -> Iterator[torch.Tensor]:
        """The first ``max_frames`` frames in display order, each uint8 [H, W, 3]."""
        size = self._output_size(short_side)
        self._seek(0.0)
        try:
            for count, frame in enumerate(self._container.decode(self._stream)):
                if count >= max_frames:
                    return
                yield torch.from_numpy(self._to_rgb(frame, size))
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: decoding failed ({error_text(exc)})") from None

    # ----------------------------------------------------------------------------------------------
    # Helpers

    def _seek(self, seconds: float) -> None:
        target = self.start_pts + int(math.floor(seconds / self._time_base))
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: seek failed ({error_text(exc)})") from None
        self._from_start = seconds <= 0

    def _checked(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        """``frames``, unless one is flagged corrupt after a seek past the start (see ``_read_group``)."""
        if not self._from_start and any(frame.is_corrupt for frame in frames):
            raise _CorruptAfterSeek
        return frames

    def _stamp(self, frame: av.VideoFrame) -> int | None:
        first, second = (frame.dts, frame.pts) if self._use_dts else (frame.pts, frame.dts)
        return first if first is not None else second

    def _frame_time(self, frame: av.VideoFrame) -> float | None:
        stamp = self._stamp(frame)
        return None if stamp is None else self._seconds(stamp)

    def _seconds(self, stamp: int | np.ndarray) -> float | np.ndarray:
        """Stream timestamp(s) as seconds since the first frame."""
        return (stamp - self.start_pts) * self._time_base

    def _is_first(self, frame: av.VideoFrame) -> bool:
        stamp = self._stamp(frame)
        return stamp is not None and stamp <= self.start_pts

    def _to_rgb(self, frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
        """uint8 [H, W, 3] of ``frame`` as displayed, ``size = (width, height)`` after the rotation."""
        turns = self.info.rotation
        width, height = size if turns % 2 == 0 else size[::-1]
        rgb = _reformatter().reformat(frame, width, height, format="rgb24", threads=1).to_ndarray()
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def _output_size(self, short_side: int | None) -> tuple[int, int]:
        width, height = self.info.width, self.info.height
        return (width, height) if short_side is None else output_size(width, height, short_side)


_REFORMATTERS: dict[int, VideoReformatter] = {}  # process id -> that process's frame converter, never dropped


def _reformatter() -> VideoReformatter:
    """This process's frame converter (FFmpeg's scaler), scaling on one thread.

    Why: the scaler keeps a pool of slice threads in its context. A DataLoader worker forked from a process that
    had scaled frames inherited such a context without its threads, and its first scale, freeing that pool,
    waited forever on a condition variable (CI hung in tests/data/test_prescan.py; py-spy showed the worker in
    pthread_cond_destroy under avpriv_slicethread_free). On one thread no pool is made, and each process uses a
    converter of its own; an inherited one is kept, never freed. One thread is also what a loader worker should
    use: the workers already take the cores.
    """
    pid = os.getpid()
    if pid not in _REFORMATTERS:
        _REFORMATTERS[pid] = VideoReformatter()
    return _REFORMATTERS[pid]


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of a ``width x height`` video read at ``short_side`` (prepared shards round the same way)."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Duration in seconds from the stream header, else the container header, else None."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _is_image_format(name: str) -> bool:
    """FFmpeg opens single images as one-frame "videos"; its image demuxers are image2 and *_pipe."""
    return name == "image2" or name.endswith("_pipe")


def _seek_groups(sorted_times: np.ndarray, gap: float) -> list[np.ndarray]:
    """Split sorted times where consecutive ones are more than ``gap`` apart (one seek per group)."""
    cuts = np.nonzero(np.diff(sorted_times) > gap)[0] + 1
    return np.split(sorted_times, cuts)


# --------------------------------------------------------------------------------------------------
# Functional interface


def probe_video(path: str | Path) -> VideoInfo:
    with VideoReader(path) as reader:
        return reader.info


def read_frames(path: str | Path, times: Sequence[float] | np.ndarray, short_side: int | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3], the frames on screen at ``times`` (seconds from the first frame), in that order."""
    with VideoReader(path) as reader:
        return reader.frames_at(times, short_side)


def iter_frames(path: str | Path, max_frames: int, short_side: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the first ``max_frames`` frames (uint8 [H, W, 3]); the file is closed when the loop ends."""
    with VideoReader(path) as reader:
        yield from reader.iter_frames(max_frames, short_side)
