"""Numbers as people read them, shared by the command line and the window."""

from __future__ import annotations

from shortgpt_desktop.format import (
    StageClock,
    change,
    counted,
    human_bytes,
    human_count,
    human_seconds,
    layer_list,
    layer_span,
    some_of,
    time_left,
    unit_of,
)


def test_formatting() -> None:
    assert human_bytes(1536) == "1.5 kB" and human_bytes(512) == "512 B"
    assert human_bytes(435_049_376) == "435.0 MB" and human_bytes(1_630_000_000) == "1.6 GB"  # decimal units
    assert human_count(287_552) == "287.6 k" and human_count(6.74e9) == "6.7 B"
    assert human_seconds(0.25) == "250 ms" and human_seconds(125) == "2 min 05 s"
    assert layer_list([9, 3, 4, 5, 7, 8]) == "3–5, 7–9"
    assert layer_list([1, 2]) == "1, 2" and layer_list([]) == "none"
    assert change(100, 75) == "−25 %"


def test_a_size_or_count_at_a_units_boundary_is_said_in_the_larger_unit() -> None:
    """Each unit starts at its own round number: "1.0 kB", not "1000 B"; "1.0 M", not "1000.0 k"."""
    assert human_bytes(999) == "999 B" and human_bytes(1000) == "1.0 kB" and human_bytes(10**9) == "1.0 GB"
    assert human_count(999) == "999" and human_count(1e6) == "1.0 M" and human_count(1e9) == "1.0 B"


def test_long_durations_are_said_in_hours_and_minutes() -> None:
    assert human_seconds(89.5) == "89.5 s" and human_seconds(90) == "1 min 30 s"
    assert human_seconds(89 * 60 + 59) == "89 min 59 s" and human_seconds(2 * 3600 + 5 * 60) == "2 h 05 min"


def test_a_long_layer_list_is_cut_only_past_its_limit() -> None:
    """Twenty-four runs are all said, with no ellipsis promising more."""
    runs = [3 * i for i in range(24)]
    assert layer_list(runs) == ", ".join(map(str, runs))
    assert layer_list([*runs, 72]) == ", ".join(map(str, runs)) + ", …"


def test_no_change_has_no_minus_sign() -> None:
    assert change(100, 100) == "+0 %" and change(100, 125) == "+25 %" and change(0, 5) == ""


def test_no_time_left_is_given_before_a_step_of_the_stage_is_measured() -> None:
    """A stage that (re)starts at ``since`` has no pace yet: no step since then to divide by."""
    assert time_left(0, 30, 4.0) is None and time_left(74, 92, 4.0, since=74) is None
    assert time_left(75, 92, 11.0, since=74) == 11.0 * 17
    assert time_left(30, 30, 4.0) is None


def test_a_short_list_of_names_says_no_more() -> None:
    assert some_of(["a.gguf", "b.gguf", "c.gguf"], 3) == "a.gguf, b.gguf, c.gguf"
    assert some_of(["a", "b", "c", "d"], 3) == "a, b, c and 1 more"


def test_counts_and_spans_read_in_the_right_number() -> None:
    """"Removed 1 layers", "1 part(s) are missing" and "repaired layers 3-3" were printed."""
    assert (counted(1, "layer"), counted(3, "layer"), counted(0, "part")) == ("1 layer", "3 layers", "0 parts")
    assert counted(2, "copy", "copies") == "2 copies"
    from shortgpt_desktop.format import in_number

    assert (in_number(1, "is", "are"), in_number(2, "is", "are"), in_number(3, "layer")) == ("is", "are", "layers")
    assert (layer_span(3, 3), layer_span(3, 5)) == ("layer 3", "layers 3-5")


def test_the_unit_legend_names_the_unit_shown() -> None:
    """"411.6 kB = 411,592 bytes; MB = 10^6 bytes" named a unit the figure did not use."""
    assert unit_of(human_bytes(411_592)) == "kB = 1,000 bytes"
    assert unit_of(human_bytes(98_400_000)) == "MB = 10^6 bytes"
    assert unit_of(human_bytes(2.5e9)) == "GB = 10^9 bytes"
    assert unit_of(human_bytes(12)) == ""


def test_a_models_text_is_quoted_one_way_whatever_it_holds() -> None:
    """``repr`` quoted "it's" in double quotes and "no apostrophe" in single ones, one line under the other."""
    from shortgpt_desktop.format import quoted

    assert quoted("  no apostrophe ") == '"no apostrophe"'
    assert quoted('it\'s "so"\nnext line') == '"it\'s \\"so\\"\\nnext line"'
    assert quoted("Größe 東京") == '"Größe 東京"'  # any script as it is, not as escapes
    assert quoted("a\u2028b\u202ec\x9bd") == '"a\\u2028b\\u202ec\\x9bd"'  # what would move or reorder the terminal
    # spaces of other widths, joiners and soft hyphens are text
    text = "Bonjour\u00a0! 東京\u3000大阪 👨\u200d👩 co\u00adop"
    assert quoted(text) == f'"{text}"'


def test_items_are_listed_as_a_sentence_lists_them() -> None:
    from shortgpt_desktop.format import listed

    assert [listed(x) for x in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == ["", "a", "a and b", "a, b and c"]


def test_a_stage_clock_resumes_an_interrupted_stage_and_restarts_a_new_run() -> None:
    clock = StageClock()
    assert clock.update("selecting", 0, 10, now=5.0) == (0.0, 0)
    assert clock.update("selecting", 4, 10, now=25.0) == (20.0, 0)
    assert clock.update("answers", 0, 64, now=25.0) == (0.0, 0)  # interrupts the choice at 4
    assert clock.update("answers", 64, 64, now=85.0) == (60.0, 0)
    assert clock.update("selecting", 4, 10, now=85.0) == (20.0, 0)  # its own 20 s, counted from 0
    assert clock.update("selecting", 10, 10, now=90.0) == (25.0, 0)
    assert clock.update("answers", 0, 64, now=90.0) == (0.0, 0)  # finished before: never resumed, a new run
    assert clock.update("selecting", 0, 10, now=95.0) == (0.0, 0)
    assert clock.update("selecting", 3, 10, now=99.0) == (4.0, 0)
    assert clock.update("selecting", 1, 10, now=100.0) == (0.0, 1)  # counting again from below: a new run
    clock.update("answers", 0, 5, now=100.0)
    assert clock.update("selecting", 0, 10, now=101.0) == (0.0, 0)  # back below where it stood: a new run too
    clock.reset()
    assert clock.update("answers", 0, 5, now=200.0) == (0.0, 0) and not clock.paused


def test_a_path_in_a_suggested_command_is_one_word_for_the_shell(monkeypatch) -> None:
    """eval's note suggested `shortgpt eval modèles/日本/smol lm2.gguf --against out/smol none`: four paths."""
    import os
    import shlex

    from shortgpt_desktop.format import shell_word

    path = "modèles/日本/smol lm2.gguf"
    assert shlex.split(f"shortgpt eval {shell_word(path)} --against {shell_word('out/it')}") == [
        "shortgpt", "eval", path, "--against", "out/it"]
    assert shell_word("out/it") == "out/it" and shell_word("it's") != "it's"
    monkeypatch.setattr(os, "name", "nt")
    assert shell_word(r"C:\models\smol lm2.gguf") == r'"C:\models\smol lm2.gguf"' and shell_word("C:\\m") == "C:\\m"
