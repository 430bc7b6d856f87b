"""What a cut costs against what a quantization costs, on the same model, windows and measures.

A llama.cpp user judges a quantization by ``llama-perplexity --kl-divergence``: mean KL to the original per token
and how often both pick the same top token. This prints those figures for removing layers (the given ones, with
the default linear repair) beside those for re-quantizing every 2-D weight of every decoder layer of the same model
with gguf-py's reference quantizers (Q8_0, Q5_0, Q4_0, of the legacy types it writes; it has no K-quant or IQ
quantizer), the embeddings and the head left as loaded, all against the model as loaded, on the same held-out
windows. The source is already quantized (a Q4 GGUF), so a row is what quantizing *again* costs: of the order of a
quantization from 16 bits to that type, not measured against one. A weight whose rows are not whole blocks is left
as it is and counted in the row's label.

    python benchmarks/bench_quant_scale.py MODEL.gguf --remove 12,13,14,16,17,25,26 \\
        --calib ../shared/data/wikitext2-valid.txt --eval ../shared/data/wikitext2-test.txt

Everything runs in one process, on the CPU, in float32.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from bench_paths import require

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.repair import fit_linear_repair
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.model.families import get_submodule
from shortgpt_desktop.core.pipeline import JobSpec, open_model, read_calibration

QUANT_TYPES = ("Q8_0", "Q5_0", "Q4_0")


def requantized(loaded: Any, type_name: str) -> tuple[dict[str, Any], int]:
    """Every 2-D weight of every decoder layer quantized to ``type_name`` and back (gguf-py's reference code),
    by its parameter name (the embeddings and the head stay as loaded), and how many were left out (rows not whole
    blocks). Blocks run along the last dimension, as llama.cpp's do for a ``[out, in]`` weight (not for GPT-2's
    ``Conv1D``, stored ``[in, out]``)."""
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType[type_name]
    block = GGML_QUANT_SIZES[qtype][0]
    layers = get_submodule(loaded.model, loaded.family.layers_path)
    prefix = loaded.family.layers_path
    out, skipped = {}, 0
    for index, layer in enumerate(layers):
        for name, param in layer.named_parameters():
            if param.dim() != 2:
                continue
            if param.shape[-1] % block:
                skipped += 1
                continue
            values = param.detach().float().cpu().numpy()
            back = quants.dequantize(quants.quantize(np.ascontiguousarray(values), qtype), qtype)
            out[f"{prefix}.{index}.{name}"] = torch.from_numpy(np.asarray(back, dtype=np.float32)).view(param.shape)
    return out, skipped


def row(label: str, result: Any, fidelity: Any, seconds: float) -> str:
    return (f"| {label} | {result.perplexity:.2f} | {fidelity.mean_kl:.4f} | {fidelity.p99_kl:.3f} | "
            f"{100 * fidelity.same_top:.1f}% | {seconds:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--remove", required=True, help="layers to remove, e.g. 12,13,14")
    parser.add_argument("--calib", nargs="+", required=True)
    parser.add_argument("--eval", nargs="+", required=True)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    require(args.model, *args.calib, *args.eval, instead="give another model path, --calib or --eval")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loaded = open_model(JobSpec(model=args.model, device="cpu", dtype="float32"))
    calib_texts, _, _ = read_calibration(args.calib)
    eval_texts, _, _ = read_calibration(args.eval)
    tokens = build_token_set(loaded.tokenizer, calib_texts, eval_texts, args.samples, args.seq_len, 0,
                             max_eval_windows=args.windows)
    stack = InMemoryStack(loaded.model, loaded.family)
    reference = ops.reference(stack, tokens.eval_windows, tokens.pad_id, 4)
    removed = sorted(int(i) for i in args.remove.split(","))
    print(f"## {args.model}: {loaded.n_layers} layers; {len(tokens.eval_windows)} held-out windows x "
          f"{args.seq_len}; original perplexity {reference.result.perplexity:.2f} (load and reference "
          f"{time.perf_counter() - started:.0f} s)\n", flush=True)
    print("| change | perplexity | mean KLD | 99% KLD | same top p | seconds |\n|---|---|---|---|---|---|")
    for type_name in QUANT_TYPES:
        t = time.perf_counter()
        weights, skipped = requantized(loaded, type_name)
        left = f" ({skipped} left out: rows not whole blocks)" if skipped else ""
        result, fidelity = ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, (), weights)
        print(row(f"every decoder-layer weight re-quantized to {type_name}{left}", result, fidelity,
                  time.perf_counter() - t), flush=True)
    t = time.perf_counter()
    result, fidelity = ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, removed, {})
    print(row(f"layers {args.remove} removed, no repair", result, fidelity, time.perf_counter() - t), flush=True)
    t = time.perf_counter()
    weights = fit_linear_repair(loaded.model, loaded.family, tokens, removed, 4, stack=stack).tensors
    result, fidelity = ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, removed, weights)
    print(row(f"layers {args.remove} removed, repaired", result, fidelity, time.perf_counter() - t), flush=True)


if __name__ == "__main__":
    main()
