"""The per-batch vision feature cache (autolabel/models/features.py), with a toy model that counts its tower's calls.

Every stage of a batch that asks one model about one image gets the features computed once; nothing is kept after
the batch; without sharing, each stage computes its own; what was computed is counted. The real models (Florence-2,
SAM 2) are in test_vision_sharing.py.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from PIL import Image

from autolabel import Pipeline
from autolabel.accounting import Account
from autolabel.errors import StageError
from autolabel.models.features import BatchFeatures, ImageFeatures, VisionCount, shared
from autolabel.stage import Item, ModelStage, ModelStageParams


class Feature:
    """What the toy tower makes of an image: its colour (weak-referenceable, to see when it is freed)."""

    def __init__(self, colour: tuple[int, ...]):
        self.colour = colour


class Toy:
    """A model type whose ``vision_features`` records each call's images (by colour) and whose ``label`` reads them."""

    calls: list[list[tuple[int, ...]]] = []
    made: list[weakref.ref] = []

    def __init__(self, spec: Any = None):
        self.id, self.revision = "toy", None

    @classmethod
    def load(cls, spec: Any) -> "Toy":
        return cls(spec)

    def vision_features(self, images: list[Image.Image]) -> list[Feature]:
        Toy.calls.append([im.getpixel((0, 0)) for im in images])
        out = [Feature(im.getpixel((0, 0))) for im in images]
        Toy.made.extend(weakref.ref(f) for f in out)
        return out

    def label(self, images: list[Image.Image], features: ImageFeatures | None = None) -> list[tuple[int, ...]]:
        source = features or ImageFeatures.direct(self.vision_features)
        return [f.colour for f in source.get(images, range(len(images)))]


class Twin(Toy):
    """A toy whose tower other model entries may share (``SharedTower``): its family is its dtype, its weights its id;
    each digest asked is recorded."""

    digests: list[str] = []

    def __init__(self, spec: Any = None):
        super().__init__(spec)
        self.weights, self.family = spec.id, f"toy tower in {spec.dtype}"

    def vision_family(self) -> str:
        return self.family

    def vision_weights(self) -> str:
        Twin.digests.append(self.weights)
        return self.weights


class AskParams(ModelStageParams):
    fail: bool = False


class Ask(ModelStage):
    """Asks its model about every item; writes what it read into the item's labels (a text per stage)."""

    Params = AskParams
    params: AskParams

    def __call__(self, items: list[Item], features: Any = None) -> list[Item]:
        model = self.model
        read = model.label([item.image for item in items], **shared(features, self.params.model, model, model.label))
        if self.params.fail:
            raise RuntimeError("this stage fails")
        from autolabel.labels import Text

        for item, colour in zip(items, read):
            item.labels.texts.append(Text(kind="caption", text=str(colour), score=1.0, stage=self.name))
        return items


class Plain(ModelStage):
    """A stage written before sharing existed: its ``__call__`` takes no ``features``."""

    def __call__(self, items: list[Item]) -> list[Item]:
        self.model.label([item.image for item in items])
        return items


@pytest.fixture(autouse=True)
def fresh() -> None:
    Toy.calls.clear()
    Toy.made.clear()
    Twin.digests.clear()


def image(red: int) -> Image.Image:
    return Image.new("RGB", (8, 6), (red, 0, 0))


def toy_pipeline(*stages: dict, share: bool = True) -> Pipeline:
    return Pipeline.from_dict({
        "models": {"toy": {"type": "test_features:Toy", "id": "toy"}, "other": {"type": "test_features:Toy",
                                                                             "id": "toy"}},
        "share_vision_features": share,
        "stages": [{"model": "toy", **s} for s in stages],
    })


def ask(name: str, **keys: Any) -> dict:
    return {"type": "test_features:Ask", "name": name, **keys}


