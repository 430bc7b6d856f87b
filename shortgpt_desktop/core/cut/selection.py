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
3. **Compare** the greedy set with plain BI, BI with the ends protected and the single-removal order on the
   same samples and keep the one with the lowest calibration perplexity, so the result is never worse there
   than plain BI.
4. **Judged as saved** (``judge_repaired``, what the engine asks when the job repairs): each distinct finalist is
   repaired (the map fitted on the first ``2 × eval_samples`` calibration samples) and measured again, and the
   lowest *repaired* perplexity wins. The repair changes which set is best: on Gemma 3 270M (18 layers, 4 removed,
   calibrated on prose, judged on Python code) the greedy set is far ahead unrepaired (146 vs 335 on calibration)
   but behind once both are repaired (74.9 vs 73.7), and the repaired ranking is the held-out one on prose (342 vs
   305) and on code (59.7 vs 55.5), for all four finalists.
5. **Still answers** (``probe``, for a model with a chat template: :mod:`.answer_probe`): the finalists are asked in
   the order of the figure above, each with the repair the saved model will get (fitted on every calibration
   sample: ``repair_for``), until one answers every chat prompt the original answers; that one wins. The quick
   fit of step 4 cannot stand in for it: on SmolLM2-135M (8 of 30, 128 × 512 tokens of WikiText-2, repaired on
   the prose alone) the greedy set fell silent on 2 of 6 prompts with the quick fit and on 5 with the full one, and
   the ends-protected set on 2 and on 0. (The saved repair of a chat model now also fits the original's own
   answers, :mod:`.own_answers`, and the greedy set then answers all six.) The full fit of the winner is the
   one the job then saves, so when the first finalist asked answers, the check costs one probe pass and no
   extra fit.

Only calibration samples are used: the held-out windows stay for the user's before/after check.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ...format import counted
from .. import defaults
from ..backends.layerwise import LayerStack, head_layers
from ..errors import PlanError, ResourceError
from ..measure.calibration import TokenSet
from ..progress import CancelCheck, Progress
from .answer_probe import AnswerProbe
from .candidates import CandidateRunner, head_stride
from .plan import check_removable, is_known, lowest, removal_order
from .repair import OriginalStates

STAGE = "selecting"
#: ``repair_for(removed, progress)`` → the repair (:class:`.repair.RepairResult`) the saved model gets for
#: ``removed``; the engine's keeps each fit, so the job saves the very repair its probe asked.
RepairFor = Callable[[Sequence[int], Progress | None], Any]


@dataclass(frozen=True)
class FitCost:
    """What one fit of the saved repair costs, in token-layers, as the job's estimate counts it (the engine's, from
    :mod:`..estimate`): ``fit(count)`` for ``count`` layers removed (the pruned stream over the fit's tokens, a chat
    model's own answers among them, the float64 sums and the ridge solves), ``original`` the original's stream over
    the same tokens, which the first fit runs and the later ones share (:class:`.repair.OriginalStates`). Counted
    as two passes over the samples, SmolLM2's first fit at 8 × 128 (its sums and solves, 2,174 tokens with the chat
    answers) took about 45 passes' time, and the bar went from 70/83 back to 95/233 once it was timed."""

    fit: Callable[[int], float]
    original: float
#: The least judging one finalist repaired counts for on the progress bar, in candidate passes. Before one is
#: judged it counts for :func:`judging_layers` against :func:`candidate_layers`; then for the passes the judgings
#: really took (Gemma 3 270M, whose repair is fitted through a norm by gradient steps and whose head, run at every
#: position here, weighs 30 layers: about 13; at a count of 2 its bar stood still for two minutes at "35/48").
JUDGING_PASSES = 2
#: What asking one finalist whether it still answers counts for on the bar: a pass over the chat prompts. Counted
#: so that the bar is not full while the answer check runs, or before it asks a further finalist.
PROBE_PASSES = 1
#: What the quick fits that rank the finalists change (:data:`.repair.FITS`): the d × d map, not the whole projection
#: the saved repair refits. Judged on samples inside their own fit, the projection's far more parameters (SmolLM2:
#: 1,536 × 576 against 576 × 576 per run) would flatter a set cut into more runs; the map's ranking is the one
#: measured against held-out text (the module docstring, step 4), and its sums cost a third as much. On SmolLM2
#: (8 of 30, ``benchmarks/bench_quality.py``) both rankings chose the same set.
JUDGING_FIT = "map"


def judged_with_the_saved_fit(samples: int, subset: int | None = None) -> bool:
    """Whether bi+ judges its finalists with the very fit the job saves (so the job's repair is made while choosing):
    where the ``subset`` of samples the search measures on (default: the first :data:`..defaults.SELECTION_SAMPLES`)
    is at least half the ``samples``, the quick fit is fitted on all of them."""
    subset = min(defaults.SELECTION_SAMPLES, samples) if subset is None else subset
    return 2 * subset >= samples


