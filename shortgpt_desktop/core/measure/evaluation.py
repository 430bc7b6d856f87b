"""Perplexity on fixed token windows and a short greedy generation, for before/after comparisons."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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
        for start in range(0, len(windows), batch_size):
            if cancel is not None and cancel():
                raise Cancelled()
            ids, mask = pad_batch(windows[start : start + batch_size], pad_id, device)
            try:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            except torch.OutOfMemoryError:
                raise ResourceError(
                    f"Out of memory on {device} while measuring perplexity; use a smaller batch size or "
                    "sequence length."
                ) from None
            target = ids[:, 1:]
            keep = mask[:, 1:].bool()
            nll = -logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            total_nll += float(nll[keep].double().sum())
            total_tokens += int(keep.sum())
            del logits, logprobs
            if progress is not None:
                progress(min(start + batch_size, len(windows)), len(windows))
    mean = total_nll / max(total_tokens, 1)
    return PerplexityResult(math.exp(min(mean, 700.0)), mean, total_tokens, time.perf_counter() - started)


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
