"""The report in a real headless Chromium: it loads offline from file:// with no errors, every image decodes, the
figures drawn are eval.json's numbers (read back from the rendered geometry), and a screenshot shows a page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromium import Browser, Page
from PIL import Image
from report_store import eval_fixture, make_store

from autolabel.quality.report import build_report

pytestmark = pytest.mark.slow  # a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = make_store(tmp_path_factory.mktemp("browser"), images=10, boxes=4, failed=1)
    ev = eval_fixture(out)
    return build_report(out, samples=3), ev


@pytest.fixture(scope="module")
def page(browser: Browser, report: tuple[Path, dict[str, Any]]) -> Page:
    return browser.open(report[0].as_uri())


def _frame(page: Page, chart: str) -> dict[str, float]:
    return page.evaluate(f"""(() => {{ const s = document.querySelector('#eval svg[data-chart="{chart}"]');
        return Object.fromEntries(['x0','x1','y0','y1','xmin','xmax','ymin','ymax']
            .map(k => [k, +s.dataset[k]])); }})()""")


def test_loads_offline_without_errors_and_every_image_decodes(page: Page, report: tuple[Path, dict]) -> None:
    assert page.errors() == []
    images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    files = sorted(p.name for p in (report[0].parent / "img").iterdir())
    assert sorted(Path(src).name for src, _, _ in images) == files and len(files) == 3 * 4
    assert all(complete and width > 0 for _, complete, width in images), images


def test_a_broken_page_is_caught(browser: Browser, tmp_path: Path) -> None:
    """The checks above can fail: a missing image and a console error are seen."""
    (tmp_path / "bad.html").write_text('<html><body><img src="missing.png"><script>console.error("boom")</script>')
    bad = browser.open((tmp_path / "bad.html").as_uri())
    errors = bad.errors()
    assert any("boom" in e for e in errors) and any("missing.png" in e or "ERR_FILE" in e for e in errors), errors
    assert bad.evaluate("document.images[0].naturalWidth") == 0


def test_pr_curves_are_eval_jsons(page: Page, report: tuple[Path, dict]) -> None:
    ev = report[1]
    f = _frame(page, "curves")
    drawn = page.evaluate("""Object.fromEntries(
        Array.from(document.querySelectorAll('svg[data-chart="curves"] polyline'))
        .map(p => [p.dataset.series, Array.from(p.points).map(q => [q.x, q.y])]))""")
    assert set(drawn) == set(ev["curves"])
    for name, points in drawn.items():
        xy = np.array(points)
        recall = f["xmin"] + (xy[:, 0] - f["x0"]) / (f["x1"] - f["x0"]) * (f["xmax"] - f["xmin"])
        precision = f["ymin"] + (f["y1"] - xy[:, 1]) / (f["y1"] - f["y0"]) * (f["ymax"] - f["ymin"])
        np.testing.assert_allclose(recall, ev["curves"][name]["recall"], atol=1e-3)
        np.testing.assert_allclose(precision, ev["curves"][name]["precision"], atol=1e-3)


def test_ap_bars_reliability_and_tables_are_eval_jsons(page: Page, report: tuple[Path, dict]) -> None:
    ev = report[1]
    f = _frame(page, "bars")
    bars = page.evaluate("""Array.from(document.querySelectorAll('svg[data-chart="bars"] rect.bar'))
        .filter(r => r.closest('#eval')).map(r => [r.dataset.label, r.getBBox().width])""")
    assert {name: round(w / (f["x1"] - f["x0"]) * f["xmax"], 3) for name, w in bars} == {
        name: m["ap"] for name, m in ev["per_class"].items()}

    f = _frame(page, "reliability")
    rel = ev["reliability"]
    drawn = page.evaluate("""Array.from(document.querySelectorAll('svg[data-chart="reliability"] rect.bar'))
        .map(r => { const b = r.getBBox(); return [+r.dataset.bin, b.x, b.y]; })""")
    shown = [i for i, n in enumerate(rel["count"]) if n and rel["accuracy"][i] is not None]
    assert [b for b, _, _ in drawn] == shown
    for b, x, y in drawn:
        assert (f["y1"] - y) / (f["y1"] - f["y0"]) == pytest.approx(rel["accuracy"][b], abs=1e-3)
        assert (x - f["x0"]) / (f["x1"] - f["x0"]) == pytest.approx(rel["bins"][b], abs=1e-3)
    assert page.evaluate("document.querySelector('[data-metric=\"ece\"]').textContent") == f"{rel['ece']:.3f}"

    cells = page.evaluate("""Array.from(document.querySelectorAll('#eval td[data-metric]'))
        .map(td => [td.parentElement.firstElementChild.dataset.class, td.dataset.metric, td.textContent])""")
    want = {"overall": ev["overall"], **ev["per_class"]}
    assert len(cells) == len(want) * 12
    for name, metric, text in cells:
        value = want[name][metric]
        assert text == ("n/a" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.3f}")
    matrix = page.evaluate("""Array.from(document.querySelectorAll('#eval table')).find(t => t.previousElementSibling
        && t.previousElementSibling.textContent.startsWith('Confusion')).querySelectorAll('tbody tr')
        .length""")
    assert matrix == len(ev["confusion"]["labels"])


def test_screenshot(page: Page, tmp_path: Path) -> None:
    shot = page.screenshot(tmp_path / "report.png")
    image = Image.open(shot)
    assert image.size == (1280, 900)
    gray = np.asarray(image.convert("L"), dtype=float)
    assert gray.std() > 10 and len(image.convert("RGB").getcolors(1 << 20) or []) > 50  # a page, not a blank
    full = Image.open(page.screenshot(tmp_path / "full.png", full_page=True))
    assert full.size[0] == 1280 and full.size[1] > 2000  # every section laid out below the fold
