"""``shortgpt score | prune | sweep | eval``: the engine from a terminal.

Exit codes: 0 done, 2 bad input (one line on stderr, no traceback), 130 cancelled (Ctrl-C; nothing written), 128 +
the signal's number when stopped by SIGTERM (143), SIGHUP (129) or Ctrl-Break on Windows (149), nothing written
either.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .console import tolerant_console
from .core import defaults
from .core.cut.plan import parse_layer_list
from .core.cut.selection import protected_layers
from .core.errors import Cancelled, Hint, UserError, worded
from .core.formats.output_folder import an_output_is_in_place, forget_outputs_in_place
from .core.formats.provenance import in_first_original
from .core.measure.calibration import BUILTIN_CORPUS, DEFAULT_HELDOUT_FRACTION
from .core.measure.metrics import METRICS, score_column
from .core.measure.quiz import quiz_summary
from .core.model.loading import quiet_library_progress
from .core.progress import counts_layers, stage_unit
from .core.report import after_fitted, left_as_it_was, requantized
from .core.user_paths import exists, expand_home, shown_model
from .format import (
    StageClock,
    collapsed,
    counted,
    human_bytes,
    human_count,
    human_seconds,
    in_number,
    layer_list,
    layer_span,
    listed,
    quoted,
    time_left,
    unit_of,
)
from .stop_signals import STOP_SIGNALS, on_stop_signals

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 130

#: How the command line words what the user can do about an engine error (the engine names no flags).
HINTS: dict[Hint, str] = {
    Hint.REPLACE_OUTPUT: "add --force to replace it",
    Hint.TRUST_REMOTE_CODE: "add --trust-remote-code to allow it",
    Hint.USE_CPU: "use --device cpu",
    Hint.SMALLER_BATCH: "use a smaller --batch-size or --seq-len, or --dtype bfloat16",
    Hint.LOW_MEMORY: "add --low-memory to score it one layer at a time",
    Hint.LOW_MEMORY_METRIC: "or leave out --low-memory",
    Hint.WIDER_DTYPE: "use --dtype float32 or --dtype bfloat16",
}


def error_line(exc: UserError) -> str:
    """The engine's sentence, with this front end's words for the hint."""
    return worded(exc, HINTS)


_STAGE_LABELS = {
    "download": "downloading",
    "inspect": "reading the model's header",
    "load": "loading",
    "tokenize": "tokenising",
    "scoring": "scoring",
    "ppl_before": "perplexity, original",
    "ppl_after": "perplexity, pruned",
    "ppl_both": "perplexity, original and pruned",
    "generate": "generating",
    "quiz_before": "quiz, original",
    "quiz_after": "quiz, pruned",
    "saving": "saving",
    "writing GGUF": "writing the GGUF file",
    "repair": "repairing",
    "refit": "refitting the MLPs beside the cuts",
    "answers": "writing the original's chat answers for the repair",
    "selecting": "checking candidates",
    "sweep": "quality curve",
    "heal": "healing",
}


class ProgressBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal), with an ETA.

    Each stage's first line is always drawn at once (a script reading stderr sees a stage start when it
    starts); later lines are throttled. The time left is extrapolated from the stage's own pace so far
    (:class:`..format.StageClock`: a stage another one interrupted resumes with its own clock).
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 per_layer: Callable[[str], bool] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr  # the stderr of now, not of the module's import
        self.quiet = quiet
        #: Whether a stage counts layers (low-memory mode, the ppl metric) rather than its usual unit.
        self.per_layer = per_layer or (lambda stage: False)
        self.tty = self.stream.isatty()
        self.stage: str | None = None  # the stage whose line is drawn (None once a terminal line is ended)
        self.clock = StageClock()  # each stage's seconds and pace
        self.last_draw = 0.0
        #: Stage labels of this run in place of ``_STAGE_LABELS``' (eval --against names its two models).
        self.labels: dict[str, str] = {}
        self.open_line = False  # a terminal line drawn in place and not ended yet
        #: The last finished line drawn, (stage, done, total): a stage that reports its end twice (bi+'s choice, then
        #: the engine) printed "checking candidates: [###] 27/27 passes" twice.
        self.finished: tuple[str, int, int] | None = None

    def __call__(self, stage: str, done: int, total: int, partial: Any = None) -> None:
        if self.quiet:
            return
        if stage == "estimate":
            self._say(estimate_text(partial))
            return
        finished = total > 0 and done >= total
        if finished and (stage, done, total) == self.finished:
            return
        self.finished = (stage, done, total) if finished else None
        now = time.perf_counter()
        elapsed, since = self.clock.update(stage, done, total, now)
        new_stage = stage != self.stage
        if new_stage:
            self.end_line()
            self.stage = stage
        if not (new_stage or finished) and now - self.last_draw < (0.1 if self.tty else 5.0):
            return
        self.last_draw = now
        text = progress_text(stage, done, total, elapsed, stage_unit(stage, self.per_layer(stage)), since,
                             self.labels.get(stage))
        if stage == "heal" and done == 0 and isinstance(partial, float):
            text += f", estimated {human_seconds(partial)} in all"
        if self.tty:
            # One line the terminal's width, never wider: a wrapped line is not redrawn in place by "\r", and on a
            # 40-column terminal each update left fragments (the width is read at each draw: windows get resized).
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            self.stream.write("\r" + text[:width].ljust(width))
            self.open_line = not finished
            if finished:
                self.stream.write("\n")
                self.stage = None
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _say(self, text: str) -> None:
        """A line of its own, between progress lines."""
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        """End a terminal line drawn in place, so that what is written next starts a line of its own (the model's
        line was written after "reading the model's header...  0.0s" and its padding, and wrapped there)."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


def estimate_text(estimate: Any) -> str:
    """``the whole job: about 4 min 10 s (scoring 40.0 s, choosing 2 min 05 s, ...), at the second scoring batch's
    speed``."""
    parts = ", ".join(f"{name} {human_seconds(seconds)}" for name, seconds in estimate.steps.items())
    return f"the whole job: about {human_seconds(estimate.total)} ({parts}), at {estimate.basis}'s speed"