def judging_layers(n_layers: int, count: int, head: float) -> float:
    """Layer runs per token of the search's samples that judging one finalist repaired costs: the quick fit's
    pruned stream over twice the samples, the original's (run once and shared by the finalists; counted as
    ``n_layers`` for each, more than its share) and the repaired measurement with the head (``head`` layers'
    worth) at every position."""
    return 3 * (n_layers - count) + n_layers + head


def candidate_layers(n_layers: int, head: float, stride: int, removed: int = 0) -> float:
    """Layer runs per token of one candidate pass: from where it differs (about half the layers it keeps: a greedy
    step with ``removed`` layers chosen already runs fewer; counted whole, SmolLM2's choice of 18 of 30 was said at
    1.5 times its time) and the head at every ``stride``-th position."""
    return (n_layers - removed) / 2 + head / max(stride, 1)


@dataclass
class Candidate:
    """One layer set that was measured."""

    name: str  # "bi", "bi-ends-protected", "greedy", "single-removal"
    removed: list[int]  # ascending
    calibration_perplexity: float
    repaired_perplexity: float | None = None  # the same samples with the set's repair in (when judged so)
    silent: int | None = None  # chat prompts it no longer answers (see .answer_probe); None: not asked

    @property
    def judged(self) -> float:
        """The figure the choice compares: the repaired perplexity when measured, else the plain one."""
        return self.calibration_perplexity if self.repaired_perplexity is None else self.repaired_perplexity


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
    single_removal: list[float | None] = field(default_factory=list)  # calibration ppl with each layer alone gone
    forward_passes: int = 0  # perplexity passes over the calibration subset (this search's: not an earlier one's)
    eval_samples: int = 0
    eval_tokens: int = 0  # predicted tokens per pass
    judged_repaired: bool = False  # the finalists were compared repaired (see the module docstring, step 4)
    seconds: float = 0.0
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchMemo:
    """What bi+'s searches measured, kept for the next search on the same model, samples, batch size and recipe:
    each set's calibration perplexity, plain and judged repaired, and how many chat prompts it falls silent on.

    A Save at 8 layers after a Check at 7 ran the whole search again (113 passes, about 10 minutes of SmolLM2 on a
    CPU): the single-removal sweep and the first 7 greedy steps measure exactly the sets the search for 7 measured
    (its order is nested), so their figures are taken from here and only what is new is run. The owner (the engine)
    drops it when any of those change."""

    measured: dict[tuple[int, ...], float] = field(default_factory=dict)
    repaired: dict[tuple[int, ...], float] = field(default_factory=dict)
    silent: dict[tuple[int, ...], int] = field(default_factory=dict)
    #: Next tokens each measurement scores (a search that measures nothing new said "(0 tokens)").
    tokens: int = 0
    #: The longest greedy order run for each group of protected layers: a search for another count takes its steps
    #: (the order is nested), so the estimate before it counts only the steps past them (:meth:`still_to_run`).
    orders: dict[tuple[int, ...], list[int]] = field(default_factory=dict)

    def still_to_run(self, bi_scores: Sequence[float | None], count: int) -> tuple[bool, int]:
        """What a search for ``count`` layers on these scores would still measure: (the single removals, the
        greedy steps); the finalists are not counted off, since another count's are mostly other sets. The time
        printed before a Save at 8 after a Check at 7 counted the whole search (about 10 min) for a job of 1.7."""
        singles = any((i,) not in self.measured for i, v in enumerate(bi_scores) if is_known(v))
        steps = len(self.orders.get(tuple(protected_for(bi_scores, count)), []))
        return singles, max(0, count - steps)


def protected_layers(n_layers: int) -> list[int]:
    """Layers the recipe leaves out of the greedy search: the first and the last (when there are more than 2)."""
    if n_layers <= 2:
        return []
    return [0, n_layers - 1]


def protected_for(scores: Sequence[float | None], count: int) -> list[int]:
    """The ends protected when ``count`` layers go: none when the other scored layers are too few for it."""
    protected = protected_layers(len(scores))
    open_known = sum(is_known(s) for i, s in enumerate(scores) if i not in protected)
    return protected if open_known >= count else []


def finalists_to_judge(bi_scores: Sequence[float | None] | None, count: int) -> int:
    """How many distinct sets bi+'s finalists for ``count`` come to, as far as the scores tell: the greedy and the
    single-removal sets, and plain BI's lowest, which is the ends-protected lowest unless it takes an end (SmolLM2:
    three sets fitted, where four were counted and the choice was said at 1.3 of its time). Without scores, the
    common case: BI's lowest rarely takes an end."""
    if bi_scores is None:
        return 3
    try:
        plain = lowest(bi_scores, count)
        protected = ends_protected_lowest(bi_scores, count)
    except PlanError:
        return 4
    return 3 if plain == protected else 4


