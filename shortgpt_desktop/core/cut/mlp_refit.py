"""Refit of the kept MLP before each cut, on cached activations: the linear repair carried further.

The linear repair (:mod:`.repair`) changes the MLP output projection of the kept layer before each run of removed
layers (and, where it is refitted whole, of the kept layer after it), in closed form. This step then refits the
whole MLP of the kept layer before each run (gate, up and down projections, their biases; through the norm after it
on Gemma 2/3 and OLMo 2, whose own weights stay) so that the layer's output comes as close as it can to the
state the original model has entering the layer after the run::

    min ‖R + post(mlp(a)) − Y‖²

``a`` is what enters the MLP and ``R`` the rest of the layer's output, both from the model pruned and repaired up
to that layer (runs go first to last, as in the linear repair, so each fit corrects what the model will really
see); ``Y`` is the original's state. Adam trains a float32 copy of the MLP on those rows, never the model: 10% of
the tokens are held out, and the step with the lowest held-out error is kept (the linear repair's weights are
step 0, so a refit never ends worse on them than the repair it starts from). The pruned model keeps its stock
architecture and parameter count: only existing weights change.

Measured (CPU, 2 threads; calibration 128 × 512 tokens of WikiText-2 validation; held-out 32 × 256 tokens of
WikiText-2 test; ``python benchmarks/bench_quality.py --heal-steps 0``):

- SmolLM2-135M-Instruct, layers 3-5, 7, 16, 17, 25, 26 removed (8 of 30): linear repair perplexity 58.36, mean KL
  0.632, same top token 56.6% → with the refit 52.50, 0.495, 61.3%, for 530 s more (600 steps on 67,710 tokens
  per cut, four cuts). The greedy answer to a chat question stayed fluent but lost a fact the linear repair
  kept, and the check's quiz counts 3 of the original's 17 known facts kept against the linear repair's 5.
  Since the linear repair refits the whole projection (:mod:`.repair`), the refit starts from it: 54.43 / 0.537 /
  59.6% → 52.03 / 0.476 / 62.4%, quiz 5 and 5 (held-out error of the state after each cut 4-23% lower); from both
  sides of each cut refitted, 51.31 / 0.493 / 61.7% → 50.30 / 0.453 / 63.1%, quiz 5 and 6 (4-10% lower).
- Gemma 3 270M (a family it was not tuned on), layers 8, 9, 13, 14 removed, calibrated on that prose and judged on
  8 × 512 tokens of Python source (another domain): linear repair 38.72, 1.715, 45.0% → with the refit 33.79,
  1.581, 49.2%, for 444 s more.

It costs a pass of both streams over the calibration tokens plus about ``EPOCHS`` passes of the MLP alone over
them per run, so it is a choice (``--repair refit``), not the default: see the README's figures.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.layerwise import LayerObserver
from ..measure.calibration import TokenSet
from ..model.families import Family, get_submodule
from ..progress import CancelCheck, Progress, raise_if_cancelled
from .repair import RepairResult, RunRepair, held_out_split, sequential_layer_runs, walk_sequential

log = logging.getLogger(__name__)

#: Tokens whose rows (what enters the MLP, and the target) are kept per run, and the bytes they may take; past
#: either, tokens evenly spread over the calibration set are kept.
MAX_REFIT_TOKENS = 131_072
MAX_REFIT_BYTES = 1024**3
#: Adam's rate, passes over the kept rows, rows per step and steps between checks on the held-out rows. Measured
#: on SmolLM2-135M (8 of 30 removed, figures above): lr 5e-4 for 10 epochs 52.39 / KL 0.496; 1e-4 for 3 epochs
#: 56.69 / 0.605.
LEARNING_RATE = 5e-4
EPOCHS = 10
BATCH_TOKENS = 1024
CHECK_EVERY = 50
#: Steps at least, for a small calibration set (the best held-out step guards against fitting it too closely).
MIN_STEPS = 200

#: One Adam step of the MLP refit over a row, in forward passes of the MLP over it (forward and backward are about
#: three, the update and the held-out checks the rest): SmolLM2-135M measured 2.4-2.9 (8 x 128 tokens, one run of 3
#: removed layers and three runs of 6; 32 x 256 tokens, one run), where 4 was counted and the refit was said at
#: twice its time (a reviewer's walkthrough: 74.3 s said, 36.3 s taken).
REFIT_STEP_COST = 2.75

NOTE_NO_MLP_MODULE = ("The MLP refit was not done: this family's MLP is not one module, so the linear repair alone is "
                      "saved.")
STAGE = "refit"


@dataclass
class RunRefit:
    """What the refit did for one run of removed layers ``[start, end)``."""

    start: int
    end: int
    layer: int  # original index of the kept layer whose MLP was refitted
    #: ‖R + post(mlp(a)) − Y‖ / ‖Y − R‖ on the held-out rows: with the linear repair alone, after the refit.
    residual_before: float = 0.0
    residual_after: float = 0.0
    steps: int = 0  # Adam steps taken (the kept weights are those of the best held-out check among them)
    tokens: int = 0
    #: False when no step did better on the held-out rows, or when the chat guard dropped this refit
    #: (:mod:`.chat_guard`): the linear repair alone stays. ``residual_after < residual_before`` tells which.
    kept: bool = True


@dataclass
class RefitResult:
    """Plain data: per-run outcome and the new tensors (ORIGINAL layer indices), the linear repair's included."""

    runs: list[RunRefit]
    tensors: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    capped: bool = False  # fewer tokens were kept than the calibration set has (memory bound)
    chat: Any = None  # chat_guard.GuardFigures, for a chat model


