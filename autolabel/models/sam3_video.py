"""SAM 3's video models through transformers: text concepts tracked through a clip (``sam3_video``), and boxes
propagated through a clip (``sam3_tracker_video``), both from the one ``facebook/sam3`` checkpoint (loaded as
:func:`autolabel.models.sam3.load_sam3` loads its image parts).

Both work on one chunk of consecutive frames at a time (:mod:`autolabel.video`): the frames are preprocessed into
one session, so memory is bounded by the chunk, not the clip. Object ids are the session's (chunk-local); the clip
loop stitches them across chunks.

* :class:`Sam3Video` — ``Sam3VideoModel`` + ``Sam3VideoProcessor``: each frame is detected for every prompt and the
  detections are matched to the tracked masklets (new objects are picked up on any frame); transformers'
  ``propagate_in_video_iterator`` and ``postprocess_outputs`` as documented (with :class:`CvUtilsFallback` where
  transformers cannot fetch its hub kernel: it would skip NMS). The thresholds are the checkpoint's
  unless the stage sets them: ``score_threshold_detection`` (a detection counts) and ``new_det_thresh`` (a detection
  that matches no masklet starts a new one). Text features are computed once per prompt per model and handed to
  each chunk's session.
* :class:`Sam3TrackerVideo` — ``Sam3TrackerVideoModel`` + ``Sam3TrackerVideoProcessor``: boxes given on any frame
  start objects there (:class:`BoxTracking`, one frame at a time, so that a stage can decide which of a frame's
  boxes are new from the masks of the frame before); every object is followed on every later frame of the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .catalog import checkpoints_of
from .hub import CheckpointModel
from .sam3 import load_sam3

if TYPE_CHECKING:
    from PIL import Image

    from ..config import ModelSpec


@dataclass
class Masklets:
    """The tracked objects of one frame: ``ids`` (N,) chunk-local object ids, ``scores`` (N,), ``xyxy`` (N, 4) float32
    pixels (the mask's extent, pixel edges: :func:`boxes_of`), ``masks`` (N, H, W) bool at the frame's size,
    ``prompts`` (N,) the index of the prompt that found each (-1 for objects started from a box)."""

    ids: np.ndarray
    scores: np.ndarray
    xyxy: np.ndarray
    masks: np.ndarray
    prompts: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> "Masklets":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                   np.zeros((0, height, width), bool), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy pixel-edge boxes of (N, H, W) bool masks (zeros for an empty mask).

    >>> m = np.zeros((1, 4, 5), bool); m[0, 1:3, 2:4] = True
    >>> boxes_of(m).tolist()
    [[2.0, 1.0, 4.0, 3.0]]
    """
    out = np.zeros((len(masks), 4), np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            out[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


class Sam3Video(CheckpointModel):
    """Model type ``sam3_video``: ``facebook/sam3`` (a ``sam3_video`` checkpoint) tracking text concepts."""

    checkpoint_types = checkpoints_of("sam3_video")
    task = "video_concept_tracking"
    max_prompt_tokens = 32

    def __init__(self, model: Any, processor: Any, spec: "ModelSpec", device: str, dtype: Any):
        super().__init__(model, processor, spec, device, dtype)
        self._text: dict[str, Any] = {}  # prompt → its text features (the detector's), shared by every chunk
        self.text_encoder_calls = 0

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Sam3Video":
        model, processor, device, dtype = load_sam3(spec, "Sam3VideoModel", "Sam3VideoProcessor", None,
                                                    cls.checkpoint_types)
        install_cv_utils_fallback()
        return cls(model, processor, spec, device, dtype)

    @property
    def default_threshold(self) -> float:
        return float(self.model.config.score_threshold_detection)

    @property
    def default_new_object_threshold(self) -> float:
        return float(self.model.config.new_det_thresh)

    def track_concepts(
        self, frames: Sequence["Image.Image"], prompts: Sequence[str], threshold: float | None = None,
        new_object_threshold: float | None = None,
    ) -> list[Masklets]:
        """The masklets of every prompt on each of ``frames`` (consecutive frames of one clip, all one size); an object
        whose mask is empty on a frame (transformers' non-overlap constraint can take all of it) is left out of it."""
        import torch

        if not frames:
            return []
        height, width = frames[0].height, frames[0].width
        if not prompts:
            return [Masklets.empty(height, width) for _ in frames]
        model, processor = self.model, self.processor
        session = processor.init_video_session(video=list(frames), inference_device=self.device, dtype=self.dtype)
        processor.add_text_prompt(session, list(prompts))
        for prompt_id, text in session.prompts.items():
            if text in self._text:
                session.prompt_embeddings[prompt_id] = self._text[text]
        saved = model.score_threshold_detection, model.new_det_thresh
        model.score_threshold_detection = self.default_threshold if threshold is None else threshold
        model.new_det_thresh = self.default_new_object_threshold if new_object_threshold is None \
            else new_object_threshold
        out: dict[int, Masklets] = {}
        index = {text: k for k, text in enumerate(prompts)}
        try:
            with torch.inference_mode():
                for output in model.propagate_in_video_iterator(session):
                    result = processor.postprocess_outputs(session, output)
                    out[int(output.frame_idx)] = _masklets(result, index, height, width)
        finally:
            model.score_threshold_detection, model.new_det_thresh = saved
        for prompt_id, text in session.prompts.items():
            if text not in self._text and prompt_id in session.prompt_embeddings:
                self._text[text] = session.prompt_embeddings[prompt_id]
                self.text_encoder_calls += 1
        return [out.get(k, Masklets.empty(height, width)) for k in range(len(frames))]


class CvUtilsFallback:
    """What ``Sam3VideoModel`` asks of the hub kernel ``kernels-community/cv-utils``, in torch and scipy.

    transformers 5.25 fetches that compiled kernel from the hub (``kernels`` package) for the detections' mask NMS
    (``det_nms_thresh``), hole filling and sprinkle removal; where it cannot (no ``kernels`` package, offline, a CPU)
    it logs a warning and *skips* them: every detection above the threshold becomes an object, duplicates included,
    and each costs a tracker pass per frame. :func:`install_cv_utils_fallback` puts this in its place then.
    """

    @staticmethod
    def generic_nms(ious: Any, probs: Any, iou_threshold: float, use_iou_matrix: bool = True) -> Any:
        """Greedy NMS on a precomputed IoU matrix: the best-scored first, then each one overlapping none kept more
        than ``iou_threshold``; the kept indices."""
        import torch

        order = torch.argsort(probs, descending=True).tolist()
        iou = ious.float().cpu()
        kept: list[int] = []
        for i in order:
            if all(float(iou[i, k]) <= iou_threshold for k in kept):
                kept.append(i)
        return torch.as_tensor(sorted(kept), dtype=torch.long, device=probs.device)

    @staticmethod
    def cc_2d(mask: Any, get_counts: bool = True) -> tuple[Any, Any]:
        """8-connected components of (N, 1, H, W) uint8 masks: per pixel its component's label and area."""
        import torch
        from scipy import ndimage

        array = mask.cpu().numpy()
        labels = np.zeros(array.shape, np.int32)
        counts = np.zeros(array.shape, np.int32)
        for n in range(array.shape[0]):
            lab, _ = ndimage.label(array[n, 0], structure=np.ones((3, 3), int))
            labels[n, 0] = lab
            areas = np.bincount(lab.ravel())
            areas[0] = 0
            counts[n, 0] = areas[lab]
        return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)


def install_cv_utils_fallback() -> bool:
    """Give ``Sam3VideoModel`` :class:`CvUtilsFallback` when transformers could not load its hub kernel (True when
    installed; nothing changes when the kernel loaded, or when a transformers version has no such hook)."""
    try:
        from transformers.models.sam3_video import modeling_sam3_video as video
    except ImportError:
        return False
    loader = getattr(video, "_load_cv_utils_kernel_once", None)
    if loader is None or not hasattr(video, "cv_utils_kernel"):
        return False
    loader()
    if video.cv_utils_kernel is False:
        video.cv_utils_kernel = CvUtilsFallback()
        return True
    return isinstance(video.cv_utils_kernel, CvUtilsFallback)


def _masklets(result: dict[str, Any], index: dict[str, int], height: int, width: int) -> Masklets:
    """transformers' post-processed frame as :class:`Masklets` (objects in id order)."""
    ids = result["object_ids"].cpu().numpy().astype(np.int64)
    if not len(ids):
        return Masklets.empty(height, width)
    prompt_of = {int(i): index[text] for text, obj in result["prompt_to_obj_ids"].items() for i in obj}
    masks = result["masks"].cpu().numpy().astype(bool)
    present = masks.reshape(len(masks), -1).any(axis=1)  # the non-overlap constraint can empty a mask: not there
    scores = result["scores"].float().cpu().numpy().astype(np.float32)
    return Masklets(ids=ids[present], scores=scores[present], xyxy=boxes_of(masks[present]), masks=masks[present],
                    prompts=np.array([prompt_of[int(i)] for i in ids[present]], np.int64))


class Sam3TrackerVideo(CheckpointModel):
    """Model type ``sam3_tracker_video``: ``facebook/sam3``'s tracker, propagating boxes through a clip."""

    checkpoint_types = checkpoints_of("sam3_tracker_video")
    task = "video_box_tracking"

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Sam3TrackerVideo":
        model, processor, device, dtype = load_sam3(spec, "Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor",
                                                    None, cls.checkpoint_types)
        return cls(model, processor, spec, device, dtype)

    def box_tracking(self, frames: Sequence["Image.Image"]) -> "BoxTracking":
        """A session over ``frames`` (consecutive frames of one clip, all one size), stepped one frame at a time."""
        return BoxTracking(self, frames)


class BoxTracking:
    """Objects started from boxes and followed frame by frame: :meth:`step` frame 0, 1, 2, ... in order."""

    def __init__(self, owner: Sam3TrackerVideo, frames: Sequence["Image.Image"]):
        self.owner = owner
        self.height, self.width = frames[0].height, frames[0].width
        self.session = owner.processor.init_video_session(video=list(frames), inference_device=owner.device,
                                                          dtype=owner.dtype)
        self.next_frame = 0

    def step(self, frame: int, new: Sequence[tuple[int, np.ndarray]] = ()) -> Masklets:
        """Frame ``frame``'s masklets, after starting the objects ``new`` ((object id, xyxy pixels) pairs) on it.

        Scores are the tracker's object scores (sigmoid of its presence logit); objects whose mask is empty on this
        frame are left out of it (they may come back later)."""
        import torch

        if frame != self.next_frame:
            raise ValueError(f"frames are tracked in order: expected frame {self.next_frame}, got {frame}")
        self.next_frame += 1
        processor, session = self.owner.processor, self.session
        if new:
            processor.add_inputs_to_inference_session(
                session, frame_idx=frame, obj_ids=[int(i) for i, _ in new],
                input_boxes=[[[float(v) for v in box] for _, box in new]],
            )
        if session.get_obj_num() == 0:
            return Masklets.empty(self.height, self.width)
        with torch.inference_mode():
            output = self.owner.model(inference_session=session, frame_idx=frame)
            masks = processor.post_process_masks([output.pred_masks], original_sizes=[[self.height, self.width]],
                                                 binarize=True)[0]
        masks = masks[:, 0].cpu().numpy().astype(bool)
        scores = torch.sigmoid(output.object_score_logits.float()).reshape(-1).cpu().numpy().astype(np.float32)
        ids = np.asarray([int(i) for i in output.object_ids], np.int64)
        present = masks.reshape(len(masks), -1).any(axis=1)
        return Masklets(ids=ids[present], scores=scores[present], xyxy=boxes_of(masks[present]),
                        masks=masks[present], prompts=np.full(int(present.sum()), -1, np.int64))
