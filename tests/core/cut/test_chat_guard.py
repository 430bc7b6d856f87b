"""The chat guard keeps an MLP refit only where the original's own answers to the check prompts stay as likely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut.answer_probe import PROMPTS
from shortgpt_desktop.core.cut.chat_guard import chat_answers, guard_refit, keep_refits
from shortgpt_desktop.core.cut.mlp_refit import RefitResult, RunRefit
from shortgpt_desktop.core.cut.repair import RepairResult
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve

TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
DOWN = "model.layers.{}.mlp.down_proj.weight"


@pytest.fixture
def chat_model(tiny_model: Path):
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    loaded.tokenizer.chat_template = TEMPLATE
    return loaded, InMemoryStack(loaded.model, loaded.family)


def _noisy(loaded, layer: int, scale: float, seed: int) -> torch.Tensor:
    weight = loaded.model.state_dict()[DOWN.format(layer)]
    return weight + scale * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))


def test_the_answers_loss_is_the_models_own_loss_on_the_answer_tokens(chat_model) -> None:
    loaded, stack = chat_model
    answers = chat_answers(stack, loaded.tokenizer, loaded.model)
    assert answers is not None and len(answers.sequences) == 6
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, sequence, start in zip(PROMPTS, answers.sequences, answers.prompt_lengths, strict=True):
            assert len(sequence) > start  # every prompt has an answer (at least the token that ends it)
            # the answer starts where the templated prompt ends
            assert loaded.tokenizer.decode(sequence[:start]).endswith(f"{prompt}\n<|assistant|>")
            logprobs = torch.log_softmax(loaded.model(input_ids=torch.tensor([sequence])).logits[0].double(), -1)
            for position in range(start, len(sequence)):
                total -= float(logprobs[position - 1, sequence[position]])
                count += 1
    assert answers.nll(stack, (), None) == pytest.approx(total / count, rel=1e-4)


def test_a_refit_that_makes_the_answers_less_likely_is_dropped_and_one_that_helps_is_kept(chat_model) -> None:
    loaded, stack = chat_model
    answers = chat_answers(stack, loaded.tokenizer, loaded.model)
    original = loaded.model.state_dict()
    # A random tiny model barely feels small changes: the noise is ten times the weights' spread.
    linear = {DOWN.format(1): _noisy(loaded, 1, 10.0, 0), DOWN.format(3): original[DOWN.format(3)].clone()}
    refitted = {1: {DOWN.format(1): original[DOWN.format(1)].clone()},  # back to the original: helps
                3: {DOWN.format(3): _noisy(loaded, 3, 10.0, 2)}}  # noise where the linear map had none: hurts
    kept, figures = keep_refits(answers, stack, (), linear, refitted)
    assert kept == [1]
    assert figures.kept < figures.linear and figures.kept < figures.refit

    hurting = {layer: {DOWN.format(layer): _noisy(loaded, layer, 10.0, layer)} for layer in (1, 3)}
    kept, figures = keep_refits(answers, stack, (), {}, hurting)
    assert kept == [] and figures.kept == figures.linear < figures.refit


class _Scored:
    """Answers whose loss is given per set of refitted layers (what keep_refits lays over the linear repair)."""

    def __init__(self, losses: dict[frozenset[int], float]) -> None:
        self.losses, self.calls = losses, 0

    def nll(self, stack, removed, weights, cancel=None) -> float:
        self.calls += 1
        return self.losses[frozenset(int(k) for k in weights if not k.startswith("linear"))]


def test_the_refits_left_are_dropped_too_when_they_still_do_worse_than_the_linear_repair_alone() -> None:
    refitted = {1: {"1": 1}, 3: {"3": 3}}
    # Dropping either refit alone makes things worse, so the loop keeps both; both still lose to the linear repair.
    answers = _Scored({frozenset(): 1.0, frozenset({1, 3}): 1.5, frozenset({3}): 1.8, frozenset({1}): 1.7})
    kept, figures = keep_refits(answers, None, (), {"linear": 0}, refitted)
    assert kept == [] and (figures.linear, figures.refit, figures.kept) == (1.0, 1.5, 1.0)
    assert answers.calls == len(refitted) + 2  # the linear repair alone, every cut refitted, each dropped in turn
    answers = _Scored({frozenset(): 1.0, frozenset({1, 3}): 0.8, frozenset({3}): 0.9, frozenset({1}): 0.7})
    kept, figures = keep_refits(answers, None, (), {"linear": 0}, refitted)
    assert kept == [1] and figures.kept == 0.7
    # A refit is dropped only where that makes the answers more likely, and the refits left only where they do worse
    # than the linear repair alone: as likely is kept.
    answers = _Scored({frozenset(): 1.0, frozenset({1, 3}): 0.8, frozenset({3}): 0.8, frozenset({1}): 0.9})
    assert keep_refits(answers, None, (), {"linear": 0}, refitted)[0] == [1, 3]
    answers = _Scored({frozenset(): 1.0, frozenset({1, 3}): 1.0, frozenset({3}): 1.1, frozenset({1}): 1.2})
    assert keep_refits(answers, None, (), {"linear": 0}, refitted)[0] == [1, 3]


def _result(loaded, tensors: dict[str, torch.Tensor], layers: list[int], not_improved: int | None = None
            ) -> RefitResult:
    runs = [RunRefit(layer, layer + 1, layer, 0.5, 0.4, 10, 100) for layer in layers]
    if not_improved is not None:  # a run no step improved: the linear repair alone stays there
        runs.append(RunRefit(not_improved, not_improved + 1, not_improved, 0.5, 0.6, 10, 100, kept=False))
    return RefitResult(runs, dict(tensors))


def test_the_guard_lays_the_linear_repair_back_where_it_drops_a_refit_and_says_so(chat_model) -> None:
    loaded, stack = chat_model
    linear = {DOWN.format(1): _noisy(loaded, 1, 0.1, 0)}
    repair = RepairResult(n_layers=6, removed=[], runs=[], tensors=dict(linear))
    up = "model.layers.1.mlp.up_proj.weight"  # a weight the linear repair leaves: the original's again
    refit = {DOWN.format(1): _noisy(loaded, 1, 10.0, 5), up: loaded.model.state_dict()[up] * 1.5}
    result = _result(loaded, refit, [1], not_improved=3)
    guard_refit(result, repair, loaded.family, stack, loaded.tokenizer, loaded.model, [])
    assert not result.runs[0].kept and result.chat is not None
    assert not result.runs[1].kept, "a refit no step improved stays dropped"
    assert result.tensors.keys() == linear.keys()
    assert torch.equal(result.tensors[DOWN.format(1)], linear[DOWN.format(1)])
    assert any("refit of layer 1 was dropped" in note for note in result.notes)

    loaded.tokenizer.chat_template = None  # a base model has no turn to answer in: every refit stays
    result = _result(loaded, refit, [1])
    guard_refit(result, repair, loaded.family, stack, loaded.tokenizer, loaded.model, [])
    assert result.runs[0].kept and result.chat is None and result.tensors.keys() == refit.keys()


def test_the_model_card_says_what_the_guard_measured_for_the_refits_it_kept() -> None:
    from shortgpt_desktop.core.report import Report, model_card

    run = {"layers": [2, 3], "patched_layer": 1, "parameter": "model.layers.1.mlp.down_proj.weight",
           "residual_before": 0.5, "residual_after": 0.4, "note": "", "refit_before": 0.4, "refit_after": 0.3,
           "refit_kept": True}
    report = Report(model="m", repair="refit", repair_runs=[run], refit_chat={"linear": 1.955, "refit": 1.737,
                                                                             "kept": 1.737})
    card = model_card(report, "m")
    assert "then the whole MLP of that layer refitted" in card
    assert ("kept where the original's own answers to the answer check's prompts stayed as likely: loss per answer "
            "token 1.955 with the linear repair alone, 1.737 as saved") in card


def test_the_guard_keeps_a_refit_that_helps_and_says_nothing(chat_model) -> None:
    loaded, stack = chat_model
    linear = {DOWN.format(1): _noisy(loaded, 1, 10.0, 0)}
    repair = RepairResult(n_layers=6, removed=[], runs=[], tensors=dict(linear))
    refit = {DOWN.format(1): loaded.model.state_dict()[DOWN.format(1)].clone()}  # back to the original: helps
    result = _result(loaded, refit, [1])
    guard_refit(result, repair, loaded.family, stack, loaded.tokenizer, loaded.model, [])
    assert result.runs[0].kept and result.notes == []
    assert result.chat is not None and result.chat.kept == result.chat.refit < result.chat.linear
    assert torch.equal(result.tensors[DOWN.format(1)], refit[DOWN.format(1)])