def progress_text(stage: str, done: int, total: int, elapsed: float, unit: str | None = None, since: int = 0,
                  label: str | None = None) -> str:
    """``scoring: [####......] 12/128 samples  0:41, about 3 min 10 s left`` (the counter's unit said; the pace
    counts from ``since``, where the stage started; ``label`` in place of the stage's usual one)."""
    label = label or _STAGE_LABELS.get(stage, stage)
    unit = unit if unit is not None else stage_unit(stage)
    if stage == "download" and total:
        text = f"{label}: {done / 1e6:,.1f} / {total / 1e6:,.1f} MB"
    elif stage == "tokenize" and total > 1:  # a long text, counted in characters
        text = f"{label}: {done / 1e6:,.1f} / {total / 1e6:,.1f} million characters"
    elif total > 1 or (total and unit):
        width = 30
        filled = int(width * done / total)
        text = f"{label}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total}" + (f" {unit}" if unit else "")
    else:
        text = f"{label}: done" if total and done >= total else f"{label}..."
    text += f"  {elapsed:5.1f}s"
    left = time_left(done, total, elapsed, since)
    if left is not None:
        text += f", about {human_seconds(left)} left"
    return text


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """A choice as typed in another case or with a hyphen for the underscore (``--metric BI``, ``--repair Linear``,
    ``--metric relative-magnitude``) taken as the choice it names; argparse refused it, listing the very word."""
    by_word = {_choice_word(c): c for c in choices}

    def choice(text: str) -> str:
        return by_word.get(_choice_word(text), text)

    return choice


