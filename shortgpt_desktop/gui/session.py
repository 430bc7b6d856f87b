"""The window's working state and the work its jobs do, as plain Python (no Qt).

The window runs the ``*_work`` methods in a worker thread, one job at a time, and everything else on the GUI
thread. Threading rule: a ``*_work`` method may fill the caches (``loaded``, ``tokens``) because no other job
runs beside it and the window does not read them while a job runs; the results the window shows (scores,
stats, sizes) come back as return values and are installed on the GUI thread with :meth:`Session.accept`.
Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import pipeline
from ..core.errors import CalibrationError, Cancelled, PlanError, UserError
from ..core.loading import LoadedModel, ModelInfo, inspect_model, load_model
from ..core.plan import LayerSizes, PrunePlan, apply_sizes, make_plan, max_removable
from ..core.report import Report
from ..core.scoring import HOOK_METRICS, METRICS, HookStats, LayerScores, measure_layers, scores_from_stats
from ..core.sources import ModelSource

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, Any], None]
CancelCheck = Callable[[], bool]


def _noop(*_: Any) -> None:
    return None


@dataclass
class Opened:
    """A resolved model source and what it will cost."""

    source: ModelSource
    info: ModelInfo


@dataclass
class Scored:
    """What a scoring job hands back to the GUI thread (no tensors the GUI thread reads on its own)."""

    scores: LayerScores
    stats: HookStats | None
    sizes: LayerSizes
    n_layers: int
    device: str
    dtype: str
    calibration: list[str]
    warnings: list[str]
    sample_count: int
    sample_tokens: int
    eval_tokens: int
    seconds: float


@dataclass
class Checked:
    """Perplexity and generations of the original and the pruned model, on the same tokens."""

    removed: list[int]
    ppl_before: float
    ppl_after: float
    eval_tokens: int
    prompt: str
    generation_before: str
    generation_after: str
    seconds: float

    @property
    def ratio(self) -> float:
        return self.ppl_after / self.ppl_before if self.ppl_before else float("nan")


def open_source(model: str, revision: str | None = None, device: str = "auto", dtype: str = "auto",
                batch_size: int = 1, seq_len: int = 512, progress: Progress = _noop,
                cancel: CancelCheck | None = None) -> Opened:
    """Resolve a path or Hub id (downloading if needed) and inspect it from its headers."""
    source = pipeline.resolve_source(model, revision, progress, cancel)
    progress("inspect", 0, 1, None)
    info = inspect_model(source, device, dtype, batch_size=batch_size, seq_len=seq_len)
    return Opened(source, info)


def reinspect(source: ModelSource, device: str, dtype: str, batch_size: int, seq_len: int) -> ModelInfo:
    """The memory figure again, for other settings (headers only, no download)."""
    return inspect_model(source, device, dtype, batch_size=batch_size, seq_len=seq_len)


@dataclass
class Session:
    """Everything the window knows about the current model and its scores."""

    source: ModelSource | None = None
    info: ModelInfo | None = None
    loaded: LoadedModel | None = None
    load_key: tuple | None = None
    tokens: Any = None  # TokenSet
    token_key: tuple | None = None
    token_names: list[str] = field(default_factory=list)  # calibration sources behind ``tokens``
    token_warnings: list[str] = field(default_factory=list)
    calibration: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: HookStats | None = None
    scores: LayerScores | None = None
    sizes: LayerSizes | None = None
    spec: pipeline.JobSpec | None = None  # the settings of the last successful scoring
    checked: Checked | None = None
    scored_seconds: float = 0.0

    # ---------------------------------------------------------------------------------------- GUI thread

    def set_source(self, opened: Opened) -> None:
        """A new model: forget the old one (and free its memory)."""
        self.unload()
        self.source, self.info = opened.source, opened.info

    def unload(self) -> None:
        self.loaded = None
        self.load_key = None
        self.tokens = None
        self.token_key = None
        self.stats = None
        self.scores = None
        self.sizes = None
        self.spec = None
        self.checked = None

    def accept(self, scored: Scored, spec: pipeline.JobSpec) -> None:
        self.scores, self.stats, self.sizes = scored.scores, scored.stats, scored.sizes
        self.calibration, self.warnings = scored.calibration, scored.warnings
        self.spec = spec
        self.checked = None
        self.scored_seconds = scored.seconds

    @property
    def n_layers(self) -> int:
        if self.sizes is not None:
            return len(self.sizes.layer_params)
        return self.info.n_layers if self.info else 0

    @property
    def max_removable(self) -> int:
        return max_removable(self.n_layers)

    def rescore(self, metric: str, block_size: int = 1) -> LayerScores | None:
        """Scores of another metric without a new pass, or None when that metric needs one."""
        if metric == "sequential" or metric == "reverse":
            n = self.n_layers
            order = range(n) if metric == "sequential" else range(n - 1, -1, -1)
            values = [float(i) for i in order]
            return LayerScores(metric, values)
        if metric in HOOK_METRICS and self.stats is not None:
            return scores_from_stats(self.stats, metric, max(1, block_size))
        if self.scores is not None and self.scores.metric == metric:
            return self.scores
        return None

    def plan(self, count: int = 0, layers: Sequence[int] | None = None) -> PrunePlan:
        """The plan for the slider (``count`` lowest-scored layers) or for a hand-picked ``layers`` list.

        ``count == 0`` gives an empty plan, so the panel can show "nothing removed" with real sizes.
        For the angular metric the scores depend on the block size, so they are recomputed for ``count``.
        """
        if self.sizes is None:
            raise PlanError("Score the layers first.")
        n = self.n_layers
        if layers is not None:
            removed = sorted(set(layers))
            if not removed:
                return apply_sizes(PrunePlan(n, []), self.sizes)
            return make_plan(n, layers=removed, sizes=self.sizes)
        if count <= 0:
            metric = self.scores.metric if self.scores else "manual"
            return apply_sizes(PrunePlan(n, [], metric=metric), self.sizes)
        scores = self.scores
        if scores is None:
            raise PlanError("Score the layers first.")
        block = METRICS[scores.metric].block
        if block and self.stats is not None and scores.block_size != count:
            scores = scores_from_stats(self.stats, scores.metric, count)
            self.scores = scores
        return make_plan(n, scores.scores, count=count, metric=scores.metric, sizes=self.sizes, block=block)

    def report(self, plan: PrunePlan) -> Report:
        """The model card's data for ``plan`` (with the last check when it was for this very plan)."""
        assert self.loaded is not None and self.spec is not None
        report = pipeline.new_report(self.loaded, self.spec)
        report.metric = plan.metric
        if self.scores is not None:
            report.scores = list(self.scores.scores)
            report.other_scores = dict(self.scores.extra)
            report.block_size = self.scores.block_size
            report.tokens = self.scores.tokens
            report.timings["scoring"] = self.scores.seconds
        report.calibration = list(self.calibration)
        report.warnings = list(self.warnings)
        report.removed_layers, report.kept_layers = list(plan.removed), plan.kept
        report.params_before, report.params_after = plan.params_before, plan.params_after
        report.bytes_before, report.bytes_after = plan.bytes_before, plan.bytes_after
        if self.checked is not None and self.checked.removed == list(plan.removed):
            c = self.checked
            report.ppl_before, report.ppl_after, report.eval_tokens = c.ppl_before, c.ppl_after, c.eval_tokens
            report.generation_prompt = c.prompt
            report.generation_before, report.generation_after = c.generation_before, c.generation_after
        return report

    # ------------------------------------------------------------------------------------ worker thread

    def ensure_loaded(self, spec: pipeline.JobSpec, progress: Progress = _noop,
                      cancel: CancelCheck | None = None) -> LoadedModel:
        key = (spec.model, spec.revision, spec.device, spec.dtype, spec.trust_remote_code)
        if self.loaded is not None and self.load_key == key:
            return self.loaded
        self.loaded = None  # free the old weights before loading new ones
        self.tokens = self.token_key = None
        source = self.source
        if source is None or source.spec != spec.model:
            source = pipeline.resolve_source(spec.model, spec.revision, progress, cancel)
        if cancel is not None and cancel():
            raise Cancelled()
        progress("load", 0, 1, None)
        self.loaded = load_model(source, spec.device, spec.dtype, spec.trust_remote_code)
        self.load_key = key
        progress("load", 1, 1, None)
        return self.loaded

    def ensure_tokens(self, spec: pipeline.JobSpec, progress: Progress = _noop) -> Any:
        key = (tuple(spec.calib), spec.eval_text, spec.samples, spec.seq_len, spec.seed, spec.eval_windows,
               self.load_key)
        if self.tokens is not None and self.token_key == key:
            return self.tokens
        assert self.loaded is not None
        progress("tokenize", 0, 1, None)
        tokens, names, warnings = pipeline.prepare_tokens(self.loaded, spec)
        self.tokens, self.token_key = tokens, key
        self.token_names, self.token_warnings = names, warnings
        progress("tokenize", 1, 1, None)
        return tokens

    def score_work(self, spec: pipeline.JobSpec, progress: Progress = _noop,
                   cancel: CancelCheck | None = None) -> Scored:
        """Load (if needed), tokenise (if needed) and score; hook metrics keep the whole pass's stats."""
        if not spec.calib:
            raise CalibrationError("The calibration set is empty: add text files or tick the built-in "
                                   "corpus.")
        started = time.perf_counter()
        loaded = self.ensure_loaded(spec, progress, cancel)
        metric = METRICS[spec.metric]
        tokens = self.ensure_tokens(spec, progress) if metric.needs_forward else None
        stats: HookStats | None = None
        if spec.metric in HOOK_METRICS:
            stats = measure_layers(loaded.model, loaded.family, tokens, spec.batch_size, progress, cancel)
            scores = scores_from_stats(stats, spec.metric, 1)
        else:
            scores = pipeline.score(loaded, tokens, spec.metric, spec.batch_size, 1, progress, cancel)
        from ..core.surgery import layer_sizes

        sizes = layer_sizes(loaded.model, loaded.family, pipeline.checkpoint_bytes_per_param(loaded))
        seconds = time.perf_counter() - started
        log.info("scored %d layers with %s in %.1f s", loaded.n_layers, spec.metric, seconds)
        return Scored(
            scores=scores, stats=stats, sizes=sizes, n_layers=loaded.n_layers, device=loaded.device,
            dtype=loaded.dtype,
            calibration=list(self.token_names) if tokens is not None else [],
            warnings=list(self.token_warnings) if tokens is not None else [],
            sample_count=len(tokens.samples) if tokens is not None else 0,
            sample_tokens=tokens.sample_tokens if tokens is not None else 0,
            eval_tokens=tokens.eval_tokens if tokens is not None else 0,
            seconds=seconds,
        )

    def save_work(self, plan: PrunePlan, out: str | Path, report: Report | None, force: bool = False,
                  progress: Progress = _noop, cancel: CancelCheck | None = None) -> Any:
        if self.loaded is None:
            raise UserError("Score the layers first: the model is not loaded.")
        if not plan.removed:
            raise PlanError("The plan removes no layers: move the slider or click bars first.")
        return pipeline.save(self.loaded, plan, out, report, force, progress, cancel)

    def check_work(self, spec: pipeline.JobSpec, removed: Sequence[int], prompt: str,
                   max_new_tokens: int = 24, progress: Progress = _noop,
                   cancel: CancelCheck | None = None) -> Checked:
        """Perplexity of the original and the pruned model on the same held-out windows, then a generation."""
        if not removed:
            raise PlanError("The plan removes no layers: move the slider or click bars first.")
        started = time.perf_counter()
        loaded = self.ensure_loaded(spec, progress, cancel)
        tokens = self.ensure_tokens(spec, progress)
        if not tokens.eval_windows:
            raise CalibrationError("The calibration text leaves no held-out text for perplexity; add more "
                                   "text.")
        before = pipeline.measure_perplexity(loaded, tokens, (), spec.batch_size, progress, cancel,
                                             "ppl_before")
        after = pipeline.measure_perplexity(loaded, tokens, removed, spec.batch_size, progress, cancel,
                                            "ppl_after")
        gen_before = gen_after = ""
        if prompt.strip():
            progress("generate", 0, 2, None)
            gen_before = pipeline.generate(loaded, prompt, (), max_new_tokens)
            if cancel is not None and cancel():
                raise Cancelled()
            progress("generate", 1, 2, None)
            gen_after = pipeline.generate(loaded, prompt, removed, max_new_tokens)
            progress("generate", 2, 2, None)
        return Checked(list(removed), before.perplexity, after.perplexity, before.tokens, prompt, gen_before,
                       gen_after, time.perf_counter() - started)
