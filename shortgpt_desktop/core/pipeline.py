"""The whole job as a few functions that report progress; the command line and the window both call them.

The steps are public so that the window can run them one at a time (load, score, slide, save, check), and
``run_score`` / ``run_prune`` / ``run_eval`` chain them for the command line. Progress is one callback
``progress(stage, done, total, partial_scores)``; cancelling is a callable polled between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .calibration import BUILTIN_CORPUS, TokenSet, build_token_set, builtin_corpus, read_texts
from .errors import CalibrationError, PlanError, UserError
from .evaluation import PerplexityResult, generate_text, perplexity_of
from .loading import LoadedModel, ModelInfo, architecture_name, inspect_model, load_model
from .plan import PrunePlan, apply_sizes, check_layer_list, count_for_ratio, make_plan, max_removable
from .report import Report, model_card
from .saving import SaveResult, check_output_folder, save_pruned
from .scoring import METRICS, LayerScores, check_metric, score_model
from .sources import ModelSource, resolve
from .surgery import layer_sizes, pruned_view

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, Any], None]
CancelCheck = Callable[[], bool]

DEFAULT_PROMPT = "The most important thing to know about the history of science is"


@dataclass
class JobSpec:
    """What the user asked for, as plain data (the CLI builds it from flags, the window from widgets)."""

    model: str
    calib: list[str] = field(default_factory=list)  # empty or ["builtin"] → built-in corpus
    eval_text: str | None = None
    samples: int = 128
    seq_len: int = 512
    batch_size: int = 4
    seed: int = 0
    metric: str = "bi"
    block_size: int = 1  # layers per block for the angular metric when only scoring
    ratio: float | None = None
    count: int | None = None
    layers: list[int] | None = None
    out: str | None = None
    force: bool = False
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    check_perplexity: bool = True
    prompt: str | None = DEFAULT_PROMPT
    max_new_tokens: int = 24
    eval_windows: int = 64


def _noop(*_: Any) -> None:
    return None


# ------------------------------------------------------------------------------------------------- steps


def resolve_source(model: str, revision: str | None = None, progress: Progress = _noop,
                   cancel: CancelCheck | None = None) -> ModelSource:
    """The model's files on local disk; a Hub download reports ``("download", bytes_done, bytes_total)``."""
    return resolve(model, revision=revision, cancel=cancel,
                   progress=lambda done, total: progress("download", done, total, None))


def open_model(spec: JobSpec, progress: Progress = _noop, cancel: CancelCheck | None = None,
               on_info: Callable[[ModelInfo], None] | None = None) -> LoadedModel:
    """Resolve (downloading from the Hub if needed) and load the model.

    ``on_info`` hears what the model is and what it will cost before its weights are read.
    """
    source = resolve_source(spec.model, spec.revision, progress, cancel)
    if on_info is not None:
        on_info(inspect_model(source, spec.device, spec.dtype, spec.batch_size, spec.seq_len))
    progress("load", 0, 1, None)
    loaded = load_model(source, spec.device, spec.dtype, spec.trust_remote_code)
    progress("load", 1, 1, None)
    return loaded


