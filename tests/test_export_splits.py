"""The split rule (autolabel.exports.splits): drawn by content hash, and no split with a fraction > 0 left empty
when there are images enough to fill it."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from autolabel.exports.splits import SplitPlan, draw_of, intervals, split_of

TWO = {"train": 0.8, "val": 0.2}
THREE = {"train": 0.7, "val": 0.2, "test": 0.1}


def keys(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + n)]


def plan_of(fractions: dict[str, float], ks: list[str], seed: int) -> dict[str, str]:
    """Where each key ends up after the plan's moves."""
    plan = SplitPlan(fractions, seed)
    where = {k: plan.assign(k, lambda split, k=k: k)[0] for k in ks}
    for key, old, new in plan.moves():
        assert where[key] == old
        where[key] = new
    assert plan.counts == {name: list(where.values()).count(name) for name in fractions}
    return where


def a_seed_leaving_empty(fractions: dict[str, float], ks: list[str]) -> int:
    return next(s for s in range(100_000) if len({split_of(k, fractions, s) for k in ks}) < len(fractions))


@pytest.mark.parametrize("fractions, n", [(TWO, 18), (TWO, 2), (THREE, 3), (THREE, 7), (THREE, 30)])
def test_a_seed_that_draws_an_empty_split_still_fills_every_split(fractions: dict[str, float], n: int) -> None:
    ks = keys(n)
    seed = a_seed_leaving_empty(fractions, ks)
    where = plan_of(fractions, ks, seed)
    assert set(where.values()) == set(fractions)
    drawn = {k: split_of(k, fractions, seed) for k in ks}
    moved = [k for k in ks if where[k] != drawn[k]]
    assert len(moved) == len(fractions) - len(set(drawn.values()))  # one image per empty split, no more


def test_the_image_that_moves_is_the_nearest_to_the_empty_interval() -> None:
    ks = keys(18)
    seed = a_seed_leaving_empty(TWO, ks)
    (moved,) = [k for k, split in plan_of(TWO, ks, seed).items() if split == "val"]
    low, _ = intervals(TWO)["val"]
    assert draw_of(moved, seed) == max(draw_of(k, seed) for k in ks) < low


def test_the_plan_does_not_depend_on_the_order_of_the_images() -> None:
    ks = keys(6)
    seed = a_seed_leaving_empty(THREE, ks)
    results = {tuple(sorted(plan_of(THREE, list(order), seed).items())) for order in itertools.permutations(ks)}
    assert len(results) == 1


def test_big_datasets_are_left_as_drawn() -> None:
    ks = keys(2000)
    where = plan_of(THREE, ks, 0)
    assert where == {k: split_of(k, THREE, 0) for k in ks}


def test_too_few_images_are_left_as_drawn_and_zero_fractions_stay_empty() -> None:
    (only,) = keys(1)
    assert plan_of(TWO, [only], 0) == {only: split_of(only, TWO, 0)}
    ks = keys(10)
    where = plan_of({"train": 0.5, "val": 0.5, "test": 0.0}, ks, 0)
    assert "test" not in where.values() and set(where.values()) == {"train", "val"}
