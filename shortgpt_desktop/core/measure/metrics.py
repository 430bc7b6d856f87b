"""Layer-importance metrics as a registry: one object per metric, one interface, registered in one place.

A metric says what it needs (calibration text or not; the shared hooked pass or a pass of its own), how it
scores every layer, and how scores turn into the layers to remove (the lowest ones, or a contiguous block).
Every metric's scores follow one rule: **lower means less important, removed first**.

Adding a metric is one class and one :func:`register` call; the command line's ``--metric`` choices, the
window's metric box and the engine all read :data:`METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..cut.plan import best_block, lowest
from ..errors import UserError
from ..model.families import Family, get_submodule
from ..progress import CancelCheck, Progress
from .calibration import TokenSet
from .scoring import HookStats, LayerScores, measure_layers, removal_perplexity


@dataclass
class ScoringContext:
    """What a metric may use to score: the model, its layers' family, the samples and the shared pass."""

    model: Any
    family: Family
    tokens: TokenSet | None
    batch_size: int = 4
    progress: Progress | None = None
    cancel: CancelCheck | None = None
    stats: HookStats | None = None  # the hooked pass, once measured (shared by every hooked metric)
    stack: Any = None  # the backend's layer stack (backends.layerwise.LayerStack); built from the model if None
    repaired: bool = False  # the job repairs what it removes: a measured choice compares its candidates repaired
    probe: Any = None  # cut.answer_probe.AnswerProbe: chat prompts a measured choice's finalists must still answer
    repair_for: Any = None  # cut.selection.RepairFor: the saved model's repair of a set (the engine keeps each fit)
    memo: Any = None  # cut.selection.SearchMemo: what earlier searches on the same samples and recipe measured
    fit_cost: Any = None  # cut.selection.FitCost: what a fit of the saved repair costs, for the progress bar

    def layer_stack(self) -> Any:
        if self.stack is None:
            from ..backends.layerwise import InMemoryStack

            self.stack = InMemoryStack(self.model, self.family)
        return self.stack

    @property
    def n_layers(self) -> int:
        return len(get_submodule(self.model, self.family.layers_path))

    def hooked_pass(self) -> HookStats:
        """The one hooked pass every hooked metric reads (measured on first use, then reused)."""
        if self.stats is None:
            if self.tokens is None:
                raise ValueError("the hooked pass needs calibration samples")
            self.stats = measure_layers(self.model, self.family, self.tokens, self.batch_size, self.progress,
                                        self.cancel)
        return self.stats


