"""The job's settings (:class:`JobSpec`) and the stateless steps the engine is made of.

:class:`~.engine.Engine` holds the state and calls these; tests and benchmarks may call them directly on a
:class:`~.loading.LoadedModel`. Progress and cancel follow :mod:`.progress`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..format import in_number
from . import defaults
from .cut.plan import PrunePlan
from .cut.surgery import pruned_view
from .errors import CalibrationError
from .formats.provenance import earlier_removed, first_original, source_license
from .formats.safetensors_writer import SaveResult, save_pruned
from .measure.calibration import (
    BUILTIN_CORPUS,
    SAMPLES_SHORT,
    TextProgress,
    TokenSet,
    build_token_set,
    builtin_corpus,
    collect_files,
    read_texts,
    surely_too_short,
)
from .measure.evaluation import PerplexityResult, generate_text, has_chat_template, perplexity_of
from .model.config import architecture_name
from .model.dtypes import stored_bytes_per_element
from .model.loading import LoadedModel, ModelInfo, inspect_model, load_model, trained_positions
from .model.sources import ModelSource, file_stamp, resolve
from .progress import CancelCheck, Progress, no_progress
from .report import Report, model_card
from .user_paths import exists, not_there

log = logging.getLogger(__name__)

DEFAULT_PROMPT = defaults.PROMPT


@dataclass
class JobSpec:
    """What the user asked for, as plain data (the CLI builds it from flags, the window from widgets)."""

    model: str
    calib: list[str] = field(default_factory=list)  # empty or ["builtin"] → built-in corpus
    eval_text: str | None = None
    samples: int = defaults.SAMPLES
    seq_len: int = defaults.SEQ_LEN
    batch_size: int = defaults.BATCH_SIZE
    seed: int = 0
    metric: str = defaults.METRIC
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
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    eval_windows: int = defaults.EVAL_WINDOWS
    output_format: str | None = None  # "gguf" or "safetensors"; None: the source's own format
    low_memory: bool | None = None  # one layer at a time; None: only when the model would not fit
    repair: str = defaults.REPAIR  # "linear": refit the layers around each removed run (closed form); "none"
    heal_steps: int = 0  # LoRA steps on the calibration text, merged into the weights (0: no healing)
    #: Only the scoring pass runs (``shortgpt score``): nothing is chosen, repaired or healed, so the memory
    #: estimate and the way the model runs count none of it (a score said 2.3 GB where its peak was 0.8 GB).
    scores_only: bool = False


_noop = no_progress


# ------------------------------------------------------------------------------------------------- steps


#: How a report's ``calibration`` names the built-in corpus (the summary reads it there).
BUILTIN_CORPUS_NAME = "built-in corpus (Python standard library docstrings)"


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
        on_info(inspect_model(source, spec.device, spec.dtype, samples=spec.samples, seq_len=spec.seq_len,
                              batch_size=spec.batch_size))
    progress("load", 0, 1, None)
    loaded = load_model(source, spec.device, spec.dtype, spec.trust_remote_code, cancel)
    progress("load", 1, 1, None)
    return loaded


def read_calibration(paths: Sequence[str], what: str = "calibration") -> tuple[list[str], list[str], list[str]]:
    """(texts, names used, warnings) for calibration paths; none or ``builtin`` gives the built-in corpus.
    ``what``: the text's name in the sentence when none of it is usable ("evaluation" for ``--eval-text``)."""
    paths = list(paths)
    use_builtin = not paths or BUILTIN_CORPUS in paths
    files = [p for p in paths if p != BUILTIN_CORPUS]
    texts: list[str] = []
    names: list[str] = []
    warnings: list[str] = []
    if files:
        text_set = read_texts(files, what)
        texts += text_set.texts
        names += [str(p) for p in text_set.files]
        warnings += text_set.skipped
        if not text_set.texts and not use_builtin:
            more = len(text_set.skipped) - 1
            why = (text_set.skipped[0].rstrip(".") if text_set.skipped
                   else f"no files were found in {', '.join(str(f) for f in files)}")
            raise CalibrationError(
                f"No usable {what} text: {why[:1].lower()}{why[1:]}"
                + (f" (and {more} more file{'s' if more > 1 else ''} skipped)." if more > 0 else ".")
            )
    if use_builtin:
        texts += builtin_corpus()
        names.append(BUILTIN_CORPUS_NAME)
    return texts, names, warnings


