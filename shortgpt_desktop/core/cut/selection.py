"""The safer default layer choice ("bi+"): Block Influence candidates, checked by measured perplexity.

Plain BI removes the ``count`` layers with the lowest Block Influence. On some small models BI ranks the last
(or first) layer as nearly redundant although removing it wrecks the model: a layer whose output is almost
parallel to its input can still carry a small shift that the LM head depends on (cosine only sees angles). So
the recipe here never trusts BI alone:

1. **Protect the ends.** The first and last layers are left out of the search (the paper too finds them
   important).
2. **Greedy refinement** (as SLEB does, but over a sliding BI window instead of every layer): remove one
   layer at a time; each step measures the ``window`` lowest-BI layers not yet removed and takes the one
   whose removal, on top of those already chosen, gives the lowest perplexity on a *subset* of the
   calibration samples. A layer that BI ranks low but the model needs keeps losing and is never taken. This
   yields a nested removal order.
3. **Compare** the greedy set with plain BI and BI with the ends protected on the same samples and keep the
   one with the lowest calibration perplexity, so the result is never worse there than plain BI.

Only calibration samples are used: the held-out windows stay for the user's before/after check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import Cancelled, PlanError
from ..measure.calibration import TokenSet
from ..measure.evaluation import perplexity_of
from ..measure.sweep import removal_order
from ..model.families import Family, get_submodule
from ..progress import CancelCheck, Progress
from .plan import lowest, max_removable
from .surgery import pruned_view

STAGE = "selecting"
#: Calibration samples each perplexity measurement uses (the first ones of the token set).
DEFAULT_EVAL_SAMPLES = 8
#: Lowest-BI layers each greedy step measures.
DEFAULT_WINDOW = 3


@dataclass
class Candidate:
    """One layer set that was measured."""

    name: str  # "bi", "bi-ends-protected", "greedy"
    removed: list[int]  # ascending
    calibration_perplexity: float


@dataclass
class SelectionResult:
    """What :func:`choose_layers_safely` chose and why, as plain data (safe to hand to the window)."""

    removed: list[int]  # ascending, the set to prune
    chosen: str  # name of the winning candidate
    order: list[int]  # greedy removal order (nested: its first k are the greedy choice for k layers)
    order_perplexity: list[float]  # calibration perplexity after each greedy step
    candidates: list[Candidate] = field(default_factory=list)
    considered: list[int] = field(default_factory=list)  # every layer the greedy steps measured
    protected: list[int] = field(default_factory=list)
    forward_passes: int = 0  # perplexity passes over the calibration subset
    eval_samples: int = 0
    eval_tokens: int = 0  # predicted tokens per pass
    seconds: float = 0.0
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def protected_layers(n_layers: int) -> list[int]:
    """Layers the recipe leaves out of the greedy search: the first and the last (when there are more than 2)."""
    if n_layers <= 2:
        return []
    return [0, n_layers - 1]


def protected_for(scores: Sequence[float | None], count: int) -> list[int]:
    """The ends protected when ``count`` layers go: none when the other scored layers are too few for it."""
    protected = protected_layers(len(scores))
    open_known = sum(s is not None for i, s in enumerate(scores) if i not in protected)
    return protected if open_known >= count else []


def without(scores: Sequence[float | None], protected: Sequence[int]) -> list[float | None]:
    """``scores`` with the ``protected`` layers out of the running (no score)."""
    return [None if i in protected else s for i, s in enumerate(scores)]


def choose_layers_safely(
    model: Any,
    family: Family,
    token_set: TokenSet,
    count: int,
    bi_scores: Sequence[float | None],
    batch_size: int = 4,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    window: int = DEFAULT_WINDOW,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> SelectionResult:
    """Choose ``count`` layers to remove: greedy over a sliding BI window, then the best of three sets.

    ``bi_scores`` are Block Influence scores by layer (lower = removed first), from
    :func:`~shortgpt_desktop.core.measure.scoring.measure_layers`. Each greedy step measures the ``window`` lowest-BI
    layers not yet removed (first and last layer excluded) and removes the one whose removal leaves the lowest
    perplexity on the first ``eval_samples`` calibration samples. At most ``count × window + 1`` passes over
    those samples, each on an ever smaller model.
    """
    started = time.perf_counter()
    n = len(get_submodule(model, family.layers_path))
    if len(bi_scores) != n:
        raise ValueError(f"{len(bi_scores)} scores for {n} layers")
    if count < 1:
        raise PlanError(f"The number of layers to remove must be at least 1 (got {count}).")
    if count > max_removable(n):
        raise PlanError(f"Removing {count} of {n} layers leaves none; at least one must stay.")
    samples = token_set.samples[: max(1, eval_samples)]
    if not samples:
        raise PlanError("There are no calibration samples to measure perplexity on.")
    window = max(1, window)

    protected = protected_for(bi_scores, count)  # almost everything goes: the ends cannot be spared
    open_scores = without(bi_scores, protected)
    open_order = removal_order(open_scores)
    if count > len(open_order):
        raise PlanError(f"Only {len(open_order)} layers have scores; cannot remove {count}.")
    plain = lowest(bi_scores, count)
    ends = lowest(open_scores, count)

    passes = 0
    tokens_per_pass = 0
    measured: dict[tuple[int, ...], float] = {}
    total = count * window + 2  # an upper bound; repeated sets are measured once

    def report(partial: list[int], final: bool = False) -> None:
        if progress is not None:  # the last report is done/done: ``total`` is only an upper bound
            progress(STAGE, passes, passes if final else max(total, passes), list(partial))

    def measure(removed: Sequence[int]) -> float:
        nonlocal passes, tokens_per_pass
        key = tuple(sorted(removed))
        if key in measured:
            return measured[key]
        if cancel is not None and cancel():
            raise Cancelled()
        with pruned_view(model, family, key):
            result = perplexity_of(model, samples, token_set.pad_id, batch_size, cancel)
        passes += 1
        tokens_per_pass = result.tokens
        measured[key] = result.perplexity
        return result.perplexity

    report([])
    order: list[int] = []
    order_ppl: list[float] = []
    considered: list[int] = []
    for _ in range(count):
        trial = [layer for layer in open_order if layer not in order][:window]
        considered += [layer for layer in trial if layer not in considered]
        best_layer, best_ppl = -1, math.inf
        for layer in trial:  # in BI order: on equal perplexity the lower-BI layer wins
            ppl = measure([*order, layer])
            report(order)
            if ppl < best_ppl:
                best_layer, best_ppl = layer, ppl
        order.append(best_layer)
        order_ppl.append(best_ppl)
        report(order)

    greedy = sorted(order)
    candidates = [
        Candidate("greedy", greedy, measure(greedy)),
        Candidate("bi-ends-protected", ends, measure(ends)),
        Candidate("bi", plain, measure(plain)),
    ]
    report(order, final=True)
    # Stable min: on equal perplexity the earlier (greedy, then ends-protected) candidate is kept.
    best = min(candidates, key=lambda c: c.calibration_perplexity)
    return SelectionResult(
        removed=list(best.removed),
        chosen=best.name,
        order=order,
        order_perplexity=order_ppl,
        candidates=candidates,
        considered=considered,
        protected=protected,
        forward_passes=passes,
        eval_samples=len(samples),
        eval_tokens=tokens_per_pass,
        seconds=time.perf_counter() - started,
        explanation=_explain(best, candidates, count, len(samples), tokens_per_pass),
    )


def _explain(best: Candidate, candidates: list[Candidate], count: int, n_samples: int, tokens: int) -> str:
    others = ", ".join(
        f"{c.name} {c.calibration_perplexity:.4g}" for c in candidates if c is not best and c.removed != best.removed
    )
    same = [c.name for c in candidates if c is not best and c.removed == best.removed]
    text = (
        f"Removed {count} layers chosen by {best.name}: calibration perplexity {best.calibration_perplexity:.4g} "
        f"on {n_samples} samples ({tokens} tokens)"
    )
    if same:
        text += f", the same set as {' and '.join(same)}"
    if others:
        text += f"; other candidates: {others}"
    return text + "."
