"""The report's parts on data built by hand: what each chart draws (read back from its data-* attributes and
geometry), what each table says, which run the stage timings come from, bounded tallies, and the thumbnails."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.quality import report_data, report_html, report_svg
from autolabel.quality.report_data import OTHER, ReportData, collect
from autolabel.quality.report_html import Preview, fmt
from autolabel.quality.report_previews import _label, detections, load_thumbnail
from autolabel.quality.report_svg import Frame, _ticks, bars, class_color, curves, histogram, reliability


def attrs(svg: str, tag: str = "rect", cls: str = "bar") -> list[dict[str, str]]:
    """The attributes of each ``<tag class=cls ...>`` of a chart."""
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', m)) for m in re.findall(rf'<{tag} class="{cls}" ([^>]*)>', svg)]


# -- charts ------------------------------------------------------------------------------------------------------
def test_a_frame_maps_its_data_range_onto_its_plot_area() -> None:
    f = Frame(width=200, height=100, left=20, right=10, top=5, bottom=15, xmin=-1.0, xmax=3.0, ymin=10.0, ymax=20.0)
    assert (f.x0, f.x1, f.y0, f.y1) == (20, 190, 5, 85)
    assert (f.x(-1), f.x(3), f.x(1)) == (20, 190, 105)
    assert (f.y(10), f.y(20), f.y(15)) == (85, 5, 45)  # up is smaller y
    flat = Frame(xmin=2.0, xmax=2.0, ymin=1.0, ymax=1.0)
    assert flat.x(2.0) == flat.x0 and flat.y(1.0) == flat.y1  # an empty range draws at its start, not a crash
    svg = f.open("kind", 'a "title"')
    assert 'data-x0="20" data-x1="190" data-y0="5" data-y1="85"' in svg
    assert 'data-xmin="-1.0" data-xmax="3.0" data-ymin="10.0" data-ymax="20.0"' in svg
    assert 'aria-label="a &quot;title&quot;"><title>a &quot;title&quot;</title>' in svg


def test_ticks_are_round_steps_from_zero_to_the_top() -> None:
    assert _ticks(0.3) == [0, 0.1, 0.2, 0.3] and _ticks(7) == [0, 2, 4, 6] and _ticks(10) == [0, 5, 10]
    assert _ticks(12345) == [0, 5000, 10000] and _ticks(-3) == [0.0] and _ticks(4, n=2) == [0, 2, 4]
    assert report_svg._tick(0.25) == "0.25" and report_svg._tick(12345) == "1.2e+04"
    assert report_svg._tick(1000) == "1000" and report_svg._tick(9999) == "9999"  # whole up to 10,000


def test_a_histogram_stacks_each_bins_counts_in_series_order() -> None:
    svg = histogram({"kept": [3, 0, 1], "flagged": [1, 0, 0], "dropped": [0, 0, 2]}, "scores of <cat>")
    drawn = attrs(svg)
    assert [(a["data-series"], a["data-bin"], a["data-value"]) for a in drawn] == [
        ("kept", "0", "3"), ("kept", "2", "1"), ("flagged", "0", "1"), ("dropped", "2", "2")]
    f = Frame(top=24, ymax=4.0)  # the tallest bin holds 4
    kept0, kept2, flagged0, dropped2 = drawn
    assert float(kept0["y"]) == f.y(3) and float(kept0["height"]) == pytest.approx(f.y(0) - f.y(3), abs=0.01)
    assert float(flagged0["y"]) == f.y(4) and float(flagged0["height"]) == pytest.approx(f.y(3) - f.y(4), abs=0.01)
    assert float(dropped2["y"]) == f.y(3)  # on top of the kept box of its bin
    width = (f.x1 - f.x0) / 3
    assert [float(a["x"]) for a in drawn] == [f.x0, round(f.x0 + 2 * width, 2), f.x0, round(f.x0 + 2 * width, 2)]
    assert float(kept0["width"]) == round(width - 1, 2)
    assert [a["fill"] for a in drawn] == [report_svg.KEPT_COLOR, report_svg.KEPT_COLOR, report_svg.FLAGGED_COLOR,
                                          report_svg.DROPPED_COLOR]
    assert "<title>kept 0.67–1.00: 1</title>" in svg and "scores of &lt;cat&gt;" in svg
    assert svg.count(">kept</text>") == 1 and svg.endswith("</svg>")
    swatch = r'<rect x="[\d.]+" y="[\d.]+" width="9" height="9" fill="([^"]+)"/><text [^>]*>(\w+)</text>'
    swatches = re.findall(swatch, svg)
    assert swatches == [("#2e7d32", "kept"), ("#ef6c00", "flagged"), ("#c62828", "dropped")]  # as the bars'
    assert ">5</text>" not in svg and '">4</text>' in svg  # the count axis up to the tallest bin
    empty = histogram({"kept": [0, 0]}, "nothing")
    assert attrs(empty) == [] and 'data-ymax="1.0"' in empty


def test_bars_are_as_long_as_their_value_and_say_it() -> None:
    long = "a class name longer than twenty-four characters"
    svg = bars([("cat", 0.5), (long, 2.0), ("dog", None)], "AP", "AP", xmax=1.0, fmt="{:.2f}")
    drawn = attrs(svg)
    f = Frame(width=480, height=max(60, 30 + 18 * 3), left=150, right=56, bottom=22, xmax=1.0, ymax=3.0)
    assert [(a["data-label"], a["data-value"]) for a in drawn] == [("cat", "0.5"), (long, "2.0")]
    assert float(drawn[0]["width"]) == round(f.x(0.5) - f.x0, 2)
    assert float(drawn[1]["width"]) == round(f.x(1.0) - f.x0, 2)  # beyond xmax: clipped to it
    assert [float(a["y"]) for a in drawn] == [f.y0 + 2, f.y0 + 18 + 2]
    assert ">0.50</text>" in svg and ">2.00</text>" in svg and ">n/a</text>" in svg
    values = re.findall(r'<text x="([\d.]+)" y="([\d.]+)">([\d.]+)</text>', svg)  # each value beside its bar's end
    assert [(float(x), float(y), v) for x, y, v in values] == [
        (f.x0 + float(a["width"]) + 4, float(a["y"]) + 10, v) for a, v in zip(drawn, ("0.50", "2.00"))]
    assert f">{long[:23]}…</text>" in svg  # the label shortened, the data-label whole
    labels = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="end">([^<]*)</text>', svg)
    assert labels == [(str(f.x0 - 6), str(f.y0 + 12), "cat"), (str(f.x0 - 6), str(f.y0 + 30), long[:23] + "…"),
                      (str(f.x0 - 6), str(f.y0 + 48), "dog")]  # each beside its bar
    assert f'<text x="{(f.x0 + f.x1) / 2}" y="{f.height - 6}" text-anchor="middle">AP</text>' in svg
    auto = attrs(bars([("a", 3.0), ("b", 1.5)], "t", "s"))
    assert float(auto[1]["width"]) == pytest.approx(float(auto[0]["width"]) / 2, abs=0.01)  # xmax: the largest
    assert 'height="60"' in bars([], "t", "s")
    gap = attrs(bars([("a", 1.0), ("b", None), ("c", 2.0)], "t", "s"))
    assert [a["data-label"] for a in gap] == ["a", "c"]  # the rows after an n/a one are drawn too


def test_curves_draw_each_series_through_its_points_and_skip_unknown_ones() -> None:
    svg = curves({"cat": ([0.0, 0.5, None, 1.0], [1.0, 0.5, 0.7, 0.0]), "dog": ([], [])}, "PR")
    drawn = attrs(svg, "polyline", "curve")
    f = Frame(width=380, height=260)
    assert drawn[0]["data-series"] == "cat" and drawn[0]["points"] == (
        f"{f.x(0)},{f.y(1)} {f.x(0.5)},{f.y(0.5)} {f.x(1)},{f.y(0)}")
    assert drawn[1]["points"] == "" and [a["stroke"] for a in drawn] == [class_color(0), class_color(1)]
    assert [a["stroke"] for a in attrs(curves({"x": ([0], [0])}, "t", colors=["#123456"]), "polyline", "curve")] == [
        "#123456"]
    assert class_color(0) == report_svg.sv.ColorPalette.DEFAULT.by_idx(0).as_hex()


def test_a_reliability_diagram_has_a_bar_per_bin_with_boxes_and_a_dot_at_its_mean_score() -> None:
    edges = [0.0, 0.5, 1.0]
    svg = reliability(edges, [None, 0.8], [None, 0.6], [0, 5], "rel")
    drawn = attrs(svg)
    f = Frame(width=380, height=260)
    assert [(a["data-bin"], a["data-value"]) for a in drawn] == [("1", "0.6")]
    assert float(drawn[0]["x"]) == f.x(0.5) and float(drawn[0]["y"]) == f.y(0.6)
    assert float(drawn[0]["width"]) == round(f.x(1.0) - f.x(0.5) - 1, 2)
    assert float(drawn[0]["height"]) == round(f.y(0) - f.y(0.6), 2)
    assert f'<circle cx="{f.x(0.8)}" cy="{f.y(0.6)}"' in svg
    assert "0.5–1: 5 boxes, accuracy 0.600, mean score 0.800</title>" in svg
    ticks = re.findall(r'text-anchor="middle">([\d.]+)</text>', svg)
    assert ticks == ["0", "0.25", "0.5", "0.75", "1"]  # the score axis
    assert re.findall(r'text-anchor="end">([\d.]+)</text>', svg) == ["0", "0.25", "0.5", "0.75", "1"]
    assert attrs(reliability(edges, [0.2, 0.8], [0.1, None], [3, 0], "rel")) != []  # a bin with boxes: drawn
    none = reliability(edges, [0.2], [0.1], [3], "rel")  # lists shorter than the bins: nothing beyond them
    assert len(attrs(none)) == 1 and "<circle" in none
    assert "<circle" not in reliability(edges, [None, None], [0.3, None], [2, 0], "rel")  # no mean: no dot


# -- tables ------------------------------------------------------------------------------------------------------
def test_numbers_are_shown_the_same_way_everywhere() -> None:
    assert [fmt(None), fmt(True), fmt(1234567), fmt(0.12345), fmt(2.5, 1), fmt("<b>")] == [
        "n/a", "True", "1,234,567", "0.123", "2.5", "&lt;b&gt;"]
    assert report_html.table(None, [["a", 1]]) == "<table><tbody><tr><td>a</td><td>1</td></tr></tbody></table>"
    assert report_html.table(["x", "<y>"], [["1", "2"]], [['data-a="1"', ""]]) == (
        "<table><thead><tr><th>x</th><th>&lt;y&gt;</th></tr></thead><tbody><tr><td data-a=\"1\">1</td>"
        "<td>2</td></tr></tbody></table>")


def run(id_: int, status: str = "ok", ended: float | None = 1_700_000_100.0, **summary: object) -> dict:
    """A store's run row (started 2023-11-14T22:13:20Z) with these summary keys."""
    return {"id": id_, "status": status, "started": 1_700_000_000.0, "ended": ended,
            "pipeline_hash": "0123456789abcdef", "summary": summary or None}


