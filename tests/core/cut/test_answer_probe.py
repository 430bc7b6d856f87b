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


def test_a_prompt_the_original_answers_with_nothing_too_is_not_counted_silent() -> None:
    """The pruned model is silent only where the original answers: ending the turn at once like the original is
    no loss. The original's first tokens are asked once per probe, whatever the number of finalists asked."""
    from shortgpt_desktop.core.cut.answer_probe import AnswerProbe

    end = 0
    first = {(): [end, 4, 6, 8], (1, 2): [end, end, 6, 9], (3,): [5, 4, end, end]}
    asked: list[tuple[int, ...]] = []
    probe = AnswerProbe([[1], [2], [3], [4]], {end}, 5)

    def first_tokens(stack, removed=(), weights=None, cancel=None) -> list[int]:
        asked.append(tuple(removed))
        return first[tuple(removed)]

    probe.first_tokens = first_tokens  # type: ignore[method-assign]
    assert probe.silent(None, [1, 2]) == 1  # the first prompt ends at once in the original too
    assert probe.silent(None, [3]) == 2
    assert asked == [(), (1, 2), (3,)]


def test_a_chat_template_that_refuses_the_probes_prompts_gives_no_probe(tiny_model: Path) -> None:
    """A template that takes a short greeting (so the model counts as a chat model) but raises on the probe's
    prompts: the job goes on without the probe rather than ending with the template's error."""
    tokenizer = load_tokenizer(resolve(str(tiny_model)))
    tokenizer.chat_template = ("{% for m in messages %}{% if m['content']|length > 20 %}"
                               "{{ raise_exception('messages of at most 20 characters') }}{% endif %}{% endfor %}"
                               + TEMPLATE)
    assert answer_probe_for(tokenizer, prompts=["Hello"]) is not None
    assert answer_probe_for(tokenizer) is None


def test_a_chat_model_with_no_token_that_ends_a_turn_has_no_probe(tiny_model: Path) -> None:
    from types import SimpleNamespace

    tokenizer = load_tokenizer(resolve(str(tiny_model)))
    tokenizer.chat_template = TEMPLATE
    tokenizer.eos_token = None
    tokenizer.pad_token = None
    assert tokenizer.eos_token_id is None and tokenizer.pad_token_id is None
    assert answer_probe_for(tokenizer, SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))) is None
