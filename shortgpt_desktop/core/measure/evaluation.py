"""Perplexity on fixed token windows and a short greedy generation, for before/after comparisons."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
                nll, count, logprobs = _nll(logits, ids, mask)
            except torch.OutOfMemoryError:
                raise ResourceError(
                    f"Out of memory on {device} while measuring perplexity; use a smaller batch size or "
                    "sequence length."
                ) from None
            total_nll += nll
            total_tokens += count
            del logits, logprobs
            if progress is not None:
                progress(min(start + batch_size, len(windows)), len(windows))
    mean = total_nll / max(total_tokens, 1)
    return PerplexityResult(_exp(mean), mean, total_tokens, time.perf_counter() - started)


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


def _nll(logits: Any, ids: Any, mask: Any) -> tuple[float, int, Any]:
    """(summed NLL of every real predicted token, their count, the float32 log-probabilities)."""
    import torch

    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    keep = mask[:, 1:].bool()
    nll = -logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return float(nll[keep].double().sum()), int(keep.sum()), logprobs


def reference_pass(
    model: Any,
    layers: Any,
    windows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 4,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Reference:
    """Perplexity of the original model (as :func:`perplexity_of`), keeping its final hidden states.

    ``layers`` is the model's decoder layer list: a hook on the last one keeps what it hands to the final norm.
    """

    if not windows:
        raise ValueError("no evaluation windows")
    kept: list[Any] = []
    kind: list[int | None] = [None]

    def keep_output(module: Any, args: tuple, output: Any) -> None:
        kind[0] = len(output) if isinstance(output, (tuple, list)) else None
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        kept.append(hidden.detach().to("cpu", copy=True))

    handle = layers[len(layers) - 1].register_forward_hook(keep_output)
    try:
        result = perplexity_of(model, windows, pad_id, batch_size, cancel, progress)
    finally:
        handle.remove()
    return Reference(kept, kind[0], result, batch_size, len(windows))


@contextmanager
def _replaying(layers: Any, kind: int | None) -> Iterator[dict[str, Any]]:
    """The decoder layers replaced by a replay: the first returns ``state["hidden"]``, the others pass it on.

    The model's forward then runs only its embeddings, its final norm and its head: the original's logits from
    its kept final hidden states, through the very code (soft-capping and all) that made them.
    """
    state: dict[str, Any] = {"hidden": None}

    def wrap(hidden: Any) -> Any:
        return hidden if kind is None else (hidden, *([None] * (kind - 1)))

    def replay(*args: Any, **kwargs: Any) -> Any:
        return wrap(state["hidden"])

    def identity(*args: Any, **kwargs: Any) -> Any:
        return wrap(args[0] if args else kwargs["hidden_states"])

    saved = [layer.__dict__.get("forward") for layer in layers]
    for index, layer in enumerate(layers):
        layer.forward = replay if index == 0 else identity
    try:
        yield state
    finally:
        for layer, previous in zip(layers, saved, strict=True):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous


def compare_to_reference(
    model: Any,
    layers: Any,
    windows: Sequence[Sequence[int]],
    pad_id: int,
    reference: Reference,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PerplexityResult, Fidelity]:
    """Perplexity of ``model`` (a pruned view) and its fidelity to the original of ``reference``, in one pass.

    ``layers`` is the model's current decoder layer list. The windows and batches must be the reference's.
    """
    import torch

    if len(windows) != reference.windows:
        raise ValueError("the reference was measured on other windows")
    device = next(model.parameters()).device
    batch_size = reference.batch_size
    total_nll, total_tokens = 0.0, 0
    kls: list[Any] = []
    same = 0
    started = time.perf_counter()
    if progress is not None:
        progress(0, len(windows))
    with torch.inference_mode():
        for number, (start, (ids, mask)) in enumerate(_batches(windows, pad_id, batch_size, device)):
            if cancel is not None and cancel():
                raise Cancelled()
            try:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll, count, logprobs = _nll(logits, ids, mask)
                del logits
                with _replaying(layers, reference.output_kind) as state:
                    state["hidden"] = reference.final_states[number].to(device)
                    original = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            except torch.OutOfMemoryError:
                raise ResourceError(
                    f"Out of memory on {device} while measuring perplexity; use a smaller batch size or "
                    "sequence length."
                ) from None
            keep = mask[:, 1:].bool()
            for row in range(ids.shape[0]):  # one row at a time: a few vocabulary-sized float32 copies at most
                p_log = torch.log_softmax(original[row, :-1].float(), dim=-1)
                q_log = logprobs[row]
                kl = (p_log.exp() * (p_log - q_log)).sum(-1).clamp_min(0.0)
                row_keep = keep[row]
                kls.append(kl[row_keep].double().cpu())
                same += int((p_log.argmax(-1) == q_log.argmax(-1))[row_keep].sum())
                del p_log, kl
            total_nll += nll
            total_tokens += count
            del original, logprobs
            if progress is not None:
                progress(min(start + batch_size, len(windows)), len(windows))
    mean = total_nll / max(total_tokens, 1)
    result = PerplexityResult(_exp(mean), mean, total_tokens, time.perf_counter() - started)
    every = torch.cat(kls) if kls else torch.zeros(1, dtype=torch.float64)
    fidelity = Fidelity(
        mean_kl=float(every.mean()), p99_kl=float(torch.quantile(every, 0.99)), max_kl=float(every.max()),
        same_top=same / max(total_tokens, 1), tokens=total_tokens,
    )
    return result, fidelity


def _exp(mean_nll: float) -> float:
    """Perplexity from a mean NLL; NaN stays NaN (a model that produced NaN is not "perplexity 1e304")."""
    if math.isnan(mean_nll):
        return math.nan
    return math.exp(min(mean_nll, 700.0))


def has_chat_template(tokenizer: Any) -> bool:
    """An instruction-tuned model's tokenizer says how a conversation is laid out; a base model's does not."""
    return bool(getattr(tokenizer, "chat_template", None))


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40, chat: bool = False) -> str:
    """Greedy continuation of ``prompt`` with the KV cache on (what a user of the pruned model will see).

    With ``chat`` the prompt is sent as a user message through the model's chat template, as an Instruct
    model expects (a raw prompt makes such a model ramble whether pruned or not).
    """
    import torch

    device = next(model.parameters()).device
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
    else:
        encoded = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=pad,
        )
    return tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
