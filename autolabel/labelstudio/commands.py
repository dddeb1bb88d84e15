"""The ``autolabel push`` and ``autolabel pull`` subcommands (argument parsing stays light: no SDK import here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AutolabelError, ConfigError, ExitCode

_PUSH_FLAGS = ("images", "image_root", "document_root", "batch_size", "model_version", "task_score", "masks",
               "min_score", "flagged", "timeout", "retry_for", "media", "keyframe_tolerance")


def _server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="Label Studio base URL, e.g. http://localhost:8080")
    p.add_argument("--project", required=True, metavar="NAME_OR_ID", help="project id, or exact title")
    p.add_argument("--timeout", type=float, help="seconds per request (default 60)")
    p.add_argument("--retry-for", type=float, metavar="SECONDS",
                   help="keep retrying a failing server this long (default 120)")


def add_push_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", help="send a run's labels to a Label Studio project as predictions (idempotent)",
        description="Create or update a Label Studio project with a task per labeled image and its prediction. "
        "Pushing again adds only new images and replaces only predictions that changed. The API key is read from "
        "LABEL_STUDIO_API_KEY (personal access token or legacy token).",
    )
    p.add_argument("output_dir", help="the output folder of a run")
    _server(p)
    p.add_argument("--pipeline", help="pipeline file (default: the one recorded by the last run)")
    p.add_argument("--images", choices=["local-files", "upload", "url"],
                   help="how Label Studio reaches the images (default local-files)")
    p.add_argument("--image-root", help="--images url: prefix of image references (https://..., s3://...)")
    p.add_argument("--document-root", help="--images local-files: the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                   "(default: asked from the server)")
    p.add_argument("--batch-size", type=int, help="tasks per import request (default 500)")
    p.add_argument("--model-version", help="predictions' model_version (default: pipeline name or hash)")
    p.add_argument("--task-score", choices=["min", "mean"], help="task score from box confidences (default min)")
    p.add_argument("--masks", choices=["brush", "polygon", "none"],
                   help="a masked object's region where the project's config has both brush and polygon (default "
                        "brush); none: its box (docs/reference/labelstudio-regions.md)")
    p.add_argument("--min-score", type=float, help="leave out boxes scored below this (default 0)")
    p.add_argument("--flagged", choices=["include", "exclude"], help="boxes flagged for review (default include)")
    p.add_argument("--media", choices=["auto", "images", "videos"],
                   help="what the tasks are: images, or one video task per clip (default auto: what the store holds)")
    p.add_argument("--keyframe-tolerance", type=float, metavar="PIXELS",
                   help="videos: how far interpolation between keyframes may miss a box (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_pull_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pull", help="export a Label Studio project's reviewed annotations (COCO/YOLO) and a review summary",
        description="Write the human-reviewed annotations of a project for training, and review_summary.json: per "
        "class, how many auto-labels reviewers accepted unchanged, moved, relabeled or deleted, and added.",
    )
    _server(p)
    p.add_argument("--output", "-o", required=True, help="folder to write into")
    p.add_argument("--format", default="coco", choices=["coco", "yolo"],
                   help="coco (OUTPUT/coco.json, the default) or yolo (an Ultralytics dataset in OUTPUT/yolo/)")
    p.add_argument("--task", default="detect", choices=["detect", "segment"], help="yolo: label lines")
    p.add_argument("--image-root", help="yolo: link images from this folder (default: download via Label Studio)")


def not_pushed_lines(failed: dict[str, str], shown: int = 20) -> list[str]:
    """The first ``shown`` images a push could not send, with why, then how many more (a long list buries the
    summary line under it)."""
    lines = [f"autolabel: not pushed: {rel_path}: {why}" for rel_path, why in list(failed.items())[:shown]]
    if len(failed) > shown:
        lines.append(f"autolabel: ... and {len(failed) - shown} more not pushed")
    return lines


def run_push(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..config import PushSpec, format_errors, parse
    from ..store import DB_NAME, Store
    from .push import push

    given = {k: getattr(args, k) for k in _PUSH_FLAGS if getattr(args, k, None) is not None}
    try:
        options = PushSpec(url=args.url, project=args.project, **given)
    except ValidationError as err:
        raise ConfigError([_flag(line) for line in format_errors(err, PushSpec)]) from None
    output = Path(args.output_dir)
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    with Store(output) as store:
        if args.pipeline:
            from ..config import load_file

            spec = parse(load_file(args.pipeline))
        else:
            last = store.last_pipeline()
            if last is None:
                raise AutolabelError(f"{output}: the store records no run; pass --pipeline FILE")
            spec = parse(last)
        summary = push(store, spec, options, progress=not args.no_progress)
    for line in not_pushed_lines(summary.failed):
        print(line, file=sys.stderr)
    if summary.error:
        print(f"autolabel: push stopped: {summary.error}", file=sys.stderr)
    print(f"autolabel: push {summary.line()}", file=sys.stderr)
    if summary.exit_code != ExitCode.OK:
        print("autolabel: run the same command again to push the rest", file=sys.stderr)
    return summary.exit_code


def run_pull(args: argparse.Namespace) -> int:
    from .pull import print_pull, pull

    summary = pull(args.url, args.project, args.output, fmt=args.format, task_kind=args.task,
                   image_root=args.image_root, timeout=args.timeout or 60.0,
                   retry_for=args.retry_for if args.retry_for is not None else 120.0)
    print_pull(summary)
    print(f"autolabel: pulled {summary.boxes} boxes of {summary.tasks} reviewed tasks from {summary.project_url}",
          file=sys.stderr)
    return summary.exit_code


def _flag(line: str) -> str:
    key, sep, rest = line.partition(":")
    return f"--{key.replace('_', '-')}{sep}{rest}" if key in _PUSH_FLAGS + ("url", "project") else line
