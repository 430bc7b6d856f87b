"""The safer default choice ("bi+"): it must avoid a layer that BI ranks redundant but the model needs.

The trap model is built by hand: a massive residual dimension (as real LLMs have) makes every cosine close
to 1, and one layer removes a small constant offset in a dimension the LM head reads with a large weight.
Its BI is the lowest of all (the offset is tiny next to the massive dimension), yet without it every token
predicts one fixed token with near certainty.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
import torch

from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.plan import lowest
from shortgpt_desktop.core.cut.selection import candidate_words
from shortgpt_desktop.core.cut.selection import choose_layers_safely as _choose
from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.errors import Cancelled, PlanError
from shortgpt_desktop.core.measure.calibration import TokenSet
from shortgpt_desktop.core.measure.evaluation import perplexity_of
from shortgpt_desktop.core.measure.scoring import measure_layers
from shortgpt_desktop.core.model.families import family_for_model_type, get_submodule
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES

VOCAB = 512
MASSIVE = 100.0  # the massive residual dimension 0
OFFSET = 5.0  # dimension 1 before the trap layer; the trap layer removes it
HEAD_WEIGHT = 60.0  # how strongly the LM head reads dimension 1 (for token 7)


def random_tokens(n_samples: int, seq_len: int, seed: int, n_windows: int = 4) -> TokenSet:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n_samples + n_windows, seq_len), generator=generator).tolist()
    return TokenSet(ids[:n_samples], ids[n_samples:], seq_len, None, 0)


def random_model(model_type: str, kwargs: dict, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs), dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    return model.eval()


def trap_model(trap: int, n_layers: int = 6):
    """A llama whose layer ``trap`` has the lowest BI but is the only thing keeping the LM head sane."""
    kwargs = dict(TINY_FAMILIES["llama"][1], num_hidden_layers=n_layers, mlp_bias=True)
    model = random_model("llama", kwargs)
    inner = model.model
    with torch.no_grad():
        inner.embed_tokens.weight[:, 0] = MASSIVE
        inner.embed_tokens.weight[:, 1] = OFFSET
        for index, layer in enumerate(inner.layers):
            writers = (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)
            if index == trap:
                for weight in writers:
                    weight.zero_()
                layer.mlp.down_proj.bias.zero_()
                layer.mlp.down_proj.bias[1] = -OFFSET  # x → x − OFFSET·e1: nearly parallel, yet vital
            else:
                for weight in writers:
                    weight.mul_(40.0)  # ordinary layers change the stream more (higher BI)
                    weight[:2] = 0.0  # ...but never dimensions 0 and 1
        inner.norm.weight[0] = 0.0  # the head ignores the massive dimension
        inner.norm.weight[1] = 1.0
        model.lm_head.weight[:, 1] = 0.0
        model.lm_head.weight[7, 1] = HEAD_WEIGHT
    return model


def calibration_ppl(model, family, tokens: TokenSet, removed, eval_samples: int = 8) -> float:
    with pruned_view(model, family, removed):
        return perplexity_of(model, tokens.samples[:eval_samples], tokens.pad_id, 4).perplexity


LLAMA = family_for_model_type("llama")


def choose_layers_safely(model, family, tokens, count, bi, **kwargs):
    return _choose(InMemoryStack(model, family), tokens, count, bi, **kwargs)


@pytest.mark.parametrize("trap", [5, 3], ids=["last-layer", "interior-layer"])
def test_bi_plus_avoids_the_layer_plain_bi_wrongly_removes(trap: int) -> None:
    model = trap_model(trap)
    tokens = random_tokens(12, 32, seed=1)
    bi = measure_layers(model, LLAMA, tokens, keep_last_token=False).bi
    assert min(range(6), key=lambda i: bi[i]) == trap, f"the construction must fool BI: {bi}"
    plain = lowest(bi, 2)
    assert trap in plain

    result = choose_layers_safely(model, LLAMA, tokens, 2, bi)

    assert trap not in result.removed
    assert len(result.removed) == 2
    # Independent measurements on the same calibration subset.
    chosen = calibration_ppl(model, LLAMA, tokens, result.removed)
    wrecked = calibration_ppl(model, LLAMA, tokens, plain)
    assert chosen == pytest.approx(min(c.calibration_perplexity for c in result.candidates), rel=1e-9)
    assert chosen <= wrecked
    assert wrecked > 50 * chosen, "removing the trap layer must be catastrophic, or the test proves nothing"
    by_name = {c.name: c for c in result.candidates}
    assert by_name["bi"].removed == plain
    assert by_name["bi"].calibration_perplexity == pytest.approx(wrecked, rel=1e-9)
    if trap == 3:  # protecting the ends does not help here: only the measured greedy step does
        assert trap in by_name["bi-ends-protected"].removed
        assert result.chosen == "greedy"
    assert result.eval_samples == 8 and result.eval_tokens == 8 * 31
    assert result.protected == [0, 5]
    # One measured removal per open layer, then each step's BI and single-removal windows, then the finalists.
    assert result.forward_passes <= 6 + 2 * (2 * 3) + 4
    assert (trap in result.considered) == (trap not in result.protected)
    assert result.explanation.startswith(f"Removed 2 layers chosen by {candidate_words(result.chosen)}: ")


def scored_tiny_family(name: str, samples: int) -> tuple[Any, Any, int, TokenSet, list[float]]:
    """A tiny random model of family ``name``, its layer count, ``samples`` random calibration samples of 24
    tokens and the layers' Block Influence on them."""
    model_type, kwargs = TINY_FAMILIES[name]
    model = random_model(model_type, kwargs, seed=3)
    family = family_for_model_type(model_type)
    n = len(get_submodule(model, family.layers_path))
    tokens = random_tokens(samples, 24, seed=2)
    return model, family, n, tokens, measure_layers(model, family, tokens, keep_last_token=False).bi


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma2", "gpt2", "mixtral"])
def test_the_search_runs_on_tiny_families_and_says_what_it_measured(name: str) -> None:
    """Every number the search reports is what an independent measurement of that set gives; the chosen set is
    the finalist with the lowest calibration perplexity (the finalists are measured, not assumed)."""
    model, family, n, tokens, bi = scored_tiny_family(name, samples=10)
    for count in (1, n // 2):
        result = choose_layers_safely(model, family, tokens, count, bi, eval_samples=6)
        assert len(result.removed) == count == len(set(result.removed))
        for candidate in result.candidates:
            assert candidate.calibration_perplexity == pytest.approx(
                calibration_ppl(model, family, tokens, candidate.removed, 6), rel=1e-9), candidate.name
        assert result.removed == min(result.candidates, key=lambda c: c.calibration_perplexity).removed
        assert all(c.removed == sorted(c.removed) for c in result.candidates)
        # The paper's baseline: the open layers whose removal alone costs least.
        open_layers = [i for i in range(n) if i not in result.protected]
        cheapest = sorted(open_layers, key=lambda i: result.single_removal[i])[:count]
        assert next(c for c in result.candidates if c.name == "single-removal").removed == sorted(cheapest)
        # The greedy order is nested and each step's perplexity is what that prefix measures.
        k = max(1, count - 1)
        assert result.order_perplexity[k - 1] == pytest.approx(
            calibration_ppl(model, family, tokens, result.order[:k], 6), rel=1e-9
        )
        assert result.single_removal[n // 2] == pytest.approx(
            calibration_ppl(model, family, tokens, [n // 2], 6), rel=1e-9)


def test_the_bars_total_drops_what_is_not_run_again_and_ends_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The total counts every candidate set as new; sets measured or judged before are not run again, and the
    total is brought down as soon as that is known: once the finalists are being judged it is the exact count
    (it stayed an upper bound: "85/98 passes, about 9 min 28 s left", then done at 87/87 16 s later). The fits'
    own time, which moves the total too (the next test), is left out here."""
    from shortgpt_desktop.core.cut import selection

    monkeypatch.setattr(selection._SelectionBar, "_timed_fit", lambda self, seconds: None)
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8))
    tokens = random_tokens(16, 16, seed=4)
    bi = [0.1, 0.25, 0.2, 0.3, 0.15, 0.35, 0.4, 0.5]
    seen: list[tuple[int, int]] = []
    result = choose_layers_safely(model, LLAMA, tokens, 3, bi, judge_repaired=True,
                                  progress=lambda s, d, t, p: seen.append((d, t)))
    final = seen[-1][1]
    assert seen[-1][0] == final and all(a[1] >= b[1] for a, b in itertools.pairwise(seen[:-1]))
    assert seen[0][1] > final, "the first total counts sets found later to be measured already"
    searched = result.forward_passes  # the judging moves the bar on from the last candidate pass
    assert all(t == final for d, t in seen if d > searched), seen


def clocked_search(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """bi+'s bar on a clock the test moves: 10 ms a candidate pass, the first repair fit 3 s (it also runs the
    original's states the others share), the others 1 s, each counted after the fit has run (what comes before a
    fit's first report is not the fit's). Returns the list of fits made, one entry each."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.cut import candidates, repair, selection

    now = [0.0]
    monkeypatch.setattr(selection, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    measure, fit = candidates.CandidateRunner.measure, repair.fit_linear_repair
    fits: list[int] = []

    def timed_measure(self: Any, sets: Any, *args: Any, **kwargs: Any) -> Any:
        now[0] += 0.01 * len(sets)
        return measure(self, sets, *args, **kwargs)

    def slow_fit(*args: Any, **kwargs: Any) -> Any:
        result = fit(*args, **kwargs)
        now[0] += 3.0 if not fits else 1.0
        fits.append(1)
        return result

    monkeypatch.setattr(candidates.CandidateRunner, "measure", timed_measure)
    monkeypatch.setattr(repair, "fit_linear_repair", slow_fit)
    return fits


def test_a_judging_that_costs_many_passes_counts_them_once_one_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging a finalist repaired counts for what the model's shape says until one is judged, then for the passes
    the judgings really took: on Gemma 3 270M a judging took about 13 passes' time, and at a count of 2 the bar
    stood still for two minutes at "35/48" with "about 29 s left". On a clock the test moves (10 ms a candidate
    pass; the first quick fit 3 s, as it also runs the original's states the others share, the others 1 s), the
    first judged counts for 300 passes and the total grows to match; from the second on each counts for the mean
    of those after the first (100), the total shrinks to match, and the bar moves forward and ends exact."""
    fits = clocked_search(monkeypatch)
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8))
    tokens = random_tokens(24, 16, seed=4)  # more than the quick fit's 2 × 8 samples: not the saved fit
    bi = [0.1, 0.25, 0.2, 0.3, 0.15, 0.35, 0.4, 0.5]
    seen: list[tuple[int, int]] = []
    result = choose_layers_safely(model, LLAMA, tokens, 3, bi, judge_repaired=True,
                                  progress=lambda s, d, t, p: seen.append((d, t)))
    searched = result.forward_passes
    judging = [(d, t) for d, t in seen if d > searched]
    before = max(t for d, t in seen if d <= searched)
    judgings = len({tuple(c.removed) for c in result.candidates})
    assert judgings >= 3 and len(fits) == judgings
    # The shape's guess for this tiny model is a few passes a judging; the first judged says 300 for each.
    first_done = judging[0][0] - searched
    assert 299 <= first_done <= 301, judging
    assert judging[0][1] >= before + 280 * judgings, (before, judging)
    # The second says 100 for itself and those left: the total comes down by 200 for each.
    assert judging[1][1] <= judging[0][1] - 190 * (judgings - 1), judging
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] <= b[1] for a, b in itertools.pairwise(seen))
    steps = [b[0] - a[0] for a, b in itertools.pairwise(judging[:-1])]  # the last report: done/done
    assert len(steps) == judgings - 1 and all(99 <= step <= 101 for step in steps), judging


def test_a_full_fit_that_costs_many_passes_counts_them_once_one_has_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the finalists are judged with the fit the job saves, each fit counted for two passes however long it
    took: SmolLM2's fits on its samples and chat answers took about 18 passes' time each, and the bar said "about
    36.7 s left" with 121 s to go. On a clock the test moves (10 ms a candidate pass; the first fit 3 s, as it also
    runs the original's states the others share, the others 1 s) the first fit makes those still counted count for
    300 passes, the second for the mean of those after the first (100), and the bar ends exact."""
    fits = clocked_search(monkeypatch)
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8))
    tokens = random_tokens(16, 16, seed=4)  # the quick fit's 2 × 8 samples are all of them: the saved fit
    bi = [0.1, 0.25, 0.2, 0.3, 0.15, 0.35, 0.4, 0.5]
    seen: list[tuple[int, int]] = []
    result = choose_layers_safely(model, LLAMA, tokens, 3, bi, judge_repaired=True,
                                  progress=lambda s, d, t, p: seen.append((d, t)))
    distinct = len({tuple(c.removed) for c in result.candidates})
    assert distinct >= 3 and len(fits) == distinct
    totals = [t for _, t in seen]
    grown = max(b - a for a, b in itertools.pairwise(totals))
    assert grown >= 290 * (distinct - 1), totals  # the first fit: 300 passes for each still counted, not 2
    shrunk = min(b - a for a, b in itertools.pairwise(totals))
    assert shrunk <= -190 * (distinct - 2), totals  # the second: 100 for itself and those after it
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] <= b[1] for a, b in itertools.pairwise(seen))


def test_progress_cancel_and_bad_counts() -> None:
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=4))
    tokens = random_tokens(4, 16, seed=4)
    bi = [0.1, 0.2, 0.3, 0.4]
    seen: list[tuple[str, int, int]] = []
    result = choose_layers_safely(model, LLAMA, tokens, 1, bi, progress=lambda s, d, t, p: seen.append((s, d, t)))
    assert {s for s, _, _ in seen} == {"selecting"}
    assert seen[-1][1] == result.forward_passes == seen[-1][2]  # the counter finishes at its total
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(seen))
    assert all(math.isfinite(c.calibration_perplexity) for c in result.candidates)
    # Judged repaired, each finalist's fit moves the bar too (it was silent for the longest part of a small job).
    judged: list[tuple[str, int, int]] = []
    result = choose_layers_safely(model, LLAMA, tokens, 1, bi, judge_repaired=True,
                                  progress=lambda s, d, t, p: judged.append((s, d, t)))
    after_last_pass = [d for _, d, _ in judged if d > result.forward_passes]
    # Each fit moves it on (here the quick fit is the full one: every sample), then it is done.
    assert len(set(after_last_pass)) >= len({tuple(c.removed) for c in result.candidates}) + 1
    assert judged[-1][1] == judged[-1][2] and all(a[1] <= b[1] and b[1] <= b[2] for a, b in itertools.pairwise(judged))
    with pytest.raises(PlanError):
        choose_layers_safely(model, LLAMA, tokens, 4, bi)
    with pytest.raises(PlanError):
        choose_layers_safely(model, LLAMA, tokens, 0, bi)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        choose_layers_safely(model, LLAMA, tokens, 2, bi, cancel=lambda: next(calls) >= 3)
    assert len(get_submodule(model, LLAMA.layers_path)) == 4, "a cancelled search leaves the model whole"


