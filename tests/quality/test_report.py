"""``autolabel report``: what the page says equals what the store (and eval.json) hold, in bounded samples, and
every bad input is one line and a documented exit code."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from report_store import CLASSES, box_decision, eval_fixture, make_store

from autolabel.quality.report import build_report
from autolabel.quality.report_data import BINS, Reservoir, collect, score_bin
from autolabel.quality.report_previews import annotate
from autolabel.quality.report_svg import DROPPED_COLOR, FLAGGED_COLOR, _ticks
from autolabel.store import Store


def expected_counts(images: int, boxes: int) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for i in range(images):
        for k in range(boxes):
            out.setdefault(CLASSES[(i + k) % len(CLASSES)], Counter())[box_decision(i, k)[0]] += 1
    return out


class _Page(HTMLParser):
    """The <img> sources, external references and data-* cells of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self._cell: tuple[str, str] | None = None
        self._row_class: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key] or "")
        if tag == "td" and "data-class" in a:
            self._row_class = a["data-class"]
        if tag == "td" and self._row_class and ("data-metric" in a or "data-status" in a):
            self._cell = (self._row_class, a.get("data-metric") or a.get("data-status") or "")

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.cells[self._cell] = data
            self._cell = None


def parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("report"), images=12, boxes=5, failed=2)


def test_one_pass_counts_every_box_by_class_decision_and_score(run_dir: Path) -> None:
    with Store(run_dir) as store:
        data = collect(store, samples=4)
    assert data.images_done == 12 and data.images_failed == 2 and data.boxes == 60
    assert {k: dict(v) for k, v in data.class_counts().items()} == {k: dict(v) for k, v in
                                                                   expected_counts(12, 5).items()}
    scores = Counter(
        (CLASSES[(i + k) % 3], box_decision(i, k)[0], score_bin(float(np.float32(((i * 7 + k * 13) % 100) / 100))))
        for i in range(12) for k in range(5)
    )
    assert data.scores == scores
    assert data.decisions[("dropped", "low_score", "person")] == sum(
        1 for i in range(12) for k in range(5) if box_decision(i, k)[1] == "low_score" and (i + k) % 3 == 0)
    assert data.decisions[("dropped", "repetition", "<text:caption>")] == 3  # images 0, 4, 8
    assert data.texts == {("caption", "kept"): 9, ("caption", "dropped"): 3}
    assert data.failure_reasons == {"truncated or corrupt image data (unexpected end of file)": 2}
    assert {f["rel_path"] for f in data.failures} == {"broken0.jpg", "broken1.jpg"}


def test_each_section_samples_only_images_with_its_decision(run_dir: Path) -> None:
    with Store(run_dir) as store:
        data = collect(store, samples=3)
    assert set(data.samples) == {"labeled", "dropped/low_score", "flagged/edge_box", "dropped/repetition"}
    flagged_images = {f"img{i:06d}.png" for i in range(12) if any(box_decision(i, k)[0] == "flagged" for k in range(5))}
    assert data.section_sizes == {"labeled": 12, "dropped/low_score": 12, "flagged/edge_box": len(flagged_images),
                                  "dropped/repetition": 3}
    for rows in data.samples.values():
        assert len(rows) == 3
        assert len({r["rel_path"] for r in rows}) == 3
    assert {r["rel_path"] for r in data.samples["flagged/edge_box"]} <= flagged_images


