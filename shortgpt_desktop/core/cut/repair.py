"""Training-free repair of a pruned model, folded into the weights it keeps (the idea of ReplaceMe,
Shopkhoev et al. 2025, arXiv 2505.02819, carried to the whole MLP output projection).

For each contiguous run of removed layers ``[s, e)`` the kept layer ``s-1`` now feeds layer ``e`` directly.
Its output is ``R + M``: ``M`` what its MLP adds to the residual stream (the output of the MLP's output
projection), ``R`` everything else. On the calibration samples we fit, in closed form and float64, the linear
map ``T`` that makes ``R + M T`` closest to ``Y``, the hidden state the full model has entering layer ``e``::

    T = argmin ‖M T − (Y − R)‖² + λ‖T − I‖²  =  (MᵀM + λI)⁻¹ (Mᵀ(Y − R) + λI),   λ = ridge · trace(MᵀM) / d

and fold it into the output projection (``W ← Tᵀ W``, ``b ← Tᵀ b``), so the repaired model has exactly the
architecture and parameter count of the plainly pruned one. ``MᵀM``, ``Mᵀ(Y − R)`` and ``‖Y − R‖²`` are
running sums over the non-padding tokens; no batch's activations outlive it.

**The whole projection** (``fit="projection"``, the default): ``M = h W`` is linear in ``h``, what enters the
projection (the MLP's intermediate activations, ``k`` wide), so the projection itself can be refitted in the same
closed form, every map ``W T`` above being one of its refits::

    W' = argmin ‖h W' − (Y − R)‖² + λ‖W' − W‖²  =  (hᵀh + λI)⁻¹ (hᵀ(Y − R) + λW),   λ = ridge · trace(hᵀh) / k

(a bias is fitted with it, as the weight of a column of ones in ``h``, so that the map's ``Tᵀb`` is within reach
too). The sums are ``k × k`` (1536² for SmolLM2-135M), still no layer run more, but about ``(k/d)²`` times the
map's arithmetic (seven times here); a projection wider than :data:`..defaults.MAX_PROJECTION_INPUTS` gets the
map. Measured (``python benchmarks/bench_ridge.py --model SmolLM2-135M-Instruct.Q4_1.gguf --remove
3,4,5,7,16,17,25,26 --ridges auto --fits map,projection``; the default's cut, each ridge chosen per run as
below; prose = 32 × 512 tokens of WikiText-2 test, code = Python's own sources, a domain the calibration never
saw; perplexity / mean KL / same top):

- the app's 128 × 512 prose tokens and the chat answers: the map 41.99 / 0.661 / 58.2% on prose, 35.54 / 1.607 /
  43.6% on code, quiz 5 of 17; the projection **38.19 / 0.555 / 61.3%**, **34.18 / 1.566 / 43.9%**, 5 of 17
  (full model 24.94 and 7.08; plain removal 87.50 and 29.29). Fitted in 114.5 s after the map's 244.8 s, which
  had run the original's states for both (shared, :class:`OriginalStates`).
- the quick preset's 32 × 256 (test windows 32 × 256): the map 66.01 / 0.712 / 54.3% and 45.87 / 1.583 / 40.3%,
  quiz 4; the projection 63.22 / 0.658 / 55.2% and 43.24 / 1.516 / 40.2%, quiz 5.

Nothing was tuned on these: the ridge grid and the held-out rule are the map's. Through a norm (below) the map
stays: a norm after the projection is not linear in ``h``. So it does where there are too few samples to choose the
ridge (fewer than 20, a chat model's own answers counted): the projection has ``k/d`` times the map's parameters,
and it is never fitted at a ridge no held-out sample judged.

Families that normalise the MLP output before the residual add (Gemma 2/3, OLMo 2: ``M = norm(z)``, ``z`` the
projection's output) would undo such a map. There the map is fitted *through* the norm: ``T`` minimises
``‖norm(z T) − (Y − R)‖²`` by 200 Adam steps on 2048-row batches on the activations of the calibration tokens kept in
memory (at most :data:`MAX_NORM_TOKENS`), starting from ``T = I`` (plain pruning) and keeping the step with the
lowest error on a tenth of the tokens held out of the fit. The norm's own weights stay: ``T`` is folded into the
projection exactly as above.

Runs are fitted first to last (``order="sequential"``): run k's ``R`` and ``M`` come from the model with every
earlier removed layer gone and every earlier run already repaired, so each fit corrects what the model will
really see. ``order="independent"`` fits every run from the full model in one pass (cheaper, and worse on
SmolLM2-135M: see the tests' figures).

**Both sides of the cut** (``both_sides``): the kept layer *after* each run is refitted too, once the run's own fit
is in, to bring the pruned model's state leaving it to the original's (the same closed form, its own ridge chosen
on held-out samples, so it stays as it is where no refit does better there). By default (``both_sides=None``) it is
done where the run's projection is refitted whole, and so is the layer after's: measured with
``python benchmarks/bench_ridge.py --model SmolLM2-135M-Instruct.Q4_1.gguf --remove 3,4,5,7,16,17,25,26 --ridges
auto --fits projection --sides one,both`` (prose / code as above; perplexity / mean KL / same top):

- the app's 128 × 512: one side 38.19 / 0.555 / 61.3% and 34.18 / 1.566 / 43.9%; **both sides 36.06 / 0.506 /
  63.5%** and **33.18 / 1.539 / 44.6%**; quiz 5 of 17 for both; fitted in 166.5 s, after the one-sided fit's
  179.0 s, which had run the original's states for both (the same sums again for the three layers after runs).
- the quick 32 × 256: one side 63.22 / 0.658 / 55.2% and 43.24 / 1.516 / 40.2%; **both sides 58.74 / 0.599 /
  57.0%** and **37.91 / 1.408 / 42.5%**, better on code than no repair (39.12 / 1.468 / 41.5%), which no
  one-sided fit was; quiz 5 of 17 for both.

Where a map is fitted instead, the layer after is not: a map after each run, at the fixed ridge, lowered SmolLM2's
prose perplexity 59.90 → 57.47 (KL 0.654 → 0.621, 128 × 512 tokens, 32 × 256 test tokens), but through Gemma 3
270M's norm, calibrated on prose and judged on Python code, it raised them, 59.71 → 71.24 and 1.887 → 2.081: a
second map that no held-out sample judged fits the calibration domain more closely and carries less to another.
The kept layer's attention output projection was tried as more room too (no new parameters): one map over
``[A M]`` (``A`` what the attention adds) fitted in closed form, ``A``'s part folded into ``o_proj``, then ``M``
measured again with the new attention in and ``T`` fitted on it as above. It made things worse at every ridge
(SmolLM2, the default's cut 3–5, 7, 16, 17, 25, 26, 16 × 256 calibration tokens with the original's chat answers,
32 × 256 test tokens: linear repair 73.05 / KL 0.806; with the attention map at ridge 0.01 92.05 / 1.026, 0.3
80.43 / 0.900, 3 74.49 / 0.826; on Python code 59.28 → 126.88 at 0.01), and folding both parts of the one fit at
once gave 280.88: a new attention output moves the MLP's input, so a map fitted as if ``M`` stayed is wrong. Not
kept.
More calibration tokens help the plain repair on SmolLM2 (same cut): 32 × 256 tokens 67.02, 128 × 256 62.32,
128 × 512 (the app's default) 59.90.
The ridge (``python benchmarks/bench_ridge.py``; SmolLM2, the default's cut, 128 × 512 prose tokens with the
original's chat answers): 0.01 is the best fixed ridge on held-out prose (41.93 on 32 × 512 test tokens; 0.1 42.44,
0.3 43.73), but on Python code every ridge is worse than no repair (29.29; 0.01 35.18, 0.1 31.56, 0.3 30.13). With
fewer tokens the best fixed ridge moves up (16 × 256: 0.1, prose 70.20 against 73.05; 4 × 64: 0.01 worse than no
repair on prose). So the ridge is chosen per run (``ridge=None``, the default): each of :data:`RIDGE_CHOICES`, and
the identity, fitted without every :data:`HELD_OUT_EVERY`-th sample and judged on those samples, the best fitted
again on every sample. At 128 × 512 it chose 0.003, 0.03, 0.01, 0.03 (prose 41.99, code 35.54: 0.01 within
noise); at the quick preset's 32 × 256 (test 32 × 256) 0.01, 0.3, 0.1, 0.3, and beat both fixed ridges tried:
prose 66.01 against 67.43 at 0.01 and 66.35 at 0.1, code 45.87 against 54.01 and 46.01, quiz 4 of 17 against
2 and 3. Held-out samples of the calibration text cannot see another domain: on code, no repair still wins.

The model is left unchanged: :func:`apply_repair` or
:func:`repaired_view` put the new weights in.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ...format import layer_span
from .. import defaults
from ..backends.layerwise import LayerObserver
from ..measure.calibration import TokenSet
from ..model.families import Family, get_submodule, refits_whole
from ..model.weights_view import weights_view
from ..progress import CancelCheck, Progress
from .surgery import pruned_view

log = logging.getLogger(__name__)

ORDERS = ("sequential", "independent")
#: What a run's fit changes: a map ``T`` folded into the output projection, or the whole projection refitted
#: (see the module docstring); the default is the projection, where its input is at most
#: :data:`..defaults.MAX_PROJECTION_INPUTS` wide.
FITS = ("map", "projection")

NOTE_FIRST_LAYER = "the run starts at layer 0, so no kept layer comes before it to refit"
NOTE_MOE_LAYER = "layer {layer}'s MLP is a mixture of experts, with no single output projection"
NOTE_POST_LN = "this model normalises after the residual add (post-LN), so a folded map would be undone"


#: The fixed ridge of a fit (``ridge=RIDGE``), and those a fit chooses from (``ridge=None``): each is fitted without
#: every :data:`HELD_OUT_EVERY`-th calibration sample and judged on those samples' residual, beside the identity
#: (the run left as plain pruning); the best is fitted again on every sample. The sums are d × d (k × k for a whole
#: projection), so the choice costs a second set of sums and a few solves, no layer run.
RIDGE = 1e-2
RIDGE_CHOICES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
HELD_OUT_EVERY = 10
#: Fewer held-out samples than this (fewer than 20 calibration samples) judge too little: the fixed ridge is used.
MIN_HELD_OUT_SAMPLES = 2
#: Calibration tokens whose activations a fit through a norm keeps in memory (two float32 rows each).
MAX_NORM_TOKENS = 16_384
#: Adam steps of a fit through a norm, and their learning rate (the map starts at the identity).
NORM_FIT_STEPS = 200
NORM_FIT_LR = 1e-3


@dataclass
class RunRepair:
    """One contiguous run of removed layers ``[start, end)`` and what the repair did for it."""

    start: int
    end: int
    patched_layer: int | None = None  # original index of the kept layer whose MLP output projection changed
    parameter: str | None = None  # the changed weight's name, with the original layer index
    norm: str | None = None  # the norm after the projection that the map is fitted through (Gemma 2/3, OLMo 2)
    note: str = ""  # why the run was not repaired (empty when it was); the front ends say "not repaired"
    #: ‖R + M T − Y‖ / ‖Y − R‖ on the calibration tokens, before (T = I, plain pruning) and after the fit.
    residual_before: float | None = None
    residual_after: float | None = None
    #: The ridge the map was fitted with (``inf``: the identity won on the held-out samples; None: not a ridge
    #: fit, e.g. through a norm), and that choice's relative residual on the held-out samples.
    ridge: float | None = None
    held_out_residual: float | None = None
    #: What the fit changed (:data:`FITS`): "map", ``T`` folded into the projection (always so through a norm),
    #: or "projection", the whole projection refitted; and how wide the projection's input is.
    fit: str = "map"
    inputs: int | None = None

    @property
    def repaired(self) -> bool:
        return self.parameter is not None and self.residual_after is not None


@dataclass
class RepairResult:
    """Plain data: per-run outcome and the new tensors keyed by parameter name with ORIGINAL layer indices."""

    n_layers: int
    removed: list[int]
    runs: list[RunRepair]
    tensors: dict[str, Any] = field(default_factory=dict)  # name → CPU tensor in the model's dtype
    order: str = "sequential"
    ridge: float | None = None  # None: chosen per run (see RunRepair.ridge)
    corrections: list[RunRepair] = field(default_factory=list)  # the kept layers after runs, when both sides
    tokens: int = 0
    seconds: float = 0.0

    @property
    def notes(self) -> list[str]:
        return [f"{layer_span(r.start, r.end - 1)} not repaired: {r.note}" for r in self.runs if r.note]


def contiguous_runs(removed: Sequence[int]) -> list[tuple[int, int]]:
    """``[3, 4, 7]`` → ``[(3, 5), (7, 8)]`` (half-open ranges)."""
    runs: list[tuple[int, int]] = []
    for index in sorted(set(removed)):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


# ---------------------------------------------------------------------------------------- what to patch


def _is_conv1d(module: Any) -> bool:
    """GPT-2's Conv1D stores its weight as [in, out] (the transpose of nn.Linear's)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def input_width(proj: Any) -> int:
    """How many inputs a projection takes (nn.Linear's weight is [out, in], Conv1D's [in, out])."""
    return int(proj.weight.shape[0] if _is_conv1d(proj) else proj.weight.shape[1])


