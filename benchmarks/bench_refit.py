"""The linear repair against the MLP refit (``--repair refit``) on one fixed cut of a real model, in one run.

    python benchmarks/bench_refit.py --model gemma-3-270m-q4_k_m.gguf --remove 8,9,13,14 --eval stdlib

Both are fitted on the same calibration text (default: the app's 128 × 512 tokens of WikiText-2 validation) and
checked as the app checks (held-out perplexity, mean KL divergence to the original per token, same top token) on
``--eval``: a text file, or ``stdlib`` for the source code of a few Python modules (a domain the prose calibration
never saw, as ``tests/core/test_held_out_model.py`` uses). The cut is given, so that only the repair differs; the
seconds are each step's own (the refit's on top of the repair it starts from). ``--prompt`` is asked through the
chat template and each repair's greedy answer printed (``--prompt ""`` skips it); for a chat model the refit's
chat guard (``core/cut/chat_guard.py``) says which refits it kept. The check's quiz (``core/measure/quiz.py``)
says how many of the questions the full model answers right each repair still does, and which.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import tempfile
import time
from pathlib import Path

from bench_paths import TEST, VALID, require

from shortgpt_desktop.core.defaults import SAMPLES, SEQ_LEN

CODE_MODULES = ("argparse", "textwrap", "json.decoder", "csv", "fractions", "shlex", "heapq", "calendar")


def stdlib_text(folder: Path) -> Path:
    path = folder / "stdlib.py.txt"
    path.write_text("\n\n".join(inspect.getsource(importlib.import_module(m)) for m in CODE_MODULES),
                    encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--remove", required=True, help="the cut, e.g. 8,9,13,14")
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--eval", default=str(TEST), help="a text file, or stdlib")
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--eval-windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--prompt", default="What is the capital of France, and why is it famous?")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    require(args.model, args.calib, args.eval)

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    from shortgpt_desktop.core.engine import Engine, JobSpec

    torch.set_num_threads(args.threads)
    removed = sorted(int(x) for x in args.remove.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        eval_text = str(stdlib_text(Path(scratch))) if args.eval == "stdlib" else args.eval
        spec = JobSpec(model=args.model, calib=[args.calib], eval_text=eval_text, samples=args.samples,
                       seq_len=args.seq_len, eval_windows=args.eval_windows, batch_size=4, device="cpu",
                       dtype="float32", low_memory=False, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
        engine = Engine()
        engine.open(spec)
        engine.load(spec)
        rows = []
        for repair in ("linear", "refit"):
            job = dataclasses.replace(spec, repair=repair)
            started = time.perf_counter()
            adjusted = engine.adjust(job, removed)
            seconds = adjusted.step_seconds.get("refit", time.perf_counter() - started)
            checked = engine.check(job, removed)
            rows.append((repair, checked, seconds, adjusted))
    print(f"{Path(args.model).name}: layers {args.remove} removed; calibration {args.samples}×{args.seq_len} tokens "
          f"of {Path(args.calib).name}; checked on {args.eval_windows} windows of {Path(args.eval).name}; "
          f"{args.threads} threads")
    print("| repair | perplexity (full → pruned) | mean KL | same top | seconds |")
    print("|---|---|---|---|---|")
    for repair, checked, seconds, _ in rows:
        f = checked.fidelity
        print(f"| {repair} | {checked.ppl_before:.2f} → {checked.ppl_after:.2f} | {f.mean_kl:.3f} | "
              f"{f.same_top:.1%} | {seconds:.0f} |")
    refit = rows[-1][3].refit
    for run in refit.runs:
        print(f"refit of layer {run.layer}: held-out residual {run.residual_before:.3f} → {run.residual_after:.3f}, "
              f"{run.steps} steps on {run.tokens} tokens{'' if run.kept else '; dropped by the chat guard'}")
    if refit.chat is not None:
        print(f"chat guard, loss per answer token of the original's answers to the check prompts: linear "
              f"{refit.chat.linear:.3f}, every cut refitted {refit.chat.refit:.3f}, kept {refit.chat.kept:.3f}")
    if args.prompt:
        print(f"full model: {rows[0][1].generation_before!r}")
        for repair, checked, _, _ in rows:
            print(f"{repair}: {checked.generation_after!r}")
    for repair, checked, _, _ in rows:
        if checked.quiz is not None:
            print(f"{repair}: {checked.quiz.summary()}")
    quizzes = [checked.quiz for _, checked, _, _ in rows if checked.quiz is not None]
    for i, question in enumerate(quizzes[0].answers if quizzes else []):
        if question.original_right:
            marks = " ".join(f"{repair}:{'+' if checked.quiz.answers[i].pruned_right else '-'}"
                             for repair, checked, _, _ in rows if checked.quiz is not None)
            print(f"  {marks}  {question.question} → " + " | ".join(
                repr(q.answers[i].pruned[:50]) for q in quizzes))


if __name__ == "__main__":
    main()