def read_calibration(paths: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(texts, names used, warnings) for calibration paths; none or ``builtin`` gives the built-in corpus."""
    paths = list(paths)
    use_builtin = not paths or BUILTIN_CORPUS in paths
    files = [p for p in paths if p != BUILTIN_CORPUS]
    texts: list[str] = []
    names: list[str] = []
    warnings: list[str] = []
    if files:
        text_set = read_texts(files)
        texts += text_set.texts
        names += [str(p) for p in text_set.files]
        warnings += text_set.skipped
        if not text_set.texts and not use_builtin:
            raise CalibrationError(
                "No usable calibration text: every file given was empty, binary or unreadable "
                f"({len(text_set.skipped)} skipped)."
            )
    if use_builtin:
        texts += builtin_corpus()
        names.append("built-in corpus (Python standard library docstrings)")
    return texts, names, warnings


def prepare_tokens(loaded: LoadedModel, spec: JobSpec) -> tuple[TokenSet, list[str], list[str]]:
    """Token samples and perplexity windows for the spec; returns (tokens, calibration names, warnings)."""
    texts, names, warnings = read_calibration(spec.calib)
    eval_texts = None
    if spec.eval_text:
        eval_texts, _, eval_warnings = read_calibration([spec.eval_text])
        warnings += eval_warnings
    tokens = build_token_set(
        loaded.tokenizer, texts, eval_texts, spec.samples, spec.seq_len, spec.seed,
        max_eval_windows=spec.eval_windows,
    )
    if len(tokens.samples) < spec.samples:
        warnings.append(
            f"The calibration text gives only {len(tokens.samples)} samples of {spec.seq_len} tokens "
            f"({spec.samples} asked for)."
        )
    return tokens, names, warnings


def score(
    loaded: LoadedModel, tokens: TokenSet | None, metric: str = "bi", batch_size: int = 4, block_size: int = 1,
    progress: Progress = _noop, cancel: CancelCheck | None = None,
) -> LayerScores:
    return score_model(loaded.model, loaded.family, tokens, metric, batch_size, block_size, progress, cancel)


def plan_for(loaded: LoadedModel, scores: LayerScores | None, *, ratio: float | None = None,
             count: int | None = None, layers: Sequence[int] | None = None) -> PrunePlan:
    """A plan with sizes in the checkpoint's own dtype (what the saved folder will weigh)."""
    n = loaded.n_layers
    block = scores is not None and METRICS[scores.metric].block
    plan = make_plan(n, scores.scores if scores else None, ratio=ratio, count=count,
                     layers=list(layers) if layers is not None else None,
                     metric=scores.metric if scores else "manual", block=block)
    apply_sizes(plan, layer_sizes(loaded.model, loaded.family, checkpoint_bytes_per_param(loaded)))
    return plan


def checkpoint_bytes_per_param(loaded: LoadedModel) -> float:
    """Bytes per parameter the saved folder will use: the source checkpoint's dtype, or memory's for GGUF."""
    if loaded.source.gguf_file is None:
        name = str(loaded.config.get("dtype") or loaded.config.get("torch_dtype") or "float32")
        return {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}.get(name, 4.0)
    return float(next(loaded.model.parameters()).element_size())


def measure_perplexity(loaded: LoadedModel, tokens: TokenSet, removed: Sequence[int] = (), batch_size: int = 4,
                       progress: Progress = _noop, cancel: CancelCheck | None = None,
                       stage: str = "perplexity") -> PerplexityResult:
    """Perplexity on the held-out windows, of the model as loaded or with ``removed`` layers pruned."""
    def report(done: int, total: int) -> None:
        progress(stage, done, total, None)

    if not removed:
        return perplexity_of(loaded.model, tokens.eval_windows, tokens.pad_id, batch_size, cancel, report)
    with pruned_view(loaded.model, loaded.family, removed):
        return perplexity_of(loaded.model, tokens.eval_windows, tokens.pad_id, batch_size, cancel, report)


def generate(loaded: LoadedModel, prompt: str, removed: Sequence[int] = (), max_new_tokens: int = 24) -> str:
    """Greedy continuation with the cache on, of the original or the pruned model."""
    if not removed:
        return generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens)
    with pruned_view(loaded.model, loaded.family, removed):
        return generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens)


