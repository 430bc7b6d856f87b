"""Candidates measured from cached states: the same numbers as a pass from the first layer, and a strided
head scores exactly the positions it says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.candidates import CandidateRunner
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
