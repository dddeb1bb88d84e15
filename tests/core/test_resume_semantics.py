"""What a re-run does with what the store already holds: failures retried, replaced files relabeled, the same
content at two paths labeled at both, "already done" keyed by path (and content and pipeline).

Each image's marker sits somewhere else (probes.marker_box), so a box restored for the wrong image, or kept from
a file's old content, is visible in the export; the model stage writes each image it sees, so model calls are
counted, not guessed.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from probes import calls, coco_boxes, make_marker_images, marker_box, marker_image

from autolabel import Pipeline
from autolabel.errors import ExitCode
from autolabel.runner import RunSummary

NAMES = [f"m{i:03d}.png" for i in range(7)]


def pipeline(tmp: Path) -> Pipeline:
    return Pipeline.from_dict({
        "models": {"m": {"type": "florence2", "id": "unused/the-probe-needs-no-weights"}},
        "ontology": ["marker"],
        "batch_size": 3,
        "stages": [{"type": "probes:ModelMarkerBox", "name": "mark", "model": "m", "label": "marker",
                    "calls_file": str(tmp / "calls.txt"), "fail_while": str(tmp / "fail.txt")}],
        "exports": [{"format": "coco"}],
    })


def run(tmp: Path) -> RunSummary:
    return pipeline(tmp).run(tmp / "in", tmp / "out")


def rows(tmp: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp / "out" / "autolabel.db") as conn:
        return conn.execute("SELECT rel_path, status FROM images ORDER BY rel_path").fetchall()


def test_failed_images_are_retried_by_the_next_run_until_they_succeed(tmp_path: Path) -> None:
    expected = make_marker_images(tmp_path / "in", NAMES)
    (tmp_path / "fail.txt").write_text("m002.png\nm005.png\n")  # the model fails on these...
    (tmp_path / "in" / "m007.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # ...and this one cannot be decoded
    first = run(tmp_path)
    assert first.exit_code == ExitCode.PARTIAL
    assert first.counts == {"seen": 8, "labeled": 5, "skipped": 0, "failed": 3}
    assert sorted(calls(tmp_path / "calls.txt")) == sorted(set(NAMES) - {"m002.png", "m005.png"})

    (tmp_path / "fail.txt").write_text("m005.png\n")  # m002 is fixed, m005 still fails
    marker_image(40, 30, (3, 4, 9, 12)).save(tmp_path / "in" / "m007.png")  # the broken file is replaced
    second = run(tmp_path)
    assert second.counts == {"seen": 8, "labeled": 2, "skipped": 5, "failed": 1}
    assert sorted(calls(tmp_path / "calls.txt")) == ["m002.png", "m007.png"]  # retried; done ones not

    (tmp_path / "fail.txt").unlink()
    third = run(tmp_path)
    assert third.exit_code == ExitCode.OK
    assert third.counts == {"seen": 8, "labeled": 1, "skipped": 7, "failed": 0}
    assert calls(tmp_path / "calls.txt") == ["m005.png"]
    assert rows(tmp_path) == [(name, "done") for name in sorted(expected) + ["m007.png"]]
    assert coco_boxes(tmp_path / "out" / "coco.json") == {n: [b] for n, b in expected.items()} | {
        "m007.png": [[3.0, 4.0, 6.0, 8.0]]}


def test_a_file_replaced_at_the_same_path_is_relabeled_from_its_new_content(tmp_path: Path) -> None:
    expected = make_marker_images(tmp_path / "in", NAMES)
    run(tmp_path)
    calls(tmp_path / "calls.txt")

    marker_image(40, 30, (20, 10, 31, 25)).save(tmp_path / "in" / "m001.png")  # new content, never seen
    shutil.copyfile(tmp_path / "in" / "m004.png", tmp_path / "in" / "m003.png")  # content seen at another path
    again = run(tmp_path)
    assert again.counts == {"seen": 7, "labeled": 2, "skipped": 5, "failed": 0}
    assert calls(tmp_path / "calls.txt") == ["m001.png"]  # m003's new content is m004's: restored, not re-run
    boxes = coco_boxes(tmp_path / "out" / "coco.json")
    assert boxes["m001.png"] == [[20.0, 10.0, 11.0, 15.0]]
    assert boxes["m003.png"] == [expected["m004.png"]] != [expected["m003.png"]]
    assert {n: b for n, b in boxes.items() if n not in ("m001.png", "m003.png")} == {
        n: [b] for n, b in expected.items() if n not in ("m001.png", "m003.png")}


def test_the_same_content_at_two_paths_is_labeled_at_both(tmp_path: Path) -> None:
    expected = make_marker_images(tmp_path / "in", NAMES)
    (tmp_path / "in" / "copies").mkdir()
    shutil.copyfile(tmp_path / "in" / "m000.png", tmp_path / "in" / "copies" / "m000.png")  # a later batch
    shutil.copyfile(tmp_path / "in" / "m001.png", tmp_path / "in" / "m001_again.png")  # the same batch
    first = run(tmp_path)
    assert first.counts == {"seen": 9, "labeled": 9, "skipped": 0, "failed": 0}
    boxes = coco_boxes(tmp_path / "out" / "coco.json")
    assert boxes["copies/m000.png"] == boxes["m000.png"] == [expected["m000.png"]]
    assert boxes["m001_again.png"] == boxes["m001.png"] == [expected["m001.png"]]
    calls(tmp_path / "calls.txt")

    shutil.copyfile(tmp_path / "in" / "m002.png", tmp_path / "in" / "copies" / "third.png")  # added later
    second = run(tmp_path)
    assert second.counts == {"seen": 10, "labeled": 1, "skipped": 9, "failed": 0}
    assert calls(tmp_path / "calls.txt") == []  # known content: its model output comes from the cache
    boxes = coco_boxes(tmp_path / "out" / "coco.json")
    assert len(boxes) == 10 and boxes["copies/third.png"] == boxes["m002.png"] == [expected["m002.png"]]


def test_already_done_depends_on_the_path(tmp_path: Path) -> None:
    make_marker_images(tmp_path / "in", NAMES)
    run(tmp_path)
    calls(tmp_path / "calls.txt")
    (tmp_path / "in" / "m006.png").rename(tmp_path / "in" / "renamed.png")
    summary = run(tmp_path)
    assert summary.counts == {"seen": 7, "labeled": 1, "skipped": 6, "failed": 0}
    assert ("renamed.png", "done") in rows(tmp_path)
    assert coco_boxes(tmp_path / "out" / "coco.json")["renamed.png"] == [
        [float(marker_box(6)[0]), float(marker_box(6)[1]),
         float(marker_box(6)[2] - marker_box(6)[0]), float(marker_box(6)[3] - marker_box(6)[1])]]


def test_a_different_input_root_with_the_same_names_is_new_work(tmp_path: Path) -> None:
    make_marker_images(tmp_path / "in", NAMES)
    run(tmp_path)
    calls(tmp_path / "calls.txt")
    shutil.copytree(tmp_path / "in", tmp_path / "other")
    summary = pipeline(tmp_path).run(tmp_path / "other", tmp_path / "out")
    assert summary.counts == {"seen": 7, "labeled": 7, "skipped": 0, "failed": 0}  # other paths: labeled...
    assert calls(tmp_path / "calls.txt") == []  # ...from the cached model outputs of the same content
    with sqlite3.connect(tmp_path / "out" / "autolabel.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0] == 14
