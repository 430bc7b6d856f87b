"""Seconds to dequantize a GGUF: gguf-py's numpy code against the torch kernels (core/model/gguf_dequant.py), in
the same run, per tensor type, for the streamed backend opening every layer, and for a whole load in memory.

    python benchmarks/bench_dequant.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 2] [--repeats 3]
                                       [--no-load]

Each figure is the best of ``--repeats``, the two ways taking turns (this machine's speed drifts); every tensor's
values are checked to be the same bits both ways. The streamed backend reads a layer's tensors each time it opens
the layer; a load in memory reads every tensor once, through transformers' loader. The kernels run on one thread
(see gguf_dequant's docstring); ``--threads`` sets torch's threads for the rest of a load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open import DEFAULT_MODEL, ensure_model


@contextlib.contextmanager
def gguf_pys_way() -> Iterator[None]:
    """As before the kernels: every type goes to gguf-py's own dequantize, and the streamed reader copies each
    array it gets."""
    from unittest import mock

    import numpy as np
    import torch

    from shortgpt_desktop.core.model import gguf_dequant, layer_weights

    with mock.patch.object(gguf_dequant, "KERNELS", {}), mock.patch.object(
            layer_weights, "_tensor_of", lambda array: torch.from_numpy(np.copy(array))):
        yield


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def best_of_turns(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best seconds as before the kernels, best with them), ``repeats`` of each, taking turns."""
    was, now = [], []
    for _ in range(repeats):
        with gguf_pys_way():
            was.append(timed(run))
        now.append(timed(run))
    return min(was), min(now)


def per_type(path: Path, repeats: int) -> None:
    import gguf
    import numpy as np

    from shortgpt_desktop.core.model import gguf_dequant

    tensors = defaultdict(list)
    for tensor in gguf.GGUFReader(path).tensors:
        tensors[tensor.tensor_type].append(tensor)
    print("| type | values | gguf-py | torch | ns a value, gguf-py → torch | torch / gguf-py |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for qtype, group in sorted(tensors.items(), key=lambda kv: kv[0].name):
        values = 0
        for tensor in group:
            a = gguf.quants.dequantize(tensor.data, qtype)
            b = gguf_dequant.dequantize(tensor.data, qtype)
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{tensor.name} differs"
            values += a.size
        was, now = best_of_turns(lambda g=group, q=qtype: [gguf_dequant.dequantize(t.data, q) for t in g], repeats)
        kernel = "" if qtype in gguf_dequant.KERNELS else " (no kernel: gguf-py's)"
        totals[0] += was
        totals[1] += now
        print(f"| {qtype.name}{kernel} | {values / 1e6:.1f} M | {was:.3f} s | {now:.3f} s | "
              f"{was / values * 1e9:.1f} → {now / values * 1e9:.1f} | {now / was:.2f} |")
    print(f"| every tensor | | {totals[0]:.3f} s | {totals[1]:.3f} s | | **{totals[1] / totals[0]:.2f}** |")


def streamed_layers(path: Path, repeats: int) -> None:
    from shortgpt_desktop.core.backends.streamed import StreamedModel
    from shortgpt_desktop.core.model.sources import resolve

    with StreamedModel(resolve(str(path)), "cpu", "float32") as model:
        reader = model.reader

        def every_layer() -> None:
            for index in range(model.n_layers):
                reader.layer(index)

        was, now = best_of_turns(every_layer, repeats)
    print(f"the streamed reader, all {model.n_layers} layers once: gguf-py {was:.2f} s, torch {now:.2f} s, "
          f"**{now / was:.2f}** ({was / model.n_layers * 1000:.0f} → {now / model.n_layers * 1000:.0f} ms a layer)")


def load_in_memory(path: Path, repeats: int) -> None:
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    load = lambda: load_model(resolve(str(path)), "cpu", "float32")  # noqa: E731
    load()  # the imports and the file's pages, before either is timed
    was, now = best_of_turns(load, repeats)
    print(f"a whole load in memory (transformers' loader, the tokenizer included): gguf-py {was:.2f} s, "
          f"torch {now:.2f} s, **{now / was:.2f}**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-load", action="store_true", help="skip the whole load in memory (slow)")
    args = parser.parse_args()
    path = ensure_model(Path(args.model))

    from shortgpt_desktop.core.model.loading import quiet_library_progress

    quiet_library_progress()  # before torch: tqdm reads TQDM_DISABLE when it is first imported
    import torch

    torch.set_num_threads(args.threads)
    print(f"{path.name}, {args.threads} threads, best of {args.repeats}")
    per_type(path, args.repeats)
    streamed_layers(path, args.repeats)
    if not args.no_load:
        load_in_memory(path, args.repeats)


if __name__ == "__main__":
    main()
