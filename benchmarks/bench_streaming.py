"""Layer-by-layer scoring against loading the whole model: peak memory and time, as ratios measured in one run.

    python benchmarks/bench_streaming.py [--folder /tmp/bench-3gb] [--layers 16] [--hidden 2048]
                                         [--vocab N] [--tied] [--samples 4] [--seq-len 32] [--device cpu|cuda]
                                         [--job]

Builds (once; reused when ``--folder`` already holds it) a random Llama of about 3 GB of float32 weights,
written shard by shard so the builder never holds it whole. Then each way of scoring runs in its own child
process: ``load_model`` + ``measure_layers`` (in memory) and ``streamed_measure_layers`` (one decoder layer at a
time). Printed: peak resident set (sampled every 2 ms, the process's own baseline after imports subtracted and
also shown whole), peak GPU memory where there is a GPU, wall time, and the ratios streamed / in memory
(targets: peak < 25 %, time <= 1.5x). The BI of both runs must agree.

With ``--job``, each child runs the whole default job instead (``jobs.run_prune``: BI, bi+'s measured choice,
the repair, the check with fidelity and a generation, save) on a slice of the built-in corpus, in memory and with
``low_memory``; the removed layers and the perplexities of both must agree.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def build(folder: Path, layers: int, hidden: int, vocab: int | None = None, tied: bool = False) -> Path:
    from shortgpt_desktop.core.testing.large_models import write_random_model

    shape = dict(hidden_size=hidden, num_hidden_layers=layers, tie_word_embeddings=tied,
                 **({"vocab_size": vocab} if vocab else {}))
    if (folder / "model.safetensors.index.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        other = {key: config.get(key) for key, value in shape.items() if config.get(key) != value}
        if other:  # the folder was built for other options: measuring it would measure another model
            sys.exit(f"{folder} holds a model built with {other}, not the shape asked for; give another --folder "
                     "or remove that one.")
        return folder
    started = time.perf_counter()
    write_random_model(folder, dict(
        **shape, intermediate_size=int(hidden * 2.6875) // 64 * 64, num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64, max_position_embeddings=2048,
    ), shard_bytes=1_000_000_000)
    print(f"built {folder} in {time.perf_counter() - started:.0f} s")
    return folder


def _job(mode: str, args: dict[str, Any], queue: Any) -> None:
    import torch
    from bench_engine import PeakRss

    torch.set_num_threads(args["threads"])
    import transformers.models.llama.modeling_llama  # noqa: F401  (imports are not what is measured)

    from shortgpt_desktop.core.backends.streamed import streamed_measure_layers
    from shortgpt_desktop.core.measure.calibration import TokenSet
    from shortgpt_desktop.core.measure.scoring import measure_layers
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    length = args["seq_len"]
    tokens = TokenSet(samples=[[1, *((7 * i + j) % 500 + 3 for j in range(length - 1))]
                               for i in range(args["samples"])],
                      eval_windows=[], seq_len=length, bos_id=1, pad_id=0)
    cuda = args["device"].startswith("cuda")
    source = resolve(args["folder"])
    if args.get("job"):
        _whole_job(mode, args, queue)
        return
    with PeakRss() as rss:
        started = time.perf_counter()
        if mode == "memory":
            loaded = load_model(source, args["device"], "float32")
            stats = measure_layers(loaded.model, loaded.family, tokens, batch_size=args["batch_size"])
        else:
            stats = streamed_measure_layers(source, tokens, args["device"], "float32", args["batch_size"])
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    queue.put({"mode": mode, "seconds": seconds, "rss_base": rss.base, "rss_peak": rss.peak,
               "gpu_peak": torch.cuda.max_memory_allocated() if cuda else None, "bi": stats.bi})


def _whole_job(mode: str, args: dict[str, Any], queue: Any) -> None:
    import tempfile

    from bench_engine import PeakRss

    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.measure.calibration import builtin_corpus
    from shortgpt_desktop.core.pipeline import JobSpec
    from shortgpt_desktop.jobs import run_prune

    with tempfile.TemporaryDirectory() as scratch:
        calib = Path(scratch) / "calib.txt"
        calib.write_text("\n\n".join(builtin_corpus()[:20]), encoding="utf-8")
        spec = JobSpec(model=args["folder"], calib=[str(calib)], samples=args["samples"], seq_len=args["seq_len"],
                       eval_windows=4, batch_size=args["batch_size"], device=args["device"], dtype="float32",
                       ratio=0.25, out=str(Path(scratch) / "out"), low_memory=mode == "streamed", max_new_tokens=4)
        with PeakRss() as rss:
            started = time.perf_counter()
            report = run_prune(Engine(), spec)
            seconds = time.perf_counter() - started
    queue.put({"mode": mode, "seconds": seconds, "rss_base": rss.base, "rss_peak": rss.peak, "gpu_peak": None,
               "bi": report.scores, "removed": report.removed_layers, "ppl": [report.ppl_before, report.ppl_after],
               "timings": report.timings})


def run(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_job, args=(mode, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="/tmp/shortgpt-bench-streaming-3gb")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", action="store_true", help="the whole default job instead of scoring alone")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the built tokenizer's)")
    parser.add_argument("--tied", action="store_true", help="tie the input embeddings and the output head")
    options = parser.parse_args()
    folder = build(Path(options.folder), options.layers, options.hidden, options.vocab, options.tied)
    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    estimate = estimate_memory(resolve(str(folder)), options.device, "float32", options.samples, options.seq_len,
                               options.batch_size)
    args = {"folder": str(folder), "samples": options.samples, "seq_len": options.seq_len,
            "batch_size": options.batch_size, "device": options.device, "threads": options.threads,
            "job": options.job}
    results = {mode: run(mode, args) for mode in ("memory", "streamed")}  # same run, same machine state
    memory, streamed = results["memory"], results["streamed"]
    worst = max(abs(a - b) for a, b in zip(memory["bi"], streamed["bi"], strict=True))
    mb = 1 / 2**20

    def row(name: str, r: dict[str, Any]) -> str:
        gpu = f"{r['gpu_peak'] * mb:9.0f}" if r["gpu_peak"] is not None else "        -"
        return (f"{name:10s} {r['seconds']:8.1f} {(r['rss_peak'] - r['rss_base']) * mb:12.0f} "
                f"{r['rss_peak'] * mb:10.0f} {gpu}")

    print(f"\nmodel: {folder} ({estimate.weights_bytes / 1e9:.2f} GB fp32, {estimate.n_layers} layers, largest layer "
          f"{estimate.largest_layer_bytes / 1e6:.0f} MB); {options.samples} samples x {options.seq_len} tokens on "
          f"{options.device}, {options.threads} threads")
    print(f"estimate before loading: in memory {estimate.in_memory_total / 1e9:.2f} GB, streamed "
          f"{estimate.streamed_total / 1e9:.2f} GB")
    print(f"{'mode':10s} {'time s':>8s} {'peak-base MB':>12s} {'peak MB':>10s} {'GPU MB':>9s}")
    print(row("in memory", memory))
    print(row("streamed", streamed))
    extra = (streamed["rss_peak"] - streamed["rss_base"]) / max(memory["rss_peak"] - memory["rss_base"], 1)
    whole = streamed["rss_peak"] / memory["rss_peak"]
    print(f"streamed / in memory: peak above baseline {extra:.1%}, whole peak {whole:.1%} (target < 25%), "
          f"time {streamed['seconds'] / memory['seconds']:.2f}x (target <= 1.5x)")
    if memory["gpu_peak"]:
        print(f"GPU peak ratio {streamed['gpu_peak'] / memory['gpu_peak']:.1%}")
    print(f"largest BI difference between the two: {worst:.2e}")
    if options.job:
        print(f"removed: in memory {memory['removed']}, streamed {streamed['removed']}; perplexity before/after: "
              f"in memory {memory['ppl']}, streamed {streamed['ppl']}")
        for name in ("memory", "streamed"):
            print(f"{name} steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in results[name]["timings"].items()))
    print(json.dumps({"extra_ratio": extra, "whole_ratio": whole,
                      "time_ratio": streamed["seconds"] / memory["seconds"], "bi_diff": worst}))


if __name__ == "__main__":
    main()
