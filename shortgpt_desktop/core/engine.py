"""The one engine under both faces: a stateful, Qt-free object that holds a job's state and runs its steps.

:class:`Engine` holds the model source, the loaded model, the calibration tokens, the scores, and the last
check. Its steps (:meth:`~Engine.open`, :meth:`~Engine.score`, :meth:`~Engine.plan`, :meth:`~Engine.check`,
:meth:`~Engine.save`) take the job's settings (:class:`~.pipeline.JobSpec`) and report progress and poll
cancel the same way. The command line chains them in :func:`shortgpt_desktop.jobs.run_prune` and friends;
the window calls the very same methods from its worker thread, one job at a time, and only displays the state.

Threading rule for the window: a step may change the engine's state because no other step runs beside it
and the window reads the state only between jobs. A step replaces a result only when it completes: a failed
or cancelled scoring leaves the previous scores in place; where there are none (or only partial ones), the partial
scores a cancelled pass hands back are kept, and marked partial.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .. import __version__
from ..format import counted, layer_list, listed
from . import pipeline
from .backends import ops
from .backends.base import Backend, InMemory, backend_class, open_backend
from .cut.fitted_repairs import FittedRepairs
from .cut.mlp_refit import NOTE_NO_MLP_MODULE
from .cut.plan import (
    LayerSizes,
    PrunePlan,
    apply_sizes,
    check_layer_list,
    check_removable,
    count_for_ratio,
    make_plan,
    max_removable,
)
from .cut.surgery import layer_sizes
from .errors import CalibrationError, Cancelled, Hint, ModelSourceError, PlanError, ResourceError, UserError
from .formats.output_folder import check_output_folder, check_room
from .formats.safetensors_writer import SaveResult
from .formats.writers import WRITERS, WeightChanges, Writer, get_writer
from .measure.calibration import TOKENIZE_CHUNK, TokenSet
from .measure.evaluation import Fidelity, Reference, has_chat_template
from .measure.metrics import METRICS, ScoringContext, get_metric
from .measure.quiz import Quiz, ask_quiz, lost_most
from .measure.scoring import HookStats, LayerScores
from .model.loading import LoadedModel, ModelInfo, inspect_model
from .model.memory import (
    MemoryEstimate,
    check_streamed_fits,
    choose_mode,
    estimate_memory,
    healing_does_not_fit,
    refuse_padded_batches,
)
from .model.sources import ModelSource, weights_stamp
from .pipeline import JobSpec
from .progress import CancelCheck, Progress, no_progress, raise_if_cancelled
from .report import MEASURED_BEFORE_REQUANTIZED, Report, measured_before_requantized

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """What a scoring step measured, for display (no tensors)."""

    scores: LayerScores
    n_layers: int
    device: str
    dtype: str
    calibration: list[str]
    warnings: list[str]
    sample_count: int
    sample_tokens: int
    eval_tokens: int
    seconds: float
    partial: bool = False  # cancelled part-way: scores from the samples measured so far
    #: The scoring pass alone (``seconds`` counts the load and the tokenising too): the speed the rest of a job is
    #: estimated at. From ``seconds``, the first estimate after scoring was three times what the job took.
    pass_seconds: float | None = None
    #: Imported scores (Import scores…): the file and what they were measured on (``Report.scores_imported``).
    imported: dict[str, Any] = field(default_factory=dict)


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
    chat_template: bool = False  # the prompt went through the model's chat template
    fidelity: Fidelity | None = None  # KL to the original and same top token (None where not measured)
    quiz: Quiz | None = None  # the questions the original answers right, asked of both (None where not asked)
    #: What was measured: the cut with its repair, refit and healing, on these tokens (:meth:`Engine._checked_key`).
    key: tuple | None = None
    #: The text it writes where it ran one layer at a time (a few tokens, and no quiz); None where it ran whole.
    streamed_tokens: int | None = None
    #: The text gave fewer held-out windows than asked for (:func:`.pipeline.fewer_windows`): more windows would
    #: measure no more, more text would.
    text_ran_out: bool = False
    #: The warning where the healing measured did not lower its loss (:func:`.cut.healing.healing_did_not_help`),
    #: else "": the window said it in the Log and for 20 s in the status bar, not beside the figures.
    healing_note: str = ""
    #: Each run of removed layers the repair went over, as (its first layer, whether it was repaired): a run at the
    #: first layer has no kept layer before it to refit, and the check said "removed layer 0, repaired." where the card
    #: said it was not (empty: no repair ran).
    repair_runs: list[tuple[int, bool]] = field(default_factory=list)
    #: Each run's MLP refit, as (the kept layer refitted, whether its refit was kept): a refit no better on its held-out
    #: rows, or dropped by the chat guard, leaves the linear repair alone, and the check said "MLP refitted" of a model
    #: byte for byte the repaired one (a walkthrough; empty: no refit ran).
    refit_runs: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def streamed_note(self) -> str | None:
        """The note for a check one layer at a time that was asked to write text: it wrote only a few tokens and asked
        no quiz."""
        return streamed_check_note(self.streamed_tokens) if self.streamed_tokens and self.prompt else None

    @property
    def ratio(self) -> float:
        return self.ppl_after / self.ppl_before if self.ppl_before else float("nan")

    @property
    def adjusted_as(self) -> str:
        """How the pruned side was adjusted, in words ("repaired and healed (2 LoRA steps)"; "" for plain removal):
        a healed check's figures said nothing of the healing."""
        if self.key is None:
            return ""
        cut = self.key[0]
        done = {"linear": ["repaired"], "refit": ["repaired", "MLP refitted"]}.get(cut.repair, [])
        missed = [start for start, repaired in self.repair_runs if not repaired]
        if done and missed and len(missed) == len(self.repair_runs):
            done = ["not repaired (nothing could be fitted for this cut)"]
        elif done and missed:
            done[0] = f"repaired (not at {'layer' if len(missed) == 1 else 'layers'} {layer_list(missed)})"
        if "MLP refitted" in done:  # what the refit kept (the card says why one was not)
            at = done.index("MLP refitted")
            kept = [layer for layer, kept in self.refit_runs if kept]
            dropped = [layer for layer, kept in self.refit_runs if not kept]
            if not self.refit_runs:  # a family without one MLP module (OPT), or no run with a layer before it
                done[at] = "no MLP refit (nothing to refit for this cut)"
            elif not kept:  # the linear repair alone
                done[at] = "the MLP refit not kept"
            elif dropped:  # the kept layers named, not the removed ones ("removed layers 3, 6 … not at layer 5")
                done[at] = (f"the MLP of {'layer' if len(kept) == 1 else 'layers'} {layer_list(kept)} refitted (not "
                            f"kept at {layer_list(dropped)})")
        if cut.heal_steps > 0:
            done.append(f"healed ({counted(cut.heal_steps, 'LoRA step')})")
        return listed(done)

    @property
    def lost_answer(self) -> bool:
        """The original answered the prompt and the pruned model wrote nothing (it ended its turn at once), a
        loss that perplexity on plain text does not show."""
        return bool(self.prompt) and bool(self.generation_before.strip()) and not self.generation_after.strip()


#: Said when :attr:`Checked.lost_answer`: what happened, and what to try.
LOST_ANSWER = ("The pruned model answers the prompt with nothing (it ends its turn at once) where the original "
               "answered; remove fewer layers, or calibrate on text like the prompts you will give it.")


class AdjustKey(NamedTuple):
    """What an adjustment (repair, refit, healing) was computed for."""

    removed: tuple[int, ...]
    repair: str
    heal_steps: int
    load_key: tuple | None  # the model as loaded
    token_key: tuple  # the calibration tokens

    def same_cut(self, other: AdjustKey) -> bool:
        """The same layers of the same model, on the same tokens: the linear repair fitted for one is the other's."""
        return (self.removed, self.load_key, self.token_key) == (other.removed, other.load_key, other.token_key)


@dataclass
class Adjusted:
    """What the repair and the healing changed for one set of removed layers (no tensors cross to a window)."""

    removed: list[int]
    results: dict[str, Any] = field(default_factory=dict)  # adjuster name → what it measured and did
    weights: dict[str, Any] = field(default_factory=dict)  # parameter name (original index) → new value
    key: AdjustKey | None = None
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # adjuster name → seconds it took here
    changes: WeightChanges = field(default_factory=WeightChanges)  # the settings it was computed for
    #: The repair was the one bi+'s search (or a curve) had fitted and kept: its seconds were spent there.
    repair_kept: bool = False

    @property
    def repair(self) -> Any:
        """repair.RepairResult, or None when the repair was off."""
        return self.results.get("repair")

    @property
    def refit(self) -> Any:
        """mlp_refit.RefitResult, or None when the repair was not ``refit``."""
        return self.results.get("refit")

    @property
    def heal(self) -> Any:
        """healing.HealResult, or None when no healing was asked for."""
        return self.results.get("heal")

    @property
    def notes(self) -> list[str]:
        notes = list(self.repair.notes) if self.repair is not None else []
        return notes + (list(self.refit.notes) if self.refit is not None else [])


def streamed_check_note(new_tokens: int | None = None) -> str:
    """What a check one layer at a time leaves out, which was said nowhere (the quiz gone, the text cut short): each
    new token there runs every layer again. ``new_tokens``: the text it writes (None: eval, which writes none)."""
    text = f"writes {new_tokens} tokens of the prompt and " if new_tokens else ""
    return (f"One layer at a time, the check {text}asks no quiz: each new token runs every layer again; run it in "
            "memory for the whole check.")


#: The quality curve's quiz column, gone one layer at a time (its perplexity points are whole).
STREAMED_CURVE_NOTE = ("One layer at a time, the curve has no quiz column: each answer would run every layer again for "
                       "each token; run it in memory for the quiz.")