def test_the_summary_and_history_say_what_the_last_run_did() -> None:
    last = run(2, "partial", seconds=12.25, images_per_second=1.5, started="2026-01-01T00:00:00+00:00",
               counts={"seen": 4, "labeled": 3, "skipped": 0, "failed": 1}, error="1 image failed",
               pipeline={"name": "p<1>", "file": "p.yaml"})
    data = ReportData(runs=[run(1), last], images_done=3, images_failed=1, boxes=1234,
                      texts=Counter({("caption", "kept"): 3, ("caption", "dropped"): 1000}))
    html = report_html.summary(data)
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", html)
    assert dict(cells) == {
        "images in the store": "4", "labeled": "3", "failed": "1", "boxes": "1,234", "runs recorded": "2",
        "last run": '#2 <b class="partial">partial</b>', "started": "2026-01-01T00:00:00+00:00", "seconds": "12.2",
        "images per second": "1.50", "seen / labeled / skipped / failed": "4 / 3 / 0 / 1",
        "pipeline": 'p&lt;1&gt; <span class="muted">p.yaml 0123456789ab</span>',
        "error": '<span class="warn">1 image failed</span>',
        "image-level texts": "caption dropped: 1,000, caption kept: 3"}
    assert "last run" not in report_html.summary(ReportData(runs=[]))
    history = report_html.history([run(1), last])
    assert history.startswith("<table><thead><tr><th>run</th><th>status</th><th>started (UTC)</th><th>seconds</th>"
                              "<th>seen</th><th>labeled</th><th>skipped</th><th>failed</th><th>pipeline</th></tr>")
    rows = re.findall(r"<tr>(.*?)</tr>", history)[1:]
    assert [re.findall(r"<td>(.*?)</td>", r)[0] for r in rows] == ["#2", "#1"]  # the latest first
    assert "<td>2023-11-14T22:13:20+00:00</td><td>12.2</td><td>4</td><td>3</td><td>0</td><td>1</td>" in rows[0]
    assert rows[1].count("<td>n/a</td>") == 5  # a run without a summary
    assert report_html.history([]) == '<p class="muted">No runs recorded.</p>'


