"""Numbers as people read them, shared by the command line and the window."""

from __future__ import annotations

from shortgpt_desktop.format import change, human_bytes, human_count, human_seconds, layer_list


def test_formatting() -> None:
    assert human_bytes(1536) == "1.5 kB" and human_bytes(512) == "512 B"
    assert human_bytes(435_049_376) == "435.0 MB" and human_bytes(1_630_000_000) == "1.6 GB"  # decimal units
    assert human_count(287_552) == "287.6 k" and human_count(6.74e9) == "6.7 B"
    assert human_seconds(0.25) == "250 ms" and human_seconds(125) == "2 min 05 s"
    assert layer_list([9, 3, 4, 5, 7, 8]) == "3–5, 7–9"
    assert layer_list([1, 2]) == "1, 2" and layer_list([]) == "none"
    assert change(100, 75) == "−25 %"
