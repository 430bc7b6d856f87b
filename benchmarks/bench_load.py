"""Seconds and peak memory to load a GGUF model: its metadata parsed once per load by the fast reader (what the
tool does), against a parse per reader (transformers' own way), one parse by gguf-py's own reader, and the tool's
way with each metadata value read by transformers' own ``_gguf_parse_value``, measured in the same run.

    python benchmarks/bench_load.py [MODEL.gguf ...] [--modes memory streamed] [--repeats 1]

Each load runs in a fresh child process (imports done before the clock starts), so that its peak resident
memory (VmHWM) is its own; the three ways alternate. First, per model, one parse of the file's metadata by each
reader alone. Then per model and mode: seconds, GGUFReader parses, peak MB, and the ratios of the tool's way to
each of the others. Defaults: the GGUF files the slow tests cache (SmolLM2-135M-Instruct, and Gemma 3 270M
when it is there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_paths import GEMMA3, SMOLLM2, cached, require

MODELS = [SMOLLM2, GEMMA3]


WAYS = {"each": "a parse per reader", "once": "parsed once, gguf-py", "values": "fast, transformers' values",
        "fast": "parsed once, fast (tool)"}


def child(model: str, mode: str, way: str) -> None:
    """One load; prints {seconds, parses, peak_mb} as JSON on the last line."""
    import gguf.gguf_reader
    import torch  # noqa: F401  (the program has these loaded before a model opens)
    import transformers  # noqa: F401

    from shortgpt_desktop.core.backends.base import open_backend
    from shortgpt_desktop.core.model import gguf_fast_reader, gguf_parse_once
    from shortgpt_desktop.core.model.sources import resolve

    parses = [0]
    init = gguf.gguf_reader.GGUFReader.__init__

    def counted(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        parses[0] += 1
        init(self, *args, **kwargs)

    gguf.gguf_reader.GGUFReader.__init__ = counted  # type: ignore[method-assign]
    if way == "values":  # the tool's way, each metadata value read by transformers' own _gguf_parse_value
        from transformers.integrations.ggml import _gguf_parse_value

        gguf_parse_once._parse_value = _gguf_parse_value
    elif way != "fast":  # gguf-py's own reader wherever the tool builds one
        gguf_fast_reader.FastGGUFReader = gguf.gguf_reader.GGUFReader  # type: ignore[misc]
    if way == "each":
        gguf_parse_once.gguf_parsed_once = contextlib.nullcontext  # type: ignore[assignment]
    source = resolve(model)
    started = time.perf_counter()
    backend = open_backend(mode, source, "cpu", "float32", False)
    seconds = time.perf_counter() - started
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:")) / 1024
    backend.close()
    print(json.dumps({"seconds": seconds, "parses": parses[0], "peak_mb": peak}))


def parse_alone(model: str) -> None:
    """One parse by gguf-py's reader and one by the fast reader, timed in this process; prints them as JSON."""
    import gguf.gguf_reader

    from shortgpt_desktop.core.model.gguf_fast_reader import FastGGUFReader

    seconds = {}
    for name, reader in (("gguf-py", gguf.gguf_reader.GGUFReader), ("fast", FastGGUFReader)):
        started = time.perf_counter()
        reader(model)
        seconds[name] = time.perf_counter() - started
    print(json.dumps(seconds))


def measure(model: Path, mode: str, way: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(model), mode, way],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--modes", nargs="+", default=["memory", "streamed"], choices=["memory", "streamed"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--parse", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.parse:
        parse_alone(args.parse)
        return
    require(*args.models, instead="give the path of a GGUF file")
    models = args.models or cached(MODELS)
    if not models:
        sys.exit("No GGUF model given and none cached; run the slow tests once or pass a path.")
    print(f"{'model':36s} {'mode':9s} {'way':34s} {'seconds':>8s} {'parses':>6s} {'peak MB':>8s}")
    for model in models:
        out = subprocess.run([sys.executable, __file__, "--parse", str(model)], check=True, capture_output=True,
                             text=True).stdout
        parse = json.loads(out.strip().splitlines()[-1])
        print(f"{model.name:36s} {'parse':9s} {'gguf-py / fast reader':34s} {parse['gguf-py']:7.2f}s / "
              f"{parse['fast']:.2f}s = {parse['gguf-py'] / parse['fast']:.1f}x")
        for mode in args.modes:
            runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
            for _ in range(args.repeats):
                for way in WAYS:
                    runs[way].append(measure(model, mode, way))
            best = {way: min(r, key=lambda x: x["seconds"]) for way, r in runs.items()}
            for way, label in WAYS.items():
                r = best[way]
                print(f"{model.name:36s} {mode:9s} {label:34s} {r['seconds']:8.1f} {r['parses']:6.0f} "
                      f"{r['peak_mb']:8.0f}")
            for way in ("each", "once", "values"):
                ratio = best["fast"]["seconds"] / best[way]["seconds"]
                peak = best["fast"]["peak_mb"] / best[way]["peak_mb"]
                print(f"{'':36s} {mode:9s} {'tool / ' + WAYS[way]:34s} {ratio:7.2f}x {'':6s} {peak:7.2f}x")


if __name__ == "__main__":
    main()