def can_choose_ridge(samples: int) -> bool:
    """Enough samples to hold :data:`MIN_HELD_OUT_SAMPLES` out (every :data:`HELD_OUT_EVERY`-th) and judge on them."""
    return samples >= MIN_HELD_OUT_SAMPLES * HELD_OUT_EVERY


def plan_runs(model: Any, family: Family, removed: Sequence[int]) -> list[RunRepair]:
    """The runs of ``removed`` and, for each, the projection to patch or the reason it cannot be repaired."""

    layers = get_submodule(model, family.layers_path)
    out: list[RunRepair] = []
    for start, end in contiguous_runs(removed):
        run = RunRepair(start, end)
        out.append(run)
        if start == 0 and family.mlp_out is not None:
            run.note = NOTE_FIRST_LAYER
            continue
        _patch(model, family, layers, run, start - 1)
    return out


def plan_corrections(model: Any, family: Family, removed: Sequence[int], runs: Sequence[RunRepair]) -> list[RunRepair]:
    """The kept layer AFTER each run, patched to match the original's state leaving it (the other side of the
    cut), unless that layer is already patched for the next run or the run reaches the model's end."""
    layers = get_submodule(model, family.layers_path)
    n = len(layers)
    patched = {r.patched_layer for r in runs if r.parameter is not None}
    out = []
    for run in runs:
        after = run.end
        if after >= n or after in patched or after in set(removed) or run.parameter is None:
            continue
        correction = RunRepair(after + 1, after + 1)
        if _patch(model, family, layers, correction, after):
            out.append(correction)
            patched.add(after)
    return out


