"""The linear repair's ridge on one fixed cut of a real model, on prose and on code, in one run.

    python benchmarks/bench_ridge.py --model SmolLM2-135M-Instruct.Q4_1.gguf --remove 3,4,5,7,16,17,25,26

The repair's map ``T`` is pulled toward the identity by ``λ = ridge · trace(MᵀM) / d`` (``core/cut/repair.py``).
Each ridge is fitted on the same calibration text (default: the app's 128 × 512 tokens of WikiText-2 validation,
plus the original's own chat answers, as the job fits it) and checked as the app checks (held-out perplexity, mean
KL divergence to the original per token, same top token) on WikiText-2 test text and on the source code of a few
Python modules (a domain the prose calibration never saw), beside plain removal of the same layers; the check's
quiz says how many of the questions the full model answers right each still does. The fits share the original's
states (``OriginalStates``), so the first one costs the most.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from bench_paths import TEST, VALID, require
from bench_refit import stdlib_text

from shortgpt_desktop.core.defaults import SAMPLES, SEQ_LEN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--remove", required=True, help="the cut, e.g. 3,4,5,7,16,17,25,26")
    parser.add_argument("--ridges", default="0.01,0.03,0.1,0.3,auto",
                        help="fixed ridges, and 'auto': chosen per run on held-out calibration samples")
    parser.add_argument("--fits", default="map",
                        help="what each fit changes: 'map' (T folded into the projection), 'projection' (all of it)")
    parser.add_argument("--sides", default="one",
                        help="'one' (the kept layer before each run), 'both' (and the kept layer after every "
                        "repaired run, whatever its fit; the default does so only where the run's projection is "
                        "refitted whole), or both")
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--prose", default=str(TEST))
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    require(args.model, args.calib, args.prose, instead="give another with --model, --calib or --prose")

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    torch.set_num_threads(args.threads)
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.cut.repair import OriginalStates, fit_linear_repair
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.measure.quiz import ask_quiz
    from shortgpt_desktop.core.pipeline import JobSpec

    remove = [int(x) for x in args.remove.split(",")]
    ridges = [None if x == "auto" else float(x) for x in args.ridges.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        base = JobSpec(model=args.model, calib=[args.calib], eval_text=args.prose, samples=args.samples,
                       seq_len=args.seq_len, eval_windows=32, batch_size=4, device="cpu", dtype="float32",
                       low_memory=False, prompt="")
        texts = {"prose": base, "code": dataclasses.replace(base, eval_text=str(stdlib_text(Path(scratch))),
                                                              eval_windows=16)}
        engine = Engine()
        engine.open(base)
        engine.load(base)
        assert engine.backend is not None and engine.loaded is not None
        stack, family = engine.backend.stack, engine.loaded.family
        fit_tokens = engine.repair_tokens(engine.tokens_for(base))
        print(f"{Path(args.model).name}, remove {remove}; fitted on {len(fit_tokens.samples)} samples × "
              f"{args.seq_len} tokens", flush=True)
        memo = OriginalStates()
        weights: dict[str, dict | None] = {"none": None}
        sides = args.sides.split(",")
        for kind, ridge, side in [(k, r, s) for k in args.fits.split(",") for r in ridges for s in sides]:
            started = time.perf_counter()
            fit = fit_linear_repair(stack.model, family, fit_tokens, remove, 4, ridge=ridge, stack=stack,
                                    original=memo.bind(fit_tokens, 4), fit=kind, both_sides=side == "both")
            name = (("auto" if ridge is None else f"ridge {ridge:g}") + ("" if kind == "map" else f" {kind}")
                    + ("" if side == "one" else ", both sides"))
            weights[name] = fit.tensors
            chosen = ", ".join(f"{r.start}-{r.end - 1}: {r.ridge:g}" for r in fit.runs if r.ridge is not None)
            print(f"  fitted {name} in {time.perf_counter() - started:.1f} s"
                  + (f" (chosen per run: {chosen})" if ridge is None else ""), flush=True)
        rows: dict[str, list[str]] = {name: [] for name in weights}
        for text, spec in texts.items():
            tokens = engine.tokens_for(spec)
            reference = ops.reference(stack, tokens.eval_windows, tokens.pad_id, 4)
            print(f"{text}: full model {reference.result.perplexity:.2f} on {reference.result.tokens:,} tokens",
                  flush=True)
            for name, tensors in weights.items():
                result, fidelity = ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, remove, tensors)
                rows[name].append(f"{result.perplexity:.2f} / {fidelity.mean_kl:.3f} / {fidelity.same_top:.1%}")
        original = None
        for name, tensors in weights.items():
            asked = ask_quiz(stack, engine.loaded.tokenizer, engine.loaded.model, remove, tensors, original)
            if asked is not None:
                quiz, original = asked
                rows[name].append(f"{quiz.kept} of {quiz.known}")
    print(f"\n{'repair':<24} " + " | ".join(f"{t} perplexity / KL / same top" for t in texts) + " | quiz")
    for name, cells in rows.items():
        print(f"{name:<24} " + " | ".join(cells))


if __name__ == "__main__":
    main()