def test_stage_times_come_from_the_last_run_that_labeled_something() -> None:
    labeled = run(1, stage_seconds={"detect": 3.0, "masks": 1.0}, stage_images={"detect": 6, "masks": 4},
                  loop_seconds={"commit": 2.0}, counts={"labeled": 6})
    skipped_all = run(2, stage_seconds={"detect": 0.0}, stage_images={}, counts={"labeled": 0})
    html = report_html.stages([labeled, skipped_all, run(3)])
    assert html.startswith('<p class="muted">Run #1;')
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", html)
    assert rows == [("detect", "3.00", "6", "500.0"), ("(commit)", "2.00", "n/a", ""), ("masks", "1.00", "4", "250.0")]
    assert report_html.stages([skipped_all]).startswith('<p class="muted">Run #2;')  # none labeled: the last timed
    assert report_html.stages([run(4)]) == '<p class="muted">No stage timings recorded.</p>'


def test_the_class_table_and_checks_count_per_class_and_decision() -> None:
    data = ReportData(runs=[], scores=Counter({("cat", "kept", 3): 5, ("cat", "dropped", -1): 2,
                                               ("dog", "flagged", 19): 1, ("cat", "kept", -1): 1}),
                      decisions=Counter({("dropped", "low_score", "cat"): 2, ("flagged", "edge", "dog"): 1,
                                         ("dropped", "low_score", ""): 4}),
                      samples={"dropped/low_score": []}, section_sizes={"dropped/low_score": 3, "flagged/edge": 1})
    table = report_html.class_table(data)
    assert '<td data-class="cat">cat</td><td data-status="kept">6</td><td data-status="flagged">0</td>' \
           '<td data-status="dropped">2</td><td>8</td><td>3</td>' in table
    assert table.index("cat") < table.index("dog")  # the most boxes first
    assert data.histogram("cat", "kept")[3] == 5 and sum(data.histogram("cat", "kept")) == 5
    html = report_html.checks(data, {})
    assert '<a href="#check-0" class="dropped">dropped/low_score</a></td><td>6</td><td>3</td>' \
           "<td>&lt;no class&gt; 4, cat 2</td>" in html
    assert '<a href="#check-1" class="flagged">flagged/edge</a></td><td>1</td><td>1</td><td>dog 1</td>' in html
    assert '<h3 id="check-0">dropped/low_score</h3><p class="muted">No images.</p>' in html
    assert "No examples: only the first 40 decisions met get example images." in html  # flagged/edge: not sampled
    shown = report_html.checks(data, {"dropped/low_score": [Preview("img/s01-000.jpg", "a.png", 9, 9, {})]})
    assert '<h3 id="check-0">dropped/low_score</h3><p class="muted">1 of 3 images (a uniform sample).' in shown
    many = ReportData(runs=[], decisions=Counter({("dropped", "r", f"c{k}"): 10 - k for k in range(8)}))
    assert "c5 5 …</td>" in report_html.checks(many, {})  # six classes named, then an ellipsis
    assert report_html.class_table(ReportData(runs=[])) == '<p class="muted">No boxes.</p>'
    assert report_html.checks(ReportData(runs=[]), {}) == '<p class="muted">No box was dropped or flagged.</p>'


def test_histograms_for_the_most_frequent_classes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_html, "MAX_HISTOGRAMS", 2)
    data = ReportData(runs=[], scores=Counter({(c, "kept", 0): n for c, n in (("a", 1), ("b", 5), ("c", 3))}))
    html = report_html.histograms(data)
    assert re.findall(r"<figcaption>(\w)</figcaption>", html) == ["b", "c"]  # the most boxes first
    assert [(a["data-bin"], a["data-value"]) for a in attrs(html)] == [("0", "5"), ("0", "3")]  # each its own
    assert '<p class="muted">1 less frequent classes not shown.</p>' in html
    assert "less frequent" not in report_html.histograms(ReportData(runs=[], scores=Counter({("a", "kept", 0): 1})))


def test_a_gallery_caption_says_what_each_thumbnail_shows() -> None:
    shown = [Preview("img/s00-000.jpg", "a<b>.png", 36, 24, {"kept": 2, "dropped": 1}, "file not found",
                     [("caption", "dropped", "repetition", "again again")]), Preview("img/x.jpg", "c.png", 10, 10, {})]
    html = report_html.gallery(shown, 1234)
    assert html.startswith('<p class="muted">2 of 1,234 images (a uniform sample).')
    assert '<img src="img/s00-000.jpg" width="36" height="24" alt="a&lt;b&gt;.png">' in html
    assert ('a&lt;b&gt;.png <span class="warn">(file not found)</span><br><span class="kept">2 kept</span>, '
            '<span class="dropped">1 dropped</span><br><span class="dropped">caption dropped:repetition</span> '
            '“again again”') in html
    assert "c.png<br>no boxes</figcaption>" in html
    assert report_html.gallery([], 5) == '<p class="muted">No images.</p>'


def test_failures_list_reasons_and_a_sample_of_images() -> None:
    data = ReportData(runs=[], images_failed=3, failure_reasons=Counter({"bad": 2, "worse": 1}),
                      failures=[{"rel_path": "a.png", "reason": "bad"}])
    html = report_html.failures(data)
    assert html.startswith("<p>3 images failed.</p><table><thead><tr><th>reason</th><th>images</th></tr>")
    assert "<td>bad</td><td>2</td>" in html and "<tr><th>image</th><th>reason</th></tr>" in html
    assert "<h3>Failed images (a sample)</h3>" in html and "<td>a.png</td><td>bad</td>" in html
    data.images_failed = 1
    assert "<h3>Failed images</h3>" in report_html.failures(data)
    assert report_html.failures(ReportData(runs=[])) == '<p class="muted">No failed images.</p>'


def test_an_eval_json_older_than_a_run_that_labeled_is_flagged_as_stale() -> None:
    ev = {"created": "2023-11-14T22:15:00+00:00"}  # 1_700_000_100
    later = run(5, ended=1_700_000_102.0, counts={"labeled": 2})
    assert "before run #5 labeled more images" in report_html.stale_warning(ev, [run(4), later])
    assert report_html.stale_warning(ev, [run(5, ended=1_700_000_101.0, counts={"labeled": 2})]) == ""  # within 1 s
    assert report_html.stale_warning(ev, [run(5, ended=1_700_000_200.0, counts={"labeled": 0})]) == ""  # skipped all
    assert report_html.stale_warning(ev, [run(5, ended=None, counts={"labeled": 1})]) == ""  # still running
    assert report_html.stale_warning({"created": "yesterday"}, [later]) == ""