# --------------------------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2_tokens(smollm2, valid_text, test_text):
    from shortgpt_desktop.core.measure.calibration import build_token_set

    loaded = smollm2
    tokens = build_token_set(
        loaded.tokenizer, [valid_text.read_text(encoding="utf-8")], [test_text.read_text(encoding="utf-8")],
        samples=32, seq_len=256, max_eval_windows=16,
    )
    return loaded, tokens


@pytest.mark.slow(seconds=131)
def test_smollm2_bi_plus_not_worse_than_bi(smollm2_tokens) -> None:
    """8 of 30 layers. Kept cheap: the search measures 2 samples, the held-out check 4 windows."""
    loaded, tokens = smollm2_tokens
    model, family = loaded.model, loaded.family
    started = time.perf_counter()
    bi = measure_layers(model, family, tokens, keep_last_token=False).bi
    plain = lowest(bi, 8)
    result = choose_layers_safely(model, family, tokens, 8, bi, eval_samples=2, window=2)
    assert len(result.removed) == 8
    assert result.forward_passes <= 30 + 8 * 2 * 2 + 4
    by_name = {c.name: c for c in result.candidates}
    assert by_name["bi"].removed == plain
    windows = tokens.eval_windows[:4]
    with pruned_view(model, family, plain):
        held_plain = perplexity_of(model, windows, tokens.pad_id, 4).perplexity
    if result.removed == plain:
        held_plus = held_plain
    else:
        with pruned_view(model, family, result.removed):
            held_plus = perplexity_of(model, windows, tokens.pad_id, 4).perplexity
    print(
        f"\nSmolLM2 8/30: bi {plain} held-out ppl {held_plain:.2f}; bi+ ({result.chosen}) {result.removed} "
        f"held-out ppl {held_plus:.2f}; {result.forward_passes} passes, {result.seconds:.1f} s selecting, "
        f"{time.perf_counter() - started:.1f} s in all"
    )
    assert held_plus < 1.1 * held_plain, "the calibration choice should carry over to held-out text"