class Metric:
    """One way to rank layers. Subclasses set the class attributes and implement :meth:`values`."""

    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str]
    #: Needs calibration samples (False: a fixed order such as Sequential).
    needs_text: ClassVar[bool] = True
    #: Read from the shared hooked pass: switching between hooked metrics needs no new pass, and the chart
    #: shows Block Influence live while that pass runs.
    hooked: ClassVar[bool] = False
    #: Removes one contiguous block whose scores depend on its size (angular distance).
    block: ClassVar[bool] = False
    #: What the chart shows while the metric is being measured.
    live_label: ClassVar[str] = ""
    #: The least and the most a layer's score can be (an imported file's scores outside it were edited or damaged:
    #: a Block Influence of -5 and of 1e9 drew a broken chart, whose bars went at the next slider move).
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    #: The final choice of layers measures the pruned model (forward passes): see :meth:`refine`.
    refines: ClassVar[bool] = False

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        raise NotImplementedError

    def score(self, ctx: ScoringContext, block_size: int = 1) -> LayerScores:
        """Score every layer (running a pass when the metric needs one).

        A hooked metric's result carries the other hooked metrics of the same pass in ``extra``.
        """
        values = self.values(ctx, block_size)
        if not self.hooked or ctx.stats is None:
            return LayerScores(self.name, values)
        stats = ctx.stats
        # The other metrics of the same pass (a refining metric's bars are BI's: not listed twice).
        extra = {m.name: m.values(ctx, block_size) for m in METRICS.values()
                 if m.hooked and m is not self and not m.refines}
        return LayerScores(self.name, values, tokens=stats.tokens, seconds=stats.seconds,
                           block_size=block_size if self.block else None, extra=extra)

    def from_stats(self, stats: HookStats, block_size: int = 1) -> LayerScores | None:
        """Scores from an already measured hooked pass, or None when this metric needs a pass of its own."""
        if not self.hooked:
            return None
        return self.score(ScoringContext(model=None, family=None, tokens=None, stats=stats),  # type: ignore[arg-type]
                          block_size)

    def removal(self, scores: Sequence[float | None], count: int) -> list[int]:
        """Which ``count`` layers go, given this metric's scores (cheap: no pass)."""
        return best_block(scores, count) if self.block else lowest(scores, count)

    def refine(self, ctx: ScoringContext, scores: Sequence[float | None], count: int) -> Any:
        """A better choice of ``count`` layers by measuring the pruned model; None when the metric has none."""
        return None

    def refine_counts(self, ctx: ScoringContext, scores: Sequence[float | None], counts: Sequence[int]) -> dict:
        """:meth:`refine` for several counts at once (a metric whose search is nested does it in one search)."""
        return {count: self.refine(ctx, scores, count) for count in counts}


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Make ``metric`` available to the engine, the command line and the window."""
    METRICS[metric.name] = metric
    return metric


def score_column(name: str) -> str:
    """The heading of the metric ``name``'s column of scores: bi+'s are plain BI (its search measures sets, it does
    not score layers), so "bi+ (BI)", as the command line's table writes it; the card's column said "bi+"."""
    metric = METRICS.get(name)
    return f"{name} (BI)" if metric is not None and metric.refines else name


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"Unknown metric {name!r}: choose one of {', '.join(METRICS)}.")
    return METRICS[name]


# ------------------------------------------------------------------------------------------------ metrics


class BlockInfluence(Metric):
    name = "bi"
    label = "Block Influence"
    description = "1 − mean cosine of each layer's input and output (ShortGPT)"
    value_range = (0.0, 2.0)  # 1 − a cosine
    hooked = True
    live_label = "Block Influence (live)"

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        return list(ctx.hooked_pass().bi)


class RelativeMagnitude(Metric):
    name = "relative_magnitude"
    label = "Relative Magnitude"
    description = "mean ‖f(x)‖ / ‖x + f(x)‖ per token"
    value_range = (0.0, math.inf)
    hooked = True
    live_label = "Block Influence (live)"

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        return list(ctx.hooked_pass().relative_magnitude)


class AngularDistance(Metric):
    name = "angular"
    label = "Angular distance (block)"
    description = "arccos of the last token's cosine across n consecutive layers, / π (Gromov et al.)"
    value_range = (0.0, 1.0)
    hooked = True
    block = True
    live_label = "Block Influence (live)"

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        return ctx.hooked_pass().angular(max(1, block_size))


class Sequential(Metric):
    name = "sequential"
    label = "Sequential"
    description = "first layers go first (baseline)"
    needs_text = False

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        return [float(i) for i in range(ctx.n_layers)]


class ReverseOrder(Metric):
    name = "reverse"
    label = "Reverse-order"
    description = "last layers go first (baseline)"
    needs_text = False

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        n = ctx.n_layers
        return [float(n - 1 - i) for i in range(n)]


class RemovalPerplexity(Metric):
    name = "ppl"
    label = "Single-layer removal perplexity"
    description = "perplexity of the calibration samples with that one layer skipped (one pass per layer)"
    value_range = (1.0, math.inf)  # the exponential of a mean negative log-probability
    live_label = "Single-layer removal perplexity (live)"

    def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
        return self.score(ctx, block_size).scores

    def score(self, ctx: ScoringContext, block_size: int = 1) -> LayerScores:
        if ctx.tokens is None:
            raise ValueError("single-layer removal perplexity needs calibration samples")
        return removal_perplexity(ctx.model, ctx.family, ctx.tokens, ctx.batch_size, ctx.progress, ctx.cancel)


class SaferBlockInfluence(BlockInfluence):
    """The default recipe: Block Influence, the first and last layers protected, and the candidates checked by
    measured calibration perplexity (see :mod:`.selection`), so a layer BI wrongly calls redundant stays."""

    name = "bi+"
    label = "Block Influence+ (measured)"
    description = ("BI with the first and last layers protected, its candidates checked by measured calibration "
                   "perplexity; never worse there than plain BI (default)")
    refines = True

    def removal(self, scores: Sequence[float | None], count: int) -> list[int]:
        from ..cut.selection import ends_protected_lowest

        return ends_protected_lowest(scores, count)

    def refine(self, ctx: ScoringContext, scores: Sequence[float | None], count: int) -> Any:
        from ..cut.selection import choose_layers_safely

        if ctx.tokens is None:
            raise ValueError("bi+ needs calibration samples")
        return choose_layers_safely(ctx.layer_stack(), ctx.tokens, count, scores, ctx.batch_size,
                                    progress=ctx.progress, cancel=ctx.cancel, judge_repaired=ctx.repaired,
                                    probe=ctx.probe, repair_for=ctx.repair_for, memo=ctx.memo, fit_cost=ctx.fit_cost)

    def refine_counts(self, ctx: ScoringContext, scores: Sequence[float | None], counts: Sequence[int]) -> dict:
        from ..cut.selection import choose_for_counts

        if ctx.tokens is None:
            raise ValueError("bi+ needs calibration samples")
        return choose_for_counts(ctx.layer_stack(), ctx.tokens, counts, scores, ctx.batch_size,
                                 progress=ctx.progress, cancel=ctx.cancel, judge_repaired=ctx.repaired,
                                 probe=ctx.probe, repair_for=ctx.repair_for, memo=ctx.memo, fit_cost=ctx.fit_cost)


for _metric in (SaferBlockInfluence(), BlockInfluence(), RelativeMagnitude(), AngularDistance(), Sequential(),
                ReverseOrder(), RemovalPerplexity()):
    register(_metric)


def score_model(model: Any, family: Family, tokens: TokenSet | None, metric: str = "bi", batch_size: int = 4,
                block_size: int = 1, progress: Progress | None = None,
                cancel: CancelCheck | None = None) -> LayerScores:
    """Scores of ``metric`` for every layer; for hooked metrics the others of the same pass go in ``extra``."""
    chosen = get_metric(metric)
    if chosen.needs_text and tokens is None:
        raise ValueError(f"metric {metric} needs calibration samples")
    ctx = ScoringContext(model, family, tokens, batch_size, progress, cancel)
    return chosen.score(ctx, block_size)
