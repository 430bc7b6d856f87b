"""Measure many pruned variants of one model on the same calibration samples, reusing every state it can.

A greedy layer search measures sets that differ from a *base* set (the layers chosen so far) by one layer. The
pruned model with set ``S`` runs exactly the same layers as the base model up to the first layer where the two
sets differ, so the hidden states entering that point are taken from a cache of the base model's states instead
of being recomputed: a candidate that removes a late layer costs the layers after it and the head, not the whole
model. Candidates measured together run layer-major (:meth:`CandidateRunner.measure`): each decoder layer is
opened once for all of them, which for the streamed backend means one read of each layer per greedy step.

The cache keeps the base model's states at every layer (or, when they would not fit
:data:`..defaults.CANDIDATE_CACHE_BUDGET`, at every k-th layer, starting from the nearest kept checkpoint);
:meth:`CandidateRunner.rebase` moves the base after each greedy step. The numbers are exactly those of a pass
from the first layer: each layer sees the same inputs and runs the same operations (tests compare them with
:func:`..backends.ops.perplexity`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from .. import defaults
from ..backends.layerwise import Batch, LayerStack, head_layers
from ..errors import Cancelled
from ..measure.evaluation import PerplexityResult, nll_of, picked_nll_sum
from ..progress import CancelCheck

log = logging.getLogger(__name__)

def head_stride(stack: LayerStack) -> int:
    """How many positions apart the search scores next tokens: 1 while the head costs no more than about four
    decoder layers, so that the head never dominates a candidate's cost (at most every 8th position)."""
    return int(min(8, max(1, math.ceil(head_layers(stack) / 4))))




@dataclass
class _Variant:
    removed: tuple[int, ...]
    start: int  # first layer index (original numbering) this variant runs from the cache
    batches: list[Batch]
    layers: list[int]  # the layers it still runs, ascending
    #: The states entering each checkpoint layer it ran, kept while measuring: when this set becomes the base
    #: (:meth:`CandidateRunner.rebase`), they are the cache's new entries, so the base is not run again.
    states: dict[int, list[Any]] | None = None


