"""Optional healing of a pruned model: a short LoRA fine-tune on the calibration samples, merged back.

LoRA adapters (peft) go on the linear projections of the decoder layers (all of them, or only ``layers``, e.g.
:func:`layers_beside` the cuts; the engine adapts them all: on SmolLM2, 8 of 30 removed, 16 distilled steps on
the layers beside the cuts moved perplexity only from 67.0 to 66.4).
The loss is distillation from the original model when a ``teacher`` is given:
KL(original || pruned) of the next-token distributions on the calibration samples, the very measure the check
reports, so healing pulls the pruned model back toward what it was rather than toward the calibration text
(plain next-token loss otherwise). A fixed number of steps trains the adapters, then ``merge_and_unload`` folds
them into the weights, so the healed model is a stock architecture with the same parameter names and shapes.
Work on the PRUNED model (after :func:`.surgery.prune_in_memory`, or inside ``pruned_view`` /
``repaired_pruned_view``): names in :class:`HealResult` carry the pruned model's layer indices, and
:func:`original_names` maps them back for the saver's ``replaced`` argument.

Where the hardware multiplies bfloat16 faster than float32 (:func:`.model.devices.fast_training_dtype`: AMX or
AVX-512 BF16 CPUs, CUDA GPUs) and the model is in float32, each step's forward pass and loss run under autocast to
bfloat16, the teacher's logits too, while the adapters, their gradients and the optimizer stay float32 and the
merge is done in float32. Autocast's cache is off and each step enters its own region: a cached region around all
the steps had trained on the first step's 16-bit copies of the adapters (the loss never moved). On SmolLM2 and
this project's build machine a step took 14.7 s in float32, 7.9 s under autocast.

Cancelling between steps removes the adapters without merging: the model is then exactly as before.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled
from ..measure.calibration import TokenSet
from ..measure.evaluation import kl_per_token, position_spans
from ..measure.scoring import iter_batches
from ..model.devices import fast_training_dtype
from ..model.dtypes import dtype_name
from ..model.families import Family
from ..progress import CancelCheck, Progress

#: Adam's rate for the LoRA adapters. Measured on SmolLM2-135M (8 of 30 removed, repaired, 8 distilled steps of
#: 4 × 256 tokens, 32 × 256 WikiText-2 test tokens; repaired alone 67.02 / KL 0.721): 2e-4 gave 66.67 / 0.691,
#: 1e-3 62.57 / 0.657, 3e-3 63.22 / 0.645. With 40 steps on 128 × 256 samples, 1e-3 gave 52.64 / 0.534 / 60.4% top.
#: From the default job's repair (both sides refitted: 51.31 / 0.493 / 61.7%), 60 steps of 4 × 512 in bfloat16 gave
#: 47.71 / 0.420 / 65.1% in 430 s; 80 steps at 2e-3 falling linearly to 0, 47.60 / 0.416 / 65.1% in 729 s: no
#: schedule was kept. Screened from that repair at 20 steps of 4 × 512 (``benchmarks/bench_heal_variants.py``: this
#: 48.76 / 0.444 / 64.0%), rank 32, 3e-3, a sample a step, the norms too, full fine-tuning and the kept layers'
#: states distilled too all ended within 0.015 of this KL (the best, a sample a step, 0.429 / 64.5%: one seed);
#: LoRA+ and a top-1 loss did worse: nothing else was kept.
DEFAULT_LEARNING_RATE = 1e-3


#: Tokens of the step that warms up before :func:`estimate_heal_seconds` times one.
WARM_UP_TOKENS = 16


@dataclass
class HealResult:
    steps: int
    losses: list[float]  # training loss of each step, before that step's update
    seconds: float
    #: Parameters the merge changed, with the PRUNED model's layer indices → CPU copies of their new values.
    changed: dict[str, Any] = field(default_factory=dict)
    rank: int = 8
    learning_rate: float = DEFAULT_LEARNING_RATE
    compute_dtype: str = ""  # what the forward passes ran in: "bfloat16" under autocast, else the model's dtype


def healing_did_not_help(losses: Sequence[float]) -> str:
    """The warning for a healing whose loss did not fall from its first step to its last, else "": 2 steps said
    "loss 0.201 -> 0.208" and nothing more, while the healed weights (every kept one, written at 8 bits or more in
    a GGUF) made the file 20% larger than the original."""
    if len(losses) < 2 or losses[-1] < losses[0]:
        return ""
    # four significant digits: a tiny model's 0.00368 -> 0.00441 read "0.004 -> 0.004"
    return (f"healing did not lower its loss ({losses[0]:.4g} -> {losses[-1]:.4g} in {len(losses)} steps, each on "
            "other text): its weights may be no better than the repair's alone; give more steps (the README "
            "measures 20 to 60) or leave healing out.")


def target_modules(model: Any, family: Family, layers: Sequence[int] | None = None) -> list[str]:
    """Names of the linear projections inside the decoder layers (never the embeddings or the LM head); only
    those of ``layers`` (current indices) when given."""
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    inside = re.compile(rf"^{re.escape(family.layers_path)}\.(\d+)\.")
    wanted = None if layers is None else set(layers)
    out = []
    for name, module in model.named_modules():
        match = inside.match(name)
        if match and isinstance(module, (nn.Linear, Conv1D)) and (wanted is None or int(match[1]) in wanted):
            out.append(name)
    return out


#: ``teacher(batch_number, input_ids, attention_mask)`` → the original model's logits for that batch.
Teacher = Callable[[int, Any, Any], Any]


def layers_beside(removed: Sequence[int], n_layers: int) -> list[int]:
    """The kept layers on both sides of each run of removed layers, as indices of the PRUNED model."""
    gone = set(removed)
    kept = [i for i in range(n_layers) if i not in gone]
    beside = {i - 1 for i in gone if i - 1 >= 0 and i - 1 not in gone} | {i + 1 for i in gone
                                                                          if i + 1 < n_layers and i + 1 not in gone}
    return sorted(kept.index(i) for i in beside)


def _lora_config(model: Any, family: Family, rank: int, alpha: float | None,
                 layers: Sequence[int] | None = None) -> tuple[Any, list[str]]:
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    targets = target_modules(model, family, layers)
    if not targets:
        raise ValueError("no linear projections found inside the decoder layers")
    conv1d = isinstance(model.get_submodule(targets[0]), Conv1D)
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
                        target_modules=pattern, bias="none", fan_in_fan_out=conv1d)
    return config, targets


def _quiet_peft_warnings() -> None:
    """peft reads ``model.is_gradient_checkpointing``, which transformers deprecates with a FutureWarning: it was
    printed in the middle of every healing job on the command line, and no user of either library can act on it.
    Put in front of the filters each time adapters are made (a test harness may reset the filters in between)."""
    warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # peft's own mixture-of-experts patterns, unused where a model's experts are not adapted (Qwen3-MoE)
    warnings.filterwarnings("ignore", message=r"The following (rank|alpha)_pattern keys did not match",
                            category=RuntimeWarning)


@contextmanager
def _adapters(model: Any, family: Family, rank: int, alpha: float | None,
              layers: Sequence[int] | None = None) -> Iterator[tuple[Any, list[str]]]:
    """LoRA adapters on the model; on leaving they are removed WITHOUT merging unless the caller merged."""
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    config, targets = _lora_config(model, family, rank, alpha, layers)
    _quiet_peft_warnings()
    peft_model = get_peft_model(model, config)
    # Only what peft wrapped: its mixture-of-experts handling leaves a Qwen3-MoE dense layer's projections (named by
    # mlp_only_layers) plain Linears, which the merge then found with no base layer (AttributeError).
    targets = [t for t in targets if isinstance(model.get_submodule(t), BaseTunerLayer)]
    state = {"merged": False}
    try:
        yield peft_model, targets, state  # type: ignore[misc]
    finally:
        if not state["merged"]:
            peft_model.unload()
        for name, param in model.named_parameters():
            param.requires_grad_(flags.get(name, False))


def _batches(token_set: TokenSet, batch_size: int, device: str) -> list[tuple[Any, Any]]:
    return [(ids, mask) for ids, mask, _ in iter_batches(token_set, batch_size, device)]


def batches_used(samples: int, batch_size: int, steps: int) -> int:
    """How many calibration batches :func:`heal` reads for ``steps`` steps (it cycles from the first; the
    estimate reads the first), so the teacher is needed on those alone."""
    return min(math.ceil(samples / batch_size), max(steps, 1))


def compute_dtype_for(model: Any, compute: Any = "auto") -> Any:
    """The dtype healing's forward passes are autocast to: ``"auto"`` → :func:`fast_training_dtype` of the model's
    device and dtype; None → none (the model's own dtype); ``torch.bfloat16`` or ``torch.float16`` as given."""
    import torch

    if compute == "auto":
        param = next(model.parameters())
        return fast_training_dtype(str(param.device), param.dtype)
    if compute is None or compute in (torch.bfloat16, torch.float16):
        return compute
    raise ValueError(f"compute must be 'auto', None, torch.bfloat16 or torch.float16, not {compute!r}")


def autocast_to(model: Any, compute: Any) -> AbstractContextManager[Any]:
    """Autocast to ``compute`` on the model's device, or nothing when it is None. Autocast's cache of 16-bit weight
    copies is off: with it, the copies live as long as the region (half the model again during the teacher's pass,
    and the first step's adapters for every step of a region around them all); a weight is used once a pass."""
    import torch

    if compute is None:
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=compute, cache_enabled=False)