def _patch(model: Any, family: Family, layers: Any, run: RunRepair, layer: int) -> bool:
    """Point ``run`` at ``layer``'s MLP output projection, or say in ``run.note`` why it cannot be."""
    import torch.nn as nn

    if family.mlp_out is None:
        run.note = family.repair_note or "this family's MLP output projection is not known"
        return False
    if family.name == "opt" and getattr(model.config, "do_layer_norm_before", True) is False:
        run.note = NOTE_POST_LN
        return False
    try:
        proj = get_submodule(layers[layer], family.mlp_out)
    except AttributeError:
        run.note = NOTE_MOE_LAYER.format(layer=layer)
        return False
    weight = getattr(proj, "weight", None)
    if not (isinstance(proj, nn.Linear) or _is_conv1d(proj)) or weight is None or weight.dim() != 2:
        run.note = f"layer {layer}'s MLP output is not a plain linear projection"
        return False
    if family.mlp_out_norm is not None:
        try:
            get_submodule(layers[layer], family.mlp_out_norm)
        except AttributeError:
            run.note = f"layer {layer} has no {family.mlp_out_norm} to fit through"
            return False
        run.norm = f"{family.layers_path}.{layer}.{family.mlp_out_norm}"
    run.patched_layer = layer
    run.parameter = f"{family.layers_path}.{layer}.{family.mlp_out}.weight"
    run.inputs = input_width(proj)
    return True


