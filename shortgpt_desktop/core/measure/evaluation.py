"""Perplexity on fixed token windows and a short greedy generation, for before/after comparisons."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Cancelled, ResourceError
from .calibration import pad_batch


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    seconds: float

    @classmethod
    def of(cls, total_nll: float, tokens: int, seconds: float) -> PerplexityResult:
        mean = total_nll / max(tokens, 1)
        return cls(_exp(mean), mean, tokens, seconds)


def perplexity_of(
    model: Any,
    windows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 4,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Perplexity over non-overlapping windows (each already starts with BOS where the model wants one).

    Every token after the first of each window is predicted; log-softmax runs in float32 whatever the
    model's dtype, and padding never counts. Call it with the same windows for the original and the pruned
    model and the two numbers are comparable.
    """
    import torch

    if not windows:
        raise ValueError("no evaluation windows")
    device = next(model.parameters()).device
    total_nll = 0.0
    total_tokens = 0
    started = time.perf_counter()
    if progress is not None:
        progress(0, len(windows))
    with torch.inference_mode():
        for start, (ids, mask) in _batches(windows, pad_id, batch_size, device):
            if cancel is not None and cancel():
                raise Cancelled()
            try:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll, count = nll_of(logits, ids, mask)
            except torch.OutOfMemoryError:
                raise ResourceError(
                    f"Out of memory on {device} while measuring perplexity; use a smaller batch size or "
                    "sequence length."
                ) from None
            total_nll += nll
            total_tokens += count
            del logits
            if progress is not None:
                progress(min(start + batch_size, len(windows)), len(windows))
    return PerplexityResult.of(total_nll, total_tokens, time.perf_counter() - started)


@dataclass
class Fidelity:
    """How close a pruned model's next-token distributions stay to the original's, on the same tokens.

    The figures llama.cpp's ``llama-perplexity --kl-divergence`` prints for a quantization, so a cut can be
    compared with one: the mean KL divergence KL(original || pruned) per predicted token (nats), its 99th
    percentile and maximum, and "same top p": the share of tokens where both models pick the same top token.
    """

    mean_kl: float
    p99_kl: float
    max_kl: float
    same_top: float  # 0..1
    tokens: int

    def to_json(self) -> dict[str, float | int]:
        return {"mean_kl": self.mean_kl, "p99_kl": self.p99_kl, "max_kl": self.max_kl, "same_top": self.same_top,
                "tokens": self.tokens}


@dataclass
class Reference:
    """The original model's pass over the held-out windows, kept to compare every pruned model with.

    Only the hidden states leaving the last decoder layer are kept (windows × tokens × hidden, on the CPU): the
    original's logits are recomputed from them by the model's own final norm and head when a pruned model is
    compared, so no vocabulary-sized tensor is stored and the original's decoder never runs twice.
    """

    final_states: list[Any]  # one [batch, tokens, hidden] tensor per batch, CPU
    output_kind: int | None  # what a decoder layer returns: None (a tensor) or the length of its tuple
    result: PerplexityResult
    batch_size: int
    windows: int


def _batches(windows: Sequence[Sequence[int]], pad_id: int, batch_size: int, device: Any) -> Any:
    for start in range(0, len(windows), batch_size):
        yield start, pad_batch(windows[start : start + batch_size], pad_id, device)


#: How many vocabulary-sized float32 values a log-softmax makes at once (16 MB): the next-token distributions are
#: computed a few positions at a time, so a batch's logits are the only vocabulary-sized tensors held whole (a
#: batch of Gemma 3's 262,144-token logits is 1.07 GB at 4 × 256 tokens; its log-probabilities would be another).
CHUNK_ELEMENTS = 1 << 22