def save(loaded: LoadedModel, plan: PrunePlan, out: str | Path, report: Report | None = None,
         force: bool = False, progress: Progress = _noop, cancel: CancelCheck | None = None,
         max_shard_bytes: int | None = None) -> SaveResult:
    """Write the pruned model (with its model card) to ``out``, atomically."""
    card = model_card(report, loaded.source.spec) if report is not None else ""
    kwargs = {"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}
    return save_pruned(
        source=loaded.source, family=loaded.family, original_config=loaded.config, removed=plan.removed,
        out=out, model=loaded.model, tokenizer=loaded.tokenizer, card_text=card, force=force,
        progress=lambda stage, done, total: progress(stage, done, total, None), cancel=cancel, **kwargs,
    )


# --------------------------------------------------------------------------------------------------- jobs


def new_report(loaded: LoadedModel, spec: JobSpec) -> Report:
    return Report(
        model=spec.model,
        architecture=architecture_name(loaded.config),
        n_layers=loaded.n_layers,
        metric=spec.metric,
        device=loaded.device,
        dtype=loaded.dtype,
        samples=spec.samples,
        seq_len=spec.seq_len,
        seed=spec.seed,
    )


def _check_choice(spec: JobSpec) -> None:
    """What can be checked before the model is loaded (so a typo does not cost a download and a load)."""
    given = sum(x is not None for x in (spec.ratio, spec.count, spec.layers))
    if given != 1:
        raise UserError("Say how much to remove with exactly one of --ratio, --layers or --remove.")
    if spec.ratio is not None and not 0 < spec.ratio < 1:
        raise PlanError(f"The ratio must be above 0 and below 1 (got {spec.ratio}).")
    if spec.count is not None and spec.count < 1:
        raise PlanError(f"The number of layers to remove must be at least 1 (got {spec.count}).")


def _count_to_remove(spec: JobSpec, n_layers: int) -> int | None:
    """Layers the spec removes for this model (None for an explicit list, which is checked instead)."""
    if spec.layers is not None:
        check_layer_list(spec.layers, n_layers)
        return None
    count = spec.count if spec.count is not None else count_for_ratio(float(spec.ratio), n_layers)  # type: ignore[arg-type]
    if count > max_removable(n_layers):
        raise PlanError(f"Removing {count} of {n_layers} layers leaves none; at least one must stay.")
    return count


def run_score(spec: JobSpec, progress: Progress = _noop, cancel: CancelCheck | None = None,
              on_info: Callable[[ModelInfo], None] | None = None) -> Report:
    """Load and score; no plan, nothing written but the report."""
    check_metric(spec.metric)
    started = time.perf_counter()
    loaded = open_model(spec, progress, cancel, on_info)
    report = new_report(loaded, spec)
    tokens, report.calibration, report.warnings = prepare_tokens(loaded, spec)
    scores = score(loaded, tokens, spec.metric, spec.batch_size, spec.block_size, progress, cancel)
    _fill_scores(report, scores)
    report.seconds = time.perf_counter() - started
    return report


def _fill_scores(report: Report, scores: LayerScores) -> None:
    report.scores = scores.scores
    report.other_scores = scores.extra
    report.block_size = scores.block_size
    report.tokens = scores.tokens
    report.timings["scoring"] = scores.seconds


def run_prune(spec: JobSpec, progress: Progress = _noop, cancel: CancelCheck | None = None,
              on_info: Callable[[ModelInfo], None] | None = None) -> Report:
    """Score, plan, check perplexity before and after on the same tokens, and save."""
    check_metric(spec.metric)
    _check_choice(spec)
    if spec.layers is not None:
        check_layer_list(spec.layers, 10**9)  # repeats and negatives, before loading
    if not spec.out:
        raise UserError("Give an output folder with --out.")
    started = time.perf_counter()
    loaded = open_model(spec, progress, cancel, on_info)
    check_output_folder(Path(spec.out), loaded.source, spec.force)  # fail before the long part
    count = _count_to_remove(spec, loaded.n_layers)
    report = new_report(loaded, spec)
    needs_text = spec.check_perplexity or (spec.layers is None and METRICS[spec.metric].needs_forward)
    tokens = None
    if needs_text:
        tokens, report.calibration, report.warnings = prepare_tokens(loaded, spec)
    if spec.layers is None:
        block_size = count if METRICS[spec.metric].block else 1
        scores = score(loaded, tokens, spec.metric, spec.batch_size, block_size or 1, progress, cancel)
        _fill_scores(report, scores)
        plan = plan_for(loaded, scores, count=count)
    else:
        plan = plan_for(loaded, None, layers=spec.layers)
        report.metric = "manual"
    _fill_plan(report, plan)
    if tokens is not None and spec.check_perplexity:
        _measure_before_after(loaded, tokens, plan, spec, report, progress, cancel)
    t = time.perf_counter()
    result = save(loaded, plan, spec.out, report, spec.force, progress, cancel)
    report.timings["saving"] = time.perf_counter() - t
    report.output = str(result.folder)
    report.seconds = time.perf_counter() - started
    return report


def _fill_plan(report: Report, plan: PrunePlan) -> None:
    report.removed_layers = plan.removed
    report.kept_layers = plan.kept
    report.params_before, report.params_after = plan.params_before, plan.params_after
    report.bytes_before, report.bytes_after = plan.bytes_before, plan.bytes_after


def _measure_before_after(loaded: LoadedModel, tokens: TokenSet, plan: PrunePlan, spec: JobSpec,
                          report: Report, progress: Progress, cancel: CancelCheck | None) -> None:
    t = time.perf_counter()
    before = measure_perplexity(loaded, tokens, (), spec.batch_size, progress, cancel, "ppl_before")
    after = measure_perplexity(loaded, tokens, plan.removed, spec.batch_size, progress, cancel, "ppl_after")
    report.ppl_before, report.ppl_after, report.eval_tokens = before.perplexity, after.perplexity, before.tokens
    report.timings["perplexity"] = time.perf_counter() - t
    if spec.prompt:
        report.generation_prompt = spec.prompt
        report.generation_before = generate(loaded, spec.prompt, (), spec.max_new_tokens)
        report.generation_after = generate(loaded, spec.prompt, plan.removed, spec.max_new_tokens)


def run_eval(spec: JobSpec, other: str | None = None, progress: Progress = _noop,
             cancel: CancelCheck | None = None, on_info: Callable[[ModelInfo], None] | None = None) -> Report:
    """Perplexity of a model (and optionally of a second one, e.g. its pruned copy) on the same tokens.

    The second model is tokenized with the first one's tokenizer (a pruned copy shares it) and both are in
    memory at once.
    """
    started = time.perf_counter()
    loaded = open_model(spec, progress, cancel, on_info)
    report = new_report(loaded, spec)
    tokens, report.calibration, report.warnings = prepare_tokens(loaded, spec)
    before = measure_perplexity(loaded, tokens, (), spec.batch_size, progress, cancel, "ppl_before")
    report.ppl_before, report.eval_tokens = before.perplexity, before.tokens
    if other:
        second = open_model(JobSpec(model=other, device=spec.device, dtype=spec.dtype,
                                    trust_remote_code=spec.trust_remote_code), progress, cancel)
        after = perplexity_of(second.model, tokens.eval_windows, tokens.pad_id, spec.batch_size, cancel,
                              lambda d, t: progress("ppl_after", d, t, None))
        report.ppl_after = after.perplexity
    report.seconds = time.perf_counter() - started
    return report