def test_the_single_removal_sweep_keeps_no_states_and_the_greedy_steps_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's states (about layers² / 2) were held to spare one rebase; the greedy steps' few are worth it."""
    from shortgpt_desktop.core.cut import candidates

    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8), seed=5)
    tokens = random_tokens(8, 24, seed=6)
    bi = measure_layers(model, LLAMA, tokens, keep_last_token=False).bi
    calls: list[tuple[int, bool]] = []
    measure = candidates.CandidateRunner.measure

    def recorded(self: Any, sets: Any, *args: Any, keep_states: bool = True, **kwargs: Any) -> Any:
        calls.append((len(sets), keep_states))
        return measure(self, sets, *args, keep_states=keep_states, **kwargs)

    monkeypatch.setattr(candidates.CandidateRunner, "measure", recorded)
    choose_layers_safely(model, LLAMA, tokens, 3, bi, eval_samples=6)
    assert calls[0] == (8, False)  # every layer's removal, in one sweep
    assert len(calls) > 1 and all(keep for _, keep in calls[1:])


def test_the_cache_changes_no_number() -> None:
    """Each candidate starts from the cached states of the layers chosen so far: same choice, same perplexities
    as measuring every candidate from the first layer."""
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8), seed=5)
    tokens = random_tokens(8, 24, seed=6)
    bi = measure_layers(model, LLAMA, tokens, keep_last_token=False).bi
    cached = choose_layers_safely(model, LLAMA, tokens, 3, bi, eval_samples=6, cached=True)
    direct = choose_layers_safely(model, LLAMA, tokens, 3, bi, eval_samples=6, cached=False)
    assert cached.removed == direct.removed and cached.order == direct.order
    assert cached.order_perplexity == pytest.approx(direct.order_perplexity, rel=1e-6)
    assert [c.calibration_perplexity for c in cached.candidates] == pytest.approx(
        [c.calibration_perplexity for c in direct.candidates], rel=1e-6)


def test_a_search_where_every_candidate_is_nan_says_so() -> None:
    """fp16 can overflow: a sentence, never a layer numbered -1 in the plan."""
    from shortgpt_desktop.core.errors import ResourceError

    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=4))
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    tokens = random_tokens(4, 16, seed=4)
    with pytest.raises(ResourceError, match="not a number"):
        choose_layers_safely(model, LLAMA, tokens, 1, [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_finalists_judged_repaired_carry_what_their_repaired_model_measures(name: str) -> None:
    """With ``judge_repaired`` (the default job, which repairs), each finalist's repaired perplexity is what an
    independent repair (fitted on the first 2 × eval_samples samples) and measurement give, and the chosen set is
    the finalist lowest on it (not on the plain perplexity)."""
    from shortgpt_desktop.core.cut.repair import fit_linear_repair
    from shortgpt_desktop.core.model.weights_view import weights_view

    model, family, n, tokens, bi = scored_tiny_family(name, samples=14)
    result = choose_layers_safely(model, family, tokens, n // 2, bi, eval_samples=6, judge_repaired=True)
    assert result.judged_repaired
    fit_on = TokenSet(tokens.samples[:12], [], tokens.seq_len, tokens.bos_id, tokens.pad_id)
    for candidate in result.candidates:
        repair = fit_linear_repair(model, family, fit_on, candidate.removed, 4, fit="map")  # the quick fit's kind
        assert repair.tensors, "the repair must change something, or the comparison proves nothing"
        with weights_view(model, repair.tensors), pruned_view(model, family, candidate.removed):
            expected = perplexity_of(model, tokens.samples[:6], tokens.pad_id, 4).perplexity
        assert candidate.repaired_perplexity == pytest.approx(expected, rel=1e-6), candidate.name
        assert candidate.repaired_perplexity != pytest.approx(candidate.calibration_perplexity, rel=1e-6)
    assert result.removed == min(result.candidates, key=lambda c: c.repaired_perplexity).removed
    assert "repaired" in result.explanation


@pytest.mark.parametrize("judge_repaired", [False, True], ids=["plain", "repaired"])
def test_a_finalist_that_ends_its_turn_at_once_is_passed_over(judge_repaired: bool) -> None:
    """With an answer probe, the finalists are asked best figure first, each with the repair the saved model gets
    (fitted on every calibration sample, not the quick fit that ranks them), until one answers: a finalist whose
    first token on a prompt ends the turn (where the original's does not) loses to it, whatever its perplexity.
    Each asked finalist's count is what its own next token says. The end token is picked so that the set chosen
    without the probe is the silent one."""
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.cut.answer_probe import AnswerProbe
    from shortgpt_desktop.core.cut.repair import fit_linear_repair

    model, family, n, tokens, bi = scored_tiny_family("llama", samples=14)
    count = n // 2
    unprobed = choose_layers_safely(model, family, tokens, count, bi, eval_samples=6, judge_repaired=judge_repaired)
    stack = InMemoryStack(model, family)
    generator = torch.Generator().manual_seed(9)
    prompts = [torch.randint(3, VOCAB, (length,), generator=generator).tolist() for length in (5, 9, 13, 7, 11)]

    def weights(removed: list[int]) -> dict | None:
        return fit_linear_repair(model, family, tokens, removed, 4).tensors if judge_repaired else None

    original = ops.next_tokens(stack, prompts, 0)
    sets = {tuple(c.removed) for c in unprobed.candidates}
    first = {s: ops.next_tokens(stack, prompts, 0, list(s), weights(list(s))) for s in sets}
    chosen = tuple(unprobed.removed)
    # A prompt where the chosen set's token differs from the original's and from another finalist's.
    found = [(j, first[chosen][j]) for j in range(len(prompts))
             if original[j] != first[chosen][j] and any(first[s][j] != first[chosen][j] for s in sets - {chosen})]
    assert found, "no prompt separates the finalists: change the prompts' seed"
    j, end = found[0]
    probe = AnswerProbe([prompts[j]], {end}, 0)
    fits: list[tuple[int, ...]] = []

    def repair_for(removed, progress=None):
        fits.append(tuple(removed))
        return fit_linear_repair(model, family, tokens, removed, 4, progress=progress)

    bar: list[tuple[int, int]] = []
    probed = choose_layers_safely(model, family, tokens, count, bi, eval_samples=6, judge_repaired=judge_repaired,
                                  probe=probe, repair_for=repair_for, progress=lambda s, d, t, p: bar.append((d, t)))
    asked = [c for c in probed.candidates if c.silent is not None]
    for candidate in asked:
        assert candidate.silent == int(first[tuple(candidate.removed)][j] == end), candidate.name
    assert probed.removed != unprobed.removed
    winner = next(c for c in probed.candidates if c.removed == probed.removed)
    assert winner.silent == 0
    # Every finalist ranked before the winner was asked and fell silent; none ranked after it was asked.
    assert all(c.silent for c in probed.candidates if c.judged < winner.judged)
    assert all(c.silent is None or c.removed == winner.removed or c.silent
               for c in probed.candidates if c.judged > winner.judged)
    # Judged repaired, the probe's weights are the saved repair's, fitted once per set asked.
    in_order = list(dict.fromkeys(tuple(c.removed) for c in sorted(asked, key=lambda c: c.judged)))
    assert fits == (in_order if judge_repaired else [])
    assert "ending their turn at once" in probed.explanation
    # The bar is full only at the end: the answer check, and each further finalist it asks, are counted before
    # they run (it was full while the first finalist was asked, and again before a second one's fit began).
    assert len(asked) >= 2 and bar[-1][0] == bar[-1][1]
    assert all(done < total for done, total in bar[:-1]), bar


def test_the_ends_stay_protected_until_too_few_layers_are_left_besides_them() -> None:
    """The first and last layers are kept out of the choice while the other layers can give the count: 4 of 6 still
    can (layers 1-4), 5 of 6 cannot; a layer without a score (a cancelled pass) cannot go, so it gives none. A
    model of 2 layers has no ends to protect."""
    from shortgpt_desktop.core.cut.selection import protected_for, protected_layers

    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert protected_for(scores, 4) == [0, 5] and protected_for(scores, 5) == []
    unscored = [0.1, None, 0.3, 0.4, None, 0.6]
    assert protected_for(unscored, 2) == [0, 5] and protected_for(unscored, 3) == []
    # A NaN score cannot go either (plan.lowest never takes one): counted as a score, it kept the ends protected
    # and the choice then failed with "Only 2 layers have scores; cannot remove 3".
    overflowed = [0.1, math.nan, math.nan, 0.4, 0.5, 0.6]
    assert protected_for(overflowed, 2) == [0, 5] and protected_for(overflowed, 3) == []
    assert protected_layers(2) == [] and protected_layers(3) == [0, 2]


def test_each_count_of_a_curve_keeps_the_ends_it_would_keep_alone() -> None:
    """One search serves the quality curve's counts, but the ends protected depend on each count: a curve going past
    the layers that can go besides the ends (5 of 6) must still keep them at 1, as Save for 1 layer does."""
    from shortgpt_desktop.core.cut.selection import choose_for_counts

    model, family, n, tokens, _ = scored_tiny_family("llama", samples=8)
    bi = [0.01, 0.5, 0.4, 0.3, 0.2, 0.02]  # the ends score lowest: only their protection keeps them
    out = choose_for_counts(InMemoryStack(model, family), tokens, [1, 2, 5], bi, eval_samples=6, window=1)
    assert out[1].protected == [0, n - 1] and not {0, n - 1} & set(out[1].removed)
    assert out[5].protected == [] and len(out[5].removed) == 5
    # Counts 1 and 2 share one search: each says its own prefix of the order and what its own steps measured
    # (the first step: the open layer lowest on BI, 4, and the one whose removal alone costs least besides it).
    assert out[1].order == out[2].order[:1] and len(out[1].order_perplexity) == 1 and len(out[2].order) == 2
    assert out[1].considered == [4, min((1, 2, 3), key=lambda i: out[1].single_removal[i])]
    assert len(out[2].considered) > len(out[1].considered)


def test_each_greedy_step_also_tries_the_layers_whose_removal_alone_costs_least() -> None:
    """The greedy step measures the lowest-BI layers and the lowest single-removal ones (the paper's own baseline):
    where BI ranks last the layer whose removal costs least, the first step still measures it."""
    model, family, n, tokens, bi = scored_tiny_family("llama", samples=8)
    first = choose_layers_safely(model, family, tokens, 1, bi, eval_samples=6, window=1)
    open_layers = [i for i in range(n) if i not in first.protected]
    cheapest = min(open_layers, key=lambda i: first.single_removal[i])
    against = [0.9 if i == cheapest else 0.1 + 0.01 * i for i in range(n)]  # BI ranks it last of all
    result = choose_layers_safely(model, family, tokens, 1, against, eval_samples=6, window=1)
    assert result.considered == [min(open_layers, key=lambda i: against[i]), cheapest]
    assert result.single_removal == first.single_removal


def test_a_greedy_step_never_takes_a_layer_whose_removal_measures_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 can overflow for one set and not the others: the step takes the best finite one, even where the layer
    that overflows comes first in BI order (a NaN compares as neither lower nor higher)."""
    import dataclasses

    from shortgpt_desktop.core.cut import candidates

    model, family, n, tokens, bi = scored_tiny_family("llama", samples=8)
    overflowing = min(range(1, n - 1), key=lambda i: bi[i])  # the first layer each step measures
    measure = candidates.CandidateRunner.measure

    def overflows(self: Any, sets: Any, *args: Any, **kwargs: Any) -> Any:
        return [dataclasses.replace(r, perplexity=math.nan) if overflowing in s else r
                for s, r in zip(sets, measure(self, sets, *args, **kwargs), strict=True)]

    monkeypatch.setattr(candidates.CandidateRunner, "measure", overflows)
    result = choose_layers_safely(model, family, tokens, 2, bi, eval_samples=6)
    assert overflowing not in result.order and all(math.isfinite(p) for p in result.order_perplexity)
    assert overflowing not in result.removed and math.isnan(result.single_removal[overflowing])


def test_the_explanation_names_each_other_set_once_and_says_which_fell_silent() -> None:
    from shortgpt_desktop.core.cut.selection import Candidate, _explain

    greedy = Candidate("greedy", [2, 3], 10.0, silent=0)
    others = [Candidate("bi-ends-protected", [2, 3], 10.0, silent=0), Candidate("bi", [3, 5], 50.0, silent=2),
              Candidate("single-removal", [1, 3], 20.0)]
    assert _explain(greedy, [greedy, *others], 2, 8, 248) == (
        "Removed 2 layers chosen by the greedy search: calibration perplexity 10.00 on 8 samples (248 tokens), the "
        "same set as BI's lowest with the first and last layers kept; other candidates: plain BI's lowest 50.00, "
        "single-removal perplexity's lowest 20.00; ending their turn at once on chat prompts the original answers: "
        "plain BI's lowest on 2.")
    every = [Candidate("greedy", [2, 3], 10.0, 9.5, silent=1), Candidate("bi", [3, 5], 50.0, 12.0, silent=2)]
    assert _explain(every[0], every, 2, 8, 248) == (
        "Removed 2 layers chosen by the greedy search: calibration perplexity 9.50 repaired (10.00 before the repair) "
        "on 8 samples (248 tokens); other candidates: plain BI's lowest 12.00; ending their turn at once on chat "
        "prompts the original answers: plain BI's lowest on 2; the chosen set too ends its turn at once on 1 chat "
        "prompt (every finalist does).")
    # One precision in a line (".4g" wrote "37.2 repaired (49.45 before the repair)"), counts grouped and in number.
    big = [Candidate("bi", [1], 1234.5, 527.83), Candidate("greedy", [2], 49.449, 37.2)]
    assert _explain(big[1], big, 1, 1, 2040) == (
        "Removed 1 layer chosen by the greedy search: calibration perplexity 37.20 repaired (49.45 before the repair) "
        "on 1 sample (2,040 tokens); other candidates: plain BI's lowest 527.83.")
    assert _explain(big[0], big[:1], 1, 1, 2040).startswith(
        "Removed 1 layer chosen by plain BI's lowest: calibration perplexity 527.83 repaired (1,234 before the "
        "repair)")
    # where the search scores every n-th next token, the count says so (1,016, 504 and 120 tokens read as a fault)
    assert "on 8 samples (504 tokens, every 2nd next token);" in _explain(big[1], big, 1, 8, 504, stride=2)
    assert "(120 tokens, every 8th next token)" in _explain(big[1], big, 1, 8, 120, stride=8)


def test_a_finalist_whose_repaired_model_measures_not_a_number_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy set is measured finite before its repair; repaired it can overflow (fp16), and it is the first
    finalist, where a NaN would stay the lowest (it compares as neither lower nor higher)."""
    import dataclasses

    from shortgpt_desktop.core.backends import ops

    model, family, n, tokens, bi = scored_tiny_family("llama", samples=14)
    perplexity, judged = ops.perplexity, []

    def greedy_overflows(*args: Any, **kwargs: Any) -> Any:  # the finalists are judged greedy first
        judged.append(1)
        result = perplexity(*args, **kwargs)
        return dataclasses.replace(result, perplexity=math.nan) if len(judged) == 1 else result

    monkeypatch.setattr(ops, "perplexity", greedy_overflows)
    result = choose_layers_safely(model, family, tokens, n // 2, bi, eval_samples=6, judge_repaired=True)
    greedy = next(c for c in result.candidates if c.name == "greedy")
    assert math.isnan(greedy.judged) and math.isfinite(greedy.calibration_perplexity)
    assert result.removed != greedy.removed
    assert math.isfinite(next(c for c in result.candidates if c.name == result.chosen).judged)


def test_a_full_fit_whose_cost_is_known_is_counted_at_it_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fit's cost given as the job's estimate counts it (:class:`FitCost`), the bar counts each fit at it
    and the original's stream once from the start: on SmolLM2 at 8 × 128 the fits counted as two passes each until
    the first was timed, and the bar went from 70/83 back to 95/233. On :func:`clocked_search`'s clock (10 ms a
    pass, the first fit 3 s with the original's stream, the others 1 s), fits costed at 100 passes and the original's
    stream at 200: the total only comes down, to the passes that ran, and the bar ends exact (without a cost, the
    total grows by about 300 passes a fit still counted once the first has run: the test before)."""
    from shortgpt_desktop.core.cut.candidates import head_stride
    from shortgpt_desktop.core.cut.selection import FitCost, candidate_layers, head_layers

    fits = clocked_search(monkeypatch)
    model = random_model("llama", dict(TINY_FAMILIES["llama"][1], num_hidden_layers=8))
    tokens = random_tokens(16, 16, seed=4)  # the saved fit judges the finalists
    stack = InMemoryStack(model, LLAMA)
    pass_layers = 8 * 16 * candidate_layers(8, head_layers(stack), head_stride(stack))  # the search's 8 samples
    bi = [0.1, 0.25, 0.2, 0.3, 0.15, 0.35, 0.4, 0.5]
    seen: list[tuple[int, int]] = []
    result = _choose(stack, tokens, 3, bi, judge_repaired=True, progress=lambda s, d, t, p: seen.append((d, t)),
                     fit_cost=FitCost(lambda count: 100 * pass_layers, 200 * pass_layers))
    distinct = len({tuple(c.removed) for c in result.candidates})
    assert distinct >= 3 and len(fits) == distinct
    totals = [t for _, t in seen]
    # It only comes down (a finalist judged before is not fitted again); no fit's time moved it up.
    assert all(a >= b for a, b in itertools.pairwise(totals)), str([k for k, _ in itertools.groupby(seen)])
    # Where it ends: the search's passes, the first fit with the original's stream, the later fits, each judging's
    # measurement and the answer check (a few passes).
    assert 0 <= totals[-1] - (result.forward_passes + 300 + 100 * (distinct - 1)) <= 2 * distinct + 2, totals[-1]
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] <= b[1] for a, b in itertools.pairwise(seen))
