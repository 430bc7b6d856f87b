"""What greedy generation is said to take against what it takes, measured in one run.

    python benchmarks/bench_generation.py [MODEL ...] [--calib wikitext2-valid.txt] [--threads 2]

For each model, loaded in memory: a scoring pass (8 × 128 tokens: the speed the estimates start from, and the
generation step the scoring job times, :class:`shortgpt_desktop.core.estimate.StepProbe`), then each generation a
job runs, timed: the original's own answers to the repair's 24 chat prompts (64 new tokens), the quiz's 26
questions (24 new tokens, one model), and the check's continuation of its prompt (24 new tokens, one row). Printed
for each: the seconds said at the scoring pass's speed alone (as before the probe), the seconds said with the
probe, the seconds taken, and the ratios said / taken. Defaults: the SmolLM2 and Gemma 3 GGUF files the tests
cache, and the WikiText-2 validation text in ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_paths import GEMMA3, SMOLLM2, VALID, cached, require


def measure(model: str, calib: str) -> list[tuple[str, float, float, float]]:
    """(generation, said without the probe, said with it, seconds taken) for each generation."""
    import dataclasses

    from shortgpt_desktop.core.cut.own_answers import own_answers
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.estimate import shape_of
    from shortgpt_desktop.core.measure.quiz import model_answers, quiz_prompts
    from shortgpt_desktop.core.pipeline import JobSpec

    spec = JobSpec(model=model, calib=[calib], samples=8, seq_len=128, batch_size=4, device="cpu", dtype="float32",
                   low_memory=False, repair="linear", check_perplexity=True)
    engine = Engine()
    engine.score(spec)
    rate = engine._scoring_rate()
    assert rate is not None and engine.loaded is not None and engine.backend is not None
    shape = shape_of(engine.loaded)
    n, head = shape.n_layers, shape.head_layers
    loaded, stack = engine.loaded, engine.backend.stack

    def said(work) -> tuple[float, float]:
        return work.token_layers(n, head) * rate, work.seconds(n, head, rate)

    rows = []
    answers = engine.answer_work(spec)
    if answers is not None:
        started = time.perf_counter()
        own_answers(stack, loaded.tokenizer, loaded.model, max_len=spec.seq_len)
        rows.append(("own answers (24 prompts × 64)", *said(answers), time.perf_counter() - started))
    quiz = engine.quiz_work(spec)
    prompts = quiz_prompts(loaded.tokenizer, loaded.model)
    if quiz is not None and prompts is not None:
        one = dataclasses.replace(quiz, runs=1)
        started = time.perf_counter()
        model_answers(stack, loaded.tokenizer, prompts, "quiz_before")
        rows.append((f"quiz, one model ({one.prompts} questions × {one.new_tokens})", *said(one),
                     time.perf_counter() - started))
    prompt = engine.prompt_work(spec)
    if prompt is not None:
        started = time.perf_counter()
        engine.backend.generate_both(spec.prompt, [], {}, spec.max_new_tokens, bool(prompts and prompts.chat_template),
                                     None, None)
        rows.append((f"the check's continuation (2 × {prompt.new_tokens}, one row)", *said(prompt),
                     time.perf_counter() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=None)
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    models = args.models or [str(m) for m in cached([SMOLLM2, GEMMA3])]
    require(args.calib, *models, instead="give another model path or --calib")
    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()
    import torch

    torch.set_num_threads(args.threads)
    print("| model | generation | said at the pass's speed (s) | said with the timed step (s) | taken (s) | "
          "said / taken before | said / taken now |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for name, before, now, taken in measure(model, args.calib):
            print(f"| {Path(model).name} | {name} | {before:.2f} | {now:.2f} | {taken:.2f} | {before / taken:.2f} | "
                  f"{now / taken:.2f} |", flush=True)


if __name__ == "__main__":
    main()
