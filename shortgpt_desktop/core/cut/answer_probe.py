"""Does a pruned model still answer? A few chat prompts, and whether its first token already ends the turn.

Perplexity on plain text does not see an instruct model that has lost the habit of answering: on SmolLM2-135M
(8 of 30 layers removed, repaired) one of the bi+ finalists answered "What is 2 + 3?" and "Write one sentence
about the sea." with nothing (its first token was the end of its turn) while its calibration perplexity was
within 1.2% of the best finalist's. The selection asks this probe about each finalist and passes over one that
falls silent where the original answers, when another finalist does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends import ops
from ..backends.layerwise import LayerStack
from ..progress import CancelCheck

#: Short questions of the kind a hobbyist asks first; every instruct model answers them with some text.
PROMPTS = (
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "How many legs does a spider have?",
    "Write one sentence about the sea.",
    "What is 2 + 3?",
    "Who wrote Romeo and Juliet?",
)


@dataclass
class AnswerProbe:
    """Chat prompts as token ids (through the model's chat template, up to the assistant's turn) and the tokens
    that end a turn. :meth:`silent` counts the prompts the original answers and a pruned model does not."""

    prompts: list[list[int]]
    end_ids: set[int]
    pad_id: int
    _original: list[int] | None = field(default=None, repr=False)

    def first_tokens(self, stack: LayerStack, removed: Sequence[int] = (), weights: dict[str, Any] | None = None,
                     cancel: CancelCheck | None = None) -> list[int]:
        return ops.next_tokens(stack, self.prompts, self.pad_id, removed, weights, cancel)

    def silent(self, stack: LayerStack, removed: Sequence[int], weights: dict[str, Any] | None = None,
               cancel: CancelCheck | None = None) -> int:
        """Prompts whose first token from the pruned model ends its turn while the original's does not."""
        if self._original is None:
            self._original = self.first_tokens(stack, (), None, cancel)
        pruned = self.first_tokens(stack, removed, weights, cancel)
        return sum(o not in self.end_ids and p in self.end_ids for o, p in zip(self._original, pruned, strict=True))


def answer_probe_for(tokenizer: Any, model: Any = None, prompts: Sequence[str] = PROMPTS) -> AnswerProbe | None:
    """The probe for a model with a chat template (None for a base model: it continues text, it has no turn to
    end). The turn ends with the tokenizer's end-of-sequence token or any the generation config stops at."""
    from ..measure.evaluation import encode_prompt, end_ids_of, has_chat_template

    if tokenizer is None or not has_chat_template(tokenizer):
        return None
    end_ids = end_ids_of(tokenizer, model)
    if not end_ids:
        return None
    try:
        ids = [encode_prompt(tokenizer, prompt, True)["input_ids"][0].tolist() for prompt in prompts]
    except Exception:  # a template that needs more than one user turn: no probe rather than no job
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(end_ids)
    return AnswerProbe(ids, end_ids, pad)

