"""The one shape of progress reporting and cancelling that every long step of the engine takes.

``progress(stage, done, total, partial)``: ``stage`` names the step ("scoring", "saving"…), ``partial`` is
step-specific plain data (the scores measured so far while scoring) or None. ``cancel()`` is polled between
batches; when it returns True the step raises :class:`~.errors.Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Cancelled

Progress = Callable[[str, int, int, Any], None]
CancelCheck = Callable[[], bool]


def no_progress(stage: str, done: int, total: int, partial: Any = None) -> None:
    """A progress callback that ignores everything."""


def raise_if_cancelled(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


#: What each stage's ``done`` / ``total`` count, so that a counter says the unit it counts. Scoring that runs one
#: decoder layer at a time (low-memory mode, and the single-layer-removal ``ppl`` metric) counts layers instead:
#: see :func:`stage_unit`. A perplexity pass counts its steps on either backend: each kept layer over all the
#: windows, then the head (31 for a 30-layer model; it said "31/31 windows" of 16).
STAGE_UNITS = {
    "scoring": "samples", "ppl_before": "steps", "ppl_after": "steps", "ppl_both": "steps", "saving": "tensors",
    "writing GGUF": "tensors", "generate": "tokens", "quiz_before": "tokens", "quiz_after": "tokens",
    "repair": "layer runs", "refit": "layer runs",
    "answers": "tokens", "heal": "steps",
    "sweep": "measurements", "selecting": "passes",  # sweep: the recipe's and plain BI's at each count
}
#: Stages whose count is layers when the model runs one decoder layer at a time.
LAYERWISE_STAGES = ("scoring",)


def stage_unit(stage: str, per_layer: bool = False) -> str | None:
    """The unit of a stage's counter: ``"samples"`` for a scoring pass in memory, ``"layers"`` for one that
    runs layer by layer (``per_layer``: low-memory mode, or the ``ppl`` metric while scoring)."""
    if per_layer and stage in LAYERWISE_STAGES:
        return "layers"
    return STAGE_UNITS.get(stage)


def counts_layers(stage: str, streamed: bool, metric: str) -> bool:
    """Whether ``stage``'s counter counts layers: everything layer-wise in low-memory mode, and scoring with the
    single-layer-removal metric (one perplexity pass per layer)."""
    return stage in LAYERWISE_STAGES and (streamed or (stage == "scoring" and metric == "ppl"))
