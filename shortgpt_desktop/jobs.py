"""The command line's whole jobs (score, prune, sweep, eval) as chains of engine steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .core import pipeline
from .core.cut.plan import (
    check_layer_list,
    count_for_ratio,
    max_removable,
)
from .core.cut.surgery import layer_sizes
from .core.engine import Engine
from .core.errors import PlanError, UserError
from .core.measure.metrics import get_metric
from .core.model.loading import ModelInfo
from .core.pipeline import JobSpec
from .core.progress import CancelCheck, Progress, no_progress
from .core.report import Report

InfoCallback = Callable[[ModelInfo], None]


def _checked_request(spec: JobSpec) -> None:
    """What can be checked before anything is opened (so a typo costs no download and no load)."""
    get_metric(spec.metric)
    given = sum(x is not None for x in (spec.ratio, spec.count, spec.layers))
    if given != 1:
        raise PlanError("Say how much to remove: a ratio, a number of layers, or a list of layers.")
    if spec.ratio is not None and not 0 < spec.ratio < 1:
        raise PlanError(f"The ratio must be above 0 and below 1 (got {spec.ratio}).")
    if spec.count is not None and spec.count < 1:
        raise PlanError(f"The number of layers to remove must be at least 1 (got {spec.count}).")
    if spec.layers is not None:
        check_layer_list(spec.layers, 10**9)  # repeats and negatives


def _checked_against_model(spec: JobSpec, n_layers: int) -> None:
    """What the layer count (known from the config) can tell about the request."""
    if spec.layers is not None:
        check_layer_list(spec.layers, n_layers)
        return
    count = spec.count if spec.count is not None else count_for_ratio(float(spec.ratio), n_layers)  # type: ignore[arg-type]
    if count > max_removable(n_layers):
        raise PlanError(f"Removing {count} of {n_layers} layers leaves none; at least one must stay.")


def run_score(engine: Engine, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None,
              on_info: InfoCallback | None = None) -> Report:
    """Open, check the text, load and score; nothing is written but the report."""
    get_metric(spec.metric)
    started = time.perf_counter()
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    engine.score(spec, progress, cancel)
    report = engine.report(engine.plan(0), spec)
    report.seconds = time.perf_counter() - started
    return report


def run_prune(engine: Engine, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None,
              on_info: InfoCallback | None = None) -> Report:
    """Open, check everything the config and files can tell, score, plan, check before/after, save."""
    _checked_request(spec)
    if not spec.out:
        raise UserError("Give an output folder.")
    started = time.perf_counter()
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    engine.check_output(spec.out, spec.force)
    _checked_against_model(spec, info.n_layers)
    engine.set_output_format(spec.output_format)
    engine.mode_for(spec)  # refuses, before loading, a model that fits neither way
    engine.check_gguf_job(spec)  # a GGUF output that cannot be written: refused before scoring
    needs_scores = spec.layers is None
    if needs_scores or spec.check_perplexity or spec.repair != "none" or spec.heal_steps > 0:
        engine.check_text(spec)
    if needs_scores:
        engine.score(spec, progress, cancel)
    else:
        engine.load(spec, progress, cancel)
        engine.sizes = layer_sizes(engine.loaded.model, engine.loaded.family,  # type: ignore[union-attr]
                                   pipeline.checkpoint_bytes_per_param(engine.loaded))  # type: ignore[arg-type]
        engine.scored_spec = spec
    plan = engine.plan_for_spec(spec)
    if engine.needs_refining(plan):
        plan = engine.refine(spec, len(plan.removed), progress, cancel)
    engine.check_gguf_job(spec, plan.removed)  # the layers are known now: refused before repair and healing
    plan = engine.prepare(spec, plan, progress, cancel)
    if spec.check_perplexity:
        engine.check(spec, plan.removed, spec.prompt, progress, cancel)
    report = engine.report(plan, spec)
    t = time.perf_counter()
    result = engine.save(plan, spec.out, report, spec.force, progress, cancel)
    report.timings["saving"] = time.perf_counter() - t
    report.output = str(result.folder)
    report.seconds = time.perf_counter() - started
    return report


def run_sweep(engine: Engine, spec: JobSpec, max_removed: int | None = None, progress: Progress = no_progress,
              cancel: CancelCheck | None = None, on_info: InfoCallback | None = None) -> Any:
    """Open, score, and measure the quality curve."""
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    if max_removed is not None and not 1 <= max_removed <= max_removable(info.n_layers):
        raise PlanError(f"The curve can go up to {max_removable(info.n_layers)} removed layers of {info.n_layers} "
                        f"(asked for {max_removed}).")
    engine.score(spec, progress, cancel)
    return engine.quality_curve(spec, max_removed, progress, cancel)


def run_eval(engine: Engine, spec: JobSpec, other: str | None = None, progress: Progress = no_progress,
             cancel: CancelCheck | None = None, on_info: InfoCallback | None = None) -> Report:
    """Perplexity of a model (and optionally of a second one, e.g. its pruned copy) on the same tokens.

    The second model is tokenized with the first one's tokenizer (a pruned copy shares it); the first is freed
    before the second loads.
    """
    started = time.perf_counter()
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    loaded, tokens = engine.held_out(spec, progress, cancel)
    report = pipeline.new_report(loaded, spec)
    report.calibration, report.warnings = list(engine.token_names), list(engine.token_warnings)
    before = pipeline.measure_perplexity(loaded, tokens, (), spec.batch_size, progress, cancel, "ppl_before")
    report.ppl_before, report.eval_tokens = before.perplexity, before.tokens
    if other:
        other_spec = JobSpec(model=other, device=spec.device, dtype=spec.dtype,
                             trust_remote_code=spec.trust_remote_code, calib=spec.calib)
        second = Engine()
        engine.forget()
        second.load(other_spec, progress, cancel)
        assert second.loaded is not None
        after = pipeline.perplexity_on(second.loaded, tokens, spec.batch_size, progress, cancel, "ppl_after")
        report.ppl_after = after.perplexity
    report.seconds = time.perf_counter() - started
    return report