def ends_protected_lowest(scores: Sequence[float | None], count: int) -> list[int]:
    """The ``count`` lowest-scored layers with the ends protected (:func:`protected_for`): bi+'s ranking without its
    measurement, one of its finalists, and what its fits are estimated for before it chooses."""
    return lowest(without(scores, protected_for(scores, count)), count)


def without(scores: Sequence[float | None], protected: Sequence[int]) -> list[float | None]:
    """``scores`` with the ``protected`` layers out of the running (no score)."""
    return [None if i in protected else s for i, s in enumerate(scores)]


def choose_layers_safely(
    stack: LayerStack,
    token_set: TokenSet,
    count: int,
    bi_scores: Sequence[float | None],
    batch_size: int = 4,
    eval_samples: int = defaults.SELECTION_SAMPLES,
    window: int = defaults.SELECTION_WINDOW,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    cached: bool = True,
    wider: bool = True,
    judge_repaired: bool = False,
    probe: AnswerProbe | None = None,
    repair_for: RepairFor | None = None,
    memo: SearchMemo | None = None,
    fit_cost: FitCost | None = None,
) -> SelectionResult:
    """Choose ``count`` layers to remove: greedy over a sliding BI window, then the best of three sets.

    ``bi_scores`` are Block Influence scores by layer (lower = removed first). Each greedy step measures the
    ``window`` lowest-BI layers not yet removed (first and last layer excluded) and removes the one whose removal
    leaves the lowest perplexity on the first ``eval_samples`` calibration samples. At most ``count × window + 2``
    measurements, each from the cached states of the layers chosen so far (:mod:`.candidates`; ``cached=False``
    runs each from the first layer, with the same numbers).
    """
    return choose_for_counts(stack, token_set, [count], bi_scores, batch_size, eval_samples, window, progress,
                             cancel, cached, wider, judge_repaired=judge_repaired, probe=probe,
                             repair_for=repair_for, memo=memo, fit_cost=fit_cost)[count]


