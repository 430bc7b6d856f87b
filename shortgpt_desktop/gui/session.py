"""The window's controller, without Qt: what the engine is asked, with which settings, and what is said about it.

:class:`Session` builds the job settings from the panels' plain values, hands the window each job as a function
``work(progress, cancel)`` to run in a worker thread, and words the decisions the window shows (how the model
will run, what the next job will cost). The window draws and forwards clicks; the tests drive a session directly,
as the command line drives the engine.

Threading rule: a job function may change the engine (one job at a time); everything else here runs on the
window's thread between jobs. The memory estimate, which runs beside jobs, only reads the opened source and
returns plain data: it never writes the engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.cut.plan import PrunePlan
from ..core.engine import Engine, JobSpec
from ..core.errors import UserError
from ..core.model.memory import MemoryEstimate
from ..core.progress import counts_layers, stage_unit
from ..core.report import MEASURED_BEFORE_REQUANTIZED
from ..format import StageClock, human_bytes, human_seconds, time_left

Work = Callable[[Any, Any], Any]


#: How the Runs line begins where the model runs one layer at a time (:func:`describe_modes`).
STREAMED_MODE = "one layer at a time"


@dataclasses.dataclass
class MemoryView:
    """What the model panel shows about memory: the figures, and which way the model will run (plain data)."""

    info: Any  # model.loading.ModelInfo for the settings asked about
    mode: str
    details: str
    streamed: bool = False  # it runs one layer at a time: the memory shown is that way's


class Session:
    """One opened model and the jobs on it, as the window sees them."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()

    # -------------------------------------------------------------------------------------------- settings

    def job_spec(self, values: dict[str, Any], sources: Sequence[str], prompt: str, model: str) -> JobSpec:
        """The panels' values as the engine's job description."""
        return JobSpec(
            model=model, calib=list(sources), samples=values["samples"], seq_len=values["seq_len"],
            eval_windows=values["eval_windows"], batch_size=values["batch_size"], metric=values["metric"],
            device=values["device"], dtype=values["dtype"], trust_remote_code=values["trust_remote_code"],
            prompt=prompt, low_memory=True if values["low_memory"] else None,
            repair=("refit" if values.get("refit") else "linear") if values["repair"] else "none",
            heal_steps=values["heal_steps"],
        )

    def final_spec(self, now: JobSpec) -> JobSpec:
        """The scoring's settings with the repair, healing and prompt chosen now (what Check and Save use)."""
        scored = self.engine.scored_spec
        if scored is None:
            raise UserError("Score the layers first.")
        return dataclasses.replace(scored, repair=now.repair, heal_steps=now.heal_steps, prompt=now.prompt)

    # -------------------------------------------------------------------------------------------- jobs

    def open_job(self, spec: JobSpec) -> Work:
        return lambda progress, cancel: self.engine.open(spec, progress, cancel)

    def score_job(self, spec: JobSpec) -> Work:
        return lambda progress, cancel: self.engine.score(spec, progress, cancel)

    def check_job(self, plan: PrunePlan, spec: JobSpec) -> Work:
        """bi+ measures its choice and the repair is fitted (if not yet), then the check: (final plan, Checked)."""
        def work(progress: Any, cancel: Any) -> Any:
            final = self.engine.prepare(spec, plan, progress, cancel)
            return final, self.engine.check(spec, final.removed, spec.prompt, progress, cancel)

        return work

    def save_job(self, plan: PrunePlan, spec: JobSpec, out: str, force: bool) -> Work:
        """The same preparation, then the report and the atomic save: (final plan, SaveResult, what the save says
        of the figures: :func:`~..core.report.measured_before_requantized` where they were measured before weights
        were re-quantized for the file, which the card, the command line and the JSON said, and the window not; and
        :meth:`healing_note`)."""
        def work(progress: Any, cancel: Any) -> Any:
            final = self.engine.prepare(spec, plan, progress, cancel, out=out)
            report = self.engine.report(final, spec)
            result = self.engine.save(final, out, report, force, progress, cancel)
            said = [*MEASURED_BEFORE_REQUANTIZED, self.healing_note()]
            return final, result, [w for w in report.warnings if w and w in said]

        return work

    def healing_note(self) -> str:
        """The warning for the last healing where its loss did not fall, else "" (the command line said so, and the
        window said nothing: :func:`..core.cut.healing.healing_did_not_help`)."""
        adjusted = self.engine.adjusted
        if adjusted is None or adjusted.heal is None:
            return ""
        from ..core.cut.healing import healing_did_not_help

        return healing_did_not_help(adjusted.heal.losses)

    def curve_job(self, spec: JobSpec, max_removed: int | None = None) -> Work:
        return lambda progress, cancel: self.engine.quality_curve(spec, max_removed, progress, cancel)

    def refuse_before_folder(self, spec: JobSpec) -> None:
        """What refuses a save whatever its folder, asked before the folder dialog: healing one layer at a time, a
        format the way the model runs cannot write (a GGUF saved as safetensors one layer at a time)."""
        self.engine.refusal(spec)
        self.engine.refusal_to_save()

    def format_refused(self, name: str, streamed: bool) -> bool:
        """Whether the open model cannot be saved as ``name`` the way it runs (``streamed``: one layer at a time), by
        the backend's own rule (:meth:`..core.backends.base.Backend.refusal_for`), for the window to grey it out."""
        from ..core.backends.base import backend_class

        source = self.engine.source
        return streamed and source is not None and \
            backend_class("streamed").refusal_for(source, output_format=name) is not None

    def refuse_plan(self, plan: PrunePlan, spec: JobSpec) -> None:
        """What refuses this plan's save in any folder, before its job starts (another folder would be refused too):
        the plan, the format, what the writer cannot write back (a GGUF layout locked to positions, a healed
        weight). :meth:`refuse_folder` says what refuses the folder."""
        self.engine.report(plan)
        self.refuse_before_folder(spec)  # healing one layer at a time: said at the click, not after the choice ran
        self.engine.check_output_job(spec, plan.removed)

    def refuse_folder(self, plan: PrunePlan, spec: JobSpec, out: str, force: bool) -> None:
        """What refuses ``out`` itself: a folder that holds other files, lies inside the model, cannot be written, or
        whose disk has no room for the output (another folder may do)."""
        self.engine.check_output(out, force)
        self.engine.check_room(out, plan, spec)

    def memory_job(self, spec: JobSpec) -> Work:
        """Headers only, beside any running job: returns a :class:`MemoryView` and changes nothing."""
        engine, source = self.engine, self.engine.source
        decided = engine.decided_mode(spec)  # read here, between jobs, not beside one

        def work(progress: Any, cancel: Any) -> MemoryView:
            if source is None:
                raise UserError("Choose a model first.")
            info = Engine(source=source).estimate(spec)  # a throwaway engine: the real one is not touched
            mode, details = describe_modes(engine, spec, info.memory, decided)
            return MemoryView(info, mode, details, streamed=mode.startswith(STREAMED_MODE))

        return work

    # -------------------------------------------------------------------------------------------- words

    def next_job_estimate(self, spec: JobSpec, count: int, check: bool, layers: Sequence[int] | None = None) -> Any:
        """The estimate (:class:`..core.estimate.JobEstimate`) of the job a button starts, or None (``layers``: a
        plan chosen by hand)."""
        return self.engine.job_estimate(spec, count, check, layers)

    def next_job_text(self, spec: JobSpec, count: int, check: bool) -> str:
        """``about 2 min 10 s (choosing 1 min 30 s, repairing 40.0 s)`` for the job a button starts, or ""."""
        return estimate_words(self.next_job_estimate(spec, count, check))

    def next_curve_estimate(self, spec: JobSpec, max_removed: int | None) -> Any:
        """The same for the quality curve up to ``max_removed`` layers (it said nothing of its whole time)."""
        return self.engine.curve_estimate(spec, max_removed)


