"""Greedy answers, with and without the KV cache: the progress bar they report."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core.backends.greedy import greedy_answers
from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve


@pytest.mark.parametrize("kv_cache", [True, False])
def test_greedy_answers_bar_ends_full(tiny_model: Path, kv_cache: bool) -> None:
    source = resolve(str(tiny_model))
    loaded = load_model(source, "cpu", "float32")
    seen: list[tuple[str, int, int]] = []
    greedy_answers(InMemoryStack(loaded.model, loaded.family), [[1, 20, 21], [1, 30]], {2}, 0, 3, kv_cache=kv_cache,
                   progress=lambda stage, done, total, extra: seen.append((stage, done, total)))
    assert seen[0] == ("answers", 0, 3) and seen[-1] == ("answers", 3, 3)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_greedy_answers_count_each_token_and_stop_on_cancel(tiny_model: Path, kv_cache: bool) -> None:
    """With the KV cache, transformers' generation reported 0 and then the end: the window's bar stood at "0 of 64
    tokens" for minutes (the original's chat answers, the quiz), and a cancel waited for every token."""
    from shortgpt_desktop.core.errors import Cancelled

    source = resolve(str(tiny_model))
    loaded = load_model(source, "cpu", "float32")
    stack = InMemoryStack(loaded.model, loaded.family)
    seen: list[int] = []
    out = greedy_answers(stack, [[1, 20, 21], [1, 30]], set(), 0, 6, kv_cache=kv_cache,
                         progress=lambda stage, done, total, extra: seen.append(done))
    assert seen == [0, 1, 2, 3, 4, 5, 6] and [len(o) for o in out] == [9, 8]  # no end token: all six written
    asked: list[int] = []

    def cancel() -> bool:
        asked.append(len(seen))
        return len(seen) >= 3  # once the bar has moved twice more

    seen.clear()
    with pytest.raises(Cancelled):
        greedy_answers(stack, [[1, 20, 21], [1, 30]], set(), 0, 64, kv_cache=kv_cache, cancel=cancel,
                       progress=lambda stage, done, total, extra: seen.append(done))
    assert seen == [0, 1, 2], seen  # stopped at the token the cancel came after, not after all 64
