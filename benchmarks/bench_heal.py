"""What healing spends before its first step, the way it was against the way it is, measured in one run.

    python benchmarks/bench_heal.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--steps 10] [--heal] [--heal-only]

Healing distils from the original model: it needs the original's final states on the calibration batches it
reads, and it times a step to say how long it will take. The way it was: the original over every calibration
batch with its perplexity (``ops.reference``), then two real steps timed and thrown away. The way it is
(``Engine._teacher``, ``healing.estimate_heal_seconds``): the original over the batches ``--steps`` steps read
alone, no head pass, then one step timed after a 16-token warm-up. Both on the same pruned model (``--remove``,
no repair: the repair does not change these costs) and the same tokens (the app's 128 × 512 calibration tokens of
``--calib``, ``--batch-size`` samples a step). With ``--heal``, the engine then repairs and heals that cut for
``--steps`` steps and the held-out windows (32 × 256 tokens of ``--eval``) measure it, as bench_quality does;
``--heal-only`` skips the comparison before it. The way it was is float32 throughout; the way it is computes in the
dtype healing picks (bfloat16 on a CPU with AMX or AVX-512 BF16), so on such a CPU the ratios hold both changes:
the fewer batches and the dtype. The last line's estimates put a float32 step and a step as healing computes it
side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from bench_paths import SMOLLM2, TEST, VALID, require

from shortgpt_desktop.core.defaults import SAMPLES, SEQ_LEN


def as_it_was(engine, spec, tokens, removed) -> tuple[float, float, float]:
    """(seconds of the teacher over every batch, of the two timed steps, the estimate they gave)."""
    import torch

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.backends.layerwise import Batch, InMemoryStack
    from shortgpt_desktop.core.cut import healing

    loaded = engine.loaded
    t = time.perf_counter()
    reference = ops.reference(engine.backend.stack, tokens.samples, tokens.pad_id, spec.batch_size)
    teacher_seconds = time.perf_counter() - t
    with pipeline.modified(loaded, removed, {}):
        stack = InMemoryStack(loaded.model, loaded.family)

        def logits(number, ids, mask):
            with stack.head() as logits_of:
                return logits_of(Batch(ids, mask, None), reference.final_states[number]).clone()

        batches = healing._batches(tokens, spec.batch_size, "cpu")[:2]
        t = time.perf_counter()
        with healing._adapters(loaded.model, loaded.family, 8, None) as (peft_model, _, _):
            optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.0)
            times = []
            for number, (ids, mask) in enumerate(batches):
                started = time.perf_counter()
                healing._step(peft_model, optimizer, ids, mask, logits(number, ids, mask))
                times.append(time.perf_counter() - started)
        estimate_seconds = time.perf_counter() - t
    return teacher_seconds, estimate_seconds, times[0] + times[1] * (spec.heal_steps - 1)


def as_it_is(engine, spec, tokens, removed) -> tuple[float, float, float]:
    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.cut import healing

    loaded = engine.loaded
    t = time.perf_counter()
    teacher = engine._teacher(spec, tokens, None)
    teacher_seconds = time.perf_counter() - t
    with pipeline.modified(loaded, removed, {}):
        t = time.perf_counter()
        said = healing.estimate_heal_seconds(loaded.model, loaded.family, tokens, spec.heal_steps, spec.batch_size,
                                             teacher=teacher.bind())
        estimate_seconds = time.perf_counter() - t
    return teacher_seconds, estimate_seconds, said


def cut_arguments(description: str, steps: int, batch_size: int) -> argparse.ArgumentParser:
    """The options the healing benchmarks share: the model, the texts, the cut, the steps, the threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--eval", default=str(TEST))
    parser.add_argument("--remove", default="3,4,5,7,16,17,25,26", help="the cut (default: the default job's)")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    return parser


def main() -> None:
    parser = cut_arguments(__doc__.splitlines()[0], steps=10, batch_size=8)
    parser.add_argument("--heal", action="store_true", help="then repair and heal the cut, and measure it")
    parser.add_argument("--heal-only", action="store_true", help="skip the before-the-first-step comparison")
    args = parser.parse_args()
    require(args.model, args.calib, args.eval)

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    from shortgpt_desktop.core.engine import Engine, JobSpec

    torch.set_num_threads(args.threads)
    removed = [int(i) for i in args.remove.split(",")]
    spec = JobSpec(model=args.model, calib=[args.calib], eval_text=args.eval, samples=SAMPLES, seq_len=SEQ_LEN,
                   eval_windows=32, batch_size=args.batch_size, device="cpu", dtype="float32", metric="bi+",
                   repair="linear", heal_steps=args.steps)
    engine = Engine()
    engine.load(spec)
    tokens = engine.tokens_for(spec)
    print(f"{Path(args.model).name}, layers {args.remove} removed, {len(tokens.samples)} × {tokens.seq_len} "
          f"calibration tokens, {args.steps} steps of {args.batch_size} samples, {args.threads} threads")
    if not args.heal_only:
        before_the_first_step(engine, spec, tokens, removed, args.steps)
    if args.heal:
        heal_and_measure(engine, spec, removed, args.steps)


def before_the_first_step(engine, spec, tokens, removed, steps: int) -> None:
    from shortgpt_desktop.core.cut.healing import compute_dtype_for
    from shortgpt_desktop.core.model.dtypes import dtype_name

    was = as_it_was(engine, spec, tokens, removed)
    now = as_it_is(engine, spec, tokens, removed)
    computed = compute_dtype_for(engine.loaded.model)
    computed = dtype_name(computed) if computed is not None else "float32"
    print("| before the first step | the way it was | the way it is | is / was |")
    print("|---|---|---|---|")
    for label, a, b in (("the original's states (teacher)", was[0], now[0]), ("timing steps for the estimate",
                                                                             was[1], now[1])):
        print(f"| {label} | {a:.1f} s | {b:.1f} s | {b / a:.2f} |")
    before, after = was[0] + was[1], now[0] + now[1]
    print(f"| in all | {before:.1f} s | {after:.1f} s | {after / before:.2f} |")
    print(f"the estimate of {steps} steps: {was[2]:.1f} s (two float32 steps timed) / {now[2]:.1f} s (one step "
          f"timed, computed in {computed})")


def heal_and_measure(engine, spec, removed, steps: int) -> None:
    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.backends import ops

    tokens = engine.tokens_for(spec)
    windows = pipeline.prepare_tokens(engine.loaded, dataclasses.replace(spec, seq_len=256, samples=1))[0]
    windows = windows.eval_windows
    stack = engine.backend.stack
    reference = ops.reference(stack, windows, tokens.pad_id, spec.batch_size)
    for label, n in (("repaired", 0), (f"+ heal {steps} steps", steps)):
        adjusted = engine.adjust(dataclasses.replace(spec, heal_steps=n), removed)
        result, fidelity = ops.compare(stack, windows, tokens.pad_id, reference, removed, adjusted.weights)
        heal = adjusted.heal
        spent = (f"healing {adjusted.step_seconds['heal']:.1f} s in all (the teacher, the estimate, the steps; "
                 f"computed in {heal.compute_dtype})") if heal is not None else f"{adjusted.seconds:.1f} s"
        print(f"{label}: perplexity {result.perplexity:.2f} (full {reference.result.perplexity:.2f}), mean KL "
              f"{fidelity.mean_kl:.3f}, same top {fidelity.same_top:.1%}, {spent}")


if __name__ == "__main__":
    main()