def test_direct_features_are_computed_on_every_ask_and_kept_nowhere() -> None:
    source = ImageFeatures.direct(Toy().vision_features)
    images = [image(1), image(2), image(3)]
    assert [f.colour for f in source.get(images, [2, 0])] == [(3, 0, 0), (1, 0, 0)]
    source.get(images, [2])
    assert Toy.calls == [[(3, 0, 0), (1, 0, 0)], [(3, 0, 0)]]


def test_stages_of_a_batch_share_each_images_features_and_the_counts_say_so() -> None:
    images = [image(10), image(20), image(30)]
    batch = BatchFeatures(["a", "b", "c"])
    model = Toy()
    first = batch.for_stage([0, 1, 2]).of("toy", model)
    assert [f.colour[0] for f in first.get(images, [0, 2], chunk=1)] == [10, 30]  # one tower call per chunk
    later = batch.for_stage([1, 2]).of("toy", model)  # a stage over items 1 and 2 of the batch
    assert [f.colour[0] for f in later.get(images[1:], [1, 0])] == [30, 20]  # only item 1 (red 20) is new
    assert Toy.calls == [[(10, 0, 0)], [(30, 0, 0)], [(20, 0, 0)]]
    assert batch.counts() == {"toy": VisionCount(images=3, passes=3, requests=4, seconds=batch.counts()["toy"].seconds)}
    assert batch.counts()["toy"].seconds >= 0


def test_one_content_twice_in_a_batch_is_computed_once_when_shared_and_twice_when_not() -> None:
    images = [image(5), image(5)]
    for share, passes in ((True, 1), (False, 2)):
        Toy.calls.clear()
        batch = BatchFeatures(["same", "same"], share=share)
        got = batch.for_stage([0, 1]).of("toy", Toy()).get(images, [0, 1])
        assert [f.colour for f in got] == [(5, 0, 0)] * 2
        assert sum(map(len, Toy.calls)) == passes
        count = batch.counts()["toy"]
        assert (count.images, count.passes, count.requests) == (1, passes, 2)


def test_without_sharing_every_ask_computes_in_chunks() -> None:
    images = [image(1), image(2), image(3)]
    batch = BatchFeatures(["a", "b", "c"], share=False)
    for _ in range(2):
        batch.for_stage([0, 1, 2]).of("toy", Toy()).get(images, [0, 1, 2], chunk=2)
    assert [len(c) for c in Toy.calls] == [2, 1, 2, 1]
    count = batch.counts()["toy"]
    assert (count.images, count.passes, count.requests) == (3, 6, 6)


def test_models_are_kept_apart_by_name() -> None:
    images = [image(1)]
    batch = BatchFeatures(["a"])
    batch.for_stage([0]).of("toy", Toy()).get(images, [0])
    batch.for_stage([0]).of("other", Toy()).get(images, [0])
    assert len(Toy.calls) == 2 and set(batch.counts()) == {"toy", "other"}


def twins(*stages: dict, share: bool = True) -> Pipeline:
    """Four entries of the Twin type: det and tracker one tower (same weights, same dtype), tuned other weights,
    half the same weights in another dtype."""
    models = {"det": ("w1", "float32"), "tracker": ("w1", "float32"), "tuned": ("w2", "float32"),
              "half": ("w1", "bfloat16")}
    return Pipeline.from_dict({
        "models": {name: {"type": "test_features:Twin", "id": i, "dtype": d} for name, (i, d) in models.items()},
        "share_vision_features": share,
        "stages": list(stages),
    })


def test_two_model_entries_with_one_tower_share_it_and_the_one_that_ran_it_is_counted() -> None:
    pipeline = twins(ask("one", model="det"), ask("two", model="tracker"), ask("three", model="tuned"),
                     ask("four", model="half"), ask("five", model="tracker"))
    account = Account()
    items = pipeline([Item.of(image(1)), Item.of(image(2))], account=account)
    assert [[t.text for t in item.labels.texts] for item in items] == [["(1, 0, 0)"] * 5, ["(2, 0, 0)"] * 5]
    assert Toy.calls == [[(1, 0, 0), (2, 0, 0)]] * 3  # det (for tracker too), tuned, half
    assert {n: (c.images, c.passes, c.requests) for n, c in account.vision.items()} == {
        "det": (2, 2, 2), "tracker": (2, 0, 4), "tuned": (2, 2, 2), "half": (2, 2, 2)}
    # tracker met det (same family): both digested; tuned met det's group; half's family had no one to meet
    assert Twin.digests == ["w1", "w1", "w1", "w2"]
    gc.collect()
    assert all(ref() is None for ref in Toy.made)  # shared or not, nothing outlives the batch


