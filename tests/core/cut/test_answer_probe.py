from __future__ import annotations

from pathlib import Path

from shortgpt_desktop.core.cut.answer_probe import PROMPTS, answer_probe_for
from shortgpt_desktop.core.model.loading import load_tokenizer
from shortgpt_desktop.core.model.sources import resolve

TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_a_model_without_a_chat_template_has_no_probe(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(resolve(str(tiny_model)))
    tokenizer.chat_template = None
    assert answer_probe_for(tokenizer) is None


def test_the_probe_asks_each_prompt_as_a_user_turn_and_knows_the_end_tokens(tiny_model: Path) -> None:
    from types import SimpleNamespace

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 9]))

    tokenizer = load_tokenizer(resolve(str(tiny_model)))
    tokenizer.chat_template = TEMPLATE
    probe = answer_probe_for(tokenizer, model)
    assert probe is not None
    assert len(probe.prompts) == len(PROMPTS)
    for ids, prompt in zip(probe.prompts, PROMPTS, strict=True):
        text = tokenizer.decode(ids)
        assert prompt in text and text.rstrip().endswith("<|assistant|>"), text
    assert probe.end_ids == {tokenizer.eos_token_id, 7, 9}
