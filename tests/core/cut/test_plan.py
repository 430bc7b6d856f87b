"""Plans: ratio, count and explicit lists, lowest score first, sizes, and every impossible request."""

from __future__ import annotations

import math
import re

import pytest

from shortgpt_desktop.core.cut.plan import (
    LayerSizes,
    count_for_ratio,
    lowest,
    make_plan,
    parse_layer_list,
    removal_order,
)
from shortgpt_desktop.core.errors import PlanError

SCORES = [0.9, 0.1, 0.5, 0.05, 0.3, 0.2, 0.7, 0.4]


def test_ratio_removes_lowest_scores() -> None:
    plan = make_plan(8, SCORES, ratio=0.25)
    assert plan.removed == [1, 3]
    assert plan.kept == [0, 2, 4, 5, 6, 7]
    assert plan.ratio == 0.25


def test_count_and_sizes() -> None:
    sizes = LayerSizes(layer_params=[10] * 8, other_params=20, bytes_per_param=2)
    plan = make_plan(8, SCORES, count=3, sizes=sizes)
    assert plan.removed == [1, 3, 5]
    assert (plan.params_before, plan.params_after) == (100, 70)
    assert (plan.bytes_before, plan.bytes_after) == (200, 140)
    # Layers of different sizes (a MoE's dense-only layers, Gemma 3n's): each removed layer counts its own.
    uneven = LayerSizes(layer_params=[10, 11, 12, 13, 14, 15, 16, 17], other_params=20, bytes_per_param=2)
    plan = make_plan(8, SCORES, count=3, sizes=uneven)
    assert (plan.params_before, plan.params_after) == (128, 128 - 11 - 13 - 15)


def test_ties_remove_the_deeper_layer_first() -> None:
    assert make_plan(4, [0.1, 0.1, 0.5, 0.6], count=1).removed == [1]


def test_layers_without_a_score_never_go() -> None:
    """A layer not measured (None: a cancelled pass) or whose score is not a number (NaN sorts anywhere) is never
    chosen, and counts as no score when too few layers have one."""
    assert make_plan(4, [0.1, math.nan, 0.2, 0.3], count=1).removed == [0]
    assert make_plan(4, [math.nan, 0.2, None, 0.1], count=2).removed == [1, 3]
    with pytest.raises(PlanError, match="Only 2 layers have scores; cannot remove 3"):
        make_plan(4, [math.nan, 0.2, None, 0.1], count=3)


def test_explicit_list() -> None:
    assert make_plan(8, None, layers=[5, 2]).removed == [2, 5]
    # Layers given by hand are the user's choice, whatever metric scored the model.
    assert make_plan(8, SCORES, layers=[5, 2], metric="bi").metric == "manual"


@pytest.mark.parametrize("ratio", [0, -0.1, 1.0, 0.2])  # 0.2 of 4 is 0.8 layers: none
def test_impossible_ratios(ratio: float) -> None:
    with pytest.raises(PlanError):
        make_plan(4, [0.1, 0.2, 0.3, 0.4], ratio=ratio)


def test_ratio_rounding() -> None:
    assert count_for_ratio(0.25, 30) == 7  # 7.5 rounds down: never more than the share asked for
    assert count_for_ratio(0.28125, 32) == 9  # the paper's 9 of 32
    assert count_for_ratio(0.28, 32) == 8  # 8.96: 9 would be 28.1%, more than asked
    assert count_for_ratio(0.7, 90) == 63  # 0.7 × 90 is 62.99999999999999 in floating point
    with pytest.raises(PlanError, match=r"removes no layer of 30; use at least 0\.0334\.$"):
        count_for_ratio(0.01, 30)
    assert count_for_ratio(0.75, 4) == 3  # all but one may go
    with pytest.raises(PlanError, match="removes all 8 layers; at least one must stay"):
        count_for_ratio(0.9999999999, 8)  # below 1, yet within the rounding's tolerance of every layer


