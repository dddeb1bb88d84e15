"""eval and calibrate against real human annotations: deepforest 2.1's NEON tiles, tree crowns drawn by hand in
Pascal VOC. The wheel is fetched from the package index by the test itself (its files only, never installed); the
run's "predictions" are perturbed copies of the human boxes, and every figure is checked against a plain
pycocotools COCOeval of the same boxes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from eval_scripted import pipeline
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode

pytestmark = pytest.mark.slow
WHEEL = "deepforest==2.1.0"
#: the tiles' labels as the ontology below names them ("Alive" is a synonym: one of tree's prompts)
CLASS = {"Tree": "tree", "Alive": "tree", "Dead": "dead"}
ONTOLOGY = {"tree": ["tree", "alive"], "dead": "dead"}
TILES = ["OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop"]  # 61 + 37 + 279 hand-drawn boxes


@pytest.fixture(scope="session")
def neon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three tiles' images and VOC files, unpacked from the deepforest wheel (downloaded once, cached)."""
    base = os.environ.get("AUTOLABEL_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "autolabel-tests")
    cache = Path(base) / "wheels"
    wheels = sorted(cache.glob("deepforest-2.1.0-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache), "-q"],
                             capture_output=True, text=True, timeout=300, check=False)
        wheels = sorted(cache.glob("deepforest-2.1.0-*.whl"))
        if got.returncode or not wheels:
            pytest.skip(f"the package index is unreachable: pip download {WHEEL} failed ({got.stderr.strip()[-200:]})")
    folder = tmp_path_factory.mktemp("neon")
    with zipfile.ZipFile(wheels[0]) as z:
        for tile in TILES:
            xml = z.read(f"deepforest/data/{tile}.xml")
            image = ET.fromstring(xml).findtext("filename")
            (folder / f"{tile}.xml").write_bytes(xml)
            (folder / image).write_bytes(z.read(f"deepforest/data/{image}"))
    return folder


def human_boxes(folder: Path) -> dict[str, list[list]]:
    """file name -> [[label, xmin, ymin, xmax, ymax], ...], read with ElementTree (not with autolabel)."""
    out = {}
    for xml in sorted(folder.glob("*.xml")):
        root = ET.parse(xml).getroot()
        out[root.findtext("filename")] = [
            [o.findtext("name"), *(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))]
            for o in root.iter("object")]
    return out


def perturbed(human: dict[str, list[list]], seed: int = 0) -> dict[str, list[list]]:
    """A plausible detector: each box jittered (some a lot), 10 % missed, 10 % extra boxes; tighter boxes score
    higher (with noise), so the score means something."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, rows in human.items():
        answers = []
        for label, x1, y1, x2, y2 in rows:
            if rng.random() < 0.1:
                continue
            w, h = x2 - x1, y2 - y1
            spread = rng.choice([0.05, 0.15, 0.4])
            dx = rng.normal(0, spread, 4) * [w, h, w, h]
            score = float(np.clip(0.95 - spread - abs(rng.normal(0, 0.08)), 0.01, 0.99))
            answers.append([CLASS[label], x1 + dx[0], y1 + dx[1], max(x2 + dx[2], x1 + dx[0] + 2),
                            max(y2 + dx[3], y1 + dx[1] + 2), round(score, 4)])
        for _ in range(max(1, len(rows) // 10)):
            x, y = rng.uniform(0, 350, 2)
            answers.append([CLASS[rows[0][0]], x, y, x + 25, y + 25, round(float(rng.uniform(0.05, 0.6)), 4)])
        out[name] = [[a[0], *(round(float(v), 2) for v in a[1:5]), a[5]] for a in answers]
    return out


def plain_cocoeval(human: dict, answers: dict, max_dets: int = 100) -> COCOeval:
    """What a user would write with pycocotools alone."""
    names = sorted({CLASS[r[0]] for rows in human.values() for r in rows})
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, gts, dts = [], [], []
    for i, (name, rows) in enumerate(sorted(human.items()), 1):
        images.append({"id": i, "file_name": name})
        for label, x1, y1, x2, y2 in rows:
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": cat[CLASS[label]], "iscrowd": 0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for label, x1, y1, x2, y2, s in answers[name]:
            dts.append({"image_id": i, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        categories = [{"id": v, "name": k} for k, v in cat.items()]
        gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dts), "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_eval_and_calibrate_on_hand_drawn_tree_crowns(neon: Path, tmp_path: Path, capsys) -> None:
    human = human_boxes(neon)
    assert sum(len(r) for r in human.values()) == 377 and {r[0] for v in human.values() for r in v} == set(CLASS)
    answers = perturbed(human)
    images = tmp_path / "in"
    images.mkdir()
    for name in human:
        (images / name).write_bytes((neon / name).read_bytes())
    out = tmp_path / "out"
    summary = Pipeline.from_dict(pipeline(answers, ontology=ONTOLOGY)).run(images, out)
    assert summary.counts["labeled"] == 3

    assert main(["eval", str(out), "--gt", str(neon)]) == ExitCode.OK
    result = json.loads((out / "eval.json").read_text())
    assert result["gt_format"] == "voc" and result["images"]["matched_by"]["rel_path"] == 3
    assert result["classes"] == {"matched": {"tree": "Tree", "dead": "Dead"}, "unmatched_run": [], "unmatched_gt": []}
    assert result["per_class"]["tree"]["gt"] == sum(CLASS[r[0]] == "tree" for v in human.values() for r in v)
    plain = plain_cocoeval(human, answers)
    assert result["overall"]["ap"] == pytest.approx(plain.stats[0], abs=1e-9)
    assert result["overall"]["ap50"] == pytest.approx(plain.stats[1], abs=1e-9)
    assert result["overall"]["ap75"] == pytest.approx(plain.stats[2], abs=1e-9)
    # the operating point counts every kept box (no 100-per-image cap): COCOeval's own matches at IoU 0.5
    uncapped = plain_cocoeval(human, answers, max_dets=1000)
    matched = sum(int((e["dtMatches"][0] > 0).sum()) for e in uncapped.evalImgs
                  if e is not None and e["aRng"] == [0, 1e10])
    o = result["overall"]
    assert o["tp"] == matched and o["gt"] == 377 and o["predictions"] == sum(len(a) for a in answers.values())
    assert 0.5 < o["recall"] < 0.95 and 0.5 < o["precision"] < 0.95  # a plausible, imperfect detector

    assert main(["calibrate", str(out), "--gt", str(neon), "--target-precision", "0.9", "--unreached", "drop"]) == 0
    report = json.loads((out / "calibration.json").read_text())
    tree = report["per_class"]["tree"]
    assert tree["status"] == "ok" and tree["precision_lower_bound"] >= 0.9
    curve = result["curves"]["tree"]  # eval's precision/recall along the score agree at the chosen threshold
    k = curve["score"].index(pytest.approx(tree["threshold"], abs=1e-6))
    assert (curve["precision"][k], curve["recall"][k]) == pytest.approx((tree["precision"], tree["recall"]))
    assert tree["recall"] < o["recall"]  # precision bought with recall
