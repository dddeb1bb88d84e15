"""Do the filters earn their keep? Precision / recall of synthetic auto-labels before and after each filter.

    python benchmarks/filters_quality.py [--images 2000] [--seed 0] [--preset pipelines/quality-fld5b.yaml]

Ground truth is synthetic (random image sizes, boxes and classes); the "auto-labeler" output is that ground truth
with the errors auto-labelers make injected at fixed rates with a fixed seed (NOISE below). This is OUR noise
model, not a measurement on real data: it shows what each filter removes and what it costs, not how a real model
would fare. The filters run with the preset's defaults exactly as the preset file writes them (published values;
nothing is tuned to this benchmark), through the same Stage objects a pipeline builds, in batches of 8.

Matching: per image and class, predictions in descending score take the unmatched ground-truth box of highest
IoU (supervision's box_iou_batch) if it is at least 0.5. Predictions are the boxes not dropped (flagged ones count:
they are exported, for review). A box of no ontology class never matches.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv
import yaml

from autolabel.labels import DROPPED, Labels, Text
from autolabel.ontology import Ontology
from autolabel.registry import STAGE_GROUP, resolve
from autolabel.stage import Item, Stage, StageContext

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["person", "car", "dog", "cat", "bicycle", "chair", "bottle", "cup", "truck", "bird"]
OTHER_PHRASES = ["unicorn", "it", "the background", "spaceship", "shadow", "time", "dragon", "left side"]
BATCH = 8
TABLE = ("| filters | {what} | precision % | recall % | F1 % | Δ precision | Δ recall |\n"
         "|---|---:|---:|---:|---:|---:|---:|")

#: the injected errors: rate, and what each looks like
NOISE = {
    "missed": "10 % of ground-truth objects get no box (a floor on recall no filter can lift)",
    "true": "the other 90 %: the box jittered by N(0, 3 % of its side) per edge, score ~ Beta(5, 2)",
    "duplicate": "30 % of true boxes get a second box: jitter N(0, 8 %), score = the true box's x U(0.5, 0.95)",
    "low_score": "Poisson(2) per image: a random box and class, score U(0.02, 0.3)",
    "mislocalized": "5 % of true boxes get a shifted copy (0.6-1.0 of its size away), score U(0.3, 0.7)",
    "tiny": "Poisson(0.5) per image: 2-9 px a side, random class, score U(0.3, 0.8)",
    "whole_image": "10 % of images: a box within 1 % of every edge, random class, score U(0.3, 0.7)",
    "hallucinated": "Poisson(0.3) per image: a phrase of no ontology class ('unicorn', 'it', ...), score U(0.3, 0.8)",
    "captions": "one caption per image from templates; 10 % end in a loop ('and a cat' x 3-6)",
}


@dataclass
class Sample:
    width: int
    height: int
    gt_xyxy: np.ndarray
    gt_class: np.ndarray
    xyxy: list[np.ndarray] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    class_name: list[str] = field(default_factory=list)
    phrase: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    caption: str = ""
    caption_clean: bool = True

    def add(self, box: np.ndarray, score: float, cls: str, kind: str, phrase: str | None = None) -> None:
        self.xyxy.append(np.asarray(box, dtype=np.float64))
        self.score.append(float(score))
        self.class_name.append(cls)
        self.phrase.append(cls if phrase is None else phrase)
        self.kind.append(kind)


def random_box(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A ground-truth-like box: side log-uniform from 10 px to half the image, aspect 1:3 to 3:1, inside."""
    bw = float(np.exp(rng.uniform(np.log(10), np.log(0.5 * w))))
    bh = float(np.clip(bw * np.exp(rng.uniform(np.log(1 / 3), np.log(3))), 10, 0.8 * h))
    x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.array([x1, y1, x1 + bw, y1 + bh])


def jitter(rng: np.random.Generator, box: np.ndarray, frac: float) -> np.ndarray:
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    out = box + rng.normal(0, frac, 4) * size
    x1, y1, x2, y2 = out
    return np.array([min(x1, x2 - 1), min(y1, y2 - 1), max(x2, x1 + 1), max(y2, y1 + 1)])


