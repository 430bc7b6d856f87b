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