def mlp_path(family: Family) -> str | None:
    """The MLP module of a decoder layer (``mlp``), from its output projection; None when there is none."""
    if family.mlp_out is None or "." not in family.mlp_out:
        return None
    return family.mlp_out.rsplit(".", 1)[0]


def training_steps(tokens: int) -> int:
    """Adam steps a run's refit takes on ``tokens`` kept rows (a tenth of them held out)."""
    train = tokens - max(1, tokens // 10) if tokens > 10 else tokens
    return max(EPOCHS * math.ceil(train / min(BATCH_TOKENS, max(train, 1))), MIN_STEPS)


def trained_rows(tokens: int) -> int:
    """Rows a run's refit reads in its training steps, counted in whole batches as its progress clock counts them:
    at least :data:`MIN_STEPS` batches, so a small calibration set reads its rows many more times than
    :data:`EPOCHS` (the estimate's measure of the refit's work)."""
    return training_steps(tokens) * min(BATCH_TOKENS, max(tokens, 1))


def token_cap(hidden: int) -> int:
    """Rows kept per run: two float32 vectors of ``hidden`` each, within :data:`MAX_REFIT_BYTES`."""
    return max(BATCH_TOKENS, min(MAX_REFIT_TOKENS, MAX_REFIT_BYTES // (8 * hidden)))


class _MlpRows(LayerObserver):
    """On a run's patched layer: per batch, what enters the MLP (``a``) and ``D = Y − R`` once ``Y`` is known."""

    def __init__(self, family: Family, run: RunRepair, share: float = 1.0) -> None:
        self.family, self.run = family, run
        self.mlp = mlp_path(family)
        self.share = share  # of the real tokens, evenly spread, whose rows are kept (the memory bound: token_cap)
        self._counted = 0
        self.rows: list[tuple[Any, Any, Any]] = []  # (a, R, keep) per batch: a and R of the kept tokens, on the CPU
        self._seen: dict[str, Any] = {}
        self._handles: list[Any] = []

    def enter_layer(self, index: int, layer: Any) -> None:
        if index != self.run.patched_layer:
            return
        seen = self._seen
        mlp = get_submodule(layer, self.mlp)  # type: ignore[arg-type]

        def on_input(module: Any, args: tuple, kwargs: dict) -> None:
            seen["a"] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()

        def on_output(module: Any, args: tuple, output: Any) -> None:
            seen["added"] = output.detach().clone()  # Falcon adds to it in place afterwards

        self._handles.append(mlp.register_forward_pre_hook(on_input, with_kwargs=True))
        added = get_submodule(layer, self.family.mlp_out_norm) if self.run.norm is not None else mlp
        self._handles.append(added.register_forward_hook(on_output))

    def batch(self, index: int, layer: Any, inputs: Any, outputs: Any, kwargs: dict[str, Any], mask: Any) -> None:
        if index != self.run.patched_layer:
            return
        import torch

        keep = mask.bool()
        if self.share < 1.0:  # token i is kept when ⌊(i + 1)·share⌋ passes a whole number
            real = keep.flatten().nonzero().squeeze(1)
            i = torch.arange(self._counted, self._counted + real.numel(), device=real.device, dtype=torch.float64)
            picked = real[torch.floor((i + 1) * self.share) > torch.floor(i * self.share)]
            self._counted += real.numel()
            keep = torch.zeros_like(keep.flatten()).index_fill_(0, picked, True).view_as(keep)
        r = outputs[keep].float() - self._seen["added"].reshape(outputs.shape)[keep].float()
        a = self._seen["a"].reshape(*outputs.shape[:-1], -1)[keep]
        self.rows.append((a.to("cpu", torch.float32), r.to("cpu"), keep.cpu()))
        self._seen.clear()

    def exit_layer(self, index: int, layer: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self, targets: Sequence[Any]) -> tuple[Any, Any]:
        """``a`` and ``D = Y − R`` of the kept tokens (``targets``: the original's states ``Y``, per batch)."""
        import torch

        a_rows, d_rows = [], []
        for (a, r, keep), y in zip(self.rows, targets, strict=True):
            a_rows.append(a)
            d_rows.append(y.to("cpu", torch.float32)[keep] - r)
        self.rows.clear()
        return torch.cat(a_rows), torch.cat(d_rows)


def _train(mlp: Any, post: Any, a: Any, d: Any, device: Any, seed: int,
           tick: Callable[[], None] = lambda: None) -> tuple[float, float, int]:
    """Adam on ``mlp``'s parameters (in place, float32) to bring ``post(mlp(a))`` to ``d``; the best held-out
    step is left in ``mlp``. ``tick()`` after each step (it may raise Cancelled). Returns the held-out relative
    residual before and after, and the steps taken."""
    import torch

    generator, held, train = held_out_split(a.shape[0], seed)
    a_held, d_held = a[held].to(device), d[held].to(device)
    held_norm = float((d_held**2).sum().clamp_min(1e-30))
    params = list(mlp.parameters())

    def held_error() -> float:
        with torch.no_grad():
            return float(((post(mlp(a_held)) - d_held) ** 2).sum()) / held_norm

    before = best = held_error()
    best_state = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    batch = min(BATCH_TOKENS, train.numel())
    per_epoch = math.ceil(train.numel() / batch)
    steps = training_steps(a.shape[0])
    shuffled = train
    for step in range(steps):
        if step % per_epoch == 0:
            shuffled = train[torch.randperm(train.numel(), generator=generator)]
        rows = shuffled[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        x, target = a[rows].to(device), d[rows].to(device)
        loss = ((post(mlp(x)) - target) ** 2).sum() / (target**2).sum().clamp_min(1e-30)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % CHECK_EVERY == 0 or step == steps - 1:
            now = held_error()
            if now < best:
                best, best_state = now, [p.detach().clone() for p in params]
        tick()
    with torch.no_grad():
        for p, value in zip(params, best_state, strict=True):
            p.copy_(value)
    return math.sqrt(before), math.sqrt(best), steps


class _Clock:
    """``progress("refit", layer runs' worth done, in all)``: the training's work counted in layer runs too,
    never past the total; ``cancel`` polled at each report."""

    def __init__(self, progress: Progress | None, cancel: CancelCheck | None, total: float) -> None:
        self.progress, self.cancel, self.total, self.done = progress, cancel, max(math.ceil(total), 1), 0.0
        if progress is not None:
            progress(STAGE, 0, self.total, None)

    def add(self, work: float) -> None:
        raise_if_cancelled(self.cancel)
        before = int(self.done)
        self.done = min(self.done + work, float(self.total))
        if self.progress is not None and int(self.done) > before:
            self.progress(STAGE, int(self.done), self.total, None)

    def finish(self) -> None:
        """The stage's last report, ``(total, total)``: the counted work is fractional and adds up to less than the
        whole total (rounded up), and a training that stops early does fewer steps than planned."""
        if self.progress is not None and int(self.done) < self.total:
            self.progress(STAGE, self.total, self.total, None)
        self.done = float(self.total)


def fit_mlp_refit(
    stack: Any,
    family: Family,
    token_set: TokenSet,
    repair: RepairResult,
    batch_size: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> RefitResult:
    """Refit the MLP of each layer the linear ``repair`` patched, first run to last, starting from its weights.

    ``stack`` (a :class:`..backends.layerwise.LayerStack`) runs the layers, in memory or streamed; the model is
    the same when this returns. Progress stage ``"refit"`` counts layer runs, the training's included (see
    :class:`_Clock`).
    """
    import torch

    started = time.perf_counter()
    result = RefitResult([], dict(repair.tensors))
    module = mlp_path(family)
    to_fit = [r for r in repair.runs if r.repaired] if module is not None else []
    if module is None and any(r.repaired for r in repair.runs):
        result.notes.append(NOTE_NO_MLP_MODULE)
    if not to_fit:
        result.seconds = time.perf_counter() - started
        return result
    kept = [i for i in range(repair.n_layers) if i not in set(repair.removed)]
    full = stack.capture(token_set.samples, token_set.pad_id, batch_size, cancel)
    real_tokens = sum(len(s) for s in token_set.samples)
    kept_tokens = min(real_tokens, token_cap(full[0].hidden.shape[-1]))
    if kept_tokens < real_tokens:
        result.capped = True
        log.info("MLP refit: %d of %d tokens kept per run, evenly spread (the memory bound)", kept_tokens,
                 real_tokens)
    # Progress in layer runs (every token through one layer); a training step is a batch of rows through one MLP
    # forward, backward and Adam's update, REFIT_STEP_COST passes of two thirds of a layer.
    steps = training_steps(kept_tokens)
    step_work = REFIT_STEP_COST * 2 / 3 * min(BATCH_TOKENS, real_tokens) / real_tokens
    clock = _Clock(progress, cancel,
                   sequential_layer_runs(to_fit, kept, repair.removed[0]) + len(to_fit) * steps * step_work)

    def finish(run: RunRepair, observer: _MlpRows, targets: list[Any]) -> None:
        layer_index = run.patched_layer
        assert layer_index is not None
        with torch.inference_mode(False), torch.enable_grad():  # the rows were taken in inference mode
            with stack.open_layer(layer_index) as layer, stack.weights_for(layer_index, layer, result.tensors):
                device = next(layer.parameters()).device
                original = get_submodule(layer, module)  # type: ignore[arg-type]
                dtypes = {name: p.dtype for name, p in original.named_parameters()}
                mlp = copy.deepcopy(original).to(device, torch.float32).train(False)
                post = (copy.deepcopy(get_submodule(layer, family.mlp_out_norm)).to(device, torch.float32)
                        if run.norm is not None else torch.nn.Identity()).train(False)
            a, d = observer.take(targets)
            for p in post.parameters():
                p.requires_grad_(False)
            for p in mlp.parameters():
                p.requires_grad_(True)
            before, after, taken = _train(mlp, post, a, d, device, seed, lambda: clock.add(step_work))
        # No step did better on the held-out rows: the linear repair stays as it is. Its weights were written
        # anyway, and a GGUF then re-quantized the layer's unchanged gate and up projections at Q8_0.
        improved = after < before
        result.runs.append(RunRefit(run.start, run.end, layer_index, before, after, taken, a.shape[0], kept=improved))
        if not improved:
            return
        prefix = f"{family.layers_path}.{layer_index}.{module}."
        for name, p in mlp.named_parameters():
            result.tensors[prefix + name] = p.detach().to("cpu", dtypes[name]).contiguous()

    share = kept_tokens / real_tokens
    walk_sequential(stack, full, to_fit, kept, repair.removed[0], result.tensors,
                    lambda run: _MlpRows(family, run, share), finish, lambda *_: clock.add(1), cancel)
    clock.finish()
    result.seconds = time.perf_counter() - started
    return result
