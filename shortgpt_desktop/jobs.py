"""The command line's whole jobs (score, prune, sweep, eval) as chains of engine steps."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .core import pipeline
from .core.backends import ops
from .core.cut.plan import (
    MAX_LAYER_INDEX,
    PrunePlan,
    check_layer_list,
    check_possible,
    check_removable,
    count_for_ratio,
    max_removable,
    more_than_half,
)
from .core.cut.surgery import layer_sizes
from .core.engine import Engine, streamed_check_note
from .core.errors import ModelSourceError, PlanError, UnsupportedModelError, UserError
from .core.formats.output_folder import check_output_folder
from .core.formats.provenance import layers_a_copy_lacks
from .core.formats.writers import expanded_from_gguf
from .core.measure.calibration import BUILTIN_CORPUS
from .core.measure.metrics import get_metric
from .core.measure.quiz import lost_most, marked, model_answers, quiz_prompts
from .core.model.loading import ModelInfo, load_tokenizer
from .core.model.sources import weights_stamp
from .core.pipeline import JobSpec
from .core.progress import CancelCheck, Progress, no_progress
from .core.report import Report, model_bytes
from .core.user_paths import shown_model
from .format import collapsed, human_bytes, shell_word

InfoCallback = Callable[[ModelInfo], None]
#: Hears, at the start of a job, each sentence about what will be left out (a calibration file that is not text).
NoteCallback = Callable[[str], None]


def _checked_request(spec: JobSpec) -> None:
    """What can be checked before anything is opened (so a typo costs no download and no load)."""
    get_metric(spec.metric)
    given = sum(x is not None for x in (spec.ratio, spec.count, spec.layers))
    if given != 1:
        raise PlanError("Say how much to remove: a ratio, a number of layers, or a list of layers.")
    if spec.ratio is not None and not 0 < spec.ratio < 1:
        percent = f"; for {spec.ratio:g}% write {spec.ratio / 100:g}" if 1 < spec.ratio < 100 else ""
        if percent and spec.ratio == int(spec.ratio):  # "--ratio 2" may mean two layers as well
            percent += f", for {int(spec.ratio)} layers --layers {int(spec.ratio)}"
        raise PlanError(f"The ratio must be above 0 and below 1 (got {spec.ratio:g}){percent}.")
    if spec.count is not None and spec.count < 1:
        raise PlanError(f"The number of layers to remove must be at least 1 (got {spec.count}).")
    if spec.layers is not None:
        check_possible(spec.layers)  # (check_layer_list would name a depth it does not know yet)
        check_layer_list(spec.layers, MAX_LAYER_INDEX)  # repeats and negatives (the depth is checked once it is read)


def _checked_before_model(spec: JobSpec, *, text: bool, out: str | None = None, progress: Progress = no_progress,
                          cancel: CancelCheck | None = None, on_note: NoteCallback | None = None,
                          checks_a_cut: bool = False) -> None:
    """Everything the paths and the text can tell, before the model is inspected or loaded.

    The calibration text is read (a folder of PDFs is refused here, and every file left out is said through
    ``on_note``), then the output folder is checked against the source's path, which resolving the model gives
    without reading its config.
    """
    if text:
        for sentence in collapsed(pipeline.check_calibration(spec, checks_a_cut)):
            if on_note is not None:
                on_note(sentence)
    if out:
        source = pipeline.resolve_source(spec.model, spec.revision, progress, cancel)
        check_output_folder(Path(out), source, spec.force)


def _count_asked(spec: JobSpec, n_layers: int) -> int:
    """How many layers the job removes: the list's, the count, or the ratio's share of ``n_layers``."""
    if spec.layers is not None:
        return len(set(spec.layers))
    return spec.count if spec.count is not None else count_for_ratio(float(spec.ratio), n_layers)  # type: ignore[arg-type]


def _checked_against_model(spec: JobSpec, n_layers: int) -> None:
    """What the layer count (known from the config) can tell about the request."""
    if spec.layers is not None:
        check_layer_list(spec.layers, n_layers)
        return
    check_removable(_count_asked(spec, n_layers), n_layers)


def _note_long_samples(info: ModelInfo, spec: JobSpec, on_note: NoteCallback | None) -> None:
    """Say samples longer than the model was trained on when its header is read: the job reports it too (where the
    window shows it), but on a real model that is after minutes of scoring. Not for a model with a table of
    positions (GPT-2, OPT, GPT-J): such samples are refused (:func:`.core.pipeline.check_sample_length`), and the
    note before the refusal told it to run them past where it read."""
    if info.context_length is not None:
        return
    note = pipeline.beyond_trained_positions(info.name, info.trained_positions, spec.seq_len)
    if note is not None and on_note is not None:
        on_note(note)


def _note_more_than_half(spec: JobSpec, n_layers: int, on_note: NoteCallback | None) -> None:
    """Say a cut of more than half the layers before it runs: ``--ratio 0.99`` removed 17 of 18 layers of Gemma 3
    270M without a word (``--layers 18`` is refused: it leaves none)."""
    if spec.layers is None and spec.count is None and spec.ratio is None:
        return
    count = _count_asked(spec, n_layers)
    if on_note is not None and more_than_half(count, n_layers):
        on_note(f"removing {count} of {n_layers} layers, more than half: past half its layers a model rarely still "
                "answers (shortgpt sweep draws where it breaks).")


def run_score(engine: Engine, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None,
              on_info: InfoCallback | None = None, on_note: NoteCallback | None = None) -> Report:
    """Check the text, open, load and score; nothing is written but the report."""
    metric = get_metric(spec.metric)
    started = time.perf_counter()
    spec = dataclasses.replace(spec, scores_only=True)
    _checked_before_model(spec, text=metric.needs_text, on_note=on_note)
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    if metric.needs_text:
        _note_long_samples(info, spec, on_note)
    engine.score(spec, progress, cancel)
    report = engine.report(engine.plan(0), spec)
    if metric.needs_text and spec.eval_text:
        # no perplexity is measured, but with it the calibration text is read whole: the report said eval_text null
        # beside scores that differ from a run without it
        report.eval_text = spec.eval_text
    report.seconds = time.perf_counter() - started
    return report


def run_prune(engine: Engine, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None,
              on_info: InfoCallback | None = None, on_note: NoteCallback | None = None) -> Report:
    """Check what the request, the text and the paths can tell; open (headers only) and check what the config
    can tell; then score, plan, check before/after, save."""
    _checked_request(spec)
    if not spec.out:
        raise UserError("Give an output folder.")
    started = time.perf_counter()
    needs_scores = spec.layers is None
    only_evaluation_text = pipeline.reads_only_evaluation_text(spec)
    if only_evaluation_text:
        # Nothing reads the calibration text: a short one was refused ("too short") and said to be "also calibration
        # text" of the check's own text. The built-in corpus stands in, as for eval (it is still tokenised).
        spec = dataclasses.replace(spec, calib=[BUILTIN_CORPUS])
    needs_text = needs_scores or spec.check_perplexity or spec.repair != "none" or spec.heal_steps > 0
    _checked_before_model(spec, text=needs_text, out=spec.out, progress=progress, cancel=cancel, on_note=on_note,
                          checks_a_cut=spec.check_perplexity and not only_evaluation_text)
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    if needs_text:
        _note_long_samples(info, spec, on_note)
    _checked_against_model(spec, info.n_layers)
    _note_more_than_half(spec, info.n_layers, on_note)
    engine.set_output_format(spec.output_format)
    engine.mode_for(spec)  # refuses, before loading, a model that fits neither way
    engine.check_output_job(spec)  # a GGUF output that cannot be written: refused before scoring
    engine.refusal(spec, spec.metric if needs_scores else None)  # what that mode cannot run: before scoring too
    # after the refusals: the size of a safetensors copy was said, then low-memory mode refused to write one
    if engine.source is not None and engine.source.gguf_file and engine.resolved_format == "safetensors" \
            and on_note is not None:
        note = expanded_from_gguf(info.bytes_on_disk, info.n_params, info.dtype)
        if note is not None:  # its size was said only once written
            on_note(note)
    if needs_scores:
        count = _count_asked(spec, info.n_layers)
        engine.check_room_before_scoring(spec.out, count)  # the least the output can weigh: before the long pass
        engine.score(spec, JobClock(engine, spec, count, progress), cancel)
    else:
        engine.load(spec, progress, cancel)
        engine.sizes = layer_sizes(engine.loaded.model, engine.loaded.family,  # type: ignore[union-attr]
                                   pipeline.checkpoint_bytes_per_param(engine.loaded))  # type: ignore[arg-type]
        engine.scored_spec = spec
    plan = engine.plan_for_spec(spec)
    engine.check_room(spec.out, plan, spec)  # a disk too full for the output: said before the long steps
    if not needs_scores:
        _say_timed_estimate(engine, spec, plan.removed, progress, cancel)
    if engine.needs_refining(plan):
        plan = engine.refine(spec, len(plan.removed), progress, cancel)
    engine.check_output_job(spec, plan.removed)  # the layers are known now: refused before repair and healing
    _note_larger_output(engine, plan, spec, on_note)
    plan = engine.prepare(spec, plan, progress, cancel, out=spec.out)
    if spec.check_perplexity:
        engine.check(spec, plan.removed, spec.prompt, progress, cancel)
    report = engine.report(plan, spec)
    t = time.perf_counter()
    result = engine.save(plan, spec.out, report, spec.force, progress, cancel)
    report.timings["saving"] = time.perf_counter() - t
    report.output = str(result.folder)
    report.bytes_after = model_bytes(result.folder, result.files)  # what was written, re-quantized tensors too
    report.output_files = [f for f in result.files if f.endswith((".gguf", ".safetensors"))]
    report.seconds = time.perf_counter() - started
    return report


def _note_larger_output(engine: Engine, plan: PrunePlan, spec: JobSpec, on_note: NoteCallback | None) -> None:
    """The saved model's size where it will outweigh the original, said before the repair and healing run: a healed
    4-bit SmolLM2 came to 122 MB from 98 MB, said only after its healing (minutes to hours). Where the repair is not
    fitted yet the size is the most it can come to ("up to": it may leave some weights alone)."""
    from .core.formats.writers import WeightChanges

    if on_note is None or not plan.bytes_before or plan.bytes_after <= plan.bytes_before:
        return
    bound = "up to" if plan.reencoded_at_most else "about"
    why = "healing changes nearly every kept weight" if spec.heal_steps > 0 else "the weights the repair changes are"
    unhealed = ""
    if spec.heal_steps > 0:
        sizes = engine.output_sizes(plan.removed, WeightChanges.of(dataclasses.replace(spec, heal_steps=0)))
        if sizes is not None and sizes[1] < plan.bytes_before:
            unhealed = f"; without --heal it would be at most {human_bytes(sizes[1])}"
    on_note(f"the saved model will be {bound} {human_bytes(plan.bytes_after)}, larger than the original's "
            f"{human_bytes(plan.bytes_before)} in this format: {why} written at 8 bits or more where the source "
            f"has fewer{unhealed}.")


def _say_timed_estimate(engine: Engine, spec: JobSpec, removed: list[int], progress: Progress,
                        cancel: CancelCheck | None) -> None:
    """The whole job's time for a cut given by hand, which runs no scoring pass to measure the speed from: it said
    nothing, then took 460 s one layer at a time where the same job took 93 s in memory. Timed on one layer of its
    tokens (:meth:`.core.engine.Engine.timed_speed`); nothing to say where it only saves."""
    if spec.repair == "none" and spec.heal_steps == 0 and not spec.check_perplexity:
        return
    tokens = engine.tokens_for(spec, progress, cancel)
    rate = engine.timed_speed(spec, tokens, cancel)
    estimate = engine.estimate_at(spec, rate, tokens.sample_tokens, tokens.eval_tokens, len(removed), False,
                                  removed, len(tokens.samples))
    estimate.steps.pop("scoring", None)  # none runs
    estimate.basis = "a timed layer"
    progress("estimate", 0, 0, estimate)


class JobClock:
    """Passes progress on, and says how long the whole job will take (``progress("estimate", 0, 0,
    JobEstimate)``, see :mod:`.core.estimate`) from the scoring pass's measured speed: once its second batch is
    done, at that batch's speed (the first carries the pass's warm-up: on a real SmolLM2 job it took 11.5 s where
    the others took 5.9 s, and the estimate from it said 33 min for a job of 11), and again when the pass ends, at
    the speed of all its batches but the first. A pass of one or two batches is said once, at its end."""

    def __init__(self, engine: Engine, spec: JobSpec, count: int, progress: Progress) -> None:
        self.engine, self.spec, self.count, self.progress = engine, spec, count, progress
        self.marks: list[tuple[int, float]] = []  # (samples or layers done, when) since the pass started
        self.ended = False

    def __call__(self, stage: str, done: int, total: int, partial: Any = None) -> None:
        self.progress(stage, done, total, partial)
        if stage != "scoring" or self.ended:
            return
        if done == 0:
            self.marks = [(0, time.perf_counter())]
            return
        if not self.marks or self.engine.loaded is None or self.engine.tokens is None:
            return
        self.marks.append((done, time.perf_counter()))
        batches, self.ended = len(self.marks) - 1, done >= total
        scores = partial if self.ended else None  # the whole pass's BI once it ends
        if batches == 1 and self.ended:  # a pass of one batch
            self._say(self.marks[0], total, "the first scoring batch", scores)
        elif batches == 2:
            self._say(self.marks[1], total, "the second scoring batch", scores)
        elif self.ended:  # all the batches but the first
            self._say(self.marks[1], total, "the scoring pass", scores)

    def _removed(self, bi: Any) -> list[int] | None:
        """The layers the repair will fit for, where they are known: plain BI's lowest once its pass has ended; else
        None (the estimate guesses one run per two layers, each stream the whole model)."""
        from .core.measure.metrics import get_metric

        if self.spec.metric == "bi" and isinstance(bi, list) and len(bi) == self.engine.n_layers \
                and all(value is not None for value in bi):
            return list(get_metric("bi").removal(bi, self.count))
        return None

    def _say(self, since: tuple[int, float], total: int, basis: str, scores: Any = None) -> None:
        from .core.measure.metrics import get_metric

        tokens = self.engine.tokens
        assert tokens is not None
        per_sample = tokens.sample_tokens / max(len(tokens.samples), 1)
        done, now = self.marks[-1]
        # In memory the pass counts samples through every layer; one layer at a time it counts layers.
        samples = total == len(tokens.samples)
        unit = per_sample * self.engine.n_layers if samples else tokens.sample_tokens
        rate = (now - since[1]) / max(unit * (done - since[0]), 1.0)
        estimate = self.engine.estimate_at(self.spec, rate, tokens.sample_tokens, tokens.eval_tokens, self.count,
                                           get_metric(self.spec.metric).refines, self._removed(scores),
                                           len(tokens.samples))
        estimate.basis = basis
        self.progress("estimate", 0, 0, estimate)


def run_sweep(engine: Engine, spec: JobSpec, max_removed: int | None = None, progress: Progress = no_progress,
              cancel: CancelCheck | None = None, on_info: InfoCallback | None = None,
              on_note: NoteCallback | None = None) -> Any:
    """Check the text, open, score, and measure the quality curve; its ``seconds`` are the whole job's, as score's
    and prune's are (they left out the load, the tokenising and the scoring; a walkthrough)."""
    started = time.perf_counter()
    _checked_before_model(spec, text=True, on_note=on_note, checks_a_cut=True)
    info = engine.open(spec, progress, cancel)
    if on_info is not None:
        on_info(info)
    _note_long_samples(info, spec, on_note)
    if max_removed is not None and not 1 <= max_removed <= max_removable(info.n_layers):
        raise PlanError(f"The curve can go up to {max_removable(info.n_layers)} removed layers of {info.n_layers} "
                        f"(asked for {max_removed}).")
    engine.score(spec, progress, cancel)
    estimate = engine.curve_estimate(spec, max_removed)
    if estimate is not None:  # the rest, at the scoring pass's speed (each step said only its own time left)
        progress("estimate", 0, 0, estimate)
    curve = engine.quality_curve(spec, max_removed, progress, cancel)
    curve.seconds = time.perf_counter() - started
    return curve


