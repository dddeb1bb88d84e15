"""The incremental cache (autolabel.cache) and the pipeline as named stages with one loop over a batch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from PIL import Image

from autolabel import Item, Pipeline, cache
from autolabel.accounting import Account
from autolabel.config import ExportSpec, YoloExport, parse
from autolabel.records import to_record
from autolabel.store import ImageResult, Store
from test_config import VALID
from runs import n_calls, two_model_pipeline
from runs import make_images


def _items(folder: Path, n: int) -> list[Item]:
    return [Item.of(Image.open(folder / name).convert("RGB"), str(folder / name)) for name in make_images(folder, n)]


def _sha(item: Item) -> str:
    return hashlib.sha256(item.image.tobytes()).hexdigest()


def test_keys_keep_the_format_stores_were_written_with() -> None:
    # the key this pipeline's model stage had before the cache got its own module: a store written then is read
    assert parse(yaml.safe_load(VALID)).stage_keys == ["b8f34c5b7e040d0af5d47abb", None]


def test_a_key_covers_every_stage_before_it(tmp_path: Path) -> None:
    keys = parse(two_model_pipeline(tmp_path / "calls")).stage_keys
    changed = parse(two_model_pipeline(tmp_path / "calls", second_label="third")).stage_keys
    refiltered = parse(two_model_pipeline(tmp_path / "calls", threshold=0.5)).stage_keys
    assert keys[2] is None and all(len(k) == cache.KEY_LENGTH for k in keys[:2])
    assert changed[0] == keys[0] and changed[1] != keys[1]  # a changed model stage: itself and what follows
    assert refiltered == keys  # a changed filter after the model stages: no model stage re-runs


def test_pipeline_is_named_stages_and_one_loop(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls"))
    assert pipeline.names == ["first", "second", "score_threshold"] and len(pipeline) == 3
    assert pipeline["second"] is pipeline.stages[1] and pipeline[-1].name == "score_threshold"
    with pytest.raises(KeyError, match="no stage named 'thrid'.*first, second, score_threshold"):
        pipeline["thrid"]
    account = Account()
    out = pipeline(_items(tmp_path / "in", 2), account=account)
    assert [len(item.labels.detections) for item in out] == [2, 2]
    assert account.stage_images == {"first": 2, "second": 2, "score_threshold": 2}
    later = pipeline(_items(tmp_path / "in", 2), starts=[1, 3])  # the first image from "second" on, the other: none
    assert [len(item.labels.detections) for item in later] == [1, 0] and n_calls(tmp_path / "calls", "second") == 3


def test_written_back_outputs_restore_the_run_without_the_models(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(two_model_pipeline(tmp_path / "calls"))
    keys = pipeline.spec.stage_keys
    items = _items(tmp_path / "in", 3)
    shas = [_sha(item) for item in items]
    write_back = cache.WriteBack(keys, shas)
    full = [to_record(item.labels) for item in pipeline(items, after=write_back)]
    assert [(sha, key) for sha, key, _ in write_back.rows] == [(s, k) for s in shas for k in keys[:2]]

    with Store(tmp_path / "out") as store:
        results = [ImageResult(str(k), str(k), sha, "done", labels=rec) for k, (sha, rec) in enumerate(zip(shas, full))]
        store.commit(results, store.begin_run("h", {}), "h", write_back.rows)
        restored = [cache.restore(store, sha, keys) for sha in shas]
        assert cache.prefetch(store, shas, keys).cached(shas[1], keys[:2]) == store.cached(shas[1], keys[:2])
    assert all(r.start == 2 for r in restored)
    assert cache.restore(cache.Prefetched(), shas[0], keys) == cache.Restored(0, None)

    calls_before = n_calls(tmp_path / "calls", "first"), n_calls(tmp_path / "calls", "second")
    fresh = [r.item(item.image, item.key) for r, item in zip(restored, items)]
    again = pipeline(fresh, [r.start for r in restored], after=cache.WriteBack(keys, shas))
    assert [to_record(item.labels) for item in again] == full  # the filter ran on the restored labels
    assert (n_calls(tmp_path / "calls", "first"), n_calls(tmp_path / "calls", "second")) == calls_before


def test_each_export_format_is_its_own_model() -> None:
    export = ExportSpec(format="yolo", task="segment", seed=None)  # null: the format's default
    assert isinstance(export, YoloExport) and export.option("seed") == 0 and export.option("task") == "segment"
    assert export.option("split") == {"train": 0.8, "val": 0.2}
    assert [e.format for e in parse(dict(yaml.safe_load(VALID), exports=[{"format": "labelstudio"}])).config.exports] \
        == ["labelstudio"]


def test_canonical_json_is_key_sorted_bytes_and_writes_paths_and_other_values_as_text() -> None:
    assert cache.canonical_json({"b": 1, "a": [Path("x/y"), None]}) == b'{"a": ["x/y", null], "b": 1}'
