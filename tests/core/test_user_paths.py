from __future__ import annotations

import os
from pathlib import Path

import pytest

from shortgpt_desktop.core.user_paths import (
    exists,
    expand_home,
    name_not_utf8,
    not_there,
    read_only,
    shown_model,
    windows_path_here,
)


def test_a_home_is_expanded_and_an_unknown_users_is_left_as_typed(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert expand_home("~/models/x") == Path("/home/someone/models/x")
    assert expand_home(Path("~")) == Path("/home/someone")
    # Path.expanduser raises RuntimeError here; the caller's "does not exist" is the sentence the user needs
    assert expand_home("~no-such-user-shortgpt/x") == Path("~no-such-user-shortgpt/x")
    assert expand_home("models/~x") == Path("models/~x")
    assert os.fspath(expand_home("plain")) == "plain"


def test_a_file_the_system_says_we_may_not_write_is_read_only(tmp_path: Path, monkeypatch) -> None:
    """Its mode has write bits (another user's file in a folder we may write, which ``os.replace`` would replace),
    but the system, asked, says no."""
    theirs = tmp_path / "theirs.json"
    theirs.write_text("{}")
    assert not read_only(theirs)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != theirs and real_access(path, mode, **kw))
    assert read_only(theirs)


def test_a_name_the_system_cannot_look_up_does_not_exist(tmp_path: Path) -> None:
    assert exists(tmp_path) and not exists(tmp_path / "a\0b") and not exists(tmp_path / ("x" * 5000))


def test_a_path_not_there_is_said_for_what_it_is(tmp_path: Path) -> None:
    """A dangling link and a loop of links, which ``ls`` lists, were said not to exist; a chain of links is said
    by where it ends."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "old").symlink_to("gone.txt")
    (tmp_path / "chain").symlink_to("old")
    assert not_there(tmp_path / "missing") == "does not exist"
    assert not_there(tmp_path / "a") == "is a link that leads back to itself (a loop of links)"
    assert not_there(tmp_path / "old") == f"is a link to {tmp_path / 'gone.txt'}, which does not exist"
    assert not_there(tmp_path / "chain") == f"is a link to {tmp_path / 'gone.txt'}, which does not exist"


@pytest.mark.skipif(os.name == "nt", reason="a Windows path is Windows' own there")
def test_only_paths_written_as_windows_writes_them_are_said_to_be_windows_paths() -> None:
    for text, suggested in (("C:\\models\\out", "~/out"), ("d:/x/r.json", "~/r.json"),
                            ("\\\\server\\share\\m", "~/m"), ("C:\\", "~/out")):
        said = windows_path_here(text)
        assert said is not None and said.startswith(f"{text} is a Windows path") and said.endswith(
            f"such as {suggested}."), said
    for text in ("out", "c:", "a:b", "models/C:\\x", "/home/me/out", "~/out", "./C:"):
        assert windows_path_here(text) is None, text


def test_a_model_is_shown_by_a_name_that_fits_a_line(tmp_path: Path) -> None:
    gguf = tmp_path / "SmolLM2.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert shown_model(str(gguf)) == "SmolLM2.Q4_1.gguf"
    assert shown_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert shown_model("https://huggingface.co/org/name-GGUF/blob/main/quants/name-Q4_K_M.gguf") == "name-Q4_K_M.gguf"


@pytest.mark.skipif(os.name == "nt", reason="a name there is UTF-16, never bytes of another encoding")
def test_a_name_is_not_utf8_only_where_nothing_is_there_by_it(tmp_path: Path) -> None:
    """The calibration list said "not UTF-8" of a dangling link whose name held U+FFFD, where the Model box did not:
    both now ask :func:`name_not_utf8`, and a link that is there is said as a link."""
    lost = tmp_path / "caf\ufffd.txt"
    assert name_not_utf8(str(lost))
    lost.symlink_to(tmp_path / "gone.txt")  # a name Python could write is there, dangling or not
    assert not name_not_utf8(lost)
    assert not name_not_utf8(tmp_path / "missing.txt")  # no U+FFFD: just missing
