"""The report page: HTML fragments built from :class:`ReportData`, the written previews and eval.json.

Plain HTML and inline SVG with one inline stylesheet and no script: nothing to fetch, so the page works offline
from ``file://`` and in any browser. Every value is escaped; numbers in tables carry ``data-*`` attributes naming
what they are, so tests (and scrapers) can read them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Any

from . import report_svg as svg
from .report_data import BINS, MAX_SECTIONS, ReportData

STATUSES = ("kept", "flagged", "dropped")
#: Classes that get a score histogram of their own (the most frequent; the rest are named in a line).
MAX_HISTOGRAMS = 24
METRICS = ("ap", "ap50", "ap75", "mask_ap", "precision", "recall", "f1", "tp", "fp", "fn", "gt", "predictions")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0}figure img{display:block;max-width:360px;height:auto;border:1px solid #ccc}
figcaption{font-size:12px;color:#555;word-break:break-all;max-width:480px}
svg.chart{font:10px sans-serif;background:#fff}
nav a{margin-right:12px}.kept{color:#2e7d32}.flagged{color:#ef6c00}.dropped{color:#c62828}
.warn{color:#c62828}
"""


@dataclass
class Preview:
    """One written thumbnail: its file (relative to the report), the store row it shows, what it shows."""

    src: str
    rel_path: str
    width: int
    height: int
    boxes: dict[str, int]
    problem: str | None = None
    texts: list[tuple[str, str, str, str]] = field(default_factory=list)  # (kind, status, reason, text) not kept


def page(title: str, data: ReportData, previews: dict[str, list[Preview]], evaluation: dict[str, Any] | None,
         classes: Sequence[str], calibration: tuple[dict[str, Any], dict[str, Any] | None] | None = None) -> str:
    """The whole ``index.html`` (``calibration``: calibration.json and the run's pipeline, when there is one)."""
    sections = [
        ("summary", "Run summary", summary(data)),
        ("history", "History", history(data.runs)),
        ("classes", "Classes", class_table(data)),
        ("scores", "Score histograms", histograms(data)),
        ("checks", "Quality checks", checks(data, previews)),
        ("samples", "Sample of labeled images",
         gallery(previews.get("labeled", []), data.section_sizes.get("labeled", 0))),
        ("failures", "Failures", failures(data)),
        ("stages", "Slowest stages", stages(data.runs)),
    ]
    if evaluation is not None:
        html = stale_warning(evaluation, data.runs) + eval_section(evaluation, classes)
        sections.append(("eval", "Evaluation against ground truth", html))
    if calibration is not None:
        from .report_calibration import section

        sections.append(("calibration", "Calibrated thresholds", section(*calibration, fmt=fmt, table=table)))
    nav = " ".join(f'<a href="#{key}">{escape(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(name)}</h2>{html}</section>' for key, name, html in sections)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="muted">written by autolabel report, {created}</p><nav>{nav}</nav>{body}</body></html>\n'
    )


def table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]],
          attrs: Iterable[Sequence[str]] | None = None) -> str:
    """A table (no header row when ``header`` is None); ``attrs`` gives each cell's extra attributes (escaped)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header or ())
    attr_rows = iter(attrs) if attrs is not None else None
    body = []
    for row in rows:
        cell_attrs = next(attr_rows) if attr_rows is not None else [""] * len(row)
        body.append("<tr>" + "".join(f"<td{' ' + a if a else ''}>{cell}</td>" for cell, a in zip(row, cell_attrs))
                    + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def fmt(value: Any, digits: int = 3) -> str:
    """A number as shown in tables: floats to ``digits`` decimals, counts with separators, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def summary(data: ReportData) -> str:
    last = data.runs[-1] if data.runs else None
    s = (last or {}).get("summary") or {}
    counts = s.get("counts", {})
    rows = [
        ("images in the store", fmt(data.images_done + data.images_failed)),
        ("labeled", fmt(data.images_done)), ("failed", fmt(data.images_failed)), ("boxes", fmt(data.boxes)),
        ("runs recorded", fmt(len(data.runs))),
    ]
    if last is not None:
        pipeline = s.get("pipeline") or {}
        rows += [
            ("last run", f"#{last['id']} <b class=\"{escape(last['status'])}\">{escape(last['status'])}</b>"),
            ("started", escape(str(s.get("started") or _iso(last["started"])))),
            ("seconds", fmt(s.get("seconds"), 1)), ("images per second", fmt(s.get("images_per_second"), 2)),
            ("seen / labeled / skipped / failed", " / ".join(fmt(counts.get(k)) for k in
                                                             ("seen", "labeled", "skipped", "failed"))),
            ("pipeline", (f"{escape(str(pipeline.get('name') or ''))} <span class=\"muted\">"
                         f"{escape(str(pipeline.get('file') or ''))} {escape(last['pipeline_hash'][:12])}</span>")),
        ]
        if s.get("error"):
            rows.append(("error", f'<span class="warn">{escape(str(s["error"]))}</span>'))
    texts = ", ".join(f"{escape(kind)} {escape(status)}: {n:,}" for (kind, status), n in sorted(data.texts.items()))
    if texts:
        rows.append(("image-level texts", texts))
    return table(None, rows)