def text_paths(spec: JobSpec) -> list[str]:
    """The calibration and evaluation paths the job reads from disk (the built-in corpus ships with the app)."""
    listed = [*spec.calib, *([spec.eval_text] if spec.eval_text else [])]
    return [p for p in listed if p != BUILTIN_CORPUS]


def text_stamp(spec: JobSpec) -> tuple:
    """Each calibration and evaluation file's path, size and modification time: tokens cut before a file was
    edited (or a file added to a listed folder) are not the text any more. Empty where the paths cannot be listed
    (reading them says why)."""
    # The built-in corpus ships with the app; as the evaluation text too it must be left out ("the calibration path
    # builtin does not exist" emptied the stamp, and an edited calibration file went unnoticed).
    try:
        return tuple(file_stamp(f) for f in collect_files(text_paths(spec)))
    except (OSError, CalibrationError):
        return ()


def reads_only_evaluation_text(spec: JobSpec) -> bool:
    """Whether a prune reads no calibration text, only its evaluation text: layers given by hand, nothing fitted
    (no repair, no healing), and the check measured on an evaluation text of its own."""
    return (spec.layers is not None and spec.repair == "none" and spec.heal_steps == 0 and spec.check_perplexity
            and bool(spec.eval_text))


def check_sample_length(info: ModelInfo | None, seq_len: int) -> None:
    """Refuse samples longer than a model with a table of positions reads (GPT-2's 1,024, GPT-J's 2,048): the table
    was indexed past its end, an IndexError traceback in the middle of the job."""
    limit = info.context_length if info is not None else None
    if limit is not None and seq_len > limit:
        raise CalibrationError(f"Samples of {seq_len:,} tokens are longer than {info.name} can read ({limit:,} "
                               f"positions); use samples of at most {limit:,} tokens.")


def check_calibration(spec: JobSpec, checks_a_cut: bool = False) -> list[str]:
    """Refuse unusable calibration text (empty, binary-only, missing) before the model is loaded; returns one
    sentence per file (or record) that will be left out, for the front ends to say at the start of a job.
    ``checks_a_cut``: the job measures a cut on the evaluation text (a prune's check, a sweep), so an evaluation
    text that is also calibration text is said (``eval``, ``score`` and ``prune --no-eval`` measure none)."""
    if not spec.calib:
        raise CalibrationError("The calibration set is empty: add text files or folders, or use the built-in "
                               "corpus.")
    if spec.eval_text and spec.eval_text != BUILTIN_CORPUS and not exists(spec.eval_text):
        raise CalibrationError(f"The evaluation text {spec.eval_text} {not_there(spec.eval_text)}.")
    texts, names, warnings = read_calibration(spec.calib)
    too_short = surely_too_short(texts, held_out=not spec.eval_text)
    if too_short:
        raise CalibrationError(too_short)
    if spec.eval_text:
        _, eval_names, eval_warnings = read_calibration([spec.eval_text], "evaluation")
        warnings += eval_warnings + (_also_calibration(spec, names, eval_names) if checks_a_cut else [])
    return warnings


#: The notes about what the calibration text gives the job; left out where the job did not use it (a cut by hand, with
#: nothing fitted, checked on its own text: "is also calibration text" was said of text the job never used).
ALSO_CALIBRATION = "is also calibration text"


def about_calibration_use(note: str) -> bool:
    """Whether ``note`` speaks of what the calibration text gave the job or of its use (:data:`ALSO_CALIBRATION`,
    :data:`SAMPLES_SHORT`)."""
    return note.startswith(SAMPLES_SHORT) or ALSO_CALIBRATION in note


def _also_calibration(spec: JobSpec, names: list[str], eval_names: list[str]) -> list[str]:
    """The sentence where the evaluation text is also calibration text (``names``, ``eval_names``: the files each
    read, or the built-in corpus's name): the check then measures on text the layers were chosen and repaired on,
    which reads better than text the model has not seen (it was said nowhere)."""
    if not set(eval_names) & set(names):
        return []
    return [f"The evaluation text {spec.eval_text} {ALSO_CALIBRATION}: the check measures the pruned model on "
            "text its layers were chosen and repaired on, so it reads better than on text it has not seen."]


