"""A model the recipe was never tuned on: Gemma 3 270M (another family, 18 layers, Q4_K_M, from PyPI),
calibrated on prose (the shipped WikiText-2 validation slice) and judged on Python source code, a domain the
calibration never saw. At 25% the default recipe must be at least as good as each baseline the field knows,
on held-out perplexity and on KL divergence to the original: plain BI, BI with the ends protected and the
single-removal perplexity order, each given the same repair (so only the choice of layers differs).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.cut.plan import lowest
from shortgpt_desktop.core.cut.selection import protected_for, without
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.pipeline import JobSpec

pytestmark = pytest.mark.slow

#: Python's own sources: code, a domain the prose calibration never saw (present wherever Python is).
CODE_MODULES = ("argparse", "textwrap", "json.decoder", "csv", "fractions", "shlex", "heapq", "calendar")


@pytest.fixture(scope="module")
def code_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib

    path = tmp_path_factory.mktemp("code") / "stdlib.py.txt"
    path.write_text("\n\n".join(inspect.getsource(importlib.import_module(m)) for m in CODE_MODULES),
                    encoding="utf-8")
    return path


@pytest.mark.timeout(2400)
def test_default_recipe_holds_on_a_model_and_a_domain_it_was_not_tuned_on(gemma3_gguf: Path, valid_text: Path,
                                                                          code_text: Path) -> None:
    spec = JobSpec(model=str(gemma3_gguf), calib=[str(valid_text)], eval_text=str(code_text), samples=16,
                   seq_len=256, eval_windows=8, batch_size=4, device="cpu", dtype="float32", low_memory=False,
                   prompt="")
    engine = Engine()
    engine.score(spec)
    n = engine.n_layers
    count = n // 4
    plan = engine.prepare(spec, engine.plan(count=count))
    checked = engine.check(spec, plan.removed)
    bi = engine.stats.bi
    single = engine.selections[count].single_removal
    baselines = {
        "plain BI": lowest(bi, count),
        "BI, ends protected": lowest(without(bi, protected_for(bi, count)), count),
        "single-removal perplexity": lowest(single, count),
    }
    tokens = engine.tokens_for(spec)
    lines = [f"default {plan.removed}: ppl {checked.ppl_after:.2f}, KL {checked.fidelity.mean_kl:.3f}, "
             f"same top {checked.fidelity.same_top:.1%} (full {checked.ppl_before:.2f})"]
    for name, removed in baselines.items():
        weights = engine.adjust(spec, removed).weights
        result, fidelity = ops.compare(engine.backend.stack, tokens.eval_windows, tokens.pad_id,
                                       engine.reference, removed, weights)
        lines.append(f"{name} {removed}: ppl {result.perplexity:.2f}, KL {fidelity.mean_kl:.3f}, "
                     f"same top {fidelity.same_top:.1%}")
        assert checked.ppl_after <= result.perplexity * 1.0001, "\n".join(lines)
        assert checked.fidelity.mean_kl <= fidelity.mean_kl * 1.0001, "\n".join(lines)
    print("\nGemma 3 270M, 25% removed, calibrated on prose, judged on code:\n" + "\n".join(lines))