def synthesize(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        w, h = int(rng.integers(320, 1921)), int(rng.integers(240, 1441))
        k = 1 + rng.poisson(4)
        gt = np.array([random_box(rng, w, h) for _ in range(k)])
        gt_class = rng.choice(CLASSES, k)
        s = Sample(w, h, gt, gt_class)
        for box, cls in zip(gt, gt_class):
            if rng.random() < 0.10:
                continue  # missed
            true = jitter(rng, box, 0.03)
            score = rng.beta(5, 2)
            s.add(true, score, cls, "true")
            if rng.random() < 0.30:
                s.add(jitter(rng, true, 0.08), score * rng.uniform(0.5, 0.95), cls, "duplicate")
            if rng.random() < 0.05:
                angle = rng.uniform(0, 2 * np.pi)
                shift = rng.uniform(0.6, 1.0) * np.array([box[2] - box[0], box[3] - box[1]])
                dx, dy = np.cos(angle) * shift[0], np.sin(angle) * shift[1]
                s.add(true + [dx, dy, dx, dy], rng.uniform(0.3, 0.7), cls, "mislocalized")
        for _ in range(rng.poisson(2)):
            s.add(random_box(rng, w, h), rng.uniform(0.02, 0.3), rng.choice(CLASSES), "low_score")
        for _ in range(rng.poisson(0.5)):
            side = rng.uniform(2, 9, 2)
            x1, y1 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            s.add(np.array([x1, y1, x1 + side[0], y1 + side[1]]), rng.uniform(0.3, 0.8), rng.choice(CLASSES), "tiny")
        if rng.random() < 0.10:
            e = rng.uniform(0, 0.01, 4) * [w, h, w, h]
            s.add(np.array([e[0], e[1], w - e[2], h - e[3]]), rng.uniform(0.3, 0.7), rng.choice(CLASSES), "whole_image")
        for _ in range(rng.poisson(0.3)):
            box, score = random_box(rng, w, h), rng.uniform(0.3, 0.8)
            s.add(box, score, "", "hallucinated", phrase=str(rng.choice(OTHER_PHRASES)))
        s.caption = caption(rng, gt_class)
        if rng.random() < 0.10:
            s.caption += f" and a {rng.choice(CLASSES)}" * int(rng.integers(3, 7))
            s.caption_clean = False
        samples.append(s)
    return samples


def caption(rng: np.random.Generator, classes: np.ndarray) -> str:
    adj = rng.choice(["red", "small", "large", "white", "old", "young", "black"])
    verb = rng.choice(["standing", "sitting", "parked", "lying", "waiting"])
    place = rng.choice(["the street", "a table", "the grass", "a sofa", "the road", "a shelf"])
    return f"a {adj} {classes[0]} {verb} on {place}"


def to_labels(s: Sample) -> Labels:
    labels = Labels(width=s.width, height=s.height,
                    texts=[Text(kind="caption", text=s.caption, score=None, stage="detect")])
    if s.xyxy:
        det = sv.Detections(
            xyxy=np.array(s.xyxy, dtype=np.float32),
            confidence=np.array(s.score, dtype=np.float32),
            data={"class_name": np.array(s.class_name, dtype=object), "phrase": np.array(s.phrase, dtype=object),
                  "kind": np.array(s.kind, dtype=object)},
        )
        labels.add(det, stage="detect", provenance={"task": "od"})
    return labels


def matches(s: Sample, labels: Labels) -> tuple[int, int, int]:
    """(true positives, predictions, ground truths) for one image."""
    det = labels.detections
    if not len(det):
        return 0, 0, len(s.gt_xyxy)
    keep = det.data["status"] != DROPPED
    xyxy, score, cls = det.xyxy[keep], det.confidence[keep], det.data["class_name"][keep]
    tp = 0
    for name in np.unique(cls):
        if not name:
            continue
        p = np.flatnonzero(cls == name)
        g = np.flatnonzero(s.gt_class == name)
        if not len(g):
            continue
        iou = sv.box_iou_batch(xyxy[p], s.gt_xyxy[g])
        taken = np.zeros(len(g), dtype=bool)
        for i in np.argsort(-score[p], kind="stable"):
            cand = np.where(taken, -1.0, iou[i])
            j = int(cand.argmax())
            if cand[j] >= 0.5:
                taken[j] = True
                tp += 1
    return tp, int(keep.sum()), len(s.gt_xyxy)


def score(samples: list[Sample], labels: list[Labels]) -> dict[str, float]:
    tp, pred, gt = np.sum([matches(s, lab) for s, lab in zip(samples, labels)], axis=0)
    p, r = tp / max(pred, 1), tp / max(gt, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12), "boxes": int(pred)}


def caption_score(samples: list[Sample], labels: list[Labels]) -> dict[str, float]:
    kept = np.array([lab.texts[0].status != DROPPED for lab in labels])
    clean = np.array([s.caption_clean for s in samples])
    p = (kept & clean).sum() / max(kept.sum(), 1)
    r = (kept & clean).sum() / max(clean.sum(), 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12), "boxes": int(kept.sum())}


