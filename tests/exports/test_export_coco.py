"""COCO exports, read back by pycocotools (an independent reader): load, rasterise, loadRes, COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from plugins import export_pipeline, make_export_images
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from autolabel import Pipeline
from autolabel.config import ExportSpec, parse
from autolabel.errors import AutolabelError
from autolabel.exports import write_export
from autolabel.exports import coco as coco_module
from autolabel.store import Store

# displayed sizes (rotated.jpg is stored 80x40 with EXIF orientation 6)
SIZES = {"rotated.jpg": (40, 80), "square.png": (64, 64), "sub/tall.png": (30, 50), "wide.png": (96, 48)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_export_images(root / "in")
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root / "out"


def export(out: Path, **options: object) -> list[str]:
    with Store(out) as store:
        return write_export(store, parse(export_pipeline()), ExportSpec(**options), out)


def load(path: str | Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(path))


def two_part_mask(width: int, height: int) -> np.ndarray:
    """The mask RichLabels gives its first box: two rectangles, eighths 1..3 and 5..7 of each side."""
    at = lambda k, size: int(size * k / 8)  # noqa: E731
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[at(1, height) : at(3, height), at(1, width) : at(3, width)] = 1
    mask[at(5, height) : at(7, height), at(5, width) : at(7, width)] = 1
    return mask


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_every_annotation_loads_and_rasterises(run: Path, segmentation: str) -> None:
    path = export(run, format="coco", path=f"coco_{segmentation}.json", segmentation=segmentation)[0]
    coco = load(path)
    images = {img["file_name"]: img for img in coco.dataset["images"]}
    assert {name: (img["width"], img["height"]) for name, img in images.items()} == SIZES
    with Store(run) as store:
        assert {r["rel_path"]: r["id"] for r in store.images(labels=False)} == {n: i["id"] for n, i in images.items()}
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "cat"), (2, "dog"), (3, "text")]
    anns = coco.dataset["annotations"]
    assert len(anns) == 4 * len(SIZES)  # CenterBox's box + cat, dog, text; the dropped box is not exported
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    for ann in anns:
        assert ann["iscrowd"] == 0 and ann["segmentation"]
        if segmentation == "polygon":
            assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
        else:
            assert set(ann["segmentation"]) == {"size", "counts"}
        img = coco.imgs[ann["image_id"]]
        assert coco.annToMask(ann).shape == (img["height"], img["width"])
        assert coco.annToMask(ann).sum() > 0
    for name, (w, h) in SIZES.items():
        mine = [a for a in anns if a["image_id"] == images[name]["id"]]
        center, cat, dog, text = mine
        assert center["bbox"] == [w / 4, h / 4, w / 2, h / 2] and center["area"] == w * h / 4
        assert cat["area"] == two_part_mask(w, h).sum()  # the mask's pixels, not the box's
        if segmentation == "rle":
            assert np.array_equal(coco.annToMask(cat), two_part_mask(w, h))  # lossless
        else:
            assert len(cat["segmentation"]) == 2  # one polygon per part, in one annotation
            drawn = coco.annToMask(cat).astype(bool)
            assert (drawn & ~two_part_mask(w, h).astype(bool)).sum() == 0  # inside the mask ...
            assert drawn.sum() >= 0.4 * cat["area"]  # ... and covering much of it (half a pixel inset)
        if segmentation == "polygon":  # the triangle RichLabels gives the dog, as given
            assert dog["segmentation"] == [[w * 4 // 8, h // 8, w * 7 // 8, h * 7 // 8, w // 8, h * 7 // 8]]
        assert (center["score"], cat["score"], dog["score"], text["score"]) == (brightness(run, name), 0.9, 0.6, 0.8)


def brightness(run: Path, name: str) -> float:
    """CenterBox's score: the mean of the displayed image's pixels over 255."""
    with Image.open(run.parent / "in" / name) as image:
        return round(float(np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float32).mean()) / 255, 5)


def test_attributes_carry_text_provenance_and_reasons(run: Path) -> None:
    anns = json.loads(Path(export(run, format="coco")[0]).read_text())["annotations"]
    center, cat, dog, text = anns[:4]
    assert center["attributes"] == {
        "phrase": "cat", "stage": "plugins:CenterBox", "status": "kept", "reason": "", "text": "",
        "provenance": {"model": "center-box", "task": "test"},
    }
    assert dog["attributes"]["status"] == "flagged" and dog["attributes"]["reason"] == "test_flag"
    assert text["attributes"]["text"] == "HELLO"
    assert cat["attributes"]["provenance"] == {"model": "rich-labels", "task": "test"}


def test_captions_file_is_coco_captions(run: Path) -> None:
    paths = export(run, format="coco")
    assert [Path(p).name for p in paths] == ["coco.json", "captions.json"]
    captions = load(paths[1])
    by_image = {captions.imgs[a["image_id"]]["file_name"]: a["caption"] for a in captions.dataset["annotations"]}
    assert by_image == {name: f"a test image of {w}x{h} pixels" for name, (w, h) in SIZES.items()}
    assert export(run, format="coco", path="nocap.json", captions=False) == [str(run / "nocap.json")]
    assert not (run / "nocap_captions.json").exists()


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_results_load_and_evaluate_to_ap_1(run: Path, segmentation: str) -> None:
    gt = load(export(run, format="coco", path=f"gt_{segmentation}.json", segmentation=segmentation)[0])
    results = export(run, format="coco-results", path=f"res_{segmentation}.json", segmentation=segmentation)[0]
    entries = json.loads(Path(results).read_text())
    assert len(entries) == len(gt.dataset["annotations"])
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        for iou_type in ("bbox", "segm"):
            evaluation = COCOeval(gt, dt, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(1.0), iou_type  # AP@[.5:.95]
            assert evaluation.stats[1] == pytest.approx(1.0), iou_type  # AP@.5


def test_min_score_and_flagged_exclude(run: Path) -> None:
    anns = json.loads(Path(export(run, format="coco", path="f.json", min_score=0.85, flagged="exclude")[0]).read_text())
    kept = {(a["category_id"], a["score"]) for a in anns["annotations"]}
    assert kept == {(1, 0.9)}  # the cats with masks; CenterBox (<= 0.8 brightness), dog (flagged), text (0.8) out


def test_needs_no_source_files(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "out"
    shutil.copytree(run, moved)
    shutil.rmtree(run.parent / "in_moved", ignore_errors=True)
    os.rename(run.parent / "in", run.parent / "in_moved")
    try:
        coco = load(export(moved, format="coco")[0])
        assert len(coco.dataset["images"]) == len(SIZES)
    finally:
        os.rename(run.parent / "in_moved", run.parent / "in")


def test_ontology_changed_since_the_run_is_one_clear_line(run: Path) -> None:
    spec = parse(export_pipeline(ontology=["cat", "text"]))
    with Store(run) as store, pytest.raises(AutolabelError) as err:
        write_export(store, spec, ExportSpec(format="coco", path="changed.json"), run)
    assert "class 'dog' is not in the pipeline's ontology (known: cat, text)" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (run / "changed.json").exists()
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with Store(tmp_path) as store, pytest.raises(AutolabelError, match="no labeled images in the store"):
        write_export(store, parse(export_pipeline()), ExportSpec(format="coco"), tmp_path)
    assert not [p for p in os.listdir(tmp_path) if "coco" in p or "captions" in p]


def test_a_crash_leaves_the_previous_file(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(export(run, format="coco", path="keep.json")[0])
    before = path.read_bytes()
    calls = []

    def failing(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    real = coco_module.annotation_entry
    monkeypatch.setattr(coco_module, "annotation_entry", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export(run, format="coco", path="keep.json")
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_box_only_segmentation_is_the_box_in_both_modes() -> None:
    from autolabel.exports.rows import Annotation

    ann = Annotation(index=0, category=0, class_name="a", xyxy=(2.0, 3.0, 6.0, 5.0), score=None, status="kept",
                     reason="", text="", phrase="", stage="s")
    assert coco_module.segmentation(ann, 10, 10, "polygon") == ([[2.0, 3.0, 6.0, 3.0, 6.0, 5.0, 2.0, 5.0]], 8.0)
    rle, area = coco_module.segmentation(ann, 10, 10, "rle")
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert area == 8.0 and decoded.sum() == 8 and decoded[3:5, 2:6].all()


@pytest.mark.parametrize("mode", ["polygon", "rle"])
def test_a_mask_segments_the_same_traced_alone_or_with_its_whole_image(mode: str) -> None:
    """``segmentation`` without a pre-traced mask traces it itself, and gets what the batched image tracing gets."""
    from autolabel.exports.rows import Annotation, ImageRow

    mask = two_part_mask(16, 16)
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    ann = Annotation(index=3, category=0, class_name="a", xyxy=(0.0, 0.0, 16.0, 16.0), score=0.5, status="kept",
                     reason="", text="", phrase="", stage="s", rle=rle)
    row = ImageRow(id=1, path="/a.png", rel_path="a.png", sha256=None, width=16, height=16, annotations=[ann], texts=[],
                   provenance={})
    traced = coco_module.trace_masks(row, mode)
    alone = coco_module.segmentation(ann, 16, 16, mode)
    assert alone == coco_module.segmentation(ann, 16, 16, mode, traced[3])
    assert alone[1] == float(mask.sum()) > 0
    if mode == "polygon":
        assert len(alone[0]) == 2  # both parts of the mask, as flat [x, y, ...] lists
    else:
        assert alone[0] == rle


# --- entries built one by one, and the writers' defaults ------------------------------------------------------------

def mask_rle(mask: np.ndarray) -> dict:
    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": coded["size"], "counts": coded["counts"].decode()}


def annotation(**fields: object) -> "coco_module.Annotation":
    base = {"index": 0, "category": 1, "class_name": "b", "xyxy": (1.234, 2.0, 7.5, 9.0), "score": None,
            "status": "kept", "reason": "", "text": "", "phrase": "p", "stage": "s"}
    return coco_module.Annotation(**(base | fields))


def image(*anns: "coco_module.Annotation") -> "coco_module.ImageRow":
    return coco_module.ImageRow(id=5, path="/x/a.png", rel_path="a.png", sha256=None, width=12, height=10,
                                annotations=list(anns), texts=[], provenance={"s": {"model": "m"}})


def test_result_entry_unknown_score_is_one_and_segmentation_only_where_there_is_a_shape() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    box_only, masked = annotation(), annotation(index=1, score=0.123456789, rle=mask_rle(mask))
    empty = annotation(index=2, rle=mask_rle(np.zeros((10, 12), bool)))
    triangle = annotation(index=3, polygon=[[1.0, 1.0], [9.0, 1.0], [5.0, 8.0]])
    row = image(box_only, masked, empty, triangle)
    assert coco_module.result_entry(box_only, row) == {"image_id": 5, "category_id": 2, "bbox": [1.23, 2.0, 6.27, 7.0],
                                                       "score": 1.0}
    alone = coco_module.result_entry(masked, row)  # not traced beforehand: it traces the mask itself
    assert alone["score"] == 0.12346
    assert alone == coco_module.result_entry(masked, row, "polygon", coco_module.trace_masks(row, "polygon")[1])
    drawn = mask_utils.decode(mask_utils.frPyObjects(alone["segmentation"], 10, 12)).max(axis=2).astype(bool)
    assert (drawn & ~mask).sum() == 0 and drawn.sum() > 0
    rle = coco_module.result_entry(masked, row, "rle")
    assert rle["segmentation"] == masked.rle == coco_module.result_entry(masked, row, "rle", (18, None))["segmentation"]
    assert "segmentation" not in coco_module.result_entry(empty, row)  # an empty mask: box only
    assert "segmentation" not in coco_module.result_entry(empty, row, "polygon", (0, []))
    assert coco_module.result_entry(triangle, row)["segmentation"] == [[1.0, 1.0, 9.0, 1.0, 5.0, 8.0]]
    dot = np.zeros((10, 12), bool)
    dot[4, 6] = True  # one pixel is a mask too: its square
    one = annotation(index=4, rle=mask_rle(dot))
    assert coco_module.result_entry(one, image(one))["segmentation"] == [[6.0, 4.0, 7.0, 4.0, 7.0, 5.0, 6.0, 5.0]]


def test_annotation_entry_fields() -> None:
    ann = annotation(score=0.987654321, extra={"predicted_iou": 0.5}, status="flagged", reason="odd", text="T")
    entry = coco_module.annotation_entry(ann, image(ann), 42, "polygon")
    assert entry == {
        "id": 42, "image_id": 5, "category_id": 2, "bbox": [1.23, 2.0, 6.27, 7.0], "area": 43.86, "iscrowd": 0,
        "segmentation": [[1.23, 2.0, 7.5, 2.0, 7.5, 9.0, 1.23, 9.0]], "score": 0.98765,
        "attributes": {"phrase": "p", "stage": "s", "status": "flagged", "reason": "odd", "text": "T",
                       "provenance": {"model": "m"}, "predicted_iou": 0.5},
    }
    unscored = coco_module.annotation_entry(annotation(stage="other"), image(ann), 1, "rle")
    assert unscored["score"] is None and unscored["attributes"]["provenance"] == {}


def test_a_polygon_segments_as_its_raster_in_both_modes() -> None:
    ann = annotation(polygon=[[1.0, 1.0], [9.0, 1.0], [9.0, 7.0], [1.0, 7.0]])
    flat, area = coco_module.segmentation(ann, 10, 12, "polygon")
    assert flat == [[1.0, 1.0, 9.0, 1.0, 9.0, 7.0, 1.0, 7.0]]
    raster = mask_utils.decode(mask_utils.frPyObjects(flat, 10, 12)).max(axis=2)
    assert area == float(raster.sum()) > 0
    rle, rle_area = coco_module.segmentation(ann, 10, 12, "rle")
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert rle_area == area and np.array_equal(decoded, raster)


def test_masks_are_traced_once_per_image_not_one_by_one(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both writers measure and trace an image's masks in one batch (:func:`trace_masks`); tracing a mask alone
    (the per-call overhead the batch avoids) never happens, whatever the mode."""
    def alone(*args: object) -> None:
        raise AssertionError("a mask traced alone")

    monkeypatch.setattr(coco_module, "_trace", alone)
    for mode in ("polygon", "rle"):
        coco = export(run, format="coco", path=f"batched_{mode}.json", segmentation=mode)[0]
        results = export(run, format="coco-results", path=f"batched_res_{mode}.json", segmentation=mode)[0]
        assert len(json.loads(Path(results).read_text())) == len(json.loads(Path(coco).read_text())["annotations"])


