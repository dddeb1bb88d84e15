"""MOT 1.1 sequences (what CVAT exports as "MOT 1.1" and Datumaro reads as ``mot_seq``): one folder per clip.

::

    mot/<clip>/gt/gt.txt       frame, track id, x, y, w, h, not-ignored (1), class id, visibility (1)
    mot/<clip>/gt/labels.txt   the ontology's classes, one a line: class id k is line k (1-based)

``frame`` is the frame's number in the file, 1-based (decode index + 1): with sampling, the numbers skip what was
not sampled, and frames extracted with ``ffmpeg -i clip.mp4 img1/%06d.jpg`` carry the same numbers. Boxes are the
visible boxes in pixels, ``x, y`` the top-left corner; track ids are the clip's (1, 2, ...). Lines are sorted by
frame, then track. py-motmetrics reads ``gt.txt`` with ``motmetrics.io.loadtxt(path, fmt="mot15-2D")``.
"""

from __future__ import annotations

from pathlib import Path

from ..ontology import Ontology
from ..store import Store
from ..util import atomic_open
from .tracks import ClipTracks, clip_names, clip_tracks


def mot_lines(clip: ClipTracks) -> list[str]:
    """The ``gt.txt`` lines of one clip, sorted by frame then track id. Pure."""
    rows = []
    for track in clip.tracks:
        for box in track.boxes:
            x1, y1, x2, y2 = box.annotation.xyxy
            rows.append((box.frame + 1, track.id, x1, y1, x2 - x1, y2 - y1, box.annotation.category + 1))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [f"{f},{t},{_num(x)},{_num(y)},{_num(w)},{_num(h)},1,{c},1" for f, t, x, y, w, h, c in rows]


def _num(value: float) -> str:
    """A coordinate with at most 3 decimals, no trailing zeros (``12``, ``12.5``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def write_mot(store: Store, ontology: Ontology, path: str | Path, min_score: float = 0.0,
              flagged: bool = True) -> list[str]:
    """Write one MOT sequence folder per labeled clip under ``path``; return the files written."""
    path = Path(path)
    names = clip_names(store)
    written = []
    for clip in clip_tracks(store, ontology, min_score=min_score, flagged=flagged):
        gt = path / names[clip.clip.id] / "gt"
        with atomic_open(gt / "gt.txt") as f:
            f.writelines(line + "\n" for line in mot_lines(clip))
        with atomic_open(gt / "labels.txt") as f:
            f.writelines(name + "\n" for name in ontology.classes)
        written += [str(gt / "gt.txt"), str(gt / "labels.txt")]
    return written
