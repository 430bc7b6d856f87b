"""A model run one decoder layer at a time over a set of batches: the machinery both backends share.

Every step of a job is written once against :class:`LayerStack`: the hooked statistics pass, the perplexity and
fidelity of a pruned (and repaired) view, the repair's statistics and the measured layer choice. Where the layers
come from is the backend's business (:meth:`LayerStack.open_layer`): the in-memory stack has them all resident,
the streamed one (:mod:`.streamed`) loads each from the checkpoint and frees it afterwards. Both run the very
same operations in the very same order, so they give the same numbers.

The pattern is the "input capture" of GPTQ-style quantizers:

1. :meth:`~LayerStack.capture` runs the model's own forward once per batch with every decoder layer replaced by
   a recorder: it keeps the hidden states entering layer 0 and each layer's call arguments (masks and rotary
   embeddings differ per layer type in mixed sliding/full models, so they are captured per layer, never
   rebuilt), and stops after the last layer.
2. :meth:`~LayerStack.run_layers` runs every batch through the given layers in turn; ``batch.hidden`` holds the
   states leaving the last layer run. A layer that is skipped (a pruned view) is simply not in the list: the
   layers after it get their own captured arguments, exactly as the pruned model would give them.
3. :meth:`~LayerStack.logits` replays stored final states through the model's own forward (every decoder layer
   replaced by a replay), so the final norm, the head and any logit soft-capping are the model's own code.

Hidden states between layers live on the stack's ``state_device``: the CPU for the streamed stack, the model's
device in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled
from ..measure.calibration import pad_batch
from ..measure.scoring import _first, _oom
from ..model.families import Family, get_submodule
from ..progress import CancelCheck


class LayerObserver:
    """Folds its own sums during a layer-by-layer pass; every method is optional.

    ``enter_layer`` is called once the layer's weights are there (register hooks on its submodules then, e.g.
    ``layer.mlp``), ``batch`` after each batch went through it, ``exit_layer`` before it is freed.
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
class Batch:
    """One batch of sequences: its hidden states between layers and each layer's captured call arguments."""

    ids: Any
    mask: Any
    last: Any
    hidden: Any = None
    calls: list[tuple[tuple, dict[str, Any]]] = field(default_factory=list)  # per layer: (args after hidden, kwargs)

    def copy(self) -> Batch:
        """The same batch with its own ``hidden`` slot (the calls are shared: they are never changed)."""
        return Batch(self.ids, self.mask, self.last, self.hidden, self.calls)


_UNKNOWN = object()


class _StopForward(Exception):
    """Raised by the last layer's recorder: nothing after the decoder stack needs to run while capturing."""


def move(value: Any, device: Any, memo: dict[int, Any]) -> Any:
    """``value`` with every tensor inside moved to ``device``; a tensor shared by several layers moves once."""
    import torch

    if isinstance(value, torch.Tensor):
        key = id(value)
        if key not in memo:
            memo[key] = value.to(device)
        return memo[key]
    if isinstance(value, tuple):
        return tuple(move(v, device, memo) for v in value)
    if isinstance(value, list):
        return [move(v, device, memo) for v in value]
    if isinstance(value, dict):
        return {k: move(v, device, memo) for k, v in value.items()}
    return value