def position_spans(logits: Any, every: bool = False) -> Iterator[tuple[int, slice]]:
    """(row, positions) covering every predicting position of a batch's ``[rows, tokens, vocab]`` logits (all but
    the last token of each row; ``every``: the last too), in row-major order, each span about
    :data:`CHUNK_ELEMENTS` values wide.

    No span is a single position unless the row has only one: torch sums a one-row tensor's vocabulary across
    threads, in another order than each row of a taller one, so a lone position would change the last digits. On a
    CPU the spans then give the whole batch's figures bit for bit (tested); a GPU may split a row's sum across
    blocks by the number of rows, so there the KL's last bits may differ (not measured: no GPU here).
    """
    rows, positions, vocab = logits.shape[0], logits.shape[1] - (0 if every else 1), logits.shape[-1]
    step = max(2, CHUNK_ELEMENTS // max(vocab, 1))
    starts = list(range(0, positions, step))
    if len(starts) > 1 and positions - starts[-1] == 1:
        starts.pop()  # the lone last position joins the span before it
    for row in range(rows):
        for start, stop in zip(starts, [*starts[1:], positions], strict=True):
            yield row, slice(start, stop)


def nll_of(logits: Any, ids: Any, mask: Any) -> tuple[float, int]:
    """(summed NLL of every real predicted token, their count); the log-softmax in float32, a few positions at a
    time (:func:`position_spans`): the same values, summed in the same order, as over the whole batch at once
    (on a CPU, bit for bit)."""
    return picked_nll_sum(logits, ids[:, 1:], mask[:, 1:].bool())


def picked_nll_sum(logits: Any, targets: Any, keep: Any, every: bool = False) -> tuple[float, int]:
    """(summed −log p of ``targets`` where ``keep``, their count), position by position of ``logits`` (all but the
    last of each row; ``every``: each, for logits taken at chosen positions), the log-softmax in float32 a few
    positions at a time (:func:`position_spans`), summed as over the whole batch at once."""
    import torch

    token_nll = torch.empty(keep.shape, dtype=torch.float32, device=logits.device)
    for row, span in position_spans(logits, every=every):
        logprobs = torch.log_softmax(logits[row, span].float(), dim=-1)
        token_nll[row, span] = _picked_nll(logprobs, targets[row, span])
        del logprobs
    return float(token_nll[keep].double().sum()), int(keep.sum())


def _picked_nll(logprobs: Any, targets: Any) -> Any:
    """−log p of each position's target token, from a span's log-probabilities."""
    return -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def kl_per_token(target_logprobs: Any, logprobs: Any) -> Any:
    """KL(target || model) of each position's next-token distribution, from both log-probabilities (last dim)."""
    return (target_logprobs.exp() * (target_logprobs - logprobs)).sum(-1)


class FidelitySums:
    """Running sums for perplexity and :class:`Fidelity`, batch after batch (the original's logits beside the
    pruned model's, on the same tokens); per-token KL values are kept (one float each) for the percentiles."""

    def __init__(self) -> None:
        self.total_nll = 0.0
        self.original_nll = 0.0  # the original's summed NLL on the same tokens (its log-softmax is taken anyway)
        self.tokens = 0
        self.same = 0
        self.kls: list[Any] = []

    def add(self, original_logits: Any, logits: Any, ids: Any, mask: Any) -> None:
        """One batch: both models' log-probabilities a few positions at a time (:func:`position_spans`), so that
        nothing vocabulary-sized is held beside the two logits but those positions'."""
        import torch

        keep = mask[:, 1:].bool()
        targets = ids[:, 1:]
        # Each position's values are written in place, not kept as small tensors between the spans' big ones,
        # which would leave the allocator's heap in pieces that a later span cannot reuse.
        token_nll = torch.empty(keep.shape, dtype=torch.float32, device=logits.device)
        original_nll = torch.empty(keep.shape, dtype=torch.float32, device=logits.device)
        kl = torch.empty(keep.shape, dtype=torch.float32, device=logits.device)
        same = torch.empty(keep.shape, dtype=torch.bool, device=logits.device)
        for row, span in position_spans(logits):
            q_log = torch.log_softmax(logits[row, span].float(), dim=-1)
            p_log = torch.log_softmax(original_logits[row, span].float(), dim=-1)
            token_nll[row, span] = _picked_nll(q_log, targets[row, span])
            original_nll[row, span] = _picked_nll(p_log, targets[row, span])
            kl[row, span] = kl_per_token(p_log, q_log).clamp_min(0.0)
            same[row, span] = p_log.argmax(-1) == q_log.argmax(-1)
            del q_log, p_log
        self.total_nll += float(token_nll[keep].double().sum())
        self.original_nll += float(original_nll[keep].double().sum())
        self.tokens += int(keep.sum())
        self.same += int(same[keep].sum())
        self.kls.extend(kl[row][keep[row]].double().cpu() for row in range(keep.shape[0]))

    def result(self, seconds: float) -> tuple[PerplexityResult, Fidelity]:
        import torch

        every = torch.cat(self.kls) if self.kls else torch.zeros(1, dtype=torch.float64)
        fidelity = Fidelity(
            mean_kl=float(every.mean()), p99_kl=float(torch.quantile(every, 0.99)), max_kl=float(every.max()),
            same_top=self.same / max(self.tokens, 1), tokens=self.tokens,
        )
        return PerplexityResult.of(self.total_nll, self.tokens, seconds), fidelity


def _exp(mean_nll: float) -> float:
    """Perplexity from a mean NLL; NaN stays NaN (a model that produced NaN is not "perplexity 1e304")."""
    if math.isnan(mean_nll):
        return math.nan
    return math.exp(min(mean_nll, 700.0))


def has_chat_template(tokenizer: Any) -> bool:
    """An instruction-tuned model's tokenizer says how a conversation is laid out; a base model's does not. A
    template that refuses a lone user turn (it raises, or does not parse) counts as none, so prompts go in as raw
    text: the check's generation failed with the template's traceback after the whole job had run."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                      add_generation_prompt=True)
    except Exception:  # jinja2's TemplateError, or whatever the template itself raises
        return False
    return True


def end_ids_of(tokenizer: Any, model: Any = None) -> set[int]:
    """The tokens that end a turn: the tokenizer's end-of-sequence token and any the generation config stops at."""
    end_ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            end_ids.add(source)
        elif isinstance(source, list | tuple):
            end_ids.update(i for i in source if isinstance(i, int))
    return end_ids


def encode_prompt(tokenizer: Any, prompt: str, chat: bool) -> Any:
    """The prompt as the model reads it: a user turn through the chat template, or raw text."""
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, return_tensors="pt", add_special_tokens=False)
    return tokenizer(prompt, return_tensors="pt")


def after_each_token(after_token: Callable[[int], None] | None, prompt_width: int) -> Any:
    """A ``StoppingCriteriaList`` for transformers' ``generate`` that calls ``after_token(written)`` after each new
    token and never stops generation itself: what ``after_token`` raises (a cancel) goes through, so a 64-token
    generation can be followed and stopped."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EachToken(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if after_token is not None:
                after_token(int(input_ids.shape[1]) - prompt_width)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([EachToken()])


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40, chat: bool = False,
                  after_token: Callable[[int], None] | None = None) -> str:
    """Greedy continuation of ``prompt`` with the KV cache on (what a user of the pruned model will see);
    ``after_token(written)`` follows each new token (:func:`after_each_token`).

    With ``chat`` the prompt is sent as a user message through the model's chat template, as an Instruct
    model expects (a raw prompt makes such a model ramble whether pruned or not).
    """
    import torch

    device = next(model.parameters()).device
    encoded = encode_prompt(tokenizer, prompt, chat).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = int(encoded["input_ids"].shape[1])
    with torch.inference_mode():
        out = model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=pad,
            stopping_criteria=after_each_token(after_token, width),
        )
    return tokenizer.decode(out[0, width:], skip_special_tokens=True)
