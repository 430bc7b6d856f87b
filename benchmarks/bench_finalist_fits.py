"""bi+'s repair fits of its finalists, each running the original model again, against the fits sharing the
original's states (``OriginalStates``), in one run.

    python benchmarks/bench_finalist_fits.py [--model FILE] [--remove 3,4,5,7,16,17,25,26 ...]

bi+ judges each finalist repaired (``core/cut/selection.py``): a linear repair fitted on the first 16 calibration
samples, the same samples for every finalist, so the original's stream through them is the same numbers each
time. The sets: plain BI's and BI's with the ends protected (from a scoring pass), and each ``--remove`` (default:
the default job's SmolLM2 cut from the README). Quick sizes (32 × 256 tokens, batches of 4). Printed: each way's
seconds for all the fits, the ratio, and the original's layer runs not run again; the tensors must be equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from bench_paths import SMOLLM2, VALID, require


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--calib", default=str(VALID))
    parser.add_argument("--remove", action="append", default=None, help="a set to fit, e.g. 3,4,5 (repeatable)")
    parser.add_argument("--count", type=int, default=8, help="layers in BI's sets")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    require(args.model, args.calib, instead="give another with --model or --calib")

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    from shortgpt_desktop.core import defaults
    from shortgpt_desktop.core.cut.plan import lowest
    from shortgpt_desktop.core.cut.repair import OriginalStates, fit_linear_repair
    from shortgpt_desktop.core.cut.selection import protected_for, without
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.pipeline import JobSpec

    torch.set_num_threads(args.threads)
    spec = JobSpec(model=args.model, calib=[args.calib], samples=32, seq_len=256, batch_size=4, device="cpu",
                   dtype="float32", low_memory=False)
    engine = Engine()
    engine.score(spec)
    bi = engine.stats.bi
    given = args.remove or ["3,4,5,7,16,17,25,26"]
    sets = [lowest(bi, args.count), lowest(without(bi, protected_for(bi, args.count)), args.count)]
    sets += [sorted(int(x) for x in s.split(",")) for s in given]
    sets = [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]
    tokens = engine.tokens_for(spec)
    fit_on = dataclasses.replace(tokens, samples=list(tokens.samples[: 2 * defaults.SELECTION_SAMPLES]))
    model, family, stack = engine.loaded.model, engine.loaded.family, engine.backend.stack

    def fit_all(original: OriginalStates | None) -> tuple[float, list[dict]]:
        started = time.perf_counter()
        fits = [fit_linear_repair(model, family, fit_on, s, 4, stack=stack, original=original).tensors for s in sets]
        return time.perf_counter() - started, fits

    fit_all(None)  # warm-up
    alone, fits_alone = fit_all(None)
    original = OriginalStates()
    shared, fits_shared = fit_all(original)
    for one, other in zip(fits_alone, fits_shared, strict=True):
        assert one.keys() == other.keys() and all(torch.equal(one[k], other[k]) for k in one), "the fits differ"
    print(f"{Path(args.model).name}: {len(sets)} sets fitted on {len(fit_on.samples)} × {fit_on.seq_len} tokens "
          f"({'; '.join(','.join(map(str, s)) for s in sets)}), {args.threads} threads")
    print(f"  each fit running the original: {alone:.1f} s; sharing its states: {shared:.1f} s "
          f"({shared / alone:.2f}×); the original's layer runs not run again: {original.layers_skipped}, "
          f"states kept {original.kept_bytes / 1e6:.0f} MB; the tensors are equal")


if __name__ == "__main__":
    main()