def choose_for_counts(
    stack: LayerStack,
    token_set: TokenSet,
    counts: Sequence[int],
    bi_scores: Sequence[float | None],
    batch_size: int = 4,
    eval_samples: int = defaults.SELECTION_SAMPLES,
    window: int = defaults.SELECTION_WINDOW,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    cached: bool = True,
    wider: bool = True,
    stride: int | None = None,
    judge_repaired: bool = False,
    probe: AnswerProbe | None = None,
    repair_for: RepairFor | None = None,
    memo: SearchMemo | None = None,
    fit_cost: FitCost | None = None,
) -> dict[int, SelectionResult]:
    """:func:`choose_layers_safely` for several counts from one greedy search (its order is nested: the choice
    for k layers extends the choice for k − 1), so the quality curve costs one search, not one per point.
    ``memo``: the figures of earlier searches with the same samples, batch size and recipe (:class:`SearchMemo`),
    taken instead of measuring a set again, and this search's added to it. ``fit_cost``: what a fit of the saved
    repair costs, for the progress bar (:class:`FitCost`; without it a fit counts as two passes over the samples
    until one is timed)."""
    started = time.perf_counter()
    n = stack.n_layers
    if len(bi_scores) != n:
        raise ValueError(f"{len(bi_scores)} scores for {n} layers")
    for count in counts:
        if count < 1:
            raise PlanError(f"The number of layers to remove must be at least 1 (got {count}).")
        check_removable(count, n)
    samples = token_set.samples[: max(1, eval_samples)]
    if not samples:
        raise PlanError("There are no calibration samples to measure perplexity on.")
    window = max(1, window)
    most = max(counts)
    groups: dict[tuple[int, ...], list[int]] = {}  # the ends protected for a count depend on the count
    for count in sorted(set(counts)):
        groups.setdefault(tuple(protected_for(bi_scores, count)), []).append(count)
    runner = CandidateRunner(stack, samples, token_set.pad_id, batch_size, cancel, cached,
                             stride=head_stride(stack) if stride is None else stride)
    memo = memo if memo is not None else SearchMemo()
    measured, repaired_cache, silent_cache = memo.measured, memo.repaired, memo.silent
    original = OriginalStates()  # the original's states on the judging fits' samples, shared by every fit
    known = [i for i, v in enumerate(bi_scores) if v is not None]
    per_step = 2 * window if wider else window
    finalists = 4 if wider else 3
    finalist_sets = sum(finalists * len(g) for g in groups.values())  # measured plain, then judged repaired
    bar = _SelectionBar.for_search(
        progress, runner, head=head_layers(stack), most=most, finalist_sets=finalist_sets,
        search_sets=(len(known) if wider else 0) + sum(max(g) * per_step for g in groups.values()) + finalist_sets,
        n_counts=len(counts), n_samples=len(samples), calibration_samples=len(token_set.samples),
        judge_repaired=judge_repaired, probing=probe is not None,
        fit_in_passes=_fit_in_passes(fit_cost, most, sum(map(len, samples)) * candidate_layers(
            n, head_layers(stack), runner.stride)))

    fit = repair_for if repair_for is not None else functools.partial(
        _fit_saved_repair, stack, token_set, batch_size=batch_size, cancel=cancel)

    def saved_fit(partial: list[int]) -> Callable[[Sequence[int]], Any]:
        """``fit(removed)``: the repair the saved model gets for ``removed``, its fit on the selection's bar."""
        return functools.partial(bar.run_fit, fit, partial=partial)

    def saved_weights(removed: Sequence[int], partial: list[int]) -> dict[str, Any] | None:
        """The weights the saved model gets for ``removed`` (None when the job does not repair)."""
        return saved_fit(partial)(removed).tensors if judge_repaired else None

    def measure_all(sets: Sequence[Sequence[int]], order_so_far: list[int], counted: int,
                    keep_states: bool = True) -> list[float]:
        """Each set's perplexity, measuring only those not measured yet (``counted``: the passes the bar's total
        holds for this call; ``keep_states``: :meth:`.candidates.CandidateRunner.measure`'s)."""
        keys = [tuple(sorted(s)) for s in sets]
        new = [k for k in dict.fromkeys(keys) if k not in measured]
        bar.skip(counted - len(new))
        if new:
            # The base moves only when something is measured from it: a greedy step whose sets are all known (an
            # earlier search's) costs no refill of the cache.
            runner.rebase(order_so_far)
            began = time.perf_counter()
            results = runner.measure(new, lambda _: bar.measured_one(order_so_far),
                                     during=bar.swept(len(new), order_so_far), keep_states=keep_states)
            bar.searched(time.perf_counter() - began)
            measured.update({k: r.perplexity for k, r in zip(new, results, strict=True)})
            memo.tokens = runner.tokens
        return [measured[k] for k in keys]

    bar.report([])
    # The paper's own baseline: each layer's removal alone, measured (one layer-major sweep from the cache).
    single: list[float | None] = [None] * n
    if wider:
        # its states are not kept: the memory estimate counts a greedy step's, and a rebase runs the one it needs
        for layer, ppl in zip(known, measure_all([[i] for i in known], [], len(known), keep_states=False),
                              strict=True):
            single[layer] = ppl
    out: dict[int, SelectionResult] = {}
    for protected_key, group in groups.items():
        protected = list(protected_key)
        open_scores = without(bi_scores, protected)
        open_order = removal_order(open_scores)
        single_order = removal_order(without(single, protected)) if wider else []
        if max(group) > len(open_order):
            raise PlanError(f"Only {len(open_order)} layers have scores; cannot remove {max(group)}.")
        order: list[int] = []
        order_ppl: list[float] = []
        considered: list[int] = []
        considered_after: list[list[int]] = []  # every layer the first k steps measured, for each k
        for _ in range(max(group)):
            trial = [layer for layer in open_order if layer not in order][:window]
            trial += [layer for layer in single_order if layer not in order and layer not in trial][:window]
            considered += [layer for layer in trial if layer not in considered]
            ppls = measure_all([[*order, layer] for layer in trial], order, per_step)
            finite = [(ppl, rank) for rank, ppl in enumerate(ppls) if not math.isnan(ppl)]
            if not finite:
                raise ResourceError(_NAN)
            best_ppl, rank = min(finite)  # in BI order: on equal perplexity the lower-BI layer wins
            order.append(trial[rank])
            order_ppl.append(best_ppl)
            if len(order) > len(memo.orders.get(protected_key, [])):
                memo.orders[protected_key] = list(order)
            considered_after.append(list(considered))
            bar.report(order)
        for count in group:
            sets: tuple[list[int], ...] = (sorted(order[:count]), lowest(open_scores, count), lowest(bi_scores, count))
            names: tuple[str, ...] = ("greedy", "bi-ends-protected", "bi")
            if wider:
                sets += (sorted(single_order[:count]),)
                names += ("single-removal",)
            candidates = [Candidate(name, list(chosen), ppl)
                          for name, chosen, ppl in zip(names, sets, measure_all(sets, order, finalists), strict=True)]
            if judge_repaired:
                _judge_repaired(stack, token_set, samples, candidates, batch_size, cancel, repaired_cache,
                                bar.judged_counter(order), saved_fit(order), original,
                                on_known=functools.partial(bar.known_judged, order))
            finite_candidates = [c for c in candidates if not math.isnan(c.judged)]
            if not finite_candidates:
                raise ResourceError(_NAN)
            if probe is not None:
                _ask_until_one_answers(probe, stack, finite_candidates, silent_cache, cancel,
                                       functools.partial(saved_weights, partial=order),
                                       functools.partial(bar.asking, order), bar.asked_one)
            # A finalist that falls silent on fewer prompts wins first (an instruct model that no longer answers
            # is broken whatever its perplexity), then the lower perplexity; finalists never asked (None) come
            # after the first that answers, so they are never better on the perplexity. Stable min: on equal
            # figures the earlier (greedy, then ends-protected) candidate is kept.
            best = min(finite_candidates, key=lambda c: (c.silent or 0, c.judged))
            out[count] = SelectionResult(
                removed=list(best.removed), chosen=best.name, order=order[:count],
                order_perplexity=order_ppl[:count], candidates=candidates,
                considered=considered_after[count - 1],
                protected=protected, forward_passes=runner.passes, eval_samples=len(samples),
                single_removal=list(single),
                eval_tokens=memo.tokens, judged_repaired=judge_repaired, seconds=time.perf_counter() - started,
                explanation=_explain(best, candidates, count, len(samples), memo.tokens, runner.stride),
            )
    bar.report(out[most].order, final=True)
    return out


