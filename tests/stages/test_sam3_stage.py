"""Stage ``concepts``: rows of every instance (class, prompt, mask, score and its parts), exemplars from earlier
stages' rows or a file per image, and every outside input's limit refused in one line, nothing done lost.

Expected rows come from the model's own :meth:`Sam3.segment_concepts` (itself checked against transformers in
tests/models/test_sam3_model.py) for the prompts the stage should have asked: the checks here are about what the stage
asks and how it writes the answers down.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose
from real_checkpoints import real
from tiny_models import noise_image

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.config import ModelSpec
from autolabel.errors import ConfigError, ExitCode
from autolabel.models.concepts import ConceptPrompt
from autolabel.models.sam3 import Sam3
from autolabel.records import from_record
from autolabel.stage import Item
from autolabel.stages.concepts import MAX_EXEMPLAR_FILE
from autolabel.store import Store

IMAGES = {"a": (150, 60, 1), "b": (80, 120, 2), "c": (96, 64, 3)}
ONTOLOGY = {"cat": ["cat", "kitty"], "light": ["traffic light"]}
PROMPTS = ["cat", "kitty", "traffic light"]
CLASSES = ["cat", "cat", "light"]


def image(name: str):
    w, h, seed = IMAGES[name]
    return noise_image(w, h, seed=seed)


@pytest.fixture(scope="module")
def sam3() -> Sam3:
    return Sam3.load(ModelSpec(type="sam3", id=real("sam3")))


def pipeline(stages: list[dict], **top) -> dict:
    return {"models": {"sam3": {"type": "sam3", "id": real("sam3")}}, "ontology": ONTOLOGY, "stages": stages, **top}


def built(data: dict, sam3: Sam3) -> Pipeline:
    """The pipeline with the module's loaded model in its pool (it would load the same checkpoint)."""
    p = Pipeline.from_dict(data)
    p.models._loaded["sam3"] = sam3
    return p


def concepts(**keys) -> dict:
    return {"name": "concepts", "type": "concepts", "model": "sam3", "threshold": 0.0, **keys}


def center_box(label: str = "cat") -> dict:
    """A box over the middle half of each image, of class ``label`` (tests/support/plugins.py)."""
    return {"name": "center", "type": "plugins:CenterBox", "label": label}


def assert_rows(det, found, classes: list[str], phrases: list[str], exemplars: list[int], width: int,
                height: int) -> None:
    """Rows are the model's instances, in order: class and phrase of their prompt, clipped boxes, masks, scores."""
    assert len(det) == len(found) > 0
    assert det.data["class_name"].tolist() == [classes[k] for k in found.prompts]
    assert det.data["phrase"].tolist() == [phrases[k] for k in found.prompts]
    assert det.data["exemplars"].tolist() == [exemplars[k] for k in found.prompts]
    assert_allclose(det.confidence, found.scores, rtol=1e-5)
    assert_allclose(det.data["query_score"], found.query_scores, rtol=1e-5)
    assert_allclose(det.data["presence_score"], found.presence_scores, rtol=1e-5)
    assert_allclose(det.confidence, det.data["query_score"] * det.data["presence_score"], rtol=1e-5)
    assert_allclose(det.xyxy, np.clip(found.xyxy, 0, [width, height, width, height]), atol=1e-3)
    assert (det.xyxy[:, [0, 2]] <= width).all() and (det.xyxy[:, [1, 3]] <= height).all()
    assert det.data["has_mask"].all() and det.mask.dtype == bool
    assert (det.mask != found.masks).mean() <= 1e-3


def test_each_instance_is_a_row_with_its_class_prompt_mask_and_both_parts_of_its_score(sam3):
    p = built(pipeline([concepts(max_instances=4)]), sam3)
    items = p([Item.of(image(n), n) for n in "ab"])
    for name, item in zip("ab", items):
        (found,) = sam3.segment_concepts([image(name)], [[ConceptPrompt(t) for t in PROMPTS]], threshold=0.0,
                                         max_instances=4)
        assert sorted(set(found.prompts.tolist())) == [0, 1, 2]
        w, h, _ = IMAGES[name]
        assert_rows(item.labels.detections, found, CLASSES, PROMPTS, [0, 0, 0], w, h)
    provenance = items[0].labels.provenance["concepts"]
    assert provenance["task"] == "concept_segmentation" and provenance["model_type"] == "sam3"
    assert provenance["prompts"] == PROMPTS and provenance["score"] == "query_score*presence_score"
    assert (provenance["threshold"], provenance["mask_threshold"], provenance["max_instances"]) == (0.0, 0.5, 4)