def prepare_tokens(loaded: LoadedModel, spec: JobSpec,
                   on_text: TextProgress | None = None) -> tuple[TokenSet, list[str], list[str]]:
    """Token samples and perplexity windows for the spec; returns (tokens, calibration names, warnings).
    ``on_text(characters, in_all)``: how far tokenising is."""
    texts, names, warnings = read_calibration(spec.calib)
    eval_texts = None
    if spec.eval_text:
        eval_texts, _, eval_warnings = read_calibration([spec.eval_text], "evaluation")
        warnings += eval_warnings
    tokens = build_token_set(
        loaded.tokenizer, texts, eval_texts, spec.samples, spec.seq_len, spec.seed,
        max_eval_windows=spec.eval_windows, on_text=on_text,
    )
    got = len(tokens.samples)
    if got == 1 and len(tokens.samples[0]) < spec.seq_len:
        # the text ran out inside its one sample: "1 sample of 512 tokens" was said of one of 20 (a walkthrough)
        warnings.append(f"{SAMPLES_SHORT} 1 sample, of {len(tokens.samples[0]):,} tokens ({spec.samples:,} "
                        f"{in_number(spec.samples, 'sample')} of {spec.seq_len:,} tokens asked for).")
    elif got < spec.samples:
        warnings.append(f"{SAMPLES_SHORT} {got:,} {in_number(got, 'sample')} of {spec.seq_len:,} tokens "
                        f"({spec.samples:,} asked for).")
    beyond = beyond_trained_positions(loaded.source.display_name, trained_positions(loaded.config), spec.seq_len)
    if beyond:
        warnings.append(beyond)
    return tokens, names, warnings


def fewer_windows(spec: JobSpec, tokens: TokenSet) -> str | None:
    """The note for a check, curve or evaluation measured on fewer held-out windows than asked for: the text gave no
    more (``--eval-windows 1000`` measured 70 without a word; only the tokens measured hinted at it)."""
    got = len(tokens.eval_windows)
    if not got or got >= spec.eval_windows:
        return None
    if not spec.eval_text:
        source, more = "The calibration text's held-out end", "more calibration text"
    elif spec.eval_text == BUILTIN_CORPUS:
        source, more = "The built-in corpus", "a longer evaluation text"
    else:
        source, more = f"The evaluation text {spec.eval_text}", "a longer evaluation text"
    return (f"{source} gives only {got:,} {in_number(got, 'window')} of at most {spec.seq_len:,} tokens "
            f"({spec.eval_windows:,} asked for), and perplexity is measured on {in_number(got, 'it', 'them')}; give "
            f"{more} to measure on more.")


class _Warned(Protocol):
    """What states its figures' warnings: a report or a quality curve."""

    warnings: list[str]
    text_ran_out: bool


def note_fewer_windows(target: _Warned, spec: JobSpec, tokens: TokenSet) -> bool:
    """Put :func:`fewer_windows`'s note among ``target``'s warnings and mark that the text ran out (the summary and
    the window then advise more text rather than more windows). False where the text gave every window asked."""
    fewer = fewer_windows(spec, tokens)
    if fewer is None:
        return False
    target.warnings.append(fewer)
    target.text_ran_out = True
    return True


def beyond_trained_positions(name: str, trained: int | None, seq_len: int) -> str | None:
    """The note for samples longer than a model with computed positions (RoPE, ALiBi) was trained on (``trained``:
    :func:`~.loading.trained_positions`). It runs them, so the job went on without a word (``--seq-len 4096`` on a
    model trained on 1,024), though past that point its states, and so its scores and perplexity, come from
    positions it never saw. A table of positions is refused before the model loads (:func:`check_sample_length`)."""
    if trained is None or seq_len <= trained:
        return None
    return (f"Samples of {seq_len:,} tokens are longer than {name} was trained to read ({trained:,} positions): past "
            f"that its scores and perplexity come from positions it never saw; use samples of at most {trained:,} "
            "tokens.")


def checkpoint_bytes_per_param(loaded: LoadedModel) -> float:
    """Bytes per parameter the saved folder will use: what the source checkpoint stores (its tensors are copied
    byte for byte), or memory's for GGUF. Not the loaded config's dtype: that is the dtype the model was loaded
    in (a bfloat16 checkpoint loaded in float32 on a CPU said float32, and twice its size)."""
    if loaded.source.gguf_file is not None:
        return float(next(loaded.model.parameters()).element_size())
    return stored_bytes_per_param(loaded.source)


