"""Score and measure perplexity of a model bigger than memory, one decoder layer at a time.

Block Influence needs each layer's input and output only, so the calibration samples can go through the model
layer by layer (the "input capture" pattern of GPTQ-style quantizers):

1. the model skeleton is built without weights; only what runs before layer 0 (embeddings) is loaded;
2. one forward pass per batch with every decoder layer replaced by a recorder captures each layer's call
   arguments (masks and rotary embeddings differ per layer type in mixed sliding/full models, so they are
   captured per layer, never rebuilt) and stops after the last layer;
3. each layer in turn is loaded, runs every batch (moved to the device; hidden states live on the CPU), is
   measured by the very hooks of :func:`scoring.measure_layers`, and is freed; its outputs are the next layer's
   inputs.

Perplexity ends with the model's own head: the final hidden states are replayed through the model's forward
(decoder layers replaced by a replay), so final norm, LM head, logit soft-capping and the float32 log-softmax
of :func:`evaluation.perplexity_of` are the same code as in memory.

At no time is more than one decoder layer's weights in memory (plus embeddings, and the head for perplexity).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled
from ..measure.calibration import TokenSet, pad_batch
from ..measure.evaluation import PerplexityResult
from ..measure.scoring import CancelCheck, HookStats, Progress, _Accumulator, _first, _oom
from ..model.families import Family, layer_count, resolve_family
from ..model.layer_weights import (
    build_skeleton,
    check_materialized,
    head_prefixes,
    layers_of,
    load_part,
    move_buffers,
    open_reader,
    release,
    trim_heap,
)
from ..model.sources import ModelSource


class LayerObserver:
    """Folds its own sums during a streamed pass; every method is optional.

    ``enter_layer`` is called once the layer's weights are loaded (register hooks on its submodules there,
    e.g. ``layer.mlp``), ``batch`` after each batch went through it, ``exit_layer`` before it is freed.
    ``inputs``/``outputs`` are the layer's hidden states for the batch, on the device; ``mask`` is the batch's
    attention mask (1 = real token), ``kwargs`` the layer's other call arguments.
    """

    def enter_layer(self, index: int, layer: Any) -> None:
        pass

    def batch(self, index: int, layer: Any, inputs: Any, outputs: Any, kwargs: dict[str, Any], mask: Any) -> None:
        pass

    def exit_layer(self, index: int, layer: Any) -> None:
        pass


@dataclass
class _Batch:
    """One batch of samples: its hidden states between layers (CPU) and each layer's captured call arguments."""

    ids: Any
    mask: Any
    last: Any
    hidden: Any = None
    calls: list[tuple[tuple, dict[str, Any]]] = field(default_factory=list)  # per layer: (args after hidden, kwargs)


_UNKNOWN = object()


class _StopForward(Exception):
    """Raised by the last layer's recorder: nothing after the decoder stack needs to run while capturing."""


def _move(value: Any, device: Any, memo: dict[int, Any]) -> Any:
    """``value`` with every tensor inside moved to ``device``; a tensor shared by several layers moves once."""
    import torch

    if isinstance(value, torch.Tensor):
        key = id(value)
        if key not in memo:
            memo[key] = value.to(device)
        return memo[key]
    if isinstance(value, tuple):
        return tuple(_move(v, device, memo) for v in value)
    if isinstance(value, list):
        return [_move(v, device, memo) for v in value]
    if isinstance(value, dict):
        return {k: _move(v, device, memo) for k, v in value.items()}
    return value


