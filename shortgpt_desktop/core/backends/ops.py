"""The steps of a job written once against a :class:`~.layerwise.LayerStack`: the same code, in the same order,
whether the layers are all in memory or loaded one at a time, so both backends give the same numbers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import Cancelled
from ..measure.calibration import TokenSet
from ..measure.evaluation import FidelitySums, PerplexityResult, Reference, nll_of
from ..measure.scoring import HookStats, _Accumulator, all_finite
from ..progress import CancelCheck, Progress, raise_if_cancelled
from .layerwise import Batch, LayerObserver, LayerStack, head_layers

T = TypeVar("T")

Counter = Callable[[int, int], None]


def kept_layers(n_layers: int, removed: Sequence[int]) -> list[int]:
    gone = set(removed)
    return [i for i in range(n_layers) if i not in gone]


def hooked_pass(
    stack: LayerStack,
    token_set: TokenSet,
    batch_size: int = 4,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    keep_last_token: bool = True,
    observers: Sequence[LayerObserver] = (),
) -> HookStats:
    """Every layer's hooked statistics (BI and the rest, :mod:`..measure.scoring`), one layer after another.

    Progress is ``("scoring", layers_done, n_layers, partial_bi)``: the chart fills layer by layer. A cancelled
    pass hands over the statistics of the layers measured so far (the others have no score).
    """
    started = time.perf_counter()
    n = stack.n_layers
    if progress is not None:
        progress("scoring", 0, n, [None] * n)
    batches = stack.capture(token_set.samples, token_set.pad_id, batch_size, cancel)
    done_layers = [0]
    with _Accumulator(stack.layers, keep_last_token) as acc:

        def before_batch(index: int, batch: Batch) -> None:
            mask, last = batch.mask.to(stack.device), batch.last.to(stack.device)
            if index == 0:
                acc.start_batch(mask, last)  # counts the tokens once
            else:
                acc.select_batch(mask, last)

        def after_layer(done: int, index: int) -> None:
            done_layers[0] = done
            partial = [v if i < done else None for i, v in enumerate(acc.partial_bi())]
            if progress is not None:
                progress("scoring", done, n, partial)
            if not all_finite(partial):  # every later layer would be NaN too: the caller refuses now
                raise _NotFinite

        def so_far() -> HookStats:
            """The statistics of the layers measured so far (the others have no score)."""
            stats = acc.stats(time.perf_counter() - started)
            stats.bi = [v if i < done_layers[0] else None for i, v in enumerate(stats.bi)]  # type: ignore[misc]
            stats.relative_magnitude = [v if i < done_layers[0] else None  # type: ignore[misc]
                                        for i, v in enumerate(stats.relative_magnitude)]
            stats.last_token_states = None
            return stats

        try:
            stack.run_layers(batches, range(n), observers, after_layer, cancel, before_batch)
        except _NotFinite:
            return so_far()
        except Cancelled:
            if not done_layers[0]:
                raise
            raise Cancelled(so_far()) from None
        return acc.stats(time.perf_counter() - started)


class _NotFinite(Exception):
    """A layer's states were not numbers (float16 overflowed): the pass stops there."""


def head_steps(stack: LayerStack) -> int:
    """The head's cost in decoder layers (vocabulary × hidden against a layer's parameters), at least 1: a pass's
    bar counts it so, and its time left stays true where the head weighs as much as half the model (Gemma 3's
    262k-token head, 30 of its layers' worth; it was one step of 19)."""
    return max(1, round(head_layers(stack)))


def head_pass(items: Sequence[T], cancel: CancelCheck | None = None, progress: Counter | None = None,
              start: int = 0, total: int = 0) -> Iterator[T]:
    """The batches of a head pass, one by one: ``cancel`` asked before each, and the bar moved from ``start`` (the
    layers' steps) towards ``total`` after each (short of it: the caller says the end). Gemma 3's 262k-token head is
    30 of a check's 52 steps: the bar stood still there for about 30 s, and Cancel waited as long (a walkthrough)."""
    for number, item in enumerate(items, start=1):
        if cancel is not None and cancel():
            raise Cancelled()
        yield item
        if progress is not None and total > start:
            done = start + (total - start) * number // max(len(items), 1)
            if done < total:
                progress(done, total)