def test_without_a_threshold_the_models_default_applies(sam3):
    (item,) = built(pipeline([{"type": "concepts", "model": "sam3"}]), sam3)([Item.of(image("b"), "b")])
    assert item.labels.provenance["concepts"]["threshold"] == Sam3.default_threshold == 0.5
    det = item.labels.detections
    assert len(det) and (det.confidence > 0.5).all()


def test_reordering_the_prompts_changes_no_instance_of_any_class(sam3):
    def rows(prompts: list[str]) -> dict:
        (item,) = built(pipeline([concepts(prompts=prompts)]), sam3)([Item.of(image("a"), "a")])
        det = item.labels.detections
        return {(p, round(float(s), 5)): c for p, s, c in zip(det.data["phrase"], det.confidence,
                                                               det.data["class_name"])}

    forward, backward = rows(PROMPTS), rows(PROMPTS[::-1])
    assert forward == backward and set(forward.values()) == {"cat", "light"}


def test_exemplars_from_an_earlier_stage_join_their_class_text_prompts(sam3):
    p = built(pipeline([center_box(), concepts(exemplars={"from_stages": ["center"]})]), sam3)
    (item,) = p([Item.of(image("a"), "a")])
    box = np.array([[37.5, 15, 112.5, 45]], np.float32)  # CenterBox: the middle half of 150x60
    (found,) = sam3.segment_concepts([image("a")], [[ConceptPrompt("cat", box, [True]),
                                                     ConceptPrompt("kitty", box, [True]),
                                                     ConceptPrompt("traffic light")]], threshold=0.0)
    det = item.labels.detections
    mine = det.data["stage"] == "concepts"
    assert det.data["stage"].tolist().count("center") == 1
    assert_rows(det[mine], found, CLASSES, PROMPTS, [1, 1, 0], 150, 60)
    plain = built(pipeline([concepts()]), sam3)([Item.of(image("a"), "a")])[0].labels.detections
    assert np.abs(plain.confidence[:20] - det[mine].confidence[:20]).max() > 0.01  # the example changed the answer


def test_exemplars_alone_look_only_for_classes_with_examples_and_dropped_rows_are_counter_examples(sam3):
    stages = [center_box("light"), {"type": "plugins:CenterBox", "name": "other", "label": "cat"},
              {"type": "score_threshold", "name": "drop_cat", "threshold": 1.0, "per_class": {"light": 0.0}},
              concepts(exemplars={"from_stages": ["center", "other"], "negatives": "dropped", "text": False})]
    (item,) = built(pipeline(stages), sam3)([Item.of(image("c"), "c")])
    box = np.array([[24, 16, 72, 48]], np.float32)  # the middle half of 96x64
    det = item.labels.detections
    assert det.data["status"][det.data["stage"] == "other"].tolist() == ["dropped"]  # a counter-example of cat
    mine = det[det.data["stage"] == "concepts"]
    # only "light" has a positive example: one prompt, its box; cat's dropped box is a negative of cat only
    (found,) = sam3.segment_concepts([image("c")], [[ConceptPrompt(None, box, [True])]], threshold=0.0)
    assert_rows(mine, found, ["light"], [""], [1], 96, 64)
    # with text, a counter-example alone refines its class's text prompts
    stages[-1] = concepts(exemplars={"from_stages": ["center", "other"], "negatives": "dropped"})
    (item,) = built(pipeline(stages), sam3)([Item.of(image("c"), "c")])
    det = item.labels.detections
    (found,) = sam3.segment_concepts([image("c")], [[ConceptPrompt("cat", box, [False]),
                                                     ConceptPrompt("kitty", box, [False]),
                                                     ConceptPrompt("traffic light", box, [True])]], threshold=0.0)
    assert_rows(det[det.data["stage"] == "concepts"], found, CLASSES, PROMPTS, [1, 1, 1], 96, 64)


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in IMAGES:
        paths.append(folder / f"{name}.png")
        image(name).save(paths[-1])
    return paths