class LayerStack:
    """A model whose decoder layers run one at a time over captured batches. Subclasses say where layers come
    from (:meth:`open_layer`) and make sure the head is there before :meth:`logits` (:meth:`prepare_head`)."""

    model: Any
    family: Family
    layers: Any
    device: str
    #: Where hidden states wait between layers.
    state_device: str = "cpu"

    def __init__(self) -> None:
        #: What a decoder layer returns: None (a tensor) or the length of its tuple; _UNKNOWN until seen.
        self.output_kind: Any = _UNKNOWN

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # -------------------------------------------------------------------------------------------- layers

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[Any]:
        """Layer ``index`` with its weights, for the block (the streamed stack loads it and frees it after)."""
        yield self.layers[index]

    def prepare_head(self) -> None:
        """Make the final norm and the head usable by :meth:`logits`."""

    def release_head(self) -> None:
        """The head step is over: the streamed stack may drop the head until the next one."""

    def prepare_embeddings(self) -> None:
        """Make the input embeddings usable by :meth:`capture`."""

    @contextlib.contextmanager
    def weights_for(self, index: int, layer: Any, weights: dict[str, Any] | None) -> Iterator[None]:
        """The layer with the ``weights`` (names with ORIGINAL layer indices) that belong to it, for the block."""
        prefix = f"{self.family.layers_path}.{index}."
        mine = {name[len(prefix):]: value for name, value in (weights or {}).items() if name.startswith(prefix)}
        if not mine:
            yield
            return
        from ..model.weights_view import weights_view

        with weights_view(layer, mine):
            yield

    # ------------------------------------------------------------------------------------------- capture

    def batches(self, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> list[Batch]:
        import torch

        out = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            ids, mask = pad_batch(chunk, pad_id, "cpu")
            last = torch.tensor([len(s) - 1 for s in chunk], dtype=torch.long)
            out.append(Batch(ids, mask, last))
        return out

    def capture(self, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                cancel: CancelCheck | None = None) -> list[Batch]:
        """Embed every batch and record each decoder layer's call arguments (one cheap forward per batch)."""
        import torch

        batches = self.batches(sequences, pad_id, batch_size)
        n = len(self.layers)
        current: list[Batch] = []
        self.prepare_embeddings()

        def recorder(index: int) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                if args:
                    hidden, rest = args[0], tuple(args[1:])
                else:
                    kwargs = dict(kwargs)
                    hidden, rest = kwargs.pop("hidden_states"), ()
                batch = current[0]
                if index == 0:
                    batch.hidden = hidden.detach().to(self.state_device)
                batch.calls.append((rest, kwargs))
                if index == n - 1:
                    raise _StopForward()
                return hidden if shape[0] is None else (hidden, *([None] * (shape[0] - 1)))

            return forward

        # What a recorder returns must look like a layer's output to the model's loop: a tensor (transformers 5)
        # or a tuple whose first item is the hidden states (Falcon and older code). Found on the first batch.
        shape: list[Any] = [self.output_kind]
        with _replaced_forwards(self.layers, [recorder(i) for i in range(n)]), torch.inference_mode():
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
                self.output_kind = shape[0]
                if self.state_device != self.device:  # the captured arguments wait where the states wait
                    memo: dict[int, Any] = {}
                    batch.calls = [move(call, self.state_device, memo) for call in batch.calls]
        return batches

    # ------------------------------------------------------------------------------------ layer by layer

    def run_layers(
        self,
        batches: Sequence[Batch],
        indices: Sequence[int],
        observers: Sequence[Any] = (),
        after_layer: Callable[[int, int], None] | None = None,
        cancel: CancelCheck | None = None,
        before_batch: Callable[[int, Batch], None] | None = None,
        weights: dict[str, Any] | None = None,
        keep: Callable[[int, Batch, Any], None] | None = None,
        opened: Any = None,
    ) -> None:
        """Run every batch through each layer of ``indices`` in turn (``batch.hidden``: the states leaving it).

        ``weights`` replace parameters (names with ORIGINAL layer indices) while their layer runs.
        ``after_layer(done, index)`` is called after each layer, ``before_batch(index, batch)`` before each batch
        enters a layer, ``keep(index, batch, inputs)`` with the states entering it (to cache them). ``opened``:
        the one layer of ``indices``, already opened by the caller (several variants share one opening).
        """
        import torch

        for done, index in enumerate(indices, start=1):
            if cancel is not None and cancel():
                raise Cancelled()
            opening = contextlib.nullcontext(opened) if opened is not None else self.open_layer(index)
            with opening as layer, self.weights_for(index, layer, weights):
                for observer in observers:
                    observer.enter_layer(index, layer)
                with torch.inference_mode():
                    for batch in batches:
                        if cancel is not None and cancel():
                            raise Cancelled()
                        if before_batch is not None:
                            before_batch(index, batch)
                        if keep is not None:
                            keep(index, batch, batch.hidden)
                        memo: dict[int, Any] = {}
                        rest, kwargs = move(batch.calls[index], self.device, memo)
                        x = batch.hidden.to(self.device)
                        try:
                            output = layer(x, *rest, **kwargs)
                        except torch.OutOfMemoryError:
                            raise _oom(self.device, batch.ids.shape[0], batch.ids.shape[1]) from None
                        y = _first(output)
                        self.output_kind = len(output) if isinstance(output, (tuple, list)) else None
                        for observer in observers:
                            observer.batch(index, layer, x, y, kwargs, batch.mask.to(self.device))
                        batch.hidden = y.to(self.state_device)
                        del x, y, output
                for observer in observers:
                    observer.exit_layer(index, layer)
            if after_layer is not None:
                after_layer(done, index)

    # ------------------------------------------------------------------------------------------- replay

    @contextlib.contextmanager
    def head(self) -> Iterator[Callable[[Batch, Any], Any]]:
        """A function ``logits(batch, hidden)``: the model's final norm and head on ``hidden``, nothing else.

        Inside the block every decoder layer is a replay (the first returns the given states, the others pass
        them on), so the model's own forward applies whatever it applies after its decoder stack.
        """
        import torch

        self.prepare_head()
        kind = None if self.output_kind is _UNKNOWN else self.output_kind
        state: dict[str, Any] = {}

        def wrap(hidden: Any) -> Any:
            return hidden if kind is None else (hidden, *([None] * (kind - 1)))

        def replay(*args: Any, **kwargs: Any) -> Any:
            return wrap(state["hidden"])

        def identity(*args: Any, **kwargs: Any) -> Any:
            return wrap(args[0] if args else kwargs["hidden_states"])

        def logits(batch: Batch, hidden: Any) -> Any:
            state["hidden"] = hidden.to(self.device)
            try:
                return self.model(input_ids=batch.ids.to(self.device), attention_mask=batch.mask.to(self.device),
                                  use_cache=False).logits
            finally:
                state.clear()

        forwards = [replay] + [identity] * (len(self.layers) - 1)
        try:
            with _replaced_forwards(self.layers, forwards), torch.inference_mode():
                yield logits
        finally:
            self.release_head()


@contextlib.contextmanager
def _replaced_forwards(layers: Any, forwards: Sequence[Callable[..., Any]]) -> Iterator[None]:
    saved = [layer.__dict__.get("forward") for layer in layers]
    for layer, forward in zip(layers, forwards, strict=True):
        layer.forward = forward
    try:
        yield
    finally:
        for layer, previous in zip(layers, saved, strict=True):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous


class InMemoryStack(LayerStack):
    """A loaded model's layers, all resident; states stay on the model's device."""

    def __init__(self, model: Any, family: Family) -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.layers = get_submodule(model, family.layers_path)
        self.device = str(next(model.parameters()).device)
        self.state_device = self.device


def head_layers(stack: LayerStack) -> float:
    """The LM head's cost in decoder layers: vocabulary × hidden (the embedding's size) against a layer's
    parameters. The search's head stride and the perplexity bars' head steps both come from it."""
    embed = stack.model.get_input_embeddings()
    layer_params = sum(p.numel() for p in stack.layers[0].parameters())
    return (embed.weight.numel() if embed is not None else 0) / max(layer_params, 1)
