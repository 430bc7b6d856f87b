"""Perplexity of SmolLM2-135M-Instruct pruned by Block Influence, plain and with the training-free repair.

    python benchmarks/bench_repair.py --calib wikitext2-valid.txt --eval wikitext2-test.txt [--remove 8]
        [--orders sequential,independent] [--heal-steps 0] [--model SmolLM2-135M-Instruct.Q4_1.gguf]

Calibration: 32 samples × 256 tokens of ``--calib``; perplexity: 32 windows × 256 tokens of ``--eval``.
Prints full / plain BI / BI + repair (both fit orders) and, with ``--heal-steps``, BI + repair + LoRA healing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache" / "shortgpt-desktop-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--calib", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--remove", type=int, default=8)
    parser.add_argument("--removed", default="", help="comma-separated layers: skip scoring and the full model")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--ridge", type=float, default=1e-2)
    parser.add_argument("--orders", default="sequential,independent", help="repair fit orders to measure")
    parser.add_argument("--heal-steps", type=int, default=0, help="heal the first order's repaired model")
    parser.add_argument("--heal-lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import torch

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.calibration import build_token_set
    from shortgpt_desktop.core.evaluation import perplexity_of
    from shortgpt_desktop.core.plan import make_plan
    from shortgpt_desktop.core.repair import fit_linear_repair, repaired_pruned_view
    from shortgpt_desktop.core.scoring import score_model
    from shortgpt_desktop.core.surgery import pruned_view

    torch.set_num_threads(args.threads)
    loaded = pipeline.open_model(pipeline.JobSpec(model=args.model, device="cpu", dtype="float32"))
    model, family = loaded.model, loaded.family
    tokens = build_token_set(loaded.tokenizer, [Path(args.calib).read_text(encoding="utf-8")],
                             [Path(args.eval).read_text(encoding="utf-8")], samples=args.samples,
                             seq_len=args.seq_len, max_eval_windows=32)

    def ppl() -> float:
        return perplexity_of(model, tokens.eval_windows, tokens.pad_id, 8).perplexity

    if args.removed:
        removed = [int(i) for i in args.removed.split(",")]
    else:
        t = time.perf_counter()
        scores = score_model(model, family, tokens, "bi", batch_size=8)
        removed = make_plan(loaded.n_layers, scores.scores, count=args.remove).removed
        print(f"removed {removed} (scoring {time.perf_counter() - t:.1f} s)")
        print(f"full           ppl {ppl():8.2f}")
    with pruned_view(model, family, removed):
        print(f"plain BI       ppl {ppl():8.2f}")
    results = {}
    orders = args.orders.split(",")
    for order in orders:
        t = time.perf_counter()
        result = fit_linear_repair(model, family, tokens, removed, batch_size=8, ridge=args.ridge, order=order)
        seconds = time.perf_counter() - t
        results[order] = result
        with repaired_pruned_view(model, family, result):
            print(f"BI + repair ({order:11s}) ppl {ppl():8.2f}   fit {seconds:.1f} s")
        for run in result.runs:
            if run.repaired:
                print(f"    run {run.start}-{run.end - 1}: residual {run.residual_before:.3f} → "
                      f"{run.residual_after:.3f} ({run.parameter})")
            else:
                print(f"    run {run.start}-{run.end - 1}: {run.note}")
    if args.heal_steps:
        from shortgpt_desktop.core.healing import estimate_heal_seconds, heal
        from shortgpt_desktop.core.repair import apply_repair
        from shortgpt_desktop.core.surgery import prune_in_memory

        apply_repair(model, results[orders[0]], family)
        prune_in_memory(model, family, removed)
        estimate = estimate_heal_seconds(model, family, tokens, args.heal_steps, batch_size=4)
        t = time.perf_counter()
        healed = heal(model, family, tokens, steps=args.heal_steps, batch_size=4, learning_rate=args.heal_lr)
        print(f"BI + repair + heal {args.heal_steps} steps ppl {ppl():8.2f}   heal {time.perf_counter() - t:.1f} s "
              f"(estimated {estimate:.1f} s), loss {healed.losses[0]:.3f} → {healed.losses[-1]:.3f}")


if __name__ == "__main__":
    main()
