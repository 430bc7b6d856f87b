"""Which layers go: scores + a ratio, a count or an explicit list → a :class:`PrunePlan` with sizes."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import PlanError


@dataclass
class LayerSizes:
    """Parameters and bytes of each decoder layer and of everything else, for before/after figures."""

    layer_params: list[int]
    other_params: int
    bytes_per_param: float

    @property
    def total_params(self) -> int:
        return self.other_params + sum(self.layer_params)


@dataclass
class PrunePlan:
    n_layers: int
    removed: list[int]  # original 0-based indices, ascending
    metric: str = "manual"
    params_before: int = 0
    params_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    #: Of ``bytes_after``, what writing the weights the job changes in another type adds (a 4-bit GGUF writes them
    #: as Q8_0): the plain cut would be this much smaller.
    bytes_reencoded: int = 0
    #: ``bytes_reencoded`` is the most the job can change (the repair not fitted yet: it may leave some alone).
    reencoded_at_most: bool = False
    #: The lowest scores for now: bi+ has still to measure its candidates, and Check or Save may remove other layers
    #: (as many), so the sizes are those of the layers shown, not a bound.
    chosen_later: bool = False
    #: bi+ measured its candidates and chose these layers (``notes`` say how): they may differ from the lowest scores.
    measured: bool = False
    #: A plan given by hand (``metric`` "manual") that a scores file listed (the window's Import): the file. The card
    #: said "picked by hand, after scoring with bi+" of a measured choice the file kept.
    listed_in: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[int]:
        gone = set(self.removed)
        return [i for i in range(self.n_layers) if i not in gone]

    @property
    def ratio(self) -> float:
        return len(self.removed) / self.n_layers if self.n_layers else 0.0


def max_removable(n_layers: int) -> int:
    """At least one layer must stay."""
    return max(n_layers - 1, 0)


def more_than_half(count: int, n_layers: int) -> bool:
    """Whether removing ``count`` layers takes more than half of ``n_layers``: past that a model rarely still answers
    (the command line says so before a prune, the window's plan beside the count)."""
    return 2 * count > n_layers


def check_removable(count: int, n_layers: int) -> None:
    """Refuse removing ``count`` layers where none would stay: "Removing 31 of 30 layers" read as a cut of a
    model with 31, so a count past the model's layers says how many it has."""
    if count > n_layers:
        raise PlanError(f"The model has only {n_layers} layers; remove at most {max_removable(n_layers)}.")
    if count > max_removable(n_layers):
        raise PlanError(f"Removing {count} of {n_layers} layers leaves none; at least one must stay.")


def count_for_ratio(ratio: float, n_layers: int) -> int:
    """Layers to remove for a ratio: rounded down, so never more than the share asked for.

    0.25 of 30 layers is 7 (23%), not 8 (27%). A ratio too small to remove a single layer is refused.
    """
    if not (ratio > 0):
        raise PlanError(f"The ratio must be above 0 (got {ratio}).")
    if ratio >= 1:
        raise PlanError(f"A ratio of {ratio} removes every layer; use a ratio below 1.")
    count = math.floor(ratio * n_layers + 1e-9)
    if count < 1:
        raise PlanError(f"A ratio of {ratio} removes no layer of {n_layers}; use at least "
                        f"{smallest_ratio(n_layers):g}.")
    if count > max_removable(n_layers):
        raise PlanError(f"A ratio of {ratio} removes all {n_layers} layers; at least one must stay.")
    return count


def smallest_ratio(n_layers: int) -> float:
    """The smallest ratio, to three significant digits, that removes one layer of ``n_layers``: 1 / n rounded up
    (rounded to nearest, 1/30 was "use at least 0.0333", a ratio that removes no layer either)."""
    exact = 1 / n_layers
    scale = 10 ** (2 - math.floor(math.log10(exact)))
    return math.ceil(exact * scale - 1e-9) / scale


def is_known(score: float | None) -> bool:
    """A score a layer choice can rank: measured, and not NaN (a pass whose states overflowed)."""
    return score is not None and not math.isnan(score)


#: More decoder layers than any model has (the largest have about 130): a layer list past it is a typo.
MAX_LAYER_INDEX = 100_000


def check_possible(layers: Sequence[int]) -> None:
    """Refuse a layer index no model could have (a typo), before the model's depth is known."""
    too_deep = [i for i in layers if i >= MAX_LAYER_INDEX]
    if too_deep:
        raise PlanError(f"Layer {too_deep[0]} is out of range: no model has that many layers.")


def parse_layer_list(text: str) -> list[int]:
    """``"3,5,9"``, ``"3-5,9"`` or ``"3 5 9"`` → [3, 4, 5, 9]; bad syntax is a :class:`PlanError`. Spaces separate
    too: the sweep's CSV lists a count's layers as ``4 14``, and pasted into --remove they were "not a layer index"."""
    out: list[int] = []
    # a range may have spaces around its dash ("3 - 5"), as before spaces separated layers too
    for part in re.split(r"[,\s]+", re.sub(r"\s*-\s*", "-", text)):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo < 0 or hi < 0:  # "1--2"
                    raise PlanError(f"{part!r}: layers are counted from 0; write a range low to high, like 3-5.")
                if hi < lo:
                    raise PlanError(f"{part!r} runs backwards; write a range low to high, like {hi}-{lo}.")
                check_possible([hi])  # before the range is built in memory (0-9999999999: MemoryError)
                out += list(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise PlanError(f"{part!r} is not a layer index; write 0-based indices like 3,5,9.") from None
    return out


def check_layer_list(layers: Sequence[int], n_layers: int) -> list[int]:
    if not layers:
        raise PlanError("No layers to remove were given.")
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad and bad[0] < 0:
        raise PlanError(f"Layer {bad[0]} is out of range: layers are counted from 0.")
    if bad:
        raise PlanError(f"Layer {bad[0]} is out of range: this model's layers are 0 to {n_layers - 1}.")
    seen: set[int] = set()
    for i in layers:
        if i in seen:
            raise PlanError(f"Layer {i} is listed twice.")
        seen.add(i)
    if len(seen) >= n_layers:
        raise PlanError(f"That removes all {n_layers} layers; at least one must stay.")
    return sorted(seen)


def removal_order(scores: Sequence[float | None]) -> list[int]:
    """Layers from first to last removed: lowest score first, ties the later layer first (as deeper layers are more
    redundant in the paper's findings); unknown scores never go. The quality curve's point k removes the first k."""
    known = [(s, -i) for i, s in enumerate(scores) if is_known(s)]
    return [-neg for _, neg in sorted(known)]


def lowest(scores: Sequence[float | None], count: int) -> list[int]:
    """The ``count`` layers with the lowest score, in layer order: the first ``count`` of :func:`removal_order`."""
    order = removal_order(scores)
    if count > len(order):
        raise PlanError(f"Only {len(order)} layers have scores; cannot remove {count}.")
    return sorted(order[:count])


def best_block(block_scores: Sequence[float | None], size: int) -> list[int]:
    """The contiguous block of ``size`` layers whose start has the lowest angular distance."""
    known = [(s, i) for i, s in enumerate(block_scores) if is_known(s)]
    if not known:
        raise PlanError(f"No block of {size} layers fits this model.")
    _, start = min(known)
    return list(range(start, start + size))


def make_plan(
    n_layers: int,
    scores: Sequence[float | None] | None = None,
    *,
    ratio: float | None = None,
    count: int | None = None,
    layers: Sequence[int] | None = None,
    metric: str = "manual",
    sizes: LayerSizes | None = None,
    block: bool = False,
) -> PrunePlan:
    """A plan from exactly one of ``ratio``, ``count`` or ``layers``; lowest score goes first.

    For a block metric (angular distance) ``scores`` must be those for a block of ``count`` layers and the
    plan removes that best block.
    """
    given = [x is not None for x in (ratio, count, layers)]
    if sum(given) != 1:
        raise PlanError("Give exactly one of a ratio, a number of layers or a list of layers.")
    if layers is not None:
        removed = check_layer_list(list(layers), n_layers)
        metric = "manual"
    else:
        if count is None:
            count = count_for_ratio(float(ratio), n_layers)  # type: ignore[arg-type]
        if count < 1:
            raise PlanError(f"The number of layers to remove must be at least 1 (got {count}).")
        check_removable(count, n_layers)
        if scores is None:
            raise PlanError("Score the layers first, or give an explicit list of layers.")
        removed = best_block(scores, count) if block else lowest(scores, count)
    plan = PrunePlan(n_layers=n_layers, removed=removed, metric=metric)
    if sizes is not None:
        apply_sizes(plan, sizes)
    return plan


def apply_sizes(plan: PrunePlan, sizes: LayerSizes) -> PrunePlan:
    plan.params_before = sizes.total_params
    plan.params_after = sizes.total_params - sum(sizes.layer_params[i] for i in plan.removed)
    plan.bytes_before = int(plan.params_before * sizes.bytes_per_param)
    plan.bytes_after = int(plan.params_after * sizes.bytes_per_param)
    return plan
