"""Healing variants screened at the same tokens, from the same repaired model, in one run.

    python benchmarks/bench_heal_variants.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--steps 20] [--only NAME ...]

The default job's cut (``--remove``) is repaired as the default job repairs it, then each variant trains from that
repaired model for ``--steps`` steps of ``--batch-size`` calibration samples (128 × 512 tokens of ``--calib``, as
the app's healing reads them; a variant with its own batch size takes as many steps as read the same tokens), and
the held-out windows (32 × 256 tokens of ``--eval``) measure it against the original: perplexity, mean KL and
same top token, as the check reports them. Every variant computes in the dtype healing picks and distils from the
same teacher states (``Engine._teacher``). The first row is what ``healing.heal`` ships (LoRA rank 8 on every
projection of the kept layers, Adam at ``DEFAULT_LEARNING_RATE``, KL to the original); the others change one
thing each:

- ``rank 32``: wider adapters;
- ``lr 3e-3``: three times the learning rate;
- ``LoRA+ 16``: the B matrices at 16 times the A matrices' rate (Hayou et al., 2024);
- ``+ norms``: the kept layers' norm weights trained too;
- ``batch 1``: a sample a step, four times the steps (more updates for the same tokens);
- ``full 2e-5`` / ``full 1e-4``: every projection of the kept layers trained in full, no adapters;
- ``+ top-1 CE``: the KL plus the cross-entropy to the original's top token;
- ``+ text CE 0.5``: the KL plus half the next-token loss on the calibration text itself, which adapts the model
  to the calibration text's domain (here the evaluation text's too) rather than to the original;
- ``+ states 1`` / ``+ states 0.1``: the KL plus that weight times the distance of each kept layer's output from
  the original's output of the same layer (squared, relative to the original's, per token, averaged over the
  kept layers but the last), the original's states computed once before training: distillation of the
  intermediate states as well as of the output.

Step seconds move with this shared machine's load; the quality columns do not (one seed).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from bench_heal import cut_arguments  # the same options as bench_heal.py
from bench_paths import require


@dataclasses.dataclass
class Variant:
    name: str
    shipped: bool = False  # healing.heal itself, not this benchmark's loop
    rank: int = 8
    learning_rate: float | None = None  # None: healing.DEFAULT_LEARNING_RATE
    b_ratio: float = 1.0  # LoRA+: the B matrices' rate over the A matrices'
    norms: bool = False  # also train the kept layers' norm weights
    full: bool = False  # train the projections themselves, no adapters
    batch_size: int | None = None  # None: --batch-size; the steps scale so that the same tokens are read
    top1_ce: float = 0.0  # weight of the cross-entropy to the original's top token
    text_ce: float = 0.0  # weight of the next-token loss on the calibration text
    states: float = 0.0  # weight of the kept layers' distance from the original's states at the same layers


VARIANTS = [
    Variant("shipped", shipped=True),
    Variant("rank 32", rank=32),
    Variant("lr 3e-3", learning_rate=3e-3),
    Variant("LoRA+ 16", b_ratio=16.0),
    Variant("+ norms", norms=True),
    Variant("batch 1", batch_size=1),
    Variant("full 2e-5", full=True, learning_rate=2e-5),
    Variant("full 1e-4", full=True, learning_rate=1e-4),
    Variant("+ top-1 CE", top1_ce=1.0),
    Variant("+ text CE 0.5", text_ce=0.5),
    Variant("+ states 1", states=1.0),
    Variant("+ states 0.1", states=0.1),
]


def original_states(model: Any, batches: list[tuple[Any, Any]], kept: list[int], compute: Any) -> list[list[Any]]:
    """For each batch, the original's output of each kept layer but the last (``hidden_states[j + 1]`` leaves
    layer ``j``; the model's last entry has its final norm in, so the last layer is left to the KL), in bfloat16."""
    import torch

    from shortgpt_desktop.core.cut.healing import autocast_to

    out = []
    with torch.no_grad(), autocast_to(model, compute):
        for ids, mask in batches:
            hidden = model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states
            out.append([hidden[j + 1].to(torch.bfloat16) for j in kept[:-1]])
    return out


def state_distance(outputs: list[Any], targets: list[Any], mask: Any) -> Any:
    """Mean over the layers of the per-token squared distance relative to the target's, on the real tokens."""
    keep = mask.bool()
    terms = []
    for out, target in zip(outputs, targets, strict=True):
        out, target = out[keep].float(), target[keep].float()
        terms.append((((out - target) ** 2).sum(-1) / (target**2).sum(-1).clamp_min(1e-12)).mean())
    return sum(terms) / len(terms)


