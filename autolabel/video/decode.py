"""Clips → sampled RGB frames with their time stamps, streamed (PyAV, the ``video`` extra): one frame in memory
at a time here, whatever the clip's length.

Every problem is a ``ValueError`` with a one-line reason (the clip fails, the run goes on): a missing stream, a
limit of :class:`~.spec.VideoSpec` crossed (checked on the container's header before decoding, and again while
decoding, since headers can be wrong or missing), corrupt data.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import AutolabelError, one_line
from .spec import VideoSpec

_BLOCK = 1 << 20  # bytes read at a time when hashing a clip


@dataclass(frozen=True)
class ClipInfo:
    """What a clip's container says of its video stream (None: not said)."""

    width: int  # displayed size (rotation applied)
    height: int
    fps: float | None  # average frame rate
    duration: float | None  # seconds
    frames: int | None  # frame count the header gives
    codec: str
    rotation: int = 0  # degrees the stored frames are turned to be displayed (counter-clockwise)


@dataclass
class Frame:
    """One sampled frame: its place among the clip's sampled frames and in the file, its time, its pixels."""

    position: int  # 0, 1, 2, ... among the sampled frames
    index: int  # 0-based decode order among all of the stream's frames
    time: float  # seconds since the stream's start (presentation time stamp)
    image: Image.Image | None  # RGB, displayed orientation; None once the frame's labels are out