def test_a_file_per_image_gives_its_exemplars_and_a_bad_one_fails_only_its_image_in_one_line(sam3, tmp_path):
    inputs = write_images(tmp_path / "in")
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "a.json").write_text(json.dumps([{"class": "light", "box": [10, 5, 60, 40]},
                                                 {"class": "light", "box": [90, 10, 140, 55], "positive": False}]))
    (examples / "b.json").write_text(json.dumps([{"class": "dog", "box": [1, 1, 20, 20]}]))  # no such class
    # c has no file: text prompts alone
    p = built(pipeline([concepts(exemplars={"folder": str(examples)})], batch_size=3), sam3)
    summary = p.run(input=inputs, output=tmp_path / "out")
    assert summary.status == "partial" and summary.counts["labeled"] == 2 and summary.counts["failed"] == 1
    with Store(tmp_path / "out") as store:
        rows = {Path(r["rel_path"]).stem: r for status in ("done", "failed") for r in store.images(status)}
    assert rows["b"]["status"] == "failed"
    assert rows["b"]["reason"] == (f"stage 'concepts': ValueError: exemplar file {examples / 'b.json'}: entry 0: "
                                   "unknown class 'dog' (known: cat, light)")
    a = from_record(rows["a"]["labels"]).detections
    (found,) = sam3.segment_concepts([image("a")], [[
        ConceptPrompt("cat"), ConceptPrompt("kitty"),
        ConceptPrompt("traffic light", [[10, 5, 60, 40], [90, 10, 140, 55]], [True, False])]], threshold=0.0)
    assert_allclose(a.confidence, found.scores, rtol=1e-5)
    assert a.data["exemplars"].tolist() == [[0, 0, 2][k] for k in found.prompts]
    c = from_record(rows["c"]["labels"]).detections
    assert set(c.data["exemplars"].tolist()) == {0} and len(c) == 60


@pytest.mark.parametrize("content, problem", [
    ("[{\"class\": \"cat\", \"box\": [1, 2, 3]}]", "entry 0: box must be four numbers [x1, y1, x2, y2] in pixels "
                                               "(got [1, 2, 3])"),
    ("[{\"class\": \"cat\", \"box\": [10, 10, 5, 20]}]", "entry 0: box [10, 10, 5, 20] is empty or outside the "
                                                     "150x60 image"),
    ("[{\"class\": \"cat\", \"box\": [0, 0, 151, 20]}]", "entry 0: box [0, 0, 151, 20] is empty or outside the "
                                                     "150x60 image"),
    ("[{\"class\": \"cat\", \"box\": [1, 1, 5, 5], \"positive\": 1}]", "entry 0: positive must be true or false"),
    ("[{\"class\": \"cat\", \"box\": [1, 1, 5, 5], \"label\": 1}]", "entry 0: expected an object with keys class, "
                                                                "box and (optionally) positive"),
    ("{\"cat\": []}", "expected a list of example boxes, got dict"),
    ("[{\"class\": \"cat\", \"box\": [1, 1, NaN, 5]}]", "entry 0: box must be four numbers"),
    ("not json", "not JSON"),
    (" " * (MAX_EXEMPLAR_FILE + 1), f"{MAX_EXEMPLAR_FILE + 1} bytes, more than the {MAX_EXEMPLAR_FILE} allowed"),
])
def test_exemplar_file_problems_are_one_line_naming_the_file_and_the_fix(sam3, tmp_path, content, problem):
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "a.json").write_text(content)
    p = built(pipeline([concepts(exemplars={"folder": str(examples)})]), sam3)
    with pytest.raises(Exception) as err:
        p([Item.of(image("a"), str(tmp_path / "a.png"))])
    line = str(err.value)
    assert line.startswith(f"stage 'concepts': ValueError: exemplar file {examples / 'a.json'}: ") and "\n" not in line
    assert problem in line