def _fit_in_passes(cost: FitCost | None, count: int, pass_layers: float) -> tuple[float, float] | None:
    """A fit of the saved repair for ``count`` and the original's stream the first fit runs, in candidate passes of
    ``pass_layers`` token-layers each (None: not known)."""
    if cost is None or pass_layers <= 0:
        return None
    return max(1.0, cost.fit(count) / pass_layers), cost.original / pass_layers


class _SelectionBar:
    """The progress bar of one search (:func:`choose_for_counts`), in candidate passes' worth.

    ``total`` counts every set as new, each judging of a finalist repaired at :attr:`judge_weight` passes, each
    full fit of the saved repair at :attr:`full_fit`, and the first answer check per count; a set measured or
    judged already is not run again, and its passes leave the total as soon as that is known (the time left would
    otherwise count passes never run). What is done is the runner's passes, the judgings, the answer checks, the
    full fits (moved by their own progress) and the layer-major sweep under way; it never goes back, and the last
    report is done/done.
    """

    def __init__(self, progress: Progress | None, runner: CandidateRunner, total: float, full_fit: float,
                 judge_weight: float, saved_when_judged: bool, to_judge: int, fits_counted: int,
                 probes_counted: int, original: float = 0.0) -> None:
        self.progress = progress
        self.runner = runner
        self.total = total
        self.full_fit = full_fit  # the saved repair's fit: both streams over every calibration sample
        self.judge_weight = judge_weight  # passes a judging counts for: the shape's, then the timed judgings'
        self.saved_when_judged = saved_when_judged  # the quick fit is the saved one (every calibration sample)
        self.to_judge = to_judge  # the judgings ``total`` holds that are still to run
        self.fits_counted = fits_counted  # the full fits ``total`` holds
        self.probes_counted = probes_counted  # the asks ``total`` holds: the first one per count
        #: the original's stream the first fit runs (the later ones share it), in passes, while ``total`` holds it
        self.original = original
        self.asked = 0  # finalists asked whether they still answer so far
        self.judged_work = 0.0  # passes' worth of judging done
        self.search_seconds = 0.0  # what the runner's passes took, to measure a judging in passes
        self.judge_started: float | None = None  # when the judging under way began
        self.judge_passes: list[float] = []  # each judging's seconds, in the runner's seconds per pass
        self.fit_passes: list[float] = []  # each full fit's seconds (one that ran), in the runner's seconds per pass
        self.fitting = 0.0  # passes' worth of full fits done
        self.sweeping = 0.0  # passes' worth of the layer-major sweep under way (its sets are counted when measured)
        self.reported = 0  # the bar never goes back

    @classmethod
    def for_search(cls, progress: Progress | None, runner: CandidateRunner, *, head: float, most: int,
                   search_sets: int, finalist_sets: int, n_counts: int, n_samples: int, calibration_samples: int,
                   judge_repaired: bool, probing: bool,
                   fit_in_passes: tuple[float, float] | None = None) -> _SelectionBar:
        """A bar for a search that measures ``search_sets`` sets (the single removals, the greedy steps' and the
        finalists', ``finalist_sets`` of them), on ``n_samples`` of the ``calibration_samples``, for ``n_counts``
        counts up to ``most``; ``head``: the head's cost in layers; ``judge_repaired``: the finalists are judged
        repaired; ``probing``: each count's best finalist is asked whether it still answers; ``fit_in_passes``: a
        fit of the saved repair and the original's stream the first one runs, in passes (:func:`_fit_in_passes`;
        None: a fit counts as both streams over every calibration sample)."""
        n = runner.n
        full_fit, original = fit_in_passes or (float(2 * math.ceil(calibration_samples / n_samples)), 0.0)
        saved_when_judged = judge_repaired and judged_with_the_saved_fit(calibration_samples, n_samples)
        judge_weight = float(JUDGING_PASSES) if saved_when_judged else max(
            float(JUDGING_PASSES), judging_layers(n, most, head) / candidate_layers(n, head, runner.stride))
        # A judging that is the saved fit counts its measurement here and its full fit as such (its own progress
        # moves the bar).
        judging = judge_weight + (full_fit if saved_when_judged else 0)
        total = float(search_sets)
        fits_counted = finalist_sets if saved_when_judged else 0
        if judge_repaired:
            total += judging * finalist_sets
        if probing and judge_repaired:  # the first finalist the probe asks gets the saved repair's fit
            total += full_fit * n_counts
            fits_counted += n_counts
        probes_counted = n_counts if probing else 0
        total += PROBE_PASSES * probes_counted
        if not fits_counted:
            original = 0.0  # no fit counted: none runs the original's stream within the bar's count
        total += original
        return cls(progress, runner, total, full_fit, judge_weight, saved_when_judged,
                   finalist_sets if judge_repaired else 0, fits_counted, probes_counted, original)

    def skip(self, passes: float) -> None:
        """``passes`` the total counted will not run (sets measured or judged before)."""
        self.total -= passes

    def report(self, partial: list[int], final: bool = False) -> None:
        """Tell the progress callback what is done of the total (``partial``: the greedy order so far)."""
        if self.progress is None:
            return
        done = max(self.reported, self.runner.passes + int(self.judged_work) + PROBE_PASSES * self.asked
                   + int(self.fitting) + int(self.sweeping))
        self.reported = done
        # the last report is done/done: ``total`` may still count a skipped pass
        self.progress(STAGE, done, done if final else max(math.ceil(self.total - 1e-6), done), list(partial))

    def swept(self, count: int, partial: list[int]) -> Callable[[float], None]:
        """``during(fraction)`` for a layer-major sweep of ``count`` sets."""
        def during(fraction: float) -> None:
            self.sweeping = count * fraction * 0.9  # the head, after the sweep, takes the rest
            self.report(partial)

        return during

    def measured_one(self, partial: list[int]) -> None:
        """A set of the sweep measured: the sets now count as passes; the bar holds until they pass the sweep's
        mark."""
        self.sweeping = 0.0
        self.report(partial)

    def searched(self, seconds: float) -> None:
        """What a measurement of candidate sets took: a judging is timed in the runner's seconds per pass."""
        self.search_seconds += seconds

    def fitting_progress(self, partial: list[int], span: float | None = None) -> Progress:
        """The progress a full fit reports (layer runs of the repair), as passes on the selection's bar (``span``
        of them; default: a fit's)."""
        base = self.fitting
        span = self.full_fit if span is None else span

        def on_fit(stage: str, done: int, of: int, _: Any = None) -> None:
            if stage != "repair":  # only the fit's own count moves this bar
                return
            self.fitting = base + span * done / max(of, 1)
            self.report(partial)

        return on_fit

    def run_fit(self, fit: Callable[[Sequence[int], Progress], Any], removed: Sequence[int],
                partial: list[int]) -> Any:
        """``fit(removed, progress)``, the saved repair's full fit, on the bar."""
        if self.fits_counted > 0:
            self.fits_counted -= 1
        else:  # the probe asks a further finalist: its fit was not counted
            self.total += self.full_fit
        started_at = self.fitting
        started: list[float] = []  # when the fit itself began: its first report (a fit kept from before makes none)
        # the first fit also runs the original's stream (counted once): its bar spans both
        original, self.original = self.original, 0.0
        span = self.full_fit + original
        on_fit = self.fitting_progress(partial, span)

        def progress(stage: str, done: int, of: int, partial_value: Any = None) -> None:
            if not started:  # not before: the first fit also writes a chat model's own answers (26 s on SmolLM2)
                started.append(time.perf_counter())
            on_fit(stage, done, of, partial_value)

        result = fit(removed, progress)
        self.fitting = started_at + span
        if started:
            self._timed_fit((time.perf_counter() - started[0]) * (span - original) / span)
        return result

    def _timed_fit(self, seconds: float) -> None:
        """A full fit ran for ``seconds``: the fits still counted count for what the fits took, in the runner's
        seconds per pass (the mean of those after the first, which also ran the original's states the others
        share), as judgings do. Counted as two passes each, SmolLM2's fits on its samples and chat answers took
        about 18 passes' time each, and the bar said "about 36.7 s left" with 121 s to go. The first fit's seconds
        come without the share the original's stream was counted for, where the fit's cost is known."""
        runner = self.runner
        if not runner.passes or self.search_seconds <= 0:
            return
        self.fit_passes.append(seconds / (self.search_seconds / runner.passes))
        later = self.fit_passes[1:] or self.fit_passes
        weight = max(1.0, sum(later) / len(later))
        self.total += (weight - self.full_fit) * self.fits_counted
        self.full_fit = weight

    def known_judged(self, partial: list[int]) -> None:
        """A finalist judged before: its passes are not run. Its full fit leaves the total only while the counted
        fits last (a further finalist the probe asked may have run in its place)."""
        self.skip(self.judge_weight)
        self.to_judge -= 1
        if self.saved_when_judged and self.fits_counted > 0:
            self.fits_counted -= 1
            self.skip(self.full_fit)
            if not self.fits_counted:  # no counted fit left to run the original's stream
                self.skip(self.original)
                self.original = 0.0
        self.report(partial)

    def asking(self, partial: list[int]) -> None:
        """A finalist is about to be asked: a further one (beyond the first per count) joins the total first, so
        the bar never shows the answer check done while it still asks."""
        if self.probes_counted > 0:
            self.probes_counted -= 1
        else:
            self.total += PROBE_PASSES
        self.report(partial)

    def asked_one(self) -> None:  # reported with what comes next: the next finalist's total, or the end
        self.asked += 1

    def judged_counter(self, partial: list[int]) -> Callable[[], None]:
        """``on_judged`` for :func:`_judge_repaired`: each finalist judged moves the bar by what a judging counts
        for. Each is timed in the runner's seconds per pass, and from the first on a judging counts for the mean
        of those after the first where there are some (the first also runs the original's states the others
        share), else the first's; the total grows or shrinks by the difference for it and those still to judge,
        so the bar's share done may drop where a judging costs more than counted. A judging that is the saved fit
        keeps its count: the fit's own progress moves the bar."""
        self.judge_started = time.perf_counter()

        def judged_one() -> None:
            now = time.perf_counter()
            runner = self.runner
            if (self.judge_started is not None and not self.saved_when_judged and runner.passes
                    and self.search_seconds > 0):
                self.judge_passes.append((now - self.judge_started) / (self.search_seconds / runner.passes))
                later = self.judge_passes[1:] or self.judge_passes
                weight = max(float(JUDGING_PASSES), sum(later) / len(later))
                self.total += (weight - self.judge_weight) * self.to_judge
                self.judge_weight = weight
            self.judge_started = now  # the next finalist's judging starts now
            self.to_judge -= 1
            self.judged_work += self.judge_weight
            self.report(partial)

        return judged_one


