"""Layer importance metrics, measured with forward hooks that keep running sums only.

Block Influence (Men et al., 2024): ``BI_i = 1 - mean_t cos(x_i,t, x_(i+1),t)`` where ``x_i`` is the hidden
state entering decoder layer ``i`` and ``x_(i+1)`` the one leaving it. Both are taken from the layer's own
input and output with a forward hook; ``output_hidden_states`` would give the last layer's output *after* the
final norm. Padding is masked out, sums are kept in float64, and no layer's hidden states outlive the batch.

One pass over the calibration samples gives every hook-based metric at once (BI, Relative Magnitude and the
angular distance of any block size), so switching metric in the window needs no new pass. The metrics
themselves, and which pass each needs, are registered in :mod:`.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cut.plan import is_known
from ..errors import Cancelled, Hint, ResourceError
from ..model.families import Family, get_submodule
from ..progress import CancelCheck, Progress
from .calibration import TokenSet, pad_batch


@dataclass
class HookStats:
    """Everything one hooked pass measured; plain Python data, safe to hand to the window."""

    n_layers: int
    bi: list[float]
    relative_magnitude: list[float]
    #: Last real token's hidden state entering each layer (index L: leaving the last), per sample, float32.
    last_token_states: Any = None  # torch.Tensor [L+1, samples, hidden] on CPU
    tokens: int = 0
    seconds: float = 0.0

    def angular(self, block: int) -> list[float | None]:
        """Mean angular distance between the input of layer l and the output of layer l+block-1."""
        import torch

        states = self.last_token_states
        out: list[float | None] = []
        for start in range(self.n_layers):
            end = start + block
            if states is None or end > self.n_layers:
                out.append(None)
                continue
            cos = torch.nn.functional.cosine_similarity(states[start].double(), states[end].double(), dim=-1)
            out.append(float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean()))
        return out


@dataclass
class LayerScores:
    """Scores of one metric, indexed by original 0-based layer; lower = removed first."""

    metric: str
    scores: list[float | None]
    tokens: int = 0
    seconds: float = 0.0
    block_size: int | None = None
    extra: dict[str, list[float | None]] = field(default_factory=dict)  # the other metrics of the same pass

    @property
    def scored_layers(self) -> int:
        """How many layers have a score (a pass cancelled one layer at a time leaves the later ones None)."""
        return sum(score is not None for score in self.scores)

    @property
    def known_layers(self) -> int:
        """How many layers a choice can rank: scored, and not NaN (a pass whose states overflowed). The most a
        plan can remove, where :attr:`scored_layers` counts what the pass measured."""
        return sum(is_known(score) for score in self.scores)


# ------------------------------------------------------------------------------------------------ batching


def iter_batches(token_set: TokenSet, batch_size: int, device: str) -> Any:
    """Right-padded batches of the scoring samples: (input_ids, attention_mask, last_index)."""
    import torch

    samples = token_set.samples
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        ids, mask = pad_batch(chunk, token_set.pad_id, device)
        last = torch.tensor([len(s) - 1 for s in chunk], dtype=torch.long, device=device)
        yield ids, mask, last


def _hidden(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


class _Accumulator:
    """Forward hooks on every decoder layer that fold each batch into running sums."""

    def __init__(self, layers: Sequence[Any], keep_last_token: bool) -> None:
        import torch

        self.n = len(layers)
        self.layers = layers
        self.keep_last_token = keep_last_token
        self.mask: Any = None  # [B, S] float, set per batch
        self.last: Any = None  # [B] index of the last real token
        self.cos_sum: Any = None
        self.rm_sum: Any = None
        self.tokens = 0
        self.states: list[list[Any]] = [[] for _ in range(self.n + 1)]
        self._torch = torch
        self._handles: list[Any] = []

    def __enter__(self) -> _Accumulator:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._make_hook(index), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, mask: Any, last: Any) -> None:
        self.select_batch(mask, last)
        self.tokens += int(mask.sum())

    def select_batch(self, mask: Any, last: Any) -> None:
        """Point the hooks at a batch without counting its tokens again (streamed scoring revisits batches)."""
        torch = self._torch
        if self.cos_sum is None:
            self.cos_sum = torch.zeros(self.n, dtype=torch.float64, device=mask.device)
            self.rm_sum = torch.zeros(self.n, dtype=torch.float64, device=mask.device)
        self.mask = mask.to(torch.float32)
        self.last = last

    def _make_hook(self, index: int) -> Callable[..., None]:
        torch = self._torch

        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            with torch.no_grad():
                x = _hidden(args, kwargs).float()
                y = _first(output).float()
                dot = (x * y).sum(-1)
                xx = (x * x).sum(-1)
                yy = (y * y).sum(-1)
                cos = (dot / (xx * yy).sqrt().clamp_min(1e-12)).clamp(-1.0, 1.0)
                # ||f(x)|| / ||x + f(x)|| with f(x) = y - x, from the same three reductions.
                rm = (xx - 2 * dot + yy).clamp_min(0).sqrt() / yy.sqrt().clamp_min(1e-12)
                self.cos_sum[index] += (cos * self.mask).sum(dtype=torch.float64)
                self.rm_sum[index] += (rm * self.mask).sum(dtype=torch.float64)
                if self.keep_last_token:  # stays on the device: a copy to the CPU here would sync every layer
                    rows = torch.arange(x.shape[0], device=x.device)
                    if index == 0:
                        self.states[0].append(x[rows, self.last])
                    self.states[index + 1].append(y[rows, self.last])

        return hook

    def partial_bi(self) -> list[float | None]:
        if not self.tokens:
            return [None] * self.n
        return [1.0 - v / self.tokens for v in self.cos_sum.tolist()]

    def stats(self, seconds: float) -> HookStats:
        torch = self._torch
        tokens = max(self.tokens, 1)
        states = None
        if self.keep_last_token and all(self.states):  # a pass cancelled part-way has no states for the rest
            states = torch.stack([torch.cat(s) for s in self.states]).cpu()
        return HookStats(
            n_layers=self.n,
            bi=[1.0 - v / tokens for v in self.cos_sum.tolist()],
            relative_magnitude=[v / tokens for v in self.rm_sum.tolist()],
            last_token_states=states,
            tokens=self.tokens,
            seconds=seconds,
        )


def measure_layers(
    model: Any,
    family: Family,
    token_set: TokenSet,
    batch_size: int = 4,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    keep_last_token: bool = True,
) -> HookStats:
    """One pass over the scoring samples with hooks on every decoder layer; the LM head is never run."""
    import torch

    layers = get_submodule(model, family.layers_path)
    device = next(model.parameters()).device
    total = len(token_set.samples)
    done = 0
    started = time.perf_counter()
    body = model.base_model
    if progress is not None:
        progress("scoring", 0, total, None)
    with _Accumulator(layers, keep_last_token) as acc, torch.inference_mode():
        for ids, mask, last in iter_batches(token_set, batch_size, str(device)):
            if cancel is not None and cancel():
                raise Cancelled(acc.stats(time.perf_counter() - started) if done else None)
            acc.start_batch(mask, last)
            try:
                body(input_ids=ids, attention_mask=mask, use_cache=False)
            except torch.OutOfMemoryError:
                raise _oom(device, batch_size, token_set.seq_len) from None
            done += ids.shape[0]
            partial = acc.partial_bi()
            if progress is not None:
                progress("scoring", done, total, partial)
            if not all_finite(partial):
                break  # every later batch would overflow too: the caller refuses now, not after the whole pass
        return acc.stats(time.perf_counter() - started)


def all_finite(values: Sequence[float | None]) -> bool:
    """Whether every measured value is a number: a float16 pass whose states overflowed (or weights holding NaN)
    gives NaN from the first batch on, and was said only after the whole pass (a big model's minutes)."""
    return all(v is None or math.isfinite(v) for v in values)


def _oom(device: Any, batch_size: int, seq_len: int) -> ResourceError:
    return ResourceError(
        f"Out of memory on {device} with batch size {batch_size} × {seq_len} tokens.", hint=Hint.SMALLER_BATCH
    )


# ------------------------------------------------------------------------------------ single-removal ppl


def _identity_hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
    """Make a decoder layer a no-op: its output is its input (the residual stream passes through)."""
    x = _hidden(args, kwargs)
    if isinstance(output, tuple):
        return (x, *output[1:])
    if isinstance(output, list):
        return [x, *output[1:]]
    return x


def removal_perplexity(
    model: Any,
    family: Family,
    token_set: TokenSet,
    batch_size: int = 4,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> LayerScores:
    """Exact perplexity of the calibration samples with each single layer skipped (paper, Figure 3)."""
    from .evaluation import perplexity_of

    layers = get_submodule(model, family.layers_path)
    n = len(layers)
    scores: list[float | None] = [None] * n
    started = time.perf_counter()
    tokens = 0
    if progress is not None:
        progress("scoring", 0, n, list(scores))
    for index, layer in enumerate(layers):
        handle = layer.register_forward_hook(_identity_hook, with_kwargs=True)
        try:
            result = perplexity_of(model, token_set.samples, token_set.pad_id, batch_size, cancel=cancel)
        except Cancelled:
            raise Cancelled(list(scores) if index else None) from None
        finally:
            handle.remove()
        scores[index] = result.perplexity
        tokens = result.tokens  # the tokens scored, each pass the same: the JSON said n_layers times as many
        if progress is not None:
            progress("scoring", index + 1, n, list(scores))
    return LayerScores("ppl", scores, tokens=tokens, seconds=time.perf_counter() - started)