def test_exemplars_are_capped_per_class_and_image_positives_first(sam3):
    rows = [{"type": "plugins:CenterBox", "name": f"c{k}", "label": "cat"} for k in range(3)]
    stages = [*rows, {"type": "score_threshold", "threshold": 1.0, "per_class": {"cat": 0.0}}, concepts(
        prompts=["cat"], exemplars={"from_stages": ["c0", "c1", "c2"], "max_boxes": 2})]
    p = built(pipeline(stages), sam3)
    stage = p["concepts"]
    (item,) = p.stages[0]([Item.of(image("a"), "a")])
    for s in p.stages[1:3]:
        (item,) = s([item])
    (prompt, name), = stage.image_prompts(item)
    assert name == "cat" and len(prompt.boxes) == 2 and prompt.positive.tolist() == [True, True]


# -- configuration: refused before anything runs ---------------------------------------------------------------

@pytest.mark.parametrize("stage, line", [
    (concepts(prompts=["cat", "dog"]), "stages[0].prompts: 'dog' names no ontology class (known: cat, light); every "
                                       "prompt of a concepts stage labels a class (add it to a class's prompts)"),
    (concepts(exemplars={"text": False}), "stages[0].exemplars: needs from_stages (earlier stages whose rows are "
                                          "exemplars) or folder (a JSON file per image), or both"),
    (concepts(exemplars={"folder": "/nonexistent/examples"}), "stages[0].exemplars.folder: '/nonexistent/examples' is "
                                                              "not a folder (it holds one JSON file of example boxes "
                                                              "per image: create it, or remove the key)"),
    (concepts(exemplars={"from_stages": ["later"]}), "stages[0].exemplars.from_stages: 'later' is not an earlier stage "
                                                     "(earlier stages: none)"),
    (concepts(exemplars={"from_stages": ["x"], "max_boxes": 0}), "stages[0].exemplars.max_boxes: input should be "
                                                                 "greater than or equal to 1 (got 0)"),
    (concepts(prompts_per_call=0), "stages[0].prompts_per_call: input should be greater than or equal to 1 (got 0)"),
    (concepts(threshold=1.5), "stages[0].threshold: input should be less than or equal to 1 (got 1.5)"),
    ({"type": "concepts", "model": "sam3", "box_threshold": 0.3}, "stages[0].box_threshold: unknown key"),
])
def test_bad_keys_are_refused_in_one_line_naming_the_key(stage, line):
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(pipeline([stage]))
    assert any(p == line or p.startswith(line + " (known:") for p in err.value.problems), err.value.problems


def test_a_prompt_longer_than_sam3_reads_is_refused_at_validate_time_naming_its_class(tmp_path, capsys):
    long = " ".join(["forklift"] * 31)
    data = pipeline([{"type": "concepts", "model": "sam3"}])
    data["ontology"] = {"cat": ["cat"], "forklift": ["forklift", long]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autolabel: error: stages[0].prompts: class 'forklift': prompt '{long}' is 33 tokens; sam3 reads "
                   "at most 32 (start and end tokens included): shorten it"]
    data["ontology"]["forklift"] = ["forklift", " ".join(["forklift"] * 30)]  # 32: the most it reads
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == ExitCode.OK


def test_without_the_tokenizer_at_validate_time_a_long_prompt_stops_the_run_before_any_image(sam3, tmp_path):
    """A hub id not downloaded yet cannot be checked when the pipeline is built; the first batch checks it with
    the loaded model's tokenizer, and the error is the run's (fatal, one line), not one image's."""
    long = " ".join(["forklift"] * 31)
    data = pipeline([{"type": "concepts", "model": "sam3"}])
    data["models"]["sam3"]["id"] = str(tmp_path)  # a folder without a tokenizer: nothing to count with yet
    data["ontology"] = {"forklift": [long]}
    p = built(data, sam3)
    with pytest.raises(ConfigError, match=r"^prompts: class 'forklift': prompt '.*' is 33 tokens; sam3 reads at "
                                          r"most 32"):
        p([Item.of(image("a"), "a")])