def estimate_words(estimate: Any) -> str:
    """An estimate in words (``about 2 min 10 s (choosing …, from the scoring speed)``), or "" for none."""
    if estimate is None or not estimate.steps:
        return ""
    parts = ", ".join(f"{name} {human_seconds(seconds)}" for name, seconds in estimate.steps.items())
    return f"about {human_seconds(estimate.total)} ({parts}, from the scoring speed)"


def describe_modes(engine: Engine, spec: JobSpec, estimate: MemoryEstimate,
                   decided: str | None = None) -> tuple[str, str]:
    """Which way the model will run and what each way needs (reads headers only).

    ``decided``: the engine's settled way for these settings (:meth:`Engine.decided_mode`), said as it is; the
    estimate only decides a way not settled yet (once the model is loaded, the free memory it reads has dropped
    by the model's size and would say "one layer at a time" or "does not fit" for a model running whole).
    """
    from .messages import user_message

    # Beside the program's own, which is running already (free memory is what is left of it): "Memory needed" counts
    # it too, and said 2.0 GB beside "whole model: 1.6 GB" with nothing to tell why.
    streamed = (f"one layer at a time: {human_bytes(estimate.streamed_total)}" if not estimate.not_streamable
                else f"not one layer at a time: {estimate.not_streamable.rstrip('.')}")
    details = (f"beyond the program's own {human_bytes(estimate.runtime_bytes)}, whole model: "
               f"{human_bytes(estimate.in_memory_total)}; {streamed}; free: "
               f"{human_bytes(estimate.available_device_bytes)}")
    try:
        mode = decided or engine.mode_for(spec, estimate)
    except UserError as exc:
        return "does not fit", f"{user_message(exc)} ({details})"
    if mode == "streamed":
        why = "as asked" if spec.low_memory else "it would not fit whole"
        if spec.heal_steps > 0:  # said only once Check or Save was pressed
            why += "; healing cannot run so: set Heal steps to 0" + (" or untick Low memory" if spec.low_memory
                                                                      else "")
        return f"{STREAMED_MODE} ({why})", details
    return "whole, in memory", details