def _judge_repaired(stack: LayerStack, token_set: TokenSet, samples: Sequence[Sequence[int]],
                    candidates: Sequence[Candidate], batch_size: int, cancel: CancelCheck | None,
                    cache: dict[tuple[int, ...], float], on_judged: Callable[[], None] = lambda: None,
                    saved_fit: Callable[[Sequence[int]], Any] | None = None,
                    original: OriginalStates | None = None, on_known: Callable[[], None] = lambda: None) -> None:
    """Give each candidate its repaired perplexity on ``samples``: the map fitted on twice as many calibration
    samples (those first), folded in, the pruned model measured again. Sets already judged are not refitted;
    ``on_judged`` is called after each new one (the progress bar's step), ``on_known`` for each set judged
    before (its passes are not run). When those are every calibration
    sample, the quick fit is the saved one: ``saved_fit`` makes it (kept for the job to save). ``original`` keeps
    the original's states on those samples from one fit to the next (the same numbers, run once). At bi+'s sizes
    (2 × 8 samples) the quick fit is too small to hold samples out, so it fits with the fixed ridge, and it fits
    the map (:data:`JUDGING_FIT`); the saved fit refits the whole projection and chooses its own ridge per run
    (:func:`.repair.choose_ridge`): the judging ranks the finalists, the answer check and the saved model use the
    saved fit."""
    import dataclasses

    from ..backends import ops
    from .repair import fit_linear_repair

    fit_on = dataclasses.replace(token_set, samples=list(token_set.samples[: 2 * len(samples)]))
    whole = len(fit_on.samples) == len(token_set.samples) and saved_fit is not None
    keys = [tuple(c.removed) for c in candidates]
    for _ in range(len(keys) - len([k for k in dict.fromkeys(keys) if k not in cache])):
        on_known()  # said first, so that the bar's total is right while the fits run
    for candidate in candidates:
        key = tuple(candidate.removed)
        if key not in cache:
            if whole:
                assert saved_fit is not None
                repair = saved_fit(candidate.removed)
            else:
                repair = fit_linear_repair(stack.model, stack.family, fit_on, candidate.removed, batch_size,
                                           cancel=cancel, stack=stack, original=original, fit=JUDGING_FIT)
            cache[key] = ops.perplexity(stack, samples, token_set.pad_id, candidate.removed, batch_size,
                                        repair.tensors, cancel).perplexity
            on_judged()
        candidate.repaired_perplexity = cache[key]