class StreamedModel:
    """A model whose decoder layers are loaded one at a time; the weights outside them stay loaded.

    Use as a context manager (or call :meth:`close`) so the skeleton and its embeddings are freed.
    """

    def __init__(self, source: ModelSource, device: str = "cpu", dtype: str = "float32",
                 trust_remote_code: bool = False) -> None:
        from ..model.config import check_supported, read_config
        from ..model.devices import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        check_supported(read_config(source), trust_remote_code)
        self.source = source
        self.model = build_skeleton(source, self.dtype, trust_remote_code)
        self.config = self.model.config.to_dict()
        self.family: Family = resolve_family(self.model, self.config)
        self.n_layers = layer_count(self.config, self.family)
        self.layers = layers_of(self.model, self.family)
        self.reader = open_reader(source, self.config.get("model_type"))
        if hasattr(self.reader, "bind"):
            self.reader.bind(self.model)
        self._head = head_prefixes(self.model)
        self._head_loaded = False
        #: What a decoder layer returns: None (a tensor) or the length of its tuple; _UNKNOWN until seen.
        self._output_kind: Any = _UNKNOWN
        move_buffers(self.model, self.device)
        load_part(self.model, self.reader.others(skip_prefixes=self._head), self.device, "the embeddings")
        self._tie()
        check_materialized(self.model.get_input_embeddings(), "the input embeddings")

    # ----------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> StreamedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        release(self.model)

    def _tie(self) -> None:
        """Loading replaced the embedding Parameter; a tied head must point at the new one again."""
        if getattr(self.model.config, "tie_word_embeddings", False) or not self._head:
            head = self.model.get_output_embeddings()
            embed = self.model.get_input_embeddings()
            if head is not None and embed is not None and head.weight.shape == embed.weight.shape:
                head.weight = embed.weight

    def load_head(self) -> None:
        if self._head_loaded:
            return
        if self._head:
            load_part(self.model, self.reader.others(skip_prefixes=()), self.device, "the output head")
        else:
            self._tie()
        head = self.model.get_output_embeddings()
        if head is not None:
            check_materialized(head, "the output head")
        self._head_loaded = True

    # ------------------------------------------------------------------------------------------- capture

    def capture(self, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                cancel: CancelCheck | None = None) -> list[_Batch]:
        """Embed every batch and record each decoder layer's call arguments (one cheap forward per batch)."""
        import torch

        batches: list[_Batch] = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            ids, mask = pad_batch(chunk, pad_id, "cpu")
            last = torch.tensor([len(s) - 1 for s in chunk], dtype=torch.long)
            batches.append(_Batch(ids, mask, last))
        n = len(self.layers)
        current: list[_Batch] = []

        def recorder(index: int) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                if args:
                    hidden, rest = args[0], tuple(args[1:])
                else:
                    kwargs = dict(kwargs)
                    hidden, rest = kwargs.pop("hidden_states"), ()
                batch = current[0]
                if index == 0:
                    batch.hidden = hidden.detach().to("cpu")
                batch.calls.append((rest, kwargs))
                if index == n - 1:
                    raise _StopForward()
                return hidden if shape[0] is None else (hidden, *([None] * (shape[0] - 1)))

            return forward

        # What a recorder returns must look like a layer's output to the model's loop: a tensor (transformers 5)
        # or a tuple whose first item is the hidden states (Falcon and older code). Found on the first batch.
        shape: list[int | None] = [self._output_kind]
        for index, layer in enumerate(self.layers):
            layer.forward = recorder(index)
        try:
            with torch.inference_mode():
                for batch in batches:
                    if cancel is not None and cancel():
                        raise Cancelled()
                    current[:] = [batch]
                    candidates = [shape[0]] if shape[0] is not _UNKNOWN else [None, 1, 2, 3]
                    for attempt, kind in enumerate(candidates):
                        shape[0] = kind
                        batch.calls = []
                        try:
                            self.model.base_model(input_ids=batch.ids.to(self.device),
                                                  attention_mask=batch.mask.to(self.device), use_cache=False)
                        except _StopForward:
                            break
                        except (IndexError, TypeError, ValueError, AttributeError):
                            if attempt == len(candidates) - 1:
                                raise
                    self._output_kind = shape[0]
                    if self.device != "cpu":  # the captured arguments wait on the CPU, not on the GPU
                        memo: dict[int, Any] = {}
                        batch.calls = [_move(call, "cpu", memo) for call in batch.calls]
        finally:
            for layer in self.layers:
                del layer.forward
        return batches

    # ------------------------------------------------------------------------------------ layer by layer

    def run_layers(
        self,
        batches: list[_Batch],
        indices: Sequence[int],
        observers: Sequence[Any] = (),
        after_layer: Callable[[int, int], None] | None = None,
        cancel: CancelCheck | None = None,
        before_batch: Callable[[int, _Batch], None] | None = None,
    ) -> None:
        """Load each layer of ``indices`` in turn, run every batch through it, free it.

        ``batches[k].hidden`` holds the hidden states leaving the last layer run. ``after_layer(done, index)``
        is called after each layer; ``before_batch(index, batch)`` before each batch enters a layer.
        """
        import torch

        for done, index in enumerate(indices, start=1):
            if cancel is not None and cancel():
                raise Cancelled()
            layer = self.layers[index]
            load_part(self.model, self.reader.layer(index), self.device, f"decoder layer {index}")
            check_materialized(layer, f"decoder layer {index}")
            try:
                for observer in observers:
                    observer.enter_layer(index, layer)
                with torch.inference_mode():
                    for batch in batches:
                        if cancel is not None and cancel():
                            raise Cancelled()
                        if before_batch is not None:
                            before_batch(index, batch)
                        memo: dict[int, Any] = {}
                        rest, kwargs = _move(batch.calls[index], self.device, memo)
                        x = batch.hidden.to(self.device)
                        try:
                            output = layer(x, *rest, **kwargs)
                        except torch.OutOfMemoryError:
                            raise _oom(self.device, batch.ids.shape[0], batch.ids.shape[1]) from None
                        y = _first(output)
                        self._output_kind = len(output) if isinstance(output, (tuple, list)) else None
                        for observer in observers:
                            observer.batch(index, layer, x, y, kwargs, batch.mask.to(self.device))
                        batch.hidden = y.to("cpu")
                        del x, y, output
                for observer in observers:
                    observer.exit_layer(index, layer)
            finally:
                release(layer)
                trim_heap()
            if after_layer is not None:
                after_layer(done, index)

    # ------------------------------------------------------------------------------------------- replay

    def logits_pass(self, batches: list[_Batch]) -> Callable[[], None]:
        """Make the model's forward return the logits of ``batches``' final hidden states, batch after batch.

        Every decoder layer becomes a replay: the first returns the stored hidden states of the next batch,
        the others pass them on. Returns the function that undoes it.
        """
        pending = iter(batches)
        kind = self._output_kind

        def wrap(hidden: Any) -> Any:
            return hidden if kind is None else (hidden, *([None] * (kind - 1)))

        def replay(*args: Any, **kwargs: Any) -> Any:
            batch = next(pending)
            return wrap(batch.hidden.to(self.device))

        def identity(*args: Any, **kwargs: Any) -> Any:
            return wrap(args[0] if args else kwargs["hidden_states"])

        for index, layer in enumerate(self.layers):
            layer.forward = replay if index == 0 else identity

        def undo() -> None:
            for layer in self.layers:
                del layer.forward

        return undo


