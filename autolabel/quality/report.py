"""``autolabel report OUTPUT_DIR``: a static, self-contained HTML report of what a run did (and how good it is).

One pass over the store (:mod:`.report_data`), annotated thumbnails of a bounded sample per section
(:mod:`.report_previews`), hand-written SVG charts (:mod:`.report_svg`) and one HTML page (:mod:`.report_html`)
in ``OUTPUT_DIR/report/``: ``index.html`` and ``img/``. Nothing is fetched, so it opens offline from ``file://``.
When ``OUTPUT_DIR/eval.json`` exists (``autolabel eval``), PR curves, per-class AP and reliability are added; when
``OUTPUT_DIR/calibration.json`` does (``autolabel calibrate``), the per-class thresholds and the score they apply to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AutolabelError, ConfigError, ExitCode
from ..names import shown
from ..records import Stored
from ..store import DB_NAME, Store
from ..util import atomic_write_text

if TYPE_CHECKING:
    from .report_data import ReportData
    from .report_html import Preview

EVAL_NAME = "eval.json"
EVAL_VERSION = 1


def build_report(output: str | Path, out: str | Path | None = None, samples: int = 12, seed: int = 0) -> Path:
    """Write the report of the run in ``output`` to ``out`` (default ``output/report``); return ``index.html``."""
    # imported here, not above: `autolabel --help` need not load supervision and cv2
    from .report_data import collect
    from .report_html import page

    output = Path(output)
    target = Path(out) if out is not None else output / "report"
    if samples < 0:
        raise ConfigError(f"--samples: must be 0 or more (got {samples})")
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    evaluation = load_eval(output / EVAL_NAME)
    from .report_calibration import CALIBRATION_NAME, load

    calibration = load(output / CALIBRATION_NAME)
    with Store(output) as store:
        if store.count() == 0:
            raise AutolabelError(f"{output / DB_NAME}: the store holds no images ({len(store.runs())} runs recorded);"
                                 " nothing to report: run `autolabel run` on some images first")
        data = collect(store, samples=samples, seed=seed)
        pipeline = store.last_pipeline() if calibration is not None else None
    classes = list(data.class_counts())
    previews = write_previews(data, target / "img", classes)
    html = page(f"autolabel report: {output.resolve().name}", data, previews, evaluation, classes,
                calibration=(calibration, pipeline) if calibration is not None else None)
    index = target / "index.html"
    atomic_write_text(index, shown(html))  # a name that is not UTF-8 shows its odd bytes as \xNN
    return index


def load_eval(path: Path) -> dict[str, Any] | None:
    """eval.json as written by ``autolabel eval``, None when there is none; one-line errors when it is unusable."""
    if not path.is_file():
        return None
    fix = "run `autolabel eval` again, or delete it to report without evaluation"
    try:
        ev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AutolabelError(f"{path}: not readable JSON ({err}); {fix}") from None
    if not isinstance(ev, dict) or ev.get("version") != EVAL_VERSION:
        version = ev.get("version") if isinstance(ev, dict) else None
        raise AutolabelError(f"{path}: not an eval.json of version {EVAL_VERSION} (version {version!r}); {fix}")
    return ev


def write_previews(data: ReportData, folder: Path, classes: list[str]) -> dict[str, list[Preview]]:
    """Annotated thumbnails of every section's sample, named by section index; stale thumbnails removed."""
    from .report_html import Preview
    from .report_previews import write_preview

    written: dict[str, list[Preview]] = {}
    names: set[str] = set()
    for s, (section, rows) in enumerate(data.samples.items()):
        for k, row in enumerate(sorted(rows, key=lambda r: r["rel_path"])):
            name = f"s{s:02d}-{k:03d}.jpg"
            # the focus is the section: a reason's section ("dropped/edge") labels the boxes dropped for it; no
            # box's "status/reason" is ever "labeled", so the labeled sample labels none
            width, height, problem = write_preview(row, folder / name, classes, section)
            stored = Stored.of(row["labels"])
            statuses = stored.column("status")
            texts = [(t["kind"], t["status"], t.get("reason", ""), _clip(t["text"]))
                     for t in stored.texts if t.get("status", "kept") != "kept"]
            written.setdefault(section, []).append(
                Preview(f"img/{name}", row["rel_path"], width, height, dict(Counter(statuses)), problem, texts))
            names.add(name)
    if folder.is_dir():
        for old in folder.glob("s*-*.jpg"):
            if old.name not in names:
                old.unlink()
    return written


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """``autolabel report OUTPUT_DIR [--out DIR] [--samples N] [--seed S]``."""
    p = sub.add_parser(
        "report", help="write a static HTML report of a run (opens offline)",
        description="Write OUTPUT_DIR/report/index.html: run summary and history, per-class counts, score "
        "histograms, what each quality check dropped or flagged (with annotated example images), failures, the "
        "slowest stages, and, when OUTPUT_DIR/eval.json exists, PR curves, per-class AP and reliability.",
    )
    p.add_argument("output_dir", help="the output folder of a run")
    p.add_argument("--out", help="folder to write the report to (default OUTPUT_DIR/report)")
    p.add_argument("--samples", type=int, default=12, metavar="N",
                   help="example images per section: the labeled sample and each drop/flag reason (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample (default 0)")


def run_report(args: argparse.Namespace) -> int:
    index = build_report(args.output_dir, args.out, samples=args.samples, seed=args.seed)
    print(f"autolabel: wrote {index}", file=sys.stderr)
    return ExitCode.OK