def test_a_model_alone_in_its_family_and_a_run_without_sharing_digest_no_weights() -> None:
    twins(ask("one", model="det"), ask("two", model="half"), ask("three", model="det"))([Item.of(image(1))])
    assert Twin.digests == [] and len(Toy.calls) == 2  # det and half: two families of one member each
    pipeline, account = twins(ask("one", model="det"), ask("two", model="tracker"), share=False), Account()
    pipeline([Item.of(image(1))], account=account)
    assert Twin.digests == [] and len(Toy.calls) == 4  # off: every stage computes its own, no grouping
    assert (account.vision["tracker"].passes, account.vision["det"].passes) == (1, 1)


def test_a_tower_that_returns_the_wrong_number_of_entries_is_an_error() -> None:
    batch = BatchFeatures(["a", "b"])
    view = batch.for_stage([0, 1]).of("bad", type("Bad", (), {"vision_features": lambda self, ims: [1]})())
    with pytest.raises(RuntimeError, match="vision_features returned 1 entries for 2 images"):
        view.get([image(1), image(2)], [0, 1])


def test_shared_passes_features_only_to_models_and_methods_that_take_them() -> None:
    view = BatchFeatures(["a"]).for_stage([0])
    model = Toy()
    assert set(shared(view, "toy", model, model.label)) == {"features"}
    assert shared(None, "toy", model, model.label) == {}
    assert shared(view, "toy", model, lambda images: None) == {}  # a method written before the key
    no_tower = type("NoTower", (), {"label": lambda self, images, features=None: None})()
    assert shared(view, "toy", no_tower, no_tower.label) == {}


def test_a_pipeline_computes_each_image_once_per_model_and_frees_the_features_when_the_batch_ends() -> None:
    pipeline, account = toy_pipeline(ask("one"), ask("two"), ask("three", model="other")), Account()
    items = pipeline([Item.of(image(1)), Item.of(image(2))], account=account)
    assert [[t.text for t in item.labels.texts] for item in items] == [["(1, 0, 0)"] * 3, ["(2, 0, 0)"] * 3]
    assert Toy.calls == [[(1, 0, 0), (2, 0, 0)]] * 2  # once for toy's two stages, once for other
    assert {n: (c.images, c.passes, c.requests) for n, c in account.vision.items()} == {
        "toy": (2, 2, 4), "other": (2, 2, 2)}
    gc.collect()
    assert all(ref() is None for ref in Toy.made)  # nothing kept past the batch
    pipeline([Item.of(image(1))], account=account)
    assert len(Toy.calls) == 4  # a new batch computes again: features never outlive their batch
    assert (account.vision["toy"].images, account.vision["toy"].passes) == (3, 3)


def test_a_failed_try_frees_its_features_and_its_passes_are_counted() -> None:
    pipeline, account = toy_pipeline(ask("one"), ask("two", fail=True)), Account()
    with pytest.raises(StageError, match="this stage fails") as caught:
        pipeline([Item.of(image(1))], account=account)
    gc.collect()
    assert caught.value is not None and all(ref() is None for ref in Toy.made)
    assert (account.vision["toy"].passes, account.vision["toy"].requests) == (1, 2)


