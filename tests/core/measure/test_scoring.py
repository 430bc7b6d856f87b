"""Scoring: Block Influence and the other metrics against independent references, masking, progress, cancel."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure.calibration import TokenSet, build_token_set
from shortgpt_desktop.core.measure.evaluation import perplexity_of
from shortgpt_desktop.core.measure.metrics import METRICS, score_model
from shortgpt_desktop.core.measure.scoring import HookStats, LayerScores, measure_layers
from shortgpt_desktop.core.model.loading import LoadedModel, load_model
from shortgpt_desktop.core.model.sources import resolve


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> LoadedModel:
    return load_model(resolve(str(tiny_model)), "cpu", "float32")


@pytest.fixture(scope="module")
def tokens(loaded: LoadedModel, small_calib: Path) -> TokenSet:
    return build_token_set(loaded.tokenizer, [small_calib.read_text()], samples=6, seq_len=48, seed=0)


def reference_states(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's input and the last layer's raw output, from output_hidden_states (final norm untied)."""
    model.config.tie_last_hidden_states = False
    try:
        with torch.no_grad():
            out = model.model(input_ids=ids, output_hidden_states=True)
    finally:
        model.config.tie_last_hidden_states = True
    return [h.double() for h in out.hidden_states]


def test_bi_matches_the_papers_definition(loaded: LoadedModel, tokens: TokenSet) -> None:
    stats = measure_layers(loaded.model, loaded.family, tokens, batch_size=4)
    ids = torch.tensor(tokens.samples)
    states = reference_states(loaded.model, ids)
    n = loaded.n_layers
    expected_bi, expected_rm = [], []
    for i in range(n):
        x, y = states[i], states[i + 1]
        cos = torch.nn.functional.cosine_similarity(x, y, dim=-1)
        expected_bi.append(float(1 - cos.mean()))
        expected_rm.append(float(((y - x).norm(dim=-1) / y.norm(dim=-1)).mean()))
    assert stats.tokens == ids.numel()
    assert stats.bi == pytest.approx(expected_bi, abs=1e-5)
    assert stats.relative_magnitude == pytest.approx(expected_rm, abs=1e-5)
    # The last layer scored from output_hidden_states with the final norm applied would be different.
    with torch.no_grad():
        normed = loaded.model.model(input_ids=ids, output_hidden_states=True).hidden_states[-1].double()
    naive_last = float(1 - torch.nn.functional.cosine_similarity(states[n - 1], normed, dim=-1).mean())
    assert abs(naive_last - stats.bi[-1]) > 1e-3


def test_padding_is_masked_out(loaded: LoadedModel, tokens: TokenSet) -> None:
    ragged = TokenSet([tokens.samples[0][:20], tokens.samples[1]], [], 48, tokens.bos_id, tokens.pad_id)
    padded = measure_layers(loaded.model, loaded.family, ragged, batch_size=2)
    one_by_one = measure_layers(loaded.model, loaded.family, ragged, batch_size=1)
    assert padded.tokens == one_by_one.tokens == 20 + 48
    assert padded.bi == pytest.approx(one_by_one.bi, abs=1e-6)
    assert padded.relative_magnitude == pytest.approx(one_by_one.relative_magnitude, abs=1e-6)
    # The angular distance reads each sample's last real token, not a pad position of the shorter one.
    assert padded.angular(2) == pytest.approx(one_by_one.angular(2), abs=1e-6)


def test_angular_distance_of_blocks(loaded: LoadedModel, tokens: TokenSet) -> None:
    stats = measure_layers(loaded.model, loaded.family, tokens, batch_size=3)
    ids = torch.tensor(tokens.samples)
    states = reference_states(loaded.model, ids)
    for block in (1, 2, 4):
        got = stats.angular(block)
        assert got[loaded.n_layers - block + 1 :] == [None] * (block - 1)
        for start in range(loaded.n_layers - block + 1):
            cos = torch.nn.functional.cosine_similarity(states[start][:, -1], states[start + block][:, -1], dim=-1)
            assert got[start] == pytest.approx(float((torch.arccos(cos) / math.pi).mean()), abs=1e-5)
    picked = METRICS["angular"].from_stats(stats, 2)
    assert picked.block_size == 2 and set(picked.extra) == {"bi", "relative_magnitude"}
    assert picked.scores == stats.angular(2)  # the distance across the block that would be removed


