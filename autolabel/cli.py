"""The ``autolabel`` command. Every user error is one line on stderr and a documented exit code (see ExitCode)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import AutolabelError, ConfigError, ExitCode


class _Parser(argparse.ArgumentParser):
    """argparse that exits with our config-error code and a one-line message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"autolabel: error: {message} (see autolabel {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autolabel", description="Auto-label images with Florence-2 and friends.")
    parser.add_argument("--version", action="version", version=f"autolabel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_pipeline(p: argparse.ArgumentParser) -> None:
        p.add_argument("pipeline", help="pipeline file (YAML)")
        p.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a value of the pipeline file, e.g. --set stages.1.threshold=0.3 (repeatable)",
        )

    run = sub.add_parser("run", help="label images into an output folder (resumes what is done)")
    with_pipeline(run)
    run.add_argument("--input", "-i", action="append", help="image file, folder, glob or list file (repeatable)")
    run.add_argument("--output", "-o", help="output folder (holds the run store, run.json and the exports)")
    run.add_argument("--batch-size", type=int, help="images per batch (overrides batch_size)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    validate = sub.add_parser("validate", help="check a pipeline file without loading any model")
    with_pipeline(validate)

    export = sub.add_parser("export", help="write an export from a run's store (runs no model)")
    export.add_argument("output_dir", help="the output folder of a run")
    export.add_argument("--pipeline", help="pipeline file (default: the one recorded by the last run)")
    export.add_argument("--format", default="coco", choices=["coco"])
    export.add_argument("--path", help="file to write (default: OUTPUT_DIR/coco.json)")
    export.add_argument("--min-score", type=float, default=0.0, help="leave out boxes scored below this")

    sub.add_parser("version", help="print versions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except AutolabelError as err:
        problems = err.problems if isinstance(err, ConfigError) else [str(err)]
        for problem in problems:
            print(f"autolabel: error: {problem}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("autolabel: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        from .runner import package_versions

        print(json.dumps(package_versions(), indent=2))
        return ExitCode.OK
    if args.command == "export":
        return _export(args)

    from .pipeline import Pipeline

    overrides = list(args.overrides)
    if args.command == "run" and args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
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
    for path in summary.exports:
        print(f"autolabel: wrote {path}", file=sys.stderr)
    if summary.status == "interrupted":
        print("autolabel: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
    return summary.exit_code


def _export(args: argparse.Namespace) -> int:
    from .config import ExportSpec
    from .exports import write_export
    from .pipeline import Pipeline
    from .store import DB_NAME, Store

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
        spec = ExportSpec(format=args.format, path=args.path, min_score=args.min_score)
        path = write_export(store, pipeline.spec, spec, output)
    print(f"autolabel: wrote {path}", file=sys.stderr)
    return ExitCode.OK