def test_the_confusion_and_filter_tables() -> None:
    html = report_html.confusion({"labels": ["cat", "background"], "matrix": [[4, 1], [2, 0]]})
    assert "<tr><th>cat</th><td style=\"background:rgba(21,101,192,0.60)\">4</td>" \
           "<td style=\"background:rgba(21,101,192,0.15)\">1</td></tr>" in html
    assert "<thead><tr><th></th><th>cat</th><th>background</th></tr></thead>" in html
    assert report_html.confusion({}) == "" and "rgba(21,101,192,0.00)" in report_html.confusion(
        {"labels": ["a"], "matrix": [[0]]})
    plain = report_html.filters({"nms/nms": {"stage": "nms", "reason": "nms", "dropped": 5, "true_positives": 1,
                                             "false_positives": 4}})
    assert "<th>dropped</th><th>true positives</th><th>false positives</th></tr>" in plain
    assert "<td>nms/nms</td><td>nms</td><td>nms</td><td>5</td><td>1</td><td>4</td>" in plain
    assert report_html.filters({}) == ""


# -- tallies -----------------------------------------------------------------------------------------------------
def test_reasons_and_sections_beyond_their_bounds_are_counted_together(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from report_store import make_store

    from autolabel.store import ImageResult, Store

    out = make_store(tmp_path, images=3, boxes=3, failed=3, write_images=False)
    with Store(out) as store:
        store.commit([ImageResult(f"/x/{k}.png", f"{k}.png", None, "failed", reason=f"reason {k}") for k in range(3)],
                     store.runs()[-1]["id"], "hash0123456789")
    monkeypatch.setattr(report_data, "MAX_FAILURE_REASONS", 2)
    monkeypatch.setattr(report_data, "MAX_SECTIONS", 1)
    monkeypatch.setattr(report_data, "MAX_REASONS", 1)
    with Store(out) as store:
        data = collect(store, samples=2)
    assert data.images_failed == 6 and sum(data.failure_reasons.values()) == 6
    assert data.failure_reasons["truncated or corrupt image data (unexpected end of file)"] == 3
    assert data.failure_reasons[OTHER] == 2 and len(data.failure_reasons) == 3  # reason 0, then the rest
    # the first reason met by name (box 0 of image 0 is flagged edge_box), the others joined
    assert {r for _, r, _ in data.decisions} == {"edge_box", OTHER}
    assert list(data.samples) == ["labeled", "flagged/edge_box"]  # one section beyond "labeled": the first met
    # images per section: the sampled ones and the one beyond (every image has a box dropped for a joined reason)
    assert data.section_sizes == {"labeled": 3, "flagged/edge_box": 1, f"dropped/{OTHER}": 3}
    assert len(data.failures) == 6 and [f["rel_path"] for f in data.failures] == sorted(f["rel_path"]
                                                                                       for f in data.failures)


def test_box_counts_are_tallied_in_flushes_of_bounded_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from report_store import make_store

    from autolabel.store import Store

    out = make_store(tmp_path, images=5, boxes=4, failed=0, write_images=False)
    with Store(out) as store:
        whole = collect(store)
        monkeypatch.setattr(report_data, "_FLUSH", 3)
        flushed = collect(store)
    assert flushed.scores == whole.scores and sum(whole.scores.values()) == whole.boxes == 20
    assert whole.decisions == flushed.decisions


# -- thumbnails ----------------------------------------------------------------------------------------------------
def test_thumbnails_take_the_longer_side_to_the_thumbnail_size(tmp_path: Path) -> None:
    Image.new("RGB", (40, 20), (10, 200, 10)).save(tmp_path / "small.png")
    row = {"path": str(tmp_path / "small.png"), "rel_path": "small.png", "labels": {"width": 40, "height": 20}}
    image, scale, problem = load_thumbnail(row, side=100)
    assert image.size == (100, 50) and scale == 2.5 and problem is None  # a small image grows
    image, scale, problem = load_thumbnail(row | {"labels": {"width": 80, "height": 40}}, side=100)
    assert (image.size, scale) == ((100, 50), 1.25) and problem == "changed since labeling (40x20, labeled at 80x40)"
    gone = {"path": str(tmp_path / "gone.png"), "rel_path": "gone.png", "width": 30, "height": 60, "labels": None}
    image, scale, problem = load_thumbnail(gone, side=120)
    assert image.size == (60, 120) and scale == 2.0 and problem and image.getpixel((50, 110)) == (90, 90, 90)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _, _, problem = load_thumbnail({"path": str(tmp_path / "bad.png"), "rel_path": "bad.png", "labels": {}}, side=50)
    assert problem and "\n" not in problem


def test_detections_at_thumbnail_scale_with_class_ids_of_the_report() -> None:
    from autolabel.records import encode_mask

    mask = np.zeros((20, 40), bool)
    mask[0:10, 0:20] = True
    record = {"boxes": {"xyxy": [[0, 0, 20, 10], [10, 10, 40, 20]], "confidence": [0.5, None],
                        "mask": [encode_mask(mask), None],
                        "data": {"class_name": ["dog", "yak"], "status": ["kept", "dropped"], "reason": ["", "nms"]}}}
    det = detections(record, 0.5, (20, 10), ["cat", "dog"])
    assert det.xyxy.tolist() == [[0, 0, 10, 5], [5, 5, 20, 10]] and det.class_id.tolist() == [1, 2]
    assert det.data["status"].tolist() == ["kept", "dropped"] and det.data["class_name"].tolist() == ["dog", "yak"]
    assert det.confidence[0] == 0.5
    assert det.mask.shape == (2, 10, 20) and det.mask[0, :5, :10].all() and det.mask[0].sum() == 50
    assert not det.mask[1].any() and det.data["has_mask"].tolist() == [True, False]
    assert np.isnan(det.confidence[1]) and det.data["reason"].tolist() == ["", "nms"]
    bare = detections({"boxes": {"xyxy": [[0, 0, 2, 2]], "confidence": [0.9], "data": {}}}, 1.0, (4, 4), ["a"])
    assert bare.mask is None and bare.data["status"].tolist() == ["kept"] and bare.class_id.tolist() == [1]
    assert len(detections({}, 1.0, (4, 4), ["a"])) == 0
    assert _label("cat", 0.456, "kept", "") == "cat 0.46" and _label("", float("nan"), "kept", "") == "?"
    assert _label("cat", 0.1, "dropped", "low_score") == "cat 0.10 d:low_score"


def test_a_thumbnails_mask_pixel_is_the_nearest_mask_pixel_never_a_blend() -> None:
    # shrinking a mask must not smear it: each thumbnail pixel takes the source pixel its top-left corner falls on
    # (OpenCV's nearest neighbour), so thin structures neither thicken nor vanish by averaging
    from autolabel.records import encode_mask

    mask = np.random.default_rng(3).random((21, 37)) < 0.5
    record = {"boxes": {"xyxy": [[0, 0, 37, 21]], "confidence": [0.5], "mask": [encode_mask(mask)],
                        "data": {"class_name": ["cat"]}}}
    det = detections(record, 0.4, (15, 8), ["cat"])
    rows, cols = (np.arange(8) * 21 / 8).astype(int), (np.arange(15) * 37 / 15).astype(int)
    assert np.array_equal(det.mask[0], mask[np.ix_(rows, cols)])


def test_reservoirs_share_the_seeded_generator_so_a_report_is_reproducible() -> None:
    draws = []
    for _ in range(2):
        r = report_data.Reservoir(3, random.Random(7))
        for i in range(50):
            r.offer(i)
        draws.append(r.items)
    assert draws[0] == draws[1] and len(draws[0]) == 3


def test_the_evaluation_section_says_what_was_matched_and_draws_its_charts() -> None:
    from report_store import eval_fixture

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ev = eval_fixture(Path(folder))
    ev["classes"]["unmatched_run"], ev["classes"]["unmatched_gt"] = [], ["cat", "cow"]
    html = report_html.eval_section(ev, ["person", "forklift", "pallet"])
    assert ("Classes unmatched: run none, ground truth cat, cow.</p>") in html
    assert "Images: 10 matched of 12 in the run and 11 in the ground truth; 2 run images and 1 ground-truth images " \
           "unmatched." in html
    assert '<title>AP (0.5:0.95) per class</title>' in html and "<title>precision / recall along the score</title>" \
        in html
    reliability_svg = html[html.index('data-chart="reliability"'):]
    assert len(attrs(reliability_svg[:reliability_svg.index("</svg>")])) == 9  # the bins with boxes
    assert '<span data-metric="ece">0.051</span>' in html
    pr = attrs(html[html.index("<title>precision / recall along the score</title>"):], "polyline", "curve")
    assert pr and all(len(a["points"].split()) >= 2 for a in pr)  # each class's curve through its points
    stroke = {a["data-series"]: a["stroke"] for a in pr}
    assert stroke["__all__"] == "#000000" and stroke["person"] == report_svg.class_color(0)  # all classes in black
    assert '<span style="color:#000000">__all__</span>' in html
    assert '<span style="color:' + report_svg.class_color(0) + '">person</span>' in html
    ap = html[html.index('data-chart="bars"'):]
    assert ">0.610</text>" in ap[:ap.index("</svg>")]  # AP per class to three decimals (0.61 of eval.json)
    table = report_html.confusion(ev["confusion"])
    assert table.startswith("<h3>") and html.endswith(table + report_html.filters(ev["filters"]))


def test_a_report_samples_the_same_images_for_the_same_seed_and_counts_each_previews_boxes(tmp_path: Path) -> None:
    from report_store import make_store

    from autolabel.quality.report import write_previews
    from autolabel.store import Store

    out = make_store(tmp_path, images=8, boxes=3, failed=0)
    with Store(out) as store:
        default, zero, other = collect(store, samples=2), collect(store, samples=2, seed=0), collect(store, samples=2,
                                                                                                     seed=5)
    names = [[r["rel_path"] for r in d.samples["labeled"]] for d in (default, zero, other)]
    assert names[0] == names[1] and names[0] != names[2]  # seed 0 unless asked
    previews = write_previews(default, tmp_path / "img", ["person", "forklift", "pallet"])
    for section, shown in previews.items():
        for preview, row in zip(shown, sorted(default.samples[section], key=lambda r: r["rel_path"])):
            statuses = row["labels"]["boxes"]["data"]["status"]
            assert preview.boxes == dict(Counter(statuses)) and sum(preview.boxes.values()) == 3
            assert preview.rel_path == row["rel_path"] and (tmp_path / preview.src).is_file()


# -- the frame, the page and the calibration section -------------------------------------------------------------
def test_a_frames_axes_outline_its_plot_area_and_bars_span_one_row_per_item() -> None:
    f = Frame(width=200, height=100, left=20, right=10, top=5, bottom=15)
    assert f.axes("x", "y", [], []).startswith('<rect x="20" y="5" width="170" height="80" fill="none"')
    assert 'data-ymin="0.0" data-ymax="3.0"' in bars([("a", 1.0), ("b", 2.0), ("c", 3.0)], "t", "s")
    assert 'data-ymax="1.0"' in bars([], "t", "s")  # no rows: one, not a zero-height range
    assert 'height="84" viewBox="0 0 480 84" data-x0="150" data-x1="424" data-y0="12" data-y1="62"' in bars(
        [("a", 1.0), ("b", 2.0), ("c", 3.0)], "t", "s")  # 18 px a row; the plot ends 22 px above the bottom


def test_the_page_links_every_section_and_the_tables_name_their_columns() -> None:
    data = ReportData(runs=[run(1, stage_seconds={"detect": 1.0}, stage_images={"detect": 2}, counts={"labeled": 2})],
                      scores=Counter({("cat", "kept", 3): 1}), decisions=Counter({("dropped", "edge", "cat"): 2}))
    html = report_html.page("a run", data, {}, None, ["cat"])
    sections = [("summary", "Run summary"), ("history", "History"), ("classes", "Classes"),
                ("scores", "Score histograms"), ("checks", "Quality checks"), ("samples", "Sample of labeled images"),
                ("failures", "Failures"), ("stages", "Slowest stages")]
    for key, name in sections:
        assert f'<a href="#{key}">{name}</a>' in html and f'<section id="{key}"><h2>{name}</h2>' in html
    assert re.findall(r"</section>(.*?)<section", html, re.S) == [""] * (len(sections) - 1)  # one after the other
    assert "<th>class</th><th>kept</th><th>flagged</th><th>dropped</th><th>total</th><th>without score</th>" in html
    assert "<th>stage</th><th>seconds</th><th>images</th><th>ms per image</th>" in html
    # a reason met in no sampled image: 0 images, not the default of another table
    assert '<a href="#check-0" class="dropped">dropped/edge</a></td><td>2</td><td>0</td>' in html
    assert "<th>decision / reason</th><th>boxes</th><th>images</th><th>by class</th>" in html


def test_the_evaluation_section_names_its_ground_truth() -> None:
    ev = {"gt": "gt/<coco>.json", "gt_format": "coco", "iou_threshold": 0.5, "flagged": "include",
          "created": "2026-01-01T00:00:00+00:00", "images": {}, "classes": {}}
    assert report_html.eval_section(ev, []).startswith(
        "<p>Ground truth <code>gt/&lt;coco&gt;.json</code> (coco), IoU 0.50, flagged boxes include, written "
        "2026-01-01T00:00:00+00:00.")
    bare = report_html.eval_section({"version": 1}, [])  # a version-1 eval.json missing every other key
    assert ("n/a matched of n/a in the run and n/a in the ground truth; 0 run images and 0 ground-truth images "
            "unmatched. Classes unmatched: run none, ground truth none.</p><h3>Metrics</h3><table><thead>") in bare
    assert '<td data-class="overall">overall</td><td data-metric="ap">n/a</td>' in bare


def test_the_calibration_section_says_per_class_what_was_decided_and_on_which_score(tmp_path: Path) -> None:
    from autolabel.errors import AutolabelError
    from autolabel.quality import report_calibration as rc

    report = {"target_precision": 0.9, "confidence": 0.95, "bound": "clopper-pearson", "iou_threshold": 0.5,
              "stage": "detect", "created": "2026-01-02T00:00:00+00:00",
              "per_class": {"cat": {"status": "ok", "threshold": 0.42, "precision": 0.95, "precision_lower_bound": 0.91,
                                    "recall": 0.5, "kept": 20, "candidates": 40},
                            "d<g": {"status": "unreachable", "action": "flag", "threshold": None, "kept": 0,
                                    "candidates": 3},
                            "cow": {"status": "thin_evidence"}}}  # no action written: said as unknown
    pipeline = {"stages": [{"type": "concepts", "name": "sam3"}, {"type": "concepts"}, {"type": "detect"}, "x"]}
    html = rc.section(report, pipeline, fmt=fmt, table=report_html.table)
    assert html.startswith("<p>Target precision 0.90 at 0.95 confidence (clopper-pearson lower bound), IoU 0.50; "
                           "thresholds for stage <code>detect</code>, written 2026-01-02T00:00:00+00:00.</p>")
    assert ("<p>Scores:</p><ul><li>stage sam3: SAM 3 score = query_score × presence_score (both kept per box)</li>"
            "<li>stage concepts: SAM 3 score") in html
    assert ("<th>class</th><th>status</th><th>threshold</th><th>precision</th><th>precision lower bound</th>"
            "<th>recall</th><th>kept</th><th>candidates</th>") in html
    assert ('<td data-class="cat">cat</td><td data-metric="status">ok</td><td data-metric="threshold">0.420</td>'
            '<td data-metric="precision">0.950</td><td data-metric="precision_lower_bound">0.910</td>'
            '<td data-metric="recall">0.500</td><td data-metric="kept">20</td><td data-metric="candidates">40</td>'
            ) in html
    assert ('<td data-class="d&lt;g">d&lt;g</td><td data-metric="status">unreachable → flag</td>'
            '<td data-metric="threshold">n/a</td>') in html
    assert '<td data-class="cow">cow</td><td data-metric="status">thin_evidence → ?</td>' in html
    assert "Scores" not in rc.section(report, None, fmt=fmt, table=report_html.table)
    assert rc.scores_of({"stages": None}) == [] and rc.scores_of(None) == []
    path = tmp_path / rc.CALIBRATION_NAME
    assert rc.load(path) is None
    path.write_text('{"per_class": {}}')
    assert rc.load(path) == {"per_class": {}}
    for text, why in (("{", "not readable JSON"), ("[]", "not a calibration report"),
                      ('{"per_class": []}', "not a calibration report")):
        path.write_text(text)
        with pytest.raises(AutolabelError, match=rf"^{re.escape(str(path))}: {why} .*\); run `autolabel calibrate` "
                                                 "again, or delete it to report without calibration$"):
            rc.load(path)


def test_the_report_command_samples_12_images_with_seed_0_unless_told() -> None:
    import argparse

    from autolabel.quality.report import add_report_parser

    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "out"])
    assert (args.output_dir, args.out, args.samples, args.seed) == ("out", None, 12, 0)
    args = parser.parse_args(["report", "out", "--samples", "3", "--seed", "7", "--out", "page"])
    assert (args.samples, args.seed, args.out) == (3, 7, "page")