# ---------------------------------------------------------------------------------------------- front doors


def streamed_measure_layers(
    source: ModelSource,
    token_set: TokenSet,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 4,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    keep_last_token: bool = True,
    observers: Sequence[LayerObserver] = (),
    trust_remote_code: bool = False,
    model: StreamedModel | None = None,
) -> HookStats:
    """:func:`scoring.measure_layers` with one decoder layer in memory at a time; same numbers, same stats.

    Progress is ``("scoring", layers_done, n_layers, partial_bi)``: the chart fills layer by layer.
    """
    started = time.perf_counter()
    owned = model is None
    streamed = model if model is not None else StreamedModel(source, device, dtype, trust_remote_code)
    try:
        n = streamed.n_layers
        if progress is not None:
            progress("scoring", 0, n, [None] * n)
        batches = streamed.capture(token_set.samples, token_set.pad_id, batch_size, cancel)
        with _Accumulator(streamed.layers, keep_last_token) as acc:

            def before_batch(index: int, batch: _Batch) -> None:
                mask, last = batch.mask.to(streamed.device), batch.last.to(streamed.device)
                if index == 0:
                    acc.start_batch(mask, last)  # counts the tokens once
                else:
                    acc.select_batch(mask, last)

            def after_layer(done: int, index: int) -> None:
                if progress is not None:
                    partial = acc.partial_bi()
                    progress("scoring", done, n, [partial[i] if i < done else None for i in range(n)])

            streamed.run_layers(batches, range(n), observers, after_layer, cancel, before_batch)
            return acc.stats(time.perf_counter() - started)
    finally:
        if owned:
            streamed.close()


def streamed_perplexity(
    source: ModelSource,
    windows: Sequence[Sequence[int]],
    pad_id: int,
    removed: Sequence[int] = (),
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 4,
    cancel: CancelCheck | None = None,
    progress: Callable[[int, int], None] | None = None,
    trust_remote_code: bool = False,
    model: StreamedModel | None = None,
) -> PerplexityResult:
    """:func:`evaluation.perplexity_of` of the model with the layers ``removed`` skipped, one layer at a time.

    Same windows, padding and float32 log-softmax as in memory. ``progress(done, total)`` counts layers, then
    the head pass.
    """
    from ..measure.evaluation import perplexity_of

    if not windows:
        raise ValueError("no evaluation windows")
    started = time.perf_counter()
    owned = model is None
    streamed = model if model is not None else StreamedModel(source, device, dtype, trust_remote_code)
    try:
        gone = set(removed)
        kept = [i for i in range(streamed.n_layers) if i not in gone]
        total = len(kept) + 1
        if progress is not None:
            progress(0, total)
        batches = streamed.capture(windows, pad_id, batch_size, cancel)
        after = (lambda done, index: progress(done, total)) if progress is not None else None
        streamed.run_layers(batches, kept, (), after, cancel)
        streamed.load_head()
        undo = streamed.logits_pass(batches)
        try:
            result = perplexity_of(streamed.model, windows, pad_id, batch_size, cancel=cancel)
        finally:
            undo()
        if progress is not None:
            progress(total, total)
        return PerplexityResult(result.perplexity, result.nll, result.tokens, time.perf_counter() - started)
    finally:
        if owned:
            streamed.close()