@dataclass
class Engine:
    """Everything known about the current model and its scores, and the steps that change it."""

    source: ModelSource | None = None
    info: ModelInfo | None = None
    backend: Backend | None = None  # how the opened model runs (in memory or one layer at a time)
    load_key: tuple | None = None
    #: The way chosen for the opened model and its settings, decided once (see :meth:`mode_for`).
    mode_decision: tuple[tuple, str] | None = None
    tokens: TokenSet | None = None
    token_key: tuple | None = None
    #: The calibration files as they were when the last scoring began (pipeline.text_stamp), part of the token
    #: key: a file edited or added since is read again by the next scoring, while the jobs after a scoring keep
    #: the tokens it scored.
    text_stamp: tuple = ()
    token_names: list[str] = field(default_factory=list)
    token_warnings: list[str] = field(default_factory=list)
    #: The token key whose shortfall of held-out windows the log has said (once, not at every check).
    windows_noted: tuple | None = None
    stats: HookStats | None = None  # the hooked pass behind the scores, when the metric had one
    scores: LayerScores | None = None
    scored: Scored | None = None
    sizes: LayerSizes | None = None
    scored_spec: JobSpec | None = None  # the settings of the last successful scoring
    checked: Checked | None = None
    output_format: str | None = None  # what save writes; None: the source's own format
    #: The weights the next save changes beyond removing layers (the repair, refit, healing), which the sizes
    #: before and after count where the format writes them in another type; the scoring's settings until
    #: :meth:`set_weight_changes`.
    weight_changes: WeightChanges | None = None
    adjusted: Adjusted | None = None  # the repair (and healing) of the last plan that was checked or saved
    #: A refining metric's measured choices (selection.SelectionResult) for the current scores, by count.
    selections: dict[int, Any] = field(default_factory=dict)
    #: (key, cut.selection.SearchMemo): what bi+'s searches measured, for the next search of another count on the
    #: same samples, batch size and recipe (:meth:`_search_memo`, whose key tells when they changed); dropped with
    #: the scores.
    search_memo: tuple[tuple, Any] | None = None
    #: The measured choices of a metric of the same pass shown before, by its name, until it is shown again: a look
    #: at BI's bars threw away bi+'s measured choices (minutes of a CPU's time each on a real model).
    set_aside: dict[str, dict[int, Any]] = field(default_factory=dict)
    #: Repairs fitted for the current model and tokens, by removed set (bi+'s answer check fits the one it saves).
    fitted: FittedRepairs = field(default_factory=FittedRepairs)
    #: The original's own chat answers the repair is fitted on too, with the (model, length) they were written for.
    answers: tuple[tuple, list[list[int]]] | None = None
    reference: Reference | None = None  # the original's pass over the held-out windows, kept for every check
    reference_key: tuple | None = None
    #: The original's answers to the quiz (:mod:`.measure.quiz`), with the model they were written by: its load key
    #: and its weight files' stamp (another model copied over the folder and opened again has the same load key).
    quiz_original: tuple[tuple, list[str]] | None = None
    #: A generation step timed on the model loaded now (:class:`.estimate.StepProbe`), with its load key: what the
    #: estimates count for each new token of the answers, the quiz and the check's continuation.
    step_probe: tuple[tuple, Any] | None = None
    #: The weight files' paths, sizes and modification times when the model was loaded (:meth:`check_unchanged`).
    loaded_stamp: tuple | None = None

    # ----------------------------------------------------------------------------------------------- state

    @property
    def loaded(self) -> LoadedModel | None:
        """The model (for the streamed backend: its skeleton, with the embeddings only) and its tokenizer."""
        return self.backend.loaded if self.backend is not None else None

    @property
    def n_layers(self) -> int:
        if self.sizes is not None:
            return len(self.sizes.layer_params)
        return self.info.n_layers if self.info else 0

    @property
    def max_removable(self) -> int:
        return max_removable(self.n_layers)

    def forget(self) -> None:
        """Drop the model and everything measured on it (frees its memory)."""
        if self.backend is not None:
            self.backend.close()
        self.backend = self.load_key = self.loaded_stamp = None
        self.tokens = self.token_key = None
        self.stats = self.scores = self.scored = self.sizes = self.scored_spec = self.checked = None
        self.adjusted = self.weight_changes = None
        self.selections, self.set_aside = {}, {}
        self.search_memo = None
        self.fitted.clear()
        self.answers = None
        self.reference = self.reference_key = None
        self.step_probe = None  # timed on this model: another copied over the folder has the same load key

    def close(self) -> None:
        """Forget the source too: the engine is as new."""
        self.forget()
        self.source = self.info = None
        self.mode_decision = None

    # ------------------------------------------------------------------------------------------- format

    def formats(self) -> list[str]:
        """Output formats this source can be saved in: its own first (a GGUF keeps its quantization)."""
        return [name for name, writer in WRITERS.items() if writer.available(self.source)]

    def set_output_format(self, fmt: str | None) -> str:
        """Choose what :meth:`save` writes (None: the source's own format); returns the format in force."""
        if fmt is not None:
            writer = get_writer(fmt)
            if not writer.available(self.source):
                raise UserError(writer.unavailable)
            if self.source is not None:
                writer.refuse(self.source, [])
        self.output_format = fmt
        return self.resolved_format

    @property
    def resolved_format(self) -> str:
        """The format chosen, when this source can be saved in it; else the source's own."""
        formats = self.formats()
        return self.output_format if self.output_format in formats else formats[0]

    @property
    def writer(self) -> Writer:
        return WRITERS[self.resolved_format]

    def check_output_job(self, spec: JobSpec, removed: Sequence[int] | None = None) -> None:
        """Refuse, right after open and before any slow step, an output this job cannot write (also when the
        format is left to its default): for a GGUF, layouts llama.cpp fixes by layer position (llama4, gemma3n,
        shared KV caches...) and weights the repair or healing would change that the writer cannot write back.

        Once the layers to remove are known (``removed``, or the job's own list), removals that would shift a
        position-locked layout are refused too; called again with the chosen layers before repair and healing.
        """
        if self.source is None:
            return
        self._refuse_output(list(removed if removed is not None else (spec.layers or [])))
        changes = WeightChanges.of(spec)
        self.writer.refuse_adjusted(self.source, repair=changes.repair, heal=changes.heal, refit=changes.refit)

    def _refuse_output(self, removed: Sequence[int]) -> None:
        """The writer's refusals for these layers (layouts llama.cpp fixes by layer position), before any work."""
        assert self.source is not None
        self.writer.refuse(self.source, removed)

    def set_weight_changes(self, spec: JobSpec) -> None:
        """The plans' sizes count the weights a job with ``spec``'s repair and healing changes (the window's
        settings of the moment; the scoring's until then)."""
        self.weight_changes = WeightChanges.of(spec)

    def output_sizes(self, removed: Sequence[int], changes: WeightChanges | None = None) -> tuple[int, int] | None:
        """Bytes of the source and of the output without ``removed``, in the format that will be written, the
        weights ``changes`` names counted as they will be written (None: the writer cannot tell before writing)."""
        if self.source is None:
            return None
        return self.writer.sizes(self.source, removed, self.n_layers, changes or WeightChanges())

    def _with_output_sizes(self, plan: PrunePlan, changes: WeightChanges | None = None) -> PrunePlan:
        """Bytes before and after in the format that will be written (a GGUF stays quantized, and the weights the
        job changes are counted as they will be written: ``changes``, else the settings of the moment)."""
        if self.source is None:
            return plan
        if changes is None:
            changes = self.weight_changes or (WeightChanges.of(self.scored_spec) if self.scored_spec
                                              else WeightChanges())
        adjusted = self._adjusted_for(plan.removed)
        if adjusted is not None and adjusted.changes == changes:  # fitted: the weights it changed, exactly
            changes = dataclasses.replace(changes, names=frozenset(adjusted.weights))
        sizes = self.output_sizes(plan.removed, changes)
        plain = self.output_sizes(plan.removed)
        if sizes is not None and plain is not None:
            plan.bytes_before, plan.bytes_after = sizes
            plan.bytes_reencoded = sizes[1] - plain[1]
            # Healing changes every kept 2-D weight (exact); the repair's set is known only once fitted. Layers bi+
            # has still to choose are no bound: its other layers can have more cuts to repair (84.8 MB said "up to",
            # 86.3 MB written).
            plan.reencoded_at_most = (plan.bytes_reencoded > 0 and changes.names is None and changes.repair
                                      and not changes.heal and not plan.chosen_later)
        return plan

    # ------------------------------------------------------------------------------------------------ open

    def open(self, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None) -> ModelInfo:
        """Resolve the model (downloading a Hub model) and read what it is and costs; no weights are read.

        Opening another model forgets the current one only once the new one has been found, so a typo in the
        model box does not throw away the scores on screen.
        """
        source = pipeline.resolve_source(spec.model, spec.revision, progress, cancel)
        progress("inspect", 0, 1, None)
        info = self._inspect(source, spec)
        # A Cancel pressed while the description was read: the model on screen and its scores stay (the open went
        # on, dropped them and answered "ok").
        raise_if_cancelled(cancel)
        self.close()
        self.source, self.info = source, info
        if spec.low_memory:  # asked for: its figure is said, and a refusal follows when the job loads
            info.mode = "streamed"
        with suppress(ResourceError):  # neither way fits: said in one sentence when the job loads
            info.mode = self.mode_for(spec)  # decided here once and kept for the load, as it is said
        return info

    def estimate(self, spec: JobSpec) -> ModelInfo:
        """The cost figures again for other settings (headers only)."""
        if self.source is None:
            raise UserError("Choose a model first.")
        return self._inspect(self.source, spec)

    @staticmethod
    def _inspect(source: ModelSource, spec: JobSpec) -> ModelInfo:
        return inspect_model(source, spec.device, spec.dtype, seq_len=spec.seq_len, batch_size=spec.batch_size,
                             trust_remote_code=spec.trust_remote_code, **Engine._recipe(spec))

    @staticmethod
    def _recipe(spec: JobSpec) -> dict[str, Any]:
        """What of the recipe ``spec`` runs, for the memory estimate: the calibration samples, bi+'s measured choice,
        the repair, healing, and the check's windows; ``logits``: whether a pass runs the head over a batch (bi+'s
        candidates, the check, the single-removal perplexity metric), which the hooked scoring pass never does.

        Layers given by hand are not chosen, and with nothing fitted no sample runs (``prune --remove 10 --repair
        none`` counted 128 × 512 tokens and bi+'s caches it never runs: 3.3 GB said for a 1.2 GB peak, which can
        choose one layer at a time for nothing); its check's windows are counted by the estimate
        (:func:`~.model.memory.estimate_memory`, ``check_windows``)."""
        metric = METRICS.get(spec.metric)
        own_logits = metric is not None and not metric.hooked and metric.needs_text  # single-removal perplexity
        if spec.scores_only:
            return {"samples": spec.samples, "refines": False, "repairs": False, "heal_steps": 0, "check_windows": 0,
                    "logits": own_logits}
        by_hand = spec.layers is not None
        refines = bool(metric is not None and metric.refines and not by_hand)
        check_windows = spec.eval_windows if spec.check_perplexity else 0
        samples = 1 if by_hand and spec.repair == "none" and spec.heal_steps <= 0 else spec.samples
        return {"samples": samples, "refines": refines, "repairs": spec.repair != "none",
                "heal_steps": max(spec.heal_steps, 0), "check_windows": check_windows,
                "logits": own_logits or refines or check_windows > 0}

    def memory_estimate(self, spec: JobSpec) -> MemoryEstimate:
        """What scoring needs in memory and one layer at a time, and what is free (no weights read)."""
        if self.source is None:
            raise UserError("Choose a model first.")
        return estimate_memory(self.source, spec.device, spec.dtype, seq_len=spec.seq_len, batch_size=spec.batch_size,
                               **self._recipe(spec))

    def mode_for(self, spec: JobSpec, estimate: MemoryEstimate | None = None) -> str:
        """``"memory"`` (the whole model loaded) or ``"streamed"`` (one decoder layer at a time).

        Asked for explicitly, or chosen from the memory estimate taken before anything loads: streamed only when
        the model would not fit. The choice is made once per opened model and settings and kept, so a job never
        changes its way in the middle (once the model is loaded, the free memory has dropped by its size and a
        fresh estimate would say "streamed"). ``estimate`` is this spec's, when the caller has it already; with
        it nothing is remembered (the window's estimates for settings not yet used).
        """
        if spec.low_memory:  # asked for: a job that would not fit even so is refused before it loads, as when chosen
            check_streamed_fits(estimate or self._estimate_before_load(spec))
            return "streamed"
        if spec.low_memory is not None:
            return "memory"
        key = self._mode_key(spec)
        if estimate is not None:
            return choose_mode(estimate)
        if self.mode_decision is not None and self.mode_decision[0] == key:
            return self.mode_decision[1]
        mode = choose_mode(self._estimate_before_load(spec))
        self.mode_decision = (key, mode)
        return mode

    def _estimate_before_load(self, spec: JobSpec) -> MemoryEstimate:
        """The memory estimate for loading with ``spec``, a copy loaded with other settings let go first: these
        settings load the model anew, and the old copy must not count against the new one."""
        if self.backend is not None and self.load_key != self._load_key(spec):
            self.forget()
        return self.memory_estimate(spec)

    @staticmethod
    def _mode_key(spec: JobSpec) -> tuple:
        """What the memory estimate behind the decision depends on: the settings, the sizes and the recipe (bi+'s
        caches and the repair's streams are counted), so a plain BI decision is not kept for the default job."""
        return (spec.model, spec.revision, spec.device, spec.dtype, spec.trust_remote_code, spec.low_memory,
                spec.seq_len, spec.batch_size, tuple(sorted(Engine._recipe(spec).items())))

    @staticmethod
    def _load_key(spec: JobSpec) -> tuple:
        return (spec.model, spec.revision, spec.device, spec.dtype, spec.trust_remote_code, spec.low_memory)

    def decided_mode(self, spec: JobSpec) -> str | None:
        """The way the model runs for ``spec`` when that is settled: the loaded backend's, while these settings
        load nothing new, or the choice made for them before loading; None when the next load would decide.

        A fresh estimate cannot say it once the model is loaded: the free memory has dropped by the model's size.
        """
        if self.backend is not None and self.load_key == self._load_key(spec):
            return self.backend.mode
        if self.mode_decision is not None and self.mode_decision[0] == self._mode_key(spec):
            return self.mode_decision[1]
        return None

    @property
    def is_streamed(self) -> bool:
        return self.backend is not None and self.backend.mode == "streamed"

    def load(self, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None) -> LoadedModel:
        """The model for these settings (loaded once, reused while they do not change).

        In low-memory mode only the skeleton and the embeddings are loaded; the layers come one at a time.
        """
        if self.source is None or self.source.spec != spec.model:
            self.open(spec, progress, cancel)
        key = self._load_key(spec)
        if self.backend is not None and self.load_key == key:
            return self.backend.loaded
        mode = self.mode_for(spec)
        self.forget()  # free the old weights before loading new ones
        raise_if_cancelled(cancel)
        assert self.source is not None
        progress("load", 0, 1, None)
        self.backend = open_backend(mode, self.source, spec.device, spec.dtype, spec.trust_remote_code, cancel)
        self.load_key = key
        self.loaded_stamp = self._weights_stamp()
        progress("load", 1, 1, None)
        return self.backend.loaded

    def adopt(self, loaded: LoadedModel, spec: JobSpec) -> None:
        """Use a model loaded elsewhere for ``spec`` (the tests share one load between jobs)."""
        if self.source is None or self.source.spec != spec.model:
            self.open(spec)
        self.forget()
        self.backend = InMemory(loaded)
        self.load_key = self._load_key(spec)
        self.loaded_stamp = self._weights_stamp()

    def _weights_stamp(self) -> tuple | None:
        """The weight files' paths, sizes and modification times (None where one cannot be read)."""
        if self.source is None:
            return None
        try:
            return weights_stamp(self.source)
        except OSError:
            return None

    def check_unchanged(self) -> None:
        """Refuse a step when the model's weight files changed since it was loaded. The save copies the kept
        tensors from the files, and one layer at a time every pass reads them: another model copied over the folder
        between Score and Save was saved, pruned by the first model's scores, with the first one's repair in it and
        its perplexities on the card; a folder removed meanwhile was "not a valid safetensors file"."""
        if self.loaded_stamp is None or self.source is None:
            return
        now = self._weights_stamp()
        if now == self.loaded_stamp:
            return
        name = self.source.display_name
        if now is None:
            raise ModelSourceError(f"The weights of {name} are no longer where they were loaded from "
                                   f"({self.source.folder}); nothing was written.")
        raise ModelSourceError(f"The weights of {name} changed on disk since it was loaded; open it again and score "
                               "it, so that what is saved is the model that was measured.")

    def refusal(self, spec: JobSpec, metric: str | None = None, scoring_only: bool = False) -> None:
        """Raise, before a job starts, the sentence for a step this model's backend cannot run with ``spec``.

        Before the model loads, the mode these settings will load it in is decided (once, see :meth:`mode_for`)
        and asked, so a job that would stop at its repair or its save is refused before its scoring.
        ``scoring_only``: only ``metric`` is asked (the window's Score, whose healing and format come at Check and
        Save: a metric one layer at a time cannot run was refused after the model had loaded, as "Scoring failed"),
        and only where the way is settled without an estimate: an estimate for other settings lets the loaded copy
        go, and the scores with it, before Score asked whether to drop them.
        """
        wanted: dict[str, Any] = dict(metric=get_metric(metric) if metric else None, asked=spec.low_memory is not None)
        if not scoring_only:
            wanted.update(heal_steps=spec.heal_steps, output_format=self.resolved_format)
        loaded = self.backend is not None and self.load_key == self._load_key(spec)
        if self.source is None and not loaded:
            return
        if loaded:
            mode = self.backend.mode
        elif scoring_only:  # no estimate: the way as asked, or as decided before
            mode = {True: "streamed", False: "memory"}.get(spec.low_memory) or self.decided_mode(spec)
            if mode is None:  # the load decides, and refuses then
                return
        else:
            mode = self.mode_for(spec)
        if mode == "streamed" and spec.low_memory is None and spec.heal_steps > 0 and not scoring_only:
            raise self._healing_does_not_fit(spec)  # chosen for want of memory, not asked for
        problem = self.backend.refusal(**wanted) if loaded else backend_class(mode).refusal_for(self.source, **wanted)
        if problem is not None:
            raise problem

    def _healing_does_not_fit(self, spec: JobSpec) -> ResourceError:
        """The sentence for a healing job that only one layer at a time would fit, a way the user did not ask for
        (the low-memory mode's own refusal would speak of a mode they never chose)."""
        return ResourceError(healing_does_not_fit(self.memory_estimate(spec)))

    def _token_key(self, spec: JobSpec) -> tuple:
        return (tuple(spec.calib), spec.eval_text, spec.samples, spec.seq_len, spec.seed, spec.eval_windows,
                self.load_key, self.text_stamp)

    def check_text(self, spec: JobSpec) -> None:
        """Refuse unusable calibration text, or samples longer than the model reads, before a model loads (nothing
        to do for text tokenised already)."""
        pipeline.check_sample_length(self.info, spec.seq_len)
        if self.tokens is None or self.token_key != self._token_key(spec):
            pipeline.check_calibration(spec)

    def tokens_for(self, spec: JobSpec, progress: Progress = no_progress,
                   cancel: CancelCheck | None = None) -> TokenSet:
        """Calibration samples and held-out windows for these settings (tokenised once). ``cancel`` is asked after
        each chunk: a Cancel while a 100 MB text was tokenised waited 40 s for the whole of it."""
        key = self._token_key(spec)
        if self.tokens is not None and self.token_key == key:
            return self.tokens
        if self.loaded is None:
            raise UserError("Load the model first.")
        progress("tokenize", 0, 1, None)
        counted = False

        def on_text(done: int, in_all: int) -> None:
            """A text of more than one chunk is counted in characters (40 MB took 41 s without a word); a shorter one
            goes from the start to done, as before."""
            nonlocal counted
            raise_if_cancelled(cancel)
            if in_all > TOKENIZE_CHUNK:
                counted = True
                progress("tokenize", done, in_all, None)

        tokens, names, warnings = pipeline.prepare_tokens(self.loaded, spec, on_text)
        refuse_padded_batches(tokens, spec.batch_size, self.loaded.model.config, str(self.loaded.device))
        self.tokens, self.token_key = tokens, key
        self.token_names, self.token_warnings = names, warnings
        if not counted:
            progress("tokenize", 1, 1, None)
        return tokens

    # ----------------------------------------------------------------------------------------------- score

    def score(self, spec: JobSpec, progress: Progress = no_progress, cancel: CancelCheck | None = None) -> Scored:
        """Load and tokenise (if needed), then score every layer with ``spec.metric``.

        A hooked metric keeps its whole pass, so the other hooked metrics can be shown without a new one.
        When the user cancels a pass part-way, the scores of the samples measured so far are kept and marked
        partial (and :class:`Cancelled` still propagates), unless a whole pass had scored this model before: those
        scores stay (a cancelled re-score put 1,024 tokens' partial scores in place of 8,192 tokens' whole ones).
        Scores that stay keep the text they were cut from: a pass that ends without new scores puts back the
        tokens and the files' stamp it replaced (a Check after a re-score of an edited text, cancelled, measured
        the original on the old text and the pruned model on the new one).
        """
        text = (self.text_stamp, self.tokens, self.token_key, self.token_names, self.token_warnings)
        scored = self.scored
        try:
            return self._score(spec, progress, cancel)
        except BaseException:
            if self.scored is scored:  # nothing new kept
                self.text_stamp, self.tokens, self.token_key, self.token_names, self.token_warnings = text
            raise

    def _score(self, spec: JobSpec, progress: Progress, cancel: CancelCheck | None) -> Scored:
        metric = get_metric(spec.metric)
        if metric.needs_text:
            self.text_stamp = pipeline.text_stamp(spec)
            self.check_text(spec)
        n = self.info.n_layers if self.info is not None else None
        if metric.block and n is not None and not 1 <= spec.block_size <= max_removable(n):
            # every block would be left unscored: a table of dashes, exit 0
            raise PlanError(f"A block of {spec.block_size} layers does not fit this {n}-layer model; use a block of "
                            f"1 to {max_removable(n)} layers.")
        started = time.perf_counter()
        loaded = self.load(spec, progress, cancel)
        assert self.backend is not None
        problem = self.backend.refusal(metric=metric, asked=spec.low_memory is not None)
        if problem is not None:
            raise problem
        raise_if_cancelled(cancel)  # a cancel while the model loaded went on to tokenise and start the pass
        tokens = self.tokens_for(spec, progress, cancel) if metric.needs_text else None
        raise_if_cancelled(cancel)
        self._probe_generation()  # before the pass: the estimate said after its second batch counts it
        pass_started = time.perf_counter()
        ctx = ScoringContext(loaded.model, loaded.family, tokens, spec.batch_size, progress, cancel,
                             stack=self.backend.stack)
        partial = False
        try:
            if metric.hooked and tokens is not None:
                ctx.stats = self.backend.hooked_pass(tokens, spec.batch_size, progress, cancel)
                _refuse_non_finite(ctx.stats.bi, loaded.dtype)  # the pass stopped there: no metric reads it
            scores = metric.score(ctx, spec.block_size if metric.block else 1)
            if ctx.stats is None:  # a metric without the hooked pass (the states' cosines were checked above)
                _refuse_non_finite(scores.scores, loaded.dtype)
        except Cancelled as exc:
            if exc.partial is None or (self.scored is not None and not self.scored.partial):
                raise
            partial = True
            ctx.stats = exc.partial if isinstance(exc.partial, HookStats) else None
            scores = (metric.from_stats(ctx.stats, 1) if ctx.stats is not None
                      else LayerScores(metric.name, list(exc.partial)))
            self._accept(spec, loaded, tokens, ctx.stats, scores, (started, pass_started), partial)
            raise
        return self._accept(spec, loaded, tokens, ctx.stats, scores, (started, pass_started), partial)

    def _accept(self, spec: JobSpec, loaded: LoadedModel, tokens: TokenSet | None, stats: HookStats | None,
                scores: LayerScores, clocks: tuple[float, float], partial: bool, imported: bool = False) -> Scored:
        """Keep a scoring's results; ``clocks``: when the job began and when its pass began; ``imported``: scores
        read from a file (logged as "scored 6 layers with bi+ in 0.0 s")."""
        started, pass_started = clocks
        self.stats, self.scores = stats, scores
        self.selections, self.set_aside = {}, {}
        self.search_memo = None
        if self.adjusted is not None and (self.adjusted.key is None
                                          or self.adjusted.key.token_key != self._token_key(spec)):
            self.adjusted = None  # fitted on other tokens; a rescore of the same text keeps the fit (and healing)
        self.sizes = layer_sizes(loaded.model, loaded.family, pipeline.checkpoint_bytes_per_param(loaded))
        self.scored_spec = spec
        self.checked = None
        self.scored = Scored(
            scores=scores, n_layers=loaded.n_layers, device=loaded.device, dtype=loaded.dtype,
            calibration=list(self.token_names) if tokens is not None else [],
            warnings=list(self.token_warnings) if tokens is not None else [],
            sample_count=len(tokens.samples) if tokens is not None else 0,
            sample_tokens=(stats.tokens if stats is not None and partial else tokens.sample_tokens)
            if tokens is not None else 0,
            eval_tokens=tokens.eval_tokens if tokens is not None else 0,
            seconds=time.perf_counter() - started, partial=partial,
            pass_seconds=time.perf_counter() - pass_started,
        )
        if imported:
            log.info("took in imported %s scores of %d layers%s", scores.metric, loaded.n_layers,
                     " (partial)" if partial else "")
        else:
            log.info("scored %d layers with %s in %.1f s%s", loaded.n_layers, spec.metric, self.scored.seconds,
                     " (partial)" if partial else "")
        return self.scored

    def use_imported_scores(self, spec: JobSpec, scores: LayerScores, partial: bool = False,
                            progress: Progress = no_progress, cancel: CancelCheck | None = None,
                            origin: dict[str, Any] | None = None) -> Scored:
        """Plan with scores measured earlier (a saved report) instead of a new pass; ``origin``: the file and what
        the scores were measured on there, for the report and the card.

        The model is loaded, because the plan needs its layer sizes and saving needs its weights.
        """
        started = time.perf_counter()
        loaded = self.load(spec, progress, cancel)
        if len(scores.scores) != loaded.n_layers:
            raise PlanError(f"These scores are for {len(scores.scores)} layers, but the model has {loaded.n_layers}.")
        spec.metric = scores.metric
        self._accept(spec, loaded, None, None, scores, (started, time.perf_counter()), partial, imported=True)
        assert self.scored is not None
        self.scored.imported = dict(origin or {})
        return self.scored

    def rescore(self, metric_name: str, block_size: int = 1) -> LayerScores | None:
        """Scores of another metric without a new pass, or None when that metric needs one."""
        metric = get_metric(metric_name)
        if not metric.needs_text and self.loaded is not None:
            return metric.score(ScoringContext(self.loaded.model, self.loaded.family, None))
        if metric.hooked and self.stats is not None:
            return metric.from_stats(self.stats, max(1, block_size))
        if self.scores is not None and self.scores.metric == metric_name:
            return self.scores
        if self.scores is not None and metric_name in self.scores.extra and not metric.block:
            # Imported scores carry the other metrics of their pass, but not the pass itself.
            others = {**self.scores.extra, self.scores.metric: self.scores.scores}
            values = others.pop(metric_name)
            return LayerScores(metric_name, values, self.scores.tokens, self.scores.seconds, extra=others)
        return None

    def use_scores(self, scores: LayerScores) -> None:
        """Show and plan with ``scores`` (another metric of the same pass); a metric shown again gets back the
        choices measured for it."""
        if self.scores is not None and self.selections:
            self.set_aside[self.scores.metric] = self.selections
        self.scores = scores
        self.selections = self.set_aside.pop(scores.metric, {})
        if self.scored_spec is not None:
            self.scored_spec.metric = scores.metric

    # ------------------------------------------------------------------------------------------------ plan

    def plan(self, count: int = 0, layers: Sequence[int] | None = None) -> PrunePlan:
        """The plan for ``count`` layers by the current scores, or for a hand-picked ``layers`` list.

        ``count == 0`` gives an empty plan, so the window can show "nothing removed" with real sizes. For a
        block metric the scores depend on the block size, so they are recomputed for ``count``.
        """
        if self.sizes is None:
            raise PlanError("Score the layers first.")
        n = self.n_layers
        if layers is not None:
            removed = sorted(set(layers))
            if not removed:
                return self._with_output_sizes(apply_sizes(PrunePlan(n, []), self.sizes))
            return self._with_output_sizes(make_plan(n, layers=removed, sizes=self.sizes))
        scores = self.scores
        if count <= 0 or scores is None:
            if count > 0:
                raise PlanError("Score the layers first.")
            empty = PrunePlan(n, [], metric=scores.metric if scores else "manual")
            return self._with_output_sizes(apply_sizes(empty, self.sizes))
        metric = get_metric(scores.metric)
        if metric.block and self.stats is not None and scores.block_size != count:
            scores = metric.from_stats(self.stats, count)
            assert scores is not None
            self.scores = scores
        check_removable(count, n)
        selection = self._selection_for(count) if metric.refines else None
        if selection is not None:
            plan = PrunePlan(n, list(selection.removed), metric=scores.metric, measured=True,
                             notes=[selection.explanation])
        else:
            plan = PrunePlan(n, metric.removal(scores.scores, count), metric=scores.metric)
            if metric.refines:
                plan.chosen_later = True
                plan.notes.append("not yet checked by measured perplexity: Check or Save does that")
        return self._with_output_sizes(apply_sizes(plan, self.sizes))

    def job_estimate(self, spec: JobSpec, count: int, check: bool, layers: Sequence[int] | None = None) -> Any:
        """Seconds the rest of a job for ``count`` layers will take (choosing, repairing, healing, checking), at
        the speed the scoring pass measured; None before a scoring pass (see :mod:`.estimate`). ``layers``: a cut
        given by hand, which nothing chooses (under bi+ it was estimated as bi+'s search of the lowest scores)."""
        import dataclasses as _dc

        rate = self._scoring_rate()
        if rate is None:
            return None
        scored = self.scored
        assert scored is not None
        # a choice measured with the repair on (or off) is made again for a job that does not (or does) repair
        selection = self._selection_for(count)
        refines = layers is None and self.scores is not None and get_metric(self.scores.metric).refines and (
            selection is None or selection.judged_repaired != (spec.repair != "none"))
        # the layers the job removes, unless bi+ has still to choose
        removed = sorted(layers) if layers is not None else self.plan(count=count).removed
        estimate = self.estimate_at(_dc.replace(spec, check_perplexity=check), rate, scored.sample_tokens,
                                    scored.eval_tokens, count, refines, None if refines else removed,
                                    scored.sample_count)
        for step in ("scoring", *self._steps_done(spec, removed, refines)):
            estimate.steps.pop(step, None)
        return estimate

    def _steps_done(self, spec: JobSpec, removed: Sequence[int], refines: bool) -> set[str]:
        """The steps of a job removing ``removed`` that earlier jobs made already, which the job takes instead of
        running them: the linear repair of the cut, kept by bi+'s search or a curve (:meth:`_fit_kept`: after a curve,
        Check said 63 s of which 33 s repairing, and took 17 s) or made by the last Check or Save (the refit starts
        from it); the refit and healing only where made for these very settings (healing set to 60 after a check
        without it was left out of the estimate: the plan's layers alone were compared)."""
        done: set[str] = set()
        last = self.adjusted
        key = self._adjust_key(spec, removed)
        same_cut = last is not None and last.key is not None and last.key.same_cut(key)
        if spec.repair != "none" and ((not refines and self._fit_kept(spec, removed))
                                      or (same_cut and last.repair is not None)):
            done.add("repairing")
        if same_cut and last.key == key:
            done |= {"refitting", "healing"}
        return done

    def _fit_kept(self, spec: JobSpec, removed: Sequence[int]) -> bool:
        """Whether the linear repair of ``removed`` for ``spec``'s model, tokens and batch size is kept from an
        earlier job (bi+'s search or a curve, :class:`.cut.fitted_repairs.FittedRepairs`): the job takes it."""
        return self.fitted.key == self._reference_key(spec) and self.fitted.get(removed) is not None

    def _scoring_rate(self) -> float | None:
        """Seconds a token spends in a decoder layer, as the whole scoring pass measured it (the pass alone, not the
        load and the tokenising); None before one, or after a partial one."""
        from .estimate import shape_of

        scored = self.scored
        if scored is None or self.loaded is None or not scored.sample_tokens or scored.partial:
            return None
        seconds = scored.pass_seconds if scored.pass_seconds is not None else scored.seconds
        return seconds / max(scored.sample_tokens * shape_of(self.loaded).n_layers, 1)

    def curve_estimate(self, spec: JobSpec, max_removed: int | None = None) -> Any:
        """Seconds the quality curve up to ``max_removed`` will take (:meth:`quality_curve`), at the speed the
        scoring pass measured; None before a whole scoring pass (see :func:`.estimate.estimate_curve`)."""
        from .estimate import estimate_curve, shape_of

        rate = self._scoring_rate()
        if rate is None or self.scores is None:
            return None
        scored = self.scored
        assert scored is not None and self.loaded is not None
        # on the samples the text gave, as a job's estimate counts them (24 of 100 asked: a third of the choosing)
        spec = dataclasses.replace(self._curve_spec(spec), samples=scored.sample_count or spec.samples)
        shape = shape_of(self.loaded)
        limit = self._curve_limit(max_removed)
        searched: list[int] = []
        if get_metric(self.scores.metric).refines:
            repaired = spec.repair != "none"
            searched = [k for k in range(1, limit + 1)
                        if k not in self.selections or self.selections[k].judged_repaired != repaired]
        memo = self._search_memo(spec, create=False) if searched else None
        search_left = memo.still_to_run(self.scores.scores, max(searched)) if memo is not None else None
        quiz = self.quiz_work(spec)
        original_quiz = quiz is not None and self._original_quiz_answers() is None
        if quiz is not None and original_quiz:  # one model's answers per count; the original's once
            quiz = dataclasses.replace(quiz, runs=1)
        fitted = [k for k in range(1, limit + 1) if k not in searched and k in self.selections
                  and self._fit_kept(spec, self.selections[k].removed)]
        answers, fit_samples, fit_tokens = self._repair_fit(spec, scored.sample_tokens)
        estimate = estimate_curve(spec, shape, rate, scored.sample_tokens, scored.eval_tokens, limit, searched,
                                  answers, quiz, original_quiz, search_left, fitted, fit_tokens, fit_samples,
                                  self._bi_scores())
        estimate.steps.pop("scoring", None)
        return estimate

    def _curve_spec(self, spec: JobSpec) -> JobSpec:
        """``spec`` as the quality curve runs it: no healing, and the linear repair where the refit was asked for
        (each would train once per point)."""
        return dataclasses.replace(spec, heal_steps=0, repair="linear" if spec.repair == "refit" else spec.repair)

    def _curve_limit(self, max_removed: int | None) -> int:
        """The most layers the quality curve removes: ``max_removed``, else half the layers, within what can go."""
        assert self.scores is not None
        return min(max_removed if max_removed is not None else max(1, self.n_layers // 2),
                   max_removable(self.n_layers), self.scores.known_layers)

    def estimate_at(self, spec: JobSpec, seconds_per_token_layer: float, sample_tokens: int, eval_tokens: int,
                    count: int | None, refines: bool, removed: Sequence[int] | None = None,
                    samples: int | None = None) -> Any:
        """The whole job ``spec`` describes at a measured speed (:func:`.estimate.estimate_job`), with the loaded
        model's shape and the answers its chat model still has to write: the one place both the engine's
        estimate and the one printed after the first scoring batch are put together. ``samples``: the samples the
        text gave (``sample_tokens`` are theirs), where fewer than ``spec.samples``: bi+'s search, the repair's
        ridge and healing's teacher run on those (24 of 100 asked: the choice was estimated at a quarter of it);
        ``removed``: the layers the job removes, where known before it runs (the repair's runs and depth)."""
        import dataclasses as _dc

        from .cut.healing import compute_dtype_for
        from .estimate import BFLOAT16_HEAL_COST, JobWork, estimate_job, shape_of

        assert self.loaded is not None
        # the searches before ran on the samples the text gave, under the settings as asked (the memo's key)
        memo = self._search_memo(spec, create=False) if refines and count and self.scores is not None else None
        search_left = memo.still_to_run(self.scores.scores, count) if memo is not None else None
        if samples is not None:
            spec = _dc.replace(spec, samples=samples)
        model = self.loaded.model
        on_cpu = next(model.parameters()).device.type == "cpu"  # where the cost was measured
        heal_cost = BFLOAT16_HEAL_COST if spec.heal_steps and on_cpu and compute_dtype_for(model) else 1.0
        answers, fit_samples, fit_tokens = self._repair_fit(spec, sample_tokens)
        work = JobWork(answers=answers, guard=self.guard_work(spec), quiz=self.quiz_work(spec),
                       prompt=self.prompt_work(spec), heal_cost=heal_cost, fit_samples=fit_samples,
                       fit_tokens=fit_tokens, search_left=search_left, bi_scores=self._bi_scores(),
                       removed=None if refines else removed)
        return estimate_job(spec, shape_of(self.loaded), seconds_per_token_layer, sample_tokens, eval_tokens, count,
                            refines, work)

    def _bi_scores(self) -> list[float | None] | None:
        """The scores a measured choice (bi+) starts from, where a whole pass gave them (None: not known yet)."""
        scores, scored = self.scores, self.scored
        if scores is None or scored is None or scored.partial or not get_metric(scores.metric).refines:
            return None
        return list(scores.scores)

    def _repair_fit(self, spec: JobSpec, sample_tokens: int) -> tuple[Any, int, int]:
        """What the repair fits on, for the estimates: the own answers still to write (:meth:`answer_work`), and the
        samples and tokens of the fit, a chat model's own answers beside the calibration samples (whether its ridge
        is chosen hangs on both, and its streams run over their tokens too: 2,174 tokens beside 1,024 of text at
        8 × 128; those still to write counted at the most they may be)."""
        own, own_tokens = 0, 0
        answers = self.answer_work(spec)
        if answers is not None:
            own = answers.prompts
            own_tokens = int(own * min(answers.prompt_tokens + answers.new_tokens, spec.seq_len))
        elif self.answers is not None and self.answers[0] == self._answers_key(spec.seq_len):
            # written for these samples' length (no prompt fits a shorter one, and that job writes none)
            own, own_tokens = len(self.answers[1]), sum(map(len, self.answers[1]))
        return answers, spec.samples + own, sample_tokens + own_tokens

    def timed_speed(self, spec: JobSpec, tokens: TokenSet, cancel: CancelCheck | None = None) -> float:
        """Seconds a token spends in a decoder layer, timed on this model for a job that runs no scoring pass (a cut
        given by hand), whose estimate would otherwise have no speed to start from: one layer of tokens timed after
        a first one untimed (its first touches), as the scoring pass runs them. In memory, a batch of samples; one
        layer at a time every sample, since each layer's read is shared by all of them (a batch alone would bear
        it). About 2 / layers of a scoring pass."""
        from .model.devices import wait_for

        assert self.backend is not None
        self._probe_generation()
        stack = self.backend.stack
        sequences = tokens.samples or tokens.eval_windows
        if self.backend.whole_model:
            sequences = sequences[: spec.batch_size]
        batches = stack.capture(sequences, tokens.pad_id, spec.batch_size, cancel)
        stack.run_layers(batches, [0], cancel=cancel)
        wait_for(batches[0].hidden.device)
        started = time.perf_counter()
        stack.run_layers(batches, [1], cancel=cancel)
        wait_for(batches[0].hidden.device)
        return (time.perf_counter() - started) / max(sum(len(s) for s in sequences), 1)

    def _probe_generation(self) -> None:
        """Time one generation step for 1 row and for :data:`.estimate.PROBE_ROWS` rows on the model loaded now,
        each :data:`.estimate.PROBE_TRIES` times for the median (kept per load; a model in memory only: one layer at a
        time writes its answers without the KV cache)."""
        import statistics

        import torch

        from .estimate import PROBE_ROWS, PROBE_TRIES, StepProbe
        from .model.devices import wait_for

        if self.backend is None or not isinstance(self.backend, InMemory) or self.loaded is None:
            return
        if self._probed() is not None:
            return
        model = self.loaded.model
        device = next(model.parameters()).device
        timed: dict[int, list[float]] = {1: [], PROBE_ROWS: []}
        try:
            with torch.inference_mode():
                # each size once untimed (its first touches), then the tries, the two sizes in turn
                for rows in (1, PROBE_ROWS, *[1, PROBE_ROWS] * PROBE_TRIES):
                    ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
                    started = time.perf_counter()
                    model(input_ids=ids, use_cache=False)
                    wait_for(device)
                    timed[rows].append(time.perf_counter() - started)
        except (RuntimeError, ValueError, TypeError) as exc:  # only an estimate hangs on it: never the job
            log.info("generation step not timed (%s): generation is estimated at the scoring pass's speed", exc)
            return
        one, many = (statistics.median(timed[rows][1:]) for rows in (1, PROBE_ROWS))
        self.step_probe = (self.load_key, StepProbe(one, max(many, one)))

    def _probed(self) -> Any:
        """The generation step timed on the model loaded now (None: none timed)."""
        return self.step_probe[1] if self.step_probe is not None and self.step_probe[0] == self.load_key else None

    def prompt_work(self, spec: JobSpec, prompt: str | None = None) -> Any:
        """The check's continuation of its prompt by both models, one row each (None: no prompt, or no model)."""
        from .estimate import AnswerWork

        prompt = spec.prompt if prompt is None else prompt
        if self.loaded is None or self.backend is None or not self.generates(prompt) or not spec.check_perplexity:
            return None
        tokens = len(self.loaded.tokenizer(prompt)["input_ids"]) if self.loaded.tokenizer is not None else 16
        return AnswerWork(1, float(tokens), self.backend.tokens_to_generate(spec.max_new_tokens),
                          kv_cache=isinstance(self.backend, InMemory), runs=2, probe=self._probed(),
                          layer_read=self.layer_read_seconds())

    def guard_work(self, spec: JobSpec) -> Any:
        """The answers the refit's chat guard will ask the original for (None: no refit, or not a chat model)."""
        from .cut.answer_probe import PROMPTS
        from .cut.chat_guard import ANSWER_TOKENS
        from .cut.mlp_refit import mlp_path

        if self.loaded is None or spec.repair != "refit":
            return None
        if mlp_path(self.loaded.family) is None:  # nothing refitted (OPT): the guard has nothing to judge
            return None
        return self._chat_work(PROMPTS, ANSWER_TOKENS)

    def quiz_work(self, spec: JobSpec) -> Any:
        """The check's quiz answers still to write: the pruned model's, and the original's the first time (None:
        no prompt, so no generation; the streamed backend; no tokenizer)."""
        from .estimate import AnswerWork
        from .measure.quiz import MAX_NEW_TOKENS, QUESTIONS, quiz_prompts

        if self.loaded is None or self.backend is None or not self.backend.whole_model \
                or not self.generates(spec.prompt):
            return None
        prompts = quiz_prompts(self.loaded.tokenizer, self.loaded.model, QUESTIONS)
        if prompts is None:
            return None
        models = 1 if self._original_quiz_answers() is not None else 2
        return AnswerWork(len(prompts.ids), sum(map(len, prompts.ids)) / len(prompts.ids), MAX_NEW_TOKENS,
                          kv_cache=True, runs=models, probe=self._probed())

    def answer_work(self, spec: JobSpec) -> Any:
        """The own chat answers this job's repair will still write (None: none, or written already)."""
        from .cut.own_answers import FIT_PROMPTS, MAX_NEW_TOKENS

        if self.loaded is None or spec.repair == "none":
            return None
        if self.answers is not None and self.answers[0] == self._answers_key(spec.seq_len):
            return None
        return self._chat_work(FIT_PROMPTS, MAX_NEW_TOKENS, max_len=spec.seq_len)

    def _chat_work(self, prompts: Sequence[str], new_tokens: int, max_len: int | None = None) -> Any:
        """estimate.AnswerWork for the original's greedy answers to ``prompts`` (None: no model, or no chat
        template, or no prompt shorter than ``max_len``). ``max_len``: the answers stop there, prompt included, and
        a prompt as long is left out (:func:`.cut.own_answers.own_answers`): at 8 × 64 tokens SmolLM2's answers ran
        27 steps, not the 64 counted."""
        from .cut.answer_probe import answer_probe_for
        from .cut.own_answers import prompts_that_fit
        from .estimate import AnswerWork

        if self.loaded is None or self.backend is None:
            return None
        chat = answer_probe_for(self.loaded.tokenizer, self.loaded.model, prompts)
        if chat is None:
            return None
        lengths = [len(p) for p in prompts_that_fit(chat.prompts, max_len)]
        if not lengths:
            return None
        if max_len is not None:
            new_tokens = min(new_tokens, max_len - min(lengths))
        return AnswerWork(len(lengths), sum(lengths) / len(lengths), new_tokens,
                          kv_cache=isinstance(self.backend, InMemory), probe=self._probed(),
                          layer_read=self.layer_read_seconds())

    def layer_read_seconds(self) -> float:
        """Seconds one decoder layer takes to read, one layer at a time, on the model loaded now (0.0 in memory, or
        before any read): the backend's (:meth:`.backends.base.Backend.layer_read_seconds`)."""
        return self.backend.layer_read_seconds() if self.backend is not None else 0.0

    def _judge_selections(self, spec: JobSpec) -> None:
        """Forget measured choices compared repaired when the job no longer repairs, and the other way round."""
        repaired = spec.repair != "none"
        if any(s.judged_repaired != repaired for s in self.selections.values()):
            self.selections = {}

    def _answer_probe(self) -> Any:
        """Chat prompts bi+'s finalists must still answer (None for a model without a chat template)."""
        from .cut.answer_probe import answer_probe_for

        assert self.loaded is not None
        return answer_probe_for(self.loaded.tokenizer, self.loaded.model)

    def _repair_for(self, spec: JobSpec, tokens: TokenSet, cancel: CancelCheck | None,
                    progress: Progress = no_progress) -> Any:
        """``repair_for(removed, fit_progress)``: the repair the job saves for ``removed``, fitted once (kept in
        :attr:`fitted` for the model, tokens and batch size of ``spec``, where the adjuster finds it), on the
        calibration samples and, for a chat model, the original's own chat answers (:meth:`repair_tokens`). Its
        fits share the original's states on those samples (:class:`.cut.repair.OriginalStates`)."""
        from .cut.repair import OriginalStates, fit_linear_repair

        assert self.loaded is not None and self.backend is not None
        store = self.fitted.bind(self._reference_key(spec))
        model, family, stack = self.loaded.model, self.loaded.family, self.backend.stack
        original = OriginalStates()

        def repair_for(removed: Sequence[int], fit_progress: Progress | None = None) -> Any:
            return store.fitted(removed, lambda: fit_linear_repair(
                model, family, self.repair_tokens(tokens, progress, cancel), sorted(removed), spec.batch_size,
                progress=fit_progress, cancel=cancel, stack=stack, original=original))

        return repair_for

    def _fit_cost(self, spec: JobSpec, tokens: TokenSet) -> Any:
        """What a fit of the saved repair costs (:class:`.cut.selection.FitCost`), as the job's estimate counts it:
        bi+'s progress bar counts its fits at it, where it counted each as two passes over the samples."""
        from .cut.selection import FitCost
        from .estimate import fit_token_layers, likely_runs, shape_of

        assert self.loaded is not None
        shape = shape_of(self.loaded)
        _, fit_samples, fit_tokens = self._repair_fit(spec, sum(map(len, tokens.samples)))
        bi = self._bi_scores()  # the scores the estimate counts runs from (one per two layers removed was counted
        # here: 9 where SmolLM2's 18 of 30 came in 4; and the pass's own, none for imported scores)
        return FitCost(lambda count: fit_token_layers(shape, fit_tokens, count, likely_runs(count, bi), fit_samples),
                       float(fit_tokens * shape.n_layers))

    def _answers_key(self, seq_len: int) -> tuple:
        """What the own answers depend on: the model and the longest sample they may be."""
        return (self.load_key, seq_len)

    def repair_tokens(self, tokens: TokenSet, progress: Progress = no_progress,
                      cancel: CancelCheck | None = None) -> TokenSet:
        """What the repair is fitted on: the calibration samples, and for a model with a chat template the
        original's own answers to a few chat prompts (written once per model, see :mod:`.cut.own_answers`)."""
        from .cut.own_answers import own_answers

        assert self.loaded is not None and self.backend is not None
        key = self._answers_key(tokens.seq_len)
        if self.answers is None or self.answers[0] != key:
            written = own_answers(self.backend.stack, self.loaded.tokenizer, self.loaded.model,
                                  max_len=tokens.seq_len, progress=progress, cancel=cancel)
            self.answers = (key, written)
        answers = self.answers[1]
        return dataclasses.replace(tokens, samples=list(tokens.samples) + answers) if answers else tokens

    def _search_memo(self, spec: JobSpec, create: bool = True) -> Any:
        """The :class:`.cut.selection.SearchMemo` for searches with ``spec``'s samples, batch size and recipe on the
        model as it runs now (a new one where any of them changed; None then where ``create`` is false: an
        estimate reads it and leaves the one kept alone)."""
        from .cut.selection import SearchMemo

        key = (self._reference_key(spec), id(self.backend), spec.repair != "none")
        if self.search_memo is None or self.search_memo[0] != key:
            if not create:
                return None
            self.search_memo = (key, SearchMemo())
        return self.search_memo[1]

    def _selection_for(self, count: int) -> Any:
        """The refining metric's measured choice of ``count`` layers for the current scores, if it was made."""
        return self.selections.get(count)

    def needs_refining(self, plan: PrunePlan) -> bool:
        """The plan comes from a refining metric's cheap order and has not been measured yet."""
        if plan.metric == "manual" or plan.metric not in METRICS or not METRICS[plan.metric].refines:
            return False
        return self._selection_for(len(plan.removed)) is None

    def refine(self, spec: JobSpec, count: int, progress: Progress = no_progress,
               cancel: CancelCheck | None = None) -> PrunePlan:
        """Let a refining metric (bi+) measure its choice of ``count`` layers; returns the plan it gives."""
        scores = self.scores
        if scores is None or self.loaded is None:
            raise PlanError("Score the layers first.")
        metric = get_metric(scores.metric)
        self._judge_selections(spec)
        if metric.refines and self._selection_for(count) is None:
            assert self.backend is not None
            tokens = self.tokens_for(spec, progress, cancel)
            ctx = ScoringContext(self.loaded.model, self.loaded.family, tokens, spec.batch_size, progress, cancel,
                                 stack=self.backend.stack, repaired=spec.repair != "none", probe=self._answer_probe(),
                                 repair_for=self._repair_for(spec, tokens, cancel, progress),
                                 memo=self._search_memo(spec), fit_cost=self._fit_cost(spec, tokens))
            self.selections.update(metric.refine_counts(ctx, scores.scores, [count]))
        return self.plan(count=count)

    def plan_for_spec(self, spec: JobSpec) -> PrunePlan:
        """The plan a command line asks for: an explicit list, a count or a ratio."""
        if spec.layers is not None:
            return self.plan(layers=check_layer_list(spec.layers, self.n_layers))
        count = spec.count if spec.count is not None else count_for_ratio(float(spec.ratio or 0), self.n_layers)
        return self.plan(count=count)

    # -------------------------------------------------------------------------------------------- sweep

    def quality_curve(self, spec: JobSpec, max_removed: int | None = None, progress: Progress = no_progress,
                      cancel: CancelCheck | None = None) -> Any:
        """Held-out perplexity and fidelity for 0, 1, 2… layers removed (the paper's Figure 5), of the recipe
        Save uses, and of plain Block Influence for reference.

        The recipe's point for k layers is what Check gives for k (same windows, same measured choice, same
        repair, and the same quiz where the check asks one; healing and the MLP refit, when asked for, are left
        out of the curve: they would train once per point, so with ``repair="refit"`` the curve shows the linear
        repair the refit starts from). A refining metric (bi+) chooses every count in one nested search. Plain BI
        is plain removal in BI order, without the quiz.
        ``max_removed`` defaults to half the layers (past that, models are broken).
        """
        from .cut.plan import removal_order
        from .measure.sweep import STAGE as SWEEP_STAGE
        from .measure.sweep import QualityCurve, curve_point

        if self.scores is None or self.loaded is None or self.backend is None:
            raise PlanError("Score the layers first.")
        self.check_unchanged()
        spec = self._curve_spec(spec)
        metric = get_metric(self.scores.metric)
        limit = self._curve_limit(max_removed)
        tokens = self.tokens_for(spec, progress, cancel)
        started = time.perf_counter()
        reference = self.reference_for(spec, tokens, progress, cancel)
        if metric.refines:
            self._judge_selections(spec)
            missing = [k for k in range(1, limit + 1) if k not in self.selections]
            if missing:
                ctx = ScoringContext(self.loaded.model, self.loaded.family, tokens, spec.batch_size, progress,
                                     cancel, stack=self.backend.stack, repaired=spec.repair != "none",
                                     probe=self._answer_probe(),
                                     repair_for=self._repair_for(spec, tokens, cancel, progress),
                                     memo=self._search_memo(spec), fit_cost=self._fit_cost(spec, tokens))
                self.selections.update(metric.refine_counts(ctx, self.scores.scores, missing))
        label = self.scores.metric + (" + repair" if spec.repair != "none" else "")
        curve = QualityCurve(label=label, order=[], windows=len(tokens.eval_windows), tokens=reference.result.tokens,
                             data="held-out windows (the check's)" if not spec.eval_text
                             else "windows of the evaluation text (the check's)", model=spec.model,
                             calibration=list(self.token_names), eval_text=spec.eval_text, samples=spec.samples,
                             seq_len=spec.seq_len, seed=spec.seed, warnings=list(self.token_warnings),
                             version=__version__, device=self.loaded.device, dtype=self.loaded.dtype)
        self._log_fewer_windows(spec, tokens)
        pipeline.note_fewer_windows(curve, spec, tokens)
        # Plain BI where the pass gave its statistics; a metric without them (sequential, reverse, ppl) has its
        # own order beside the curve, named so (it was labelled BI).
        bi_scores = self.stats.bi if self.stats is not None else self.scores.scores
        # bi+'s scores are BI's: imported ones (no statistics) read 'plain bi+' for what is plain BI.
        # measured on what the curve was (its JSON block said model '' and 0 samples), with no repair
        baseline = dataclasses.replace(curve, label="bi" if self.stats is not None or metric.refines
                                       else self.scores.metric, order=removal_order(bi_scores)[:limit], points=[],
                                       data=f"{curve.data}; plain removal, no repair", warnings=[])
        curve.points.append(curve_point(0, None, [], reference.result, None))
        baseline.points.append(curve_point(0, None, [], reference.result, None))
        asks_quiz = self.generates(spec.prompt)  # as the check does
        if asks_quiz and not self.backend.whole_model:  # the quiz column was gone without a word
            curve.warnings.append(STREAMED_CURVE_NOTE)
        total = 2 * limit
        partial: list[float | None] = [reference.result.perplexity] + [None] * limit
        progress(SWEEP_STAGE, 0, total, list(partial))
        # The fit Check or Save made (a healing of minutes or hours) is kept: the curve's own fits are linear and
        # unhealed, and Save healed again after the curve had replaced it.
        # So are the scores: a block metric's plan for k recomputes them for blocks of k, and after an angular curve
        # the engine held blocks of the curve's last count under the slider's plan (the export and the card said
        # 'block of 6' for 3 layers removed).
        fitted_before, scores_before = self.adjusted, self.scores
        try:
            self._curve_points(spec, tokens, limit, curve, baseline, asks_quiz, partial, total, progress, cancel)
        finally:
            self.scores = scores_before
            if fitted_before is not None:
                self.adjusted = fitted_before
        # The order as far as the points are nested (point k removes order[:k]): after a count whose choice is not the
        # last one plus a layer, a later point's added layer is no step of it ([2, 2] for {2}, {1, 3}, {1, 2, 3})
        curve.order = [int(p.layer) for p in itertools.takewhile(lambda p: p.layer is not None, curve.points[1:])]
        curve.baseline = baseline
        curve.seconds = time.perf_counter() - started
        return curve

    def _curve_points(self, spec: JobSpec, tokens: TokenSet, limit: int, curve: Any, baseline: Any,
                      asks_quiz: bool, partial: list[float | None], total: int, progress: Progress,
                      cancel: CancelCheck | None) -> None:
        """The recipe's point and plain removal's for each count up to ``limit`` (see :meth:`quality_curve`)."""
        from .measure.sweep import STAGE as SWEEP_STAGE
        from .measure.sweep import curve_point

        previous: list[int] = []
        for k in range(1, limit + 1):
            removed = self.plan(count=k).removed
            adjusted = self.adjust(spec, removed, no_progress, cancel)
            weights = adjusted.weights
            result, fidelity = self._compared(spec, tokens, removed, weights, no_progress, cancel)
            added = [i for i in removed if i not in previous]
            point = curve_point(k, added[0] if len(added) == 1 else None, removed, result, fidelity)
            point.not_repaired = list(adjusted.notes)
            quiz = self._quiz(removed, weights, no_progress, cancel) if asks_quiz else None
            if quiz is not None:
                point.quiz_kept, point.quiz_known = quiz.kept, quiz.known
                curve.points[0].quiz_kept = curve.points[0].quiz_known = quiz.known
            curve.points.append(point)
            previous = list(removed)
            partial[k] = result.perplexity
            progress(SWEEP_STAGE, 2 * k - 1, total, list(partial))
            plain = sorted(baseline.order[:k])
            result, fidelity = self._compared(spec, tokens, plain, {}, no_progress, cancel)
            baseline.points.append(curve_point(k, baseline.order[k - 1], plain, result, fidelity))
            progress(SWEEP_STAGE, 2 * k, total, list(partial))

    # ------------------------------------------------------------------------------------------- repair

    def _adjust_key(self, spec: JobSpec, removed: Sequence[int]) -> AdjustKey:
        """What an adjustment of ``removed`` with ``spec`` is for (:class:`AdjustKey`)."""
        return AdjustKey(tuple(sorted(removed)), spec.repair, spec.heal_steps, self.load_key, self._token_key(spec))

    def adjust(self, spec: JobSpec, removed: Sequence[int], progress: Progress = no_progress,
               cancel: CancelCheck | None = None) -> Adjusted:
        """Repair (and, if asked, heal) the model pruned as ``removed``; the loaded weights stay as they are.

        The repair refits the MLP output projection of the kept layers before and after each run of removed layers
        on the calibration samples, in closed form (or folds a fitted map into the one before); healing trains LoRA
        adapters on the same samples and merges them. Both give new values for a few existing weights: the pruned
        model keeps its stock architecture. Computed once per plan and settings.
        """
        from .cut.adjusters import ADJUSTERS, AdjustContext

        removed = sorted(removed)
        key = self._adjust_key(spec, removed)
        if self.adjusted is not None and self.adjusted.key == key:
            return self.adjusted
        for adjuster in ADJUSTERS:
            adjuster.check(spec)
        started = time.perf_counter()
        adjusted = Adjusted(removed, key=key, changes=WeightChanges.of(spec))
        wanted = [a for a in ADJUSTERS if a.wanted(spec)]
        if not wanted or not removed:
            self.adjusted = adjusted
            return adjusted
        loaded = self.load(spec, progress, cancel)
        assert self.backend is not None
        self.refusal(spec)
        tokens = self.tokens_for(spec, progress, cancel)
        adjusted.repair_kept = self._fit_kept(spec, removed)
        ctx = AdjustContext(loaded, self.backend.stack, tokens, spec, progress, cancel,
                            teacher=lambda: self._teacher(spec, tokens, cancel),
                            modified=lambda gone, weights: pipeline.modified(loaded, gone, weights),
                            repair_for=self._repair_for(spec, tokens, cancel, progress),
                            fit_tokens=lambda: self.repair_tokens(tokens, progress, cancel))
        for adjuster in wanted:
            step_started = time.perf_counter()
            result, weights = adjuster.apply(ctx, removed, dict(adjusted.weights))
            adjusted.results[adjuster.name] = result
            adjusted.step_seconds[adjuster.name] = time.perf_counter() - step_started
            adjusted.weights.update(weights)
        adjusted.seconds = time.perf_counter() - started
        self.adjusted = adjusted
        return adjusted

    def _teacher(self, spec: JobSpec, tokens: TokenSet, cancel: CancelCheck | None) -> Any:
        """The original model's final states on the calibration batches healing will use, to distil from.

        Healing cycles through the batches from the first, so ``spec.heal_steps`` steps use only the first
        :func:`.cut.healing.batches_used` of them: a short healing runs the original over those alone (on SmolLM2
        at the default 128 × 512 tokens, the whole pass took 249 s of a 10-minute budget), and no head runs here
        (the logits are taken batch by batch as healing needs them). Run in the dtype healing computes in
        (:func:`.cut.healing.compute_dtype_for`: bfloat16 where the hardware is faster at it; on SmolLM2 at the
        default tokens, 32 batches of 4 × 512, about 120 s in float32 and 52 s in bfloat16 on 2 CPU threads).
        """
        from .backends.layerwise import Batch, InMemoryStack
        from .cut.healing import autocast_to, batches_used, compute_dtype_for

        assert self.loaded is not None and self.backend is not None
        used = batches_used(len(tokens.samples), spec.batch_size, spec.heal_steps)
        samples = tokens.samples[: used * spec.batch_size]
        model = self.loaded.model
        with autocast_to(model, compute_dtype_for(model)):
            states = [batch.hidden.to("cpu") for batch in ops.final_states(
                self.backend.stack, samples, tokens.pad_id, (), spec.batch_size, None, cancel)]
        loaded = self.loaded
        # What the decoder layers return (a tuple, or a bare tensor) was learned by the passes above: a fresh stack
        # that does not know it handed Falcon's head a bare tensor where it takes a tuple (IndexError).
        output_kind = self.backend.stack.output_kind

        class Teacher:
            def bind(self) -> Any:
                """``logits(batch_number, ids, mask)`` through the model's own head, for the model as it is now
                (inside the pruned view: the head does not change, the decoder is replayed)."""
                stack = InMemoryStack(loaded.model, loaded.family)
                stack.output_kind = output_kind

                def logits(number: int, ids: Any, mask: Any) -> Any:
                    with stack.head() as logits_of:
                        out = logits_of(Batch(ids, mask, None), states[number])
                    return out.clone()  # a normal tensor: the loss keeps it for the backward pass

                return logits

        return Teacher()

    def prepare(self, spec: JobSpec, plan: PrunePlan, progress: Progress = no_progress,
                cancel: CancelCheck | None = None, out: str | Path | None = None) -> PrunePlan:
        """The plan as it will be checked or written: a refining metric (bi+) measures its choice, then the
        repair (and healing) are fitted for it. Returns the final plan. ``out``: where it will be saved, whose disk
        must hold the layers chosen (asked again before the fits: bi+ may choose layers of another size)."""
        # A choice compared repaired is not the choice of a job that does not repair, or the other way round (Check
        # after the Repair box was unticked reused it; only the quality curve asked)
        self._judge_selections(spec)
        if self.needs_refining(plan):
            plan = self.refine(spec, len(plan.removed), progress, cancel)
        if out is not None:
            self.check_room(out, plan, spec)
        self.adjust(spec, plan.removed, progress, cancel)
        return self._sized_for(plan, spec)  # the weights changed are known now

    def _sized_for(self, plan: PrunePlan, spec: JobSpec) -> PrunePlan:
        """A copy of ``plan`` with its sizes for ``spec``'s weight changes (the window still shows the plan it
        gave, from another thread)."""
        copy = dataclasses.replace(plan, removed=list(plan.removed), notes=list(plan.notes))
        return self._with_output_sizes(copy, WeightChanges.of(spec))

    def _adjusted_for(self, removed: Sequence[int]) -> Adjusted | None:
        """The repair (and healing) of this very plan, when they were computed."""
        if self.adjusted is not None and self.adjusted.removed == sorted(removed):
            return self.adjusted
        return None

    # ----------------------------------------------------------------------------------------------- check

    def check(self, spec: JobSpec, removed: Sequence[int], prompt: str | None = None,
              progress: Progress = no_progress, cancel: CancelCheck | None = None) -> Checked:
        """Perplexity of the original and the pruned model on the same held-out windows, then a generation."""
        if not removed:
            raise PlanError("The plan removes no layers: choose how many to remove first.")
        self.check_unchanged()
        started = time.perf_counter()
        loaded, tokens = self.held_out(spec, progress, cancel)
        adjusted = self.adjust(spec, removed, progress, cancel)
        weights = adjusted.weights
        if self.reference is not None and self.reference_key == self._reference_key(spec):
            after, fidelity = self._compared(spec, tokens, removed, weights, progress, cancel)
        else:  # the original's pass and the pruned model's together: each layer is read once for both
            assert self.backend is not None
            self.reference, (after, fidelity) = ops.reference_and_compare(
                self.backend.stack, tokens.eval_windows, tokens.pad_id, removed, spec.batch_size, weights, cancel,
                lambda done, total: progress("ppl_both", done, total, None))
            self.reference_key = self._reference_key(spec)
        before = self.reference.result
        gen_before = gen_after = ""
        prompt = spec.prompt if prompt is None else prompt
        chat = has_chat_template(loaded.tokenizer)
        if self.generates(prompt):
            assert self.backend is not None
            total = 2 * self.backend.tokens_to_generate(spec.max_new_tokens)
            progress("generate", 0, total, None)

            def on_token(done: int, total: int) -> None:  # a cancel is asked by the backend, given ``cancel``
                if done < total:  # its end is said once both are written (either may stop early)
                    progress("generate", done, total, None)

            gen_before, gen_after = self.backend.generate_both(prompt, removed, weights, spec.max_new_tokens, chat,
                                                               on_token, cancel)
            raise_if_cancelled(cancel)
            progress("generate", total, total, None)
        quiz = self._quiz(removed, weights, progress, cancel) if self.generates(prompt) else None
        # A blank prompt generates nothing: none is named (the card gave a prompt of spaces and its chat template).
        prompt = prompt if self.generates(prompt) else ""
        streamed = None if self.backend is None or self.backend.whole_model else getattr(self.backend,
                                                                                             "MAX_NEW_TOKENS", None)
        from .cut.healing import healing_did_not_help

        self.checked = Checked(list(removed), before.perplexity, after.perplexity, before.tokens, prompt,
                               gen_before, gen_after, time.perf_counter() - started, chat, fidelity, quiz,
                               self._checked_key(spec, removed), streamed,
                               pipeline.fewer_windows(spec, tokens) is not None,
                               healing_did_not_help(adjusted.heal.losses) if adjusted.heal is not None else "",
                               [(run.start, run.repaired) for run in adjusted.repair.runs]
                               if adjusted.repair is not None else [],
                               [(run.layer, run.kept) for run in adjusted.refit.runs]
                               if adjusted.refit is not None else [])
        return self.checked

    def checked_for(self, spec: JobSpec, removed: Sequence[int]) -> Checked | None:
        """The last check where it measured ``removed`` with ``spec``'s recipe and windows (None otherwise)."""
        c = self.checked
        if c is not None and c.removed == list(removed) and c.key == self._checked_key(spec, removed):
            return c
        return None

    def _checked_key(self, spec: JobSpec, removed: Sequence[int]) -> tuple:
        """What a check of ``removed`` with ``spec`` measures: a check of the repaired cut is not the figures of the
        same layers saved without the repair (the window's Save after unticking Repair wrote them in the card)."""
        return self._adjust_key(spec, removed), self._reference_key(spec)

    @staticmethod
    def generates(prompt: str | None) -> bool:
        """Whether the check generates (the prompt's text side by side, then the quiz): a prompt that is not blank
        (the command line's ``--prompt ""`` turns both off)."""
        return bool((prompt or "").strip())

    def _original_quiz_answers(self) -> list[str] | None:
        """The original's quiz answers, when they were written by the model loaded now."""
        if self.quiz_original is None or self.quiz_original[0] != self._quiz_key():
            return None
        return self.quiz_original[1]

    def _quiz(self, removed: Sequence[int], weights: dict[str, Any], progress: Progress,
              cancel: CancelCheck | None) -> Quiz | None:
        """The quiz of the check (:mod:`.measure.quiz`); the original's answers are written once per model. None
        on the streamed backend: each new token there runs every layer again, so it generates 8 tokens of one
        prompt only."""
        assert self.backend is not None and self.loaded is not None
        if not self.backend.whole_model:
            return None
        asked = ask_quiz(self.backend.stack, self.loaded.tokenizer, self.loaded.model, removed, weights,
                         self._original_quiz_answers(), progress, cancel)
        if asked is None:
            return None
        quiz, original = asked
        self.quiz_original = (self._quiz_key(), original)
        return quiz

    def _quiz_key(self) -> tuple:
        """The model the original's quiz answers were written by: as loaded, and its weights as they were then."""
        return (self.load_key, self.loaded_stamp)

    def held_out(self, spec: JobSpec, progress: Progress = no_progress,
                 cancel: CancelCheck | None = None) -> tuple[LoadedModel, TokenSet]:
        """The model and its tokens, refusing text that leaves no held-out windows to measure perplexity on."""
        self.check_text(spec)
        loaded = self.load(spec, progress, cancel)
        tokens = self.tokens_for(spec, progress, cancel)
        if not tokens.eval_windows and spec.eval_text:
            raise CalibrationError(f"The evaluation text {spec.eval_text} is too short to measure perplexity on; "
                                   "give more text.")
        if not tokens.eval_windows:
            raise CalibrationError("The calibration text leaves no held-out text for perplexity; add more text or "
                                   "give a separate evaluation text.")
        self._log_fewer_windows(spec, tokens)
        return loaded, tokens

    def _log_fewer_windows(self, spec: JobSpec, tokens: TokenSet) -> None:
        """The note that the text gave fewer held-out windows than asked for (:func:`.pipeline.fewer_windows`),
        logged once for these tokens (the window's log; the command line prints the report's and the curve's
        warnings). Said where windows are measured, not by a scoring, which never reads them."""
        fewer = pipeline.fewer_windows(spec, tokens)
        if fewer is not None and self.windows_noted != self.token_key:
            log.info(fewer)  # INFO: the command line shows the engine's warnings, and prints this at the end
            self.windows_noted = self.token_key

    def reference_for(self, spec: JobSpec, tokens: TokenSet, progress: Progress = no_progress,
                      cancel: CancelCheck | None = None) -> Reference:
        """The original model's pass over the held-out windows: measured once per model, text and batch size,
        then every check (and the quality curve) compares with it instead of running the original again."""
        assert self.backend is not None
        key = self._reference_key(spec)
        if self.reference is None or self.reference_key != key:
            self.reference = ops.reference(self.backend.stack, tokens.eval_windows, tokens.pad_id, spec.batch_size,
                                           cancel, lambda done, total: progress("ppl_before", done, total, None))
            self.reference_key = key
        return self.reference

    def _reference_key(self, spec: JobSpec) -> tuple:
        return (self.load_key, self._token_key(spec), spec.batch_size)

    def _compared(self, spec: JobSpec, tokens: TokenSet, removed: Sequence[int], weights: dict[str, Any],
                  progress: Progress, cancel: CancelCheck | None, stage: str = "ppl_after") -> tuple[Any, Fidelity]:
        """Perplexity of the pruned (and repaired) model and its fidelity to the original, in one pass."""
        assert self.backend is not None and self.reference is not None
        return ops.compare(self.backend.stack, tokens.eval_windows, tokens.pad_id, self.reference, removed, weights,
                           cancel, lambda done, total: progress(stage, done, total, None))

    # ------------------------------------------------------------------------------------------ report, save

    def report(self, plan: PrunePlan, spec: JobSpec | None = None) -> Report:
        """The job's report (JSON, model card) for ``plan``, with the last check when it was for this plan."""
        spec = spec or self.scored_spec
        if self.loaded is None or spec is None:
            raise UserError("Score the layers first: the model is not loaded.")
        report = pipeline.new_report(self.loaded, spec)
        report.metric = plan.metric
        # Layers picked by hand are picked from the scores on screen, where there are any (the window's clicks; a
        # command line's --layers scores nothing)
        shown = self.scores if plan.metric != "manual" or self.scored is not None else None
        metric = plan.metric
        if plan.metric == "manual" and shown is not None:
            report.picked_after = metric = shown.metric
        report.listed_in = plan.listed_in
        if shown is not None:
            report.scores = list(shown.scores)
            report.other_scores = dict(shown.extra)
            report.block_size = shown.block_size
            report.tokens = shown.tokens
            report.timings["scoring"] = shown.seconds
        if self.scored is not None:
            report.calibration = list(self.scored.calibration)
            report.warnings = list(self.scored.warnings)
            if metric in METRICS and METRICS[metric].needs_text:
                # Imported scores (layers picked by hand from them too), or another metric the file carried; one
                # worked out from the weights (sequential, reverse) is not theirs.
                report.scores_imported = dict(self.scored.imported)
        if not report.calibration and self.tokens is not None and self.token_key == self._token_key(spec):
            # Layers given by hand are not scored: the text was read after, for the repair or the check
            report.calibration, report.warnings = list(self.token_names), list(self.token_warnings)
        if not report.calibration:
            report.samples = report.seq_len = 0  # no text was read: nothing was scored, fitted or measured
        elif self.tokens is not None and self.token_key == self._token_key(spec):
            report.samples = len(self.tokens.samples)  # what the text gave: 24 of 100 asked, the JSON said 100
        report.removed_layers, report.kept_layers = list(plan.removed), plan.kept
        report.params_before, report.params_after = plan.params_before, plan.params_after
        report.bytes_before, report.bytes_after = plan.bytes_before, plan.bytes_after
        selection = self._selection_for(len(plan.removed))
        if selection is not None and plan.metric in METRICS and METRICS[plan.metric].refines \
                and selection.removed == list(plan.removed):
            report.selection = selection.explanation
            report.timings["selection"] = selection.seconds
        report.output_format = self.resolved_format
        report.quantization = self._quantization()
        if self.source is not None and self.source.gguf_file and self.resolved_format != "gguf":
            report.source_quantization = WRITERS["gguf"].quantization(self.source)
        adjusted = self._adjusted_for(plan.removed)
        report.repair = "none"
        if adjusted is not None and adjusted.repair is not None:
            # "refit" where a refitted MLP is written: not where none was done (OPT) or none kept (no step did
            # better on the held-out rows, or the chat guard dropped it); the linear repair alone is saved there
            written = adjusted.refit is not None and any(run.kept for run in adjusted.refit.runs)
            report.repair = "refit" if written else "linear"
            refits = {r.layer: r for r in adjusted.refit.runs} if adjusted.refit is not None else {}
            after = {c.patched_layer: c for c in adjusted.repair.corrections}  # the kept layer after a run

            def fitted(r: Any) -> dict[str, Any]:
                return ({"patched_layer": r.patched_layer, "parameter": r.parameter, "fit": r.fit,
                         "residual_before": r.residual_before, "residual_after": r.residual_after}
                        | ({"ridge": None if math.isinf(r.ridge) else r.ridge, "held_out_residual": r.held_out_residual}
                           if r.ridge is not None else {}))

            report.repair_runs = [
                {"layers": [r.start, r.end - 1], "note": r.note} | fitted(r)
                | ({"refit_before": refits[r.patched_layer].residual_before,
                    "refit_after": refits[r.patched_layer].residual_after,
                    "refit_kept": refits[r.patched_layer].kept} if r.patched_layer in refits else {})
                | ({"after": fitted(after[r.end])} if r.end in after else {})
                for r in adjusted.repair.runs
            ]
            if adjusted.refit is not None:
                report.timings["refit"] = adjusted.step_seconds.get("refit", adjusted.refit.seconds)
                if NOTE_NO_MLP_MODULE in adjusted.refit.notes:  # asked for, and not done: said (OPT)
                    report.warnings.append(NOTE_NO_MLP_MODULE)
                if adjusted.refit.chat is not None:
                    report.refit_chat = dataclasses.asdict(adjusted.refit.chat)
            # What the step took in this job: nothing when bi+ had fitted this very repair while choosing, where its
            # seconds are the selection's (the JSON said "repair": 1.4e-05, the lookup's time, beside a fit of 47 s).
            if adjusted.repair_kept:
                report.timings["repair"] = 0.0
                report.timings["repair_within_selection"] = adjusted.repair.seconds
            else:
                report.timings["repair"] = adjusted.step_seconds.get("repair", adjusted.repair.seconds)
            prose = sum(len(s) for s in self.tokens.samples) if self.tokens is not None else 0
            if self.answers is not None and adjusted.repair.tokens > prose:  # the fit saw the answers too
                report.repair_own_answers = len(self.answers[1])
        if adjusted is not None and adjusted.heal is not None:
            report.heal_steps = adjusted.heal.steps
            report.heal_losses = [adjusted.heal.losses[0], adjusted.heal.losses[-1]]
            report.heal_compute_dtype = adjusted.heal.compute_dtype
            report.timings["heal"] = adjusted.heal.seconds
            from .cut.healing import healing_did_not_help

            unhealed = healing_did_not_help(adjusted.heal.losses)
            if unhealed:
                report.warnings.append(unhealed)
        c = self.checked_for(spec, plan.removed)
        if c is not None:
            report.ppl_before, report.ppl_after, report.eval_tokens = c.ppl_before, c.ppl_after, c.eval_tokens
            if self.tokens is not None and self.token_key == self._token_key(spec):
                pipeline.note_fewer_windows(report, spec, self.tokens)
            report.eval_text = spec.eval_text  # None: the windows were held out of the calibration text's end
            report.timings["perplexity"] = c.seconds
            if c.fidelity is not None:
                report.fidelity = c.fidelity.to_json()
            if c.quiz is not None:
                report.quiz = c.quiz.to_json()
                lost = lost_most(c.quiz.known, c.quiz.kept)
                if lost is not None:
                    report.warnings.append(lost)
            if c.prompt:
                report.generation_prompt = c.prompt
                report.generation_chat_template = c.chat_template
                report.generation_before, report.generation_after = c.generation_before, c.generation_after
                if c.lost_answer:
                    report.warnings.append(LOST_ANSWER)
        if c is not None and c.streamed_note:
            report.warnings.append(c.streamed_note)
        if plan.metric == "manual" and not report.picked_after and report.repair == "none" and not report.heal_steps \
                and spec.eval_text:
            # Layers given by hand, nothing fitted, the check on a text of its own: the calibration text was read and
            # never used, yet the card named it and its sizes for figures that any other text gives alike.
            report.calibration, report.samples = [], 0
            report.warnings = [w for w in report.warnings if not pipeline.about_calibration_use(w)]
        return report

    def check_output(self, out: str | Path, force: bool = False) -> Path:
        """Refuse an output folder that could destroy data, before any long step runs."""
        if self.source is None:
            raise UserError("Choose a model first.")
        return check_output_folder(Path(out), self.source, force)

    def check_room(self, out: str | Path, plan: PrunePlan, spec: JobSpec) -> None:
        """Refuse, before the repair and healing run, an output ``plan`` would not fit on the disk of ``out``
        (its size in the format written, with the weights ``spec``'s repair and healing change)."""
        if plan.removed:
            check_room(out, self._sized_for(plan, spec).bytes_after, self.writer.side_files_bytes)

    def check_room_before_scoring(self, out: str | Path, count: int) -> None:
        """Refuse, before the scoring pass (an hour or more for a big model streamed from disk), a disk that cannot
        hold even the smallest output ``count`` removed layers can give: the largest layers gone and no weight
        changed. Only where the format reads sizes from the source's headers (a GGUF, a safetensors checkpoint of a
        known family); :meth:`check_room` asks again with the layers chosen."""
        n = self.n_layers
        if self.source is None or not 0 < count < n:
            return
        sizes = [self.writer.sizes(self.source, [i], n) for i in range(n)]
        if any(s is None for s in sizes):
            return
        before = sizes[0][0]  # type: ignore[index]
        savings = sorted((before - after for _, after in sizes), reverse=True)  # type: ignore[misc]
        check_room(out, before - sum(savings[:count]), self.writer.side_files_bytes, at_least=True)

    def save(self, plan: PrunePlan, out: str | Path, report: Report | None = None, force: bool = False,
             progress: Progress = no_progress, cancel: CancelCheck | None = None) -> SaveResult:
        """Write the pruned model (and its model card) to ``out``, atomically, in :attr:`resolved_format`."""
        if self.loaded is None:
            raise UserError("Score the layers first: the model is not loaded.")
        if not plan.removed:
            raise PlanError("The plan removes no layers: choose how many to remove first.")
        self.check_unchanged()
        adjusted = self._adjusted_for(plan.removed)
        weights = adjusted.weights if adjusted is not None else {}
        self.refusal_to_save()
        result = self.writer.write(self.loaded, plan, out, report, force, progress, cancel, weights)
        if report is not None and report.changed_types and report.ppl_after is not None \
                and not set(MEASURED_BEFORE_REQUANTIZED) & set(report.warnings):  # the card said it; the JSON not
            report.warnings.append(measured_before_requantized(bool(report.quiz.get("known"))))
        return result

    def refusal_to_save(self) -> None:
        """The output format this backend cannot write, said before anything runs."""
        if self.backend is not None:
            asked = self.scored_spec is None or self.scored_spec.low_memory is not None
            problem = self.backend.refusal(output_format=self.resolved_format, asked=asked)
            if problem is not None:
                raise problem

    def _quantization(self) -> str:
        """What the output's weights are: a GGUF's file type as llama.cpp names it (Q4_K_M), the float type a
        safetensors model's weights keep in a safetensors copy (bfloat16), else nothing."""
        return self.writer.quantization(self.source) if self.source is not None else ""


def _refuse_non_finite(values: Sequence[float | None], dtype: str) -> None:
    """The sentence for a pass whose hidden states were not numbers (NaN or infinite): every score after them is
    NaN, and the job went on to remove layers chosen among NaNs, saved the model and exited 0 ("perplexity: nan").
    In float16 that is an overflow (Gemma 3 on the CPU, or where ``auto`` picks float16: MPS, GPUs without
    bfloat16); in a wider type the weights themselves hold such values. ``values``: the states' own cosines where
    the pass kept them (a metric's ratio may divide by zero on its own), the scores otherwise. The hooked pass stops
    at the first batch (or layer, one at a time) that gives such values: the layers after it may be unmeasured."""
    bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
    if not bad:
        return
    where = f"layer {bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
    if dtype == "float16":
        raise UserError(f"The model's hidden states overflow float16 at {where} (not finite numbers), so no layer "
                        "can be scored.", hint=Hint.WIDER_DTYPE)  # the front end says how to pick another type
    raise UserError(f"The model's hidden states are not finite numbers at {where} in {dtype}, so no layer can be "
                    "scored: its weights may hold NaN or infinite values; check the model file.")


__all__ = ["METRICS", "Checked", "Engine", "JobSpec", "Scored"]