def kinds_kept(labels: list[Labels]) -> dict[str, int]:
    out: dict[str, int] = {}
    for lab in labels:
        det = lab.detections
        if len(det):
            for kind, status in zip(det.data["kind"], det.data["status"]):
                if status != DROPPED:
                    out[kind] = out.get(kind, 0) + 1
    return out


def preset_stages(path: Path, ontology: Ontology) -> list[tuple[str, dict]]:
    """The preset's filter stages (every stage after its model stage), as (type, raw keys)."""
    raw = yaml.safe_load(path.read_text())["stages"]
    filters = [s for s in raw if "model" not in s]
    return [(s["type"], s) for s in filters]


def build(stage_type: str, raw: dict, ontology: Ontology) -> Stage:
    cls = resolve(STAGE_GROUP, stage_type)
    params = cls.Params.model_validate(raw)
    return cls(params.name or stage_type, params, StageContext(ontology=ontology))


def apply(stages: list[Stage], samples: list[Sample]) -> tuple[list[Labels], float]:
    labels = [to_labels(s) for s in samples]
    items = [Item(image=None, labels=lab) for lab in labels]  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        for stage in stages:
            batch = stage(batch)
    return labels, time.perf_counter() - t0


def row(name: str, m: dict[str, float], base: dict[str, float] | None = None) -> str:
    delta = "" if base is None else (f" | {100 * (m['precision'] - base['precision']):+.1f} | "
                                     f"{100 * (m['recall'] - base['recall']):+.1f}")
    tail = delta if base is not None else " | | "
    return (f"| {name} | {m['boxes']} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} | "
            f"{100 * m['f1']:.1f}{tail} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", type=Path, default=ROOT / "pipelines" / "quality-fld5b.yaml")
    args = ap.parse_args(argv)

    ontology = Ontology.from_config(CLASSES)
    samples = synthesize(args.images, args.seed)
    steps = preset_stages(args.preset, ontology)
    raw_labels, _ = apply([], samples)
    base = score(samples, raw_labels)
    gts = sum(len(s.gt_xyxy) for s in samples)
    print(f"{args.images} images, {gts} ground-truth boxes, {base['boxes']} predicted boxes, seed {args.seed}, "
          f"preset {args.preset.relative_to(ROOT) if args.preset.is_relative_to(ROOT) else args.preset}\n")

    header = TABLE.format(what="boxes kept")
    print("Each filter alone (defaults from the preset), on the raw auto-labels:\n")
    print(header)
    print(row("none (raw auto-labels)", base))
    for stage_type, raw in steps:
        labels, _ = apply([build(stage_type, raw, ontology)], samples)
        print(row(f"`{stage_type}`", score(samples, labels), base))

    print("\nThe preset's filters one after another (cumulative):\n")
    print(header)
    print(row("none (raw auto-labels)", base))
    stages: list[Stage] = []
    for stage_type, raw in steps:
        stages.append(build(stage_type, raw, ontology))
        labels, seconds = apply(stages, samples)
        print(row(f"+ `{stage_type}`", score(samples, labels), base))
    final = score(samples, labels)

    print("\nInjected boxes still kept (not dropped) after the preset, by kind:\n")
    before, after = kinds_kept(raw_labels), kinds_kept(labels)
    print("| kind | before | after |\n|---|---:|---:|")
    for kind in ["true", "duplicate", "low_score", "mislocalized", "tiny", "whole_image", "hallucinated"]:
        print(f"| {kind} | {before.get(kind, 0)} | {after.get(kind, 0)} |")

    cap_stages = [build(t, {"type": t}, ontology) for t in ("repetition", "text_length")]
    cap_raw = caption_score(samples, raw_labels)
    cap_labels, _ = apply(cap_stages, samples)
    print("\nCaptions (`repetition` then `text_length`, defaults):\n")
    print(TABLE.format(what="captions kept"))
    print(row("none", cap_raw))
    print(row("`repetition`, `text_length`", caption_score(samples, cap_labels), cap_raw))

    dp, dr = 100 * (final["precision"] - base["precision"]), 100 * (final["recall"] - base["recall"])
    ok = dp >= 20 and dr >= -2
    print(f"\nPreset: precision {dp:+.1f} points (target >= +20), recall {dr:+.1f} points (target >= -2): "
          f"{'met' if ok else 'NOT met'}; filters took {seconds:.2f} s for {args.images} images")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
