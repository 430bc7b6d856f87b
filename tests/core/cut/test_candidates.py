"""Candidates measured from cached states: the same numbers as a pass from the first layer, and a strided
head scores exactly the positions it says."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.candidates import CandidateRunner, head_stride
from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve

SEQUENCES = [[1, *range(20, 60)], [1, *range(60, 90)], [1, *range(100, 141)]]


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    return load_model(resolve(str(tiny_model)), "cpu", "float32")


def test_cached_candidates_equal_full_passes(loaded) -> None:
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2)
    runner.rebase([3])
    sets = [[3, 1], [3, 4], [3, 5], [0, 3]]
    cached = runner.measure(sets)
    for removed, result in zip(sets, cached, strict=True):
        direct = ops.perplexity(stack, SEQUENCES, 0, removed, batch_size=2)
        assert result.perplexity == pytest.approx(direct.perplexity, rel=1e-9), removed
        assert result.tokens == direct.tokens


@pytest.mark.parametrize("budget", [2 * 1024**3, 1])  # 1 byte: nothing kept, the base is run again
def test_rebasing_onto_a_measured_set_takes_its_states_instead_of_running_it(loaded, budget: int) -> None:
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2, budget=budget)
    runner.rebase([3])
    runner.measure([[3, 1], [3, 4], [3, 5]])
    runs: list[int] = []
    real = stack.run_layers
    stack.run_layers = lambda batches, indices, *a, **k: (runs.extend(indices), real(batches, indices, *a, **k))
    runner.rebase([3, 4])
    assert bool(runs) == (budget == 1)
    fresh = CandidateRunner(InMemoryStack(loaded.model, loaded.family), SEQUENCES, 0, batch_size=2, budget=budget)
    fresh.rebase([3, 4])
    assert runner.cache.keys() == fresh.cache.keys()
    for layer, states in fresh.cache.items():
        for a, b in zip(runner.cache[layer], states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_sweep_of_single_removals_keeps_no_states_and_a_rebase_after_it_runs_the_same(loaded) -> None:
    """The single-removal sweep kept every variant's states (about layers² / 2 of them: SmolLM2 at 16 × 128 tokens
    peaked at 3.2 GB where the estimate said 1.8, and at 1.36 GB without them) to spare one rebase half a pass."""
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2)
    n = stack.n_layers
    kept = runner.measure([[i] for i in range(n)])
    assert all(v.states is not None for v in runner._measured.values())  # the premise: within the budget, kept
    swept = CandidateRunner(stack, SEQUENCES, 0, batch_size=2)
    assert [r.perplexity for r in swept.measure([[i] for i in range(n)], keep_states=False)] == [
        r.perplexity for r in kept]
    assert all(v.states is None for v in swept._measured.values())
    runner.rebase([3])
    swept.rebase([3])  # run from layer 3, where the other took the states it kept
    assert runner.cache.keys() == swept.cache.keys()
    for layer, states in swept.cache.items():
        for a, b in zip(runner.cache[layer], states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_strided_head_scores_every_kth_next_token(loaded) -> None:
    model, family = loaded.model, loaded.family
    runner = CandidateRunner(InMemoryStack(model, family), SEQUENCES, 0, batch_size=3, stride=3)
    (result,) = runner.measure([[2]])
    total, count = 0.0, 0
    with pruned_view(model, family, [2]), torch.no_grad():
        for sequence in SEQUENCES:
            ids = torch.tensor([sequence])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            for position in range(2, len(sequence) - 1, 3):
                total -= float(logprobs[position, sequence[position + 1]])
                count += 1
    assert result.tokens == count
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_a_sweep_says_how_far_it_is_before_any_set_is_done(loaded) -> None:
    """Sets measured together run layer-major, so no set is done before the last layer: ``during`` reports each
    layer of the sweep (the bar of 30 single removals would otherwise stand still for the whole sweep)."""
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2)
    events: list[tuple[str, float]] = []
    runner.measure([[i] for i in range(6)], after_each=lambda k: events.append(("set", k)),
                   during=lambda fraction: events.append(("layer", fraction)))
    layers = [f for kind, f in events if kind == "layer"]
    # Removing layer 0 runs layers 1-5; the others start from the cache at their own layer: five layers in all.
    assert layers == [k / 5 for k in range(1, 6)]
    assert [kind for kind, _ in events] == ["layer"] * 5 + ["set"] * 6


def test_a_runner_computing_in_bfloat16_runs_its_layers_so_and_its_head_in_float32(loaded) -> None:
    """``compute``: the decoder layers under autocast (their products in bfloat16), the head's logits float32; the
    cache's states are computed the same way, so a cached measurement equals one from the first layer."""
    stack = InMemoryStack(loaded.model, loaded.family)
    products: list[torch.dtype] = []
    logits_dtypes: list[torch.dtype] = []
    layer = stack.layers[2]
    projection = layer.mlp.down_proj
    hook = projection.register_forward_hook(lambda module, args, out: products.append(out.dtype))
    real_nll = CandidateRunner._nll

    def nll(self, logits_of, batch):
        def recorded(view, hidden):
            out = logits_of(view, hidden)
            logits_dtypes.append(out.dtype)
            return out

        return real_nll(self, recorded, batch)

    try:
        CandidateRunner._nll = nll  # type: ignore[method-assign]
        half = CandidateRunner(stack, SEQUENCES, 0, batch_size=2, compute=torch.bfloat16)
        half.rebase([3])
        cached = half.measure([[3, 1], [3, 5]])
        uncached = CandidateRunner(stack, SEQUENCES, 0, batch_size=2, compute=torch.bfloat16, cached=False)
        direct = uncached.measure([[3, 1], [3, 5]])
        full = CandidateRunner(stack, SEQUENCES, 0, batch_size=2).measure([[3, 1], [3, 5]])
    finally:
        CandidateRunner._nll = real_nll  # type: ignore[method-assign]
        hook.remove()
    assert torch.bfloat16 in products and torch.float32 in products  # the bfloat16 runners and the float32 one
    assert set(logits_dtypes) == {torch.float32}
    for a, b, c in zip(cached, direct, full, strict=True):
        assert a.perplexity == pytest.approx(b.perplexity, rel=1e-9)
        assert a.perplexity != c.perplexity and a.perplexity == pytest.approx(c.perplexity, rel=0.05)


