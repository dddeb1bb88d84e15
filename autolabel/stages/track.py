"""Tracking stages: objects that keep their identity through a clip (``temporal``: a chunk of frames at a time).

* ``track`` (model ``sam3_video``) — SAM 3's video model: the ontology's prompts (or ``prompts:``) are detected on
  every frame and matched to masklets; each object is a row per frame with its mask, box, class (its prompt's),
  the prompt (``phrase``), score and ``track_id``. New objects are picked up on any frame.
* ``track_boxes`` (model ``sam3_tracker_video``) — any detector's boxes seed SAM 3's tracker: on each keyframe (the
  chunk's first frame, then every ``every``-th), the boxes of ``from_stages`` that overlap no tracked object's box
  on the frame before by ``seed_iou`` or more start new objects there, with the box's class; every object is then
  followed on every later frame. A row's score is the tracker's object score; ``seed_score`` is the seeding box's.
  The seeding rows (every row of ``from_stages`` in the chunk) are superseded by the tracks: they stay in the store,
  dropped with the reason ``tracked``.

Ids are chunk-local (0, 1, ...); the clip loop (:mod:`autolabel.video.loop`) stitches them onto the clip's. An image
(no ``item.frame``) is a clip of one frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import supervision as sv
from pydantic import Field

from ..errors import ConfigError
from ..labels import DROPPED
from ..models.contract import BoxTracker, ConceptTracker
from ..models.outputs import clip_boxes
from ..stage import Item, ModelStage, ModelStageParams, StageContext

#: the reason code of a detector row whose object a ``track_boxes`` stage tracks
TRACKED = "tracked"


def runs(items: list[Item]) -> Iterator[list[Item]]:
    """The items as clips to track: consecutive frames of one chunk together; every image (or loose frame) alone."""
    group: list[Item] = []
    for item in items:
        f = item.frame
        if group and f is not None and group[-1].frame is not None and (f.clip, f.chunk) == (
                group[-1].frame.clip, group[-1].frame.chunk) and f.position == group[-1].frame.position + 1:
            group.append(item)
            continue
        if group:
            yield group
        group = [item]
    if group:
        yield group


class TrackParams(ModelStageParams):
    #: noun phrases to track, each mapped to its ontology class; default: every prompt of the ontology
    prompts: list[str] | None = None
    #: a detection's score (query × presence) to count; default: the checkpoint's (facebook/sam3: 0.5)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: a detection matching no tracked object starts a new one from this score; default: the checkpoint's (0.7)
    new_object_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class Track(ModelStage):
    """SAM 3's video model: every prompt's objects, tracked with stable ids (see the module docstring)."""

    Params = TrackParams
    params: TrackParams
    model_types = ("sam3_video",)
    model_protocol = ConceptTracker
    temporal = True

    def __init__(self, name: str, params: TrackParams, context: StageContext):
        super().__init__(name, params, context)
        ontology = context.ontology
        if params.prompts is not None:
            prompts = list(dict.fromkeys(" ".join(p.split()) for p in params.prompts if p.strip()))
            if not prompts:
                raise ConfigError("prompts: must be a non-empty list of non-empty strings (or left out: the "
                                  "ontology's)")
            unmapped = [p for p in prompts if ontology.class_of(p) is None]
            if unmapped:
                raise ConfigError(f"prompts: {unmapped[0]!r} names no ontology class (known: "
                                  f"{', '.join(ontology.classes) or 'the ontology is empty'})")
        else:
            prompts = ontology.all_prompts()
            if not prompts:
                raise ConfigError("prompts: none to track (the ontology is empty: add classes, or set prompts:)")
        self.prompts = prompts
        self.classes = [ontology.class_of(p) or "" for p in prompts]

    def __call__(self, items: list[Item]) -> list[Item]:
        model: ConceptTracker = self.model
        threshold, fresh = self.params.threshold, self.params.new_object_threshold
        provenance = self.provenance(
            model, "video_concept_tracking", prompts=list(self.prompts),
            threshold=threshold if threshold is not None else declared_value(model, "default_threshold"),
            new_object_threshold=fresh if fresh is not None else declared_value(model, "default_new_object_threshold"),
        )
        for group in runs(items):
            found = model.track_concepts([item.image for item in group], self.prompts, threshold=threshold,
                                         new_object_threshold=fresh)
            for item, masklets in zip(group, found):
                which = np.asarray(masklets.prompts, np.int64)
                det = sv.Detections(
                    xyxy=clip_boxes(np.asarray(masklets.xyxy, np.float32), item.image.width, item.image.height),
                    mask=np.asarray(masklets.masks, bool),
                    confidence=np.asarray(masklets.scores, np.float32),
                    data={"class_name": np.array([self.classes[k] for k in which], dtype=object),
                          "phrase": np.array([self.prompts[k] for k in which], dtype=object),
                          "has_mask": np.ones(len(which), bool),
                          "track_id": np.asarray(masklets.ids, np.float64)},
                )
                item.labels.add(det, stage=self.name, provenance=provenance)
        return items


def declared_value(model: object, name: str) -> float | None:
    """A model's default for a threshold it exposes (None when it has none)."""
    value = getattr(model, name, None)
    return float(value) if isinstance(value, (int, float)) else None


