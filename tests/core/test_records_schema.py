"""The stored record: the shape records.py documents, written by one writer and read back by one reader."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from autolabel import records
from autolabel.errors import AutolabelError
from autolabel.stage import Item, StageContext
from autolabel.ontology import Ontology
from autolabel.store import ImageResult, Store
from plugins import RichLabels, RichLabelsParams


def _rich_record() -> dict:
    stage = RichLabels("rich", RichLabelsParams(type="plugins:RichLabels"), StageContext(ontology=Ontology({})))
    (item,) = stage([Item.of(Image.new("RGB", (48, 32)), "x.png")])
    return records.to_record(item.labels)


def test_a_record_has_the_documented_keys_and_survives_a_round_trip() -> None:
    record = _rich_record()
    assert set(record) == {"width", "height", "boxes", "texts", "provenance"}
    boxes = record["boxes"]
    n = len(boxes["xyxy"])
    assert n == 4 and len(boxes["confidence"]) == n and len(boxes["mask"]) == n
    for column in ("class_name", "phrase", "stage", "status", "reason", "text", "has_mask", "polygon"):
        assert len(boxes["data"][column]) == n, column
    assert set(boxes["mask"][0]) == {"size", "counts"} and boxes["mask"][1] is None
    assert {"kind", "text", "score", "stage", "status", "reason"} <= set(record["texts"][0])
    assert records.to_record(records.from_record(record)) == record


def test_the_documented_shape_names_every_key_the_writer_writes() -> None:
    doc = records.__doc__ or ""
    record = _rich_record()
    for key in [*record, *record["boxes"], *record["boxes"]["data"], *record["texts"][0]]:
        assert re.search(rf'\b"?{key}"?\b', doc), f"records.py does not document {key!r}"
    assert f"version {records.SCHEMA_VERSION}" in doc


def test_a_store_with_a_newer_record_version_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "autolabel.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'record_version'").fetchone() == (
            str(records.SCHEMA_VERSION),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'record_version'", (str(records.SCHEMA_VERSION + 1),))
    with pytest.raises(AutolabelError, match=r"newer autolabel \(label record version 2\); upgrade autolabel$"):
        Store(tmp_path)


def _doc_blocks(kind: str) -> list[str]:
    page = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "record.md").read_text(encoding="utf-8")
    return re.findall(rf"```{kind}\n(.*?)```", page, flags=re.S)


def test_the_documented_record_is_one_the_reader_reads_and_the_writer_writes_back() -> None:
    import json

    (block,) = _doc_blocks("json")
    record = json.loads(block)
    labels = records.from_record(record)
    assert (labels.width, labels.height, len(labels.detections)) == (640, 480, 1)
    assert records.to_record(labels) == record


def test_the_documented_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "runs" / "ocr")
    run = store.begin_run("h", {})
    store.commit([ImageResult(path="/in/a.png", rel_path="a.png", sha256="s", status="done", width=48, height=32,
                              labels=_rich_record())], run, "h")
    store.close()
    monkeypatch.chdir(tmp_path)
    (block,) = _doc_blocks("python")
    exec(compile(block, "docs/reference/record.md", "exec"), {})  # its own asserts check the round trip
