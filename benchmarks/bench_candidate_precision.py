"""bi+'s candidate passes in float32 against the same passes under bfloat16 autocast, in one run.

    python benchmarks/bench_candidate_precision.py [MODEL.gguf ...] [--samples 8] [--seq-len 256] [--batch-size 4]

Most of the default job's time is bi+'s candidate passes (``core/cut/candidates.py``): the calibration
perplexity of many pruned sets on the first ``SELECTION_SAMPLES`` samples. Where the CPU has AMX or AVX-512 BF16,
bfloat16 matrix products are several times faster, so this measures what computing those passes in bfloat16 would
buy and what it would cost: bi+'s single-removal sweep (every layer, one at a time), first by a runner in float32,
then by a runner built and run under ``torch.autocast(bfloat16)`` (its cached states too, as a bfloat16 job would
compute them), then by a runner whose decoder layers alone compute in bfloat16 (``CandidateRunner(...,
compute=torch.bfloat16)``: the head's logits and their log-softmax stay float32). The sizes are bi+'s candidate
samples (``SELECTION_SAMPLES``, 8) at the quick preset's length (256) in the job's batches of 4. Printed per model
and way: both times and their ratio (bfloat16 / float32), the largest and the mean relative change of a
perplexity, and whether the two orders of the layers agree (the single-removal order is one of bi+'s finalists and
feeds its greedy windows). Nothing here changes the job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench_paths import GEMMA3, SMOLLM2, VALID, cached, require


def compare(model: str, calib: str, samples: int, seq_len: int, batch_size: int) -> None:
    import torch

    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.cut.candidates import CandidateRunner, head_stride
    from shortgpt_desktop.core.measure.calibration import build_token_set
    from shortgpt_desktop.core.pipeline import JobSpec, open_model, read_calibration

    loaded = open_model(JobSpec(model=model, device="cpu", dtype="float32"))
    texts, _, _ = read_calibration([calib])
    tokens = build_token_set(loaded.tokenizer, texts, None, samples, seq_len, 0)
    stack = InMemoryStack(loaded.model, loaded.family)
    sets = [[i] for i in range(loaded.n_layers)]

    def sweep(compute: object = None) -> list[float]:
        runner = CandidateRunner(stack, tokens.samples, tokens.pad_id, batch_size, stride=head_stride(stack),
                                 compute=compute)
        return [r.perplexity for r in runner.measure(sets)]

    def timed(run) -> tuple[list[float], float]:
        began = time.perf_counter()
        values = run()
        return values, time.perf_counter() - began

    def whole_autocast() -> list[float]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return sweep()

    full, full_s = timed(sweep)
    ways = {"everything in bfloat16": timed(whole_autocast),
            "layers in bfloat16, head in float32": timed(lambda: sweep(torch.bfloat16))}
    order_full = [sets[i][0] for i in sorted(range(len(sets)), key=full.__getitem__)]
    for way, (half, half_s) in ways.items():
        change = [b / a - 1 for a, b in zip(full, half, strict=True)]
        order_half = [sets[i][0] for i in sorted(range(len(sets)), key=half.__getitem__)]
        moved = [(a, b) for a, b in zip(order_full, order_half, strict=True) if a != b]
        print(f"| {Path(model).name} | {way} | {len(sets)} | {full_s:.1f} s | {half_s:.1f} s | "
              f"{half_s / full_s:.2f} | {max(map(abs, change)):.2%} | {sum(change) / len(change):+.2%} | "
              + ("the same" if not moved else "; ".join(f"{a} → {b}" for a, b in moved)) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="default: the SmolLM2 and Gemma 3 GGUFs the tests cache")
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--samples", type=int, default=8, help="bi+'s candidate samples (SELECTION_SAMPLES)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens a sample (the quick preset's)")
    parser.add_argument("--batch-size", type=int, default=4, help="the job's batch size")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    args.models = args.models or [str(m) for m in cached([SMOLLM2, GEMMA3])]
    if not args.models:
        sys.exit("No GGUF model given and none cached; run the slow tests once or pass a path.")
    require(args.calib, *args.models, instead="give another model path or --calib")

    import torch

    torch.set_num_threads(args.threads)
    print(f"{args.samples} × {args.seq_len} calibration tokens in batches of {args.batch_size}, {args.threads} "
          "threads\n")
    print("| model | bfloat16 | single removals | float32 | bfloat16 | bfloat16 / float32 | largest change | "
          "mean change | order |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        compare(model, args.calib, args.samples, args.seq_len, args.batch_size)


if __name__ == "__main__":
    main()
