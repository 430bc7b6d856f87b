"""Perplexity against transformers' own loss, padding, and the before/after comparison on the same tokens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

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
