"""YouTube-VIS style JSON: every labeled clip's tracks with a mask per sampled frame, as COCO RLE (pycocotools).

::

    {"info": {...}, "licenses": [],
     "videos": [{"id": <clip id>, "width": W, "height": H, "length": <sampled frames>,
                 "file_names": ["<clip>/<frame number, 6 digits>.jpg", ...], "fps": 10.0, "rel_path": "a.mp4"}],
     "categories": [{"id": 1, "name": "car", "supercategory": "object"}, ...],   # the ontology, 1-based
     "annotations": [{"id": 1, "video_id": <clip id>, "category_id": 1, "iscrowd": 0, "track_id": 3,
                      "width": W, "height": H, "score": <mean box score>,
                      "segmentations": [<RLE> | null, ...],   # one per sampled frame, in order
                      "bboxes": [[x, y, w, h] | null, ...], "areas": [<pixels> | null, ...]}]}

The per-frame lists line up with ``file_names``: ``null`` where the track has no box on that frame. RLEs are
compressed COCO RLE (``counts`` a string), decoded by ``pycocotools.mask.decode``; a box kept without a mask has a
``null`` segmentation beside its box (the format is for mask trackers). Frame names use the file's frame numbers
(decode index + 1), as the MOT export does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..ontology import Ontology
from ..store import Store
from ..util import atomic_open
from .geometry import rle_area
from .tracks import ClipTracks, clip_names, clip_tracks


def ytvis_video(clip: ClipTracks, name: str) -> dict[str, Any]:
    c = clip.clip
    return {"id": c.id, "width": c.width, "height": c.height, "length": len(clip.frames),
            "file_names": [f"{name}/{index + 1:06d}.jpg" for _, index, _ in clip.frames], "fps": c.fps,
            "rel_path": c.rel_path}


def ytvis_annotations(clip: ClipTracks, first_id: int = 1) -> list[dict[str, Any]]:
    """One annotation per track of the clip, ids from ``first_id``. Pure."""
    slot = {position: k for k, (position, _, _) in enumerate(clip.frames)}
    out = []
    for n, track in enumerate(clip.tracks):
        segmentations: list[Any] = [None] * len(clip.frames)
        bboxes: list[Any] = [None] * len(clip.frames)
        areas: list[Any] = [None] * len(clip.frames)
        for box in track.boxes:
            k = slot[box.position]
            x1, y1, x2, y2 = box.annotation.xyxy
            bboxes[k] = [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]
            rle = box.annotation.rle
            if rle is not None:
                segmentations[k] = {"size": list(rle["size"]), "counts": rle["counts"]}
                areas[k] = int(rle_area(rle))
            else:
                areas[k] = round((x2 - x1) * (y2 - y1), 3)
        score = track.score
        out.append({"id": first_id + n, "video_id": clip.clip.id, "category_id": track.category + 1, "iscrowd": 0,
                    "track_id": track.id, "width": clip.clip.width, "height": clip.clip.height,
                    "score": None if score is None else round(score, 5),
                    "segmentations": segmentations, "bboxes": bboxes, "areas": areas})
    return out


def write_ytvis(store: Store, ontology: Ontology, path: str | Path, min_score: float = 0.0,
                flagged: bool = True) -> list[str]:
    """Write the YTVIS JSON (videos first, then annotations: two passes over the clips, one clip in memory)."""
    path = Path(path)
    names = clip_names(store)
    categories = [{"id": k + 1, "name": c, "supercategory": "object"} for k, c in enumerate(ontology.classes)]
    with atomic_open(path) as out:
        out.write('{"info": {"description": "autolabel video tracks", "version": "1.0"}, "licenses": [],\n')
        out.write(' "categories": ' + json.dumps(categories) + ',\n "videos": [')
        for n, clip in enumerate(clip_tracks(store, ontology, min_score=min_score, flagged=flagged)):
            out.write(("," if n else "") + "\n  " + json.dumps(ytvis_video(clip, names[clip.clip.id])))
        out.write('\n ],\n "annotations": [')
        next_id = 1
        for clip in clip_tracks(store, ontology, min_score=min_score, flagged=flagged):
            for ann in ytvis_annotations(clip, next_id):
                out.write(("," if next_id > 1 else "") + "\n  " + json.dumps(ann, separators=(",", ":")))
                next_id += 1
        out.write("\n ]}\n")
    return [str(path)]