def loss_of(model: Any, ids: Any, mask: Any, teacher_logits: Any, variant: Variant,
            layer_outputs: list[Any] | None = None, layer_targets: list[Any] | None = None) -> Any:
    """The variant's loss: healing's KL(original || pruned) on the real tokens, plus the variant's extra terms
    (``layer_outputs``: filled by hooks during the forward pass, for ``+ states``)."""
    import torch
    import torch.nn.functional as F

    from shortgpt_desktop.core.cut.healing import distillation_loss

    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    loss = distillation_loss(logits, teacher_logits, mask)
    if variant.top1_ce:
        keep = mask.bool()
        student = torch.log_softmax(logits[keep].float(), dim=-1)
        loss = loss + variant.top1_ce * F.nll_loss(student, teacher_logits[keep].argmax(-1))
    if variant.states:
        assert layer_outputs is not None and layer_targets is not None
        loss = loss + variant.states * state_distance(layer_outputs, layer_targets, mask)
    if variant.text_ce:
        next_logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = loss + variant.text_ce * F.nll_loss(next_logprobs.reshape(-1, next_logprobs.shape[-1]),
                                                   labels.reshape(-1), ignore_index=-100)
    return loss


def train(model: Any, family: Any, tokens: Any, logits_of: Any, variant: Variant, steps: int,
          batch_size: int, states_of: Any = None) -> tuple[float, float, float]:
    """Train the variant in place; (seconds, first loss, mean of the last five losses). ``states_of(number)``: the
    original's outputs of the kept layers but the last for batch ``number`` (``+ states``)."""
    import torch

    from shortgpt_desktop.core.cut import healing

    lr = variant.learning_rate or healing.DEFAULT_LEARNING_RATE
    compute = healing.compute_dtype_for(model)
    batches = healing._batches(tokens, batch_size, "cpu")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    losses: list[float] = []
    torch.manual_seed(0)
    was_training = model.training
    model.eval()

    outputs: list[Any] = []
    hooks = []
    if variant.states:  # the pruned view's layers are the kept ones in order; the last is left to the KL
        def hook(module: Any, args: Any, output: Any) -> None:
            outputs.append(output[0] if isinstance(output, tuple) else output)

        hooks = [layer.register_forward_hook(hook) for layer in model.get_submodule(family.layers_path)[:-1]]

    def run(trained: Any, groups: list[dict[str, Any]]) -> None:
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        for step in range(steps):
            number = step % len(batches)
            ids, mask = batches[number]
            with healing.autocast_to(model, compute):
                teacher_logits = logits_of(number, ids, mask)
                outputs.clear()  # the teacher's head runs the layers as replays: their outputs are not the student's
                loss = loss_of(trained, ids, mask, teacher_logits, variant, outputs,
                               states_of(number) if variant.states else None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))

    started = time.perf_counter()
    try:
        if variant.full:
            for p in model.parameters():
                p.requires_grad_(False)
            weights = [model.get_submodule(name).weight for name in healing.target_modules(model, family)]
            for p in weights:
                p.requires_grad_(True)
            run(model, [{"params": weights, "lr": lr}])
        else:
            with healing._adapters(model, family, variant.rank, None) as (peft_model, _, state):
                named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
                groups = [{"params": [p for n, p in named if "lora_A" in n], "lr": lr},
                          {"params": [p for n, p in named if "lora_B" in n], "lr": lr * variant.b_ratio}]
                if variant.norms:
                    norms = [p for n, p in model.named_parameters()
                             if n.startswith(family.layers_path + ".") and "norm" in n]
                    for p in norms:
                        p.requires_grad_(True)
                    groups.append({"params": norms, "lr": lr})
                run(peft_model, groups)
                peft_model.merge_and_unload()
                state["merged"] = True
    finally:
        for handle in hooks:
            handle.remove()
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))
        model.train(was_training)
    return time.perf_counter() - started, losses[0], sum(losses[-5:]) / len(losses[-5:])


