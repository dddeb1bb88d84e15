"""``video:`` in the pipeline file: how clips are sampled, chunked and stitched, and the limits a clip must meet.

>>> VideoSpec().plan_identity()["chunk"]
32
>>> VideoSpec(fps=2).sampling()
'fps=2'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: file name extensions (lower case) of the clips ``--input`` picks up beside images
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})


def is_video_name(name: str) -> bool:
    """Whether a file name has a clip's extension (case-insensitive).

    >>> is_video_name("a/b.MP4"), is_video_name("b.jpg"), is_video_name("mp4")
    (True, False, False)
    """
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in VIDEO_EXTENSIONS


class VideoSpec(BaseModel):
    """How clips are labeled. Every limit is checked before a clip's frames are decoded (and again while decoding,
    where a container's header can lie); a clip over one fails with a one-line reason and the run goes on."""

    model_config = ConfigDict(extra="forbid")

    fps: float | None = Field(default=None, gt=0, le=1000)  # frames per second kept (by timestamp); None: all
    every: int | None = Field(default=None, ge=1, le=100_000)  # or every N-th decoded frame
    chunk: int = Field(default=32, ge=2, le=2048)  # sampled frames per chunk (tracking memory grows with it)
    overlap: int = Field(default=4, ge=1, le=2047)  # frames shared by consecutive chunks, to stitch ids across
    stitch_iou: float = Field(default=0.5, gt=0.0, le=1.0)  # mean IoU on the overlap for a chunk's id to continue
    max_frames: int = Field(default=10_000, ge=1)  # sampled frames per clip
    max_seconds: float = Field(default=3600.0, gt=0)  # clip duration
    max_pixels: int = Field(default=3840 * 2160, ge=1)  # frame width x height
    max_bytes: int = Field(default=4 * 1024**3, ge=1)  # file size

    @model_validator(mode="after")
    def _consistent(self) -> "VideoSpec":
        if self.fps is not None and self.every is not None:
            raise PydanticCustomError("invalid", "give fps or every, not both (fps samples by time, every by count)")
        if self.overlap >= self.chunk:
            raise PydanticCustomError(
                "invalid", f"overlap ({self.overlap}) must be smaller than chunk ({self.chunk})"
            )
        return self

    def sampling(self) -> str:
        """The sampling rule in words: ``fps=2``, ``every=5`` or ``all``."""
        if self.fps is not None:
            return f"fps={self.fps:g}"
        return f"every={self.every}" if self.every is not None else "all"

    def plan_identity(self) -> dict[str, Any]:
        """What decides which frames a chunk holds (and so its labels): part of a clip's hash; limits are not."""
        return {"sampling": self.sampling(), "chunk": self.chunk, "overlap": self.overlap,
                "stitch_iou": self.stitch_iou}
