"""Offline OCR with the real RapidOCR models (in the wheel): rendered text must come back, where it was drawn."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from PIL import Image, ImageDraw, ImageFont

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.config import ModelSpec
from autolabel.errors import ConfigError, ModelLoadError
from autolabel.models.rapidocr import RapidOcr
from autolabel.ontology import Ontology
from autolabel.stage import Item, StageContext
from autolabel.stages.ocr import Ocr, char_weighted_mean, page_text, quad_boxes, reading_order

PIPELINE = Path(__file__).parents[2] / "pipelines" / "ocr.yaml"
LINES = [((40, 30), "HELLO WORLD"), ((40, 130), "autolabel 2024")]


def font(size: int = 48) -> ImageFont.FreeTypeFont:
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def page(lines=LINES, size=(640, 240)) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """White page with black text; the ink box (x1, y1, x2, y2) of each line, measured on its own rendering."""
    image = Image.new("RGB", size, "white")
    boxes = []
    for xy, text in lines:
        ImageDraw.Draw(image).text(xy, text, font=font(), fill="black")
        alone = Image.new("L", size, 0)
        ImageDraw.Draw(alone).text(xy, text, font=font(), fill=255)
        boxes.append(alone.getbbox())
    return image, boxes


@pytest.fixture(scope="module")
def ocr() -> RapidOcr:
    return RapidOcr.load(ModelSpec(type="rapidocr", id="rapidocr-onnxruntime"))


def covers(found: np.ndarray, ink, slack: float = 8) -> bool:
    """``found`` (xyxy) contains the line's ink (to a pixel) and exceeds it by at most ``slack`` px on each side."""
    fx1, fy1, fx2, fy2 = found
    ix1, iy1, ix2, iy2 = ink
    return (fx1 <= ix1 + 1 and fy1 <= iy1 + 1 and fx2 >= ix2 - 1 and fy2 >= iy2 - 1
            and ix1 - fx1 <= slack and iy1 - fy1 <= slack and fx2 - ix2 <= slack and fy2 - iy2 <= slack)


def test_rapidocr_reads_rendered_lines_where_they_were_drawn(ocr):
    image, drawn = page()
    (lines,) = ocr.read([image])
    assert lines.texts == ["HELLO WORLD", "autolabel 2024"]
    assert lines.quads.shape == (2, 4, 2)
    assert (lines.scores > 0.9).all() and (lines.scores <= 1).all()
    for box, expected in zip(quad_boxes(lines.quads), drawn):
        assert covers(box, expected), (box, expected)
    assert ocr.revision == "1.4.4" or ocr.revision  # the wheel's version pins the bundled weights


def test_rapidocr_finds_nothing_on_a_blank_page(ocr):
    (lines,) = ocr.read([Image.new("RGB", (200, 100), "white")])
    assert len(lines) == 0 and lines.quads.shape == (0, 4, 2)


def test_reading_order_groups_words_into_lines_top_to_bottom_left_to_right():
    boxes = np.array([[300, 12, 400, 52], [20, 10, 120, 50], [20, 100, 200, 140], [140, 8, 280, 49]], np.float32)
    assert reading_order(boxes) == [[1, 3, 0], [2]]
    assert page_text(boxes, ["c", "a", "d", "b"]) == "a b c\nd"
    assert reading_order(np.zeros((0, 4), np.float32)) == []


def test_page_score_is_the_mean_confidence_per_character():
    assert char_weighted_mean(["ab", "cdef"], np.array([0.9, 0.6])) == pytest.approx((2 * 0.9 + 4 * 0.6) / 6)
    assert char_weighted_mean([], np.zeros(0)) is None


class Pool:
    def __init__(self, model):
        self.model, self.specs = model, {"ocr": ModelSpec(type="rapidocr", id="rapidocr-onnxruntime")}

    def get(self, name: str):
        return self.model


def test_ocr_stage_adds_a_row_per_line_and_the_page_text(ocr):
    image, drawn = page(lines=[((40, 130), "autolabel 2024"), ((40, 30), "HELLO WORLD")])  # drawn bottom line first
    stage = Ocr("ocr", Ocr.Params.model_validate({"type": "ocr", "model": "ocr", "label": "text"}),
                StageContext(ontology=Ontology.from_config(["text"]), models=Pool(ocr)))
    (item,) = stage([Item.of(image)])
    det = item.labels.detections
    assert list(det.data["text"]) == ["HELLO WORLD", "autolabel 2024"]  # reading order, whatever the drawing order
    assert list(det.data["class_name"]) == ["text", "text"] and list(det.data["stage"]) == ["ocr", "ocr"]
    assert det.data["quad"].shape == (2, 8) and det.data["quad"].dtype == np.float32
    assert_allclose(det.xyxy, quad_boxes(det.data["quad"]))
    assert covers(det.xyxy[0], drawn[1]) and covers(det.xyxy[1], drawn[0])
    assert ((det.confidence > 0.9) & (det.confidence <= 1)).all()
    (text,) = item.labels.texts
    assert (text.kind, text.text, text.stage) == ("ocr", "HELLO WORLD\nautolabel 2024", "ocr")
    assert text.score == pytest.approx(char_weighted_mean(list(det.data["text"]), det.confidence), rel=1e-6)
    prov = item.labels.provenance["ocr"]
    assert (prov["model"], prov["model_type"], prov["score"]) == ("rapidocr-onnxruntime", "rapidocr", "model")


def test_ocr_label_must_be_an_ontology_class():
    data = {"models": {"ocr": {"type": "rapidocr", "id": "rapidocr-onnxruntime"}}, "ontology": ["text"],
            "stages": [{"type": "ocr", "model": "ocr", "label": "words"}]}
    with pytest.raises(ConfigError, match=r"^stages\[0\]\.label: unknown class 'words' \(known: text\)$"):
        Pipeline.from_dict(data)


def test_rapidocr_config_file_must_exist():
    with pytest.raises(ModelLoadError, match="no such RapidOCR config file"):
        RapidOcr.load(ModelSpec(type="rapidocr", id="missing/rapidocr.yaml"))


def test_ocr_pipeline_runs_with_no_network_at_all(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    (tmp_path / "in").mkdir()
    image, drawn = page()
    image.save(tmp_path / "in" / "page.png")
    Image.new("RGB", (120, 80), "white").save(tmp_path / "in" / "blank.png")

    assert main(["validate", str(PIPELINE)]) == 0
    code = main(["run", str(PIPELINE), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["text"]
    images = {im["id"]: im["file_name"] for im in coco["images"]}
    anns = [a for a in coco["annotations"] if images[a["image_id"]] == "page.png"]
    assert [a["attributes"]["text"] for a in anns] == ["HELLO WORLD", "autolabel 2024"]
    assert len(coco["annotations"]) == 2  # nothing on the blank page
    for ann, expected in zip(anns, drawn):
        x, y, w, h = ann["bbox"]
        assert covers(np.array([x, y, x + w, y + h]), expected)
        assert 0.9 < ann["score"] <= 1