def test_a_dropped_box_is_labeled_only_in_the_section_of_its_own_reason() -> None:
    import supervision as sv

    from autolabel.quality.report_previews import annotate

    det = sv.Detections(xyxy=np.array([[20.0, 30.0, 90.0, 80.0]]), confidence=np.array([0.3]), class_id=np.array([0]),
                        data={"status": np.array(["dropped"]), "reason": np.array(["low_score"]),
                              "class_name": np.array(["cat"])})

    def drawn(focus: str | None) -> np.ndarray:
        return np.asarray(annotate(Image.new("RGB", (120, 100), "white"), det, focus))

    plain = drawn(None)
    assert (plain != 255).any()  # the dropped box itself is drawn in every section
    assert np.array_equal(drawn("dropped/edge"), plain)  # another reason's section: no label
    labeled = drawn("dropped/low_score")
    assert (labeled != plain).any(axis=2).sum() > 50  # its own: the label is drawn too

    def ink_columns(score: float, status: str = "kept", reason: str = "") -> int:
        one = sv.Detections(xyxy=np.array([[95.0, 60.0, 105.0, 90.0]]), confidence=np.array([score]),
                            class_id=np.array([0]), data={"status": np.array([status]), "reason": np.array([reason]),
                                                          "class_name": np.array(["cat"])})
        drawn = np.asarray(annotate(Image.new("RGB", (200, 100), "white"), one, f"{status}/{reason}"))
        return int((drawn != 255).any(axis=(0, 2)).sum())  # the label is wider than the box: its width

    # the label says the class, the score when there is one, and a dropped box's reason: "cat" < "cat 0.30" < ...
    assert ink_columns(float("nan")) < ink_columns(0.3) < ink_columns(0.3, "dropped", "low_score")