def require_av() -> Any:
    """PyAV, or a one-line error naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise AutolabelError("video inputs need PyAV: pip install 'autolabel[video]'") from None
    return av


@contextmanager
def _open(path: str) -> Iterator[Any]:
    """The container of a local file or an fsspec URL (``s3://...``), closed on exit."""
    av = require_av()
    handle = None
    if "://" in path:
        from ..intake import _filesystem

        fs, inner = _filesystem(path)
        handle = fs.open(inner, "rb")
    try:
        try:
            container = av.open(handle if handle is not None else path, mode="r")
        except (av.error.FFmpegError, OSError) as err:
            raise ValueError(f"not a readable video ({one_line(err)})") from None
        try:
            yield container
        finally:
            container.close()
    finally:
        if handle is not None:
            handle.close()


def probe(path: str) -> ClipInfo:
    """The clip's video stream as its header describes it (nothing decoded)."""
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream in the file")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        rotation = _first_rotation(container, stream)
        width, height = int(ctx.width), int(ctx.height)
        if rotation % 180:
            width, height = height, width
        return ClipInfo(width=width, height=height, fps=float(rate) if rate else None, duration=duration,
                        frames=int(stream.frames) or None, codec=ctx.name, rotation=rotation)


def _rotation(frame: Any) -> int:
    """A frame's display rotation (its display matrix: a phone's portrait clip), counter-clockwise degrees 0..359."""
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def _first_rotation(container: Any, stream: Any) -> int:
    """The display rotation of the stream's first frame (0 when none decodes: decoding reports that later)."""
    av = require_av()
    try:
        for frame in container.decode(stream):
            return _rotation(frame)
    except av.error.FFmpegError:
        pass
    return 0


def expected_frames(info: ClipInfo, spec: VideoSpec) -> int | None:
    """How many frames sampling will keep, from the header (None when it says too little to tell).

    >>> expected_frames(ClipInfo(64, 48, 30.0, 10.0, 300, "h264"), VideoSpec(fps=2))
    20
    >>> expected_frames(ClipInfo(64, 48, 30.0, 10.0, 300, "h264"), VideoSpec(every=7))
    43
    """
    total = info.frames or (round(info.duration * info.fps) if info.duration and info.fps else None)
    if spec.fps is not None:
        if info.duration is None:
            return None
        by_time = math.ceil(info.duration * spec.fps - 1e-9)
        return min(by_time, total) if total else by_time
    if total is None:
        return None
    return math.ceil(total / spec.every) if spec.every else total


def limit_problem(info: ClipInfo, size: int | None, spec: VideoSpec) -> str | None:
    """The first limit of ``spec`` the clip's header (and its size in bytes) crosses, as one line; None if none.

    >>> limit_problem(ClipInfo(64, 48, 30.0, 7200.0, None, "h264"), None, VideoSpec())
    'too long: 7,200 s exceeds video.max_seconds 3,600 s (raise it, or cut the clip)'
    """
    if size is not None and size > spec.max_bytes:
        return f"too large: {size:,} bytes exceeds video.max_bytes {spec.max_bytes:,} (raise it, or cut the clip)"
    if info.width * info.height > spec.max_pixels:
        return (f"frames too large: {info.width}x{info.height} = {info.width * info.height:,} pixels exceeds "
                f"video.max_pixels {spec.max_pixels:,} (raise it, or scale the clip down)")
    if info.duration is not None and info.duration > spec.max_seconds:
        return (f"too long: {info.duration:,.0f} s exceeds video.max_seconds {spec.max_seconds:,.0f} s "
                f"(raise it, or cut the clip)")
    expected = expected_frames(info, spec)
    if expected is not None and expected > spec.max_frames:
        return _too_many(expected, spec)
    return None


def _too_many(count: int, spec: VideoSpec) -> str:
    return (f"too many frames: {count:,} sampled ({spec.sampling()}) exceeds video.max_frames {spec.max_frames:,} "
            f"(sample fewer with video.fps or video.every, or raise video.max_frames)")


class Sampler:
    """Which decoded frames are kept: all, every N-th (by decode order), or ``fps`` per second (by time stamp:
    the first frame at or after each tick ``k / fps``, so a variable frame rate samples evenly in time).

    >>> s = Sampler(VideoSpec(fps=10))
    >>> [i for i in range(10) if s.keep(i, i / 25)]
    [0, 3, 5, 8]
    """

    def __init__(self, spec: VideoSpec):
        self.fps, self.every = spec.fps, spec.every
        self._next = 0.0  # fps: time of the next tick

    def keep(self, index: int, time: float) -> bool:
        if self.every is not None:
            return index % self.every == 0
        if self.fps is None:
            return True
        if time + 1e-6 < self._next:
            return False
        self._next = (math.floor(time * self.fps + 1e-6) + 1) / self.fps
        return True


def frames(path: str, spec: VideoSpec, start: int = 0) -> Iterator[Frame]:
    """The clip's sampled frames in order, from sampled position ``start`` on (earlier ones are decoded, since a
    codec needs them, but never converted to pixels). Limits are enforced as frames come."""
    av = require_av()
    sampler = Sampler(spec)
    position = 0
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.start_time or 0
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        index = -1
        decoded = container.decode(stream)
        while True:
            try:
                frame = next(decoded, None)
            except av.error.FFmpegError as err:
                raise ValueError(f"corrupt video data after frame {index} ({one_line(err)})") from None
            if frame is None:
                return
            index += 1
            if frame.pts is not None and stream.time_base is not None:
                time = float((frame.pts - base) * stream.time_base)
            else:
                time = index / rate if rate else float(index)
            if time > spec.max_seconds:
                raise ValueError(f"too long: frames past {spec.max_seconds:,.0f} s (video.max_seconds; the header "
                                 f"said less: raise it, or cut the clip)")
            if frame.width * frame.height > spec.max_pixels:
                raise ValueError(f"frames too large: {frame.width}x{frame.height} exceeds video.max_pixels "
                                 f"{spec.max_pixels:,} (raise it, or scale the clip down)")
            if not sampler.keep(index, time):
                continue
            if position >= spec.max_frames:
                raise ValueError(_too_many(position + 1, spec))
            if position >= start:
                yield Frame(position, index, round(time, 6), upright(frame.to_image(), _rotation(frame)))
            position += 1


def upright(image: Image.Image, rotation: int) -> Image.Image:
    """A stored frame turned as the clip's display rotation says (counter-clockwise degrees), as RGB.

    >>> upright(Image.new("RGB", (4, 2)), 90).size
    (2, 4)
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return image.transpose(turn[rotation]) if rotation in turn else image


def file_digest(path: str) -> tuple[str, int]:
    """The clip's sha256 and size, read in blocks (memory flat in the file's size)."""
    digest = hashlib.sha256()
    size = 0
    if "://" in path:
        from ..intake import _filesystem

        fs, inner = _filesystem(path)
        handle = fs.open(inner, "rb")
    else:
        handle = open(path, "rb")  # noqa: SIM115 — closed below
    with handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def file_size(path: str) -> int | None:
    """The size in bytes of a local file (None for a URL: learned while hashing)."""
    return None if "://" in path else os.path.getsize(path)