def model_file_name(source: Any) -> str:
    """The model's name as the start of a file or folder name: its last part with a ``.gguf`` ending dropped, and
    only that (the name's stem cut "Qwen2.5-0.5B-Instruct" to "Qwen2", "SmolLM2-1.7B-Instruct" to "SmolLM2-1")."""
    import re

    name = Path(source.display_name).name if source is not None else "model"
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"


def suggested_output(engine: Engine, plan: PrunePlan | None, save_dir: str | None) -> str:
    """A new folder named after the model and the layers kept, beside the last save or the model (a model folder's
    parent, and a GGUF's named by its folder; a GGUF file's own folder, where the folder above it was offered; for a
    GGUF this app saved, the folder above the output folder it lies in: a folder inside that output was offered,
    which then could not be replaced, holding more than a model; for a model in the Hub cache, the home folder, as
    for a Hub id: a folder beside its snapshots was offered)."""
    from ..core.formats.output_folder import gguf_given_as_folder
    from ..core.formats.provenance import earlier_removed

    source = engine.source
    name = model_file_name(source)
    kept = len(plan.kept) if plan else 0
    folder = save_dir
    if not folder and source is not None and source.kind != "hub" and source.in_hub_cache is None:
        gguf = getattr(source, "gguf_file", None)
        # a GGUF named by its folder: that folder is the source, where no save may go (it was offered, then refused)
        beside = not gguf or earlier_removed(source) or gguf_given_as_folder(source)
        folder = str(source.folder.parent if beside else source.folder)
    return str(_unused(Path(folder or Path.home()) / f"{name}-shortgpt-{kept}L"))