def run_eval(engine: Engine, spec: JobSpec, other: str | None = None, progress: Progress = no_progress,
             cancel: CancelCheck | None = None, on_info: InfoCallback | None = None,
             on_note: NoteCallback | None = None) -> Report:
    """Perplexity of a model (and optionally of a second one, e.g. its pruned copy) on the same tokens, and the
    second's fidelity to the first (KL divergence, same top token) and the check's quiz when both have the same
    embeddings, final norm and head (a pruned copy does).

    The second model is tokenized with the first one's tokenizer (a pruned copy shares it), runs the way the
    first does (``spec.low_memory``), and loads after the first is freed: only the first's final hidden states,
    its quiz answers and its weights outside the decoder layers are kept meanwhile. The quiz is asked where both
    run whole, as in the check (one layer at a time each new token would run every layer again).
    """
    started = time.perf_counter()
    # Nothing is scored, chosen or repaired: the memory estimate (and the way the model runs) counts neither
    # bi+'s caches nor the repair's streams, nor calibration samples (a text short of --samples was warned about).
    spec = dataclasses.replace(spec, metric="bi", repair="none", samples=1)
    if spec.eval_text:  # the calibration text is not read at all: a short one was refused ("too short")
        spec = dataclasses.replace(spec, calib=[BUILTIN_CORPUS])
    _checked_before_model(spec, text=True, on_note=on_note)
    second: Engine | None = None
    other_spec = None
    if other:  # found (its header read) before the first model's passes: a wrong path costs nothing
        other_spec = dataclasses.replace(spec, model=other, revision=None, eval_text=None)
        second = Engine()
        with _named(other):
            other_info = second.open(other_spec, progress, cancel)
    with _named(spec.model if other else None):
        info = engine.open(spec, progress, cancel)
    if second is not None:
        pipeline.check_sample_length(other_info, spec.seq_len)  # it reads the first model's windows
        if second.source is not None and second.source.gguf_file is None:
            # Its tokenizer, read now: a folder without one failed only when it loaded, after the first model's
            # passes (minutes on a real model). A GGUF file carries its own.
            load_tokenizer(second.source, spec.trust_remote_code)
        if on_note is not None and _same_weight_files(engine, second):
            on_note(f"{other} and {spec.model} are the same weight files: both are measured, and their figures will "
                    "be the same.")
        elif on_note is not None and _reference_looks_pruned(engine, info, second, other_info):
            # `eval pruned.gguf --against original.gguf` reported everything backwards (x0.70, the original
            # "answers 3 of the 4 questions" the pruned model knew) without a word
            on_note(f"{spec.model} is a model this app pruned, with fewer layers than {other}: the first model is the "
                    f"reference, so the figures read backwards; to measure the cut, run shortgpt eval "
                    f"{shell_word(other)} --against {shell_word(spec.model)} with the other options as given.")
    if second is not None and other_info.vocab_size != info.vocab_size:
        # Its tokens are the first model's: ids past its vocabulary raised IndexError (a traceback), and
        # perplexities over two tokenizations would not compare anyway.
        raise ModelSourceError(
            f"{other} has a vocabulary of {other_info.vocab_size:,} tokens and {spec.model} one of "
            f"{info.vocab_size:,}: they do not share a tokenizer, so they cannot be measured on the same tokens; "
            "compare a model with a pruned copy of it.")
    if on_info is not None:
        on_info(info)
        if second is not None:  # loaded once the first is freed: the job needs the larger of the two figures
            on_info(other_info)
    _note_long_samples(info, spec, on_note)
    if second is not None:  # it reads the first model's windows
        _note_long_samples(other_info, spec, on_note)
    with _named(spec.model if other else None):
        loaded, tokens = engine.held_out(spec, progress, cancel)
    report = pipeline.new_report(loaded, spec)
    # Nothing was scored or sampled: the JSON named the metric, the one sample and the built-in corpus this job's
    # spec carries for the estimate. The calibration text is named where the windows were cut from its end.
    report.metric, report.samples = "", 0
    report.repair = ""  # nothing is repaired here: "none" read as said of the --against model, repaired or not
    report.calibration = [] if spec.eval_text else list(engine.token_names)
    report.warnings = list(engine.token_warnings)
    pipeline.note_fewer_windows(report, spec, tokens)
    report.eval_text, report.against = spec.eval_text, other
    # Each model's size as the summary printed it (the JSON said 0 for both): the second's as the "after" figures
    report.params_before, report.bytes_before = info.n_params, info.bytes_on_disk
    if second is not None:
        report.params_after, report.bytes_after = other_info.n_params, other_info.bytes_on_disk
    reference = engine.reference_for(spec, tokens, progress, cancel)
    report.ppl_before, report.eval_tokens = reference.result.perplexity, reference.result.tokens
    if second is not None and other_spec is not None:
        assert engine.backend is not None
        engine.backend.stack.prepare_head()  # a streamed head is dropped after each head step
        outside = _outside_layers(engine.backend.stack)
        quiz = _first_quiz_answers(engine, loaded, spec, progress, cancel)
        if Engine.generates(spec.prompt) and not engine.backend.whole_model:
            report.warnings.append(streamed_check_note())
        tokenizer = loaded.tokenizer
        del loaded  # held here, the first model stayed in memory beside the second (SmolLM2: 1.3 GB at its load)
        engine.forget()
        with _named(other):
            second.load(other_spec, progress, cancel)
        assert second.backend is not None and second.loaded is not None
        _check_same_tokens(tokenizer, second.loaded.tokenizer, spec.model, other)
        stack = second.backend.stack
        stack.prepare_head()
        same_head = _outside_layers(stack).keys() == outside.keys() and all(
            torch_equal(value, outside[name]) for name, value in _outside_layers(stack).items())
        count = lambda done, total: progress("ppl_after", done, total, None)  # noqa: E731
        if same_head:
            # the layers it lacks, as a copy this app pruned records them (the JSON left them empty and the summary
            # said nothing of them); the same embeddings and head: a copy of this model, not of another
            report.removed_layers = layers_a_copy_lacks(engine.source, info.n_layers, second.source,
                                                        other_info.n_layers)
            if report.removed_layers:
                report.kept_layers = [i for i in range(info.n_layers) if i not in set(report.removed_layers)]
            after, fidelity = ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, (), None, cancel,
                                          count)
            report.fidelity = fidelity.to_json()
            if quiz is not None and not second.backend.whole_model:  # the second alone runs one layer at a time
                report.warnings.append(streamed_check_note())
            elif quiz is not None:
                prompts, first_answers = quiz
                second_answers = model_answers(stack, tokenizer, prompts, "quiz_after", progress=progress,
                                               cancel=cancel)
                asked = marked(first_answers, second_answers, prompts.chat_template)
                report.quiz = asked.to_json()
                # as prune warns: the card of a model saved without a check sends its reader here for the quiz
                # named as the quiz line names them: two full paths made the warning three lines long
                lost = lost_most(asked.known, asked.kept, original=shown_model(spec.model), pruned=shown_model(other))
                if lost is not None:
                    report.warnings.append(lost)
        else:
            after = ops.perplexity(stack, tokens.eval_windows, tokens.pad_id, (), spec.batch_size, cancel=cancel,
                                   progress=count)
            report.warnings.append(f"{other} has other embeddings or another head than {spec.model}, so its KL "
                                   "divergence to it is not measured (perplexity only).")
        report.ppl_after = after.perplexity
        second.close()
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _named(model: str | None) -> Iterator[None]:
    """With two models (``eval --against``), a model's fault names it: "model.safetensors is truncated" did not
    say which of the two."""
    try:
        yield
    except (ModelSourceError, UnsupportedModelError) as exc:
        # Named already where the path stands as a word: "model" is not named by "model.safetensors is truncated"
        if model is None or re.search(rf"(^|[\s('\"]){re.escape(model)}($|[\s:;,)'\"]|\.($|\s))", str(exc)):
            raise
        exc.args = (f"{model}: {exc}",)
        raise


