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

At no time is more than one decoder layer's weights in memory, plus the embedding rows of the tokens used, and
the head while a step computes logits (safetensors weights are mapped from the file: only what a step touches is
resident, and the head is dropped after each head step).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..measure.calibration import TokenSet
from ..measure.evaluation import PerplexityResult
from ..measure.scoring import HookStats
from ..model.families import Family, resolve_family
from ..model.layer_weights import (
    check_materialized,
    head_prefixes,
    layers_of,
    load_part,
    move_buffers,
    open_reader,
    release,
    trim_heap,
)
from ..model.skeleton import build_skeleton
from ..model.sources import ModelSource
from ..progress import CancelCheck, Progress, raise_if_cancelled
from . import ops
from .layerwise import LayerObserver, LayerStack

#: Layer reads whose seconds a streamed model keeps (the latest).
READS_KEPT = 64


class StreamedModel(LayerStack):
    """A model whose decoder layers are loaded one at a time; the weights outside them stay loaded.

    Use as a context manager (or call :meth:`close`) so the skeleton and its embeddings are freed.
    """

    def __init__(self, source: ModelSource, device: str = "cpu", dtype: str = "float32",
                 trust_remote_code: bool = False, cancel: CancelCheck | None = None) -> None:
        """``cancel`` is asked between the steps of opening (a Gemma 3 GGUF's took about 7 s on a 2-core CPU)."""
        from ..model.config import check_supported, read_config
        from ..model.devices import resolve_device, resolve_dtype

        super().__init__()
        #: The last :data:`READS_KEPT` layer reads' seconds: a generation step without the KV cache reads every layer
        #: again, which a pass over many tokens bears once (see :meth:`.engine.Engine.layer_read_seconds`).
        self.read_seconds: list[float] = []
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        check_supported(read_config(source), trust_remote_code)
        raise_if_cancelled(cancel)
        self.source = source
        self.model = build_skeleton(source, self.dtype, trust_remote_code)
        raise_if_cancelled(cancel)  # nothing of the skeleton is held yet but what the collector frees
        self.config = self.model.config.to_dict()
        self.family: Family = resolve_family(self.model, self.config)
        self.layers = layers_of(self.model, self.family)
        self.reader = open_reader(source, self.config.get("model_type"))
        if hasattr(self.reader, "bind"):
            self.reader.bind(self.model)
        self._head = head_prefixes(self.model)
        self._head_loaded = False
        #: Safetensors tensors are mapped from the file (see :meth:`SafetensorsReader.read`): loading is free and
        #: only the pages a step touches are resident, so the head is dropped after each head step (a large
        #: vocabulary's head weighs as much as several layers). GGUF tensors are dequantized copies: the head
        #: stays once loaded.
        self._drop_head = bool(getattr(self.reader, "mapped", False))
        move_buffers(self.model, self.device)
        self.prepare_embeddings()

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

    def prepare_embeddings(self) -> None:
        """The weights outside the decoder stack but the head (embeddings, final norm), when they are not there
        (a dropped tied head takes the input embeddings with it). Capturing touches only the embedding rows of
        the tokens used, so with a mapped checkpoint only those rows are resident."""
        embed = self.model.get_input_embeddings()
        if embed is not None and embed.weight.device.type != "meta":
            return
        load_part(self.model, self.reader.others(skip_prefixes=self._head), self.device, "the embeddings")
        self._tie()
        check_materialized(self.model.get_input_embeddings(), "the input embeddings")

    def release_head(self) -> None:
        """Drop the head after a head step (a tied head: the input embeddings too, loaded again on demand), and
        hand the step's vocabulary-sized logits back to the system (glibc would keep them in its heap)."""
        if not (self._drop_head and self._head_loaded):
            trim_heap()
            return
        head = self.model.get_output_embeddings()
        embed = self.model.get_input_embeddings()
        if head is not None:
            if embed is not None and head.weight is embed.weight:
                release(embed)
            release(head)
        self._head_loaded = False
        trim_heap()

    def load_head(self) -> None:
        if self._head_loaded:
            return
        self.prepare_embeddings()
        if self._head:
            load_part(self.model, self.reader.others(skip_prefixes=()), self.device, "the output head")
        head = self.model.get_output_embeddings()
        tied = getattr(self.model.config, "tie_word_embeddings", False)
        if not self._head or tied or (head is not None and head.weight.device.type == "meta"):
            # A tied checkpoint has no head of its own (loaded again after a drop: tie it again). Loading what lies
            # outside the layers replaced the embedding: a first head step left the head on the old copy, so a
            # fresh model's head names differed from one that had dropped and reloaded it, and eval --low-memory
            # found "another head" on a copy of the same model (no KL), with the embedding held twice.
            self._tie()
        if head is not None:
            check_materialized(head, "the output head")
        self._head_loaded = True

    # ------------------------------------------------------------------------------------------- layers

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[Any]:
        """Load decoder layer ``index`` from the checkpoint for the block, then free it (the seconds of each read and
        freeing are kept in :attr:`read_seconds`)."""
        layer = self.layers[index]
        started = time.perf_counter()
        load_part(self.model, self.reader.layer(index), self.device, f"decoder layer {index}")
        read = time.perf_counter() - started
        try:
            check_materialized(layer, f"decoder layer {index}")
            yield layer
        finally:
            started = time.perf_counter()
            release(layer)
            trim_heap()
            self.read_seconds.append(read + time.perf_counter() - started)  # its freeing too
            del self.read_seconds[:-READS_KEPT]

    def prepare_head(self) -> None:
        self.load_head()


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
    owned = model is None
    streamed = model if model is not None else StreamedModel(source, device, dtype, trust_remote_code)
    try:
        return ops.hooked_pass(streamed, token_set, batch_size, progress, cancel, keep_last_token, observers)
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
    owned = model is None
    streamed = model if model is not None else StreamedModel(source, device, dtype, trust_remote_code)
    try:
        return ops.perplexity(streamed, windows, pad_id, removed, batch_size, cancel=cancel, progress=progress)
    finally:
        if owned:
            streamed.close()