def folder_is_nonempty(path: str) -> bool:
    """Whether ``path`` is a folder holding anything; False too where it cannot be read: the save's own check then
    says why, in a sentence."""
    p = Path(path)
    try:
        return p.is_dir() and any(p.iterdir())
    except OSError:
        return False


def _unused(path: Path) -> Path:
    """``path``, or where it already holds something (the same cut saved before, in the other format), the first of
    ``path-2``, ``path-3``, … that does not: the same name was offered again, and a No to "Replace folder?" left the
    user with no save at all."""
    candidate, number = path, 1
    while (candidate.is_file() or folder_is_nonempty(str(candidate))) and number < 1000:
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


# ------------------------------------------------------------------------------------------------ progress

#: What the window says each stage of a job is doing (the command line's shorter words: ``cli._STAGE_LABELS``).
STAGE_TEXT = {
    "download": "Downloading the model",
    "inspect": "Reading the model's description",
    "load": "Loading the model",
    "tokenize": "Tokenising the calibration text",
    "scoring": "Scoring",
    "ppl_before": "Perplexity of the original",
    "ppl_after": "Perplexity of the pruned model",
    "ppl_both": "Perplexity of the original and the pruned model",
    "generate": "Generating text with both models",
    "quiz_before": "Asking the original the quiz questions",
    "quiz_after": "Asking the pruned model the quiz questions",
    "saving": "Saving the pruned model",
    "selecting": "Checking the candidate layers",
    "repair": "Repairing the pruned model",
    "refit": "Refitting the MLPs beside the cuts",
    "answers": "Writing the original's chat answers for the repair",
    "heal": "Healing (LoRA)",
    "sweep": "Quality curve",
    "writing GGUF": "Writing the GGUF file",
}
#: Each window job's name, as the window says it while the job starts and when closing asks to stop it.
JOB_TITLE = {"open": "Opening the model", "score": "Scoring", "save": "Saving", "import": "Loading the model",
             "check": "Checking perplexity", "curve": "Quality curve"}
#: Stages whose count is not worth a bar (one step, or a step that reports no count as it goes).
_UNCOUNTED = ("load", "tokenize", "inspect")


@dataclasses.dataclass
class ProgressView:
    """One progress event as the window shows it (plain data): the line of text, the bar, and what a panel
    shows beside it."""

    text: str
    bar: tuple[int, int] | None  # (done, total); None: busy, without a count
    download: tuple[int, int] | None = None  # (bytes done, bytes in all) while a Hub model downloads
    scores: list | None = None  # the scores measured so far, while scoring


#: The share of a step done from which its pace raises the whole job's time for good (:meth:`JobProgress.update`):
#: 1 in 4.
STEADY_SHARE = 4