def _reference_looks_pruned(engine: Engine, info: ModelInfo, second: Engine, other_info: ModelInfo) -> bool:
    """Whether the reference (the first model) is a copy this app pruned and the --against model has more layers:
    the two given the other way round."""
    from .core.formats.provenance import earlier_removed

    return bool(earlier_removed(engine.source)) and other_info.n_layers > info.n_layers \
        and not earlier_removed(second.source)


def _same_weight_files(first: Engine, second: Engine) -> bool:
    """Whether the two opened models read the very same weight files (``eval m --against m``, or a link to it)."""
    if first.source is None or second.source is None:
        return False
    try:
        return [path for path, _, _ in weights_stamp(first.source)] == [
            path for path, _, _ in weights_stamp(second.source)]
    except OSError:
        return False


def _first_quiz_answers(engine: Engine, loaded: Any, spec: JobSpec, progress: Progress,
                        cancel: CancelCheck | None) -> tuple[Any, list[str]] | None:
    """The quiz's prompts and the first model's answers, where the check would ask it (a prompt, a model run
    whole); None elsewhere."""
    assert engine.backend is not None
    if not Engine.generates(spec.prompt) or not engine.backend.whole_model:
        return None
    prompts = quiz_prompts(loaded.tokenizer, loaded.model)
    if prompts is None:
        return None
    return prompts, model_answers(engine.backend.stack, loaded.tokenizer, prompts, "quiz_before",
                                  progress=progress, cancel=cancel)


def _check_same_tokens(tokenizer: Any, other_tokenizer: Any, model: str, other: str) -> None:
    """Refuse a second model whose token ids mean other tokens than the first's: it reads the first's ids, so with a
    vocabulary of the same size and another tokenizer (Llama 2 and Mistral, 32,000 each) its perplexity was printed
    for text it never saw (one with the same weights read 100% same top token)."""
    if tokenizer is None or other_tokenizer is None:
        return
    if tokenizer.get_vocab() != other_tokenizer.get_vocab():
        raise ModelSourceError(
            f"{other} and {model} have vocabularies of the same size but not the same tokens: they do not share a "
            "tokenizer, so they cannot be measured on the same tokens; compare a model with a pruned copy of it.")


def _outside_layers(stack: Any) -> dict[str, Any]:
    """The weights outside the decoder layers (embeddings, final norm, head), as CPU copies by name."""
    prefix = stack.family.layers_path + "."
    return {name: p.detach().to("cpu", copy=True) for name, p in stack.model.named_parameters()
            if not name.startswith(prefix) and p.device.type != "meta"}


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))
