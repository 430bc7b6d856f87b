"""Perplexity against transformers' own loss, padding, and the before/after comparison on the same tokens."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure.evaluation import generate_text, perplexity_of
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    return load_model(resolve(str(tiny_model)), "cpu", "float32")


def test_perplexity_equals_exp_of_the_model_loss(loaded) -> None:
    window = [1, *range(20, 80)]
    ids = torch.tensor([window])
    with torch.no_grad():
        loss = loaded.model(input_ids=ids, labels=ids).loss
    result = perplexity_of(loaded.model, [window], pad_id=0)
    assert result.tokens == len(window) - 1
    assert result.perplexity == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_padding_does_not_count(loaded) -> None:
    windows = [[1, *range(20, 80)], [1, *range(100, 120)]]
    together = perplexity_of(loaded.model, windows, pad_id=0, batch_size=2)
    alone = [perplexity_of(loaded.model, [w], pad_id=0) for w in windows]
    nll = sum(r.nll * r.tokens for r in alone) / sum(r.tokens for r in alone)
    assert together.tokens == 60 + 20
    assert together.nll == pytest.approx(nll, rel=1e-5)


def test_perplexity_says_the_windows_measured_and_stops_when_cancelled(loaded) -> None:
    windows = [[1, *range(20, 40)], [1, *range(40, 60)], [1, *range(60, 80)]]
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))

    perplexity_of(loaded.model, windows, pad_id=0, batch_size=2, progress=progress)
    assert seen == [(0, 3), (2, 3), (3, 3)]  # the last batch holds one window: 3 of 3, not 4
    asked: list[int] = []
    seen.clear()
    with pytest.raises(Cancelled):
        perplexity_of(loaded.model, windows, pad_id=0, batch_size=2, cancel=lambda: asked.append(1) or len(asked) > 1,
                      progress=progress)
    assert len(asked) == 2 and seen == [(0, 3), (2, 3)]  # stopped before the second batch


def test_generation_is_greedy_and_repeatable(loaded) -> None:
    a = generate_text(loaded.model, loaded.tokenizer, "The history of", max_new_tokens=8)
    b = generate_text(loaded.model, loaded.tokenizer, "The history of", max_new_tokens=8)
    assert a == b and a


def test_instruct_models_get_their_chat_template(tiny_model: Path) -> None:
    """A tokenizer with a chat template (an Instruct model) gets the prompt as a user turn; one without, raw."""
    from shortgpt_desktop.core.measure.evaluation import generate_text, has_chat_template
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    tokenizer = loaded.tokenizer
    assert not has_chat_template(tokenizer)
    seen: list[list[int]] = []
    real_generate = loaded.model.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"][0].tolist())
        return real_generate(**kwargs)

    loaded.model.generate = spy
    generate_text(loaded.model, tokenizer, "Hello there", max_new_tokens=2)
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    assert has_chat_template(tokenizer)
    answer = generate_text(loaded.model, tokenizer, "Hello there", max_new_tokens=2, chat=True)
    raw, chat = seen
    assert raw == tokenizer("Hello there")["input_ids"]
    assert chat == tokenizer("<|user|>Hello there\n<|assistant|>", add_special_tokens=False)["input_ids"]
    assert isinstance(answer, str)


def _brute_force_kl(original: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    p = torch.log_softmax(original.double(), -1)
    q = torch.log_softmax(pruned.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def test_fidelity_of_the_original_to_itself_is_perfect(loaded) -> None:
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.backends.layerwise import InMemoryStack

    windows = [[1, *range(20, 80)], [1, *range(100, 130)], [1, *range(140, 200)]]
    stack = InMemoryStack(loaded.model, loaded.family)
    reference = ops.reference(stack, windows, pad_id=0, batch_size=2)
    assert reference.result.perplexity == pytest.approx(perplexity_of(loaded.model, windows, 0, 2).perplexity,
                                                        rel=1e-6)
    result, fidelity = ops.compare(stack, windows, 0, reference)
    assert result.perplexity == pytest.approx(reference.result.perplexity, rel=1e-6)
    assert fidelity.tokens == result.tokens == 60 + 30 + 60
    assert fidelity.mean_kl == pytest.approx(0.0, abs=1e-6) and fidelity.max_kl < 1e-5
    assert fidelity.same_top == 1.0


def test_fidelity_of_a_pruned_model_is_the_kl_divergence_per_token(loaded) -> None:
    """KL(original || pruned) and the same-top-token share, checked against both models run side by side."""
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.cut.surgery import pruned_view

    windows = [[1, *range(20, 80)], [1, *range(100, 130)]]
    model, family = loaded.model, loaded.family
    stack = InMemoryStack(model, family)
    reference = ops.reference(stack, windows, 0, batch_size=2)
    ids = torch.tensor([windows[0]])
    with torch.no_grad():
        original = model(input_ids=ids).logits[0, :-1]
    result, fidelity = ops.compare(stack, windows, 0, reference, removed=[2, 3])
    assert result.perplexity == pytest.approx(ops.perplexity(stack, windows, 0, [2, 3], 2).perplexity, rel=1e-9)
    with pruned_view(model, family, [2, 3]), torch.no_grad():
        pruned = model(input_ids=ids).logits[0, :-1]
        alone = perplexity_of(model, windows, 0, batch_size=2)
    expected = _brute_force_kl(original, pruned)
    assert result.perplexity == pytest.approx(alone.perplexity, rel=1e-6)
    assert fidelity.max_kl >= float(expected.max()) - 1e-4
    assert fidelity.mean_kl > 0.001  # two of six random layers gone: the distributions move
    first = (original.argmax(-1) == pruned.argmax(-1)).double().mean()
    assert 0.0 < fidelity.same_top < 1.0
    # The first window's 60 tokens alone, measured as a one-window reference, give the brute-force figures.
    one = ops.reference(stack, windows[:1], 0, batch_size=1)
    _, single = ops.compare(stack, windows[:1], 0, one, removed=[2, 3])
    assert single.mean_kl == pytest.approx(float(expected.mean()), rel=1e-4)
    assert single.same_top == pytest.approx(float(first), abs=1e-9)
    # The figures a llama.cpp user compares with `llama-perplexity --kl-divergence`'s: "99.0% KLD" (linear
    # interpolation between the ranked tokens' KL, as numpy's default) and "Maximum KLD".
    ranked = sorted(float(v) for v in expected)
    at = 0.99 * (len(ranked) - 1)
    p99 = ranked[int(at)] + (at - int(at)) * (ranked[int(at) + 1] - ranked[int(at)])
    assert single.p99_kl == pytest.approx(p99, rel=1e-4)
    assert single.max_kl == pytest.approx(ranked[-1], rel=1e-4)


def test_nan_logits_give_nan_perplexity_not_a_huge_number() -> None:
    from shortgpt_desktop.core.measure.evaluation import _exp

    assert math.isnan(_exp(float("nan")))
    assert _exp(1000.0) == math.exp(700.0)


def test_a_model_whose_logits_differ_from_the_originals_by_a_constant_is_at_no_kl_not_below() -> None:
    """A constant added to every logit leaves each distribution as it was, but float32 rounding makes some tokens'
    KL a little negative: an unchanged model's mean KLD would print as -0.0000."""
    from shortgpt_desktop.core.measure.evaluation import FidelitySums

    generator = torch.Generator().manual_seed(0)
    original = torch.randn(3, 9, 1000, generator=generator) * 3
    ids = torch.randint(0, 1000, (3, 9), generator=generator)
    sums = FidelitySums()
    sums.add(original, original + 5.0, ids, torch.ones(3, 9, dtype=torch.long))
    _, fidelity = sums.result(1.0)
    assert float(torch.cat(sums.kls).min()) == 0.0 and fidelity.same_top == 1.0
    assert 0.0 <= fidelity.mean_kl < 1e-6 and f"{fidelity.mean_kl:.4f}" == "0.0000"


