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


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (``~`` expanded) names something, False where the system cannot even look (a name past
    the file system's length limit raises OSError from ``Path.exists``, a NUL byte ValueError)."""
    try:
        return expand_home(path).exists()
    except (OSError, ValueError):
        return False


def read_only(path: Path) -> bool:
    """An existing file its owner may not write: replacing it needs only its folder's permission (a temporary file
    moved over it), so its own mode would never be asked. Root may write anything, so the mode is read too."""
    return not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222
