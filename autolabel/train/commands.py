"""``autolabel train`` and ``autolabel refine``: argparse subcommands over :mod:`.api` and :mod:`.refine`.

``cli.py`` registers them with :func:`add_parsers` and hands a parsed command to :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ExitCode

COMMANDS = ("train", "refine")


def add_parsers(sub: Any) -> None:
    """Add ``train`` and ``refine`` to the ``autolabel`` subcommands."""
    train = sub.add_parser(
        "train", help="fine-tune Florence-2 on reviewed labels (writes a model folder a pipeline loads)",
        description="Fine-tune a native Florence-2 checkpoint on ground truth (COCO, YOLO, Pascal VOC, autolabel "
        "pull output, or a run's output folder) for one task; validation AP (autolabel's eval on parsed "
        "generations) picks the best epoch and stops early. OUT then loads as a pipeline's models.<name>.id.",
    )
    train.add_argument("--model", required=True, help="the base: a hub id (florence-community/Florence-2-base) "
                       "or a folder, a trained one included")
    train.add_argument("--revision", help="hub revision of --model (default: the cached one)")
    _data_options(train)
    train.add_argument("--output", "-o", required=True, metavar="OUT", help="folder to write the trained model to")
    train.add_argument("--resume", action="store_true", help="continue the training whose checkpoint is in OUT")
    train.add_argument("--overwrite", action="store_true", help="replace a trained model (or checkpoint) in OUT")
    _training_options(train)

    refine = sub.add_parser(
        "refine", help="rounds of run → train → relabel → merge, while validation AP improves",
        description="The data engine's refinement loop: label the images with the pipeline, fine-tune its "
        "Florence-2 model on the reviewed labels (and the merged labels of the images nobody reviewed), relabel "
        "with the trained model, merge old and new labels per image; evaluate before and after per class; stop "
        "when a round no longer improves validation AP. Each round's run, model and merged labels go to "
        "OUT/round-N/; a second call continues after the rounds done (review between calls: push a round's merged "
        "labels, pull the review, pass it as --gt).",
    )
    refine.add_argument("pipeline", help="pipeline file (YAML) with the Florence-2 model to refine")
    refine.add_argument("--model-name", help="the models: entry to train (default: the pipeline's one florence2 model)")
    _data_options(refine)
    refine.add_argument("--input", "-i", action="append", help="images to label (default: --images)")
    refine.add_argument("--output", "-o", required=True, metavar="OUT", help="folder of the rounds")
    refine.add_argument("--rounds", type=int, help="most rounds (default 3)")
    refine.add_argument("--merge", choices=["fusion", "agreement"], help="how old and new labels merge (default "
                        "fusion: every label kept, the ones both rounds found fused; agreement: only those)")
    refine.add_argument("--merge-iou", type=float, help="IoU at which two rounds' boxes are one object (default 0.55)")
    refine.add_argument("--min-gain", type=float, help="least validation AP gain for another round (default 0.0)")
    refine.add_argument("--no-pseudo-labels", dest="pseudo_labels", action="store_false", default=None,
                        help="train on the reviewed labels only (default: also the merged labels of unreviewed "
                        "images)")
    refine.add_argument("--no-progress", action="store_true", help="no progress bars")
    _training_options(refine, progress=False)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, metavar="GT", help="reviewed labels: COCO .json, YOLO data.yaml (or "
                   "its folder), Pascal VOC folder, autolabel pull output, or a run's output folder")
    p.add_argument("--images", metavar="DIR", help="folder the ground truth's image names are relative to")


def _training_options(p: argparse.ArgumentParser, progress: bool = True) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--task", choices=["od", "ovd", "grounding", "region_category", "ocr_regions"],
                   help="what to teach (default od)")
    g.add_argument("--classes", help="comma-separated ontology (default: the ground truth's classes; refine: the "
                   "pipeline's ontology)")
    g.add_argument("--epochs", type=int, help="most epochs (default 10)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 2e-4 with --lora, 1e-5 with --full)")
    g.add_argument("--batch-size", type=int, help="pairs per batch (default 8)")
    g.add_argument("--grad-accum", type=int, help="batches per optimizer step (default 1)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--lora", dest="mode", action="store_const", const="lora", help="LoRA adapters (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="every weight but the "
                      "vision tower's")
    g.add_argument("--save", choices=["adapter", "merged"], help="with --lora: the adapter alone (default; loads "
                   "with its base) or merged into whole weights")
    g.add_argument("--lora-r", type=int, help="LoRA rank (default 16)")
    g.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 32)")
    g.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    g.add_argument("--train-vision", action="store_true", default=None, help="also train the vision tower")
    g.add_argument("--val-fraction", type=float, help="images held out for validation (default 0.1; 0: validate "
                   "on the training images)")
    g.add_argument("--patience", type=int, help="validations without improvement before stopping (default 3)")
    g.add_argument("--min-delta", type=float, help="least AP gain that counts as improvement (default 0)")
    g.add_argument("--eval-every", type=int, help="epochs between validations (default 1)")
    g.add_argument("--eval-beams", type=int, help="num_beams of validation (default 3, the pipeline's)")
    g.add_argument("--seed", type=int, help="seed of the split, the order and dropout (default 0)")
    g.add_argument("--max-target-tokens", type=int, help="longest answer to learn (default: the model's maximum)")
    g.add_argument("--warmup", type=float, help="fraction of steps the learning rate warms up over (default 0.05)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    g.add_argument("--max-grad-norm", type=float, help="clip gradients to this norm (default 1.0; 0: no clipping)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 on CUDA, fp32 elsewhere")
    g.add_argument("--device", help="cuda, cuda:1, cpu, mps (default auto)")
    g.add_argument("--save-steps", type=int, help="also checkpoint every N optimizer steps (default: each epoch)")
    g.add_argument("--feature-cache-mb", type=int, help="memory for a frozen vision tower's outputs (default 2048)")
    g.add_argument("--workers", type=int, help="image-reading threads (default: 2 on a GPU, 0 on the CPU)")
    if progress:
        g.add_argument("--no-progress", action="store_true", help="no progress bar")


#: the flags that are TrainSettings fields (the rest belong to the commands)
SETTINGS = ("task", "epochs", "lr", "batch_size", "grad_accum", "mode", "save", "lora_r", "lora_alpha",
            "lora_dropout", "train_vision", "val_fraction", "patience", "min_delta", "eval_every", "eval_beams", "seed",
            "max_target_tokens", "warmup", "weight_decay", "max_grad_norm", "precision", "device", "save_steps",
            "feature_cache_mb", "workers")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The training flags given (None: the default), with ``--classes`` split."""
    out = {key: getattr(args, key, None) for key in SETTINGS}
    if getattr(args, "classes", None):
        out["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    return out


def run(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args)
    return _refine(args)


def _train(args: argparse.Namespace) -> int:
    from .api import train

    try:
        summary = train(args.model, args.gt, args.output, args.images, revision=args.revision, resume=args.resume,
                        overwrite=args.overwrite, progress=not args.no_progress, **options(args))
    except KeyboardInterrupt:
        print("autolabel: train: interrupted; run the same command with --resume to continue from the last "
              "checkpoint", file=sys.stderr)
        return ExitCode.INTERRUPTED
    result = summary.lineage["result"]
    ap = "-" if result["val_ap"] is None else f"{result['val_ap']:.3f}"
    on = summary.lineage["data"]["validated_on"]
    stop = ", stopped early" if result["stopped_early"] else ""
    print(f"autolabel: train: {result['epochs']} epochs, {result['steps']} steps; best epoch "
          f"{result['best_epoch'] or '-'}, validation AP {ap} ({on} images){stop}; wrote {summary.output} "
          f"(load it as models.<name>.id)", file=sys.stderr)
    return ExitCode.OK


def _refine(args: argparse.Namespace) -> int:
    from .refine import refine

    summary = refine(args.pipeline, gt=args.gt, output=args.output, images=args.images, input=args.input,
                     model_name=args.model_name, rounds=args.rounds, merge=args.merge, merge_iou=args.merge_iou,
                     min_gain=args.min_gain, pseudo_labels=args.pseudo_labels,
                     progress=not args.no_progress, **options(args))
    for line in summary.lines():
        print(f"autolabel: refine: {line}", file=sys.stderr)
    return ExitCode.OK