class CandidateRunner:
    """Calibration samples captured once, the base set's states cached, candidates measured from the cache."""

    def __init__(self, stack: LayerStack, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 4,
                 cancel: CancelCheck | None = None, cached: bool = True, budget: int = defaults.CANDIDATE_CACHE_BUDGET,
                 stride: int = 1, compute: Any = None) -> None:
        self.stack = stack
        #: The dtype the decoder layers compute in under autocast (None: the model's own, as bi+ runs; see
        #: ``benchmarks/bench_candidate_precision.py``); the head and the log-softmax stay in the model's dtype.
        self.compute = compute
        #: Every ``stride``-th next token is scored: the head is the costliest part of a candidate when the
        #: vocabulary is large (Gemma's 262k × 640 head weighs as much as 30 of its layers), and every candidate
        #: is scored on the same positions, so they stay comparable.
        self.stride = max(1, stride)
        self.cancel = cancel
        self.cached = cached
        self.n = stack.n_layers
        self.base: tuple[int, ...] = ()
        self.passes = 0
        self.tokens = 0
        self._budget = budget
        self._measured: dict[tuple[int, ...], _Variant] = {}  # the last measure's variants, by set
        # The samples are captured and the base's states cached at the first measurement (:meth:`_ready`): a
        # search whose every set an earlier one measured (:class:`.selection.SearchMemo`) ran a whole pass for none.
        self._to_capture: tuple[Sequence[Sequence[int]], int, int] | None = (sequences, pad_id, batch_size)
        self._cache: dict[int, list[Any]] = {}  # layer → states entering it under the base set

    def _ready(self) -> None:
        """Capture the samples and cache the base set's states, once."""
        if self._to_capture is None:
            return
        sequences, pad_id, batch_size = self._to_capture
        self.batches = self.stack.capture(sequences, pad_id, batch_size, self.cancel)
        self.inputs = [b.hidden for b in self.batches]  # the states entering layer 0
        per_layer = sum(int(b.hidden.numel()) * b.hidden.element_size() for b in self.batches)
        self._every = max(1, math.ceil(per_layer * self.n / self._budget)) if self.cached else self.n + 1
        if self.cached and self._every > 1:
            log.info("the candidate cache keeps every %d-th layer's states (%.0f MB a layer)", self._every,
                     per_layer / 1e6)
        self._per_layer = per_layer
        self._to_capture = None
        if self.cached:
            self._fill(0)

    @property
    def every(self) -> int:
        """Every how many layers the cache keeps the states (1: every layer, within the budget)."""
        self._ready()
        return self._every

    @property
    def cache(self) -> dict[int, list[Any]]:
        """The base set's states at the checkpoints (captured and run first where not yet)."""
        self._ready()
        return self._cache

    # --------------------------------------------------------------------------------------------- cache

    def _checkpoint(self, layer: int) -> bool:
        return layer % self.every == 0

    def _fill(self, start: int) -> None:
        """Cache the base set's states at the checkpoints from ``start`` on (the states before stay valid)."""
        for layer in [k for k in self.cache if k >= start]:
            del self.cache[layer]
        origin = self._origin(start)
        batches = self._batches_at(origin)
        kept = [i for i in range(origin, self.n) if i not in self.base]

        def keep(index: int, batch: Batch, inputs: Any) -> None:
            if index >= start and self._checkpoint(index):
                self.cache.setdefault(index, []).append(inputs)

        with self._computing():
            self.stack.run_layers(batches, kept, cancel=self.cancel, keep=keep)

    def _computing(self) -> AbstractContextManager[Any]:
        """Autocast to :attr:`compute` on the states' device (the weights' copies not cached: each is used once)."""
        if self.compute is None:
            return nullcontext()
        import torch

        return torch.autocast(self.inputs[0].device.type, dtype=self.compute, cache_enabled=False)

    def _origin(self, layer: int) -> int:
        """The last cached checkpoint at or before ``layer`` (0: the captured inputs)."""
        known = [k for k in self.cache if k <= layer]
        return max(known) if known else 0

    def _batches_at(self, layer: int) -> list[Batch]:
        states = self.cache.get(layer, self.inputs) if layer else self.inputs
        out = []
        for batch, hidden in zip(self.batches, states, strict=True):
            copy = batch.copy()
            copy.hidden = hidden
            out.append(copy)
        return out

    def rebase(self, removed: Sequence[int]) -> None:
        """Make ``removed`` the base set: the cache is refreshed from the first layer where it changed, from the
        states kept when that set was measured where there are some, else by running the new base from there."""
        new = tuple(sorted(set(removed)))
        if new == self.base:
            return
        changed = min(set(new) ^ set(self.base))
        self.base = new
        if not self.cached or self._to_capture is not None:  # the first measurement caches this base whole
            return
        kept = self._measured.get(new)
        self._measured.clear()
        if kept is None or kept.states is None or kept.start > changed:
            self._fill(changed)
            return
        for layer in [k for k in self.cache if k >= changed]:
            del self.cache[layer]
        self.cache.update({k: v for k, v in kept.states.items() if k >= changed})

    # ------------------------------------------------------------------------------------------- measure

    def _variant(self, removed: Sequence[int]) -> _Variant:
        key = tuple(sorted(set(removed)))
        if not self.cached:
            start = 0
        else:
            differ = set(key) ^ set(self.base)
            first = min(differ) if differ else self.n
            start = self._origin(first)
        layers = [i for i in range(start, self.n) if i not in key]
        return _Variant(key, start, self._batches_at(start), layers)

    def _positions(self, batch: Batch) -> Any:
        """Every ``stride``-th position of the batch whose next token is scored (each position's logits depend
        on its own final state alone, so the head runs on those only)."""
        import torch

        return torch.arange(self.stride - 1, batch.ids.shape[1] - 1, self.stride)

    def _nll(self, logits_of: Callable[[Batch, Any], Any], batch: Batch) -> tuple[float, int]:
        """Summed NLL and count of the scored next tokens of ``batch`` (every one when ``stride`` is 1); the
        log-softmax a few positions at a time either way (:func:`..measure.evaluation.picked_nll_sum`)."""
        if self.stride <= 1:
            logits = logits_of(batch, batch.hidden)
            return nll_of(logits, batch.ids.to(logits.device), batch.mask.to(logits.device))
        at = self._positions(batch)
        view = Batch(batch.ids[:, at], batch.mask[:, at], batch.last)
        logits = logits_of(view, batch.hidden[:, at.to(batch.hidden.device)])
        targets = batch.ids[:, at + 1].to(logits.device)
        keep = (batch.mask[:, at + 1] * batch.mask[:, at]).bool().to(logits.device)
        return picked_nll_sum(logits, targets, keep, every=True)

    def measure(self, sets: Sequence[Sequence[int]], after_each: Callable[[int], None] | None = None,
                during: Callable[[float], None] | None = None, keep_states: bool = True) -> list[PerplexityResult]:
        """Calibration perplexity of each pruned set, run together layer by layer (each layer opened once).
        ``after_each(number)`` follows each set's result; ``during(fraction)`` each layer of the sweep before them
        (the 30 single removals of a 30-layer model are one sweep: without it, a bar would stand still).
        ``keep_states``: keep each set's states, for :meth:`rebase` to one of them without running it again (a greedy
        step's few candidates); not for a sweep of every single removal, whose states (about layers² / 2 of them,
        1-2 GB for SmolLM2 at 16 × 128 tokens) were held to spare one rebase half a pass."""
        import time

        started = time.perf_counter()
        self._ready()
        variants = [self._variant(s) for s in sets]
        # Each variant's checkpoint states are kept while they fit the cache's budget beside the cache itself.
        keeping = keep_states and self.cached and self._per_layer * (len(self.cache) + sum(
            sum(1 for i in v.layers if self._checkpoint(i)) for v in variants)) <= self._budget
        self._measured = {v.removed: v for v in variants}
        for variant in variants:
            variant.states = {} if keeping else None

        def keeper(variant: _Variant) -> Callable[[int, Batch, Any], None] | None:
            states = variant.states
            if states is None:
                return None

            def keep(index: int, batch: Batch, inputs: Any) -> None:
                if self._checkpoint(index):
                    states.setdefault(index, []).append(inputs)

            return keep

        indices = sorted({i for v in variants for i in v.layers})
        for number, index in enumerate(indices, start=1):
            if self.cancel is not None and self.cancel():
                raise Cancelled()
            users = [v for v in variants if index in v.layers]
            # the layer opened (a streamed layer's weights read) before autocast begins
            with self.stack.open_layer(index) as layer, self._computing():
                for variant in users:
                    self.stack.run_layers(variant.batches, [index], cancel=self.cancel, opened=layer,
                                          keep=keeper(variant))
            if during is not None:
                during(number / len(indices))
        results = []
        with self.stack.head() as logits_of:
            for number, variant in enumerate(variants):
                total_nll, total_tokens = 0.0, 0
                for batch in variant.batches:
                    nll, count = self._nll(logits_of, batch)
                    total_nll += nll
                    total_tokens += count
                self.passes += 1
                self.tokens = total_tokens
                results.append(PerplexityResult.of(total_nll, total_tokens, time.perf_counter() - started))
                if after_each is not None:
                    after_each(number)
        return results
