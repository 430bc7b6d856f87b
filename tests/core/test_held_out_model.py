"""A model the recipe was never tuned on: Gemma 3 270M (another family, 18 layers, Q4_K_M, from PyPI),
calibrated on prose (the shipped WikiText-2 validation slice) and judged on Python source code, a domain the
calibration never saw. At 25% the default recipe is compared with each baseline the field knows, on held-out
perplexity and on KL divergence to the original: plain BI, BI with the ends protected and the single-removal
perplexity order, each given the same repair (so only the choice of layers differs): it must be at least as good
as each, on both measures.
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


@pytest.fixture(scope="module")
def measured(gemma3_gguf: Path, valid_text: Path, code_text: Path) -> dict[str, tuple[list[int], float, float]]:
    """The default job's choice and each baseline's, all repaired, on the same held-out code: name →
    (removed layers, perplexity, mean KL to the original)."""
    spec = JobSpec(model=str(gemma3_gguf), calib=[str(valid_text)], eval_text=str(code_text), samples=16,
                   seq_len=256, eval_windows=8, batch_size=4, device="cpu", dtype="float32", low_memory=False,
                   prompt="")
    engine = Engine()
    engine.score(spec)
    count = engine.n_layers // 4
    plan = engine.prepare(spec, engine.plan(count=count))
    checked = engine.check(spec, plan.removed)
    bi = engine.stats.bi
    single = engine.selections[count].single_removal
    out = {"default": (plan.removed, checked.ppl_after, checked.fidelity.mean_kl)}
    baselines = {
        "plain BI": lowest(bi, count),
        "BI, ends protected": lowest(without(bi, protected_for(bi, count)), count),
        "single-removal perplexity": lowest(single, count),
    }
    tokens = engine.tokens_for(spec)
    for name, removed in baselines.items():
        if removed == plan.removed:  # the same set, the same repair: the check's figures (a Gemma fit saved)
            out[name] = out["default"]
            continue
        weights = engine.adjust(spec, removed).weights
        result, fidelity = ops.compare(engine.backend.stack, tokens.eval_windows, tokens.pad_id,
                                       engine.reference, removed, weights)
        out[name] = (removed, result.perplexity, fidelity.mean_kl)
    print("\nGemma 3 270M, 25% removed, calibrated on prose, judged on code (full "
          f"{checked.ppl_before:.2f}):\n" + "\n".join(f"{k} {v[0]}: ppl {v[1]:.2f}, KL {v[2]:.3f}"
                                                    for k, v in out.items()))
    return out


def _at_least_as_good(measured: dict, baseline: str) -> None:
    _, ppl, kl = measured["default"]
    _, base_ppl, base_kl = measured[baseline]
    table = "; ".join(f"{k} {v[0]}: ppl {v[1]:.2f}, KL {v[2]:.3f}" for k, v in measured.items())
    assert ppl <= base_ppl * 1.0001, table
    assert kl <= base_kl * 1.0001, table


@pytest.mark.slow(seconds=830)  # its fixture's, in CI
@pytest.mark.timeout(2400)
def test_default_recipe_is_at_least_as_good_as_each_baseline_on_a_model_and_a_domain_it_was_not_tuned_on(
        measured) -> None:
    """One test, not one per baseline: under xdist each test could land on its own worker and measure all again.

    Measured: default [8, 9, 13, 14] 55.46 / KL 1.769; plain BI [2, 8, 9, 17] 90.24 / 2.307; BI with the ends
    protected [2, 8, 9, 14] 78.30 / 2.205; the single-removal order [8, 9, 13, 14] 55.46 / 1.769 (full 9.55).
    Before bi+ compared its finalists repaired, it chose [7, 8, 9, 14] (59.71 / 1.887): unrepaired on the prose
    the greedy set looked far better."""
    for baseline in ("plain BI", "BI, ends protected", "single-removal perplexity"):
        _at_least_as_good(measured, baseline)
