"""The MLP refit of a cut is kept only where the original's own chat answers stay as likely as without it.

The refit (:mod:`.mlp_refit`) trains on the calibration activations, mostly prose. On SmolLM2-135M-Instruct
(8 of 30 layers removed) it brought held-out prose closer to the original (perplexity 58.36 → 52.50, mean KL
0.632 → 0.495) and the greedy answer to "What is the capital of France, and why is it famous?" lost Paris, which
the linear repair alone kept. Prose perplexity cannot see that; the original's answers can.

The guard asks the original for its greedy answers to the answer check's prompts (:data:`.answer_probe.PROMPTS`,
never in any fit) and scores each variant of the pruned model by the mean negative log-likelihood per answer
token it gives those answers (teacher-forced: one pass for all the prompts). Starting from every cut refitted,
it drops the refit of one cut at a time, first to last, where dropping it makes the answers more likely; if the
refits left still make them less likely than the linear repair alone, it drops them all. A base model (no chat
template) has no turn to answer in, and keeps every refit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends import ops
from ..backends.layerwise import LayerStack
from ..model.families import Family
from ..progress import CancelCheck, Progress
from .answer_probe import PROMPTS, answer_probe_for
from .mlp_refit import mlp_path
from .own_answers import own_answers

#: Tokens of the original's answer to each check prompt that the guard scores (the turn may end sooner).
ANSWER_TOKENS = 24


@dataclass
class ChatAnswers:
    """The check prompts through the chat template, each followed by the original's greedy answer (token ids)."""

    sequences: list[list[int]]
    prompt_lengths: list[int]
    pad_id: int

    def nll(self, stack: LayerStack, removed: Sequence[int], weights: dict[str, Any] | None,
            cancel: CancelCheck | None = None) -> float:
        """Mean negative log-likelihood per answer token of the model with ``removed`` skipped and ``weights``."""
        batches = ops.final_states(stack, self.sequences, self.pad_id, removed, len(self.sequences), weights, cancel)
        answers, row = [], 0
        for batch in batches:
            mask = batch.mask.clone()
            for i in range(mask.shape[0]):  # the prompt's tokens are given, not answered
                mask[i, : self.prompt_lengths[row + i]] = 0
            row += mask.shape[0]
            answers.append(mask)
        total, count = ops.head_nll(stack, batches, answers)
        return total / max(count, 1)


def chat_answers(stack: LayerStack, tokenizer: Any, model: Any = None, progress: Progress | None = None,
                 cancel: CancelCheck | None = None) -> ChatAnswers | None:
    """The original's answers to the check prompts; None for a model without a chat template."""
    probe = answer_probe_for(tokenizer, model, PROMPTS)
    if probe is None:
        return None
    sequences = own_answers(stack, tokenizer, model, PROMPTS, ANSWER_TOKENS, progress=progress, cancel=cancel)
    return ChatAnswers(sequences, [len(p) for p in probe.prompts], probe.pad_id)


@dataclass
class GuardFigures:
    """Mean NLL per answer token of the original's answers: with the linear repair alone, with every cut
    refitted, and with the refits kept."""

    linear: float
    refit: float
    kept: float


def keep_refits(answers: ChatAnswers, stack: LayerStack, removed: Sequence[int], linear: dict[str, Any],
                refitted: dict[int, dict[str, Any]], cancel: CancelCheck | None = None,
                ) -> tuple[list[int], GuardFigures]:
    """Which refits to keep: ``refitted`` maps each refitted layer (first to last) to its refit's tensors, laid
    over ``linear`` (the linear repair's tensors). Returns the kept layers and the figures."""

    def weights(layers: Sequence[int]) -> dict[str, Any]:
        out = dict(linear)
        for layer in layers:
            out.update(refitted[layer])
        return out

    def score(layers: Sequence[int]) -> float:
        return answers.nll(stack, removed, weights(layers), cancel)

    alone = score([])
    kept = list(refitted)
    every = current = score(kept)
    for layer in list(refitted):
        without = [k for k in kept if k != layer]
        value = score(without) if without else alone
        if value < current:
            kept, current = without, value
    if current > alone:
        kept, current = [], alone
    return kept, GuardFigures(alone, every, current)


def guard_refit(result: Any, repair: Any, family: Family, stack: LayerStack, tokenizer: Any, model: Any,
                removed: Sequence[int], progress: Progress | None = None, cancel: CancelCheck | None = None) -> None:
    """Drop from the refit ``result`` (:class:`.mlp_refit.RefitResult`, changed in place) the refits that make the
    original's chat answers less likely (see the module's docstring); ``repair`` is the linear repair it started
    from. Records the figures in ``result.chat`` and a note when a refit is dropped."""
    module = mlp_path(family)
    refitted_runs = [r for r in result.runs if r.steps and r.kept]
    if module is None or not refitted_runs:
        return
    answers = chat_answers(stack, tokenizer, model, progress, cancel)
    if answers is None:
        return
    prefixes = {r.layer: f"{family.layers_path}.{r.layer}.{module}." for r in refitted_runs}
    refitted = {layer: {k: v for k, v in result.tensors.items() if k.startswith(prefix)}
                for layer, prefix in prefixes.items()}
    kept, figures = keep_refits(answers, stack, removed, repair.tensors, refitted, cancel)
    result.chat = figures
    dropped = [layer for layer in refitted if layer not in kept]
    if not dropped:
        return
    tensors = dict(repair.tensors)
    for layer in kept:
        tensors.update(refitted[layer])
    result.tensors = tensors
    for run in result.runs:
        run.kept = run.kept and run.layer not in dropped  # (one no step improved stays dropped)
    result.notes.append(
        f"the MLP refit of layer{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))} was dropped: the "
        f"original's answers to the check prompts were less likely with it (loss per answer token "
        f"{figures.linear:.3f} with the linear repair alone, {figures.refit:.3f} with every cut refitted, "
        f"{figures.kept:.3f} kept)")