def stored_bytes_per_param(source: ModelSource) -> float:
    """Bytes per value the checkpoint stores: from its safetensors files' headers, else (legacy .bin files, whose
    dtypes would need the files loaded) its config.json's dtype, else 4."""
    import json

    from .formats.safetensors_reader import stored_values_and_bytes

    totals = [stored_values_and_bytes(w.path) for w in source.weight_files if w.format == "safetensors"]
    values = sum(v for v, _ in totals)
    if values:
        return sum(b for _, b in totals) / values
    try:
        config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return stored_bytes_per_element(config)


def measure_perplexity(loaded: LoadedModel, tokens: TokenSet, removed: Sequence[int] = (), batch_size: int = 4,
                       progress: Progress = _noop, cancel: CancelCheck | None = None,
                       stage: str = "perplexity", weights: dict[str, Any] | None = None) -> PerplexityResult:
    """Perplexity on the held-out windows, of the model as loaded or with ``removed`` layers pruned.

    ``weights`` (parameter names with original layer indices → values: a repair, a healing) replace the
    loaded ones for this measurement only.
    """
    def report(done: int, total: int) -> None:
        progress(stage, done, total, None)

    with modified(loaded, removed, weights):
        return perplexity_of(loaded.model, tokens.eval_windows, tokens.pad_id, batch_size, cancel, report)


@contextmanager
def modified(loaded: LoadedModel, removed: Sequence[int] = (), weights: dict[str, Any] | None = None
             ) -> Iterator[None]:
    """The loaded model with ``weights`` put in and ``removed`` layers pruned, for the block only."""
    from .model.weights_view import weights_view

    with weights_view(loaded.model, dict(weights or {})):
        if removed:
            with pruned_view(loaded.model, loaded.family, removed):
                yield
        else:
            yield


def generate(loaded: LoadedModel, prompt: str, removed: Sequence[int] = (), max_new_tokens: int = 24,
             chat: bool | None = None, weights: dict[str, Any] | None = None,
             after_token: Callable[[int], None] | None = None) -> str:
    """Greedy continuation with the cache on, of the original or the pruned (and repaired) model;
    ``after_token(written)`` follows each new token.

    ``chat=None`` uses the model's chat template when it has one.
    """
    if chat is None:
        chat = has_chat_template(loaded.tokenizer)
    with modified(loaded, removed, weights):
        return generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens, chat, after_token)


def save(loaded: LoadedModel, plan: PrunePlan, out: str | Path, report: Report | None = None,
         force: bool = False, progress: Progress = _noop, cancel: CancelCheck | None = None,
         max_shard_bytes: int | None = None, weights: dict[str, Any] | None = None) -> SaveResult:
    """Write the pruned model (with its model card) to ``out``, atomically."""
    card = model_card(report, loaded.source.card_name) if report is not None else ""
    kwargs = {"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}
    return save_pruned(
        source=loaded.source, family=loaded.family, original_config=loaded.config, removed=plan.removed,
        out=out, model=loaded.model, tokenizer=loaded.tokenizer, card_text=card, force=force,
        progress=lambda stage, done, total: progress(stage, done, total, None), cancel=cancel,
        replaced=weights, **kwargs,
    )


# --------------------------------------------------------------------------------------------------- jobs


def new_report(loaded: LoadedModel, spec: JobSpec) -> Report:
    source = loaded.source
    # a Hub repo's model (its id), or one GGUF file of a Hub repo (its address, which names the file and runs again:
    # the card named the repo, which is refused as GGUF files alone, and no file; a review)
    hub = source is not None and bool(source.repo_id)
    hub_file = source is not None and source.kind == "gguf" and bool(source.repo_id)
    return Report(
        license=source_license(source),
        earlier_removed=earlier_removed(source),
        first_original=first_original(source),
        # a Hub model by its id, where it was given by its page's address (the card's heading said "dev")
        model=(spec.model if hub_file else source.as_cached(source.repo_id or spec.model)) if source is not None
        else spec.model,
        model_revision=(source.revision or "main") if hub else "",
        model_commit=source.folder.name if hub else "",  # the Hub cache's snapshot folder is named by its commit
        architecture=architecture_name(loaded.config),
        n_layers=loaded.n_layers,
        metric=spec.metric,
        device=loaded.device,
        dtype=loaded.dtype,
        samples=spec.samples,
        seq_len=spec.seq_len,
        seed=spec.seed,
    )