def _layer_bytes(loaded, batch_size: int) -> int:
    """The bytes of one layer's states for SEQUENCES, float32, padded per batch (computed here, not by the runner)."""
    hidden = loaded.model.config.hidden_size
    total = 0
    for start in range(0, len(SEQUENCES), batch_size):
        chunk = SEQUENCES[start:start + batch_size]
        total += len(chunk) * max(len(s) for s in chunk) * hidden * 4
    return total


def test_a_cache_over_budget_keeps_every_kth_layer_says_so_and_stays_within_it(loaded, caplog) -> None:
    stack = InMemoryStack(loaded.model, loaded.family)
    per_layer = _layer_bytes(loaded, 2)
    budget = per_layer * stack.n_layers * 2 // 3  # all six layers need 1.5 budgets: every 2nd layer is kept
    with caplog.at_level(logging.INFO, logger="shortgpt_desktop.core.cut.candidates"):
        runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2, budget=budget)
        assert runner.every == 2  # said when the cache is first made
    assert any("every 2-th layer" in r.getMessage() for r in caplog.records), "the fallback must be said"

    def check_cache() -> None:
        assert all(k % 2 == 0 for k in runner.cache), sorted(runner.cache)
        held = sum(h.numel() * h.element_size() for states in runner.cache.values() for h in states)
        assert held <= budget
        assert all(len(states) == len(runner.batches) for states in runner.cache.values())

    check_cache()
    runner.rebase([3])
    check_cache()
    sets = [[3, 4], [3, 5], [1, 3]]
    for removed, result in zip(sets, runner.measure(sets), strict=True):
        direct = ops.perplexity(stack, SEQUENCES, 0, removed, batch_size=2)
        assert result.perplexity == pytest.approx(direct.perplexity, rel=1e-9), removed
    runner.measure([[3, 4]])  # its states fit beside the cache: kept, at the checkpoints only
    runner.rebase([3, 4])  # from the states kept while measuring
    check_cache()
    (again,) = runner.measure([[3, 4, 5]])
    assert again.perplexity == pytest.approx(ops.perplexity(stack, SEQUENCES, 0, [3, 4, 5], batch_size=2).perplexity,
                                             rel=1e-9)


def test_a_base_rebased_without_measuring_refills_its_cache_once(loaded) -> None:
    """A base never measured (a new protected group starts from no removal, or the sets were not kept) is run
    again from the layer it changed: each cached layer holds one state per batch, and candidates from there equal
    a full pass."""
    stack = InMemoryStack(loaded.model, loaded.family)
    runner = CandidateRunner(stack, SEQUENCES, 0, batch_size=2)
    runner.rebase([3])
    runner.rebase([1, 3])  # not measured: refilled from layer 1
    assert all(len(states) == len(runner.batches) for states in runner.cache.values())
    runner.rebase([])  # as the search does for its next protected group
    assert all(len(states) == len(runner.batches) for states in runner.cache.values())
    sets = [[1], [2], [4]]
    for removed, result in zip(sets, runner.measure(sets), strict=True):
        direct = ops.perplexity(stack, SEQUENCES, 0, removed, batch_size=2)
        assert result.perplexity == pytest.approx(direct.perplexity, rel=1e-9), removed


def test_a_strided_head_never_scores_a_padding_target(loaded) -> None:
    """A short sample whose last real token is a scored position: its next token is padding, not counted."""
    model, family = loaded.model, loaded.family
    sequences = [[1, *range(20, 61)], [1, *range(60, 89)]]  # 42 and 30 tokens: position 29 is scored (stride 3)
    assert (len(sequences[1]) - 1) % 3 == 2
    runner = CandidateRunner(InMemoryStack(model, family), sequences, 0, batch_size=2, stride=3)
    (result,) = runner.measure([[2]])
    total, count = 0.0, 0
    with pruned_view(model, family, [2]), torch.no_grad():
        for sequence in sequences:
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([sequence])).logits[0].double(), -1)
            for position in range(2, len(sequence) - 1, 3):
                total -= float(logprobs[position, sequence[position + 1]])
                count += 1
    assert result.tokens == count
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


@pytest.mark.parametrize(("vocab", "stride"), [(2048, 1), (4096, 2)])
def test_the_head_is_strided_only_past_about_four_layers(vocab: int, stride: int) -> None:
    """The docstring's promise: every position while the head costs no more than ~4 decoder layers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from shortgpt_desktop.core.backends.layerwise import head_layers
    from shortgpt_desktop.core.model.families import family_for_model_type
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES

    config = AutoConfig.for_model("llama", **{**TINY_FAMILIES["llama"][1], "num_hidden_layers": 2,
                                              "vocab_size": vocab})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    stack = InMemoryStack(model, family_for_model_type("llama"))
    layers = head_layers(stack)
    assert (layers <= 4) == (stride == 1), layers
    assert head_stride(stack) == stride