def final_states(stack: LayerStack, windows: Sequence[Sequence[int]], pad_id: int, removed: Sequence[int] = (),
                 batch_size: int = 4, weights: dict[str, Any] | None = None, cancel: CancelCheck | None = None,
                 progress: Counter | None = None, total: int | None = None) -> list[Batch]:
    """The windows' batches with ``hidden`` = the states leaving the last kept layer (``removed`` skipped)."""
    kept = kept_layers(stack.n_layers, removed)
    total = total if total is not None else len(kept) + head_steps(stack)
    if progress is not None:
        progress(0, total)
    batches = stack.capture(windows, pad_id, batch_size, cancel)
    after = (lambda done, index: progress(done, total)) if progress is not None else None
    stack.run_layers(batches, kept, (), after, cancel, weights=weights)
    return batches


def perplexity(stack: LayerStack, windows: Sequence[Sequence[int]], pad_id: int, removed: Sequence[int] = (),
               batch_size: int = 4, weights: dict[str, Any] | None = None, cancel: CancelCheck | None = None,
               progress: Counter | None = None) -> PerplexityResult:
    """Perplexity of the model with ``removed`` skipped (and ``weights`` in), as :func:`perplexity_of` gives it.

    ``progress(done, total)`` counts the kept layers, then the head pass (:func:`head_steps` of them).
    """
    if not windows:
        raise ValueError("no evaluation windows")
    started = time.perf_counter()
    total = len(kept_layers(stack.n_layers, removed)) + head_steps(stack)
    batches = final_states(stack, windows, pad_id, removed, batch_size, weights, cancel, progress, total)
    total_nll, total_tokens = head_nll(stack, batches, cancel=cancel, progress=progress,
                                       start=total - head_steps(stack), total=total)
    if progress is not None:
        progress(total, total)
    return PerplexityResult.of(total_nll, total_tokens, time.perf_counter() - started)


def next_tokens(stack: LayerStack, sequences: Sequence[Sequence[int]], pad_id: int, removed: Sequence[int] = (),
                weights: dict[str, Any] | None = None, cancel: CancelCheck | None = None) -> list[int]:
    """The greedy next token after each sequence, of the model with ``removed`` skipped (and ``weights`` in): one
    pass over the layers for all the sequences together (padded on the right, read at each one's last token)."""
    import torch

    batches = final_states(stack, sequences, pad_id, removed, max(1, len(sequences)), weights, cancel)
    out: list[int] = []
    with stack.head() as logits_of:
        for batch in batches:
            # The head at each sequence's last position only (a position's logits depend on its own state alone).
            rows = torch.arange(batch.hidden.shape[0], device=batch.hidden.device)
            last = batch.last.to(batch.hidden.device)
            view = Batch(batch.ids[rows.cpu(), last.cpu()][:, None], batch.mask[rows.cpu(), last.cpu()][:, None], None)
            logits = logits_of(view, batch.hidden[rows, last][:, None])
            out += logits[:, 0].argmax(-1).tolist()
    return out


def head_nll(stack: LayerStack, batches: Sequence[Batch], targets: Sequence[Any] | None = None,
             cancel: CancelCheck | None = None, progress: Counter | None = None, start: int = 0,
             total: int = 0) -> tuple[float, int]:
    """(summed NLL, tokens) of the batches' final states through the head. ``targets``: per batch, the mask of
    the positions whose tokens count (default: each batch's own mask, every real token). ``cancel``, ``progress``,
    ``start`` and ``total``: :func:`head_pass`'s."""
    total_nll, total_tokens = 0.0, 0
    with stack.head() as logits_of:
        for index, batch in enumerate(head_pass(batches, cancel, progress, start, total)):
            logits = logits_of(batch, batch.hidden)
            mask = batch.mask if targets is None else targets[index]
            nll, count = nll_of(logits, batch.ids.to(logits.device), mask.to(logits.device))
            total_nll += nll
            total_tokens += count
            del logits
    return total_nll, total_tokens


