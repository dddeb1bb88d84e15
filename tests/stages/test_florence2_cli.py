"""Florence-2 end to end through the ``autolabel`` command: exact boxes in the displayed frame, the shipped pipelines,
and a missing checkpoint offline. Tiny scripted checkpoints stand in for the real weights (``--set models...id=``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image
from corpus import exif_jpeg
from tiny_florence import make_tiny_florence

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.store import Store

PIPELINES = Path(__file__).parents[2] / "pipelines"
ANSWER = "a man<loc_100><loc_200><loc_300><loc_400>"
LOC_PROBS = [0.9, 0.8, 0.7, 0.6]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    probs = [0.95] * 5 + LOC_PROBS  # "a man" then four locations
    return str(make_tiny_florence(tmp_path_factory.mktemp("florence"), ANSWER, probs, end_prob=0.9))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    (folder / "rotated.jpg").write_bytes(exif_jpeg(80, 40, 6))  # stored 80x40, displayed 40x80
    (folder / "left.jpg").write_bytes(exif_jpeg(60, 30, 8))  # stored 60x30, displayed 30x60
    Image.new("RGB", (96, 48), (10, 200, 90)).save(folder / "wide.png")
    return folder


def pixel(b: int, size: int) -> int:
    return int((b + 0.5) * size / 1000)


def test_run_exports_exact_boxes_in_the_displayed_frame(checkpoint: str, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", str(PIPELINES / "detect.yaml"), "-i", str(images), "-o", str(out), "--no-progress",
                 "--set", f"models.florence.id={checkpoint}"])
    assert code == ExitCode.OK, capsys.readouterr().err
    coco = json.loads((out / "coco.json").read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]}
    assert sizes == {"rotated.jpg": (40, 80), "left.jpg": (30, 60), "wide.png": (96, 48)}
    person = next(c["id"] for c in coco["categories"] if c["name"] == "person")
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    got = {names[a["image_id"]]: (a["category_id"], a["bbox"], a["score"]) for a in coco["annotations"]}
    score = round(math.prod(LOC_PROBS) ** 0.25, 5)
    for name, (w, h) in sizes.items():
        x1, y1, x2, y2 = pixel(100, w), pixel(200, h), pixel(300, w), pixel(400, h)
        category, bbox, s = got[name]
        assert (category, bbox) == (person, [x1, y1, x2 - x1, y2 - y1]), name
        assert s == pytest.approx(score, abs=2e-5)
    assert got["rotated.jpg"][1] == [4, 16, 8, 16]  # by hand: 40x80 displayed
    assert got["wide.png"][1] == [9, 9, 19, 10]
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["models"]["florence"] == {"type": "florence2", "id": checkpoint, "revision": None}


def test_missing_weights_offline_exit_1_with_one_line(images: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["run", str(PIPELINES / "detect.yaml"), "-i", str(images), "-o", str(tmp_path / "out"),
                 "--no-progress", "--set", "models.florence.id=autolabel-tests/no-such-florence"])
    assert code == ExitCode.FATAL == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("autolabel: error: model 'autolabel-tests/no-such-florence' (florence2) is not in the "
                             "local Hugging Face cache")
    assert "hf download autolabel-tests/no-such-florence" in err[0] and "local folder" in err[0]


SUMMARIES = {
    "detect.yaml": "ok (1 models, 4 stages: detect, degenerate_boxes, score_threshold, nms; 6 classes; 1 exports)",
    "grounding.yaml": "ok (1 models, 4 stages: ground, degenerate_boxes, score_threshold, nms; 3 classes; 1 exports)",
    "fld5b.yaml": "ok (2 models, 20 stages: proposals, categories, regions, caption, grounding, brief, ocr, "
                  "degenerate_boxes, phrase_blacklist, score_threshold, nms, masks, mask_predicted_iou, "
                  "mask_stability, mask_area, mask_cleanup, mask_nms, text_length, repetition, ocr_quality; "
                  "7 classes; 1 exports)",
}


def test_florence_pipelines_validate_without_importing_torch(subprocess_env) -> None:
    script = (
        "import sys; from autolabel.cli import main\n"
        f"codes = [main(['validate', p]) for p in {[str(PIPELINES / n) for n in SUMMARIES]!r}]\n"
        "print(codes, sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[:-1] == [f"{PIPELINES / name}: {summary}" for name, summary in SUMMARIES.items()]
    assert lines[-1] == "[0, 0, 0] []"


def stored(out: Path) -> dict[str, dict]:
    with Store(out) as store:
        return {Path(row["path"]).name: row["labels"] for row in store.images(labels=True)}


def test_grounding_pipeline_runs(tmp_path: Path, images: Path, capsys) -> None:
    answer = "a forklift<loc_100><loc_200><loc_300><loc_400>pallets<loc_500><loc_500><loc_900><loc_900>"
    path = make_tiny_florence(tmp_path / "grounder", answer, 0.8)
    out = tmp_path / "out"
    code = main(["run", str(PIPELINES / "grounding.yaml"), "-i", str(images), "-o", str(out), "--no-progress",
                 "--set", f"models.florence.id={path}"])
    assert code == ExitCode.OK, capsys.readouterr().err
    labels = stored(out)["wide.png"]
    assert labels["boxes"]["data"]["class_name"] == ["forklift", "pallet"]
    assert labels["provenance"]["ground"]["prompt"] == "person. forklift. pallet"
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == 6  # two boxes in each of three images


def test_fld5b_pipeline_runs_every_stage(tmp_path: Path, images: Path, capsys) -> None:
    from tiny_models import tiny

    # one answer for every task: a phrase, a box, and (read as OCR) a quad
    answer = "a man<loc_100><loc_200><loc_300><loc_400><loc_300><loc_600><loc_100><loc_600>"
    path = make_tiny_florence(tmp_path / "florence", answer, 0.9)
    out = tmp_path / "out"
    code = main(["run", str(PIPELINES / "fld5b.yaml"), "-i", str(images), "-o", str(out), "--no-progress",
                 "--set", f"models.florence.id={path}", "--set", f"models.sam.id={tiny('sam2')}",
                 "--set", "stages.12.threshold=0", "--set", "stages.13.threshold=0"])  # random SAM2 masks
    assert code == ExitCode.OK, capsys.readouterr().err
    labels = stored(out)["rotated.jpg"]
    data = labels["boxes"]["data"]
    stages = data["stage"]
    for stage in ("proposals", "regions", "grounding", "ocr"):
        assert stage in stages, stage
    assert [t["kind"] for t in labels["texts"]] == ["detailed_caption", "caption"]
    proposal = stages.index("proposals")
    assert data["phrase"][proposal] == "a man" and data["class_name"][proposal] == "person"  # named by categories
    assert any(m is not None for m in labels["boxes"]["mask"])  # SAM2 masks on kept boxes
    ocr = stages.index("ocr")
    assert data["text"][ocr] == "a man" and data["class_name"][ocr] == "text"
    assert set(labels["provenance"]) >= {"proposals", "categories", "regions", "caption", "grounding", "brief", "ocr",
                                         "masks"}


def test_quality_preset_runs_and_records_its_decisions(checkpoint: str, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", str(PIPELINES / "quality-fld5b.yaml"), "-i", str(images), "-o", str(out), "--no-progress",
                 "--set", f"models.florence.id={checkpoint}"])
    assert code == ExitCode.OK, capsys.readouterr().err
    coco = json.loads((out / "coco.json").read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    # left.jpg is 30x60: its box is 6x12 = 72 px, under the SAM data engine's 100 px floor (box_area)
    assert sorted(names[a["image_id"]] for a in coco["annotations"]) == ["rotated.jpg", "wide.png"]
    with Store(out) as store:
        rows = {r["rel_path"]: r["labels"]["boxes"]["data"] for r in store.images()}
    assert (rows["left.jpg"]["status"], rows["left.jpg"]["reason"]) == (["dropped"], ["too_small"])
    assert rows["wide.png"]["status"] == ["kept"]
    run = json.loads((out / "run.json").read_text())
    assert run["decisions"]["by_reason"] == {"dropped/too_small": 1}
    assert run["decisions"]["by_class"] == {"person": {"dropped": 1, "kept": 2}}
