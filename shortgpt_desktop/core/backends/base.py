"""How the opened model runs: the whole model in memory, or one decoder layer at a time.

The engine picks a backend once per opened model and settings (:func:`open_backend`) and asks it for every step
of a job; it never asks which one it holds. Both run the layer-by-layer steps through the same code
(:mod:`.ops`, :mod:`..cut.candidates`, :mod:`..cut.repair`) on their :class:`~.layerwise.LayerStack`, so they give
the same scores, choice, repair and perplexities. What one of them cannot do is said before a job starts
(:meth:`Backend.refusal`), never skipped in silence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import Hint, UserError
from ..measure.calibration import TokenSet
from ..measure.scoring import HookStats, measure_layers
from ..model.loading import LoadedModel
from ..model.sources import ModelSource
from ..progress import CancelCheck, Progress, raise_if_cancelled
from . import ops
from .layerwise import InMemoryStack, LayerStack

log = logging.getLogger(__name__)

MODES = ("memory", "streamed")


#: ``on_token(done, total)``: generation's progress, in new tokens.
TokenProgress = Callable[[int, int], None]


class Backend:
    """The steps a job needs from the model; see the module docstring."""

    mode: str
    loaded: LoadedModel
    stack: LayerStack
    #: Layer-by-layer steps keep every sample's states: in memory they stay on the model's device.
    whole_model: bool

    def hooked_pass(self, tokens: TokenSet, batch_size: int, progress: Progress | None,
                    cancel: CancelCheck | None) -> HookStats:
        raise NotImplementedError

    def refusal(self, *, metric: Any = None, heal_steps: int = 0, output_format: str | None = None,
                asked: bool = True) -> UserError | None:
        """Why this backend cannot run a step of a job with these settings (None: it can), before it starts.
        ``asked``: the user chose this way of running (False: it was chosen for them, for want of memory)."""
        return self.refusal_for(self.loaded.source, metric=metric, heal_steps=heal_steps, output_format=output_format,
                                asked=asked)

    @classmethod
    def refusal_for(cls, source: ModelSource, *, metric: Any = None, heal_steps: int = 0,
                    output_format: str | None = None, asked: bool = True) -> UserError | None:
        """:meth:`refusal` for a model not loaded yet: what the mode cannot do is known from the source alone."""
        return None

    def generate(self, prompt: str, removed: Sequence[int], weights: dict[str, Any], max_new_tokens: int,
                 chat: bool, after_token: Callable[[int], None] | None = None,
                 cancel: CancelCheck | None = None) -> str:
        """The greedy continuation of ``prompt`` by the original (``removed`` empty) or the pruned and repaired
        model; ``after_token(written)`` follows each new token, and ``cancel`` stops it between tokens or layers."""
        raise NotImplementedError

    def generate_both(self, prompt: str, removed: Sequence[int], weights: dict[str, Any], max_new_tokens: int,
                      chat: bool, on_token: TokenProgress | None = None,
                      cancel: CancelCheck | None = None) -> tuple[str, str]:
        """The original's and the pruned (and repaired) model's continuations of ``prompt``, the original's first.
        ``on_token(done, total)`` follows each new token of either, counted over both, and may raise to stop them
        (the check's bar stood at 0 of 2 for both, and Cancel waited for the end of 64 tokens each)."""
        total = 2 * self.tokens_to_generate(max_new_tokens)

        def counted(offset: int) -> Callable[[int], None] | None:
            return None if on_token is None else lambda written: on_token(offset + written, total)

        before = self.generate(prompt, (), {}, max_new_tokens, chat, counted(0), cancel)
        return before, self.generate(prompt, removed, weights, max_new_tokens, chat, counted(total // 2), cancel)

    def tokens_to_generate(self, max_new_tokens: int) -> int:
        """How many new tokens a continuation asked for ``max_new_tokens`` runs at most."""
        return max_new_tokens

    def layer_read_seconds(self) -> float:
        """Seconds one decoder layer takes to read from the checkpoint, as timed so far (0.0: every layer is loaded
        once and for all)."""
        return 0.0

    def close(self) -> None:
        """Free what the backend holds."""


class InMemory(Backend):
    """Every weight loaded: scoring by one forward pass per batch, generation with the KV cache, healing."""

    mode = "memory"
    whole_model = True

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.stack = InMemoryStack(loaded.model, loaded.family)

    def hooked_pass(self, tokens: TokenSet, batch_size: int, progress: Progress | None,
                    cancel: CancelCheck | None) -> HookStats:
        return measure_layers(self.loaded.model, self.loaded.family, tokens, batch_size, progress, cancel)

    def generate(self, prompt: str, removed: Sequence[int], weights: dict[str, Any], max_new_tokens: int,
                 chat: bool, after_token: Callable[[int], None] | None = None,
                 cancel: CancelCheck | None = None) -> str:
        from ..pipeline import generate

        def each(written: int) -> None:
            raise_if_cancelled(cancel)
            if after_token is not None:
                after_token(written)

        return generate(self.loaded, prompt, removed, max_new_tokens, chat, weights, each)


class Streamed(Backend):
    """One decoder layer's weights at a time (plus the embeddings, and the head when a step needs it)."""

    mode = "streamed"
    whole_model = False
    #: Tokens a streamed generation adds: each one runs every layer again (no KV cache across loads).
    MAX_NEW_TOKENS = 8

    def __init__(self, source: ModelSource, device: str, dtype: str, trust_remote_code: bool,
                 cancel: CancelCheck | None = None) -> None:
        from ..model import gguf_parse_once
        from ..model.loading import load_tokenizer
        from .streamed import StreamedModel

        # the skeleton, the weight reader and the tokenizer share one parse; ``cancel`` is asked between them
        with gguf_parse_once.gguf_parsed_once(cancel):
            self.stack = streamed = StreamedModel(source, device, dtype, trust_remote_code, cancel)
            try:
                raise_if_cancelled(cancel)
                tokenizer = load_tokenizer(source, trust_remote_code)
                raise_if_cancelled(cancel)
            except BaseException:
                streamed.close()
                raise
        self.loaded = LoadedModel(streamed.model, tokenizer, streamed.family, streamed.config, source,
                                  streamed.device, streamed.dtype)
        log.info("low-memory mode: %s runs one layer at a time", source.display_name)

    def hooked_pass(self, tokens: TokenSet, batch_size: int, progress: Progress | None,
                    cancel: CancelCheck | None) -> HookStats:
        return ops.hooked_pass(self.stack, tokens, batch_size, progress, cancel)

    @classmethod
    def refusal_for(cls, source: ModelSource, *, metric: Any = None, heal_steps: int = 0,
                    output_format: str | None = None, asked: bool = True) -> UserError | None:
        # A mode the user never chose is not named as theirs, nor is leaving it out offered: the model did not fit.
        hint = Hint.LOW_MEMORY_METRIC if asked else None
        if metric is not None and metric.needs_text and not metric.hooked:
            where = ("in low-memory mode" if asked
                     else "this model does not fit in memory, so it runs one layer at a time:")
            return UserError(f"{metric.label} needs the whole model in memory; {where} choose Block Influence (bi+ or "
                             "bi), Relative Magnitude or Angular distance.", hint=hint)
        if heal_steps > 0:
            held = ("which low-memory mode cannot hold" if asked
                    else "and this model does not fit in memory (it runs one layer at a time)")
            return UserError(f"Healing trains the whole model at once, {held}; turn healing off (the repair still "
                             "runs).", hint=hint)
        if output_format == "safetensors" and source.gguf_file:
            where = ("In low-memory mode" if asked
                     else "This model does not fit in memory, so it runs one layer at a time, and then")
            return UserError(f"{where} a GGUF model is saved as GGUF (its float copy would need the whole model in "
                             "memory).")
        return None

    def generate(self, prompt: str, removed: Sequence[int], weights: dict[str, Any], max_new_tokens: int,
                 chat: bool, after_token: Callable[[int], None] | None = None,
                 cancel: CancelCheck | None = None) -> str:
        return ops.generate(self.stack, self.loaded.tokenizer, prompt, removed, weights,
                            self.tokens_to_generate(max_new_tokens), chat, after_token, cancel)

    def generate_both(self, prompt: str, removed: Sequence[int], weights: dict[str, Any], max_new_tokens: int,
                      chat: bool, on_token: TokenProgress | None = None,
                      cancel: CancelCheck | None = None) -> tuple[str, str]:
        """Both continuations in one sweep per token: each layer is read once for the two models, so each step
        writes a token of each (counted as two); ``cancel`` is asked before each layer is read."""
        total = 2 * self.tokens_to_generate(max_new_tokens)
        after_token = None if on_token is None else (lambda written: on_token(2 * written, total))
        before, after = ops.generate_variants(self.stack, self.loaded.tokenizer, prompt, [((), {}), (removed, weights)],
                                              self.tokens_to_generate(max_new_tokens), chat, after_token, cancel)
        return before, after

    def tokens_to_generate(self, max_new_tokens: int) -> int:
        return min(max_new_tokens, self.MAX_NEW_TOKENS)

    def layer_read_seconds(self) -> float:
        """The median of the layer reads (and freeings) timed on this model so far (0.0 before any)."""
        import statistics

        reads = self.stack.read_seconds  # type: ignore[attr-defined]
        return statistics.median(reads) if reads else 0.0

    def close(self) -> None:
        self.stack.close()  # type: ignore[attr-defined]


def backend_class(mode: str) -> type[Backend]:
    """The backend ``mode`` names (see :data:`MODES`)."""
    return Streamed if mode == "streamed" else InMemory


def open_backend(mode: str, source: ModelSource, device: str, dtype: str, trust_remote_code: bool,
                 cancel: CancelCheck | None = None) -> Backend:
    """Load the model the way ``mode`` says (see :data:`MODES`); ``cancel`` stops the load part-way
    (:class:`~..errors.Cancelled`)."""
    if mode == "streamed":
        return Streamed(source, device, dtype, trust_remote_code, cancel)
    from ..model.loading import load_model

    return InMemory(load_model(source, device, dtype, trust_remote_code, cancel))
