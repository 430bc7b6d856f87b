"""Healing's memory, the way it was against the way it is, measured in one run.

    python benchmarks/bench_heal_memory.py [--model PATH] [--steps 2] [--samples 8] [--seq-len 256] [--threads 2]

The engine heals with ``keep_original``: the model must come out as it went in, the healed weights only in the
result. The way it was: every adapted weight cloned before the first step, the adapters merged in place, the
merged weights copied out and the clones copied back. The way it is (``core/cut/healing.py``,
``_merged_copies``): nothing cloned up front; after the last step each adapter is merged into a copy of its own
weight, one at a time, and the adapters leave unmerged. For each way, in a fresh process, it loads the model,
removes two layers, heals it for ``--steps`` steps of 4 × ``--seq-len`` tokens, distilled from the original's
logits as the engine does (taken before the cut, in healing's dtype), and prints the seconds of the healing and
the resident memory it added above the loaded model (the peak, ``VmHWM``, started afresh through
``/proc/self/clear_refs`` once the model and the teacher's logits are in, Linux), with the ratios is / was; and it
checks that both ways hand back the same weights to the last bit.

By default the model is a tiny random Llama shaped as the memory test's healing job (16 layers, hidden 256, a
1536-wide MLP), built on the fly; ``--model`` takes any model the tool opens (a folder or a GGUF file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import VALID, require


def status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def reset_high_water() -> int:
    """Start the peak afresh at the memory resident now (the load's own peak would hide healing's below it) and
    return that memory."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")
    return status("VmRSS")


def heal_the_way_it_was(model, family, tokens, **kwargs):
    """The way it was: clones of every adapted weight first, the merge in place, the clones copied back."""
    import torch

    from shortgpt_desktop.core.cut.healing import heal, target_modules

    originals = {name: model.get_submodule(name).weight.detach().clone() for name in target_modules(model, family)}
    result = heal(model, family, tokens, keep_original=False, **kwargs)
    with torch.no_grad():
        for name, weight in originals.items():
            model.get_submodule(name).weight.copy_(weight)
    return result


def child(way: str, model_path: str, calib: str, steps: int, samples: int, seq_len: int, threads: int) -> None:
    import torch

    from shortgpt_desktop.core.cut.healing import autocast_to, compute_dtype_for, heal
    from shortgpt_desktop.core.cut.surgery import prune_in_memory
    from shortgpt_desktop.core.measure.calibration import build_token_set, builtin_corpus
    from shortgpt_desktop.core.measure.scoring import iter_batches
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    torch.set_num_threads(threads)
    loaded = load_model(resolve(model_path), "cpu", "float32")
    texts = builtin_corpus() if calib == "builtin" else [Path(calib).read_text(encoding="utf-8")[:400_000]]
    tokens = build_token_set(loaded.tokenizer, texts, None, samples=samples, seq_len=seq_len)
    # The teacher, as the engine's: the original's logits on the batches the steps read, in healing's dtype.
    batches = [(ids, mask) for ids, mask, _ in iter_batches(tokens, 4, "cpu")][:steps]
    with torch.no_grad(), autocast_to(loaded.model, compute_dtype_for(loaded.model)):
        originals = [loaded.model(input_ids=ids, attention_mask=mask).logits for ids, mask in batches]
    middle = loaded.n_layers // 2
    prune_in_memory(loaded.model, loaded.family, [middle, middle + 1])
    before = reset_high_water()
    started = time.perf_counter()
    kwargs = dict(steps=steps, batch_size=4, seed=0, teacher=lambda number, ids, mask: originals[number])
    if way == "was":
        result = heal_the_way_it_was(loaded.model, loaded.family, tokens, **kwargs)
    else:
        result = heal(loaded.model, loaded.family, tokens, keep_original=True, **kwargs)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for name in sorted(result.changed):
        digest.update(name.encode())
        digest.update(result.changed[name].numpy().tobytes())
    print(json.dumps({"seconds": seconds, "extra": status("VmHWM") - before, "digest": digest.hexdigest(),
                      "losses": result.losses}))


def run_child(way: str, args: argparse.Namespace, model_path: str) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", way, "--model", model_path, "--calib", args.calib,
                          "--steps", str(args.steps), "--samples", str(args.samples), "--seq-len", str(args.seq_len),
                          "--threads", str(args.threads)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder or GGUF file (default: a tiny 16-layer Llama built here)")
    parser.add_argument("--calib", default=str(VALID) if VALID.is_file() else "builtin",
                        help="a text file, or builtin (default: WikiText-2 in ../shared/data where it is there)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["was", "is"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    require(args.calib, instead="give another with --calib")
    if args.child:
        child(args.child, args.model, args.calib, args.steps, args.samples, args.seq_len, args.threads)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model_path = args.model
        if model_path is None:
            from shortgpt_desktop.core.testing.tiny_models import HEALING_HEAVY_LLAMA, build_tiny_model

            model_path = str(build_tiny_model(Path(scratch) / "deep", "llama", HEALING_HEAVY_LLAMA))
        results = {way: run_child(way, args, model_path) for way in ("was", "is")}
    was, now = results["was"], results["is"]
    print(f"healing {Path(model_path).name}: {args.steps} steps of 4 × {args.seq_len} tokens, {args.threads} threads")
    print("| way | seconds | memory above the loaded model |")
    print("|---|---|---|")
    for way, figures in results.items():
        print(f"| {way} | {figures['seconds']:.2f} | {figures['extra'] / 1e6:.0f} MB |")
    print(f"| is / was | {now['seconds'] / was['seconds']:.2f} | {now['extra'] / max(was['extra'], 1):.2f} |")
    same = was["digest"] == now["digest"] and was["losses"] == now["losses"]
    print(f"the same healed weights and losses, bit for bit: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
