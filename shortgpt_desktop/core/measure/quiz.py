"""A short quiz in every check: of the questions the original answers right, how many the pruned model still does.

Perplexity and KL divergence on held-out text say how far the pruned model's next-token distributions moved;
they do not say whether it still knows what it knew, and a hobbyist asks a shrunk model questions. On
SmolLM2-135M-Instruct with 8 of its 30 layers removed and repaired (held-out perplexity 1.5× the original's,
57% of next tokens the same), the original answers 17 of these questions right and the pruned model 5 (plain BI's
cut: 1; with the MLP refit, closer to the original on every next-token measure: 3): the fluent text the check
shows hid that it had lost most of the facts (``python benchmarks/bench_quality.py --heal-steps 0``).

Each question has a few accepted words; an answer is right when one of them appears in it as a whole word (so
"au" is not found in "because", nor "0" in "-18.0"). Greedy, at most :data:`MAX_NEW_TOKENS` tokens, through the
chat template for a chat model; a base model gets ``Question: …`` / ``Answer:`` and its answer ends at the first
line break. Only the questions the original answers right count: the quiz measures what the cut lost, not what
the model never knew. None of the questions is among the prompts the repair is fitted on
(:mod:`..cut.own_answers`) or the answer check asks (:mod:`..cut.answer_probe`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: (question, accepted words: any of them in the answer makes it right).
QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France, and why is it famous?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("Which planet is the largest in our solar system?", ("jupiter",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("Who painted the Mona Lisa?", ("leonardo", "vinci")),
    ("What is the chemical symbol for gold?", ("au",)),
    ("How many continents are there on Earth?", ("seven", "7")),
    ("What gas do plants take in from the air to make food?", ("carbon dioxide", "co2")),
    ("Who was the first person to walk on the Moon?", ("armstrong",)),
    ("At what temperature in Celsius does water freeze?", ("0", "zero")),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    ("What is the square root of 81?", ("9", "nine")),
    ("Who discovered penicillin?", ("fleming",)),
    ("What is the hardest natural substance?", ("diamond", "diamonds")),
    ("What currency is used in the United Kingdom?", ("pound", "pounds")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("What is the main language spoken in Mexico?", ("spanish",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("Which ocean lies between Europe and North America?", ("atlantic",)),
    ("Who wrote the novel Pride and Prejudice?", ("austen",)),
    ("How many sides does a hexagon have?", ("six", "6")),
    ("What is the closest star to the Earth?", ("sun",)),
    ("In Python, which keyword starts the definition of a function?", ("def",)),
    ("Which SQL statement reads rows from a table?", ("select",)),
)
#: Tokens each answer may take: the accepted word comes early in a direct answer.
MAX_NEW_TOKENS = 24


def right(answer: str, words: Sequence[str]) -> bool:
    """Whether ``answer`` holds one of ``words`` as a whole word (a number not inside a longer one)."""
    text = answer.lower()
    return any(re.search(rf"(?<![\w.,-]){re.escape(w)}(?![\w]|[.,]\d)", text) for w in words)


#: Fewest questions the original must answer right for the quiz to say that a cut lost most of them.
LOST_MOST_KNOWN = 4


def lost_most(known: int, kept: int, curve: str = "shortgpt sweep", original: str = "the original",
              pruned: str = "The pruned model") -> str | None:
    """The warning for a pruned model that answers fewer than half of the questions the original answers right
    (None otherwise, or where the original knows too few for it to mean much). A Gemma 3 270M cut of 4 of 18 layers
    answered none of 16 with nothing said beyond the quiz's count; ``curve`` names where the quality curve is;
    ``original`` and ``pruned`` name the two models otherwise (``eval --against``: the files)."""
    if known < LOST_MOST_KNOWN or 2 * kept >= known:
        return None
    how_many = f"only {kept} of the {known}" if kept else f"none of the {known}"  # "only 0 of the 16" (a walkthrough)
    return (f"{pruned} answers {how_many} quiz questions {original} answers right: it has lost most "
            f"of what {original} knows; remove fewer layers (the quality curve, {curve}, shows where it breaks).")


def quiz_summary(asked: int, known: int, kept: int, original: str = "the original",
                 pruned: str = "the pruned model") -> str:
    """``quiz: the pruned model answers 5 of the 16 questions the original answers right (26 asked)``; ``original``
    and ``pruned`` name the two models otherwise (``eval --against``: the files)."""
    if not known:
        return f"quiz: {original} answers none of the {asked} questions right, so it says nothing"
    return f"quiz: {pruned} answers {kept} of the {known} questions {original} answers right ({asked} asked)"


@dataclass
class QuizAnswer:
    question: str
    original: str
    pruned: str
    original_right: bool
    pruned_right: bool


@dataclass
class Quiz:
    """Plain data: each question's two answers and whether each is right."""

    answers: list[QuizAnswer] = field(default_factory=list)
    chat_template: bool = False

    @property
    def known(self) -> int:
        """Questions the original answers right (the only ones that count)."""
        return sum(a.original_right for a in self.answers)

    @property
    def kept(self) -> int:
        """Of those, the ones the pruned model answers right too."""
        return sum(a.original_right and a.pruned_right for a in self.answers)

    def summary(self) -> str:
        return quiz_summary(len(self.answers), self.known, self.kept)

    def to_json(self) -> dict[str, Any]:
        return {"asked": len(self.answers), "known": self.known, "kept": self.kept,
                "chat_template": self.chat_template, "answers": [asdict(a) for a in self.answers]}


