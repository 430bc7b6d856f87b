"""What each step of the default recipe buys, on a real model, measured in one run through the engine.

    python benchmarks/bench_quality.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--calib wikitext2-valid.txt]
        [--eval wikitext2-test.txt] [--remove 8] [--heal-steps 40]

Rows: the full model; plain BI (the paper: the lowest-BI layers deleted); bi+ (the ends protected, candidates
checked by calibration perplexity); + the training-free repair; + LoRA healing. Each row gives the held-out
perplexity (32 windows × 256 tokens of ``--eval``, never used for calibration), the seconds that step added on
top of the one before, and the first words a greedy generation writes through the model's chat template.
Calibration: 32 samples × 256 tokens of ``--calib``. Defaults use the WikiText-2 files in ../shared/data and
the SmolLM2 GGUF cached by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = Path.home() / ".cache" / "shortgpt-desktop-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
PROMPT = "What is the capital of France, and why is it famous?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--calib", default=str(DEFAULT_DATA / "wikitext2-valid.txt"))
    parser.add_argument("--eval", default=str(DEFAULT_DATA / "wikitext2-test.txt"))
    parser.add_argument("--remove", type=int, default=8)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--heal-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import torch

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.engine import Engine, JobSpec
    from shortgpt_desktop.core.measure.metrics import METRICS
    from shortgpt_desktop.core.model.loading import quiet_library_progress

    torch.set_num_threads(args.threads)
    quiet_library_progress()
    spec = JobSpec(model=args.model, calib=[args.calib], eval_text=args.eval, samples=args.samples,
                   seq_len=args.seq_len, eval_windows=32, batch_size=8, device="cpu", dtype="float32",
                   metric="bi", repair="none", prompt=PROMPT, max_new_tokens=20)
    engine = Engine()
    t = time.perf_counter()
    engine.open(spec)
    engine.load(spec)
    tokens = engine.tokens_for(spec)
    load_seconds = time.perf_counter() - t
    loaded = engine.loaded
    assert loaded is not None
    rows: list[tuple[str, list[int], float, float, str]] = []

    def measure(label: str, removed: list[int], seconds: float, weights: dict | None = None) -> None:
        ppl = pipeline.measure_perplexity(loaded, tokens, removed, spec.batch_size, weights=weights).perplexity
        text = pipeline.generate(loaded, PROMPT, removed, spec.max_new_tokens, weights=weights)
        rows.append((label, removed, ppl, seconds, " ".join(text.split())[:60]))

    measure("full model", [], load_seconds)
    scored = engine.score(spec)
    plain = engine.plan(count=args.remove)
    measure("plain BI (paper)", plain.removed, scored.seconds)

    engine.use_scores(METRICS["bi+"].from_stats(engine.stats, 1))
    spec_plus = dataclasses.replace(spec, metric="bi+")
    t = time.perf_counter()
    safer = engine.refine(spec_plus, args.remove)
    measure("bi+ (safer choice)", safer.removed, time.perf_counter() - t)

    spec_repair = dataclasses.replace(spec_plus, repair="linear")
    t = time.perf_counter()
    repaired = engine.adjust(spec_repair, safer.removed)
    measure("bi+ + repair (default)", safer.removed, time.perf_counter() - t, repaired.weights)

    if args.heal_steps > 0:
        spec_heal = dataclasses.replace(spec_repair, heal_steps=args.heal_steps)
        healed = engine.adjust(spec_heal, safer.removed)
        heal_seconds = healed.seconds - (healed.repair.seconds if healed.repair is not None else 0.0)
        measure(f"+ heal {args.heal_steps} steps", safer.removed, heal_seconds, healed.weights)

    print(f"{Path(args.model).name}: {args.remove} of {engine.n_layers} layers removed; calibration "
          f"{len(tokens.samples)}×{args.seq_len} tokens of {Path(args.calib).name}; perplexity on "
          f"{tokens.eval_tokens:,} tokens of {Path(args.eval).name}; {args.threads} threads")
    print(f"{'recipe':<24} {'perplexity':>10} {'vs full':>8} {'seconds':>8}  layers removed / greedy text")
    full = rows[0][2]
    for label, removed, ppl, seconds, text in rows:
        print(f"{label:<24} {ppl:>10.2f} {ppl / full:>7.2f}x {seconds:>8.1f}  {removed or ''}")
        print(f"{'':<24} {'':>10} {'':>8} {'':>8}  “{text}”")


if __name__ == "__main__":
    main()
