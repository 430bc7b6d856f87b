"""The output folder: refused when it could destroy data, written beside and moved into place when complete."""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import Hint, OutputError
from ..model.sources import ModelSource

#: What a model folder holds (an earlier output of this app, or any Hugging Face or GGUF model): ``force``
#: replaces a folder only when everything in it matches one of these.
MODEL_FILES = ("*.json", "*.safetensors", "*.gguf", "*.bin", "*.jinja", "README.md", "merges.txt", "vocab.txt",
               "tokenizer.model", "spiece.model", ".gitattributes")


def not_model_files(folder: Path) -> list[str]:
    """The entries of ``folder`` a model folder would not hold (sub-folders, notes, anything else), sorted."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                  if p.is_dir() or not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in MODEL_FILES))


def check_output_folder(out: Path, source: ModelSource, force: bool) -> Path:
    """Refuse outputs that could destroy data: the source, anything inside or above it, a non-empty folder, and
    even with ``force`` a folder that holds anything but a model (``--out . --force`` in a folder of notes would
    replace the notes with the model), a path whose nearest existing parent is not a folder one can write in."""
    out = Path(out).expanduser().resolve()
    # A GGUF source is one file: a new folder beside it is fine. A model folder is off limits as a whole.
    src = (source.folder / source.gguf_file).resolve() if source.gguf_file else source.folder.resolve()
    if out == src or src in out.parents:
        raise OutputError(
            f"The output folder {out} is the source model's folder or inside it; choose another."
        )
    if out in src.parents:
        raise OutputError(f"The output folder {out} contains the source model; choose another.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file; choose a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputError(f"{out} is not empty; choose an empty folder.", hint=Hint.REPLACE_OUTPUT)
        others = not_model_files(out)
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise OutputError(f"{out} holds more than a model ({shown}), which replacing it would delete; "
                              "choose an empty folder or an earlier output.")
    _check_creatable(out)
    return out


#: Room kept beyond the size the plan expects: the file system's rounding, a GGUF's header, the model card.
ROOM_MARGIN = 1.02


def check_room(out: str | Path, needed: int, side_files: int = 0, at_least: bool = False) -> None:
    """Refuse an output the disk cannot hold, before the long steps (a healing can take an hour, and a full disk
    at the save would lose it): ``needed`` is the size of the weights the plan expects to write (``at_least``: the
    least it can be, the layers not chosen yet), ``side_files`` what the format writes beside them at most (config,
    tokenizer). The folder is written beside ``out`` and moved into place when complete, so a replaced output needs
    the room while the old one is there."""
    from ...format import human_bytes
    from ..free_space import free_bytes, nearest_existing

    room = int(needed * ROOM_MARGIN) + side_files
    free = free_bytes(out)
    if free is not None and room > free:  # not known: the save still says a full disk in one sentence
        raise OutputError(f"The pruned model needs {'at least' if at_least else 'about'} {human_bytes(needed)} "
                          f"({human_bytes(room)} with its other "
                          f"files and a margin) but only {human_bytes(free)} is free on the disk of "
                          f"{nearest_existing(out)}; free some space or choose a folder on another disk.")


def _check_creatable(out: Path) -> None:
    """Refuse, before a job runs, an output that could not be written at save time: the finished folder is made
    beside ``out`` (in its nearest existing parent), so a probe folder is made and removed there now."""
    from ..free_space import nearest_existing

    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputError(f"Cannot create {out}: {parent} is a file, not a folder.")
    try:
        Path(tempfile.mkdtemp(prefix=".shortgpt-probe-", dir=parent)).rmdir()
    except OSError as exc:
        raise OutputError(f"Cannot create {out}: {_reason(exc)}.") from None


@contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; moved into place when the block completes.

    Whatever goes wrong (a cancel, a full disk, a bug), the temporary folder is removed and ``out`` is left
    as it was. A filesystem error while writing is the user's to fix (a file in the way, no space, no
    permission): it becomes one sentence.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"Cannot create {out}: {_reason(exc)}.") from None
    _chmod_like_a_new_folder(temp)
    try:
        yield temp
        _move_into_place(temp, out)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise OutputError(f"Writing {out} failed: {_reason(exc)}; nothing was written.") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or exc.__class__.__name__).rstrip(".").lower()


def _chmod_like_a_new_folder(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; the finished model should be readable like any other folder."""
    os.chmod(folder, 0o777 & ~current_umask(folder.parent))


def current_umask(probe_parent: Path) -> int:
    """The process's umask, read without changing it.

    ``os.umask(0)`` followed by ``os.umask(old)`` would set the mask to 0 for the whole process for a moment,
    and a file another thread creates in that moment (the window saves while a worker writes) would be
    world-writable. Linux reports the mask in ``/proc/self/status``; elsewhere a probe folder created with
    mode 0777 shows it (its mode is ``0777 & ~umask``).
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    probe = Path(tempfile.mkdtemp(prefix=".umask-probe-", dir=probe_parent))
    try:
        probe.rmdir()
        probe.mkdir(0o777)
        return 0o777 & ~probe.stat().st_mode
    finally:
        probe.rmdir()


def _move_into_place(temp: Path, out: Path) -> None:
    """Swap the finished folder in; an existing (empty, or forced) folder is moved aside first.

    The folder that held the old output is removed whether the swap succeeds (with the old output in it) or
    fails and is rolled back (then empty): no ``.name.old-*`` folder is left behind either way.
    """
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        try:
            os.replace(out, aside / out.name)
        except BaseException:
            aside.rmdir()
            raise
        try:
            os.replace(temp, out)
        except BaseException:
            os.replace(aside / out.name, out)  # if this fails too, the old output stays in ``aside``
            aside.rmdir()
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(temp, out)


def check_report_path(path: Path) -> Path:
    """``path`` expanded, or the sentence why a file cannot be written there (checked before a job runs too)."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder; give a file name.")
    return path


def write_file_atomically(path: Path, write: Callable[[Any], None]) -> Path:
    """``write(stream)`` (text) into a temporary file beside ``path``, moved into place only when complete.

    A path that cannot be written (no such folder, no permission, a folder in the way, a full disk) is one
    :class:`OutputError` sentence, and nothing is left behind.
    """
    path = check_report_path(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {_reason(exc)}.") from None
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~current_umask(path.parent))  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"Cannot write {path}: {_reason(exc)}.") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
