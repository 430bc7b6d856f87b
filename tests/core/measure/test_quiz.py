"""The check's quiz: both models' greedy answers to short questions, marked right or not, counted over the
questions the original answers right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core import pipeline
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.measure import quiz as quiz_module
from shortgpt_desktop.core.measure.evaluation import encode_prompt
from shortgpt_desktop.core.measure.quiz import QUESTIONS, marked, right
from shortgpt_desktop.core.pipeline import JobSpec
from shortgpt_desktop.core.report import model_card

TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.mark.parametrize(("answer", "words", "expected"), [
    ("The chemical symbol for gold is Au.", ("au",), True),
    ("It is gold because it shines.", ("au",), False),
    ("Water freezes at -18.0°C.", ("0", "zero"), False),
    ("Water freezes at 0 °C.", ("0", "zero"), True),
    ("There are 24 hours in a day.", ("24",), True),
    ("There are 240 minutes.", ("24",), False),
    ("The square root of 81 is 9.", ("9",), True),
    ("About 1.9 of them.", ("9",), False),
    ("Open on Sunday.", ("sun",), False),
    ("The closest star is the Sun!", ("sun",), True),
    ("Plants take in carbon dioxide.", ("carbon dioxide", "co2"), True),
    ("", ("paris",), False),
])
def test_an_answer_is_right_when_an_accepted_word_stands_in_it_as_a_whole_word(answer, words, expected) -> None:
    assert right(answer, words) is expected


def test_only_the_questions_the_original_answers_right_count() -> None:
    questions = (("q1", ("a",)), ("q2", ("b",)), ("q3", ("c",)))
    quiz = marked(["a", "b", "x"], ["a", "x", "c"], True, questions)
    assert (quiz.known, quiz.kept) == (2, 1)  # q3's right answer from the pruned model alone does not count
    assert quiz.summary() == "quiz: the pruned model answers 1 of the 2 questions the original answers right (3 asked)"
    assert json.loads(json.dumps(quiz.to_json()))["answers"][2]["pruned_right"] is True


@pytest.fixture
def engine(tiny_model: Path, small_calib: Path) -> tuple[Engine, JobSpec]:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="Hello")
    engine = Engine()
    engine.score(spec)
    engine.loaded.tokenizer.chat_template = TEMPLATE
    return engine, spec


def _greedy(loaded, question: str, removed=(), weights=None) -> str:
    """One question alone, through transformers' own generation (no batch, no padding)."""
    ids = encode_prompt(loaded.tokenizer, question, True)["input_ids"]
    with torch.no_grad(), pipeline.modified(loaded, removed, weights):
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=quiz_module.MAX_NEW_TOKENS,
                                    eos_token_id=loaded.tokenizer.eos_token_id)
    answer = [t for t in out[0, ids.shape[1]:].tolist() if t != loaded.tokenizer.eos_token_id]
    return loaded.tokenizer.decode(answer, skip_special_tokens=True).strip()


def test_the_check_asks_both_models_each_question_as_generating_it_alone_would(engine, monkeypatch) -> None:
    """The answers are each model's own greedy ones, the pruned model with the repair the job saves; marked with
    words taken from the original's answers, the counts follow; the original answers once per model."""
    engine, spec = engine
    loaded = engine.loaded
    questions = QUESTIONS[:4]
    originals = [_greedy(loaded, q) for q, _ in questions]
    words = [a.split()[0].lower() for a in originals[:3] if a.split()]
    assert len(words) == 3, originals  # a random model still writes something
    # The first three accept a word of the original's answer, the last one a word nobody writes.
    accepted = [*words, "qqzx"]
    patched = tuple((q, (w,)) for (q, _), w in zip(questions, accepted, strict=True))
    monkeypatch.setattr(quiz_module, "QUESTIONS", patched)
    removed = [2, 3]
    checked = engine.check(spec, removed)
    weights = engine.adjusted.weights
    assert weights  # the repair is in
    quiz = checked.quiz
    assert [a.original for a in quiz.answers] == originals
    assert [a.pruned for a in quiz.answers] == [_greedy(loaded, q, removed, weights) for q, _ in questions]
    assert quiz.chat_template and quiz.known == 3
    assert quiz.kept == sum(right(a.pruned, (w,)) for a, w in zip(quiz.answers[:3], words, strict=True))
    assert any(a.pruned != a.original for a in quiz.answers)  # two of six layers gone: the answers change

    written = engine.quiz_original
    again = engine.check(spec, [1, 2])
    assert engine.quiz_original[1] is written[1] and [a.original for a in again.quiz.answers] == originals
    report = engine.report(engine.plan(layers=[1, 2]), spec)
    assert report.quiz["asked"] == 4 and report.quiz["known"] == 3
    card = model_card(report, "org/tiny")
    assert f"the original answers 3 right, the pruned model {again.quiz.kept} of those" in card