class JobProgress:
    """Words the progress of the window's jobs: ``Scoring: 3 of 30 layers, about 2 min 10 s left…``.

    Keeps when the current stage began, for the time left at the stage's own pace (:class:`..format.StageClock`: a
    stage another one interrupted resumes with its own clock); ``clock`` is :func:`time.monotonic` unless a test
    gives its own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stages = StageClock()
        #: When the job began and the seconds it was said to take in all (:meth:`announced`; raised where a step's own
        #: pace says more), else None.
        self.whole: tuple[float, float] | None = None
        #: The seconds said as the job started, as said (:meth:`took` sets the time it took against them), else None.
        self.said: float | None = None

    def started(self, job: str) -> str:
        """The line while a job starts, before its first progress."""
        self.stages.reset()
        self.whole = self.said = None
        return job_title(job) + "…"

    def update(self, stage: str, done: int, total: int, partial: Any = None, *, streamed: bool = False,
               metric: str = "") -> ProgressView:
        """One event of the engine's progress (``streamed``: the model runs one layer at a time; ``metric``:
        the scoring job's, whose counter counts layers for the ppl metric)."""
        elapsed, since = self.stages.update(stage, done, total, self.clock())
        text = STAGE_TEXT.get(stage, stage)
        unit = stage_unit(stage, counts_layers(stage, streamed, metric))
        if stage == "download" and total:
            text += f": {human_bytes(done)} of {human_bytes(total)}"
        elif unit and total:
            text += f": {done} of {total} {unit}"
        left = time_left(done, total, elapsed, since)
        if left is not None and left >= 1:
            text += f", about {human_seconds(left)} left"
        if self.whole is not None:  # the whole job's, said as it started, beside each step's own (gone from view)
            began, seconds = self.whole
            so_far = self.clock() - began
            if left is not None and left >= 1 and so_far + left > seconds:
                # the step's own pace says more is left than the whole said: "about 2 min 40 s left · 5.0 s of about
                # 2 min 17 s in all" contradicted itself (the step is part of the job). Kept for the steps after it
                # once a quarter of the step has set its pace; before that, said only: the first of a check's 105
                # passes (its warm-up) said 12 min in all, kept to the end of a job of 4 min (a walkthrough).
                seconds = so_far + left
                if total and done * STEADY_SHARE >= total and done >= 2:  # not a short step's first unit alone
                    self.whole = (began, seconds)
            # past the whole said, "1.2 s of about 949 ms in all" read as a slip of the counter (and past it as shown:
            # not "8 min 39 s so far, past the 8 min 39 s said")
            past = so_far > seconds and human_seconds(so_far) != human_seconds(seconds)
            text += (f" · {human_seconds(so_far)} so far, past the {human_seconds(seconds)} said" if past
                     else f" · {human_seconds(so_far)} of about {human_seconds(seconds)} in all")
        if done < total or not total:
            text += "…"
        return ProgressView(
            text=text, bar=(done, total) if total > 0 and stage not in _UNCOUNTED else None,
            download=(done, total) if stage == "download" else None,
            scores=partial if stage == "scoring" and isinstance(partial, list) else None)

    def took(self, job: str, seconds: float) -> str:
        """The Log's line for a job that ended well: its time, and the time said before it where one was (a Check of
        4 min 23 s said nothing of its time, where a scoring says "Scored 18 layers in 21.3 s")."""
        # what was said as it started: the figure raised on the way ("about 38.5 s", then "took 33.1 s, 1 min 42 s
        # said before it" in the Log; a walkthrough)
        said = f", {human_seconds(self.said)} said before it" if self.said else ""
        return f"{job_title(job)} took {human_seconds(seconds)}{said}."

    def finished(self, outcome: str, job: str = "") -> str:
        """The line once a job has stopped (``ok``: nothing; the result speaks for itself), naming the job: "Failed."
        under the Score button after a model failed to open read as a failed scoring, beside the model still open."""
        self.whole = self.said = None
        return ended_line(outcome, job)

    @staticmethod
    def cancelling() -> str:
        return "Cancelling…"

    @staticmethod
    def announced(job: str, estimate: Any) -> str:
        """What a job about to start will cost, until its first progress (``estimate``: a
        :class:`..core.estimate.JobEstimate`, or its words; nothing to say when there are none)."""
        text = estimate if isinstance(estimate, str) else estimate_words(estimate)
        return f"{job_title(job)}: {text}…" if text else ""

    def keep_whole(self, seconds: float | None) -> None:
        """Say the whole job's ``seconds`` beside each step's progress from now on (:meth:`update`; None: nothing):
        the first step's line replaced the whole job's time at once, and only the tooltip kept it."""
        self.whole = (self.clock(), float(seconds)) if seconds else None
        self.said = float(seconds) if seconds else None


def ended_line(outcome: str, job: str = "") -> str:
    """:meth:`JobProgress.finished`'s line: "Opening the model failed.", "Cancelled.", or "" for a job that ended
    well."""
    said = {"cancelled": "cancelled.", "failed": "failed."}.get(outcome, "")
    return f"{job_title(job)} {said}" if said and job else said.capitalize()


def job_title(job: str) -> str:
    return JOB_TITLE.get(job, job)
