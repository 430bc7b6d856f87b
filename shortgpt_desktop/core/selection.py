"""The safer default layer choice ("bi+"): Block Influence candidates, checked by measured perplexity.

Plain BI removes the ``count`` layers with the lowest Block Influence. On some small models BI ranks the last
(or first) layer as nearly redundant although removing it wrecks the model: a layer whose output is almost
parallel to its input can still carry a small shift that the LM head depends on (cosine only sees angles). So
the recipe here never trusts BI alone:

1. **Shortlist.** The ``count + extra`` lowest-BI layers, the first and last layers left out (the paper too
   finds them important).
2. **Greedy refinement** (as SLEB does): remove one layer at a time, each time the shortlisted layer whose
   removal, on top of those already chosen, gives the lowest perplexity on a *subset* of the calibration
   samples. This yields a nested removal order.
3. **Compare** the greedy set with plain BI and BI with the ends protected on the same samples and keep the
   one with the lowest calibration perplexity, so the result is never worse there than plain BI.

Only calibration samples are used: the held-out windows stay for the user's before/after check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .architectures import Family, get_submodule
from .calibration import TokenSet
from .errors import Cancelled, PlanError
from .evaluation import perplexity_of
from .plan import lowest, max_removable
from .surgery import pruned_view

#: ``progress(stage, done, total, partial)``; partial is the list of layers chosen so far.
Progress = Callable[[str, int, int, Any], None]
CancelCheck = Callable[[], bool]

STAGE = "selecting"
#: Calibration samples each perplexity measurement uses (the first ones of the token set).
DEFAULT_EVAL_SAMPLES = 8


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
    shortlist: list[int] = field(default_factory=list)
    protected: list[int] = field(default_factory=list)
    baseline_perplexity: float = math.nan  # calibration subset, nothing removed
    forward_passes: int = 0  # perplexity passes over the calibration subset
    eval_samples: int = 0
    eval_tokens: int = 0  # predicted tokens per pass
    seconds: float = 0.0
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def protected_layers(n_layers: int) -> list[int]:
    """Layers the recipe never shortlists: the first and the last (when enough layers remain to choose from)."""
    if n_layers <= 2:
        return []
    return [0, n_layers - 1]


def shortlist_size(count: int, n_candidates: int) -> int:
    """A few more candidates than layers to remove: ``count + max(2, count // 2)``, capped by what exists."""
    return min(n_candidates, count + max(2, count // 2))


def choose_layers_safely(
    model: Any,
    family: Family,
    token_set: TokenSet,
    count: int,
    bi_scores: Sequence[float | None],
    batch_size: int = 4,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    extra: int | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> SelectionResult:
    """Choose ``count`` layers to remove: BI shortlist, greedy by calibration perplexity, best of three sets.

    ``bi_scores`` are Block Influence scores by layer (lower = removed first), from
    :func:`~shortgpt_desktop.core.scoring.measure_layers`. ``extra`` overrides how many shortlisted layers
    beyond ``count`` the greedy search may pick from. Forward passes: 1 (baseline) + about
    ``count × shortlist`` on ``eval_samples`` calibration samples, each pass on an ever smaller model.
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
        raise PlanError("Score the layers on calibration samples first: there are none.")

    protected = protected_layers(n)
    # Protected layers may still be needed when almost everything goes.
    if count > n - len(protected):
        protected = []
    open_scores = [None if i in protected else s for i, s in enumerate(bi_scores)]
    n_open = sum(1 for s in open_scores if s is not None and not math.isnan(s))
    size = shortlist_size(count, n_open) if extra is None else min(n_open, count + max(0, extra))
    shortlist = lowest(open_scores, size)
    plain = lowest(bi_scores, count)
    ends = lowest(open_scores, count)

    passes = 0
    tokens_per_pass = 0
    measured: dict[tuple[int, ...], float] = {}
    steps = count * size - count * (count - 1) // 2  # greedy passes
    total = 1 + steps + 2

    def report(partial: list[int]) -> None:
        if progress is not None:
            progress(STAGE, min(passes, total), total, list(partial))

    def measure(removed: Sequence[int]) -> float:
        nonlocal passes, tokens_per_pass
        key = tuple(sorted(removed))
        if key in measured:
            return measured[key]
        if cancel is not None and cancel():
            raise Cancelled()
        if key:
            with pruned_view(model, family, key):
                result = perplexity_of(model, samples, token_set.pad_id, batch_size, cancel)
        else:
            result = perplexity_of(model, samples, token_set.pad_id, batch_size, cancel)
        passes += 1
        tokens_per_pass = result.tokens
        measured[key] = result.perplexity
        return result.perplexity

    report([])
    baseline = measure(())
    report([])
    order: list[int] = []
    order_ppl: list[float] = []
    for _ in range(count):
        best_layer, best_ppl = -1, math.inf
        for layer in shortlist:
            if layer in order:
                continue
            ppl = measure([*order, layer])
            report(order)
            # Ties (rare): the lower-BI layer, i.e. the earlier one in the shortlist, wins.
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
    report(order)
    # Stable min: on equal perplexity the earlier (greedy, then ends-protected) candidate is kept.
    best = min(candidates, key=lambda c: c.calibration_perplexity)
    explanation = _explain(best, candidates, count, len(samples), tokens_per_pass)
    return SelectionResult(
        removed=list(best.removed),
        chosen=best.name,
        order=order,
        order_perplexity=order_ppl,
        candidates=candidates,
        shortlist=shortlist,
        protected=protected,
        baseline_perplexity=baseline,
        forward_passes=passes,
        eval_samples=len(samples),
        eval_tokens=tokens_per_pass,
        seconds=time.perf_counter() - started,
        explanation=explanation,
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