def reference(stack: LayerStack, windows: Sequence[Sequence[int]], pad_id: int, batch_size: int = 4,
              cancel: CancelCheck | None = None, progress: Counter | None = None) -> Reference:
    """The original's perplexity on the windows, keeping its final states (see :class:`Reference`)."""
    if not windows:
        raise ValueError("no evaluation windows")
    started = time.perf_counter()
    total = stack.n_layers + head_steps(stack)
    batches = final_states(stack, windows, pad_id, (), batch_size, None, cancel, progress, total)
    total_nll, total_tokens = head_nll(stack, batches, cancel=cancel, progress=progress, start=stack.n_layers,
                                       total=total)
    if progress is not None:
        progress(total, total)
    result = PerplexityResult.of(total_nll, total_tokens, time.perf_counter() - started)
    kind = stack.output_kind if isinstance(stack.output_kind, int) or stack.output_kind is None else None
    return Reference([b.hidden.to("cpu") for b in batches], kind, result, batch_size, len(windows))


def compare(stack: LayerStack, windows: Sequence[Sequence[int]], pad_id: int, reference_: Reference,
            removed: Sequence[int] = (), weights: dict[str, Any] | None = None, cancel: CancelCheck | None = None,
            progress: Counter | None = None) -> tuple[PerplexityResult, Any]:
    """Perplexity of the pruned (and repaired) model and its fidelity to the reference's original."""
    if len(windows) != reference_.windows:
        raise ValueError("the reference was measured on other windows")
    started = time.perf_counter()
    total = len(kept_layers(stack.n_layers, removed)) + 2 * head_steps(stack)  # the head, for both models
    batches = final_states(stack, windows, pad_id, removed, reference_.batch_size, weights, cancel, progress, total)
    sums = FidelitySums()
    pairs = list(zip(batches, reference_.final_states, strict=True))
    with stack.head() as logits_of:
        for batch, original in head_pass(pairs, cancel, progress, total - 2 * head_steps(stack), total):
            logits = logits_of(batch, batch.hidden)
            original_logits = logits_of(batch, original)
            sums.add(original_logits, logits, batch.ids.to(logits.device), batch.mask.to(logits.device))
            del logits, original_logits
    if progress is not None:
        progress(total, total)
    return sums.result(time.perf_counter() - started)


def reference_and_compare(stack: LayerStack, windows: Sequence[Sequence[int]], pad_id: int, removed: Sequence[int],
                          batch_size: int = 4, weights: dict[str, Any] | None = None,
                          cancel: CancelCheck | None = None, progress: Counter | None = None,
                          ) -> tuple[Reference, tuple[PerplexityResult, Any]]:
    """:func:`reference` and :func:`compare` in one sweep: each layer is opened once for the original's and the
    pruned model's states (the streamed stack reads it once, not twice), and the original's logits are computed
    once for its perplexity and the fidelity. Same operations on the same inputs, so the same numbers.

    ``progress(done, total)`` counts the layers (each run for both models), then the head pass: the head, run for
    both too, in the same measure (:func:`head_steps` for each of the two, per two layer runs).
    """
    if not windows:
        raise ValueError("no evaluation windows")
    started = time.perf_counter()
    gone = set(removed)
    runs = 2 * stack.n_layers - len(gone & set(range(stack.n_layers)))
    total = stack.n_layers + max(1, round(2 * head_steps(stack) * stack.n_layers / runs))
    if progress is not None:
        progress(0, total)
    original = stack.capture(windows, pad_id, batch_size, cancel)
    pruned = [batch.copy() for batch in original]
    for done, index in enumerate(range(stack.n_layers), start=1):
        if cancel is not None and cancel():
            raise Cancelled()
        with stack.open_layer(index) as layer:
            stack.run_layers(original, [index], cancel=cancel, opened=layer)
            if index not in gone:
                stack.run_layers(pruned, [index], cancel=cancel, weights=weights, opened=layer)
        if progress is not None:
            progress(done, total)
    sums = FidelitySums()  # its sums hold the original's perplexity too, from the log-softmax the fidelity takes
    with stack.head() as logits_of:
        for batch, full in head_pass(list(zip(pruned, original, strict=True)), cancel, progress, stack.n_layers,
                                     total):
            original_logits = logits_of(full, full.hidden)
            ids, mask = batch.ids.to(original_logits.device), batch.mask.to(original_logits.device)
            logits = logits_of(batch, batch.hidden)
            sums.add(original_logits, logits, ids, mask)
            del logits, original_logits
    if progress is not None:
        progress(total, total)
    seconds = time.perf_counter() - started
    kind = stack.output_kind if isinstance(stack.output_kind, int) or stack.output_kind is None else None
    reference_ = Reference([b.hidden.to("cpu") for b in original], kind,
                           PerplexityResult.of(sums.original_nll, sums.tokens, seconds), batch_size, len(windows))
    return reference_, sums.result(seconds)


