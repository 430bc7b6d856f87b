"""Which layers to remove: the candidate orders the field knows, compared on held-out text of another domain.

For each model, the layers are scored on calibration text (``--calib``), each candidate chooses ``--ratio`` of
the layers, and the pruned model (with and without the training-free repair) is measured on evaluation text
(``--eval``) that the choice never saw: perplexity, and fidelity to the original as llama.cpp measures a
quantization (mean KL per token, same top token). Also printed: each candidate's calibration perplexity and
calibration KL after repair, the two measures a recipe can use to choose without seeing the evaluation text,
so one can see which of them predicts the held-out result.

    python benchmarks/bench_selection.py MODEL.gguf [MODEL2 ...] --calib A.txt --eval B.txt --ratio 0.25

Everything runs in one process, on the CPU, in float32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from shortgpt_desktop.core.cut.plan import best_block, count_for_ratio, lowest
from shortgpt_desktop.core.cut.repair import fit_linear_repair, weights_view
from shortgpt_desktop.core.cut.selection import choose_layers_safely, protected_for, without
from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.measure.calibration import TokenSet, build_token_set
from shortgpt_desktop.core.measure.evaluation import compare_to_reference, perplexity_of, reference_pass
from shortgpt_desktop.core.measure.scoring import measure_layers, removal_perplexity
from shortgpt_desktop.core.model.families import get_submodule
from shortgpt_desktop.core.pipeline import JobSpec, open_model, read_calibration


def _layers(loaded: Any) -> Any:
    return get_submodule(loaded.model, loaded.family.layers_path)


def greedy(loaded: Any, samples: TokenSet, count: int, pool: Sequence[int], window: int) -> list[int]:
    """SLEB-style greedy over the ``window`` best layers of ``pool`` not yet taken, judged on calibration ppl."""
    order: list[int] = []
    for _ in range(count):
        trial = [i for i in pool if i not in order][:window]
        best, best_ppl = trial[0], float("inf")
        for layer in trial:
            with pruned_view(loaded.model, loaded.family, sorted([*order, layer])):
                ppl = perplexity_of(loaded.model, samples.samples, samples.pad_id, 4).perplexity
            if ppl < best_ppl:
                best, best_ppl = layer, ppl
        order.append(best)
    return sorted(order)


def evaluate(loaded: Any, removed: list[int], tokens: TokenSet, calib_ref: Any, calib_windows: list,
             eval_ref: Any, repair: bool) -> dict[str, float]:
    weights: dict[str, Any] = {}
    if repair:
        weights = fit_linear_repair(loaded.model, loaded.family, tokens, removed, 4).tensors
    with weights_view(loaded.model, weights), pruned_view(loaded.model, loaded.family, removed):
        layers = _layers(loaded)
        calib, calib_fid = compare_to_reference(loaded.model, layers, calib_windows, tokens.pad_id, calib_ref)
        held, fid = compare_to_reference(loaded.model, layers, tokens.eval_windows, tokens.pad_id, eval_ref)
    return {"calib_ppl": calib.perplexity, "calib_kl": calib_fid.mean_kl, "ppl": held.perplexity,
            "kl": fid.mean_kl, "top": fid.same_top}


def run(model: str, calib: list[str], eval_text: list[str], ratio: float, samples: int, seq_len: int,
        windows: int, subset: int) -> None:
    started = time.perf_counter()
    loaded = open_model(JobSpec(model=model, device="cpu", dtype="float32"))
    calib_texts, _, _ = read_calibration(calib)
    eval_texts, _, _ = read_calibration(eval_text)
    tokens = build_token_set(loaded.tokenizer, calib_texts, eval_texts, samples, seq_len, 0,
                             max_eval_windows=windows)
    n = loaded.n_layers
    count = count_for_ratio(ratio, n)
    subset_set = TokenSet(tokens.samples[:subset], [], tokens.seq_len, tokens.bos_id, tokens.pad_id)
    print(f"\n## {model}: {n} layers, removing {count}; {len(tokens.samples)} calibration samples x {seq_len}, "
          f"{len(tokens.eval_windows)} evaluation windows (load {time.perf_counter() - started:.0f} s)")
    t = time.perf_counter()
    stats = measure_layers(loaded.model, loaded.family, tokens, 4)
    bi = stats.bi
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    single = removal_perplexity(loaded.model, loaded.family, subset_set, 4).scores
    t_single = time.perf_counter() - t
    layers = _layers(loaded)
    eval_ref = reference_pass(loaded.model, layers, tokens.eval_windows, tokens.pad_id, 4)
    calib_windows = tokens.samples[:subset]
    calib_ref = reference_pass(loaded.model, layers, calib_windows, tokens.pad_id, 4)
    print(f"dense: held-out ppl {eval_ref.result.perplexity:.2f}; BI pass {t_score:.0f} s, single-removal pass "
          f"{t_single:.0f} s on {subset} samples")
    protected = protected_for(bi, count)
    single_order = [i for _, i in sorted((s, i) for i, s in enumerate(single) if i not in protected)]
    candidates: dict[str, list[int]] = {
        "bi": lowest(bi, count),
        "bi-ends-protected": lowest(without(bi, protected), count),
        "bi-last-protected": lowest(without(bi, [n - 1]), count),
        "single-removal ppl": lowest(single, count),
        "single-removal ppl, ends protected": sorted(single_order[:count]),
        "angular block": best_block(stats.angular(count), count),
    }
    t = time.perf_counter()
    candidates["bi+ (greedy, BI window 3)"] = choose_layers_safely(
        loaded.model, loaded.family, tokens, count, bi, 4, eval_samples=subset).removed
    t_biplus = time.perf_counter() - t
    t = time.perf_counter()
    candidates["greedy, single-removal window 4"] = greedy(loaded, subset_set, count, single_order, 4)
    t_greedy = time.perf_counter() - t
    print(f"bi+ {t_biplus:.0f} s; greedy over single-removal window {t_greedy:.0f} s")
    print("| candidate | removed | repair | calib ppl | calib KL | held-out ppl | x dense | mean KL | same top |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, removed in candidates.items():
        for repair in (False, True):
            r = evaluate(loaded, removed, tokens, calib_ref, calib_windows, eval_ref, repair)
            print(f"| {name} | {','.join(map(str, removed))} | {'linear' if repair else 'none'} | "
                  f"{r['calib_ppl']:.2f} | {r['calib_kl']:.3f} | {r['ppl']:.2f} | "
                  f"{r['ppl'] / eval_ref.result.perplexity:.2f} | {r['kl']:.3f} | {r['top']:.1%} |", flush=True)
    print(f"({time.perf_counter() - started:.0f} s for this model)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--calib", nargs="+", required=True)
    parser.add_argument("--eval", nargs="+", required=True, dest="eval_text")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--subset", type=int, default=8, help="calibration samples for measured choices")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    for model in args.models:
        run(model, args.calib, args.eval_text, args.ratio, args.samples, args.seq_len, args.windows, args.subset)


if __name__ == "__main__":
    main()