def distillation_loss(logits: Any, teacher_logits: Any, mask: Any) -> Any:
    """Mean KL(teacher || student) of the next-token distributions over the real tokens, in float32, through
    autograd (the benchmarks' variants add terms to it; healing's steps take :func:`distillation_gradient`)."""
    import torch

    keep = mask.bool()
    student = torch.log_softmax(logits[keep].float(), dim=-1)
    target = torch.log_softmax(teacher_logits[keep].float(), dim=-1)
    return kl_per_token(target, student).mean()


def distillation_gradient(logits: Any, teacher_logits: Any, mask: Any) -> tuple[float, Any]:
    """:func:`distillation_loss` and its gradient with respect to ``logits`` (in their dtype), computed a few
    positions at a time (:func:`.measure.evaluation.position_spans`), so that no whole-batch copy of the logits is
    made besides the gradient itself: autograd through the loss held several float32 ones (both log-softmaxes, the
    KL's terms and their gradients; healing Gemma 3, 262k-token vocabulary, 4 × 512 tokens a step, peaked at 17.2
    GB, now 7.9 GB). Per position the gradient of KL(teacher || student) is softmax(student) − softmax(teacher),
    divided by the real tokens' count; padding gets none, as it took no part in the loss."""
    import torch

    keep = mask.bool()
    count = max(int(keep.sum()), 1)
    gradient = torch.zeros_like(logits)
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    for row, span in position_spans(logits, every=True):
        student = torch.log_softmax(logits[row, span].float(), dim=-1)
        target = torch.log_softmax(teacher_logits[row, span].float(), dim=-1)
        span_keep = keep[row, span]
        total += kl_per_token(target, student)[span_keep].double().sum()
        delta = (student.exp_() - target.exp_()).div_(count)
        gradient[row, span] = delta.masked_fill_(~span_keep.unsqueeze(-1), 0.0)  # padding: 0, whatever it held
        del student, target, delta
    return float(total) / count, gradient


