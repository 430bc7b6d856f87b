"""What each step of the default recipe buys, on a real model, measured in one run through the engine.

    python benchmarks/bench_quality.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--calib wikitext2-valid.txt]
        [--eval wikitext2-test.txt] [--remove 8] [--heal-steps 40] [--no-refit]

Rows: the full model; plain BI (the paper: the lowest-BI layers deleted); with ``--narrow``, bi+ as it was (ends
protected, a greedy search over the 3 lowest-BI layers); bi+'s measured choice judged unrepaired; that choice
repaired; the default recipe (bi+ comparing its finalists repaired, then the training-free repair); + the MLP refit
(``--repair refit``: the kept MLP before each cut refitted on cached activations); + healing (LoRA distilled from
the original, after the refit, or after the default recipe with ``--no-refit``). Each row gives the held-out
perplexity (32 windows × ``--eval-seq-len`` tokens of ``--eval``, never used for calibration), the fidelity to the
original on the same tokens as llama.cpp reports a quantization (mean KL divergence per token, same top token), the
seconds that step added, the check's quiz (of the questions the full model answers right, how many this one does:
``core/measure/quiz.py``), and the first words a greedy generation writes through the model's chat template.
Calibration: the app's default size (128 samples × 512 tokens) of ``--calib``. Defaults use the WikiText-2 files
in ../shared/data and the SmolLM2 GGUF cached by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from bench_paths import SMOLLM2, TEST, VALID, require

from shortgpt_desktop.core.defaults import SAMPLES, SEQ_LEN

PROMPT = "What is the capital of France, and why is it famous?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--eval", default=str(TEST))
    parser.add_argument("--remove", type=int, default=8)
    parser.add_argument("--samples", type=int, default=SAMPLES, help="calibration samples (default: the app's)")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help="calibration sample length (default: the app's)")
    parser.add_argument("--eval-seq-len", type=int, default=256, help="length of the 32 held-out windows")
    parser.add_argument("--heal-steps", type=int, default=40)
    parser.add_argument("--no-refit", dest="refit", action="store_false", help="skip the + MLP refit row")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--narrow", action="store_true", help="also the previous bi+ (a BI window only)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    require(args.model, args.calib, args.eval)

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.cut.selection import choose_layers_safely
    from shortgpt_desktop.core.engine import Engine, JobSpec
    from shortgpt_desktop.core.measure.metrics import METRICS
    from shortgpt_desktop.core.measure.quiz import ask_quiz

    torch.set_num_threads(args.threads)
    spec = JobSpec(model=args.model, calib=[args.calib], eval_text=args.eval, samples=args.samples,
                   seq_len=args.seq_len, eval_windows=32, batch_size=args.batch_size, device="cpu", dtype="float32",
                   metric="bi", repair="none", prompt=PROMPT, max_new_tokens=20)
    engine = Engine()
    t = time.perf_counter()
    engine.open(spec)
    engine.load(spec)
    tokens = engine.tokens_for(spec)
    load_seconds = time.perf_counter() - t
    loaded = engine.loaded
    assert loaded is not None and engine.backend is not None
    stack = engine.backend.stack
    # The held-out windows keep their own length whatever the calibration samples' length is.
    windows = pipeline.prepare_tokens(loaded, dataclasses.replace(spec, seq_len=args.eval_seq_len, samples=1))[0]
    windows = windows.eval_windows
    reference = ops.reference(stack, windows, tokens.pad_id, spec.batch_size)
    rows: list[tuple[str, list[int], float, float, float, float, str, str]] = []
    original_answers: list[str] | None = None

    def measure(label: str, removed: list[int], seconds: float, weights: dict | None = None) -> None:
        nonlocal original_answers
        result, fidelity = ops.compare(stack, windows, tokens.pad_id, reference, removed, weights)
        text = pipeline.generate(loaded, PROMPT, removed, spec.max_new_tokens, weights=weights)
        asked = ask_quiz(stack, loaded.tokenizer, loaded.model, removed, weights, original_answers)
        quiz = "-"
        if asked is not None:
            original_answers = asked[1]
            quiz = f"{asked[0].kept} of {asked[0].known}"
            print(f"{label}: " + "; ".join(f"{a.question} {'+' if a.pruned_right else '-'}"
                                             for a in asked[0].answers if a.original_right))
        rows.append((label, removed, result.perplexity, fidelity.mean_kl, fidelity.same_top, seconds, quiz,
                     " ".join(text.split())[:60]))

    measure("full model", [], load_seconds)
    scored = engine.score(spec)
    plain = engine.plan(count=args.remove)
    measure("plain BI (paper)", plain.removed, scored.seconds)

    if args.narrow:
        t = time.perf_counter()
        narrow = choose_layers_safely(stack, tokens, args.remove, engine.stats.bi, spec.batch_size, wider=False)
        measure("bi+ as it was", narrow.removed, time.perf_counter() - t)

    engine.use_scores(METRICS["bi+"].from_stats(engine.stats, 1))
    spec_plus = dataclasses.replace(spec, metric="bi+")
    t = time.perf_counter()
    safer = engine.refine(spec_plus, args.remove)
    measure("bi+ (wider search)", safer.removed, time.perf_counter() - t)

    spec_repair = dataclasses.replace(spec_plus, repair="linear")
    t = time.perf_counter()
    repaired = engine.adjust(spec_repair, safer.removed)
    measure("bi+ choice + repair", safer.removed, time.perf_counter() - t, repaired.weights)

    # The default job repairs, so bi+ compares its finalists repaired: its choice can differ from the row above.
    t = time.perf_counter()
    chosen = engine.refine(spec_repair, args.remove).removed
    repaired = engine.adjust(spec_repair, chosen)
    measure("bi+ judged repaired + repair (default)", chosen, time.perf_counter() - t, repaired.weights)

    if args.refit:
        spec_refit = dataclasses.replace(spec_repair, repair="refit")
        refitted = engine.adjust(spec_refit, chosen)
        measure("+ MLP refit (--repair refit)", chosen, refitted.step_seconds["refit"], refitted.weights)
        for run in refitted.results["refit"].runs:
            print(f"refit of layer {run.layer} (run {run.start}-{run.end - 1}): held-out residual "
                  f"{run.residual_before:.3f} → {run.residual_after:.3f}, {run.steps} steps on {run.tokens} tokens")

    if args.heal_steps > 0:  # healing starts from the best training-free result the run measured
        spec_heal = dataclasses.replace(spec_refit if args.refit else spec_repair, heal_steps=args.heal_steps)
        healed = engine.adjust(spec_heal, chosen)
        measure(f"{'+ MLP refit ' if args.refit else ''}+ heal {args.heal_steps} steps", chosen,
                healed.step_seconds["heal"], healed.weights)

    print(f"{Path(args.model).name}: {args.remove} of {engine.n_layers} layers removed; calibration "
          f"{len(tokens.samples)}×{args.seq_len} tokens of {Path(args.calib).name}; perplexity on "
          f"{len(windows)}×{args.eval_seq_len} tokens of {Path(args.eval).name}; {args.threads} threads")
    print("| recipe | perplexity | vs full | mean KL | same top | quiz | seconds | layers removed | greedy text |")
    print("|---|---|---|---|---|---|---|---|---|")
    full = rows[0][2]
    for label, removed, ppl, kl, top, seconds, quiz, text in rows:
        print(f"| {label} | {ppl:.2f} | {ppl / full:.2f}x | {kl:.3f} | {top:.1%} | {quiz} | {seconds:.1f} | "
              f"{','.join(map(str, removed)) or '-'} | {text} |")


if __name__ == "__main__":
    main()