def main() -> None:
    parser = cut_arguments(__doc__.splitlines()[0], steps=20, batch_size=4)
    parser.add_argument("--only", nargs="*", help="names of the variants to run, in that order (default: all)")
    args = parser.parse_args()
    require(args.model, args.calib, args.eval)

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.cut import healing
    from shortgpt_desktop.core.defaults import SAMPLES, SEQ_LEN
    from shortgpt_desktop.core.engine import Engine, JobSpec

    torch.set_num_threads(args.threads)
    by_name = {v.name: v for v in VARIANTS}
    unknown = [name for name in args.only or [] if name not in by_name]
    if unknown:
        raise SystemExit(f"no variant named {', '.join(unknown)}; the variants: {', '.join(by_name)}")
    variants = [by_name[name] for name in args.only] if args.only else VARIANTS  # in the order given
    removed = [int(i) for i in args.remove.split(",")]
    samples_read = args.steps * args.batch_size
    spec = JobSpec(model=args.model, calib=[args.calib], eval_text=args.eval, samples=SAMPLES, seq_len=SEQ_LEN,
                   eval_windows=32, batch_size=args.batch_size, device="cpu", dtype="float32", metric="bi+",
                   repair="linear")
    engine = Engine()
    loaded = engine.load(spec)
    tokens = engine.tokens_for(spec)
    repaired = engine.adjust(spec, removed).weights
    # The original's states one sample a batch, so that a variant of any batch size finds its samples' states.
    teacher = engine._teacher(dataclasses.replace(spec, batch_size=1, heal_steps=samples_read), tokens, None)
    stack = engine.backend.stack
    windows = pipeline.prepare_tokens(loaded, dataclasses.replace(spec, seq_len=256, samples=1))[0].eval_windows
    reference = ops.reference(stack, windows, tokens.pad_id, 4)
    kept = [i for i in range(loaded.n_layers) if i not in removed]
    model, family = loaded.model, loaded.family
    states_by_batch_size: dict[int, list[list[Any]]] = {}  # the original's, for the variants that distil them
    for variant in variants:
        size = variant.batch_size or args.batch_size
        if variant.states and size not in states_by_batch_size:
            batches = healing._batches(tokens, size, "cpu")[: max(1, samples_read // size)]
            states_by_batch_size[size] = original_states(model, batches, kept, healing.compute_dtype_for(model))
    print(f"{Path(args.model).name}, layers {args.remove} removed and repaired, {args.steps} steps of "
          f"{args.batch_size} × {tokens.seq_len} tokens (or as many tokens), full perplexity "
          f"{reference.result.perplexity:.2f}")
    print("| variant | perplexity | mean KL | same top | s / step | loss first → last 5 |")
    print("|---|---|---|---|---|---|")

    def row(name: str, weights: dict[str, Any], extra: str) -> None:
        result, fidelity = ops.compare(stack, windows, tokens.pad_id, reference, removed, weights)
        print(f"| {name} | {result.perplexity:.2f} | {fidelity.mean_kl:.3f} | {fidelity.same_top:.1%} | {extra}",
              flush=True)

    row("repaired, no healing", repaired, "— | — |")
    for variant in variants:
        batch_size = variant.batch_size or args.batch_size
        steps = max(1, samples_read // batch_size)
        with pipeline.modified(loaded, removed, repaired):
            before = {} if variant.shipped else {n: t.detach().clone() for n, t in model.state_dict().items()}
            bound = teacher.bind()

            def logits_of(number: int, ids: Any, mask: Any, bound: Any = bound, batch_size: int = batch_size) -> Any:
                # the teacher's batches hold one sample each: a batch of several is their concatenation
                rows = [bound(number * batch_size + k, ids[k:k + 1], mask[k:k + 1]) for k in range(ids.shape[0])]
                if len({r.shape[1] for r in rows}) > 1:
                    raise SystemExit("a batch mixes samples of different lengths: pick a batch size that avoids the "
                                     "calibration text's short last sample")
                return torch.cat(rows)

            if variant.shipped:
                result = healing.heal(model, family, tokens, steps=steps, batch_size=batch_size, keep_original=True,
                                      teacher=logits_of)
                last5 = result.losses[-5:]
                seconds, first, last = result.seconds, result.losses[0], sum(last5) / len(last5)
                changed = result.changed
            else:
                try:
                    seconds, first, last = train(model, family, tokens, logits_of, variant, steps, batch_size,
                                                 states_by_batch_size.get(batch_size, []).__getitem__)
                finally:  # the weights as they were, trained or not
                    state = model.state_dict()
                    changed = {n: t.detach().clone() for n, t in state.items() if not torch.equal(t, before[n])}
                    with torch.no_grad():
                        for name in changed:
                            state[name].copy_(before[name])
        weights = dict(repaired)
        weights.update(healing.original_names(changed, family, kept))
        row(f"{variant.name} ({steps} × {batch_size})", weights, f"{seconds / steps:.2f} | {first:.3f} → {last:.3f} |")


if __name__ == "__main__":
    main()