def test_each_sections_thumbnails_label_the_dropped_boxes_of_that_sections_reason_only(tmp_path: Path) -> None:
    # One image in three sections: the labeled sample shows no dropped box's label, each drop reason's section
    # the label of its own reason's box (in red) and not the other's.
    from autolabel.quality.report import write_previews
    from autolabel.quality.report_previews import write_preview

    Image.new("RGB", (200, 120), "white").save(tmp_path / "a.png")
    row = {"path": str(tmp_path / "a.png"), "rel_path": "a.png", "labels": {
        "width": 200, "height": 120,
        "boxes": {"xyxy": [[10, 10, 90, 60], [110, 50, 190, 110]], "confidence": [0.2, 0.9],
                  "data": {"class_name": ["cat", "dog"], "status": ["dropped", "dropped"],
                           "reason": ["low_score", "edge"]}}}}
    sections = ["labeled", "dropped/low_score", "dropped/edge"]
    data = ReportData(runs=[], samples={s: [row] for s in sections})
    previews = write_previews(data, tmp_path / "img", ["cat", "dog"])
    written = {s: np.asarray(Image.open(tmp_path / previews[s][0].src)) for s in sections}
    for s, focus in zip(sections, (None, *sections[1:])):
        write_preview(row, tmp_path / "alone.jpg", ["cat", "dog"], focus)
        assert np.array_equal(written[s], np.asarray(Image.open(tmp_path / "alone.jpg"))), s
    plain = written["labeled"].astype(int)
    for s, ink in (("dropped/low_score", (slice(0, 60), slice(0, 180))),
                   ("dropped/edge", (slice(40, 120), slice(180, 360)))):
        changed = np.abs(written[s].astype(int) - plain).sum(axis=2) > 60
        assert changed[ink].sum() > 50, s  # its own box's label, near that box
        assert changed.sum() - changed[ink].sum() < 10, s  # and nothing else
        r, g, b = written[s][ink][changed[ink]].astype(int).T
        assert ((r > 150) & (g < 100) & (b < 100)).mean() > 0.5, s  # on the dropped boxes' red


