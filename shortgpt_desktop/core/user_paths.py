"""Paths as a user types them."""

from __future__ import annotations

import errno
import os
import re
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


def name_not_utf8(path: str | os.PathLike[str]) -> bool:
    """A name the window was handed with U+FFFD in place of bytes that are not UTF-8 (a Latin-1 disk's
    ``caf\xe9.txt``): no such path exists, not even as a dangling link, so "does not exist" would be said of a file
    the user can see. The calibration list and the Model box ask this one question."""
    text = os.fspath(path)
    return "\ufffd" in text and not os.path.lexists(text)


def read_only(path: Path) -> bool:
    """An existing file its owner may not write: replacing it needs only its folder's permission (a temporary file
    moved over it), so its own mode would never be asked. Root may write anything, so the mode is read too."""
    return not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222


def os_reason(exc: BaseException) -> str:
    """Why the system refused, as the end of a sentence: ``permission denied``, ``file name too long`` (its own
    words, lower case; Python's "[Errno 13] Permission denied: '/a/b'" named the path a second time)."""
    return (getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__).rstrip(".").lower()


def not_there(path: str | os.PathLike[str]) -> str:
    """Why a path that is not there cannot be read, as the end of a sentence naming it: ``does not exist``, or a
    link's own fault (a link whose target is gone, or a loop of links, said "does not exist" though ``ls`` lists
    it), or a name the system cannot even look up (``cannot be read (file name too long)``, where :func:`exists`
    says False)."""
    given = expand_home(path)
    try:
        link = given.is_symlink()
    except (OSError, ValueError) as exc:  # too long a name raised a traceback where the caller said "does not exist"
        return f"cannot be read ({os_reason(exc)})"
    if not link:
        return "does not exist"
    try:
        given.resolve(strict=True)
    except RuntimeError:  # Python before 3.13: "Symlink loop"
        return "is a link that leads back to itself (a loop of links)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a link that leads back to itself (a loop of links)"
        return f"is a link to {os.path.realpath(given)}, which does not exist"  # where a chain of links ends
    return "does not exist"


_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")  # C:\... or C:/..., and \\server\share


def windows_path_here(path: str | os.PathLike[str]) -> str | None:
    """The sentence for a path to write to typed as Windows writes them (``C:\\models\\out``, ``\\\\server\\share``)
    on a system that is not Windows, where it is a legal name: ``--out 'C:\\models\\out'`` made a folder of that
    name in the current folder, and "saved to /home/me/C:\\models\\out" was all that was said. None elsewhere."""
    text = os.fspath(path)
    if os.name == "nt" or not _WINDOWS_PATH.match(text):
        return None
    last = re.split(r"[\\/]", text.rstrip("\\/"))[-1]
    last = last if last and not last.endswith(":") else "out"
    return (f"{text} is a Windows path, which this system would take as a name in the current folder; give a path "
            f"of this system, such as ~/{last}.")


def shown_model(model: str) -> str:
    """A model as a line names it: a path's last part (``SmolLM2.Q4_1.gguf``), a Hub id whole, a GGUF file's address
    on the Hub by the file's name (the whole address made the quiz's line two lines long)."""
    from .model.sources import hub_file_of

    name = Path(model.rstrip("/\\")).name
    on_hub = hub_file_of(model, None)
    if on_hub is not None:
        return Path(on_hub[2]).name
    return name if exists(model) and name else model