def _choice_word(text: str) -> str:
    return text.strip().lower().replace("-", "_")


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    meant = _meant_share(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a number" + (f"; for a share, write {meant:g}" if meant else ""))


def _meant_share(text: str) -> float | None:
    """The share ``25%`` or ``0,25`` meant (0.25), where it is one; None elsewhere."""
    typed = text.strip()
    percent = typed.endswith("%")
    try:
        value = float(typed.rstrip("%").strip().replace(",", ".", 1))
    except ValueError:
        return None
    value = value / 100 if percent else value
    return value if 0 < value < 1 else None


#: The arguments being parsed (for :meth:`_Parser.error`'s hint; subparsers do not see the whole command).
_given: list[str] = []
#: The top parser, where a command's parser reports an error (it knows only its own options).
_top: list[argparse.ArgumentParser] = []


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line, as every other bad input does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "required: MODEL" in message and "--calib" in _given:
            # `prune --calib notes.txt MODEL …`: --calib takes every path after it, MODEL included
            message += " (--calib takes every path after it: put MODEL before --calib, or end its list with --)"
        if message.startswith("argument --layers") and "not a whole number" in message:
            message += " (--layers is how many to remove; to name the layers, use --remove 3,5)"
        message += _misspelt_options() + _remove_list_hint(message)
        self.exit(EXIT_BAD_INPUT, f"shortgpt: error: {message}\n")


def _command_options() -> tuple[str | None, list[str], dict[str, list[str]]]:
    """The command being parsed, the options it takes and every command's options, read from the top parser: a
    command's own parser (which reports a missing required option) knows only its own."""
    top = _top[0]
    options, commands, command = list(top._option_string_actions), {}, None
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands = {name: list(sub._option_string_actions) for name, sub in action.choices.items()}
            command = next((a for a in _given if a in commands), None)
            options += commands.get(command, [])
    return command, options, commands


def _misspelt_options() -> str:
    """Name a mistyped option: ``prune m --ratoi 0.25`` said only that one of --ratio, --layers and --remove is
    required, not that --ratoi is no option; ``score m --ratio 0.3`` only that it was not recognised."""
    import difflib

    if not _top:
        return ""
    command, known, commands = _command_options()
    words = []
    for given in _given:
        if given == "--":
            break
        name = given.split("=", 1)[0]
        if not name.startswith("--") or any(option.startswith(name) for option in known):
            continue  # a value, or a known option (or the start of one, as argparse takes it)
        elsewhere = [other for other, options in commands.items() if name in options]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        words.append(f"{name} is an option of {' and '.join(elsewhere)}, not of {command}" if elsewhere and command
                     else f"{name} is not an option" + (f"; did you mean {close[0]}?" if close else ""))
    return f" ({'; '.join(words)})" if words else ""


def _remove_list_hint(message: str) -> str:
    """``--remove 3 5`` (or ``3, 5``, ``--remove=3 5``, ``--rem 3 5``) said only "unrecognized arguments: 5": the
    layers go in one list."""
    if not message.startswith("unrecognized arguments: "):
        return ""
    extra = message.removeprefix("unrecognized arguments: ").split()
    for at, token in enumerate(_given):
        name, equals, value = token.partition("=")
        if len(name) > 4 and "--remove".startswith(name):  # argparse takes --rem for --remove
            first, rest = ([value], _given[at + 1:]) if equals else (_given[at + 1:at + 2], _given[at + 2:])
            break
    else:
        return ""
    parts = [part for part in ",".join([*first, *extra]).split(",") if part]
    if rest[:len(extra)] != extra or not parts or not all(part.replace("-", "").isdigit() for part in parts):
        return ""
    return f" (--remove takes one list: write --remove {','.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shortgpt",
        description="Score a language model's layers by Block Influence (ShortGPT) and delete the most "
        "redundant ones.",
    )
    _top[:] = [parser]
    parser.add_argument("--version", action="version", version=f"shortgpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, samples: bool = True) -> None:
        """The options every command takes; without ``samples`` (eval draws no samples) --samples and --seed are
        accepted but not offered in the help."""
        p.add_argument("model", metavar="MODEL", help="model folder, .gguf file, or Hugging Face Hub id (org/name)")
        p.add_argument("--revision", help="Hub branch, tag or commit")
        p.add_argument("--calib", nargs="+", default=[BUILTIN_CORPUS], metavar="PATH",
                       help="calibration text files or folders: any file that is text (prose, source code, HTML, "
                       "no ending...); .jsonl/.json records' text, .ipynb notebooks' cells; binary files are left "
                       f"out and said; '{BUILTIN_CORPUS}' (the default) for the built-in corpus")
        # "%%" below: argparse formats a help text with %, so a lone "%" was a TypeError traceback at --help
        # score measures no perplexity: its help spoke of one (a walkthrough); given, the scores use the whole text
        p.add_argument("--eval-text", metavar="PATH", help=(
            f"score measures no perplexity; given, the calibration text is scored whole, not less its last "
            f"{DEFAULT_HELDOUT_FRACTION:.0%}%, as a prune given it scores it" if p.prog.endswith(" score")
            # eval fits nothing: "the calibration text is used whole" meant nothing there (a walkthrough)
            else f"the text to measure perplexity on (default: the last {DEFAULT_HELDOUT_FRACTION:.0%}% of the "
            f"--calib text, or the built-in corpus; given, --calib is not used); '{BUILTIN_CORPUS}' for the "
            "built-in corpus" if p.prog.endswith(" eval")
            else f"separate text for perplexity (default: the last {DEFAULT_HELDOUT_FRACTION:.0%}% of the "
            f"calibration text, held out; given, the calibration text is used whole); '{BUILTIN_CORPUS}' for the "
            "built-in corpus"))
        # eval draws no samples and runs no prune: its presets are held-out windows (the prune's minutes said nothing)
        p.add_argument("--preset", choices=list(defaults.PRESETS), type=_one_of(list(defaults.PRESETS)),
                       help="sizes in one word (default: none, the sizes below as given): " + "; ".join(
                           f"{k}: {v.samples}x{v.seq_len} tokens, {v.trade_off}" if samples else
                           f"{k}: {v.eval_windows} held-out windows of {v.seq_len} tokens"
                           for k, v in defaults.PRESETS.items()))
        p.add_argument("--samples", type=_positive_int,
                       help=f"calibration samples (default {defaults.SAMPLES})" if samples else argparse.SUPPRESS)
        p.add_argument("--seq-len", type=_whole_number(defaults.MIN_SEQ_LEN),
                       help=f"tokens per {'sample and ' if samples else ''}held-out window "
                       f"(default {defaults.SEQ_LEN})")
        p.add_argument("--eval-windows", type=_positive_int,
                       help=f"held-out windows for perplexity (default {defaults.EVAL_WINDOWS})")
        p.add_argument("--batch-size", type=_positive_int, default=defaults.BATCH_SIZE,
                       help=f"samples per forward pass (default {defaults.BATCH_SIZE})")
        p.add_argument("--seed", type=int, default=0 if samples else None,  # eval: None, to say it when given
                       help="sampling seed (default 0)" if samples else argparse.SUPPRESS)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
        p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
        p.add_argument("--low-memory", action="store_const", const=True, default=None,
                       help="score and measure one decoder layer at a time (for models bigger than memory; "
                       "automatic when the model would not fit)")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="run the model's own Python code (only for models you trust)")
        p.add_argument("--json", metavar="PATH", help="write a JSON report")
        p.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bar, model line or time estimate (the notes, the summary and errors are "
                       "printed)")

    def metric_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--metric", choices=list(METRICS), type=_one_of(list(METRICS)),
                       help=f"layer importance metric (default {defaults.METRIC}): "
                       + "; ".join(f"{m.name}: {m.description}" for m in METRICS.values()))

    score = sub.add_parser("score", help="score every layer and print the table")
    common(score)
    metric_arg(score)
    score.add_argument("--block-size", type=_positive_int, default=1,
                       help="layers per block for --metric angular (default 1)")

    prune = sub.add_parser("prune", help="score, remove layers, check perplexity, save")
    common(prune)
    metric_arg(prune)
    how = prune.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=_ratio, help="share of layers to remove, rounded down (0.25 of 30 is 7)")
    how.add_argument("--layers", type=_positive_int, help="number of layers to remove")
    how.add_argument("--remove", help="explicit 0-based layer indices and ranges, e.g. 3,5,9 or 3-5,9, or \"4 14\" "
                     "as the sweep's CSV lists them (no scoring)")
    prune.add_argument("--out", required=True, metavar="DIR", help="output folder for the pruned model")
    prune.add_argument("--force", action="store_true", help="replace a non-empty output folder that holds an "
                       "earlier output (one model, as this app writes it) and nothing else")
    prune.add_argument("--format", choices=["gguf", "safetensors"], type=_one_of(["gguf", "safetensors"]),
                       dest="output_format",
                       help="what to write (default: the source's format; a .gguf source stays a GGUF of the "
                       "same quantization, for llama.cpp, Ollama and LM Studio; gguf needs a .gguf source)")
    prune.add_argument("--no-eval", action="store_true", help="skip the check: no perplexity, fidelity, text or quiz "
                       "before and after (--prompt and --eval-windows are then not used)")
    prune.add_argument("--repair", choices=list(defaults.REPAIRS), type=_one_of(list(defaults.REPAIRS)),
                       default=defaults.REPAIR,
                       help="linear (default): refit the MLP output projection of the layers before and after "
                       "each run of removed layers on the calibration text, in closed form (no new parameters); "
                       "refit: then "
                       "train the whole MLP of the layer before each run on the calibration activations (closer "
                       "to the original, minutes more on a CPU); none: the paper's plain removal")
    prune.add_argument("--heal", type=_non_negative_int, default=0, metavar="STEPS",
                       help="LoRA fine-tune on the calibration text for STEPS steps, distilled from the original, "
                       "merged into the weights (default 0: off; computed in bfloat16 where the CPU or GPU is faster "
                       "at it; slow on a CPU, minutes on a GPU; the time is estimated before the first step)")
    prune.add_argument("--prompt", help="prompt for the before/after generation sample (default: \""
                       f"{defaults.PROMPT}\"); \"\" leaves out the generation and the quiz")

    sweep = sub.add_parser("sweep", help="the quality curve: held-out perplexity for 0, 1, 2... layers removed")
    common(sweep)
    metric_arg(sweep)
    sweep.add_argument("--max", type=_positive_int, dest="max_removed", metavar="N",  # not MAX_REMOVED
                       help="the most layers to remove (default: half the layers)")
    sweep.add_argument("--csv", metavar="PATH", help="write the curve as CSV")
    sweep.add_argument("--no-quiz", action="store_true", help="leave out the quiz at each count (the check's short "
                       "questions, asked of every point's model); perplexity and fidelity stay")

    ev = sub.add_parser("eval", help="perplexity of a model (and of a second one on the same tokens)")
    common(ev, samples=False)
    ev.add_argument("--against", metavar="MODEL", help="a second model (e.g. the pruned one) to compare with the "
                    "first, which is the reference: the KL divergence and the quiz measure the second against it")
    return parser