def _ask_until_one_answers(probe: AnswerProbe, stack: LayerStack, candidates: Sequence[Candidate],
                           cache: dict[tuple[int, ...], int], cancel: CancelCheck | None,
                           weights_for: Callable[[Sequence[int]], dict[str, Any] | None],
                           before: Callable[[], None] = lambda: None, after: Callable[[], None] = lambda: None
                           ) -> None:
    """Ask the finalists, best figure first, whether they still answer, each with the weights the saved model
    gets (``weights_for``), until one falls silent on no prompt; the others keep ``silent = None`` (not asked).
    ``before()`` and ``after()`` surround each finalist asked (its weights' fit and the probe), for the bar."""
    for candidate in sorted(candidates, key=lambda c: c.judged):  # stable: on equal figures, the earlier first
        key = tuple(candidate.removed)
        if key not in cache:
            before()
            cache[key] = probe.silent(stack, candidate.removed, weights_for(candidate.removed), cancel)
            after()
        candidate.silent = cache[key]
        if candidate.silent == 0:
            break
    for candidate in candidates:  # a set asked under another name has the same answer
        candidate.silent = cache.get(tuple(candidate.removed), candidate.silent)


def _fit_saved_repair(stack: LayerStack, token_set: TokenSet, removed: Sequence[int], progress: Progress | None,
                      batch_size: int = 4, cancel: CancelCheck | None = None) -> Any:
    """The repair a job saves for ``removed``: every calibration sample, the adjuster's settings."""
    from .repair import fit_linear_repair

    return fit_linear_repair(stack.model, stack.family, token_set, removed, batch_size, progress=progress,
                             cancel=cancel, stack=stack)


