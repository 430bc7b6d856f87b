"""The original's own chat answers: greedy, up to the end of the turn, and what the repair is fitted on beside the
calibration text for a chat model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.cli import _STAGE_LABELS
from shortgpt_desktop.core.cut.own_answers import own_answers
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.measure.evaluation import encode_prompt
from shortgpt_desktop.core.pipeline import JobSpec
from shortgpt_desktop.core.progress import STAGE_UNITS

TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
PROMPTS = ("Why is the sky blue?", "Write a haiku.", "What is 12 times 7?")


@pytest.fixture
def engine(tiny_model: Path, small_calib: Path) -> tuple[Engine, JobSpec]:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    return engine, spec


def greedy(model, tokenizer, prompt: str, steps: int) -> list[int]:
    ids = encode_prompt(tokenizer, prompt, True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                             do_sample=False)
    return out[0].tolist()


@pytest.mark.parametrize("kv_cache", [True, False], ids=["in memory", "one pass per token (streamed)"])
def test_each_answer_is_the_originals_greedy_continuation_up_to_the_end_of_its_turn(engine, kv_cache: bool) -> None:
    engine, _ = engine
    loaded = engine.loaded
    loaded.tokenizer.chat_template = TEMPLATE
    reference = [greedy(loaded.model, loaded.tokenizer, p, 6) for p in PROMPTS]
    prompt_len = len(encode_prompt(loaded.tokenizer, PROMPTS[0], True)["input_ids"][0])
    end = reference[0][prompt_len + 2]  # the first answer's third token ends the turn
    loaded.model.generation_config.eos_token_id = end
    answers = own_answers(engine.backend.stack, loaded.tokenizer, loaded.model, PROMPTS, max_new_tokens=6,
                          kv_cache=kv_cache)
    for answer, full in zip(answers, reference, strict=True):
        stop = next((i for i in range(len(full) - 6, len(full)) if full[i] == end), len(full) - 1)
        assert answer == full[:stop + 1]  # the end token is kept: the repair learns where a turn ends
    assert len(answers[0]) == prompt_len + 3
    capped = own_answers(engine.backend.stack, loaded.tokenizer, loaded.model, PROMPTS, max_new_tokens=6,
                         max_len=prompt_len + 1, kv_cache=kv_cache)
    fitting = [full for full, p in zip(reference, PROMPTS, strict=True)
               if len(encode_prompt(loaded.tokenizer, p, True)["input_ids"][0]) <= prompt_len]
    assert capped == [full[:prompt_len + 1] for full in fitting]  # longer prompts are left out
    lengths = [len(encode_prompt(loaded.tokenizer, p, True)["input_ids"][0]) for p in PROMPTS]
    shortest = min(lengths)
    assert max(lengths) > shortest, "the prompts must differ in length"
    room_for_one = own_answers(engine.backend.stack, loaded.tokenizer, loaded.model, PROMPTS, max_new_tokens=6,
                               max_len=shortest + 1, kv_cache=kv_cache)
    assert room_for_one == [full[:shortest + 1] for full, n in zip(reference, lengths, strict=True) if n == shortest]
    # A prompt as long as the cap has no room for an answer: left out, not fitted as a prompt alone.
    assert own_answers(engine.backend.stack, loaded.tokenizer, loaded.model, PROMPTS, max_new_tokens=6,
                       max_len=shortest, kv_cache=kv_cache) == []
    stages: set[str] = set()
    one_token = own_answers(engine.backend.stack, loaded.tokenizer, loaded.model, PROMPTS, max_new_tokens=1,
                            kv_cache=kv_cache, progress=lambda stage, done, total, _: stages.add(stage))
    assert one_token == [full[:n + 1] for full, n in zip(reference, lengths, strict=True)]
    assert stages and all(stage in _STAGE_LABELS and stage in STAGE_UNITS for stage in stages)  # said in words


def test_a_model_without_a_chat_template_writes_none_and_its_repair_fits_the_text_alone(engine) -> None:
    engine, spec = engine
    engine.loaded.tokenizer.chat_template = None
    tokens = engine.tokens_for(spec)
    assert engine.repair_tokens(tokens) is tokens
    assert engine.adjust(spec, [1, 2]).repair.tokens == sum(len(s) for s in tokens.samples)


def test_a_chat_models_repair_is_fitted_on_the_text_and_its_own_answers(engine) -> None:
    """The saved repair equals a fit on the calibration samples plus the original's answers, written once."""
    from shortgpt_desktop.core.cut.repair import fit_linear_repair

    engine, spec = engine
    loaded = engine.loaded
    loaded.tokenizer.chat_template = TEMPLATE
    tokens = engine.tokens_for(spec)
    adjusted = engine.adjust(spec, [1, 2])
    answers = engine.answers[1]
    assert answers and all(len(a) <= tokens.seq_len for a in answers)
    assert adjusted.repair.tokens == sum(len(s) for s in tokens.samples) + sum(len(a) for a in answers)
    with_answers = engine.repair_tokens(tokens)
    assert engine.answers[1] is answers, "written once per model"
    fresh = fit_linear_repair(loaded.model, loaded.family, with_answers, [1, 2], spec.batch_size)
    prose_only = fit_linear_repair(loaded.model, loaded.family, tokens, [1, 2], spec.batch_size)
    for name, tensor in fresh.tensors.items():
        torch.testing.assert_close(adjusted.weights[name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(prose_only.tensors[n], t) for n, t in fresh.tensors.items())


def test_the_model_card_says_the_repair_saw_the_originals_answers(engine) -> None:
    from shortgpt_desktop.core.report import model_card

    engine, spec = engine
    engine.loaded.tokenizer.chat_template = TEMPLATE
    plan = engine.plan(count=2)
    engine.adjust(spec, plan.removed)
    report = engine.report(plan, spec)
    assert report.repair_own_answers == len(engine.answers[1]) > 0
    assert f"own answers to {report.repair_own_answers} chat prompts" in model_card(report, spec.model)