def _whole_batch_sums(original_logits, logits, ids, mask):
    """Perplexity sums and fidelity over a whole batch at once: the plain formulas the chunked code must equal."""
    from shortgpt_desktop.core.measure.evaluation import kl_per_token

    keep = mask[:, 1:].bool()
    q_log = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -q_log.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    kls, same = [], 0
    for row in range(ids.shape[0]):
        p_log = torch.log_softmax(original_logits[row, :-1].float(), dim=-1)
        kls.append(kl_per_token(p_log, q_log[row]).clamp_min(0.0)[keep[row]].double())
        same += int((p_log.argmax(-1) == q_log[row].argmax(-1))[keep[row]].sum())
    return float(nll[keep].double().sum()), int(keep.sum()), torch.cat(kls), same


@pytest.mark.parametrize("chunk", [1 << 12, 3000, 1500, 1 << 30])
@pytest.mark.parametrize("tokens", [2, 3, 4, 5, 6, 9, 33])
def test_fidelity_and_nll_a_few_positions_at_a_time_equal_the_whole_batch_to_the_last_digit(
        monkeypatch: pytest.MonkeyPatch, chunk: int, tokens: int) -> None:
    """Spans of two to a few positions (and a whole row where the vocabulary is small) give the very floats the
    whole batch gives on a CPU: the same per-token values, summed in the same order. (5 and 6 tokens leave one
    position after the last whole span of 3 or 4, which joins the span before it; a chunk narrower than two
    positions' logits still spans two.)"""
    from shortgpt_desktop.core.measure import evaluation

    monkeypatch.setattr(evaluation, "CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(tokens)
    vocab = 1000
    original = torch.randn(3, tokens, vocab, generator=generator) * 3
    pruned = original + torch.randn(3, tokens, vocab, generator=generator)
    pruned[2, tokens - 2] = torch.randn(vocab, generator=generator) * 30  # the last token counted: the worst KL
    ids = torch.randint(0, vocab, (3, tokens), generator=generator)
    mask = torch.ones(3, tokens, dtype=torch.long)
    mask[1, tokens // 2:] = 0  # padding never counts
    spans = list(evaluation.position_spans(pruned))
    tiled = [(row, position) for row, span in spans for position in range(span.start, span.stop)]
    assert tiled == [(row, position) for row in range(3) for position in range(tokens - 1)], "each once, in order"
    assert tokens == 2 or min(s.stop - s.start for _, s in spans) >= 2, "a lone position is summed in another order"
    total_nll, count, kls, same = _whole_batch_sums(original, pruned, ids, mask)
    assert evaluation.nll_of(pruned, ids, mask) == (total_nll, count)
    sums = evaluation.FidelitySums()
    sums.add(original, pruned, ids, mask)
    assert (sums.total_nll, sums.tokens, sums.same) == (total_nll, count, same)
    assert torch.equal(torch.cat(sums.kls), kls)
    # The original's perplexity on the same tokens, padding left out as for the pruned model's.
    assert sums.original_nll == _whole_batch_sums(original, original, ids, mask)[0]
    _, fidelity = sums.result(1.0)
    assert fidelity.max_kl == float(kls.max()) == float(kls[-1]) and fidelity.mean_kl == float(kls.mean())
    assert fidelity.p99_kl == float(torch.quantile(kls, 0.99)) and fidelity.tokens == count
    # bi+'s candidate passes take the head at chosen positions only and score each of them (every=True).
    every = list(evaluation.position_spans(pruned, every=True))
    assert [(r, p) for r, span in every for p in range(span.start, span.stop)] == [
        (row, position) for row in range(3) for position in range(tokens)]
    keep = mask.bool()
    whole = -torch.log_softmax(pruned, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert evaluation.picked_nll_sum(pruned, ids, keep, every=True) == (float(whole[keep].double().sum()),
                                                                         int(keep.sum()))


_CHECK_PEAK = """
import json, sys, torch
from shortgpt_desktop.core.measure.evaluation import FidelitySums
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
torch.set_num_threads(1)
rows, tokens, vocab = 4, 65, 262144  # a batch of Gemma 3's logits at 65 tokens a window: 273 MB in float32
original = torch.empty(rows, tokens, vocab).normal_()
pruned = torch.empty(rows, tokens, vocab).normal_()
ids = torch.randint(0, vocab, (rows, tokens))
mask = torch.ones(rows, tokens, dtype=torch.long)
warm = FidelitySums()
warm.add(original[:, :3].contiguous(), pruned[:, :3].contiguous(), ids[:, :3], mask[:, :3])
before = hwm()
FidelitySums().add(original, pruned, ids, mask)
print(json.dumps({"extra": hwm() - before, "batch": pruned.numel() * 4}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_check_holds_no_vocabulary_sized_copy_beside_the_two_models_logits() -> None:
    """On a 262k-token vocabulary a batch of log-probabilities is as big as the logits (Gemma 3's default job
    peaked a gigabyte above its estimate when the check held them whole): measured in a fresh process, comparing a
    batch adds a few positions' worth, far less than another batch of logits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _CHECK_PEAK], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"comparing a batch of 4 x 65 x 262144 logits: {measured['extra'] / 1e6:.0f} MB above the two logits "
          f"({measured['batch'] / 1e6:.0f} MB each)")
    assert measured["extra"] < 0.5 * measured["batch"], measured
