"""Paths as a user types them."""

from __future__ import annotations

import os
from pathlib import Path


def expand_home(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, or left as typed where that user has no home.

    ``Path.expanduser`` raises RuntimeError for ``~nosuchuser``, which reached the user as a traceback;
    ``os.path.expanduser`` leaves such a path alone, so the caller's own sentence ("... does not exist") follows.
    """
    return Path(os.path.expanduser(os.fspath(path)))