def _iso(ts: float) -> str:
    """A run's start (the store's ``runs.started``, never NULL) in UTC, to the second."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def history(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return '<p class="muted">No runs recorded.</p>'
    rows = []
    for r in reversed(runs):
        s = r["summary"] or {}
        c = s.get("counts", {})
        rows.append([f"#{r['id']}", f'<span class="{escape(r["status"])}">{escape(r["status"])}</span>',
                     escape(_iso(r["started"])), fmt(s.get("seconds"), 1),
                     *(fmt(c.get(k)) for k in ("seen", "labeled", "skipped", "failed")),
                     f'<span class="muted">{escape(r["pipeline_hash"][:12])}</span>'])
    return table(["run", "status", "started (UTC)", "seconds", "seen", "labeled", "skipped", "failed", "pipeline"],
                 rows)


def class_table(data: ReportData) -> str:
    counts = data.class_counts()
    if not counts:
        return '<p class="muted">No boxes.</p>'
    rows, attrs = [], []
    for name, c in counts.items():
        no_score = sum(data.scores.get((name, s, -1), 0) for s in STATUSES)
        rows.append([escape(name), *(fmt(c.get(s, 0)) for s in STATUSES), fmt(sum(c.values())), fmt(no_score)])
        attrs.append([f'data-class="{escape(name)}"', *(f'data-status="{s}"' for s in STATUSES), "", ""])
    return table(["class", "kept", "flagged", "dropped", "total", "without score"], rows, attrs)


def histograms(data: ReportData) -> str:
    counts = data.class_counts()
    names = list(counts)[:MAX_HISTOGRAMS]
    charts = [svg.histogram({s: data.histogram(name, s) for s in STATUSES}, f"scores of {name}")
              for name in names]
    more = len(counts) - len(names)
    note = f'<p class="muted">{more} less frequent classes not shown.</p>' if more > 0 else ""
    return (f'<p class="muted">Boxes per score bin ({BINS} bins), stacked by decision.</p>'
            f'<div class="grid">{"".join(_figure(c, n) for n, c in zip(names, charts))}</div>{note}')


def _figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{escape(caption)}</figcaption></figure>"


def checks(data: ReportData, previews: dict[str, list[Preview]]) -> str:
    by_reason: dict[str, dict[str, int]] = {}
    for (status, reason, name), n in data.decisions.items():
        by_reason.setdefault(f"{status}/{reason}", {})[name or "<no class>"] = n
    if not by_reason:
        return '<p class="muted">No box was dropped or flagged.</p>'
    order = sorted(by_reason, key=lambda k: -sum(by_reason[k].values()))
    rows = []
    for key in order:
        status = key.split("/", 1)[0]
        per_class = sorted(by_reason[key].items(), key=lambda kv: -kv[1])
        classes = ", ".join(f"{escape(c)} {n:,}" for c, n in per_class[:6]) + (" …" if len(per_class) > 6 else "")
        rows.append([f'<a href="#check-{order.index(key)}" class="{escape(status)}">{escape(key)}</a>',
                     fmt(sum(by_reason[key].values())), fmt(data.section_sizes.get(key, 0)), classes])
    parts = [table(["decision / reason", "boxes", "images", "by class"], rows)]
    for i, key in enumerate(order):
        shown = gallery(previews.get(key, []), data.section_sizes.get(key, 0)) if key in data.samples else (
            f'<p class="muted">No examples: only the first {MAX_SECTIONS} decisions met get example images.</p>')
        parts.append(f'<h3 id="check-{i}">{escape(key)}</h3>{shown}')
    return "".join(parts)


def gallery(items: list[Preview], total: int) -> str:
    if not items:
        return '<p class="muted">No images.</p>'
    figures = []
    for p in items:
        counts = ", ".join(f'<span class="{s}">{p.boxes[s]} {s}</span>' for s in STATUSES if p.boxes.get(s))
        warn = f' <span class="warn">({escape(p.problem)})</span>' if p.problem else ""
        texts = "".join(f'<br><span class="{escape(status)}">{escape(kind)} {escape(status)}:{escape(reason)}</span> '
                        f'“{escape(text)}”' for kind, status, reason, text in p.texts)
        figures.append(f'<figure><img src="{escape(p.src)}" width="{p.width}" height="{p.height}" '
                       f'alt="{escape(p.rel_path)}"><figcaption>{escape(p.rel_path)}{warn}<br>'
                       f'{counts or "no boxes"}{texts}</figcaption></figure>')
    return (f'<p class="muted">{len(items)} of {total:,} images (a uniform sample). Kept boxes in their class colour, '
            f'<span class="flagged">flagged as orange corners</span>, <span class="dropped">dropped as thin red '
            f'outlines</span>.</p><div class="grid">{"".join(figures)}</div>')


def failures(data: ReportData) -> str:
    if not data.images_failed:
        return '<p class="muted">No failed images.</p>'
    reasons = table(["reason", "images"], ([escape(r), fmt(n)] for r, n in data.failure_reasons.most_common()))
    listed = table(["image", "reason"], ([escape(f["rel_path"]), escape(f["reason"])] for f in data.failures))
    return (f"<p>{data.images_failed:,} images failed.</p>{reasons}<h3>Failed images"
            f"{' (a sample)' if data.images_failed > len(data.failures) else ''}</h3>{listed}")


def stages(runs: list[dict[str, Any]]) -> str:
    timed_runs = [r for r in runs if (r["summary"] or {}).get("stage_seconds")]
    labeled = [r for r in timed_runs if r["summary"].get("counts", {}).get("labeled")]
    last = (labeled or timed_runs or [None])[-1]  # the last run that labeled something: a run that skipped all is 0 s
    if last is None:
        return '<p class="muted">No stage timings recorded.</p>'
    s = last["summary"]
    timed = dict(s["stage_seconds"]) | {f"({k})": v for k, v in (s.get("loop_seconds") or {}).items()}
    items = sorted(timed.items(), key=lambda kv: -kv[1])
    images = s.get("stage_images", {})
    rows = [[escape(k), fmt(float(v), 2), fmt(images.get(k)),
             fmt(v / images[k] * 1000, 1) if images.get(k) else ""] for k, v in items]
    return (f'<p class="muted">Run #{last["id"]}; names in brackets are the loop\'s own time '
            f"(decoding, committing).</p>{svg.bars(items, 'seconds per stage', 'seconds')}"
            f"{table(['stage', 'seconds', 'images', 'ms per image'], rows)}")


def stale_warning(ev: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """A warning when a run labeled images after eval.json was written (its `created` is to the second)."""
    try:
        created = datetime.fromisoformat(str(ev.get("created"))).timestamp()
    except ValueError:
        return ""
    later = [r["id"] for r in runs if (r["ended"] or 0) > created + 1 and (r["summary"] or {}).get("counts", {}).get(
        "labeled")]
    if not later:
        return ""
    return (f'<p class="warn">eval.json was written before run #{later[-1]} labeled more images: these figures '
            f"describe the labels as they were; run <code>autolabel eval</code> again.</p>")


def eval_section(ev: dict[str, Any], classes: Sequence[str]) -> str:
    images, matched = ev.get("images", {}), ev.get("classes", {})
    head = (f'<p>Ground truth <code>{escape(str(ev.get("gt")))}</code> ({escape(str(ev.get("gt_format")))}), '
            f'IoU {fmt(ev.get("iou_threshold"), 2)}, flagged boxes {escape(str(ev.get("flagged")))}, written '
            f'{escape(str(ev.get("created")))}. Images: {fmt(images.get("matched"))} matched of '
            f'{fmt(images.get("run"))} in the run and {fmt(images.get("gt"))} in the ground truth; '
            f'{len(images.get("unmatched_run", []))} run images and {len(images.get("unmatched_gt", []))} '
            f'ground-truth images unmatched. Classes unmatched: run '
            f'{escape(", ".join(matched.get("unmatched_run", [])) or "none")}, ground truth '
            f'{escape(", ".join(matched.get("unmatched_gt", [])) or "none")}.</p>')
    per_class = ev.get("per_class", {})
    rows, attrs = [], []
    for name, m in [("overall", ev.get("overall", {})), *per_class.items()]:
        rows.append([escape(name), *(fmt(m.get(k)) for k in METRICS)])
        attrs.append([f'data-class="{escape(name)}"', *(f'data-metric="{k}"' for k in METRICS)])
    metrics = table(["class", *METRICS], rows, attrs)
    ap = svg.bars([(name, m.get("ap")) for name, m in per_class.items()], "AP (0.5:0.95) per class", "AP",
                  xmax=1.0, fmt="{:.3f}")
    color = {name: svg.class_color(classes.index(name)) if name in classes else "#607d8b" for name in per_class}
    series = {name: (c.get("recall", []), c.get("precision", [])) for name, c in ev.get("curves", {}).items()}
    stroke = {n: color.get(n, "#000000") for n in series}  # the curve of all classes ("__all__") in black
    pr = svg.curves(series, "precision / recall along the score", colors=list(stroke.values()))
    rel = ev.get("reliability") or {}
    reliability = svg.reliability(rel.get("bins", []), rel.get("confidence", []), rel.get("accuracy", []),
                                  rel.get("count", []), "reliability of the kept boxes' scores")
    legend = ", ".join(f'<span style="color:{c}">{escape(n)}</span>' for n, c in stroke.items())
    return (head + "<h3>Metrics</h3>" + metrics
            + f'<div class="grid"><figure>{ap}<figcaption>AP per class</figcaption></figure>'
            f'<figure>{pr}<figcaption>PR curves: {legend}</figcaption></figure>'
            f'<figure>{reliability}<figcaption>Reliability (bars: fraction of true positives per score bin, '
            f'dots at the mean score); ECE <span data-metric="ece">{fmt(rel.get("ece"))}</span></figcaption>'
            "</figure></div>" + confusion(ev.get("confusion") or {}) + filters(ev.get("filters") or {}))


def confusion(c: dict[str, Any]) -> str:
    labels, matrix = c.get("labels", []), c.get("matrix", [])
    if not labels:
        return ""
    top = max((v for row in matrix for v in row), default=0) or 1
    rows = []
    for name, row in zip(labels, matrix):
        cells = "".join(f'<td style="background:rgba(21,101,192,{v / top * 0.6:.2f})">{v:,}</td>' for v in row)
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    head = "".join(f"<th>{escape(n)}</th>" for n in labels)
    return (f"<h3>Confusion (rows: true class, columns: predicted class)</h3>"
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def filters(f: dict[str, Any]) -> str:
    if not f:
        return ""
    keys = ["dropped", "true_positives", "false_positives"]
    keys += [k for k in ("flagged", "flagged_true_positives") if any(k in v for v in f.values())]  # when given
    rows = [[escape(k), escape(str(v.get("stage"))), escape(str(v.get("reason"))), *(fmt(v.get(key)) for key in keys)]
            for k, v in f.items()]
    return ("<h3>What each filter dropped, checked against the ground truth</h3>"
            + table(["filter", "stage", "reason", *(k.replace("_", " ") for k in keys)], rows))
