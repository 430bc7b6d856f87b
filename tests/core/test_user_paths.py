from __future__ import annotations

import os
from pathlib import Path

from shortgpt_desktop.core.user_paths import expand_home


def test_a_home_is_expanded_and_an_unknown_users_is_left_as_typed(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert expand_home("~/models/x") == Path("/home/someone/models/x")
    assert expand_home(Path("~")) == Path("/home/someone")
    # Path.expanduser raises RuntimeError here; the caller's "does not exist" is the sentence the user needs
    assert expand_home("~no-such-user-shortgpt/x") == Path("~no-such-user-shortgpt/x")
    assert expand_home("models/~x") == Path("models/~x")
    assert os.fspath(expand_home("plain")) == "plain"