def test_no_prompt_no_quiz_and_the_estimate_counts_it_only_while_it_is_to_come(engine) -> None:
    engine, spec = engine
    import dataclasses

    silent = dataclasses.replace(spec, prompt="")
    assert engine.check(silent, [2]).quiz is None
    assert engine.quiz_work(silent) is None
    first = engine.quiz_work(spec)
    assert (first.prompts, first.runs) == (len(QUESTIONS), 2)  # the original's answers and the pruned model's
    engine.check(spec, [2])
    assert (engine.quiz_work(spec).prompts, engine.quiz_work(spec).runs) == (len(QUESTIONS), 1)  # the original's kept


def test_a_streamed_check_asks_no_quiz(tiny_model: Path, small_calib: Path) -> None:
    """Each new token there runs every layer again: the check generates 8 tokens of one prompt, no quiz."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="Hello", low_memory=True)
    engine = Engine()
    engine.score(spec)
    assert not engine.backend.whole_model
    assert engine.check(spec, [2]).quiz is None and engine.quiz_work(spec) is None


def test_a_base_models_answer_ends_at_its_line_and_a_decimal_is_not_a_whole_number(tiny_model: Path) -> None:
    """A base model goes on after its answer with a question of its own: words from it counted as right answers.
    And "9.5" is not the answer "9"."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = quiz_module.quiz_prompts(tokenizer, None, QUESTIONS[:1])
    assert not prompts.chat_template
    written = prompts.ids[0] + tokenizer("I am not sure\nQuestion: Where is Paris?", add_special_tokens=False)[
        "input_ids"]
    assert quiz_module.answer_texts(tokenizer, prompts, [written]) == ["I am not sure"]
    assert not right("about 9.5", ["9"]) and right("about 9, I think", ["9"])


def test_a_cut_that_lost_most_of_the_answers_is_warned_about(engine) -> None:
    """Gemma 3 270M with 4 of 18 layers removed answered none of the 16 questions its original answers, and the
    job said only the count. Fewer than half kept, of at least 4 known, is a warning in the report (the summary's
    'warning:' lines, the JSON); a quiz the original knows little of says nothing more."""
    assert quiz_module.lost_most(16, 0) is not None and quiz_module.lost_most(17, 8) is not None
    assert quiz_module.lost_most(17, 9) is None and quiz_module.lost_most(3, 0) is None
    assert "answers none of the 16 quiz questions" in quiz_module.lost_most(16, 0)  # "only 0" read oddly
    assert "answers only 2 of the 16 quiz questions" in quiz_module.lost_most(16, 2)
    engine, spec = engine
    plan = engine.plan(count=2)
    engine.check(spec, plan.removed)
    questions = QUESTIONS[:4]
    engine.checked.quiz = marked(["Paris.", "Tokyo.", "Rome.", "Berlin."], ["Paris.", "No.", "No.", "No."], True,
                                 questions)
    warned = [w for w in engine.report(plan, spec).warnings if "lost most" in w]
    assert warned == [quiz_module.lost_most(4, 1)]
    engine.checked.quiz = marked(["Paris.", "Tokyo.", "Rome.", "Berlin."], ["Paris.", "Tokyo.", "No.", "No."], True,
                                 questions)
    assert not [w for w in engine.report(plan, spec).warnings if "lost most" in w]
