"""How fast and how lean the engine is, as ratios against baselines measured in the same run.

    python benchmarks/bench_engine.py [--model PATH|.gguf] [--samples 16] [--seq-len 128] [--repeats 7]

Without ``--model`` it uses SmolLM2-135M-Instruct from the test cache when it is there (run the test suite once),
else the tiny demo model. Each measurement runs in its own child process, so its peak memory (RSS on CPU,
``max_memory_allocated`` on CUDA) is its own. Printed:

* scoring throughput: BI with hooks vs a bare forward pass (target >= 0.9x) vs collecting
  ``output_hidden_states`` and computing BI from them (what most public scripts do);
* peak memory of each;
* saving: streaming tensors from the checkpoint vs loading the model, pruning it and ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # library progress bars (GGUF dequantisation, shard writing)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the lifetime high-water mark is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Highest resident set size while the block runs, sampled every 2 ms (the lifetime high-water mark
    would still hold the model-loading peak)."""

    def __enter__(self) -> PeakRss:
        import threading

        self.base = current_rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, current_rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def extra(self) -> int:
        return max(self.peak - self.base, 0)


def _load(model_spec: str, device: str) -> Any:
    from shortgpt_desktop.core.pipeline import JobSpec, open_model

    return open_model(JobSpec(model=model_spec, device=device, dtype="float32" if device == "cpu" else "auto"))


def _tokens(loaded: Any, args: dict[str, Any]) -> Any:
    from bench_paths import VALID

    from shortgpt_desktop.core.measure.calibration import build_token_set, builtin_corpus

    texts = [VALID.read_text(encoding="utf-8")[:600_000]] if VALID.is_file() else builtin_corpus()
    return build_token_set(loaded.tokenizer, texts, samples=args["samples"], seq_len=args["seq_len"])


SCORING_METHODS = ("forward", "hooks", "hidden_states")


def _scoring_job(kind: str, args: dict[str, Any], queue: Any) -> None:
    """In a fresh process: ``timing`` runs the three methods round-robin (so machine noise hits all alike) and
    keeps each one's best time; a method name measures that method's peak memory above the loaded model."""
    import gc

    import torch

    torch.set_num_threads(args["threads"])
    loaded = _load(args["model"], args["device"])
    tokens = _tokens(loaded, args)
    cuda = loaded.device.startswith("cuda")
    from shortgpt_desktop.core.measure.scoring import iter_batches, measure_layers

    def run_once(method: str) -> None:
        if method == "hooks":
            measure_layers(loaded.model, loaded.family, tokens, args["batch_size"], keep_last_token=True)
            return
        with torch.inference_mode():
            for ids, mask, _ in iter_batches(tokens, args["batch_size"], loaded.device):
                if method == "forward":
                    loaded.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
                else:  # output_hidden_states, then BI from consecutive states, as public scripts do
                    states = loaded.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False,
                                                     output_hidden_states=True).hidden_states
                    for a, b in itertools.pairwise(states):
                        cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
                        (cos * mask).sum()
        if cuda:
            torch.cuda.synchronize()

    if kind == "timing":
        best = dict.fromkeys(SCORING_METHODS, float("inf"))
        for method in SCORING_METHODS:  # warm-up: allocator, kernels, caches
            run_once(method)
        for _ in range(args["repeats"]):
            for method in SCORING_METHODS:
                started = time.perf_counter()
                run_once(method)
                best[method] = min(best[method], time.perf_counter() - started)
        queue.put({"seconds": best, "tokens": tokens.sample_tokens})
        return
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRss() as rss:
        run_once(kind)
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else rss.extra
    queue.put({"peak_extra_bytes": peak})