def _step(peft_model: Any, optimizer: Any, ids: Any, mask: Any, teacher_logits: Any = None,
          compute: Any = None) -> float:
    """One update: distillation (:func:`distillation_gradient`) or next-token loss; the forward pass under autocast
    to ``compute`` when given, the loss in float32, the backward pass outside."""
    with autocast_to(peft_model, compute):
        if teacher_logits is None:
            labels = ids.masked_fill(mask == 0, -100)
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        else:
            logits = peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    if teacher_logits is None:
        loss.backward()
        value = float(loss.detach())
    else:
        value, gradient = distillation_gradient(logits.detach(), teacher_logits, mask)
        logits.backward(gradient)
        del logits, gradient
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def heal(
    model: Any,
    family: Family,
    token_set: TokenSet,
    steps: int = 100,
    batch_size: int = 4,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    rank: int = 8,
    alpha: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    keep_original: bool = False,
    teacher: Teacher | None = None,
    layers: Sequence[int] | None = None,
    compute: Any = "auto",
) -> HealResult:
    """Train LoRA adapters for ``steps`` steps (cycling over the calibration batches) and merge them in place.

    The merge changes the weights in place, also inside ``pruned_view``; with ``keep_original`` the model is left as it
    was and the healed values are only in the result (show them with :func:`..model.weights_view.weights_view` inside
    the pruned view): each is merged into a copy of its weight (:func:`_merged_copies`), so the job never holds a second
    copy of the whole model's projections besides the result. ``compute``: see :func:`compute_dtype_for`.
    """
    import torch

    if steps < 1:
        raise ValueError("steps must be at least 1")
    started = time.perf_counter()
    device = str(next(model.parameters()).device)
    compute = compute_dtype_for(model, compute)
    batches = _batches(token_set, batch_size, device)
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()  # no dropout: the merged weights should be what the loss saw
    losses: list[float] = []
    if progress is not None:
        progress("heal", 0, steps, None)
    try:
        with _adapters(model, family, rank, alpha, layers) as (peft_model, targets, state):
            trainable = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
            for step in range(steps):
                if cancel is not None and cancel():
                    raise Cancelled()
                number = step % len(batches)
                ids, mask = batches[number]
                with autocast_to(model, compute):
                    target = teacher(number, ids, mask) if teacher is not None else None
                losses.append(_step(peft_model, optimizer, ids, mask, target, compute))
                if progress is not None:
                    progress("heal", step + 1, steps, losses[-1])
            if keep_original:
                changed = _merged_copies(model, targets)  # the adapters leave unmerged: the model as it was
            else:
                peft_model.merge_and_unload()
                state["merged"] = True
                changed = {f"{name}.weight": model.get_submodule(name).weight.detach().to("cpu", copy=True)
                           for name in targets}
    finally:
        model.train(was_training)
    return HealResult(steps, losses, time.perf_counter() - started, changed, rank, learning_rate,
                      dtype_name(compute or next(model.parameters()).dtype))


