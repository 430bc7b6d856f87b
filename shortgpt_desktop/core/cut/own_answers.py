"""The original model's own answers to a few chat prompts, added to the repair's calibration for a chat model.

The repair fits its maps on the calibration text (:mod:`.repair`). When that text is all prose, the maps fit
prose, and the chat template's tokens, which the text never holds, are left to chance: on SmolLM2-135M-Instruct
(8 of 30 layers removed, the greedy set 3–5, 7, 16, 17, 25, 26; 128 × 512 tokens of WikiText-2) the repaired
model ended its turn at once on 5 of the 6 answer-check prompts and answered "What is the capital of France,
and why is it famous?" with nothing. With these 24 exchanges beside the prose (2,174 tokens, 3% of the fit), it
answers all six ("The capital of France is Paris, a city that is steeped in history and…"), and its held-out
prose barely moves (perplexity 57.74 → 58.36, mean KL 0.626 → 0.632, same top token 56.9% → 56.6%).

The prompts are not the answer check's (:mod:`.answer_probe`): the check stays a test of what the fit never saw.
The answers are greedy, up to the end of the turn or :data:`MAX_NEW_TOKENS`, written by the ORIGINAL model (the
pruned one is pulled back toward what the original does in a chat, as distillation does), in one padded pass
per new token for all prompts together, so the streamed backend writes them too (a model in memory uses
transformers' KV cache instead: one batch, padded on the left).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backends.greedy import greedy_answers
from ..backends.layerwise import LayerStack
from ..progress import CancelCheck, Progress
from .answer_probe import answer_probe_for

STAGE = "answers"
#: Requests of the kind a hobbyist makes, of several kinds (facts, lists, code, verse, advice).
FIT_PROMPTS = (
    "Explain why the sky is blue.", "Give me a recipe for pancakes.", "What is photosynthesis?",
    "Write a short poem about autumn.", "How do I sort a list in Python?", "Summarise the plot of Hamlet.",
    "What are the benefits of exercise?", "Translate 'good morning' into Spanish.", "Who was Albert Einstein?",
    "List four planets of the solar system.", "What is the boiling point of water?", "Tell me a fun fact about cats.",
    "How does a bicycle work?", "What causes rain?", "Suggest a name for a bakery.", "What is 12 times 7?",
    "Describe a typical day of a farmer.", "Why do leaves change colour?", "What is the largest ocean?",
    "Give two tips for better sleep.", "What does a computer's CPU do?", "Write a haiku about the moon.",
    "What language is spoken in Brazil?", "How many days are in a leap year?",
)
#: Tokens each answer may take (the measured figures above used 64).
MAX_NEW_TOKENS = 64


def prompts_that_fit(prompts: Sequence[Sequence[int]], max_len: int | None) -> list[Sequence[int]]:
    """The prompts that leave room for an answer within ``max_len`` tokens (all where None): the others are left
    out, by the answers and by their estimate alike."""
    return [p for p in prompts if max_len is None or len(p) < max_len]


def own_answers(stack: LayerStack, tokenizer: Any, model: Any = None, prompts: Sequence[str] = FIT_PROMPTS,
                max_new_tokens: int = MAX_NEW_TOKENS, max_len: int | None = None, progress: Progress | None = None,
                cancel: CancelCheck | None = None, kv_cache: bool | None = None) -> list[list[int]]:
    """Each prompt through the chat template followed by the original's greedy answer, as token ids (at most
    ``max_len`` of them: longer prompts are left out); empty for a model without a chat template (a base model has
    no turn to answer in). ``kv_cache``: transformers' generation (default for a model in memory) or one pass per
    token through the stack (the streamed backend's way)."""
    chat = answer_probe_for(tokenizer, model, prompts)
    if chat is None:
        return []
    sequences = [list(p) for p in prompts_that_fit(chat.prompts, max_len)]
    return greedy_answers(stack, sequences, chat.end_ids, chat.pad_id, max_new_tokens, kv_cache=kv_cache,
                          max_len=max_len, progress=progress, stage=STAGE, cancel=cancel)