def test_writers_defaults(run: Path) -> None:
    """Called with no options: polygons, every score, flagged boxes in, no captions file."""
    spec = parse(export_pipeline())
    with Store(run) as store:
        assert coco_module.write_coco(store, spec.ontology, run / "d.json") == [str(run / "d.json")]
        coco_module.write_coco(store, spec.ontology, run / "e.json", min_score=0.0, flagged=True,
                               segmentation_mode="polygon")
        assert coco_module.write_coco_results(store, spec.ontology, run / "dr.json") == [str(run / "dr.json")]
        coco_module.write_coco_results(store, spec.ontology, run / "er.json", min_score=0.0, flagged=True,
                                       segmentation_mode="polygon")
    assert (run / "d.json").read_bytes() == (run / "e.json").read_bytes()
    assert (run / "dr.json").read_bytes() == (run / "er.json").read_bytes()
    assert not (run / "d_captions.json").exists()
    dataset = json.loads((run / "d.json").read_text())
    assert dataset["info"] == {"description": "autolabel"} and dataset["licenses"] == []
    assert {a["attributes"]["status"] for a in dataset["annotations"]} == {"kept", "flagged"}
    results = json.loads((run / "dr.json").read_text())
    assert all(isinstance(r["segmentation"], list) for r in results if "segmentation" in r)
    assert sum("segmentation" in r for r in results) == 2 * len(SIZES)  # the cat's mask and the dog's triangle


