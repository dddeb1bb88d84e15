"""The pipeline's one loop over a batch: what it hands each stage, what it checks of the answer, what it records."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_cache import _items
from runs import two_model_pipeline

from autolabel import Item, Pipeline
from autolabel.accounting import Account
from autolabel.errors import ConfigError, StageError
from autolabel.models.pool import ModelPool
from autolabel.records import to_record
from autolabel.stage import Stage


def test_run_batch_gives_each_item_its_labels_after_each_cached_stage(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls"))
    items = _items(tmp_path / "in", 3)
    expected = []  # what each model stage's output is for each item, stage by stage, by hand
    for item in _items(tmp_path / "in", 3):
        snaps = []
        for j, stage in enumerate(pipeline.stages[:2]):
            item = stage([item])[0]
            snaps.append((j, to_record(item.labels)))
        expected.append(snaps)
    out, per_item = pipeline.run_batch(items)
    assert per_item == expected  # stage 2, the filter, is not cached: no snapshot
    assert [len(s) for s in per_item] == [2, 2, 2] and per_item[0][0][1] != per_item[0][1][1]
    assert [to_record(i.labels) for i in out] == [to_record(i.labels) for i in pipeline(_items(tmp_path / "in", 3))]
    later, snaps = pipeline.run_batch(_items(tmp_path / "in", 2), starts=[1, 3])
    assert [[j for j, _ in s] for s in snaps] == [[1], []]  # started at "second": only its snapshot; the other none


class Returns(Stage):
    """Answers with whatever the test put in ``answer`` (a wrong count, a tuple, an error to raise)."""

    answer: object = None

    def __call__(self, items: list[Item]) -> list[Item]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer(items)  # type: ignore[operator]


def pipeline_with(tmp_path: Path, answer: object) -> Pipeline:
    pipeline = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls"))
    stage = pipeline.stages[1]
    wrapped = Returns(stage.name, stage.params, None)  # type: ignore[arg-type]
    wrapped.answer = answer
    pipeline.stages[1] = wrapped
    return pipeline


@pytest.mark.parametrize("answer,message", [
    (lambda items: items[:1], "stage 'second': RuntimeError: returned 1 items for 2"),
    (lambda items: items + items, "stage 'second': RuntimeError: returned 4 items for 2"),
    (lambda items: tuple(items), "stage 'second': RuntimeError: returned tuple items for 2"),
    (ValueError("bad pixels"), "stage 'second': ValueError: bad pixels"),
])
def test_a_stage_that_answers_wrong_is_named_in_one_line(tmp_path: Path, answer: object, message: str) -> None:
    pipeline, account = pipeline_with(tmp_path, answer), Account()
    with pytest.raises(StageError) as err:
        pipeline(_items(tmp_path / "in", 2), account=account)
    assert str(err.value) == message and err.value.stage == "second"
    assert account.stage_images == {"first": 2}  # the failed stage is not counted as having labeled anything


def test_an_autolabel_error_in_a_stage_is_fatal_and_passes_through_unwrapped(tmp_path: Path) -> None:
    pipeline = pipeline_with(tmp_path, ConfigError("models.m: cannot load"))
    with pytest.raises(ConfigError, match="^models.m: cannot load$"):
        pipeline(_items(tmp_path / "in", 2))


def test_each_stage_is_timed_and_counted_by_the_items_it_labeled(tmp_path: Path) -> None:
    pipeline, account = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls")), Account()
    seen: list[tuple[int, int, int]] = []
    pipeline(_items(tmp_path / "in", 3), starts=[0, 1, 2], after=lambda j, k, labels: seen.append((j, k, id(labels))),
             account=account)
    assert account.stage_images == {"first": 1, "second": 2, "score_threshold": 3}
    assert set(account.stage_seconds) == {"first", "second", "score_threshold"} and all(
        t > 0 for t in account.stage_seconds.values())
    assert [(j, k) for j, k, _ in seen] == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    pipeline(_items(tmp_path / "in", 1), account=account)
    assert account.stage_images == {"first": 2, "second": 3, "score_threshold": 4}  # counts add up over batches


def test_a_pool_is_shared_only_when_it_declares_exactly_these_models(tmp_path: Path) -> None:
    spec = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls")).spec
    pool = ModelPool(spec.config.models)
    assert Pipeline(spec, models=pool).models is pool
    other = ModelPool({})
    assert Pipeline(spec, models=other).models is not other
    assert Pipeline(spec).models.specs == spec.config.models


def test_an_image_is_an_item_with_fresh_labels_of_its_size() -> None:
    item = Item.of(Image.new("RGB", (7, 5)), "k")
    assert (item.labels.width, item.labels.height, item.key) == (7, 5, "k") and len(item.labels.detections) == 0


def test_from_yaml_applies_its_overrides_and_remembers_the_file(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(two_model_pipeline(tmp_path / "calls")))
    pipeline = Pipeline.from_yaml(path, ["batch_size=2", "stages.second.label=third"])
    assert pipeline.config.batch_size == 2 and pipeline["second"].params.label == "third"
    assert pipeline.source == str(path) and Pipeline.from_yaml(path).config.batch_size == 3
    pool = ModelPool(pipeline.spec.config.models)
    assert Pipeline.from_yaml(path, models=pool).models is pool  # a server's loaded models, shared


def test_every_bad_stage_is_reported_not_only_the_first(tmp_path: Path) -> None:
    data = two_model_pipeline(tmp_path / "calls")
    data["stages"][0]["model"] = "nope"
    data["stages"][1]["model"] = "nope"
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(data)
    assert [p.split(".", 1)[0] for p in err.value.problems] == ["stages[0]", "stages[1]"], err.value.problems


def test_stage_timings_are_the_time_spent_in_each_stage(tmp_path: Path) -> None:
    import time

    pipeline, account = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls")), Account()
    items = _items(tmp_path / "in", 2)
    t0 = time.perf_counter()
    pipeline(items, account=account)
    wall = time.perf_counter() - t0
    assert 0 < sum(account.stage_seconds.values()) <= wall


@pytest.mark.parametrize("progress", [False, True])
def test_a_progress_bar_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool) -> None:
    from autolabel.runner import run

    pipeline = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls"))
    _items(tmp_path / "in", 3)
    if progress:
        pipeline.run(tmp_path / "in", tmp_path / "out", progress=True)
    else:
        pipeline.run(tmp_path / "in", tmp_path / "out")
        run(pipeline, tmp_path / "in", tmp_path / "out2")  # the runner's own default too
    assert ("3/3" in capsys.readouterr().err) is progress


def test_from_dict_applies_its_overrides(tmp_path: Path) -> None:
    data = two_model_pipeline(tmp_path / "calls")
    assert Pipeline.from_dict(data, ["batch_size=5"]).config.batch_size == 5
    assert Pipeline.from_dict(data).config.batch_size == 3 and Pipeline.from_dict(data).source is None
