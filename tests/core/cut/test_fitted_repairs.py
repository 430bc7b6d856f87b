"""The job's store of fitted repairs: each removed set gets its own fit, made once, for the settings it was made
under; the oldest go first past the budget."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from shortgpt_desktop.core.cut.fitted_repairs import FittedRepairs


def fit_of(tag: float, values: int = 4) -> SimpleNamespace:
    return SimpleNamespace(tag=tag, tensors={"w": torch.full((values,), tag)})


def test_each_set_gets_its_own_fit_made_once() -> None:
    store = FittedRepairs().bind(("model", "tokens", 4))
    made: list[float] = []

    def fit(tag: float):
        return lambda: made.append(tag) or fit_of(tag)

    assert store.fitted([5, 3], fit(1.0)).tag == 1.0
    assert store.fitted([2, 7], fit(2.0)).tag == 2.0  # another set: its own fit, not the first one's
    assert store.fitted([3, 5], fit(9.0)).tag == 1.0  # the same set in another order: not fitted again
    assert made == [1.0, 2.0] and store.get([7, 2]).tag == 2.0 and store.get([1]) is None


def test_other_settings_drop_the_fits_and_the_oldest_go_past_the_budget() -> None:
    store = FittedRepairs(budget=2 * 4 * 4).bind(("model", "tokens", 4))  # two fits of four float32 values
    store.fitted([1], lambda: fit_of(1.0))
    assert store.bind(("model", "tokens", 4)).get([1]).tag == 1.0  # the same settings keep them
    store.bind(("model", "other tokens", 4))  # fitted on other tokens: never the new job's repair
    assert len(store) == 0 and store.get([1]) is None
    for tag in (1.0, 2.0, 3.0):
        store.fitted([int(tag)], lambda tag=tag: fit_of(tag))
    assert store.get([1]) is None and [store.get([i]).tag for i in (2, 3)] == [2.0, 3.0]