#: Said when every measured candidate's perplexity is not a number (fp16 overflow, a broken model).
_NAN = ("The pruned model's perplexity is not a number for every candidate layer (the model overflows in this "
        "dtype); use float32 or bfloat16.")


def _perplexity(value: float) -> str:
    """A perplexity in the choice's sentence: two decimals below 1,000 (".4g" wrote "37.2 repaired (49.45 before…)"),
    grouped whole numbers from 1,000 up (a random model's), whatever the other figures in the line."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


def _ordinal(n: int) -> str:
    """``2nd``, ``3rd``, ``8th``."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


#: Each candidate set named in the choice's sentence (the card, the summary, the window's tooltip): "chosen by
#: bi-ends-protected" was read as a term of art (a walkthrough).
CANDIDATE_WORDS = {
    "greedy": "the greedy search",
    "bi-ends-protected": "BI's lowest with the first and last layers kept",
    "bi": "plain BI's lowest",
    "single-removal": "single-removal perplexity's lowest",
}


def candidate_words(name: str) -> str:
    """How the choice's sentence names the candidate set ``name``."""
    return CANDIDATE_WORDS.get(name, name)


def _explain(best: Candidate, candidates: list[Candidate], count: int, n_samples: int, tokens: int,
             stride: int = 1) -> str:
    """The choice in words. ``stride``: the search scores every ``stride``-th next token (the head's cost), said
    beside the count: 1,016, 504 and 120 tokens for 8 samples read as a fault."""
    repaired = best.repaired_perplexity is not None
    others = ", ".join(
        f"{candidate_words(c.name)} {_perplexity(c.judged)}" for c in candidates
        if c is not best and c.removed != best.removed
    )
    same = [candidate_words(c.name) for c in candidates if c is not best and c.removed == best.removed]
    text = (
        f"Removed {counted(count, 'layer')} chosen by {candidate_words(best.name)}: calibration perplexity "
        + (f"{_perplexity(best.judged)} repaired ({_perplexity(best.calibration_perplexity)} before the repair)"
           if repaired else _perplexity(best.calibration_perplexity))
        + f" on {counted(n_samples, 'sample')} ({tokens:,} tokens"
        + (f", every {_ordinal(stride)} next token" if stride > 1 else "") + ")"
    )
    if same:
        text += f", the same set as {' and '.join(same)}"
    if others:
        text += f"; other candidates: {others}"
    silent = [c for c in candidates if c.silent and c.removed != best.removed]
    if silent:
        text += "; ending their turn at once on chat prompts the original answers: " + ", ".join(
            f"{candidate_words(c.name)} on {c.silent}" for c in silent)
    if best.silent:
        text += (f"; the chosen set too ends its turn at once on {counted(best.silent, 'chat prompt')} (every "
                 "finalist does)")
    return text + "."