def test_captions_entries_and_file_names(run: Path) -> None:
    paths = export(run, format="coco", path="named.json")
    assert paths == [str(run / "named.json"), str(run / "named_captions.json")]
    assert coco_module.captions_path_for(Path("/o/coco.json")) == Path("/o/captions.json")
    assert coco_module.captions_path_for(Path("/o/x/train.json")) == Path("/o/x/train_captions.json")
    captions = json.loads(Path(paths[1]).read_text())
    assert captions["info"] == {"description": "autolabel captions"}
    assert [c["id"] for c in captions["annotations"]] == list(range(1, len(SIZES) + 1))
    assert [i["id"] for i in captions["images"]] == sorted(c["image_id"] for c in captions["annotations"])
    assert {(c["kind"], c["stage"]) for c in captions["annotations"]} == {("caption", "plugins:RichLabels")}
    row = coco_module.ImageRow(3, "/a", "a", None, 4, 4, [], [{"kind": "caption", "text": "x", "score": 0.5,
                                                               "stage": "s"}, {"kind": "ocr", "text": "y"},
                                                              {"text": "z"}], {})
    assert coco_module.caption_entries(row, 7) == [
        {"id": 7, "image_id": 3, "caption": "x", "kind": "caption", "score": 0.5, "stage": "s"}]


def test_numpy_scalars_are_written_as_numbers() -> None:
    assert coco_module._dumps({"a": np.float32(0.5), "b": np.int64(3), "c": "é"}) == '{"a":0.5,"b":3,"c":"é"}'
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        coco_module._dumps({"a": object()})