# ------------------------------------------------------------------------------------------- statistics


class _Stats:
    """Running float64 sums MᵀM, MᵀD and ‖D‖² (D = Y − R) over the non-padding tokens."""

    def __init__(self) -> None:
        self.mtm: Any = None
        self.mtd: Any = None
        self.dtd = 0.0
        self.tokens = 0
        self.held: _Stats | None = None  # the held-out samples' own sums, where a ridge is to be chosen
        #: What the ridge pulls the fit toward and what "before" means: None, the identity map; else the
        #: projection's own weight as ``[inputs, outputs]`` (a fit of the whole projection, ``M`` its inputs).
        self.anchor: Any = None

    def add(self, m: Any, r: Any, y: Any, keep: Any) -> None:
        import torch

        device = m.device if m.device.type == "cuda" else torch.device("cpu")  # float64 is not everywhere
        m = m[keep].to(device, torch.float64)
        d = (y[keep].to(device, torch.float64) - r[keep].to(device, torch.float64))
        if self.mtm is None:
            self.mtm = torch.zeros(m.shape[1], m.shape[1], dtype=torch.float64, device=device)
            self.mtd = torch.zeros(m.shape[1], d.shape[1], dtype=torch.float64, device=device)
        self.mtm += m.T @ m
        self.mtd += m.T @ d
        self.dtd += float((d * d).sum())
        self.tokens += m.shape[0]

    def solve(self, ridge: float) -> Any:
        import torch

        dim = self.mtm.shape[0]
        if self.anchor is None:
            anchor = torch.eye(dim, dtype=torch.float64, device=self.mtm.device)
        else:
            anchor = self.anchor.to(self.mtm.device)
        if math.isinf(ridge):
            return anchor
        lam = ridge * float(torch.trace(self.mtm)) / dim
        system = self.mtm.clone()  # MᵀM + λI without another k × k identity beside it
        system.diagonal().add_(lam)
        return torch.linalg.solve(system, self.mtd + lam * anchor)

    def set_anchor(self, anchor: Any) -> None:
        """Fit a whole projection, pulled toward ``anchor`` (its weight as ``[inputs, outputs]``); the held-out
        samples' sums judge against it too."""
        self.anchor = anchor
        if self.held is not None:
            self.held.set_anchor(anchor)

    def minus(self, other: _Stats) -> _Stats:
        """The sums without ``other``'s tokens (``other`` summed a subset of these)."""
        out = _Stats()
        out.mtm, out.mtd = self.mtm - other.mtm, self.mtd - other.mtd
        out.dtd, out.tokens = self.dtd - other.dtd, self.tokens - other.tokens
        out.anchor = self.anchor
        return out

    def relative_residual(self, t: Any = None) -> float:
        """‖M T − D‖ / ‖D‖ from the sums alone (T = None: the anchor, the identity or the projection's own weight,
        i.e. plain pruning)."""
        import torch

        if t is None and self.anchor is None:
            err = self.dtd - 2 * float(torch.trace(self.mtd)) + float(torch.trace(self.mtm))
        else:
            t = self.anchor.to(self.mtm.device) if t is None else t
            err = self.dtd - 2 * float((t * self.mtd).sum()) + float((t * (self.mtm @ t)).sum())
        return math.sqrt(max(err, 0.0) / self.dtd) if self.dtd > 0 else 0.0


