"""The ``autolabel`` command. Every user error is one line on stderr and a documented exit code (see ExitCode)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from . import __version__
from .errors import AutolabelError, ConfigError, ExitCode, ExportError, one_line
from .names import shown

#: failing images listed at the end of a run (all of them are in run.json)
FAILURES_SHOWN = 5


class _Parser(argparse.ArgumentParser):
    """argparse that exits with our config-error code and a one-line message naming the right ``--help``."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        print(f"autolabel: error: {message} (see {self.prog} --help)", file=sys.stderr)  # prog: "autolabel run"
        raise SystemExit(ExitCode.CONFIG)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Unknown arguments are reported by the subcommand they were given to, not by ``autolabel`` itself."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = _subcommands(self).get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name (what ``add_subparsers`` registered, also by other modules)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autolabel", description="Auto-label images with Florence-2 and friends.")
    parser.add_argument("--version", action="version", version=f"autolabel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_pipeline(p: argparse.ArgumentParser) -> None:
        p.add_argument("pipeline", help="pipeline file (YAML)")
        p.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a value of the pipeline file, e.g. --set stages.1.threshold=0.3 or "
            "--set stages.score_threshold.threshold=0.3 (by stage name; repeatable)",
        )
        p.add_argument("--set-file", dest="set_files", action="append", default=[], metavar="FILE",
                       help="a YAML file of KEY: VALUE overrides (e.g. calibrate's thresholds.yaml), applied "
                       "before --set (repeatable)")

    run = sub.add_parser("run", help="label images into an output folder (resumes what is done)")
    with_pipeline(run)
    run.add_argument("--input", "-i", action="append", help="image file, folder, glob or list file (repeatable)")
    run.add_argument("--output", "-o", help="output folder (holds the run store, run.json and the exports)")
    run.add_argument("--batch-size", type=int, help="images per batch (overrides batch_size)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--executor", choices=["local", "ray"], help="where the stages run (overrides executor.type)")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="an existing Ray cluster, e.g. auto or head:6379 (implies --executor ray)")

    validate = sub.add_parser("validate", help="check a pipeline file without loading any model")
    with_pipeline(validate)

    export = sub.add_parser(
        "export", help="write an export from a run's store (runs no model)",
        description="Write COCO, YOLO or Label Studio files from a run's store. Format options given to a format "
        "that does not take them are an error.",
    )
    export.add_argument("output_dir", help="the output folder of a run")
    export.add_argument("--pipeline", help="pipeline file (default: the one recorded by the last run)")
    export.add_argument("--format", default="coco", choices=["coco", "coco-results", "yolo", "labelstudio", "mot",
                                                             "cvat-video", "labelstudio-video", "ytvis"])
    export.add_argument("--path", help="file or folder to write, relative to OUTPUT_DIR (default: per format)")
    export.add_argument("--min-score", type=float, help="leave out boxes scored below this (default 0)")
    export.add_argument("--flagged", choices=["include", "exclude"], help="boxes flagged for review (default include)")
    coco = export.add_argument_group("coco, coco-results")
    coco.add_argument("--segmentation", choices=["polygon", "rle"], help="mask encoding (default polygon)")
    coco.add_argument("--no-captions", dest="captions", action="store_const", const=False,
                      help="do not write the COCO-captions file")
    yolo = export.add_argument_group("yolo")
    yolo.add_argument("--task", choices=["detect", "segment"], help="label lines (default detect)")
    yolo.add_argument("--split", metavar="NAME=FRACTION,...", help="e.g. train=0.8,val=0.2 (the default)")
    yolo.add_argument("--seed", type=int, help="seed of the content-hash split (default 0)")
    yolo.add_argument("--images", choices=["symlink", "copy"], help="how images are placed (default symlink)")
    ls = export.add_argument_group("labelstudio")
    ls.add_argument("--image-root", help="prefix of image references (default /data/local-files/?d=)")
    ls.add_argument("--model-version", help="predictions' model_version (default: pipeline name or hash)")
    ls.add_argument("--task-score", choices=["min", "mean"], help="task score from box confidences (default min)")
    ls.add_argument("--masks", choices=["brush", "polygon", "none"], help="masks as regions (default brush)")
    lsv = export.add_argument_group("labelstudio-video (also --model-version, --task-score)")
    lsv.add_argument("--video-root", help="prefix of video references (default /data/local-files/?d=)")
    lsv.add_argument("--keyframe-tolerance", type=float, metavar="PIXELS",
                     help="how far interpolation between keyframes may miss a box (default 1)")

    recover = sub.add_parser(
        "recover", help="replace a damaged run store by a new one holding what it still gives",
        description="Copy every row SQLite can still read from OUTPUT_DIR/autolabel.db into a new store (ids kept), "
        "move the damaged file aside as autolabel.db.damaged-TIME, and say what could not be read; the next run "
        "labels the images the store lost.",
    )
    recover.add_argument("output_dir", help="the output folder of a run")

    runs = sub.add_parser("runs", help="list the runs recorded in an output folder")
    runs.add_argument("output_dir", help="the output folder of a run")
    runs.add_argument("--json", action="store_true", help="machine-readable: one JSON object per run, a line each")
    runs.add_argument("--last", type=int, metavar="N", help="only the N most recent runs")

    sched = sub.add_parser("schedule", help="run a pipeline on a cron expression, in this process")
    with_pipeline(sched)
    sched.add_argument("--cron", required=True, help="e.g. '0 2 * * *' (a 6th field is seconds: '* * * * * */10')")
    sched.add_argument("--input", "-i", action="append", help="as for run (repeatable)")
    sched.add_argument("--output", "-o", help="as for run")
    sched.add_argument("--max-runs", type=int, metavar="N", help="stop after N runs (default: run forever)")
    sched.add_argument("--no-progress", action="store_true", help="no progress bar")

    from .quality.report import add_report_parser

    add_report_parser(sub)  # autolabel report: a static HTML page (autolabel.quality.report)
    from .labelstudio.commands import add_pull_parser, add_push_parser

    add_push_parser(sub)  # autolabel push / pull: a live Label Studio (autolabel.labelstudio)
    add_pull_parser(sub)
    from .quality.commands import add_calibrate_parser, add_eval_parser

    add_eval_parser(sub)  # autolabel eval / calibrate: label quality against human labels (autolabel.quality)
    add_calibrate_parser(sub)
    from .serve.commands import add_serve_parser

    add_serve_parser(sub)  # autolabel serve: a Label Studio ML backend (autolabel.serve)
    from .train.commands import add_parsers as add_train_parsers

    add_train_parsers(sub)  # autolabel train / refine: fine-tune Florence-2 on reviewed labels (autolabel.train)
    sub.add_parser("version", help="print versions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: its exit code; every failure is one line on stderr (``AUTOLABEL_TRACEBACK=1``: let an
    unexpected one raise, traceback and all)."""
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except AutolabelError as err:
        print_failures(err.failures, None)
        problems = err.problems if isinstance(err, ConfigError) else [str(err)]
        for problem in problems:
            print(f"autolabel: error: {shown(problem)}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("autolabel: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `autolabel runs | head`: the reader has what it wanted
        _quiet_stdout()
        return int(ExitCode.OK)
    except Exception as err:
        if os.environ.get("AUTOLABEL_TRACEBACK"):
            raise
        print(f"autolabel: error: {unexpected(err, getattr(args, 'command', None))}", file=sys.stderr)
        return int(ExitCode.FATAL)


def unexpected(err: BaseException, command: str | None) -> str:
    """The one line for a failure no code path expected: what it was, and where its traceback went."""
    import tempfile
    import traceback

    what = f"{type(err).__name__}: {one_line(err)}"
    if isinstance(err, OSError) and err.errno is not None:  # the system refused: that is the user's news
        return f"{command or 'autolabel'}: {what}"
    try:
        fd, path = tempfile.mkstemp(prefix="autolabel-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write("".join(traceback.format_exception(err)))
        where = f"the traceback is in {path}"
    except OSError:
        where = "run again with AUTOLABEL_TRACEBACK=1 to see the traceback"
    return f"unexpected {what} (a bug in autolabel: please report it; {where})"


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that Python's exit flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_failures(failures: list[dict[str, str]], output: Path | None, total: int | None = None) -> None:
    """The first few failing images of a run with their reasons, and where the full list is."""
    for failure in failures[:FAILURES_SHOWN]:
        print(f"autolabel: failed: {shown(failure['path'])}: {shown(failure['reason'])}", file=sys.stderr)
    more = (total if total is not None else len(failures)) - FAILURES_SHOWN
    if more > 0:
        where = f" (every failure is in {output / 'run.json'})" if output is not None else ""
        print(f"autolabel: ... and {more} more failed{where}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "runs":
        from .history import print_runs

        return print_runs(args.output_dir, as_json=args.json, last=args.last)
    if args.command == "schedule":
        from .schedule import schedule

        return schedule(args.pipeline, args.cron, input=args.input, output=args.output, overrides=args.overrides,
                        set_files=args.set_files, max_runs=args.max_runs, progress=not args.no_progress)
    if args.command == "version":
        from .runner import package_versions

        print(json.dumps(package_versions(), indent=2))
        return ExitCode.OK
    if args.command == "report":
        from .quality.report import run_report

        return run_report(args)
    if args.command in ("push", "pull"):
        from .labelstudio.commands import run_pull, run_push

        return run_push(args) if args.command == "push" else run_pull(args)
    if args.command == "export":
        return _export(args)
    if args.command in ("eval", "calibrate"):
        from .quality.commands import run_calibrate, run_eval

        return run_eval(args) if args.command == "eval" else run_calibrate(args)
    if args.command == "serve":
        from .serve.commands import run_serve

        return run_serve(args)
    if args.command == "recover":
        from .recover import recover

        salvage = recover(args.output_dir)
        print(f"autolabel: {salvage.line(Path(args.output_dir) / 'autolabel.db')}", file=sys.stderr)
        return ExitCode.OK
    if args.command in ("train", "refine"):
        from .train.commands import run as run_training

        return run_training(args)

    from .overrides import collect_overrides
    from .pipeline import Pipeline

    overrides = collect_overrides(args.set_files, args.overrides)
    if args.command == "run" and args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
    if args.command == "run" and (args.executor or args.ray_address):
        if args.ray_address and args.executor == "local":
            raise ConfigError("--ray-address: needs --executor ray (or leave --executor out)")
        overrides.append(f"executor.type={args.executor or 'ray'}")
        if args.ray_address:
            overrides.append(f"executor.address={json.dumps(args.ray_address)}")  # quoted: stays a string
    pipeline = Pipeline.from_yaml(args.pipeline, overrides)
    if args.command == "validate":
        c = pipeline.config
        print(
            f"{args.pipeline}: ok ({len(c.models)} models, {len(c.stages)} stages: "
            f"{', '.join(s.name for s in pipeline.stages)}; {len(pipeline.spec.ontology)} classes; "
            f"{len(c.exports)} exports)"
        )
        return ExitCode.OK

    summary = pipeline.run(input=args.input, output=args.output, progress=not args.no_progress)
    c = summary.counts
    print(
        f"autolabel: {summary.status}: {c['labeled']} labeled, {c['skipped']} already done, {c['failed']} failed "
        f"of {c['seen']} seen; details in {summary.output / 'run.json'}",
        file=sys.stderr,
    )
    print_failures(summary.failures, summary.output, c["failed"])
    for path in summary.exports:
        print(f"autolabel: wrote {path}", file=sys.stderr)
    for line in summary.warnings:
        print(f"autolabel: warning: {line}", file=sys.stderr)
    if summary.status == "interrupted":
        kept = c["labeled"] + c["failed"]
        print(f"autolabel: interrupted; the {kept} results committed before the stop are kept in the store: run the "
              "same command again to resume where it stopped", file=sys.stderr)
    return summary.exit_code


def _export(args: argparse.Namespace) -> int:
    from .exports import DEFAULT_PATHS, write_export
    from .pipeline import Pipeline
    from .store import DB_NAME, Store

    spec = _export_spec(args)
    output = Path(args.output_dir)
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    with Store(output) as store:
        if args.pipeline:
            pipeline = Pipeline.from_yaml(args.pipeline)
        else:
            last = store.last_pipeline()
            if last is None:
                raise AutolabelError(f"{output}: the store records no run; pass --pipeline FILE")
            pipeline = Pipeline.from_dict(last)
        target = output / (spec.path or DEFAULT_PATHS[spec.format])
        try:
            paths = write_export(store, pipeline.spec, spec, output)
        except OSError as err:  # a full disk, a folder in the file's place, a read-only folder
            readonly = store.readonly and not spec.path
            hint = ("the run's folder is read-only: write elsewhere with --path /SOMEWHERE/FILE" if readonly else
                    "free space or remove what is in the way, then export again")
            why = err.strerror or one_line(err)  # not the temp file's name: the target is what the user named
            raise ExportError(f"export {spec.format} to {target} failed: {why}; no file was left half-written and "
                              f"the store is unchanged: {hint}") from None
        bad = store.bad_rows_line()
    for path in paths:
        print(f"autolabel: wrote {path}", file=sys.stderr)
    if bad is not None:
        print(f"autolabel: warning: {bad}", file=sys.stderr)
        return ExitCode.PARTIAL
    return ExitCode.OK


_EXPORT_FLAGS = ("path", "min_score", "flagged", "segmentation", "captions", "task", "split", "seed", "images",
                 "image_root", "model_version", "task_score", "masks", "video_root", "keyframe_tolerance")


def _export_spec(args: argparse.Namespace):  # noqa: ANN202 — ExportSpec
    """The flags given (only those: a format option given to another format is an error) as an ExportSpec."""
    from pydantic import ValidationError

    from .config import EXPORT_ADAPTER, ExportSpec, format_errors

    given = {key: getattr(args, key) for key in _EXPORT_FLAGS if getattr(args, key) is not None}
    if "split" in given:
        given["split"] = _parse_split(given["split"])
    try:
        return EXPORT_ADAPTER.validate_python({"format": args.format, **given})
    except ValidationError as err:
        lines = format_errors(err, ExportSpec)
        flags = {key: "--" + ("no-captions" if key == "captions" else key.replace("_", "-")) for key in _EXPORT_FLAGS}
        raise ConfigError([_flag_line(line, flags) for line in lines]) from None


def _flag_line(line: str, flags: dict[str, str]) -> str:
    key, sep, rest = line.partition(":")
    key = key.split(".")[0]
    return f"{flags[key]}{sep}{rest}" if key in flags else line


def _parse_split(text: str) -> dict[str, float]:
    """``train=0.8,val=0.2`` → ``{"train": 0.8, "val": 0.2}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(
                f"--split: expected NAME=FRACTION[,NAME=FRACTION...], e.g. train=0.8,val=0.2 (got {text!r})"
            )
    return out
