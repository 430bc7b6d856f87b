"""How the window words what the user can do about an engine error (the engine names no widget)."""

from __future__ import annotations

from ..core.errors import Hint, UserError, worded

HINTS: dict[Hint, str] = {
    Hint.REPLACE_OUTPUT: "save again and answer Yes when asked to replace it",
    Hint.TRUST_REMOTE_CODE: "tick “Run the model's own code” in Settings if you trust this model",
    Hint.USE_CPU: "choose CPU under Settings → Device",
    Hint.SMALLER_BATCH: "lower Batch size or Sequence length in Settings, or choose bfloat16",
    Hint.LOW_MEMORY: "tick “Low memory” in Settings to score it one layer at a time",
    Hint.LOW_MEMORY_METRIC: "or untick “Low memory” in Settings",
    Hint.WIDER_DTYPE: "choose float32 or bfloat16 as the Dtype in Settings",
}


def user_message(exc: UserError) -> str:
    """The engine's sentence, with the window's words for its hint."""
    return worded(exc, HINTS)