def spec_from_args(args: argparse.Namespace) -> Any:
    from .core.pipeline import DEFAULT_PROMPT, JobSpec

    preset = defaults.PRESETS.get(args.preset or "standard", defaults.PRESETS["standard"])
    spec = JobSpec(
        model=args.model, calib=list(args.calib), eval_text=args.eval_text,
        samples=args.samples or preset.samples, seq_len=args.seq_len or preset.seq_len,
        eval_windows=args.eval_windows or preset.eval_windows, batch_size=args.batch_size,
        seed=args.seed if args.seed is not None else 0,
        device=args.device, dtype=args.dtype, revision=args.revision, trust_remote_code=args.trust_remote_code,
        low_memory=args.low_memory,
    )
    if args.command in ("score", "prune", "sweep"):
        spec.metric = args.metric or defaults.METRIC
    if args.command == "score":
        if args.block_size != 1 and not METRICS[spec.metric].block:  # it was ignored without a word
            blocks = ", ".join(name for name, metric in METRICS.items() if metric.block)
            raise UserError(f"--block-size scores blocks of layers with --metric {blocks} only, and {spec.metric} "
                            "scores each layer on its own; leave it out or choose that metric.")
        spec.block_size = args.block_size
    if args.command == "prune":
        spec.ratio = args.ratio
        spec.count = args.layers
        spec.layers = parse_layer_list(args.remove) if args.remove is not None else None
        if spec.layers is not None and args.metric is not None:
            from .core.errors import PlanError

            raise PlanError(f"--metric {args.metric} chooses which layers go, but --remove names them: leave one "
                            f"of the two out.")
        spec.out = args.out
        spec.force = args.force
        spec.output_format = args.output_format
        spec.repair = args.repair
        spec.heal_steps = args.heal
        spec.check_perplexity = not args.no_eval
        spec.prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt  # "": no text, no quiz
    if args.command == "sweep" and args.no_quiz:
        spec.prompt = ""  # the curve asks the quiz where the check would: no prompt, no quiz
    return spec


def fidelity_line(fidelity: dict[str, float], of: str = "to the original") -> str:
    """The figures ``llama-perplexity --kl-divergence`` prints for a quantization, for the pruned model (``of``: which
    model to which, where they are not a job's original and pruned model)."""
    return (f"fidelity {of} (as llama-perplexity --kl-divergence): mean KLD {fidelity['mean_kl']:.4f}, "
            f"99.0% KLD {fidelity['p99_kl']:.4f}, max KLD {fidelity['max_kl']:.3f}, "
            f"same top p {fidelity['same_top']:.1%}")


def print_model_info(info: Any, out: TextIO | None = None, label: str = "model") -> None:
    """What the model is and what it will cost, before the weights load (``label``: ``against`` for eval's second
    model, which loads once the first is freed)."""
    out = out or sys.stderr
    out.write(f"{label}: {info.architecture}, {counted(info.n_layers, 'layer')}, "  # "1 layers" for one
              f"{human_count(info.n_params)} parameters, {human_bytes(info.bytes_on_disk)} on disk "
              f"({info.weight_format}); needs about {human_bytes(info.memory_needed_bytes)} on {info.device} in "
              f"{info.dtype}"
              f"{', one layer at a time' if info.mode == 'streamed' else ''}\n")
    out.flush()


def print_note(sentence: str, out: TextIO | None = None) -> None:
    """A file the job leaves out (or another fact worth knowing before it starts), as one line on stderr."""
    out = out or sys.stderr
    out.write(f"note: {sentence}\n")
    out.flush()


def _fit_figures(fit: dict[str, Any], show_ridge: bool, ridge_note: str = "") -> str:
    """A reported fit's figures in brackets: its calibration error before and after, then, with ``show_ridge``, its
    ridge followed by ``ridge_note``."""
    ridge = f"; ridge {fit['ridge']:g}{ridge_note}" if show_ridge else ""
    return f" (calibration error {fit['residual_before']:.3f} -> {fit['residual_after']:.3f}{ridge})"


def _numbered_as(report: Any) -> str:
    """For a source this app pruned before, whose numbering the layers follow: "14" of a model that lacks its first
    original's 14 read as a layer already gone (the card said so; the terminal did not)."""
    if not report.earlier_removed:
        return ""
    first = in_first_original(report.earlier_removed, report.removed_layers, report.n_layers)
    earlier = report.earlier_removed
    return (f" (as numbered in {shown_model(report.model)}, which lacks its original's "
            f"{in_number(len(earlier), 'layer')} {layer_list(earlier)}; in the original: {layer_list(first)})")


def _text_measured(report: Any) -> str:
    """What text the perplexity line measured, where the user may not know: the built-in corpus (the default text of
    every command) or a separate evaluation text; nothing for the held-out end of the user's own calibration text,
    which the card names. ``eval`` without ``--calib`` measured the built-in corpus without a word, and its figures
    read twice as bad as the prune's on WikiText (a walkthrough)."""
    from .core.pipeline import BUILTIN_CORPUS_NAME

    held_out_of_builtin = not report.eval_text and BUILTIN_CORPUS_NAME in (report.calibration or [])
    if report.eval_text == BUILTIN_CORPUS or held_out_of_builtin:
        return " of the built-in corpus (Python docstrings; --calib or --eval-text FILE measures your own text)"
    return f" of {_text_name(report.eval_text)}" if report.eval_text else ""