def _saving_job(kind: str, args: dict[str, Any], queue: Any) -> None:
    """Save the same pruned model two ways from the same safetensors folder; time and peak RSS."""
    import torch

    torch.set_num_threads(args["threads"])
    folder, out = Path(args["folder"]), Path(args["out"])
    shutil.rmtree(out, ignore_errors=True)
    rss = PeakRss().__enter__()
    started = time.perf_counter()
    if kind == "streaming":
        from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
        from shortgpt_desktop.core.model.families import family_for_model_type
        from shortgpt_desktop.core.model.sources import resolve

        config = json.loads((folder / "config.json").read_text())
        save_pruned(source=resolve(str(folder)), family=family_for_model_type(config["model_type"]),
                    original_config=config, removed=args["removed"], out=out)
    else:
        from transformers import AutoModelForCausalLM

        from shortgpt_desktop.core.cut.surgery import prune_in_memory
        from shortgpt_desktop.core.model.families import resolve_family

        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
        prune_in_memory(model, resolve_family(model, model.config.to_dict()), args["removed"])
        model.save_pretrained(out)
    seconds = time.perf_counter() - started
    rss.__exit__()
    queue.put({"seconds": seconds, "peak_extra_bytes": rss.extra})


def in_child(target: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(kind, args, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result


def default_model() -> str:
    from bench_paths import SMOLLM2

    if SMOLLM2.is_file():
        return str(SMOLLM2)
    from shortgpt_desktop.core.testing.tiny_models import build_tiny_model

    return str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    opts = parser.parse_args()
    from shortgpt_desktop.core.model.devices import resolve_device

    args = {"model": opts.model or default_model(), "device": resolve_device(opts.device), "samples": opts.samples,
            "seq_len": opts.seq_len, "batch_size": opts.batch_size, "repeats": opts.repeats,
            "threads": opts.threads}
    print(f"model {args['model']}\ndevice {args['device']}, {opts.samples} samples x {opts.seq_len} tokens, "
          f"batch {opts.batch_size}, best of {opts.repeats}, {opts.threads} threads\n")

    timing = in_child(_scoring_job, "timing", args)
    memory = {kind: in_child(_scoring_job, kind, args)["peak_extra_bytes"] for kind in SCORING_METHODS}
    seconds, tokens = timing["seconds"], timing["tokens"]
    print(f"{'scoring':<34}{'tokens/s':>10}{'vs forward':>12}{'peak extra MB':>15}")
    labels = {"forward": "bare forward pass (baseline)", "hooks": "BI with hooks (ours)",
              "hidden_states": "output_hidden_states + BI"}
    for kind in SCORING_METHODS:
        ratio = seconds["forward"] / seconds[kind]
        print(f"{labels[kind]:<34}{tokens / seconds[kind]:>10,.0f}{ratio:>11.2f}x{memory[kind] / 2**20:>15,.1f}")
    print(f"\nhooks vs output_hidden_states: {seconds['hidden_states'] / seconds['hooks']:.2f}x the speed, "
          f"{max(memory['hooks'], 1) / max(memory['hidden_states'], 1):.2f}x the extra memory")

    # Saving: both ways start from the same safetensors folder (a GGUF is first converted by our saver).
    work = Path(tempfile.mkdtemp(prefix="shortgpt-bench-"))
    try:
        folder = Path(args["model"])
        if folder.suffix == ".gguf":
            loaded = _load(args["model"], "cpu")
            from shortgpt_desktop.core.formats.safetensors_writer import save_pruned

            save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=[],
                        out=work / "source", model=loaded.model, tokenizer=loaded.tokenizer)
            folder = work / "source"
            del loaded
        n = json.loads((folder / "config.json").read_text()).get("num_hidden_layers", 6)
        removed = list(range(n // 2, n // 2 + max(1, n // 4)))
        save_args = {"folder": str(folder), "removed": removed, "threads": opts.threads}
        stream = in_child(_saving_job, "streaming", {**save_args, "out": str(work / "a")})
        stock = in_child(_saving_job, "save_pretrained", {**save_args, "out": str(work / "b")})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'saving (remove ' + str(len(removed)) + ' of ' + str(n) + ' layers)':<34}{'seconds':>10}"
          f"{'speed-up':>12}{'peak extra MB':>15}")
    print(f"{'load + save_pretrained (baseline)':<34}{stock['seconds']:>10.2f}{1:>11.2f}x"
          f"{stock['peak_extra_bytes'] / 2**20:>15,.1f}")
    print(f"{'streaming tensors (ours)':<34}{stream['seconds']:>10.2f}{stock['seconds'] / stream['seconds']:>11.2f}x"
          f"{stream['peak_extra_bytes'] / 2**20:>15,.1f}")


if __name__ == "__main__":
    main()