def one_box_drawn(status: str, side: int) -> np.ndarray:
    """``annotate`` of one box of ``status``, (40, 40)–(200, 200) scaled to a white ``side``² image, as ints."""
    import supervision as sv

    from autolabel.quality.report_previews import annotate

    det = sv.Detections(xyxy=np.array([[40.0, 40.0, 200.0, 200.0]]) * side / 240, confidence=np.array([0.3]),
                        class_id=np.array([0]), data={"status": np.array([status]), "reason": np.array(["r"]),
                                                      "class_name": np.array(["cat"]), "has_mask": np.array([False])})
    return np.asarray(annotate(Image.new("RGB", (side, side), "white"), det)).astype(int)


@pytest.mark.parametrize("side", [240, 480, 1440])
def test_a_flagged_box_is_marked_by_orange_corners_that_grow_with_the_image(side: int) -> None:
    # thin = the image's shorter side / 240 (at least 1): each corner's arms run 6 thin lines (at least 6 px) past
    # the corner, thin + 2 thick; the middle of each edge stays bare (a flagged box is not a kept box).
    k = side / 240
    a = one_box_drawn("flagged", side)
    orange = (a[..., 0] > 200) & (a[..., 1] > 80) & (a[..., 1] < 140) & (a[..., 2] < 60)  # #ef6c00
    thin = max(1, round(k))
    arm, thick = max(6, 6 * thin), thin + 2
    stroke = 2 * ((thick + 1) // 2) + 1  # the pixels cv2 covers across a line `thick` wide
    bottom, left = round(200 * k), round(40 * k)
    along = np.flatnonzero(orange[bottom, : side // 2])  # the bottom-left corner's horizontal arm
    across = np.flatnonzero(orange[side // 2:, left + arm // 2])  # that arm's width, halfway along it
    assert (len(along), len(across)) == (arm + stroke, stroke)
    assert along[0] == left - (thick + 1) // 2 and np.all(np.diff(along) == 1)
    middle = round(120 * k)
    assert not orange[bottom, middle - 5: middle + 5].any() and not orange[middle - 5: middle + 5, left].any()


@pytest.mark.parametrize("side", [240, 720])
def test_a_dropped_box_is_outlined_thin_in_red(side: int) -> None:
    # dropped boxes are context, not labels: one thin line (the image's shorter side / 240), under the kept boxes
    a = one_box_drawn("dropped", side)
    red = (a[..., 0] > 150) & (a[..., 1] < 100) & (a[..., 2] < 100)
    thin = max(1, round(side / 240))
    across = np.flatnonzero(red[:, side // 2])  # the top and bottom edges, halfway along
    assert len(across) == 2 * (2 * ((thin + 1) // 2) + 1 if thin > 1 else 1)


def test_a_stored_text_without_a_status_is_a_kept_one(tmp_path: Path) -> None:
    # A record's text may leave out status and reason (labels.Text's defaults: kept, ""): the report counts it as
    # kept and lists only the decided text under the image's thumbnail.
    from autolabel.quality.report import write_previews
    from autolabel.store import ImageResult, Store

    Image.new("RGB", (40, 30), "white").save(tmp_path / "a.png")
    texts = [{"kind": "caption", "text": "a cat", "score": 0.8, "stage": "cap"},
             {"kind": "ocr", "text": "EXIT", "score": None, "stage": "ocr", "status": "dropped", "reason": "short"}]
    record = {"width": 40, "height": 30, "boxes": {"xyxy": [], "confidence": [], "data": {}}, "texts": texts}
    with Store(tmp_path / "out") as store:
        run_id = store.begin_run("h", {"name": "t", "ontology": ["cat"]})
        store.commit([ImageResult(str(tmp_path / "a.png"), "a.png", "0" * 64, "done", 40, 30, labels=record)],
                     run_id, "h")
        data = collect(store)
    assert data.texts == Counter({("caption", "kept"): 1, ("ocr", "dropped"): 1})
    assert data.decisions == Counter({("dropped", "short", "<text:ocr>"): 1})
    previews = write_previews(data, tmp_path / "img", ["cat"])
    assert [p.texts for p in previews["labeled"]] == [[("ocr", "dropped", "short", "EXIT")]]


def test_a_charts_axes_are_whole_elements_with_tick_values_below_and_left_and_names_beside_the_plot() -> None:
    svg = reliability([0.0, 1.0], [0.5], [0.5], [1], "rel")
    f = Frame(width=380, height=260)
    ticks = [0, 0.25, 0.5, 0.75, 1]
    axes = f.axes("score", "fraction correct", ticks, ticks)
    assert axes in svg
    assert re.sub(r'<(\w+)[^>]*>[^<]*</\1>|<\w+[^>]*/>', "", axes) == ""  # elements only, nothing between
    below = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="middle">([\d.]+)</text>', axes)
    assert [(float(x), float(y), t) for x, y, t in below] == [(f.x(t), f.y1 + 12, f"{t:g}") for t in ticks]
    left = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="end">([\d.]+)</text>', axes)
    assert [(float(x), float(y), t) for x, y, t in left] == [(f.x0 - 4, f.y(t) + 3, f"{t:g}") for t in ticks]
    assert f'<text x="{(f.x0 + f.x1) / 2}" y="{f.height - 4}" text-anchor="middle">score</text>' in svg
    assert (f'<text transform="translate(10 {(f.y0 + f.y1) / 2}) rotate(-90)" text-anchor="middle">fraction '
            'correct</text>') in svg
    pr, g = curves({}, "pr"), Frame(width=380, height=260)  # a PR chart: recall along, precision up
    assert f'y="{g.height - 4}" text-anchor="middle">recall</text><text transform="translate(10 ' in pr
    assert 'rotate(-90)" text-anchor="middle">precision</text>' in pr
    names = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="9" height="9" fill="[^"]+"/><text x="([\d.]+)" '
                       r'y="([\d.]+)"', histogram({"kept": [1], "dropped": [1]}, "t"))
    assert [(float(r), float(t)) for r, _, t, _ in names] == [(f.x0, f.x0 + 12), (f.x0 + 70, f.x0 + 82)]  # right of it
    # the name's baseline 1 px above the swatch's bottom (both in the band above the plot)
    assert {float(ty) - float(ry) for _, ry, _, ty in names} == {8.0}


def test_bars_show_three_significant_digits_unless_told_and_reliability_reads_only_whole_bins() -> None:
    svg = bars([("a", 0.123456), ("b", 123456.0)], "t", "s")
    assert ">0.123</text>" in svg and ">1.23e+05</text>" in svg
    edges = [0.0, 0.5, 1.0]
    longer = attrs(reliability(edges, [0.2, 0.7, 0.9], [0.1, 0.6, 0.8], [3, 4, 5], "rel"))
    assert [a["data-bin"] for a in longer] == ["0", "1"]  # values beyond the last edge: no bin to draw
    no_count = attrs(reliability(edges, [0.2, 0.7], [0.1, 0.6], [3], "rel"))
    assert [a["data-bin"] for a in no_count] == ["0"]  # a bin without its count has no boxes


def test_the_report_command_samples_with_its_seed_and_says_on_stderr_where_it_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from report_store import make_store

    from autolabel.cli import main
    from autolabel.store import Store

    out = make_store(tmp_path, images=8, boxes=3, failed=0)
    assert main(["report", str(out), "--samples", "2", "--seed", "5"]) == 0
    got = capsys.readouterr()
    assert got.out == "" and got.err == f"autolabel: wrote {out / 'report' / 'index.html'}\n"
    with Store(out) as store:
        data = collect(store, samples=2, seed=5)
    html = (out / "report" / "index.html").read_text()
    assert re.findall(r'<img src="img/s00-\d+\.jpg"[^>]*alt="([^"]+)"', html) == sorted(
        r["rel_path"] for r in data.samples["labeled"])  # the seeded sample, not another


def test_a_failed_image_recorded_without_a_reason_is_counted_as_unknown(tmp_path: Path) -> None:
    from autolabel.store import ImageResult, Store

    with Store(tmp_path / "out") as store:
        run_id = store.begin_run("h", {"name": "t", "ontology": ["cat"]})
        store.commit([ImageResult(str(tmp_path / "a.png"), "a.png", None, "failed"),
                      ImageResult(str(tmp_path / "b.png"), "b.png", None, "failed", reason="truncated")], run_id, "h")
        data = collect(store)
    assert data.images_failed == 2 and data.failure_reasons == Counter({"unknown": 1, "truncated": 1})
    assert [(f["rel_path"], f["reason"]) for f in data.failures] == [("a.png", "unknown"), ("b.png", "truncated")]


def test_collect_samples_as_the_report_command_does_unless_told(tmp_path: Path) -> None:
    import inspect

    from report_store import make_store

    from autolabel.quality.report import build_report
    from autolabel.store import Store

    out = make_store(tmp_path, images=14, boxes=3, failed=0)
    with Store(out) as store:
        default, told = collect(store), collect(store, samples=12, seed=0)
    assert len(default.samples["labeled"]) == 12 and default.section_sizes["labeled"] == 14
    assert [r["rel_path"] for r in default.samples["labeled"]] == [r["rel_path"] for r in told.samples["labeled"]]
    defaults = {k: p.default for k, p in inspect.signature(build_report).parameters.items()}
    assert (defaults["samples"], defaults["seed"]) == (12, 0)  # the command's (the test above)


def test_every_chart_is_whole_svg_elements_and_bars_write_n_a_inside_the_plot() -> None:
    element = r'<(\w+)[^>]*>[^<]*(?:<title>[^<]*</title>)?</\1>|<\w+[^>]*/>'
    charts = [histogram({"kept": [1, 2]}, "h"), bars([("a", 0.5), ("b", None)], "b", "s"),
              curves({"cat": ([0.0, 1.0], [1.0, 0.0])}, "c"), reliability([0.0, 0.5, 1.0], [0.2, 0.7], [0.1, 0.6],
                                                                         [3, 4], "r")]
    for svg in charts:
        inner = svg[svg.index("</title>") + len("</title>"):-len("</svg>")]
        assert re.sub(element, "", inner) == "", svg  # nothing between the elements
    f = Frame(width=480, height=max(60, 30 + 18 * 2), left=150, right=56, bottom=22, xmax=0.5, ymax=2.0)
    assert f'<text x="{f.x0 + 4}" y="{f.y0 + 18 + 12}" fill="#888">n/a</text>' in charts[1]  # right of the axis


def test_a_reliability_bar_spans_its_bin_to_the_hundredth_of_a_pixel() -> None:
    f = Frame(width=380, height=260)
    (bar,) = attrs(reliability([0.0, 0.3, 1.0], [None, 0.5], [None, 0.4], [0, 2], "r"))
    assert bar["x"] == str(f.x(0.3)) and bar["width"] == str(round(f.x(1.0) - f.x(0.3) - 1, 2)) != str(
        round(f.x(1.0) - f.x(0.3) - 1))


def test_a_long_text_under_a_thumbnail_is_clipped_to_160_characters(tmp_path: Path) -> None:
    from autolabel.quality.report import write_previews

    Image.new("RGB", (40, 30), "white").save(tmp_path / "a.png")
    texts = [{"kind": "ocr", "text": "x" * 161, "score": None, "stage": "ocr", "status": "dropped", "reason": "long"},
             {"kind": "ocr", "text": "y" * 160, "score": None, "stage": "ocr", "status": "dropped", "reason": "long"}]
    row = {"path": str(tmp_path / "a.png"), "rel_path": "a.png",
           "labels": {"width": 40, "height": 30, "boxes": {"xyxy": [], "confidence": [], "data": {}}, "texts": texts}}
    (preview,) = write_previews(ReportData(runs=[], samples={"labeled": [row]}), tmp_path / "img", [])["labeled"]
    assert [t[3] for t in preview.texts] == ["x" * 159 + "…", "y" * 160]