class _Tokens:
    """The rows ``z`` (the projection's output) and ``D = Y − R`` of up to ``limit`` calibration tokens (CPU)."""

    def __init__(self, limit: int = MAX_NORM_TOKENS) -> None:
        self.z: list[Any] = []
        self.d: list[Any] = []
        self.tokens = 0
        self.limit = limit

    def add(self, z: Any, r: Any, y: Any, keep: Any) -> None:
        import torch

        room = self.limit - self.tokens
        if room <= 0:
            return
        z = z[keep][:room].to("cpu", torch.float32)
        d = (y[keep][:room].to("cpu", torch.float64) - r[keep][:room].to("cpu", torch.float64)).float()
        self.z.append(z)
        self.d.append(d)
        self.tokens += z.shape[0]

    def fit(self, norm: Any, steps: int = NORM_FIT_STEPS, lr: float = NORM_FIT_LR) -> tuple[Any, float, float]:
        """``T`` minimising ‖norm(z T) − D‖ (Adam from the identity, the best step on held-out rows kept), and the
        relative residual before (T = I) and after, on every kept row."""
        import torch

        z, d = torch.cat(self.z), torch.cat(self.d)
        generator, held, train = held_out_split(z.shape[0], 0)
        dim = z.shape[1]
        device = next(norm.parameters()).device
        flags = [p.requires_grad for p in norm.parameters()]
        for p in norm.parameters():
            p.requires_grad_(False)
        t = torch.eye(dim, dtype=torch.float32, device=device, requires_grad=True)
        optimizer = torch.optim.Adam([t], lr=lr)

        def error(rows: Any, matrix: Any) -> Any:
            zz, dd = z[rows].to(device), d[rows].to(device)
            out = norm(zz @ matrix)
            return ((out.float() - dd) ** 2).sum() / (dd**2).sum().clamp_min(1e-30)

        try:
            with torch.no_grad():
                best_err, best = float(error(held, t)), t.detach().clone()
            batch = min(2048, train.numel())
            for step in range(steps):
                rows = train[torch.randint(0, train.numel(), (batch,), generator=generator)]
                loss = error(rows, t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step % 10 == 9 or step == steps - 1:
                    with torch.no_grad():
                        now = float(error(held, t))
                    if now < best_err:
                        best_err, best = now, t.detach().clone()
            with torch.no_grad():
                every = torch.arange(z.shape[0])
                eye = torch.eye(dim, dtype=torch.float32, device=device)
                before = math.sqrt(float(error(every, eye)))
                after = math.sqrt(float(error(every, best)))
        finally:
            for p, flag in zip(norm.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        return best.double().cpu(), before, after


def held_out_split(rows: int, seed: int) -> tuple[Any, Any, Any]:
    """A seeded generator and the row indices held out of a fit (a tenth, at least one) and trained on (the
    rest; all of them when there are ten or fewer). The generator goes on drawing the training batches."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(rows, generator=generator)
    n_held = max(1, rows // 10)
    return generator, order[:n_held], order[n_held:] if rows > 10 else order


# -------------------------------------------------------------------------------------------------- fit


def fit_linear_repair(
    model: Any,
    family: Family,
    token_set: TokenSet,
    removed: Sequence[int],
    batch_size: int = 4,
    ridge: float | None = None,
    order: str = "sequential",
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    stack: Any = None,
    both_sides: bool | None = None,
    original: OriginalStates | None = None,
    fit: str = "projection",
) -> RepairResult:
    """Refit the MLP output projection of the kept layer before each run of ``removed`` layers (and, see
    ``both_sides``, of the kept layer after it), or fold a fitted map into it.

    ``fit`` is what changes (:data:`FITS`): the whole projection (the default, where it is at most
    :data:`..defaults.MAX_PROJECTION_INPUTS` wide, no norm follows it, and its ridge is given or chosen on held-out
    samples: with ``ridge=None`` and fewer than 20 samples the map is fitted at the fixed ridge), else the map ``T``
    folded into it; each run records which in ``RunRepair.fit``.

    ``both_sides``: the kept layer after each run is fitted too, after the run's own fit, to bring the pruned
    model's state leaving it to the original's (sequential order only). ``None`` (the default): where the run's
    projection is refitted whole and so is the layer after's (its ridge chosen on held-out samples like the run's,
    the projection left as it is where no refit does better there); ``True``: after every repaired run, with the
    run's kind of fit; ``False``: never.

    ``model`` is the full (unpruned) model; it is the same when this returns. Runs that cannot be repaired
    (first layer, families without a plain MLP output projection, mixture-of-experts layers) are listed with a
    note and left as plain pruning. ``stack`` (a :class:`..backends.layerwise.LayerStack`, in memory by default)
    is how the layers run: the calibration samples go through the original model and the pruned, already
    repaired one side by side, layer by layer, each layer run once per stream (plus the patched layer again with
    its new weights). Progress stage ``"repair"`` counts layer runs. ``original`` (sequential order) keeps the
    original's states for the next fit on the same samples and starts from those an earlier one kept.
    """
    from ..backends.layerwise import InMemoryStack

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}")
    started = time.perf_counter()
    stack = stack if stack is not None else InMemoryStack(model, family)
    n_layers = stack.n_layers
    removed = sorted(set(removed))
    runs = plan_runs(model, family, removed)
    result = RepairResult(n_layers, removed, runs, order=order, ridge=ridge)
    to_fit = [r for r in runs if r.parameter is not None]
    # The whole projection has k/d times the map's parameters: it is fitted where its ridge is given, or chosen on
    # held-out samples (at least MIN_HELD_OUT_SAMPLES of them), never at a fixed ridge it was not judged at.
    judged = ridge is not None or can_choose_ridge(len(token_set.samples))

    def choose_fit(run: RunRepair) -> None:
        if fit == "projection" and judged and refits_whole(family, run.inputs or 0):
            run.fit = "projection"

    for run in to_fit:
        choose_fit(run)
    if both_sides is not False and order == "sequential":
        before = {run.end: run for run in runs}  # the run each correction follows, by its patched layer
        corrections = plan_corrections(model, family, removed, runs)
        for correction in corrections:
            choose_fit(correction)
        if both_sides is None:  # both sides only where both projections are refitted whole
            corrections = [c for c in corrections if c.fit == before[c.patched_layer].fit == "projection"]
        result.corrections = corrections
        to_fit = sorted(to_fit + result.corrections, key=lambda r: r.patched_layer)  # type: ignore[arg-type,return-value]
    if not to_fit:
        result.seconds = time.perf_counter() - started
        return result
    kept = [i for i in range(n_layers) if i not in set(removed)]
    last_end = max(r.end for r in to_fit)
    total = last_end if order == "independent" else sequential_layer_runs(to_fit, kept, removed[0])
    counter = _Counter(progress, total)
    full = stack.capture(token_set.samples, token_set.pad_id, batch_size, cancel)
    if order == "independent":
        _fit_independent(stack, family, full, to_fit, result, ridge, counter, cancel)
    else:
        _fit_sequential(stack, family, full, to_fit, kept, result, ridge, counter, cancel,
                        original.bind(token_set, batch_size) if original is not None else None)
    result.seconds = time.perf_counter() - started
    return result


class _Counter:
    """``progress("repair", layer runs done, total)``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None:
            progress("repair", 0, total, None)

    def __call__(self, done: int = 1, index: int = 0) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress("repair", min(self.done, self.total), self.total, None)


class _PatchedLayer(LayerObserver):
    """On a run's patched layer: per batch, the projection's output (``z``, or ``M`` when there is no norm) and
    ``R`` = the layer's output minus what its MLP adds to the residual stream."""

    def __init__(self, family: Family, run: RunRepair) -> None:
        self.family, self.run = family, run
        #: Keep the projection's inputs as the rows instead of its output (a fit of the whole projection), with a
        #: column of ones where it has a bias (which is fitted with it: its last row).
        self.projection = run.fit == "projection"
        self.rows: list[tuple[Any, Any, Any]] = []  # (z or M, R, keep) per batch, in batch order
        self._seen: dict[str, Any] = {}
        self._handles: list[Any] = []

    def enter_layer(self, index: int, layer: Any) -> None:
        if index != self.run.patched_layer:
            return
        proj = get_submodule(layer, self.family.mlp_out)  # type: ignore[arg-type]
        seen = self._seen

        projection = self.projection

        def on_proj(module: Any, args: tuple, output: Any) -> None:
            seen["proj"] = output.detach().clone()  # Falcon adds to it in place afterwards
            if projection:
                seen["input"] = args[0].detach()  # read, never changed in place
                seen["bias"] = getattr(module, "bias", None)

        self._handles.append(proj.register_forward_hook(on_proj))
        if self.run.norm is not None:
            norm = get_submodule(layer, self.family.mlp_out_norm)  # type: ignore[arg-type]
            self._handles.append(norm.register_forward_hook(
                lambda module, args, output: seen.__setitem__("norm", output.detach().clone())))

    def batch(self, index: int, layer: Any, inputs: Any, outputs: Any, kwargs: dict[str, Any], mask: Any) -> None:
        import torch

        if index != self.run.patched_layer:
            return
        added = self._seen["norm" if self.run.norm is not None else "proj"].reshape(outputs.shape)  # OPT: [t, h]
        r = outputs - added
        rows = self._seen["proj"].reshape(outputs.shape) if self.run.norm is not None else added
        if self.projection:
            rows = self._seen["input"].reshape(*outputs.shape[:-1], -1)
            if self._seen["bias"] is not None:
                rows = torch.cat([rows, torch.ones_like(rows[..., :1])], dim=-1)
        self.rows.append((rows, r, mask.bool()))
        self._seen.clear()

    def exit_layer(self, index: int, layer: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _statistics(run: RunRepair, observer: _PatchedLayer, targets: Sequence[Any],
                choose: bool = False) -> _Stats | _Tokens:
    """The fit's sums (or kept rows) from the patched layer's rows and ``Y`` (the states leaving the run).
    ``choose``: the sums of every :data:`HELD_OUT_EVERY`-th sample are kept apart too (``stats.held``)."""
    import torch

    stats: _Stats | _Tokens = _Tokens() if run.norm is not None else _Stats()
    held = _Stats() if choose and isinstance(stats, _Stats) else None
    sample = 0
    if held is not None and not can_choose_ridge(sum(k.shape[0] for _, _, k in observer.rows)):
        held = None
    for (rows, r, keep), y in zip(observer.rows, targets, strict=True):
        y = y.to(rows.device)
        stats.add(rows, r, y, keep)
        if held is not None and keep.dim() == 2:
            index = sample + torch.arange(keep.shape[0], device=keep.device)
            held_rows = keep & ((index % HELD_OUT_EVERY) == HELD_OUT_EVERY - 1)[:, None]
            if bool(held_rows.any()):
                held.add(rows, r, y, held_rows)
        sample += keep.shape[0]
    observer.rows.clear()
    if held is not None and held.tokens and isinstance(stats, _Stats):
        stats.held = held
    return stats


def choose_ridge(stats: _Stats, held: _Stats) -> tuple[float, float | None]:
    """The ridge of :data:`RIDGE_CHOICES` (or ``inf``, the anchor: plain pruning) whose fit, made without the
    held-out samples, leaves the least residual on them; and that residual."""
    train = stats.minus(held)
    if train.tokens <= 0:  # nothing left to fit on (not reached: at least 18 samples stay)
        return RIDGE, None
    errors = {ridge: held.relative_residual(train.solve(ridge)) for ridge in RIDGE_CHOICES}
    errors[math.inf] = held.relative_residual(None)
    best = min(errors, key=lambda k: errors[k])
    return best, errors[best]


def _fit_sequential(stack: Any, family: Family, full: list[Any], to_fit: list[RunRepair], kept: list[int],
                    result: RepairResult, ridge: float | None, counter: _Counter, cancel: CancelCheck | None,
                    original: OriginalStates | None = None) -> None:
    """Runs first to last, each fitted on the model pruned and repaired up to it."""

    def finish(run: RunRepair, observer: _PatchedLayer, targets: list[Any]) -> None:
        _finish_run(stack, family, run, _statistics(run, observer, targets, ridge is None), ridge, result)

    walk_sequential(stack, full, to_fit, kept, result.removed[0], result.tensors,
                    lambda run: _PatchedLayer(family, run), finish, counter, cancel, original)




class OriginalStates:
    """The original model's states on one set of calibration batches, kept at the layers a sequential fit ran
    its stream to, so that the next fit on the same batches starts from them instead of running the original
    again: bi+ fits a repair for each of its finalists on the same samples (:mod:`.selection`), and the streams
    of the original they run are the same numbers each time. The states are the very tensors a fit computed
    (the stream's batches are replaced, never changed in place), so a fit gives bit for bit what it gives alone.

    Tied to one token set and batch size (:meth:`bind`: other batches clear it); states past ``budget`` bytes
    are not kept (the fit still runs, from the nearest kept layer before)."""

    def __init__(self, budget: int = defaults.ORIGINAL_STATES_BUDGET) -> None:
        self.budget = budget
        self.key: tuple | None = None
        self.states: dict[int, list[Any]] = {}  # layer → the original's states entering it, one per batch
        self.kept_bytes = 0
        self.layers_skipped = 0  # layer runs of the original not run again (for the log and the tests)
        self.full = False  # a state was not kept for want of room (said once in the log)

    def bind(self, token_set: TokenSet, batch_size: int) -> OriginalStates:
        """Use the memo for ``token_set`` in batches of ``batch_size``, forgetting states of other batches."""
        key = (batch_size, token_set.pad_id, hash(tuple(tuple(s) for s in token_set.samples)))
        if key != self.key:
            self.key, self.states, self.kept_bytes, self.full = key, {}, 0, False
        return self

    def advance(self, stack: Any, full: list[Any], start: int, stop: int, counter: Callable[..., None],
                cancel: CancelCheck | None) -> None:
        """Move ``full`` (the original's batches entering layer ``start``) to the states entering ``stop``: from
        the kept states at the latest layer up to ``stop`` where there are some, running the rest."""
        if stop <= start:
            return
        known = [k for k in self.states if start < k <= stop]
        if known:
            at = max(known)
            for batch, hidden in zip(full, self.states[at], strict=True):
                batch.hidden = hidden
            for _ in range(start, at):  # the bar counts the layer runs a fit would make
                counter()
            self.layers_skipped += at - start
            start = at
        stack.run_layers(full, range(start, stop), after_layer=counter, cancel=cancel)
        if stop not in self.states:
            size = sum(int(b.hidden.numel()) * b.hidden.element_size() for b in full)
            if self.kept_bytes + size <= self.budget:
                self.states[stop] = [b.hidden for b in full]
                self.kept_bytes += size
            elif not self.full:
                self.full = True
                log.info("the original's states entering layer %d are not kept for the next fit (%.0f MB kept, "
                         "%.0f MB more would pass the %.0f MB budget): the next fit runs the original from an "
                         "earlier layer", stop, self.kept_bytes / 1e6, size / 1e6, self.budget / 1e6)


def walk_sequential(stack: Any, full: list[Any], to_fit: Sequence[Any], kept: Sequence[int], first_removed: int,
                    weights: dict[str, Any], observe: Callable[[Any], LayerObserver],
                    finish: Callable[[Any, Any, list[Any]], None], counter: Callable[..., None],
                    cancel: CancelCheck | None, original: OriginalStates | None = None) -> None:
    """The two streams of states a sequential fit needs: the original's (``full``, ahead to the end of each run)
    and the pruned model's with ``weights`` in (to each run's ``patched_layer``).

    For each run in order, ``observe(run)`` watches the patched layer run on the pruned stream with the weights
    as they are, then ``finish(run, observer, targets)`` (``targets``: the original's states entering the layer
    after the run, one per batch) may put new values into ``weights`` before the pruned stream goes through
    the patched layer with them. ``counter()`` is called after each layer run of either stream. ``original``
    (bound to ``full``'s batches) keeps the original's states for the next fit on them, and gives this one those
    an earlier fit kept.
    """

    def advance(start: int, stop: int) -> None:
        if original is not None:
            original.advance(stack, full, start, stop, counter, cancel)
        else:
            stack.run_layers(full, range(start, stop), after_layer=counter, cancel=cancel)

    full_at = 0  # the next layer the original's stream runs
    pruned: list[Any] | None = None  # the pruned model's stream, once it differs from the original's
    pruned_at = 0
    for run in to_fit:
        patched = run.patched_layer
        assert patched is not None
        if pruned is None:  # the two streams agree up to the first removed layer (or this patched one)
            split = min(patched, first_removed)
            advance(full_at, split)
            full_at = split
            pruned, pruned_at = [b.copy() for b in full], split
        ahead = [i for i in kept if pruned_at <= i < patched]
        stack.run_layers(pruned, ahead, after_layer=counter, cancel=cancel, weights=weights)
        pruned_at = patched
        observer = observe(run)
        probe = [b.copy() for b in pruned]  # the patched layer with its old weights; the stream does not move
        stack.run_layers(probe, [patched], [observer], cancel=cancel, weights=weights)
        advance(full_at, run.end)
        full_at = run.end
        finish(run, observer, [b.hidden for b in full])
        stack.run_layers(pruned, [patched], after_layer=counter, cancel=cancel, weights=weights)
        pruned_at = patched + 1


def sequential_layer_runs(to_fit: Sequence[Any], kept: Sequence[int], first_removed: int) -> int:
    """Layer runs :func:`walk_sequential` reports: the original's up to the last run's end, and the pruned
    model's kept layers from where the two streams split to the last patched layer, each once (the streams are
    one before the split; the look at a patched layer with its old weights is not counted). It counted the
    layers before the split twice and the patched ones again, and the bar stopped at 5 of 7."""
    last_end = max(r.end for r in to_fit)
    patched = [r.patched_layer for r in to_fit]
    split = min(min(patched), first_removed)
    return last_end + sum(1 for i in kept if split <= i <= max(patched))


def _fit_independent(stack: Any, family: Family, full: list[Any], to_fit: list[RunRepair], result: RepairResult,
                     ridge: float | None, counter: _Counter, cancel: CancelCheck | None) -> None:
    """Every run fitted from the original model, in one pass: cheaper, and worse (earlier runs' errors add up)."""
    observers = {run.patched_layer: _PatchedLayer(family, run) for run in to_fit}
    ends = {run.end - 1: run for run in to_fit}

    def after_layer(done: int, index: int) -> None:
        counter()
        run = ends.get(index)
        if run is not None:
            stats = _statistics(run, observers[run.patched_layer], [b.hidden for b in full], ridge is None)
            _finish_run(stack, family, run, stats, ridge, result)

    stack.run_layers(full, range(max(r.end for r in to_fit)), list(observers.values()), after_layer, cancel)


def _finish_run(stack: Any, family: Family, run: RunRepair, stats: _Stats | _Tokens, ridge: float | None,
                result: RepairResult) -> None:
    """Solve for T (or the whole projection), record the residuals and the folded weight (and bias)."""
    import torch

    patched = run.patched_layer
    assert patched is not None and run.parameter is not None and family.mlp_out is not None
    with stack.open_layer(patched) as layer, torch.inference_mode(False):
        proj = get_submodule(layer, family.mlp_out)
        conv1d = _is_conv1d(proj)
        weight = proj.weight.detach().to("cpu", torch.float64)
        whole = isinstance(stats, _Stats) and run.fit == "projection"  # the rows are the projection's inputs
        bias = getattr(proj, "bias", None)
        if whole:  # the fit is of the projection itself, [inputs (+ the bias), outputs], pulled toward its own
            assert isinstance(stats, _Stats)
            anchor = weight if conv1d else weight.T
            if bias is not None:
                anchor = torch.cat([anchor, bias.detach().to("cpu", torch.float64)[None, :]])
            stats.set_anchor(anchor)
        if isinstance(stats, _Tokens):
            assert family.mlp_out_norm is not None
            t, run.residual_before, run.residual_after = stats.fit(get_submodule(layer, family.mlp_out_norm))
        else:
            if ridge is None and stats.held is not None:
                ridge, run.held_out_residual = choose_ridge(stats, stats.held)
            run.ridge = RIDGE if ridge is None else ridge  # too few samples to hold any out: the fixed ridge
            t = stats.solve(run.ridge)
            run.residual_before = stats.relative_residual(None)
            run.residual_after = stats.relative_residual(t)
        t = t.cpu()
        # Conv1D: y = x W + b; Linear: y = x Wᵀ + b. A whole projection's fit is its new weight, [inputs, outputs],
        # and its bias the last row where it has one.
        if whole:
            folded, new_bias = (t[:-1], t[-1]) if bias is not None else (t, None)
        else:
            folded = weight @ t if conv1d else (t.T @ weight).T
            new_bias = bias.detach().to("cpu", torch.float64) @ t if bias is not None else None  # (Tᵀb)ᵀ = bᵀT
        new_weight = folded if conv1d else folded.T
        result.tokens = stats.tokens
        if run.ridge is not None and math.isinf(run.ridge):
            return  # left as it is: no new tensor (a GGUF would re-quantize an unchanged one)
        result.tensors[run.parameter] = new_weight.to(proj.weight.dtype).contiguous()
        if bias is not None:
            result.tensors[run.parameter.rsplit(".", 1)[0] + ".bias"] = new_bias.to(bias.dtype).contiguous()


# ------------------------------------------------------------------------------------------------ apply


def _check_unpruned(model: Any, family: Family | None, result: RepairResult) -> None:
    if family is not None and len(get_submodule(model, family.layers_path)) != result.n_layers:
        raise ValueError("a repair is applied to the unpruned model (its names carry the original layer indices)")


def apply_repair(model: Any, result: RepairResult, family: Family | None = None) -> None:
    """Write the repaired weights into the (unpruned) model, in place; prune it afterwards as usual."""
    import torch

    _check_unpruned(model, family, result)
    with torch.no_grad():
        for name, value in result.tensors.items():
            param = model.get_parameter(name)
            param.copy_(value.to(param.device, param.dtype))


@contextmanager
def repaired_view(model: Any, result: RepairResult, family: Family | None = None) -> Iterator[None]:
    """The model with the repaired weights for the block only (enter it BEFORE :func:`pruned_view`)."""
    _check_unpruned(model, family, result)
    with weights_view(model, result.tensors):
        yield


@contextmanager
def repaired_pruned_view(model: Any, family: Family, result: RepairResult) -> Iterator[dict[str, Any]]:
    """Pruned as ``result.removed`` and repaired, for the block only; afterwards the original model again."""
    with repaired_view(model, result, family), pruned_view(model, family, result.removed) as patch:
        yield patch