def test_keys_say_which_items_are_one_image_and_restored_items_ask_nothing() -> None:
    pipeline, account = toy_pipeline(ask("one"), ask("two")), Account()
    items = [Item.of(image(1)), Item.of(image(1)), Item.of(image(3))]
    pipeline(items, starts=[0, 0, 2], keys=["sha-x", "sha-x", "sha-y"], account=account)  # item 2: both stages restored
    assert Toy.calls == [[(1, 0, 0)]]
    assert (account.vision["toy"].images, account.vision["toy"].passes, account.vision["toy"].requests) == (1, 1, 4)


def test_sharing_off_computes_per_stage_and_gives_the_same_labels() -> None:
    def run(share: bool) -> list[list[str]]:
        pipeline = toy_pipeline(ask("one"), ask("two"), share=share)
        out = pipeline([Item.of(image(1)), Item.of(image(2))])
        return [[t.text for t in item.labels.texts] for item in out]

    shared_labels = run(True)
    assert len(Toy.calls) == 1
    assert run(False) == shared_labels and len(Toy.calls) == 3


def test_a_stage_without_the_features_key_still_runs_and_computes_its_own() -> None:
    pipeline, account = toy_pipeline({"type": "test_features:Plain", "name": "plain"}, ask("one")), Account()
    pipeline([Item.of(image(1))], account=account)
    assert len(Toy.calls) == 2 and account.vision["toy"].passes == 1  # the plain stage's own pass is not counted


def test_sharing_is_not_part_of_the_pipeline_hash_or_the_cache_keys() -> None:
    on, off = toy_pipeline(ask("one")), toy_pipeline(ask("one"), share=False)
    assert on.spec.hash == off.spec.hash and on.spec.stage_keys == off.spec.stage_keys


def test_the_switch_must_be_a_boolean() -> None:
    from autolabel.errors import ConfigError

    with pytest.raises(ConfigError, match="share_vision_features: input should be a valid boolean"):
        Pipeline.from_dict({"share_vision_features": "sometimes", "stages": [{"type": "degenerate_boxes"}]})


def test_the_plugin_authors_page_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/vision-sharing.md: its Python blocks run in order, its pipeline validates, its JSON parses."""
    import json
    import re
    from pathlib import Path

    import yaml

    from autolabel.config import parse

    page = (Path(__file__).parents[2] / "docs" / "vision-sharing.md").read_text()
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", page, flags=re.M | re.S)
    assert [lang for lang, _ in blocks] == ["json", "yaml", "json", "yaml", "bash", "python", "python"]
    namespace: dict[str, Any] = {"__name__": "vision_sharing_page"}
    for lang, text in blocks:
        if lang == "python":
            exec(compile(text, "docs/vision-sharing.md", "exec"), namespace)
        elif lang == "yaml":
            config = parse(yaml.safe_load(text)).config
            assert config.share_vision_features is ("sam3" in config.models)  # SAM 3's pair, or the off switch
        elif lang == "json":
            figures = json.loads(text)["vision_passes"].values()
            assert all(set(v) == set(VisionCount().summary()) for v in figures)
            assert all(v["per_image"] == round(v["passes"] / v["images"], 3) for v in figures)
        elif lang == "bash":
            import shlex

            from autolabel.cli import main

            words = shlex.split(text)
            assert words[0] == "autolabel"
            root = Path(__file__).parents[2]
            assert main([str(root / w) if w.startswith("pipelines/") else w for w in words[1:]]) == 0
            assert ": ok (2 models, 20 stages" in capsys.readouterr().out
    first, second, counts = capsys.readouterr().out.splitlines()
    red, blue = (sum(Image.new("RGB", (1, 1), c).convert("L").tobytes()) * 64 for c in ("red", "blue"))
    assert first == str([[f"cat: {red}"], [f"cat: {blue}"]])  # each image's own embedding, in order
    assert second == str([[f"dog: {red}", f"bird: {red}"], [f"dog: {blue}", f"bird: {blue}"]])
    assert counts.startswith("VisionCount(images=2, passes=2, requests=4, seconds=")
    assert namespace["Concepts"].Params.model_fields["prompts"].is_required()