def test_reason_codes_and_sampled_sections_are_bounded(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter whose reason embeds a value must not grow the report without bound."""
    from autolabel.quality import report_data

    monkeypatch.setattr(report_data, "MAX_REASONS", 2)
    monkeypatch.setattr(report_data, "MAX_SECTIONS", 1)
    with Store(run_dir) as store:
        data = collect(store, samples=3)
    reasons = {r for _, r, _ in data.decisions}
    assert len(reasons) == 3 and report_data.OTHER in reasons  # two by name, the third folded
    assert len(data.samples) == 2 and "labeled" in data.samples  # one decision sampled
    assert set(data.section_sizes) == {"labeled"} | {f"{s}/{r}" for s, r, _ in data.decisions}
    boxes_decided = sum(1 for i in range(12) for k in range(5) if box_decision(i, k)[1])
    assert sum(data.decisions.values()) == boxes_decided + 3  # every decision still counted (and 3 captions)


def test_reservoir_keeps_a_bounded_uniform_sample() -> None:
    rng = random.Random(1)
    hits: Counter[int] = Counter()
    for _ in range(3000):
        r: Reservoir[int] = Reservoir(2, rng)
        for i in range(10):
            r.offer(i)
        assert len(r.items) == 2 and r.seen == 10 and len(set(r.items)) == 2
        hits.update(r.items)
    assert set(hits) == set(range(10))
    assert all(500 < n < 700 for n in hits.values()), hits  # each item kept with probability 2/10


def test_score_bins_and_ticks() -> None:
    assert [score_bin(s) for s in (0.0, 0.049, 0.05, 0.999, 1.0, None, float("nan"))] == [0, 0, 1, BINS - 1,
                                                                                          BINS - 1, -1, -1]
    assert _ticks(1.0) == [0, 0.5, 1.0] and _ticks(3) == [0, 1, 2, 3]  # 1, 2 or 5 times a power of ten
    assert _ticks(37) == [0, 10, 20, 30]
    assert _ticks(0) == [0.0]


def test_previews_draw_kept_flagged_and_dropped_boxes_differently() -> None:
    image = Image.new("RGB", (200, 200), (128, 128, 128))
    det = sv.Detections(
        xyxy=np.array([[10, 110, 90, 190], [110, 110, 190, 190], [110, 10, 190, 90]], dtype=np.float32),
        confidence=np.array([0.9, 0.5, 0.1], dtype=np.float32), class_id=np.array([0, 0, 0]),
        data={"class_name": np.array(["person"] * 3, dtype=object),
              "status": np.array(["kept", "flagged", "dropped"], dtype=object),
              "reason": np.array(["", "edge_box", "low_score"], dtype=object),
              "has_mask": np.zeros(3, dtype=bool)},
    )
    out = np.asarray(annotate(image, det))

    def rgb(hex_color: str) -> tuple[int, ...]:
        return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))

    kept = sv.ColorPalette.DEFAULT.by_idx(0).as_rgb()
    assert tuple(out[150, 10]) == kept and tuple(out[190, 50]) == kept  # left and bottom edges, class colour
    assert tuple(out[189, 111]) == rgb(FLAGGED_COLOR)  # a corner of the flagged box ...
    assert tuple(out[190, 150]) == (128, 128, 128)  # ... but not the middle of its edge
    assert tuple(out[50, 190]) == rgb(DROPPED_COLOR)  # dropped: a red outline
    assert tuple(out[50, 150]) == (128, 128, 128)  # nothing filled inside


def test_report_page_shows_the_store(run_dir: Path, tmp_path: Path) -> None:
    index = build_report(run_dir, out=tmp_path / "r", samples=4)
    page = parse(index)
    html = index.read_text(encoding="utf-8")
    assert index == tmp_path / "r" / "index.html"
    assert len(page.images) == 4 * 3 + 3  # labeled + two box decisions, 4 each; 3 images with a dropped caption
    assert html.count("caption dropped:repetition</span> “caption 4 again again") >= 1  # the dropped text shown
    assert all((index.parent / src).is_file() for src in page.images)
    assert not [r for r in page.refs if not r.startswith(("#", "img/"))]  # self-contained
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for name, counts in expected_counts(12, 5).items():
        for status in ("kept", "flagged", "dropped"):
            assert page.cells[(name, status)] == f"{counts[status]:,}"
    assert "truncated or corrupt image data" in html and "broken0.jpg" in html
    assert html.index(">detect<") < html.index(">masks<") < html.index(">score_threshold<")  # slowest first
    assert 'id="eval"' not in html  # no eval.json: no evaluation section


def test_report_with_eval_json_shows_its_metrics(tmp_path: Path) -> None:
    out = make_store(tmp_path, images=4, boxes=3, failed=0)
    ev = eval_fixture(out)
    page = parse(build_report(out, samples=1))
    for name, metrics in [("overall", ev["overall"]), *ev["per_class"].items()]:
        for key in ("ap", "ap50", "ap75", "mask_ap", "precision", "recall", "f1", "tp", "fp", "fn"):
            value = metrics[key]
            shown = page.cells[(name, key)]
            assert shown == ("n/a" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.3f}")
    html = (out / "report" / "index.html").read_text()
    assert "eval.json was written before run" not in html
    row = "<td>score_threshold/low_score</td><td>score_threshold</td><td>low_score</td><td>20</td><td>3</td><td>17</td>"
    assert row in html and "flagged true positives" not in html
    ev["filters"]["border/edge_box"] = {"stage": "border", "reason": "edge_box", "dropped": 0, "true_positives": 0,
                                        "false_positives": 0, "flagged": 9, "flagged_true_positives": 7}
    (out / "eval.json").write_text(json.dumps(ev))
    assert "<td>0</td><td>0</td><td>0</td><td>9</td><td>7</td>" in build_report(out, samples=1).read_text()
    ev["created"] = "2020-01-01T00:00:00+00:00"  # older than the run: its figures describe older labels
    (out / "eval.json").write_text(json.dumps(ev))
    assert "eval.json was written before run #1 labeled" in build_report(out, samples=1).read_text()


def test_a_calibration_json_beside_the_run_is_a_section_of_the_report(tmp_path: Path) -> None:
    out = make_store(tmp_path, images=4, boxes=3, failed=0)
    assert 'id="calibration"' not in build_report(out, samples=1).read_text()  # none yet: no section
    (out / "calibration.json").write_text(json.dumps({
        "target_precision": 0.9, "confidence": 0.95, "bound": "clopper-pearson", "iou_threshold": 0.5,
        "stage": "score_threshold", "per_class": {"person": {"status": "ok", "threshold": 0.42, "kept": 20,
                                                             "candidates": 40}}}))
    html = build_report(out, samples=1).read_text()
    assert 'id="calibration"' in html and "thresholds for stage <code>score_threshold</code>" in html


def test_stale_thumbnails_are_removed_and_a_missing_image_still_previews(tmp_path: Path) -> None:
    out = make_store(tmp_path, images=6, boxes=3, failed=0)
    (tmp_path / "in" / "img000000.png").unlink()
    index = build_report(out, samples=6)
    html = index.read_text()
    assert html.count("(file not found)") >= 1  # the caption says why; the boxes are drawn on a grey canvas
    shown = re.search(r'<img src="(img/s00-000.jpg)"[^>]*alt="img000000.png"', html)
    assert shown and Image.open(index.parent / shown.group(1)).getpixel((180, 356)) == pytest.approx((90, 90, 90),
                                                                                                    abs=12)
    index = build_report(out, samples=1)
    files = sorted(p.name for p in (index.parent / "img").iterdir())
    assert files == sorted(Path(src).name for src in parse(index).images) and len(files) == 4  # 4 sections, 1 each


@pytest.mark.slow
def test_cli_writes_the_report(run_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "autolabel", "report", str(run_dir), "--out", str(tmp_path / "page"),
                           "--samples", "2"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"autolabel: wrote {tmp_path / 'page' / 'index.html'}"
    assert len(parse(tmp_path / "page" / "index.html").images) == 2 * 4  # 4 sections


def test_bad_input_is_one_line_and_an_exit_code(run_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from autolabel.cli import main

    def report(*args: str) -> tuple[int, list[str]]:
        code = main(["report", *args])
        return code, capsys.readouterr().err.strip().splitlines()

    Store(tmp_path / "empty").close()
    bad = make_store(tmp_path / "bad", images=1, boxes=1, failed=0)
    cases = [((str(tmp_path / "nothing"),), 1, "no run store"),
             ((str(tmp_path / "empty"),), 1, "the store holds no images"),
             ((str(run_dir), "--out", str(tmp_path / "x"), "--samples=-1"), 2, "--samples: must be 0 or more")]
    for args, code, text in cases:
        got, lines = report(*args)
        assert got == code and len(lines) == 1 and text in lines[0], (args, lines)
        assert lines[0].startswith("autolabel: error: ")
    for content, text in (("{not json", "eval.json: not readable JSON"),
                          ('{"version": 99}', "not an eval.json of version 1 (version 99)")):
        (bad / "eval.json").write_text(content)
        got, lines = report(str(bad))
        assert got == 1 and len(lines) == 1 and text in lines[0] and "autolabel eval" in lines[0], lines
    assert not (tmp_path / "nothing").exists()  # a wrong folder is not created
    assert not (bad / "report").exists() and not (tmp_path / "x").exists()


def test_report_reads_a_store_of_images_without_masks(tmp_path: Path) -> None:
    out = make_store(tmp_path, images=3, boxes=2, failed=0, masks=False)
    html = build_report(out, samples=3).read_text()
    assert re.search(r"3 of 3 images", html)


def test_report_of_a_real_run_agrees_with_run_json(tmp_path: Path) -> None:
    """A run through the real runner (masks, polygons, flags, drops, texts, an unreadable file, a rotated JPEG)."""
    from plugins import export_pipeline, make_export_images

    from autolabel import Pipeline

    make_export_images(tmp_path / "in")
    (tmp_path / "in" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    Pipeline.from_dict(export_pipeline()).run(tmp_path / "in", tmp_path / "out", progress=False)
    Pipeline.from_dict(export_pipeline()).run(tmp_path / "in", tmp_path / "out", progress=False)  # all skipped
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    index = build_report(tmp_path / "out", samples=10)
    page, html = parse(index), index.read_text()
    first = json.loads((tmp_path / "out" / "runs" / "run-00001.json").read_text())
    for name, counts in first["decisions"]["by_class"].items():
        if not name.startswith("<text:"):
            for status in ("kept", "flagged", "dropped"):
                assert page.cells[(name, status)] == f"{counts.get(status, 0):,}"
    runs = html[html.index('id="history"'):html.index('id="classes"')]
    assert run["counts"]["skipped"] == 4 and runs.count("<td>#") == 2  # both runs in the history
    stages = html[html.index('id="stages"'):]
    assert "Run #1;" in stages and ">plugins:RichLabels<" in stages  # the slowest stages of the run that labeled
    assert "cut.png" in html and first["failures"][0]["reason"] in html
    rotated = re.search(r'<img src="(img/s00-\d+\.jpg)" width="(\d+)" height="(\d+)" alt="rotated.jpg"', html)
    assert rotated and rotated.group(2, 3) == ("180", "360")  # the displayed frame (EXIF applied), scaled to 360
    assert Image.open(index.parent / rotated.group(1)).size == (180, 360)
    assert "caption kept: 4" in html and "test_flag" in html and "low_score" in html


def test_boxes_without_class_or_score_are_reported(tmp_path: Path) -> None:
    import hashlib

    from autolabel.labels import Labels
    from autolabel.records import to_record
    from autolabel.store import ImageResult

    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.new("RGB", (50, 40), (10, 200, 10)).save(path)
    labels = Labels(50, 40)
    labels.add(sv.Detections(xyxy=np.array([[5, 5, 30, 30], [10, 10, 40, 35]], dtype=np.float32),
                             confidence=np.array([np.nan, 0.4], dtype=np.float32),
                             data={"class_name": np.array(["", "thing"], dtype=object)}), stage="s")
    with Store(tmp_path / "out") as store:
        run = store.begin_run("h", {})
        store.commit([ImageResult(str(path), "a.png", hashlib.sha256(path.read_bytes()).hexdigest(), "done", 50, 40,
                                  labels=to_record(labels))], run, "h")  # a run killed before it ended
    index = build_report(tmp_path / "out")
    html = index.read_text()
    assert re.search(r'<td data-class="&lt;no class&gt;">&lt;no class&gt;</td><td data-status="kept">1</td>'
                     r"<td[^>]*>0</td><td[^>]*>0</td><td>1</td><td>1</td>", html)  # 1 box, without a score
    assert "#1 <b class=\"running\">running</b>" in html
    assert Image.open(index.parent / "img" / "s00-000.jpg").size == (360, 288)