def _text_name(eval_text: str) -> str:
    """An evaluation text as a summary names it: its file's name, or the built-in corpus."""
    return "the built-in corpus" if eval_text == BUILTIN_CORPUS else Path(eval_text).name


def print_summary(report: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    removed = set(report.removed_layers)
    if report.scores:
        # bi+'s column is plain BI, and its search leaves the ends out: a user who passed the lowest rows to --remove
        # removed a layer bi+ keeps (Gemma 3's last layer reads among its lowest). Its finalists include plain BI's
        # lowest layers, ends and all, so the line below does not say it never removes them.
        refines = report.metric in METRICS and METRICS[report.metric].refines
        protected = set(protected_layers(len(report.scores))) if refines else set()
        out.write(f"{'layer':>5}  {score_column(report.metric):>12}\n")
        for i, value in enumerate(report.scores):
            mark = "  removed" if i in removed else "  protected" if i in protected else ""
            shown = "—" if value is None else f"{value:.5f}"
            out.write(f"{i:>5}  {shown:>12}{mark}\n")
        # what the figures mean, said nowhere but the saved model's card (a command-line walkthrough)
        block = report.block_size if report.block_size and report.block_size > 1 else None
        measured = report.metric not in METRICS or METRICS[report.metric].needs_text  # sequential, reverse: positions
        meaning = ("lower = more redundant, removed first" if measured
                   else "lower = removed first (an order by position, not a measure)")
        out.write(meaning + (", the protected layers apart" if protected else "")
                  + (f"; each row is the block of {block} layers starting there" if block else "")
                  + ("; — no block of that length starts there (it would run past the last layer)"
                     if block and any(v is None for v in report.scores) else
                     "; — not scored" if any(v is None for v in report.scores) else "") + "\n")
        if refines and not removed:
            out.write(f"{report.metric} leaves the protected layers out of its search and measures its finalists, "
                      "plain BI's lowest layers among them, before it removes any: prune may keep a low layer, and "
                      "takes a protected one only where plain BI's set measures best, or where so many layers go "
                      "that the others are too few.\n")
    if report.selection:
        out.write(f"choice: {report.selection}\n")
    if report.removed_layers:
        k = len(report.removed_layers)
        out.write(f"removed {k} of {report.n_layers} layers ({k / report.n_layers:.0%} of them): "
                  f"{','.join(map(str, report.removed_layers))}{_numbered_as(report)}"
                  f"{f' (as {shown_model(report.against)} records them)' if report.against else ''}\n")
    if report.params_before and (report.removed_layers or (report.against and report.params_after)):
        # each share says what it is a share of: "(83%)" removed, then "(35.7%)" kept, read as two of one thing
        share = report.params_after / report.params_before
        # eval --against a larger model: "(134.6% kept)"
        # and against another model (another architecture, no layers recorded as removed): "(88.9% kept)" read as a
        # pruned copy of it
        of_it = (f"{share:.2f} times as many" if share > 1 else f"{share:.1%} kept" if report.removed_layers
                 else f"{share:.1%} as many")
        out.write(f"parameters: {report.params_before:,} -> {report.params_after:,} ({of_it})\n")
    elif report.params_before:  # a score removes nothing: "-> the same (100.0%)" read as a cut
        out.write(f"parameters: {report.params_before:,}\n")
    for run in report.repair_runs:
        first, last = run["layers"]
        if run.get("parameter"):
            whole = run.get("fit") == "projection"
            if left_as_it_was(run):
                out.write(f"{layer_span(first, last)}: "
                          + (f"no refit of layer {run['patched_layer']}'s MLP output projection" if whole
                             else f"no map folded into layer {run['patched_layer']}")
                          + " did better than none on held-out calibration samples"
                          + ("" if "refit_after" in run and run.get("refit_kept", True)
                             else ", so it is unchanged" + ("" if after_fitted(run) else " (plain removal)")))
            else:
                out.write(f"repaired {layer_span(first, last)}: "
                          + (f"layer {run['patched_layer']}'s MLP output projection refitted" if whole
                             else f"a map folded into layer {run['patched_layer']}")
                          + _fit_figures(run, run.get("held_out_residual") is not None,
                                         ", chosen on held-out samples"))
            if "refit_after" in run:
                out.write(f", then its whole MLP trained (held-out error {run['refit_before']:.3f} -> "
                          f"{run['refit_after']:.3f})")
                if not run.get("refit_kept", True):
                    out.write(", refit dropped: " + ("no step did better on held-out rows"
                                                     if run["refit_after"] >= run["refit_before"]
                                                     else "the original's chat answers were less likely with it"))
            after = run.get("after")
            if after is not None:
                if not after_fitted(run):
                    out.write(f"; layer {after['patched_layer']}, after the run, unchanged (no refit did better "
                              f"on held-out calibration samples)")
                else:
                    out.write(f"; layer {after['patched_layer']}'s MLP output projection, after the run, refitted "
                              "too" + _fit_figures(after, after.get("ridge") is not None))
            out.write("\n")
        else:
            out.write(f"not repaired, {layer_span(first, last)}: {run['note']}\n")
    if report.refit_chat:
        chat = report.refit_chat
        out.write(f"refit's chat check: the original's answers to the check prompts, loss per answer token "
                  f"{chat['linear']:.3f} with the linear repair, {chat['refit']:.3f} refitted, {chat['kept']:.3f} "
                  f"as saved\n")
    if report.heal_steps:
        computed = f" computed in {report.heal_compute_dtype}," if report.heal_compute_dtype else ""
        out.write(f"healed: {counted(report.heal_steps, 'LoRA step')},{computed} loss (KL to the original) "
                  f"{report.heal_losses[0]:.4g} -> {report.heal_losses[-1]:.4g}\n")  # a tiny model's 0.00368: 0.004
    if report.ppl_before is not None:
        line = f"perplexity: {report.ppl_before:.3f}"
        if report.ppl_after is not None:
            line += f" -> {report.ppl_after:.3f} (x{report.ppl_after / report.ppl_before:.2f})"
        rough = defaults.rough_figure(report.eval_tokens, report.text_ran_out, eval_text=bool(report.eval_text))
        out.write(line + f" on {report.eval_tokens:,} tokens{_text_measured(report)}" + (f" ({rough})" if rough else "")
                  + "\n")
    # eval --against: the first model is the reference whichever it is, and each is named (given the pruned copy
    # first, the line spoke of the copy as "the original")
    first, second = (shown_model(report.model), shown_model(report.against)) if report.against else ("", "")
    if report.fidelity:
        out.write(fidelity_line(report.fidelity, f"of {second} to {first}" if first else "to the original") + "\n")
    if report.quiz:
        names = (first, second) if first else ()
        out.write(quiz_summary(report.quiz["asked"], report.quiz["known"], report.quiz["kept"], *names) + "\n")
    if report.generation_before is not None:
        out.write(f"prompt: {report.generation_prompt}\n  original: {quoted(report.generation_before)}\n"
                  f"  pruned:   {quoted(report.generation_after or '')}\n")
    if report.output:
        fmt = report.output_format + (f" {report.quantization}" if report.quantization else "")
        files = ", ".join(report.output_files)
        size = human_bytes(report.bytes_after)
        legend = f"; {unit_of(size)}" if unit_of(size) else ""
        out.write(f"saved to {report.output} ({fmt}; {files}: {size} = {report.bytes_after:,} bytes{legend})\n")
        for line in requantized(report.changed_types, report.kept_layers, arrow="->"):
            out.write(f"re-quantized {line}\n")
        if report.bytes_after > report.bytes_before > 0:  # a healed Q4 file: 141 MB from 98 MB, without a word
            growth = report.bytes_after / report.bytes_before - 1
            by = f"{growth:.0%}" if growth >= 0.01 else "slightly"
            why = ": the weights re-quantized above take more bytes than they did" if report.changed_types else ""
            out.write(f"note: the saved model is {by} larger than the original in this format "
                      f"({human_bytes(report.bytes_before)}){why}.\n")
    for warning in collapsed(report.warnings):
        out.write(f"warning: {warning}\n")


def print_curve(curve: Any, out: TextIO | None = None) -> None:
    """The curve as a table: the recipe's perplexity, same top token and quiz (kept/known, where asked) for each
    count, plain BI beside it."""
    out = out or sys.stdout
    base = {p.k: p for p in curve.baseline.points} if curve.baseline is not None else {}
    # "on 4 held-out windows, 252 tokens; held-out windows (the check's)" said the windows twice: the curve's data
    # (JSON's "held-out windows (the check's)") gives only its qualifier
    qualifier = curve.data.removeprefix("held-out windows").removeprefix("windows of the evaluation text").strip()
    if qualifier and not qualifier.startswith("("):
        qualifier = f"({qualifier})"
    # an evaluation text's windows are not "held out" (it may be the calibration text itself; a walkthrough)
    noun = (f"{counted(curve.windows, 'window')} of {_text_name(curve.eval_text)}" if curve.eval_text
            else counted(curve.windows, "held-out window"))
    windows = " ".join(filter(None, (noun, qualifier)))
    rough = defaults.rough_figure(curve.tokens, curve.text_ran_out, eval_text=bool(curve.eval_text))
    few = f"; {rough}" if rough else ""
    # plain BI's columns are plain removal: the window says "(dashed, no repair)", the table said nothing, and a
    # gap that is the repair's read as the metric's
    plain = f"; plain {curve.baseline.label} beside it, no repair" if base else ""
    out.write(f"quality curve ({curve.label}; perplexity and same top token vs the original on {windows}, "
              f"{curve.tokens:,} tokens{few}{plain})\n")
    quiz = any(p.quiz_known for p in curve.points)
    # a point whose cut is partly unrepaired is marked (the label says "+ repair" of the whole curve)
    lists = {p.k: (",".join(map(str, p.removed)) or "-") + ("*" if p.not_repaired else "") for p in curve.points}
    # as wide as the longest list: 14 layers of a 28-layer model pushed the row past a fixed 24 characters
    width = max(24, *map(len, lists.values())) if lists else 24
    header = f"{'removed':>7}  {'layers':<{width}} {'perplexity':>11} {'same top':>9}"
    header += f" {'quiz':>7}" if quiz else ""
    # "plain relative_magnitude" is wider than a perplexity: its figures sit under its heading's end
    plain_width = max(11, len(f"plain {curve.baseline.label}")) if base else 11
    if base:
        header += f"   {'plain ' + curve.baseline.label:>{plain_width}} {'same top':>9}"
    # plain BI's own layers, where they are not the recipe's: its columns read as the same layers unrepaired
    others = any(p.k in base and base[p.k].removed != p.removed for p in curve.points)
    if others:
        header += f"   plain {curve.baseline.label} layers"  # "same top plain bi layers" ran two names together
    out.write(header + "\n")
    for point in curve.points:
        line = (f"{point.k:>7}  {lists[point.k]:<{width}} {point.perplexity:>11.3f} "
                f"{_share(point.same_top):>9}")
        if quiz:
            line += f" {'' if point.quiz_known is None else f'{point.quiz_kept}/{point.quiz_known}':>7}"
        b = base.get(point.k)
        if b is not None:
            line += f"   {b.perplexity:>{plain_width}.3f} {_share(b.same_top):>9}"
            if others:
                line += f"   {','.join(map(str, b.removed)) or '-'}"
        out.write(line + "\n")
    reasons = dict.fromkeys(note.split(": ", 1)[-1] for p in curve.points for note in p.not_repaired)
    if reasons:
        out.write(f"*: part of the cut not repaired ({'; '.join(reasons)})\n")
    if not quiz and any(p.quiz_known == 0 for p in curve.points):  # asked, and the column left out without a word
        out.write("quiz: the original answers none of the questions right, so it says nothing of these cuts\n")
    for warning in collapsed(curve.warnings):  # what the text gave short, left out or said of it, as prune's
        out.write(f"warning: {warning}\n")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


class Stopped(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGBREAK (``timeout``, ``kill``, the terminal closed, Ctrl-Break): unwound as Ctrl-C
    is, so the save's temporary folder is removed (a 6 MB hidden partial folder was left beside the output, until a
    later save to that name)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    if not _unwinding[0] and not an_output_is_in_place():  # the job ends in moments, its model saved: said so
        _unwinding[0] = True
        raise Stopped(signum)
    _say_still_stopping()


def _say_still_stopping() -> None:
    """A signal after the first, while the job unwinds: said, as the one that raised nothing (a Hub download waits for
    the files it is fetching before it stops, minutes of silence where a second Ctrl-C used to say "cancelled")."""
    if _unwinding[0]:
        with suppress(OSError):  # (a terminal gone)
            sys.stderr.write("\nshortgpt: still stopping: what was running finishes its step first.\n")


#: Whether a job runs: Ctrl-C cancels it then (:func:`entry`); once it has ended, its files written and said, a
#: Ctrl-C no longer changes how the command exits.
_job_running = [False]
#: Whether a Ctrl-C or a stop signal has been raised into the job. Each is raised once: a further one came inside
#: the first one's unwinding (its partial folder being removed, "cancelled" being said) and ended the command with a
#: traceback (three Ctrl-Cs 10 ms apart, once in about 13 tries). Set by the handler itself, so no moment is left
#: between the first signal and the guard.
_unwinding = [False]


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C for the ``shortgpt`` command: cancels a running job; ignored once it has ended. Python's own teardown
    after it (freeing the model and torch, about a second) turned a Ctrl-C after "saved to …" and "report written
    to …" into exit 130, which says cancelled, with every file complete."""
    if _job_running[0] and not _unwinding[0] and not an_output_is_in_place():  # (a saved model is no cancel)
        _unwinding[0] = True
        raise KeyboardInterrupt
    _say_still_stopping()


def entry() -> None:
    """The ``shortgpt`` command: :func:`main`, exiting with its code."""
    with suppress(ValueError):  # not the main thread (an embedding program): Python's own handling stays
        signal.signal(signal.SIGINT, _interrupt)
    _job_running[0] = True  # from the start: a Ctrl-C while Python imports the engine cancels, as ever
    try:
        code = main()
    finally:  # also where main ended before any job (--help, a usage error)
        _job_running[0] = False
    # Python's teardown puts a signal's default back before it frees the modules (torch and the model, about a
    # second), where a Ctrl-C or a stop signal then killed the process (the shell saw 130 or 143 after "saved to"),
    # unless the signal is ignored: the job is over, and its exit code is said.
    for name in ("SIGINT", *STOP_SIGNALS):
        number = getattr(signal, name, None)
        if number is not None:
            with suppress(ValueError):
                signal.signal(number, signal.SIG_IGN)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    tolerant_console()
    _unwinding[0] = False  # a command run again in the same process (the tests) starts afresh
    forget_outputs_in_place()
    parser = build_parser()
    _given[:] = list(argv if argv is not None else sys.argv[1:])
    if not _given:  # "the following arguments are required: command" named none of them
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry chatter; failures become one line
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    quiet_library_progress()  # our own bar reports loading and downloads
    progress = ProgressBar(quiet=args.quiet)
    with on_stop_signals(_stop):  # SIGTERM, SIGHUP and SIGBREAK raise Stopped while the job runs
        return _run(args, progress)


def _say_written(args: argparse.Namespace, *paths: str | None) -> None:
    """Where the report files went, as written (no command said it: a relative path, or '-', left the user
    looking for it); with ``--quiet`` too, as the summary it ends (it was left out, where -h and the README said
    the summary is printed)."""
    written = [str(expand_home(p).resolve()) for p in paths if p]
    if written:
        print(f"{in_number(len(written), 'report')} written to {listed(written)}")


#: What ``--eval-text`` does where no check reads it (prune --no-eval, score).
_READ_WHOLE = (f"the calibration text is used whole, where without it its last {DEFAULT_HELDOUT_FRACTION:.0%} is "
               "held out")


def _not_used(flags: list[str]) -> str:
    """The end of a note on options a command takes but does not use: ``--a and --b are not used.``"""
    return f"{listed(flags)} {in_number(len(flags), 'is', 'are')} not used."


def _idle_without_check(args: argparse.Namespace) -> list[str]:
    """What ``prune --no-eval`` makes idle, or not (each was dropped, or changed the cut, without a word)."""
    if not args.no_eval:
        return []
    idle = [flag for flag, value in (("--prompt", args.prompt), ("--eval-windows", args.eval_windows))
            if value is not None]
    # What reads the calibration text: the choice (layers not given by hand), the repair, the healing
    chooses = args.remove is None and METRICS[args.metric or defaults.METRIC].needs_text  # reverse: by position
    readers = [what for what, runs in (("the cut", chooses), ("the repair", args.repair != "none"),
                                       ("the healing", args.heal > 0)) if runs]
    if args.eval_text and not readers:  # layers by hand, nothing fitted: no text is read at all
        idle.append("--eval-text")
    notes = [f"--no-eval leaves out the check, so {_not_used(idle)}"] if idle else []
    if args.eval_text and readers:
        notes.append(f"--eval-text still changes {listed(readers)} with --no-eval: {_READ_WHOLE} for the check.")
    return notes


def _report_kind(command: str, flag: str) -> str:
    """What ``command``'s ``--json`` or ``--csv`` may replace (``output_folder.check_report_path``)."""
    from .core.formats import report_files as rf

    if command == "sweep":
        return rf.CURVE_CSV if flag == "csv" else rf.CURVE
    return {"prune": rf.SAVED_REPORT, "eval": rf.EVAL_REPORT}.get(command, rf.SCORE_REPORT)


def _run(args: argparse.Namespace, progress: ProgressBar) -> int:
    """The command of ``args``, with its exit code."""
    try:
        from .core.engine import Engine
        from .core.errors import OutputError
        from .core.formats.output_folder import check_report_path
        from .core.model.sources import hub_file_of, hub_id_of
        from .core.user_paths import expand_home
        from .jobs import run_eval, run_prune, run_score, run_sweep

        for flag in ("json", "csv", "against", "out", "eval_text", "revision"):
            if getattr(args, flag, None) is not None and not str(getattr(args, flag)).strip():
                raise UserError(f"--{flag.replace('_', '-')} was given an empty name; give one or leave it out.")
        if args.revision and exists(args.model):
            raise UserError(f"--revision picks a Hub revision, but {args.model} is a local path; leave it out.")
        # a Hub page's address: the id; a GGUF file's address stays whole, and opens that file (resolve reads it)
        if not exists(args.model) and hub_file_of(args.model, args.revision) is None:
            args.model, args.revision = hub_id_of(args.model, args.revision)
        against = getattr(args, "against", None)
        if against and not exists(against) and hub_file_of(against, None) is None:
            args.against, against_revision = hub_id_of(args.against, None)
            if against_revision not in (None, "main"):  # main is what it opens
                # "give its id" was followed, and the main revision compared without a word
                raise UserError(f"--against cannot take a revision ({against_revision}): it compares with "
                                f"{args.against}'s main revision on the Hub, or with a local folder or .gguf file; "
                                f"to compare with {against_revision}, download that revision and give its folder.")
        spec = spec_from_args(args)
        models = [m for m in (spec.model, getattr(args, "against", None)) if m]  # never written over
        texts = [t for t in (*spec.calib, spec.eval_text) if t and t != BUILTIN_CORPUS]
        reports = [p for p in (getattr(args, "json", None), getattr(args, "csv", None)) if p]
        if len(reports) == 2 and expand_home(reports[0]) == expand_home(reports[1]):
            raise OutputError(f"--json and --csv both name {reports[0]}; give each its own file.")
        for flag in ("json", "csv"):  # before the job, not after it
            if getattr(args, flag, None):
                check_report_path(getattr(args, flag), models, texts, getattr(args, "out", None),
                                  replaces=_report_kind(args.command, flag))
        engine = Engine()
        progress.per_layer = lambda stage: counts_layers(stage, engine.is_streamed, spec.metric)
        labels = iter(("model", "against"))  # eval --against's second model is "against"; any other job opens one
        if getattr(args, "against", None):
            # Either model may be the pruned one: "perplexity, original" named the first whichever it was
            first, second = shown_model(spec.model), shown_model(args.against)
            progress.labels = {"ppl_before": f"perplexity, {first}", "ppl_after": f"perplexity, {second}",
                               "quiz_before": f"quiz, {first}", "quiz_after": f"quiz, {second}"}

        def model_line(model_info: Any) -> None:  # each on a line of its own, after any bar drawn in place
            progress.end_line()
            print_model_info(model_info, label=next(labels, "model"))

        def note(sentence: str) -> None:  # said even with --quiet: a file left out changes what the job measures
            progress.end_line()
            print_note(sentence)

        info = None if args.quiet else model_line
        if args.command == "sweep":
            curve = run_sweep(engine, spec, args.max_removed, progress, on_info=info, on_note=note)
            print_curve(curve)  # shown even if a file cannot be written after all
            if args.json:
                curve.write_json(args.json)
            if args.csv:
                curve.write_csv(args.csv)
            _say_written(args, args.json, args.csv)
            return EXIT_OK
        if args.command == "score":
            if args.eval_windows is not None:  # accepted without a word, as prune --no-eval's were
                note(f"score measures no held-out perplexity (the check's windows), so {_not_used(['--eval-windows'])}")
            if args.eval_text and METRICS[spec.metric].needs_text:  # the scores moved without a word
                note(f"score measures no held-out perplexity, but --eval-text still changes the scores: {_READ_WHOLE} "
                     "(a prune with the same --eval-text scores the same samples).")
            if not METRICS[spec.metric].needs_text:  # the text's options taken without a word (a walkthrough)
                given = [flag for flag, value in (("--calib", args.calib != [BUILTIN_CORPUS]),
                                                  ("--samples", args.samples is not None),
                                                  ("--seq-len", args.seq_len is not None),
                                                  ("--eval-text", bool(args.eval_text))) if value]
                if given:
                    note(f"{spec.metric} orders the layers by their position alone, reading no text, so "
                         f"{_not_used(given)}")
            report = run_score(engine, spec, progress, on_info=info, on_note=note)
        elif args.command == "prune":
            for sentence in _idle_without_check(args):
                note(sentence)
            report = run_prune(engine, spec, progress, on_info=info, on_note=note)
        else:
            idle = [flag for flag, value in (("--samples", args.samples), ("--seed", args.seed)) if value is not None]
            if idle:  # accepted (every command takes them) but hidden from eval -h, and dropped without a word
                note(f"eval draws no calibration samples (it measures the held-out windows), so {_not_used(idle)}")
            if args.eval_text and args.calib:  # dropped without a word (a walkthrough)
                note(f"eval measures {_text_name(args.eval_text)} (--eval-text), so {_not_used(['--calib'])}")
            report = run_eval(engine, spec, args.against, progress, on_info=info, on_note=note)
        # shown even if the report file cannot be written after all; a terminal closed once the model was in place
        # (SIGHUP, no longer a cancel there) made it fail, and the report was not written (a review)
        with suppress(OSError):
            print_summary(report)
        if args.json:
            try:
                report.write_json(args.json)
            except OSError as exc:
                raise UserError(f"Could not write the report to {args.json}: {exc.strerror or exc}.") from None
            _say_written(args, args.json)
    except UserError as exc:
        sys.stderr.write(f"\nshortgpt: error: {error_line(exc)}\n" if progress.stage and progress.tty
                         else f"shortgpt: error: {error_line(exc)}\n")
        return EXIT_BAD_INPUT
    except Stopped as exc:
        sys.stderr.write(f"\nshortgpt: stopped by {signal.Signals(exc.signum).name}; nothing was written.\n")
        return 128 + exc.signum
    except (KeyboardInterrupt, Cancelled):
        sys.stderr.write("\nshortgpt: cancelled; nothing was written.\n")
        return EXIT_CANCELLED
    finally:  # before this frame's engine and model are freed: a Ctrl-C from here on leaves the exit code as it is
        _job_running[0] = False
    return EXIT_OK


if __name__ == "__main__":
    entry()
