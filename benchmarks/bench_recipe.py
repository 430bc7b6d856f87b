"""What the default recipe costs against plain scoring, measured in one run.

    python benchmarks/bench_recipe.py [MODEL ...] [--calib wikitext2-valid.txt] [--ratio 0.25]

For each model, in one process: a plain BI job (``--metric bi --repair none --no-eval``: score, plan, save) and
the default job (``--no-eval``: score, bi+'s measured choice, the repair, save), both through
:func:`shortgpt_desktop.jobs.run_prune` with the same sizes (the quick preset, 32 × 256 tokens), each after a
warm-up load; then the scoring pass against a bare forward pass of the decoder (``model.base_model``: no LM
head) over the same tokens; and the default job with its check, against the whole-job estimate it prints after
its first scoring batch. Printed: each job's seconds and steps, and the ratios. Defaults: the SmolLM2 GGUF
the tests cache, and the WikiText-2 validation text in ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_paths import SMOLLM2, VALID, require


def job(model: str, calib: str, ratio: float, out: Path, **settings: object) -> tuple[float, dict[str, float], Any]:
    """(seconds, the report's step timings, the job's first estimate (after its second scoring batch) and when it
    came)."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.pipeline import JobSpec
    from shortgpt_desktop.jobs import run_prune

    spec = JobSpec(model=model, calib=[calib], samples=32, seq_len=256, eval_windows=16, batch_size=4,
                   device="cpu", dtype="float32", ratio=ratio, out=str(out), **settings)
    started = time.perf_counter()
    said: list[tuple[float, Any]] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "estimate":
            said.append((time.perf_counter() - started, partial))

    report = run_prune(Engine(), spec, progress)
    return time.perf_counter() - started, dict(report.timings), said[0] if said else None


def bare_forward(model: str, calib: str) -> tuple[float, float]:
    """(seconds of the scoring pass, seconds of a bare decoder forward over the same batches), best of two."""
    import torch

    from shortgpt_desktop.core.measure.scoring import iter_batches, measure_layers
    from shortgpt_desktop.core.pipeline import JobSpec, open_model, prepare_tokens

    spec = JobSpec(model=model, calib=[calib], samples=32, seq_len=256, device="cpu", dtype="float32")
    loaded = open_model(spec)
    tokens, _, _ = prepare_tokens(loaded, spec)
    scoring, bare = [], []
    for _ in range(2):
        t = time.perf_counter()
        measure_layers(loaded.model, loaded.family, tokens, 4)
        scoring.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            for ids, mask, _ in iter_batches(tokens, 4, "cpu"):
                loaded.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        bare.append(time.perf_counter() - t)
    return min(scoring), min(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=[str(SMOLLM2)])
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    require(args.calib, *args.models, instead="give another model path or --calib")
    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    torch.set_num_threads(args.threads)
    print("| model | plain BI job (s) | default job (s) | default / plain | default job's steps (s) | "
          "scoring pass / bare decoder forward |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        with tempfile.TemporaryDirectory() as scratch:
            plain_settings = dict(metric="bi", repair="none", check_perplexity=False)
            job(model, args.calib, args.ratio, Path(scratch) / "warm", **plain_settings)  # the file cache
            plain, _, _ = job(model, args.calib, args.ratio, Path(scratch) / "plain", **plain_settings)
            default, steps, _ = job(model, args.calib, args.ratio, Path(scratch) / "default", check_perplexity=False)
            checked, _, said = job(model, args.calib, args.ratio, Path(scratch) / "checked")
        scoring, bare = bare_forward(model, args.calib)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
        print(f"| {Path(model).name} | {plain:.1f} | {default:.1f} | {default / plain:.2f} | {shown} | "
              f"{scoring:.2f} / {bare:.2f} = {scoring / bare:.2f} |", flush=True)
        if said is not None:
            at, estimate = said
            steps_said = ", ".join(f"{k} {v:.0f}" for k, v in estimate.steps.items())
            print(f"  default job with the check: {checked:.1f} s; estimated at {estimate.basis}'s speed "
                  f"({at:.1f} s in): "
                  f"{at + estimate.total:.1f} s ({steps_said}); estimate / real {(at + estimate.total) / checked:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
