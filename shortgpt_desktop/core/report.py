"""The result of a job as plain data: the ``--json`` report and the model card written beside the weights."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..format import counted, in_number, layer_list, layer_span
from . import defaults
from .measure.metrics import score_column
from .model.sources import hub_file_of

#: GGUF file types that hold floats, not quantized blocks: saved as safetensors they are converted, not de-quantized.
FLOAT_TYPES = ("F32", "F16", "BF16", "F64", "ALL_F32", "MOSTLY_F16", "MOSTLY_BF16")
#: Said after a save that re-quantized weights the check measured at full precision (the card says it in its own words).
def measured_before_requantized(quiz: bool) -> str:
    """The warning for figures measured before the changed weights were re-quantized for the file; ``quiz``: the
    quiz was asked and the original knew some answers (one layer at a time none is asked: it named one anyway)."""
    # "shortgpt eval measures it" sent users to a command whose default text is the built-in corpus: the file read
    # twice as bad as the prune said, on other text (a walkthrough)
    same_text = "shortgpt eval measures it (give it the text this job measured on, as --calib or --eval-text)"
    if quiz:
        return ("This job's perplexity, fidelity and quiz were measured before the changed weights were re-quantized "
                f"for the file; the saved file's own may differ (a quiz answer or two, where it is close), and "
                f"{same_text}.")
    return ("This job's perplexity and fidelity were measured before the changed weights were re-quantized for the "
            f"file; the saved file's own may differ, and {same_text}.")


#: Both wordings of :func:`measured_before_requantized`, by which a front end finds the warning among a report's.
MEASURED_BEFORE_REQUANTIZED = (measured_before_requantized(True), measured_before_requantized(False))


@dataclass
class Report:
    """Everything a job measured. ``scores`` and ``removed_layers`` use original 0-based layer indices."""

    model: str
    #: A Hub model's revision as asked for ("main" where none was) and the commit its files came from; empty for a
    #: local model. The base_model line names the repo alone, which reads as its main revision.
    model_revision: str = ""
    model_commit: str = ""
    architecture: str = ""
    n_layers: int = 0
    metric: str = "bi"
    scores: list[float | None] = field(default_factory=list)
    other_scores: dict[str, list[float | None]] = field(default_factory=dict)
    block_size: int | None = None
    removed_layers: list[int] = field(default_factory=list)
    kept_layers: list[int] = field(default_factory=list)
    ppl_before: float | None = None
    ppl_after: float | None = None
    tokens: int = 0  # calibration tokens scored
    eval_tokens: int = 0  # tokens predicted in each perplexity run
    #: Fidelity of the pruned model to the original on the same tokens (evaluation.Fidelity.to_json): mean_kl,
    #: p99_kl, max_kl (nats per token, KL(original || pruned)), same_top (share of tokens with the same top token).
    fidelity: dict[str, float] = field(default_factory=dict)
    #: The check's quiz (measure.quiz.Quiz.to_json): asked, known (the original right), kept (the pruned model right
    #: too), each question's two answers; empty where the check asked none.
    quiz: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    bytes_before: int = 0  # the source's model file(s) in the output format
    bytes_after: int = 0  # estimated from the plan; once saved, the bytes of the model files written
    device: str = ""
    dtype: str = ""
    samples: int = 0
    seq_len: int = 0
    seed: int = 0
    calibration: list[str] = field(default_factory=list)
    eval_text: str | None = None  # the held-out text perplexity was measured on (None: the calibration's end)
    against: str | None = None  # ``shortgpt eval --against``: the second model, compared with ``model``
    output: str | None = None
    output_files: list[str] = field(default_factory=list)  # the model files written (no config or card)
    generation_prompt: str | None = None
    generation_before: str | None = None
    generation_after: str | None = None
    generation_chat_template: bool = False  # the prompt went through the model's chat template
    warnings: list[str] = field(default_factory=list)
    #: The check's text gave fewer held-out windows than asked for (one of ``warnings`` says so): more text, not
    #: more windows, gives a steadier figure.
    text_ran_out: bool = False
    selection: str = ""  # how a refining metric (bi+) chose the removed layers
    #: Layers picked by hand (``metric`` "manual") with scores on screen: the metric of those scores, which the
    #: report carries (the card said "no scoring" and left out the table the user picked from).
    picked_after: str = ""
    #: Layers given as a scores file listed them (the window's Import), not picked here: the file's name.
    listed_in: str = ""
    #: The source's licence as its card or GGUF metadata declares it (``formats.provenance.source_license``):
    #: ``license``, and for ``other`` its ``license_name`` and ``license_link``; the card's front matter carries it.
    license: dict[str, str] = field(default_factory=dict)
    #: Layers of the first original the source already lacked (pruned before by this app: ``formats.provenance``),
    #: in that original's numbering; ``removed_layers`` count the source's own layers.
    earlier_removed: list[int] = field(default_factory=list)
    #: The Hub id the source was first pruned from, where the source is a copy this app pruned before and its card
    #: names one (``formats.provenance.first_original``): the card's ``base_model``.
    first_original: str = ""
    #: Layer scores imported from a scores file (the window's Import scores…): the file's name and what the scores
    #: were measured on there (calibration, samples, seq_len, seed, tokens); empty when this job scored them.
    #: ``calibration`` above is the text this job read (for the repair or the check), not the scores'.
    scores_imported: dict[str, Any] = field(default_factory=dict)
    #: "linear": the training-free repair; "refit": it, then the MLP refit beside the cuts, written for at least one
    #: run ("linear" where the refit was asked for and none was kept or none could be done)
    repair: str = "none"
    repair_runs: list[dict[str, Any]] = field(default_factory=list)  # per run of removed layers: what it did
    repair_own_answers: int = 0  # the original's own chat answers the repair was fitted on beside the text
    #: The refit's chat guard: loss per answer token of the original's answers to the check prompts with the linear
    #: repair alone ("linear"), every cut refitted ("refit") and the refits kept ("kept"); empty for a base model.
    refit_chat: dict[str, float] = field(default_factory=dict)
    heal_steps: int = 0
    heal_losses: list[float] = field(default_factory=list)  # training loss at the first and the last step
    heal_compute_dtype: str = ""  # the dtype healing's forward passes ran in ("bfloat16" under autocast, "float32")
    output_format: str = ""  # "safetensors" or "gguf"
    #: a GGUF output's file type as llama.cpp names it (Q4_K_M, Q4_1…); a safetensors copy of a safetensors model:
    #: the float type its weights keep (bfloat16)
    quantization: str = ""
    #: A GGUF source's file type where the output is safetensors: a quantized one's weights were de-quantized (the card
    #: said nothing of why a 98 MB Q4_1 file became a 524 MB folder).
    source_quantization: str = ""
    # GGUF tensors re-quantized: name in the pruned file (new block index) → [from, to]; tensor_label() words it
    changed_types: dict[str, list[str]] = field(default_factory=dict)
    #: A GGUF output's sliding-window layout, one bool a kept layer, where the file states it per layer and it is not
    #: the one llama.cpp derives from the layer count (``GGUFPlan.stated_swa``; empty: none stated)
    gguf_sliding_window: list[bool] = field(default_factory=list)
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return _json_safe(data)

    def write_json(self, path: str | Path) -> None:
        """Written beside ``path`` and moved into place when complete; a path that cannot be written is an
        :class:`~.errors.OutputError` sentence."""
        from .formats.output_folder import write_file_atomically

        text = json.dumps(self.to_dict(), indent=2) + "\n"
        write_file_atomically(Path(path), lambda stream: stream.write(text))


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null. A file name that is not UTF-8 (Python keeps its bytes as
    lone surrogates, ``caf\udce9 notes.txt``) is written with U+FFFD in their place, as the card writes it: strict
    JSON readers refuse a lone surrogate."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return _encodable(value)
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


#: A folder of the Hub's cache given as a local path: ``…/models--ORG--NAME/snapshots/<commit>[/file]``.
_HUB_SNAPSHOT = re.compile(r"(?:^|[/\\])models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\][0-9a-f]{40}(?:[/\\]|$)")


def public_name(spec: str) -> str:
    """How a model or text source is named in a card meant to be shared: a Hub id as it is, a local path by
    its last part only (the user's folders are nobody's business), a folder of the Hub's cache by its repo's id
    (its last part is a commit hash: the card's title was that hash, with no base model)."""
    snapshot = _HUB_SNAPSHOT.search(spec)
    if snapshot is not None:
        return f"{snapshot[1]}/{snapshot[2]}"
    path = Path(spec)
    looks_hub = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.exists()
    return spec if looks_hub else path.name or spec


_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def tensor_label(name: str, kept_layers: list[int]) -> str:
    """A pruned GGUF's tensor named by its ORIGINAL layer, with its index in the pruned file said as such:
    ``blk.13.ffn_down.weight`` → ``layer 17 ffn_down.weight (blk.13 in the pruned file)``."""
    match = _BLOCK.match(name)
    if match is None or not kept_layers or int(match[1]) >= len(kept_layers):
        return name
    new = int(match[1])
    return f"layer {kept_layers[new]} {match[2]} (blk.{new} in the pruned file)"


#: Up to this many re-quantized tensors are named one by one; more (a healing changes every kept layer's
#: projections: 154 on SmolLM2 with 8 of 30 layers removed) are summed up per change of type.
NAMED_CHANGES = 8


def requantized(changed_types: dict[str, Any], kept_layers: list[int], arrow: str = "→") -> list[str]:
    """What the GGUF writer re-quantized, a line each: every tensor by its original layer when there are few
    (``layer 17 ffn_down.weight (blk.13 in the pruned file): Q4_K → Q8_0``), else one line per change of type
    (``161 weights Q4_1 → Q8_0: attn_k.weight, attn_output.weight, … of layers 0–11, 15, 18–24, 27–29``)."""
    if len(changed_types) <= NAMED_CHANGES:
        return [f"{tensor_label(name, kept_layers)}: {old} {arrow} {new}" for name, (old, new) in changed_types.items()]
    groups: dict[tuple[str, str], tuple[list[str], set[str], set[int]]] = {}
    for name, (old, new) in changed_types.items():
        names, kinds, layers = groups.setdefault((old, new), ([], set(), set()))
        names.append(name)
        match = _BLOCK.match(name)
        if match is not None and int(match[1]) < len(kept_layers):
            kinds.add(match[2])
            layers.add(kept_layers[int(match[1])])
        else:
            kinds.add(name)
    return [f"{counted(len(names), 'weight')} {old} {arrow} {new}: {', '.join(sorted(kinds))}"
            + (f" of {in_number(len(layers), 'layer')} {layer_list(sorted(layers), limit=len(layers))}"
               if layers else "")
            for (old, new), (names, kinds, layers) in groups.items()]


def model_bytes(folder: str | Path, files: list[str]) -> int:
    """Bytes of the model files written (``.gguf``, ``.safetensors``), measured on disk after saving."""
    return sum((Path(folder) / f).stat().st_size for f in files if f.endswith((".gguf", ".safetensors")))


def _ridge_words(fit: dict[str, Any]) -> str:
    return "no fit did better than none" if fit.get("ridge") is None else f"{fit['ridge']:g}"


def left_as_it_was(fit: dict[str, Any]) -> bool:
    """Whether a reported fit (a ``repair_runs`` entry, or its ``"after"``) left its projection as it was: its ridge
    was chosen on held-out samples, and no refit did better there than none."""
    return fit.get("held_out_residual") is not None and fit.get("ridge") is None


def after_fitted(run: dict[str, Any]) -> bool:
    """Whether the kept layer after a run of removed layers (``run["after"]``, :mod:`.cut.repair`'s both sides)
    got new weights."""
    after = run.get("after")
    return after is not None and not left_as_it_was(after)


def _revision(report: Report) -> str:
    """`` at revision `dev` (commit `0123abc…`)`` for a Hub model; nothing for a local one."""
    if not report.model_commit:
        return ""
    if report.model_revision == report.model_commit:  # "at revision `0123…` (commit `0123…`)"
        return f" at commit `{report.model_commit}`"
    return f" at revision `{report.model_revision}` (commit `{report.model_commit}`)"


def _eval_source(report: Report) -> str:
    """Where the check's tokens came from: ``tokens of `test.txt``` or held out of the calibration text."""
    if not report.eval_text:
        return "tokens held out at the end of the calibration text"
    name = "the built-in corpus" if report.eval_text == "builtin" else f"`{public_name(report.eval_text)}`"
    return f"tokens of {name}"


def _calibration_line(report: Report, calibration: list[str]) -> str:
    """The calibration text and sizes, or that none was used (layers given by hand, no repair, and no check or one on
    an evaluation text of its own); for
    imported scores, what they were measured on, apart from the text this job read."""
    imported = report.scores_imported
    if imported:
        texts = ", ".join(public_name(str(c)) for c in imported.get("calibration") or []) or "text not recorded"
        sizes = (f"; {imported.get('samples')} samples × {imported.get('seq_len')} tokens, seed {imported.get('seed')}"
                 if imported.get("samples") and imported.get("seq_len") else "")
        tokens = imported.get("tokens")
        scores = (f"layer scores imported from {public_name(str(imported.get('file', '')))}, measured there on {texts}"
                  f"{sizes}" + (f" ({tokens:,} tokens scored)" if tokens else ""))
        if not calibration:
            return f"{scores}; this job read no text"
        return (f"{scores}; text this job read itself: {', '.join(calibration)} ({report.samples} samples × "
                f"{report.seq_len} tokens, seed {report.seed})")
    if not calibration:
        if report.ppl_after is not None and report.eval_text:  # the check read its own text, and only that
            return "none (the layers were given by hand, and nothing was fitted on text; the check read its own text)"
        return "none (the layers were given by hand, and nothing was fitted or measured on text)"
    return (f"{', '.join(calibration)}; {report.samples} samples × {report.seq_len} tokens, seed {report.seed}"
            + (f" ({report.tokens:,} tokens scored)" if report.tokens else ""))


def model_card(report: Report, base_model: str) -> str:
    """A Hugging Face model card: base model, removed layers, score table, perplexity, how it was made."""
    base_model = public_name(base_model)
    on_hub = hub_file_of(report.model, None)  # one GGUF file of a Hub repo: named with the repo
    source_words = f"`{on_hub[2]}` of `{base_model}`" if on_hub else f"`{base_model}`"
    calibration = [c if c.startswith("built-in") else public_name(c) for c in report.calibration]
    removed = set(report.removed_layers)
    rows = "\n".join(
        f"| {i} | {_fmt(s)} | {'removed' if i in removed else 'kept'} |" for i, s in enumerate(report.scores)
    )
    ppl = ""
    if report.ppl_before is not None and report.ppl_after is not None:
        ppl = (
            f"| perplexity | {report.ppl_before:.3f} | {report.ppl_after:.3f} |\n"
            f"\nPerplexity measured on {report.eval_tokens:,} {_eval_source(report)}, the same tokens for both "
            "models" + (f" (fewer than {defaults.FEW_EVAL_TOKENS:,} tokens: a rough figure, which another text of "
                        "this length can move by a fifth or more)"
                        if 0 < report.eval_tokens < defaults.FEW_EVAL_TOKENS else "")
            + ".\n"
        )
    if report.fidelity:
        f = report.fidelity
        ppl += (f"\nFidelity to the original on the same tokens, as `llama-perplexity --kl-divergence` reports a "
                f"quantization: mean KL divergence {f['mean_kl']:.4f} nats per token (99th percentile "
                f"{f['p99_kl']:.3f}), same top token for {f['same_top']:.1%} of the tokens.\n")
    if report.quiz.get("known"):
        q = report.quiz
        ppl += (f"\nQuiz ({q['asked']} short questions of fact, greedy answers): the original answers {q['known']} "
                f"right, the pruned model {q['kept']} of those.\n")
    elif report.quiz.get("asked"):  # it was left out, as if none had been asked
        ppl += (f"\nQuiz ({report.quiz['asked']} short questions of fact, greedy answers): the original answers none "
                "right, so it says nothing of this cut.\n")
    if ppl and report.changed_types:  # the check ran the changed weights at full precision, before the writer
        quiz_too = ", by a quiz answer or two where it is close" if report.quiz.get("known") else ""
        ppl += ("\nThese figures were measured before the changed weights were re-quantized for this file (see "
                f"Format); the file's own may differ{quiz_too} (`shortgpt eval` measures it, given the same text "
                "as `--calib` or `--eval-text`).\n")
    if report.ppl_after is None:  # a save without the check (the window's Save, --no-eval): the card said nothing
        # a Hub id runs as it is (a GGUF file of a Hub repo, by its address); a local model is named by its folder's
        # name alone, which no reader could run
        original = report.model if on_hub else base_model if "/" in base_model else "ORIGINAL_MODEL"
        ppl = (f"\nNo quality figures: this model was saved without a check. `shortgpt eval {original} --against "
               "THIS_FOLDER` measures both models' perplexity, the fidelity and the quiz.\n")
    sizes = ""
    if report.params_before:
        sizes = f"| parameters | {report.params_before:,} | {report.params_after:,} |\n"
    hub_base = base_model if "/" in base_model else report.first_original  # a copy's first original, on the Hub
    base_model_line = f"base_model: {hub_base}\n" if hub_base else ""
    repaired = [r for r in report.repair_runs if r.get("parameter")]
    repair_line = "none (plain layer removal)"
    if report.repair in ("linear", "refit"):
        chosen = [r for r in repaired if r.get("held_out_residual") is not None]
        mapped = [r for r in repaired if not left_as_it_was(r)]
        whole = [r for r in mapped if r.get("fit") == "projection"]
        after = [r for r in repaired if after_fitted(r)]
        parts = []
        if whole:
            parts.append(f"the MLP output projection of {len(whole)} kept layer{'s' if len(whole) != 1 else ''} "
                         f"before a run of removed layers refitted in closed form")
        if after:
            parts.append(f"{'that' if whole else 'the MLP output projection'} of {len(after)} kept "
                         f"layer{'s' if len(after) != 1 else ''} after a run refitted the same way")
        if len(mapped) > len(whole):
            folded = len(mapped) - len(whole)
            parts.append(f"a fitted map folded into the MLP output projection of {folded} kept "
                         f"layer{'s' if folded != 1 else ''}")
        repair_line = f"training-free linear repair ({'; '.join(parts or ['nothing fitted'])}; no new parameters)"
        if chosen:
            afters = [r["after"] for r in chosen if r.get("after", {}).get("held_out_residual") is not None]
            repair_line += (", each fit's ridge chosen on calibration samples held out of it ("
                            # named by the removed run each fit stands in for, and said so: "layer 10: 0.3" read
                            # as layer 10 refitted, where layer 10 is removed and layer 9 carries its fit
                            + ", ".join(f"for removed {layer_span(*r['layers'])}: " + _ridge_words(r)
                                        for r in chosen)
                            + "".join(f"; kept layer {a['patched_layer']} after a run: " + _ridge_words(a)
                                      for a in afters)
                            + ")")
        refitted = [r for r in repaired if "refit_after" in r and r.get("refit_kept", True)]
        if report.repair == "refit" and refitted:
            # trained, where the repair before it is closed-form: "training-free" read as said of the whole
            repair_line += (f", then the whole MLP of {'those layers' if len(refitted) > 1 else 'that layer'} "
                            f"refitted on the calibration activations to the original's next state (trained by "
                            f"gradient steps: this part is not training-free)")
        if report.refit_chat:
            chat = report.refit_chat
            repair_line += (f" (kept where the original's own answers to the answer check's prompts stayed as likely: "
                            f"loss per answer token {chat['linear']:.3f} with the linear repair alone, "
                            f"{chat['kept']:.3f} as saved)" if refitted else
                            f"; the MLP refit was not kept: the original's own answers to the answer check's prompts "
                            f"were less likely with it (loss per answer token {chat['linear']:.3f} with the linear "
                            f"repair alone, {chat['refit']:.3f} refitted)")
        if report.repair_own_answers:
            repair_line += (f", fitted on the calibration text and the original model's own answers to "
                            f"{report.repair_own_answers} chat prompts")
        skipped = [r for r in report.repair_runs if r.get("note")]
        if skipped:
            repair_line += "; not repaired: " + "; ".join(
                f"{layer_span(*r['layers'])}: {r['note']}" for r in skipped)
    if report.heal_steps:
        computed = f", computed in {report.heal_compute_dtype}" if report.heal_compute_dtype else ""
        repair_line += (f"; healed with {counted(report.heal_steps, 'LoRA step')} on the calibration text (distilled "
                        f"from the original{computed}), merged")
        if len(report.heal_losses) == 2:  # whether it paid off: the card said "healed" of a loss that rose
            first, last = report.heal_losses
            repair_line += f"; its loss {first:.4g} → {last:.4g}" + (
                " (not lowered: the healed weights may be no better than the repair's alone)" if last >= first else "")
    if report.earlier_removed:  # "none" read as said of the model's whole history, whose earlier card is not copied
        repair_line += (f"; this job's only: the pruning that made `{public_name(report.model)}` may have repaired or "
                        "healed its kept layers, as its own card says")
    output_format = report.output_format or "safetensors"
    if report.quantization:
        output_format += f" ({report.quantization})"
    if report.source_quantization and report.source_quantization.upper() not in FLOAT_TYPES:
        output_format += (f", from a {report.source_quantization} GGUF whose weights were de-quantized to "
                          f"{report.dtype or 'floating point'} (larger on disk than the GGUF)")
    if report.changed_types:
        changes = "; ".join(requantized(report.changed_types, report.kept_layers))
        causes = [cause for cause, done in (("repair", report.repair != "none"), ("healing", report.heal_steps > 0))
                  if done]
        output_format += f"; re-quantized after {' and '.join(causes) or 'the changes'}: {changes}"
    if report.gguf_sliding_window:
        output_format += "; " + sliding_window_words(report.gguf_sliding_window)
    licence_lines = "".join(f"{key}: {report.license[key]}\n" for key in ("license", "license_name", "license_link")
                            if report.license.get(key))
    return _encodable(f"""---
{base_model_line}{licence_lines}library_name: {"gguf" if report.output_format == "gguf" else "transformers"}
pipeline_tag: text-generation
tags:
- shortgpt
- layer-pruning
---

# {Path(base_model).name or base_model}, pruned with ShortGPT Desktop

{_were_removed(report)} from {source_words}{_revision(report)} ({report.architecture}) {_how_chosen(report)}.

{_removed_line(report)}

| | original | pruned |
|---|---|---|
| layers | {report.n_layers} | {report.n_layers - len(report.removed_layers)} |
{sizes}{ppl}
## How it was made

- Tool: ShortGPT Desktop {report.version}
- Metric: {report.metric}{_given_words(report)}\
{f" (block of {report.block_size})" if report.block_size else ""}\
{f". {report.selection}" if report.selection else ""}
- Calibration: {_calibration_line(report, calibration)}
- Device: {report.device}, {report.dtype}
- Format: {output_format}
- Repair: {repair_line}

Layer-pruned models usually lose some quality, most of all in free generation; check it on your own task.
{_score_table(score_column(report.picked_after or report.metric), rows)}""")


def sliding_window_words(pattern: list[bool]) -> str:
    """What a GGUF output's written sliding-window layout means for its reader: llama.cpp reads it, transformers'
    own GGUF loader derives another from the layer count (its text parted from llama.cpp's after 7 tokens on a
    pruned Gemma 3 270M)."""
    full = [i for i, slides in enumerate(pattern) if not slides]
    return (f"the sliding-window layout written per layer (full attention in layer{'s' if len(full) != 1 else ''} "
            f"{', '.join(map(str, full)) or 'none'} of the pruned model), since removing layers shifted the one "
            "llama.cpp derives from the layer index: llama.cpp and the runtimes built on it read it, transformers' own "
            "GGUF loader does not (load the safetensors output in transformers instead)")


def _were_removed(report: Report) -> str:
    """``2 of 6 decoder layers were removed`` (``1 of 6 … was``)."""
    count = len(report.removed_layers)
    return f"{count} of {report.n_layers} decoder layers {'was' if count == 1 else 'were'} removed"


def _removed_line(report: Report) -> str:
    """The removed layers by number; for a source pruned before, in its own numbering and in the first original's."""
    removed = ", ".join(map(str, report.removed_layers)) or "none"
    if not report.earlier_removed:
        return f"Removed layers (0-based, original numbering): {removed}."
    from .formats.provenance import removed_in_first_original

    first = removed_in_first_original(report.earlier_removed, report.removed_layers, report.n_layers)
    origin = f", first pruned from `{report.first_original}`" if report.first_original else ""
    return (f"Removed layers (0-based, numbered as in `{public_name(report.model)}`, which had been pruned "
            f"before{origin}: it lacked {in_number(len(report.earlier_removed), 'layer')} "
            f"{', '.join(map(str, report.earlier_removed))} of its original): {removed}. Of the "
            f"first original's {report.n_layers + len(report.earlier_removed)} layers, this model lacks "
            f"{', '.join(map(str, first))}.")


def _encodable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 (Python keeps them as lone surrogates, as in
    ``g\\udce9.gguf``) shown as U+FFFD: the card could not be written, after the whole job."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _how_chosen(report: Report) -> str:
    """How the removed layers were chosen, in words that agree with the score table below."""
    if report.metric == "manual":
        if report.listed_in:
            return (f"as the imported scores file {Path(report.listed_in).name} lists them (chosen where it was "
                    "written; its scores are below)")
        if report.picked_after:
            return f"picked by hand, after scoring the layers with **{report.picked_after}** (the scores are below)"
        return "as listed by hand (no scoring)"
    if report.selection:
        return (f"by **{report.metric}**: layers ranked by their scores (ShortGPT, Men et al. 2024: the layers whose "
                "output is most similar to their input matter least), then the set chosen by measuring candidates "
                "on the calibration text, so the removed layers need not be the lowest-scored ones")
    return (f"by ranking them with **{report.metric}** (ShortGPT, Men et al. 2024: the layers whose output is most "
            "similar to their input matter least) and deleting the lowest-ranked ones")


def _given_words(report: Report) -> str:
    """What the card's metric line adds for layers given, not chosen here."""
    if report.listed_in:
        return f" (the layers {Path(report.listed_in).name} lists, beside its {report.picked_after} scores)"
    return f" (layers picked from {report.picked_after} scores)" if report.picked_after else ""


def _score_table(metric: str, rows: str) -> str:
    if not rows:
        return ""
    return f"""
## Layer scores (lower = less important)

| layer | {metric} | |
|---|---|---|
{rows}
"""
