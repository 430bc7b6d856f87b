"""Greedy answers to several prompts at once, of the original or a pruned (and repaired) view, on either backend.

A model in memory uses transformers' generation with the KV cache: every prompt in one batch, padded on the left
(one short step per new token). The streamed backend has no cache across layers loaded one at a time, so it runs
one padded pass over the layers per new token for all the prompts still answering (:func:`.ops.next_tokens`).
Both stop a sequence at the first of ``end_ids`` (kept) or after ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from ..progress import CancelCheck, Progress, raise_if_cancelled
from . import ops
from .layerwise import InMemoryStack, LayerStack


def greedy_answers(stack: LayerStack, prompts: Sequence[Sequence[int]], end_ids: set[int], pad_id: int,
                   max_new_tokens: int, removed: Sequence[int] = (), weights: dict[str, Any] | None = None,
                   kv_cache: bool | None = None, max_len: int | None = None, progress: Progress | None = None,
                   stage: str = "answers", cancel: CancelCheck | None = None) -> list[list[int]]:
    """Each prompt followed by its greedy answer, as token ids (at most ``max_len`` of them). ``kv_cache``:
    transformers' generation (default for a model in memory) or one pass per token through the stack."""
    sequences = [list(p) for p in prompts]
    if not sequences:
        return []
    if kv_cache is None:
        kv_cache = isinstance(stack, InMemoryStack)
    if progress is not None:
        progress(stage, 0, max_new_tokens, None)
    if kv_cache:
        out = _with_kv_cache(stack, sequences, end_ids, pad_id, max_new_tokens, max_len, removed, weights,
                             _each_token(progress, stage, max_new_tokens, cancel))
    else:
        out = _pass_per_token(stack, sequences, end_ids, pad_id, max_new_tokens, max_len, removed, weights,
                              progress, stage, cancel)
    raise_if_cancelled(cancel)
    if progress is not None:
        progress(stage, max_new_tokens, max_new_tokens, None)
    return out


def _pass_per_token(stack: LayerStack, sequences: list[list[int]], end_ids: set[int], pad_id: int,
                    max_new_tokens: int, max_len: int | None, removed: Sequence[int],
                    weights: dict[str, Any] | None, progress: Progress | None, stage: str,
                    cancel: CancelCheck | None) -> list[list[int]]:
    active = list(range(len(sequences)))
    for step in range(max_new_tokens):
        if not active:
            break
        for i, token in zip(active, ops.next_tokens(stack, [sequences[i] for i in active], pad_id, removed, weights,
                                                    cancel), strict=True):
            sequences[i].append(token)
        if progress is not None and step + 1 < max_new_tokens:
            progress(stage, step + 1, max_new_tokens, None)
        active = [i for i in active if sequences[i][-1] not in end_ids
                  and (max_len is None or len(sequences[i]) < max_len)]
    return sequences


def _each_token(progress: Progress | None, stage: str, max_new_tokens: int,
                cancel: CancelCheck | None) -> Callable[[int], None]:
    """``after(written)``, called by generation after each new token: the stage's progress, and a cancel that stops
    it there (transformers' ``generate`` ran its 64 tokens for minutes with the bar at 0 and no way to stop)."""
    def after(written: int) -> None:
        raise_if_cancelled(cancel)
        if progress is not None and written < max_new_tokens:
            progress(stage, written, max_new_tokens, None)

    return after


def _with_kv_cache(stack: Any, prompts: list[list[int]], end_ids: set[int], pad_id: int, max_new_tokens: int,
                   max_len: int | None, removed: Sequence[int], weights: dict[str, Any] | None,
                   after_token: Callable[[int], None] | None = None) -> list[list[int]]:
    """The same greedy answers with transformers' KV cache, the view put in for the block only; ``after_token``
    is called with the count of new tokens written after each one (:func:`_each_token`)."""
    import torch

    from ..cut.surgery import pruned_view
    from ..measure.evaluation import after_each_token
    from ..model.weights_view import weights_view

    model = stack.model
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1

    pruned = pruned_view(model, stack.family, removed) if removed else nullcontext()
    with weights_view(model, dict(weights or {})), pruned, torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=sorted(end_ids), pad_token_id=pad_id,
                             stopping_criteria=after_each_token(after_token, width))
    sequences = []
    for row, prompt in enumerate(prompts):
        answer = out[row, width:].tolist()
        end = next((i for i, token in enumerate(answer) if token in end_ids), len(answer) - 1)
        sequences.append((prompt + answer[:end + 1])[:max_len])
    return sequences
