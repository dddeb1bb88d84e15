"""CVAT for video 1.1 XML: one ``annotations.xml`` per clip (``cvat_video/<clip>/annotations.xml``), a CVAT task's
annotations in interpolation mode, which CVAT imports as "CVAT 1.1" and Datumaro reads as ``cvat``.

Each track is a ``<track>`` of ``<box>`` shapes. Frame numbers are the file's (0-based decode index): every sampled
frame where the track has a box is a keyframe (CVAT interpolates the frames between two sampled ones); where the
track is missing on a sampled frame after being present, a copy of its last box with ``outside="1"`` ends it there
(and a later keyframe starts it again). A track present on the clip's last sampled frame stays to the end of the
task. Each box carries its score as the text attribute ``score``; the track's label is its class (see
:mod:`.tracks`). ``<meta>`` says the task's size, the ``step=N`` frame filter when clips were sampled with
``video.every``, and the frame size. Masks are not written (CVAT tracks boxes; the masks are in the YTVIS export).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..ontology import Ontology
from ..store import Store
from ..util import atomic_open, iso_utc
from .tracks import ClipTracks, Track, clip_names, clip_tracks

_PALETTE = ["#ff6037", "#33ddff", "#fa3253", "#34d1b7", "#ff007c", "#ddff33", "#24b353", "#b83df5", "#66ff66",
            "#32b7fa"]


def cvat_document(clip: ClipTracks, ontology: Ontology, name: str, dumped: float | None = None) -> ET.Element:
    """The ``<annotations>`` element of one clip. Pure (``dumped``: the time written in ``<meta>``)."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    size = clip.frame_count
    step = clip.clip.sampling.split("=", 1)[1] if (clip.clip.sampling or "").startswith("every=") else None
    for key, value in (("id", clip.clip.id), ("name", name), ("size", size), ("mode", "interpolation"),
                       ("overlap", 0), ("start_frame", 0), ("stop_frame", max(size - 1, 0)),
                       ("frame_filter", f"step={step}" if step else "")):
        ET.SubElement(task, key).text = str(value)
    labels = ET.SubElement(task, "labels")
    for k, class_name in enumerate(ontology.classes):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = class_name
        ET.SubElement(label, "color").text = _PALETTE[k % len(_PALETTE)]
        ET.SubElement(label, "type").text = "any"
        attribute = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
        for key, value in (("name", "score"), ("mutable", "True"), ("input_type", "text"), ("default_value", ""),
                           ("values", "")):
            ET.SubElement(attribute, key).text = value
    original = ET.SubElement(task, "original_size")
    ET.SubElement(original, "width").text = str(clip.clip.width)
    ET.SubElement(original, "height").text = str(clip.clip.height)
    ET.SubElement(meta, "dumped").text = iso_utc(dumped) or ""
    ET.SubElement(meta, "source").text = clip.clip.rel_path
    sampled = [index for _, index, _ in clip.frames]
    for track in clip.tracks:
        root.append(_track(track, sampled))
    return root


def _track(track: Track, sampled: list[int]) -> ET.Element:
    element = ET.Element("track", id=str(track.id), label=track.class_name, source="auto")
    at = {box.frame: box for box in track.boxes}
    first = track.boxes[0].frame
    last_box = None
    for frame in sampled:
        if frame < first:
            continue
        box = at.get(frame)
        if box is not None:
            x1, y1, x2, y2 = box.annotation.xyxy
            shape = _box(element, frame, x1, y1, x2, y2, outside=False)
            if box.annotation.score is not None:
                ET.SubElement(shape, "attribute", name="score").text = f"{box.annotation.score:.5f}"
            last_box = box
        elif last_box is not None:
            _box(element, frame, *last_box.annotation.xyxy, outside=True)
            last_box = None
    return element


def _box(parent: ET.Element, frame: int, x1: float, y1: float, x2: float, y2: float, outside: bool) -> ET.Element:
    return ET.SubElement(parent, "box", frame=str(frame), keyframe="1", outside="1" if outside else "0",
                         occluded="0", xtl=f"{x1:.2f}", ytl=f"{y1:.2f}", xbr=f"{x2:.2f}", ybr=f"{y2:.2f}",
                         z_order="0")


def write_cvat_video(store: Store, ontology: Ontology, path: str | Path, min_score: float = 0.0,
                     flagged: bool = True) -> list[str]:
    """Write ``<path>/<clip>/annotations.xml`` for every labeled clip; return the files written."""
    import time

    path = Path(path)
    names = clip_names(store)
    written = []
    for clip in clip_tracks(store, ontology, min_score=min_score, flagged=flagged):
        root = cvat_document(clip, ontology, names[clip.clip.id], dumped=time.time())
        ET.indent(root)
        target = path / names[clip.clip.id] / "annotations.xml"
        with atomic_open(target, "wb", encoding=None) as f:
            ET.ElementTree(root).write(f, encoding="utf-8", xml_declaration=True)
        written.append(str(target))
    return written