def test_the_smallest_ratio_said_removes_one_layer() -> None:
    """The ratio a refusal suggests is taken: 1 / n rounded to nearest was "use at least 0.0333" for 30 layers, a
    ratio that removes no layer either (66 of the layer counts from 2 to 129)."""
    for n in range(2, 2049):
        said = float(re.search(r"use at least ([\d.e-]+)\.$", _refusal(1 / n / 2, n))[1])
        assert count_for_ratio(said, n) == 1, n
        assert said <= 1.01 / n, n  # three significant digits: not far above the least
    assert _refusal(0.1, 3).endswith("use at least 0.334.") and _refusal(0.1, 8).endswith("use at least 0.125.")


def _refusal(ratio: float, n_layers: int) -> str:
    with pytest.raises(PlanError) as raised:
        count_for_ratio(ratio, n_layers)
    return str(raised.value)


@pytest.mark.parametrize(
    ("layers", "message"),
    [([8], "Layer 8 is out of range: this model's layers are 0 to 7"),
     ([-1], "Layer -1 is out of range: layers are counted from 0"), ([2, 2], "twice"), (list(range(8)), "all 8")],
)
def test_bad_layer_lists(layers: list[int], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        make_plan(8, None, layers=layers)


def test_exactly_one_choice() -> None:
    with pytest.raises(PlanError, match="exactly one"):
        make_plan(8, SCORES, ratio=0.2, count=2)
    with pytest.raises(PlanError, match="exactly one"):
        make_plan(8, SCORES)


def test_count_that_leaves_nothing() -> None:
    with pytest.raises(PlanError, match="at least one must stay"):
        make_plan(4, [0.1, 0.2, 0.3, 0.4], count=4)


def test_the_removal_order_is_the_order_plan_picks_layers_in() -> None:
    """Lowest score first, ties the later layer first, unknown scores never: point k removes what a plan of k
    layers removes."""
    scores = [0.5, 0.1, 0.3, 0.1, 0.9, 0.2]
    order = removal_order([*scores, None, math.nan])
    assert order == [3, 1, 5, 2, 0, 4]
    for k in range(1, 6):
        assert sorted(order[:k]) == lowest(scores, k)


def test_block_plan_takes_the_best_block() -> None:
    plan = make_plan(6, [0.5, 0.2, 0.3, None, None, None], count=3, block=True)
    assert plan.removed == [1, 2, 3]
    # A NaN block (states that overflowed) is no score: min() of it first kept it, as NaN compares false.
    assert make_plan(6, [math.nan, 0.2, 0.3, None, None, None], count=3, block=True).removed == [1, 2, 3]


def test_parse_layer_list() -> None:
    assert parse_layer_list("3,5,9") == [3, 5, 9]
    assert parse_layer_list("2-4, 7") == [2, 3, 4, 7]
    assert parse_layer_list("4 14") == [4, 14] and parse_layer_list(" 2-3  9 ") == [2, 3, 9]  # as the sweep's CSV
    assert parse_layer_list("3 - 5") == parse_layer_list("3- 5") == [3, 4, 5]  # spaces around a range's dash
    assert parse_layer_list("3 -5, 9") == [3, 4, 5, 9] and parse_layer_list("3, -1") == [3, -1]
    # A one-layer range is that layer; a negative index is kept for the plan to refuse as counted from 0.
    assert parse_layer_list("3-3,-1") == [3, -1]
    with pytest.raises(PlanError, match="not a layer index"):
        parse_layer_list("3,x")
    with pytest.raises(PlanError, match="'3-1' runs backwards; write a range low to high, like 1-3"):
        parse_layer_list("3-1")  # it was an empty range, and 'No layers to remove were given.'


def test_a_layer_list_no_model_could_have_is_refused_before_it_is_built() -> None:
    """``--remove=0-9999999999`` built the whole range in memory first (MemoryError, or minutes of swapping);
    ``1--2`` was told to write ``-2-1``."""
    with pytest.raises(PlanError, match="Layer 9999999999 is out of range: no model has that many layers"):
        parse_layer_list("0-9999999999")
    with pytest.raises(PlanError, match="'1--2': layers are counted from 0"):
        parse_layer_list("1--2")
