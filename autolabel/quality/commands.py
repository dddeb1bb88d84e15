"""``autolabel eval`` and ``autolabel calibrate``: argparse subcommands over :mod:`.eval` and :mod:`.calibrate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import AutolabelError, ExitCode


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval", help="compare a run's labels with ground truth (runs no model)",
        description="AP (COCO, pycocotools), precision/recall/F1 at the operating point and along the score, a "
        "confusion table and what each filter's drops cost; writes OUTPUT_DIR/eval.json.",
    )
    _common(p)
    p.add_argument("--path", help="file to write, relative to OUTPUT_DIR (default eval.json)")
    p.add_argument("--json", action="store_true", help="print eval.json instead of the table")


def add_calibrate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="per-class score thresholds for a target precision (writes thresholds.yaml)",
        description="Per class, the lowest score threshold whose precision reaches --target-precision with "
        "--confidence (a one-sided lower bound); writes OUTPUT_DIR/thresholds.yaml for run --set-file.",
    )
    _common(p)
    p.add_argument("--target-precision", type=float, required=True, metavar="P", help="e.g. 0.9")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound (default 0.95)")
    p.add_argument("--bound", choices=["clopper-pearson", "wilson"], default="clopper-pearson",
                   help="lower confidence bound of the precision (default clopper-pearson, exact)")
    p.add_argument("--stage", help="score_threshold stage to set (default: the pipeline's first that drops)")
    p.add_argument("--unreached", choices=["flag", "drop"], default="flag",
                   help="classes with thin evidence or an unreachable target: flag them all for review "
                   "(needs a score_threshold stage with action: flag) or drop them (default flag)")
    p.add_argument("--review-stage", help="score_threshold stage with action: flag (default: the first)")
    p.add_argument("--fit", choices=["isotonic", "platt"], help="also fit a calibration of the scores")
    p.add_argument("--fit-scope", choices=["class", "pooled"], default="class", help="per class (default) or pooled")
    p.add_argument("--path", help="file to write, relative to OUTPUT_DIR (default thresholds.yaml)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("output_dir", help="the output folder of a run")
    p.add_argument("--gt", required=True, metavar="GT",
                   help="ground truth: COCO .json, YOLO data.yaml (or its folder), Pascal VOC folder, or the "
                   "output folder of autolabel pull")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a match at the operating point (default 0.5)")
    p.add_argument("--flagged", choices=["include", "exclude"], default="include",
                   help="flagged boxes count as kept (include, the default) or not")
    p.add_argument("--pipeline", help="pipeline file (default: the one recorded by the last run)")


def _check(args: argparse.Namespace) -> None:
    for name, value in (("--iou", args.iou), ("--target-precision", getattr(args, "target_precision", 0.5)),
                        ("--confidence", getattr(args, "confidence", 0.5))):
        if not 0.0 < value < 1.0 and not (name == "--iou" and value == 1.0):
            raise _ArgError(f"{name}: expected a number between 0 and 1 (got {value})")


class _ArgError(AutolabelError):
    exit_code = ExitCode.CONFIG


def run_eval(args: argparse.Namespace) -> int:
    from .api import evaluate_run
    from .eval import format_table, write_json

    _check(args)
    result = evaluate_run(args.output_dir, args.gt, iou=args.iou, flagged=args.flagged, pipeline=args.pipeline)
    path = Path(args.output_dir) / (args.path or "eval.json")
    write_json(path, result)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    print(f"autolabel: wrote {path}", file=sys.stderr)
    return ExitCode.OK


def run_calibrate(args: argparse.Namespace) -> int:
    from ..util import atomic_write_text
    from .api import calibrate_run
    from .calibrate import format_report, thresholds_yaml
    from .eval import write_json

    _check(args)
    report, overrides = calibrate_run(
        args.output_dir, args.gt, target_precision=args.target_precision, pipeline=args.pipeline, stage=args.stage,
        confidence=args.confidence,
        bound=args.bound, iou=args.iou, flagged=args.flagged, unreached=args.unreached,
        review_stage=args.review_stage, fit=args.fit, fit_scope=args.fit_scope,
    )
    output = Path(args.output_dir)
    path = output / (args.path or "thresholds.yaml")
    report["thresholds"] = overrides
    atomic_write_text(path, thresholds_yaml(overrides, report, args.pipeline or "PIPELINE"))
    write_json(output / "calibration.json", report)
    print(format_report(report))
    print(f"autolabel: wrote {path} and {output / 'calibration.json'}", file=sys.stderr)
    return ExitCode.OK