def generate(stack: LayerStack, tokenizer: Any, prompt: str, removed: Sequence[int] = (),
             weights: dict[str, Any] | None = None, max_new_tokens: int = 8, chat: bool = False,
             after_token: Callable[[int], None] | None = None, cancel: CancelCheck | None = None) -> str:
    """Greedy continuation, one layer at a time: each new token runs the whole (pruned) stack again, with no KV
    cache, so keep ``max_new_tokens`` small. Same tokens as :func:`..measure.evaluation.generate_text`."""
    return generate_variants(stack, tokenizer, prompt, [(removed, weights)], max_new_tokens, chat, after_token,
                             cancel)[0]


def generate_variants(stack: LayerStack, tokenizer: Any, prompt: str,
                      variants: Sequence[tuple[Sequence[int], dict[str, Any] | None]], max_new_tokens: int = 8,
                      chat: bool = False, after_token: Callable[[int], None] | None = None,
                      cancel: CancelCheck | None = None) -> list[str]:
    """:func:`generate` for several pruned (and repaired) views at once, e.g. the original and the pruned model.

    Each new token is one sweep over the layers in which every layer is opened once for all the views that keep
    it (the streamed stack reads it once, not once per view); each view runs exactly the operations it would
    alone, so the tokens are the same. ``after_token(written)`` follows each token's sweep; ``cancel`` is asked
    before each layer is opened (a streamed model too large for memory reads every layer for each token: its 8
    tokens could not be stopped).
    """
    from ..measure.evaluation import encode_prompt

    ids = encode_prompt(tokenizer, prompt, chat)["input_ids"][0].tolist()
    first = len(ids)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    sequences = [list(ids) for _ in variants]
    kept = [set(kept_layers(stack.n_layers, removed)) for removed, _ in variants]
    active = list(range(len(variants)))
    for step in range(max_new_tokens):
        if not active:
            break
        batches = dict(zip(active, stack.capture([sequences[v] for v in active], pad, 1), strict=True))
        for index in sorted(set().union(*(kept[v] for v in active))):
            raise_if_cancelled(cancel)
            users = [v for v in active if index in kept[v]]
            with stack.open_layer(index) as layer:
                for v in users:
                    stack.run_layers([batches[v]], [index], weights=variants[v][1], opened=layer)
        with stack.head() as logits_of:
            for v in active:
                batch = batches[v]
                sequences[v].append(int(logits_of(batch, batch.hidden)[0, -1].argmax()))
        active = [v for v in active if sequences[v][-1] != eos]
        if after_token is not None:
            after_token(step + 1)
    return [tokenizer.decode(s[first:], skip_special_tokens=True) for s in sequences]
