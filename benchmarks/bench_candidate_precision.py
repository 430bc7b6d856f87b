"""bi+'s candidate passes in float32 against the same passes under bfloat16 autocast, in one run.

    python benchmarks/bench_candidate_precision.py [MODEL.gguf ...] [--samples 8] [--seq-len 256]

Most of the default job's time is bi+'s candidate passes (``core/cut/candidates.py``): the calibration
perplexity of many pruned sets on the first ``SELECTION_SAMPLES`` samples. Where the CPU has AMX or AVX-512 BF16,
bfloat16 matrix products are several times faster, so this measures what computing those passes in bfloat16 would
buy and what it would cost: the single-removal sweep (every layer but the ends, one at a time) on the same cached
runner, once in float32 and once under ``torch.autocast(bfloat16)``. Printed per model: both times and their
ratio, the largest and the mean relative change of a perplexity, and whether the two orders of the layers agree
(the single-removal order is one of bi+'s finalists and feeds its greedy windows). Nothing here changes the job.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "shortgpt-desktop-tests"
DEFAULT_MODELS = [CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf", CACHE / "gemma-3-270m-q4_k_m.gguf"]
DEFAULT_CALIB = HERE.parent.parent / "shared" / "data" / "wikitext2-valid.txt"


def compare(model: str, calib: str, samples: int, seq_len: int) -> None:
    import torch

    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.cut.candidates import CandidateRunner, head_stride
    from shortgpt_desktop.core.measure.calibration import build_token_set
    from shortgpt_desktop.core.pipeline import JobSpec, open_model, read_calibration

    loaded = open_model(JobSpec(model=model, device="cpu", dtype="float32"))
    texts, _, _ = read_calibration([calib])
    tokens = build_token_set(loaded.tokenizer, texts, None, samples, seq_len, 0)
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, tokens.samples, tokens.pad_id, samples, stride=head_stride(stack))
    sets = [[i] for i in range(1, loaded.n_layers - 1)]
    started = time.perf_counter()
    full = [r.perplexity for r in runner.measure(sets)]
    middle = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = [r.perplexity for r in runner.measure(sets)]
    ended = time.perf_counter()
    change = [b / a - 1 for a, b in zip(full, half, strict=True)]
    order_full = [sets[i][0] for i in sorted(range(len(sets)), key=full.__getitem__)]
    order_half = [sets[i][0] for i in sorted(range(len(sets)), key=half.__getitem__)]
    swapped = [(a, b) for a, b in zip(order_full, order_half, strict=True) if a != b]
    print(f"| {Path(model).name} | {len(sets)} | {middle - started:.1f} s | {ended - middle:.1f} s | "
          f"{(ended - middle) / (middle - started):.2f} | {max(map(abs, change)):.2%} | "
          f"{sum(change) / len(change):+.2%} | {'same' if not swapped else f'{len(swapped)} places differ'} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=[str(m) for m in DEFAULT_MODELS])
    parser.add_argument("--calib", default=str(DEFAULT_CALIB))
    parser.add_argument("--samples", type=int, default=8, help="bi+'s candidate samples (SELECTION_SAMPLES)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"{args.samples} × {args.seq_len} calibration tokens, {args.threads} threads\n")
    print("| model | single removals | float32 | bfloat16 | ratio | largest change | mean change | order |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        compare(model, args.calib, args.samples, args.seq_len)


if __name__ == "__main__":
    main()