def _merged_copies(model: Any, targets: Sequence[str]) -> dict[str, Any]:
    """Each adapted projection's weight with its adapter merged, as a CPU copy, the model's weights untouched.

    The very arithmetic of peft's merge (``weight += get_delta_weight(adapter)``), done on a copy of one weight at
    a time. Healing used to clone every targeted weight before training and copy them back after merging in
    place: one more copy of nearly all the decoder layers' weights held through every step (77 MB on the tiny
    model of ``tests/core/model/test_memory.py``, whose healing job peaked at 1.16-1.17 GB with it and 1.05-1.14
    GB without; about 5 GB for a 1.5B model in float32)."""
    import torch

    changed = {}
    with torch.no_grad():
        for name in targets:
            layer = model.get_submodule(name)
            merged = layer.get_base_layer().weight.detach().clone()
            for adapter in layer.active_adapters:
                merged += layer.get_delta_weight(adapter)
            changed[f"{name}.weight"] = merged.to("cpu")
    return changed


def estimate_heal_seconds(
    model: Any,
    family: Family,
    token_set: TokenSet,
    steps: int,
    batch_size: int = 4,
    rank: int = 8,
    teacher: Teacher | None = None,
    layers: Sequence[int] | None = None,
    compute: Any = "auto",
) -> float:
    """Seconds :func:`heal` will take for ``steps`` steps, leaving the model unchanged: a step on a short slice
    of the first batch warms up (autograd, the optimizer's state, the allocator), then one real step on the first
    batch is timed (at a learning rate of 0) and the adapters are thrown away. A step costs about what its
    batch costs, the same every time, so one timed step stands for all of them; timing two full steps had cost
    two steps' worth of a short healing."""
    import torch

    device = str(next(model.parameters()).device)
    compute = compute_dtype_for(model, compute)
    ids, mask = _batches(token_set, batch_size, device)[0]
    warm = min(ids.shape[1], WARM_UP_TOKENS)
    with _adapters(model, family, rank, None, layers) as (peft_model, _, _):
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=0.0)
        with autocast_to(model, compute):
            target = teacher(0, ids, mask) if teacher is not None else None
        _step(peft_model, optimizer, ids[:1, :warm], mask[:1, :warm], None if target is None else target[:1, :warm],
              compute)
        started = time.perf_counter()
        _step(peft_model, optimizer, ids, mask, target, compute)
        per_step = time.perf_counter() - started
    return per_step * steps


def original_names(tensors: dict[str, Any], family: Family, kept: Sequence[int]) -> dict[str, Any]:
    """Names with the pruned model's layer indices → the same tensors named with the original indices."""
    pattern = family.key_pattern()
    out = {}
    for name, value in tensors.items():
        match = pattern.match(name)
        if match is not None:
            name = f"{match['pre']}{family.layers_path.rsplit('.', 1)[-1]}.{kept[int(match['idx'])]}.{match['rest']}"
        out[name] = value
    return out
