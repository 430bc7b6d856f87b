"""The check's fidelity sums, the way they were against the way they are, measured in one run.

    python benchmarks/bench_check_memory.py [--vocab 49152 262144] [--tokens 256] [--threads 2]

The check compares one batch of the original's logits with the pruned model's (``FidelitySums.add``): the
perplexity, the KL divergence per token and the same top token. The way it was: the pruned model's log-softmax
over the whole batch at once, then the original's a row at a time. The way it is (``core/measure/evaluation.py``):
both a few positions at a time (``CHUNK_ELEMENTS``), each position's values written in place. For each vocabulary
(SmolLM2's 49,152 tokens and Gemma 3's 262,144 by default) it prints, on a batch of 4 × ``--tokens`` random
logits: the seconds of the sums (best of three), and the memory they take above the two logits they read (peak
resident memory in a fresh process, Linux), each way, with their ratios. Both ways give the same figures to the
last bit on a CPU (``tests/core/measure/test_evaluation.py``); the bench checks that too. At the defaults it
needs about 5 GB of memory (the 262k vocabulary's two batches of logits, in this process and in each child).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 4


class WholeBatchSums:
    """The way it was: the pruned model's log-probabilities for the whole batch, the original's row by row."""

    def __init__(self) -> None:
        self.total_nll, self.tokens, self.same, self.kls = 0.0, 0, 0, []

    def add(self, original_logits, logits, ids, mask) -> None:
        import torch

        from shortgpt_desktop.core.measure.evaluation import kl_per_token

        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        keep = mask[:, 1:].bool()
        nll = -logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        self.total_nll += float(nll[keep].double().sum())
        self.tokens += int(keep.sum())
        for row in range(ids.shape[0]):
            p_log = torch.log_softmax(original_logits[row, :-1].float(), dim=-1)
            q_log = logprobs[row]
            self.kls.append(kl_per_token(p_log, q_log).clamp_min(0.0)[keep[row]].double().cpu())
            self.same += int((p_log.argmax(-1) == q_log.argmax(-1))[keep[row]].sum())
            del p_log


def sums(way: str):
    from shortgpt_desktop.core.measure.evaluation import FidelitySums

    return WholeBatchSums() if way == "was" else FidelitySums()


def batch(vocab: int, tokens: int):
    """Two models' logits for one batch, made in place (no temporary as big as they are)."""
    import torch

    generator = torch.Generator().manual_seed(vocab)
    original = torch.empty(ROWS, tokens, vocab).normal_(generator=generator)
    pruned = torch.empty(ROWS, tokens, vocab).normal_(generator=generator)
    pruned.add_(original)
    ids = torch.randint(0, vocab, (ROWS, tokens), generator=generator)
    mask = torch.ones(ROWS, tokens, dtype=torch.long)
    return original, pruned, ids, mask


def high_water() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def child(way: str, vocab: int, tokens: int, threads: int) -> None:
    """In a fresh process: the bytes one batch's sums take above what was resident before (the logits)."""
    import torch

    torch.set_num_threads(threads)
    original, pruned, ids, mask = batch(vocab, tokens)
    sums(way).add(original[:, :3].contiguous(), pruned[:, :3].contiguous(), ids[:, :3], mask[:, :3])  # warm up
    before = high_water()
    sums(way).add(original, pruned, ids, mask)
    print(json.dumps({"extra": high_water() - before}))


def extra_bytes(way: str, vocab: int, tokens: int, threads: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": str(threads)}
    run = subprocess.run([sys.executable, __file__, "--child", way, "--vocab", str(vocab), "--tokens", str(tokens),
                          "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
    return int(json.loads(run.stdout.strip().splitlines()[-1])["extra"])


def seconds_and_figures(logits, rounds: int = 3) -> dict[str, tuple[float, tuple]]:
    """Each way's best time and its figures. The ways take turns, round after round, so that a change in the
    machine's speed during the run (another process, the CPU's clock) falls on both alike."""
    import torch

    best: dict[str, tuple[float, tuple]] = {}
    for _ in range(rounds):
        for way in ("was", "is"):
            started = time.perf_counter()
            result = sums(way)
            result.add(*logits)
            seconds = time.perf_counter() - started
            figures = (result.total_nll, result.tokens, result.same, torch.cat(result.kls).tolist())
            best[way] = (min(seconds, best.get(way, (float("inf"),))[0]), figures)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144])
    parser.add_argument("--tokens", type=int, default=256, help="tokens a window (the quick preset's 256)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--child", choices=["was", "is"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.vocab[0], args.tokens, args.threads)
        return
    import torch

    torch.set_num_threads(args.threads)
    print(f"one batch of {ROWS} × {args.tokens} tokens, {args.threads} threads")
    print("| vocabulary | one model's logits | sums: was | is | is / was | memory above the logits: was | is "
          "| is / was |")
    print("|---|---|---|---|---|---|---|---|")
    for vocab in args.vocab:
        logits = batch(vocab, args.tokens)
        timed = seconds_and_figures(logits)
        (was_s, was_figures), (is_s, is_figures) = timed["was"], timed["is"]
        if was_figures != is_figures:
            raise SystemExit(f"vocabulary {vocab}: the two ways give different figures")
        size = logits[1].numel() * logits[1].element_size()
        del logits
        was_b, is_b = (extra_bytes(way, vocab, args.tokens, args.threads) for way in ("was", "is"))
        print(f"| {vocab:,} | {size / 1e6:,.0f} MB | {was_s:.3f} s | {is_s:.3f} s | {is_s / was_s:.2f} | "
              f"{was_b / 1e6:,.0f} MB | {is_b / 1e6:,.0f} MB | {is_b / max(was_b, 1):.2f} |")
    print("the same figures both ways, to the last bit")


if __name__ == "__main__":
    main()