def test_baselines_need_no_pass(loaded: LoadedModel) -> None:
    assert score_model(loaded.model, loaded.family, None, "sequential").scores == [0, 1, 2, 3, 4, 5]
    assert score_model(loaded.model, loaded.family, None, "reverse").scores == [5, 4, 3, 2, 1, 0]


def test_single_removal_perplexity_is_exact(loaded: LoadedModel, tokens: TokenSet) -> None:
    result = score_model(loaded.model, loaded.family, tokens, "ppl", batch_size=3)
    for layer in (0, 5):
        with pruned_view(loaded.model, loaded.family, [layer]):
            expected = perplexity_of(loaded.model, tokens.samples, tokens.pad_id).perplexity
        assert result.scores[layer] == pytest.approx(expected, rel=1e-5)
    # the calibration tokens scored, as each pass scores them: the report said n_layers times as many (a walkthrough)
    assert result.tokens == perplexity_of(loaded.model, tokens.samples, tokens.pad_id).tokens


def test_progress_reports_partial_scores_and_cancel_stops(loaded: LoadedModel, tokens: TokenSet) -> None:
    events = []
    score_model(loaded.model, loaded.family, tokens, "bi", batch_size=2,
                progress=lambda stage, done, total, partial: events.append((stage, done, total, partial)))
    assert [e[1] for e in events] == [0, 2, 4, 6] and all(e[2] == 6 for e in events)
    assert events[0][3] is None  # the start, before anything is known
    assert all(len(e[3]) == loaded.n_layers and None not in e[3] for e in events[1:])
    # The live bars are Block Influence so far: after the last batch, the scores themselves.
    assert events[-1][3] == pytest.approx(measure_layers(loaded.model, loaded.family, tokens, batch_size=2).bi,
                                          abs=1e-9)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled) as stopped:
        score_model(loaded.model, loaded.family, tokens, "bi", batch_size=2, cancel=cancel)
    assert len(calls) == 2  # stopped before the second batch
    partial = stopped.value.partial  # what the first batch measured is handed over, not thrown away
    assert isinstance(partial, HookStats) and partial.tokens == sum(len(s) for s in tokens.samples[:2])
    first_batch = measure_layers(loaded.model, loaded.family, TokenSet(tokens.samples[:2], [], 48, tokens.bos_id,
                                                                       tokens.pad_id), batch_size=2)
    assert partial.bi == pytest.approx(first_batch.bi, abs=1e-9)


def test_hooks_are_removed(loaded: LoadedModel, tokens: TokenSet) -> None:
    measure_layers(loaded.model, loaded.family, tokens, batch_size=6)
    hooks = [h for layer in loaded.model.model.layers for h in layer._forward_hooks.values()]
    assert not [h for h in hooks if getattr(h, "__module__", "").startswith("shortgpt_desktop")]


def test_bf16_accumulates_in_float(tiny_model: Path, tokens: TokenSet) -> None:
    """In bf16 the hidden states are bf16 but every reduction must be float: compare with float64 sums of the
    very same bf16 states, to a tolerance a bf16 reduction (8 bits of mantissa) cannot meet."""
    model16 = load_model(resolve(str(tiny_model)), "cpu", "bfloat16")
    layers = model16.model.model.layers
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        captured.append((x.detach().clone(), y.detach().clone()))

    handles = [layer.register_forward_hook(keep, with_kwargs=True) for layer in layers]
    try:
        bi16 = measure_layers(model16.model, model16.family, tokens, batch_size=6).bi
    finally:
        for handle in handles:
            handle.remove()
    assert all(x.dtype == torch.bfloat16 for x, _ in captured)
    for i, (x, y) in enumerate(captured):
        cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)
        assert bi16[i] == pytest.approx(float(1 - cos.mean()), abs=1e-6)
    naive = [float(1 - torch.nn.functional.cosine_similarity(x, y, dim=-1).mean()) for x, y in captured]
    assert any(abs(a - b) > 1e-4 for a, b in zip(naive, bi16, strict=True)), "bf16 sums would not be caught"


def test_a_nan_score_is_scored_but_not_known() -> None:
    """The pass measured the layer (the cancel message counts it), but no choice can rank it (the slider's most)."""
    scores = LayerScores("bi", [0.1, math.nan, None, 0.3, None])
    assert (scores.scored_layers, scores.known_layers) == (3, 2)