@dataclass
class QuizPrompts:
    """The questions as the model reads them, and how an answer ends."""

    ids: list[list[int]]
    end_ids: set[int]
    pad_id: int
    chat_template: bool


def quiz_prompts(tokenizer: Any, model: Any = None,
                 questions: Sequence[tuple[str, Sequence[str]]] = QUESTIONS) -> QuizPrompts | None:
    """Token ids of each question (None without a tokenizer, or where the chat template refuses a user turn)."""
    from .evaluation import encode_prompt, end_ids_of, has_chat_template

    if tokenizer is None:
        return None
    chat = has_chat_template(tokenizer)
    end_ids = end_ids_of(tokenizer, model)
    try:
        ids = [encode_prompt(tokenizer, q if chat else f"Question: {q}\nAnswer:", chat)["input_ids"][0].tolist()
               for q, _ in questions]
    except Exception:  # a template that needs more than one user turn: no quiz rather than no check
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(end_ids, default=0)
    return QuizPrompts(ids, end_ids, pad, chat)


def answer_texts(tokenizer: Any, prompts: QuizPrompts, sequences: Sequence[Sequence[int]]) -> list[str]:
    """The answers as text: what follows each prompt, without the end token; a base model's up to its first line
    break (it would go on to write the next question itself)."""
    texts = []
    for prompt, sequence in zip(prompts.ids, sequences, strict=True):
        answer = [t for t in sequence[len(prompt):] if t not in prompts.end_ids]
        text = tokenizer.decode(answer, skip_special_tokens=True).strip()
        texts.append(text if prompts.chat_template else text.split("\n", 1)[0].strip())
    return texts


def marked(original: Sequence[str], pruned: Sequence[str], chat_template: bool,
           questions: Sequence[tuple[str, Sequence[str]]] = QUESTIONS) -> Quiz:
    """The quiz from both models' answers, each marked right or not."""
    return Quiz([QuizAnswer(q, o, p, right(o, words), right(p, words))
                 for (q, words), o, p in zip(questions, original, pruned, strict=True)], chat_template)


def model_answers(stack: Any, tokenizer: Any, prompts: QuizPrompts, stage: str, removed: Sequence[int] = (),
                  weights: dict[str, Any] | None = None, progress: Any = None, cancel: Any = None) -> list[str]:
    """One model's answers to every question of ``prompts``: ``stack``'s, or its pruned (and repaired) view's."""
    from ..backends.greedy import greedy_answers

    return answer_texts(tokenizer, prompts, greedy_answers(
        stack, prompts.ids, prompts.end_ids, prompts.pad_id, MAX_NEW_TOKENS, removed, weights, progress=progress,
        stage=stage, cancel=cancel))


def ask_quiz(stack: Any, tokenizer: Any, model: Any, removed: Sequence[int], weights: dict[str, Any] | None,
             original: list[str] | None = None, progress: Any = None, cancel: Any = None,
             questions: Sequence[tuple[str, Sequence[str]]] | None = None) -> tuple[Quiz, list[str]] | None:
    """Ask the pruned (and repaired) view, and the original unless its ``original`` answers are given, every
    question (default :data:`QUESTIONS`) on ``stack`` (a :class:`..backends.layerwise.LayerStack`). Returns the
    quiz and the original's answers, to give back next time; None where there is no quiz to ask."""
    questions = QUESTIONS if questions is None else questions
    prompts = quiz_prompts(tokenizer, model, questions)
    if prompts is None:
        return None
    if original is None:
        original = model_answers(stack, tokenizer, prompts, "quiz_before", (), None, progress, cancel)
    pruned = model_answers(stack, tokenizer, prompts, "quiz_after", removed, weights, progress, cancel)
    return marked(original, pruned, prompts.chat_template, questions), original