class TrackBoxesParams(ModelStageParams):
    stage_refs = ("from_stages",)
    #: earlier stages whose boxes (rows not dropped, with a class) seed tracks
    from_stages: list[str] = Field(min_length=1)
    #: keyframes: the chunk's first frame, then every N-th frame (boxes on other frames are not looked at)
    every: int = Field(default=1, ge=1, le=10_000)
    #: a box overlapping a tracked object's box on the frame before by this IoU is that object, not a new one
    seed_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    #: boxes scored below this seed nothing (an unknown score passes)
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)


class TrackBoxes(ModelStage):
    """A detector's boxes propagated with SAM 3's tracker (see the module docstring)."""

    Params = TrackBoxesParams
    params: TrackBoxesParams
    model_types = ("sam3_tracker_video",)
    model_protocol = BoxTracker
    temporal = True

    def __call__(self, items: list[Item]) -> list[Item]:
        model: BoxTracker = self.model
        p = self.params
        provenance = self.provenance(model, "video_box_tracking", from_stages=list(p.from_stages), every=p.every,
                                     seed_iou=p.seed_iou, min_score=p.min_score)
        for group in runs(items):
            tracking = model.box_tracking([item.image for item in group])
            seeded: dict[int, tuple[str, str, float]] = {}  # object id → (class, phrase, seed score)
            previous = np.zeros((0, 4), np.float32)
            for k, item in enumerate(group):
                seeds = self._seeds(item) if k % p.every == 0 else []
                new = []
                if seeds:
                    boxes = np.stack([box for box, _, _, _ in seeds]).astype(np.float32)
                    known = np.zeros(len(seeds), bool)
                    if len(previous):
                        known = sv.box_iou_batch(boxes, previous).max(axis=1) >= p.seed_iou
                    for (box, name, phrase, score), old in zip(seeds, known):
                        if not old:
                            seeded[len(seeded)] = (name, phrase, score)
                            new.append((len(seeded) - 1, box))
                self._supersede(item)
                masklets = tracking.step(k, new)
                previous = np.asarray(masklets.xyxy, np.float32)
                info = [seeded[int(i)] for i in masklets.ids]
                det = sv.Detections(
                    xyxy=clip_boxes(previous, item.image.width, item.image.height),
                    mask=np.asarray(masklets.masks, bool),
                    confidence=np.asarray(masklets.scores, np.float32),
                    data={"class_name": np.array([c for c, _, _ in info], dtype=object),
                          "phrase": np.array([ph for _, ph, _ in info], dtype=object),
                          "has_mask": np.ones(len(info), bool),
                          "seed_score": np.array([s for _, _, s in info], np.float32),
                          "track_id": np.asarray(masklets.ids, np.float64)},
                )
                item.labels.add(det, stage=self.name, provenance=provenance)
        return items

    def _rows(self, item: Item) -> np.ndarray:
        data = item.labels.detections.data
        if not len(item.labels.detections):
            return np.zeros(0, bool)
        return np.isin(data["stage"].astype(str), self.params.from_stages) & (data["status"] != DROPPED)

    def _seeds(self, item: Item) -> list[tuple[np.ndarray, str, str, float]]:
        """(box, class, phrase, score) of the item's seeding rows, in row order."""
        det = item.labels.detections
        data = det.data
        pick = self._rows(item) & (data["class_name"].astype(str) != "") if len(det) else np.zeros(0, bool)
        out = []
        for i in np.flatnonzero(pick):
            score = float(det.confidence[i])
            if score < self.params.min_score:  # NaN < x is False: an unknown score seeds
                continue
            out.append((det.xyxy[i], str(data["class_name"][i]), str(data["phrase"][i]), score))
        return out

    def _supersede(self, item: Item) -> None:
        """The seeding rows are now tracks: dropped, with the reason ``tracked``."""
        hit = self._rows(item)
        if hit.any():
            data = item.labels.detections.data
            data["status"] = np.where(hit, DROPPED, data["status"]).astype(object)
            data["reason"] = np.where(hit, TRACKED, data["reason"]).astype(object)
