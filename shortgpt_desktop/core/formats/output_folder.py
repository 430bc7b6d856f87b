"""The output folder: refused when it could destroy data, written beside and moved into place when complete."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ...format import some_of
from ..errors import Hint, OutputError
from ..model.sources import LICENCE_FILES, ModelSource, hub_cache_holding
from ..user_paths import expand_home, not_there, os_reason, read_only, windows_path_here
from .report_files import REPORT_NAMES, earlier_report

#: What a file browser leaves in any folder: a folder holding only these holds nothing of the user's.
SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
#: What an earlier output of this app holds (its weights, config, tokenizer and card), and what a file browser
#: leaves in any folder: ``force`` replaces a folder only when everything in it matches one of these. Named, not
#: ``*.json``: a folder of the user's results (``results_2024.json``) was replaced with ``--force``. The weights by
#: the names this app writes (``model-finetuned.safetensors`` beside an earlier output was deleted), and a GGUF only
#: where its header says this app wrote it (:func:`gguf_written_here`: llama.cpp's converter writes its file into the
#: folder it converts, and ``--force`` deleted that conversion).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors",
               "model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors",
               "model.safetensors.index.json", "*.gguf", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
               "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json", "README.md",
               ".gitattributes", *SYSTEM_FILES)
#: The tag in the front matter of the model card this app writes (``report.model_card``).
CARD_TAG = "- shortgpt"

log = logging.getLogger(__name__)


def model_own_files(folder: Path) -> list[str]:
    """The files of a model that travel with it, by name: its licence texts, ``*.tiktoken`` vocabularies, and the top
    folder's ``*.py`` where its config names classes in them (``auto_map``: a remote-code model). Not any ``*.py``: a
    script of the user's beside an earlier output is theirs."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and (
        p.suffix == ".tiktoken" or any(fnmatch.fnmatchcase(p.name, pattern) for pattern in LICENCE_FILES)))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return names
    if isinstance(config, dict) and config.get("auto_map"):
        names += sorted(p.name for p in folder.glob("*.py") if p.is_file())
    return names


def not_model_files(folder: Path) -> list[str]:
    """The entries of ``folder`` a model folder would not hold (sub-folders, notes, a GGUF this app did not write,
    anything else), sorted."""
    code = set(model_own_files(folder))

    def other(p: Path) -> bool:
        if p.is_dir():
            return True
        if p.name in code:
            return False
        if p.suffix.lower() == ".gguf":  # read only where it is a file: a pipe of that name held the check for good
            return not (p.is_file() and gguf_written_here(p))
        return not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in MODEL_FILES)

    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if other(p))


def gguf_written_here(path: Path) -> bool:
    """Whether the GGUF file ``path`` is one this app wrote: its header records the layers removed
    (:data:`.provenance.GGUF_KEY`). A file that cannot be read as a GGUF is not."""
    import struct

    from ..errors import UserError
    from .provenance import gguf_removed_layers

    try:
        return bool(gguf_removed_layers(path))
    except (UserError, OSError, ValueError, struct.error):
        return False


def not_an_earlier_output(folder: Path) -> str | None:
    """Why ``force`` may not replace ``folder`` (None: it holds one model this app wrote, and nothing else, or only a
    file browser's leftovers). Every output of this app has its model card (README.md with :data:`CARD_TAG`): a
    folder without one is the user's own model (a GGUF downloaded there, a ``save_pretrained`` folder: ``--force``
    deleted them), a card this app did not write is someone else's model, and several GGUF files are a collection,
    not one output."""
    others = not_model_files(folder)
    if others and all(name.lower().endswith((".gguf", ".safetensors", ".bin", ".pt", ".pth")) for name in others):
        # "holds more than a model (mymodel.gguf)" was said of a folder holding just the user's own GGUF
        what = "a model" if len(others) == 1 else "weights"
        return f"holds {what} this app did not write ({some_of(others, 3)}), which replacing it would delete"
    if others:
        # A folder of notes alone was said to hold "more than a model", as if it held one.
        # a model is its weights or its config: a project's README.md or LICENSE beside notes is none
        model = any(p.is_file() and (p.suffix in (".safetensors", ".gguf", ".bin") or p.name == "config.json")
                    for p in folder.iterdir())
        what = "more than a model" if model else "no model but other files"
        return f"holds {what} ({some_of(others, 3)}), which replacing it would delete"
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if len(ggufs) > 1:
        return f"holds {len(ggufs)} GGUF files ({', '.join(ggufs[:3])}{'…' if len(ggufs) > 3 else ''}), not one output"
    card = folder / "README.md"
    if card.is_file():
        if not card_written_here(card):
            return "holds a model card this app did not write (README.md), so it is not an earlier output"
    elif any(p.name not in SYSTEM_FILES for p in folder.iterdir()):
        return ("holds a model without this app's model card (README.md), so it is not an earlier output but "
                "a model of yours")
    return None


def card_written_here(card: Path) -> bool:
    """Whether ``card`` is a model card this app wrote (its front matter carries :data:`CARD_TAG`); a file that cannot
    be read is not (the reader that needs it says why)."""
    try:
        with card.open(encoding="utf-8", errors="replace") as stream:
            head = stream.read(4096)
    except OSError:
        return False
    if not head.startswith("---"):
        return False
    front = head[3:].split("\n---", 1)[0]
    return CARD_TAG in (line.strip() for line in front.splitlines())


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file or folder on disk (a bind mount, a hard link, another case of the same name on a
    case-insensitive disk), both existing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or below it, by the paths as written or by the folders on disk."""
    if inner == outer or outer in inner.parents:
        return True
    return any(_same_file(folder, outer) for folder in (inner, *inner.parents) if folder.exists())


def _link_targets(folder: Path) -> list[Path]:
    """Where the links in ``folder`` lead; a link that leads nowhere (a loop, a target one may not read) is left
    out: it is not part of the model, and one in a model folder refused every save ("Symlink loop from …")."""
    targets = []
    for entry in folder.iterdir():
        if entry.is_symlink():
            with suppress(OSError, RuntimeError):
                targets.append(entry.resolve(strict=True))
    return targets


def gguf_given_as_folder(source: ModelSource) -> bool:
    """Whether a GGUF source was named by the folder holding it (``shortgpt prune models/smol``), not by its file."""
    if source.kind == "hub" or not source.gguf_file:
        return False
    try:
        return expand_home(source.spec).is_dir()
    except (OSError, RuntimeError):
        return False


#: Every mount of this process's view, Linux's (a bind mount too).
MOUNTINFO = Path("/proc/self/mountinfo")


def is_mount_point(folder: Path) -> bool:
    """Whether a drive, or a bind mount, is mounted at ``folder``: ``os.path.ismount`` sees only a mount of another
    device, so a bind mount on the same disk passed, and the save ran its whole job before the finished model could
    not be moved over it ("device or resource busy"; a walkthrough). Linux lists every mount in /proc."""
    if os.path.ismount(folder):
        return True
    try:
        lines = MOUNTINFO.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:  # not Linux, or no /proc
        return False
    try:
        here = os.path.realpath(folder)
    except OSError:
        return False
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4 and _unescape_mount(fields[4]) == here:
            return True
    return False


def _unescape_mount(field: str) -> str:
    """A mountinfo path as written there: a space, a tab, a newline and a backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def check_output_folder(out: Path, source: ModelSource, force: bool) -> Path:
    """Refuse outputs that could destroy data: the source, anything inside or above it, a non-empty folder, and
    even with ``force`` a folder that holds anything but a model (``--out . --force`` in a folder of notes would
    replace the notes with the model), a path whose nearest existing parent is not a folder one can write in."""
    foreign = windows_path_here(out)
    if foreign:
        raise OutputError(foreign)
    try:
        out = Path(out).expanduser().resolve()
        # A GGUF source is one file: a new folder beside it is fine. A model folder is off limits as a whole, and so
        # is the folder of a GGUF given by its folder (the user's model is that folder: `--out sc/inner` was taken)
        one_file = bool(source.gguf_file) and not gguf_given_as_folder(source)
        given = source.folder / source.gguf_file if one_file else source.folder
        src = given.resolve()
        # A GGUF that is a link (a Hub cache's snapshot) resolves to its blob elsewhere: the folder holding the
        # link holds the source too, and replacing it would delete the user's link and its neighbours.
        link = given.parent.resolve() / given.name
        if _is_within(out, src):
            if one_file and out == src:  # "the source model's folder" of a file (--out model.gguf)
                raise OutputError(f"The output {out} is the source model's own file; --out takes a new folder, where "
                                  "the pruned .gguf is written.")
            raise OutputError(f"The output folder {out} is the source model's folder or inside it; choose another.")
        # and each weight file where it really lies: a GGUF named by its folder, or a folder's weights, may be links
        # to files elsewhere, which replacing that folder would delete (the folder's own check does not reach them)
        weights = [w.path.resolve() for w in source.weight_files] + [w.path.parent.resolve() / w.path.name
                                                                     for w in source.weight_files]
        # and every other file of a model folder where it really lies: a config or tokenizer linked to an earlier
        # output's was rewritten by replacing that output, and the source no longer loaded
        if not one_file:
            weights += _link_targets(source.folder)
        held = [path for path in (src, link, *weights) if _is_within(path, out)]
        if held:
            linked = "" if held[0] in (src, link) else f" ({held[0].name}, which {source.folder} links to)"
            raise OutputError(f"The output folder {out} contains the source model{linked}; choose another.")
        # the cache the model's folder lies in, or one its files lead into (a GGUF linked to a snapshot's file)
        cached = next((c for c in (source.hub_cache_behind_links, *map(hub_cache_holding, (src, *weights)))
                       if c is not None), None)
        if cached is not None and _is_within(out, cached.resolve()):
            # its blobs/ folder was taken (the snapshot's files are links into it): deleting the model from the
            # cache (huggingface-cli delete-cache) would delete the pruned model with it
            raise OutputError(f"The output folder {out} is inside the Hugging Face cache's folder of the source model "
                              f"({cached}), which deleting the model from the cache deletes; choose another.")
        was_there = os.path.lexists(out)
        for abandoned in remove_abandoned(out):  # before judging out: a killed save may have hidden the old output
            log.info("Removed %s, left by a save to %s whose process was killed.", abandoned, out)
        # said with the refusal below: "is not empty" of a folder the user had seen missing read as a slip
        put_back = "" if was_there or not out.exists() else \
            " (it holds the earlier output that a killed save had moved aside, put back now)"
        if out.exists() and not out.is_dir():  # /dev/null was "a file"
            kind = "a file" if out.is_file() else "not a folder (a device, a pipe or a socket)"
            raise OutputError(f"{out} exists and is {kind}; choose a folder.")
        if not out.exists() and out.suffix.lower() in (".gguf", ".safetensors"):
            # `--out small.gguf` made a folder small.gguf holding small.gguf.gguf, which `llama-cli -m` cannot open
            raise OutputError(f"{out.name} names a file, but the output is a folder (the model is written inside it, "
                              f"named after it); give a folder name, like {out.with_suffix('').name}.")
        if out.is_dir() and is_mount_point(out):
            raise OutputError(f"{out} is a mount point (the top of a drive, or a bind mount), which cannot be "
                              "replaced; choose a folder inside it.")
        holds = out.is_dir() and any(out.iterdir())
        if holds:
            why = not_an_earlier_output(out)
            if why:  # "add --force to replace it" was said of a folder of notes, which --force then refused
                raise OutputError(f"{out} {why}; choose an empty folder or an earlier output.")
        # after that: a folder of the user's files that holds the current one is refused for what it holds; before
        # the earlier output's "add --force", which --force would then refuse with this sentence
        if out.exists() and _is_within(Path.cwd().resolve(), out):
            why = ("which Windows does not let it replace" if CURRENT_FOLDER_IS_LOCKED else
                   "which the finished model replaces: a terminal there would be left in a deleted folder, showing "
                   "nothing where the model was saved")
            raise OutputError(f"{out} is the folder this program runs in, {why}; choose another folder (a new "
                              "one is made), or start it from another folder.")
        if holds and force and not os.access(out, os.W_OK):
            # moving a folder aside writes in it (its ".." entry): a read-only earlier output passed, and the finished
            # model was kept beside it hours later, "another program may have it open"
            raise OutputError(f"{out} is read-only, and replacing it needs permission to write in it; make it "
                              "writable or choose another folder.")
        if holds and not force:  # an earlier output: --force (the window's "Replace") may replace it
            raise OutputError(f"{out} is not empty{put_back}; choose an empty folder.", hint=Hint.REPLACE_OUTPUT)
    except OSError as exc:  # a folder one may not read or enter
        raise OutputError(f"Cannot use {out} as the output folder: {os_reason(exc)}.") from None
    except RuntimeError as exc:  # a link loop, or ~user for no such user
        raise OutputError(f"Cannot use {out} as the output folder: {exc}.") from None
    _check_creatable(out)
    return out


#: Windows refuses to rename or remove a folder that is a process's current folder (``--out .`` run inside the
#: output folder): the finished model's move would fail at the end of the job. Elsewhere the move succeeds, and the
#: shell that ran ``--out .`` is left in the deleted folder (``ls`` showed nothing after "saved to"): refused too,
#: said in each system's terms.
CURRENT_FOLDER_IS_LOCKED = os.name == "nt"
#: Seconds to wait between tries of a move Windows refused (PermissionError): a virus scanner or an indexer holds
#: the files it has just seen for a moment. Where it still fails, the finished model is kept beside ``out``.
MOVE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)

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
    try:  # named as the save names it, so that a name too long for the disk is refused now
        _probe(parent, _partial_prefix(out), folder=True)
    except OSError as exc:
        raise OutputError(f"Cannot create {out}: {os_reason(exc)}{_beside(out, parent)}.") from None


def _probe(where: Path, prefix: str, folder: bool, suffix: str = "") -> None:
    """Make and remove a folder (``folder``) or a file named ``prefix…suffix`` in ``where``, as a save or a report
    will: raises the OSError that would stop it there later (no permission, a name too long)."""
    if folder:
        Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=where)).rmdir()
        return
    handle, probe = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
    os.close(handle)
    os.unlink(probe)


def _beside(out: Path, parent: Path) -> str:
    """Why the folder beside ``out`` matters, where ``out`` is there already: an empty writable output folder in a
    read-only parent was refused as "Cannot create …: operation not permitted", which read as a fault of the folder
    named."""
    if not out.is_dir():
        return ""
    return (f" in {parent}, where the model is written first, in a hidden folder beside {out.name}, and moved into "
            "place once complete")


@contextmanager
def output_folder(out: Path, force: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; moved into place when the block completes.

    Whatever goes wrong (a cancel, a full disk, a bug), the temporary folder is removed and ``out`` is left
    as it was; only a finished model whose move into place fails is kept, beside ``out`` (:func:`_keep_finished`).
    A filesystem error while writing is the user's to fix (a file in the way, no space, no permission): it becomes
    one sentence. What is at ``out`` is checked again just before the move (``force``:
    as :func:`check_output_folder` checks it): files put there while the model was written are never replaced.
    """
    made = _missing_folders(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for abandoned in remove_abandoned(out):
            log.info("Removed %s, left by a save to %s whose process was killed.", abandoned, out)
        temp = Path(tempfile.mkdtemp(prefix=_partial_prefix(out), dir=out.parent))
    except OSError as exc:
        _remove_if_empty(made)
        raise OutputError(f"Cannot create {out}: {os_reason(exc)}{_beside(out, out.parent)}.") from None
    with suppress(OSError):  # a disk that keeps no modes (some network and Windows-formatted drives): as made
        _chmod_like_a_new_folder(temp)
        _like_the_replaced(temp, out)
    try:
        yield temp
        _sync_files(temp)  # seconds for a large model: what is at out is checked after it, just before the move
        remove_abandoned(out)  # a save killed mid-swap meanwhile: its earlier output back first, then judged
        replacing = out.is_dir() and any(out.iterdir())  # an earlier output (checked next): moved aside
        _check_still_replaceable(out, force)  # (two saves to one new folder both said saved, one model lost)
    except OSError as exc:
        _discard(temp, made)
        raise OutputError(f"Writing {out} failed: {os_reason(exc)}; nothing was written.") from None
    except BaseException:
        _discard(temp, made)
        raise
    try:
        _move_into_place(temp, out, replacing)
    except OSError as exc:  # the model is complete: kept, not deleted (a job of hours would be lost)
        kept = _keep_finished(temp, out)
        if not replacing and out.is_dir() and any(out.iterdir()):
            raise OutputError(f"{out} was filled while the model was moved in (another save, or another program); "
                              f"nothing there was replaced, and the finished model is kept complete in {kept}.") \
                from None
        raise OutputError(f"The finished model could not be moved into {out} ({os_reason(exc)}: another program may "
                          f"have it open); it is kept complete in {kept}.") from None
    except BaseException:
        _discard(temp, made)
        raise
    _sync_folder(out.parent)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what making it will create."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed save made for its output (deepest first), while they are empty: a failed or
    cancelled save to ``new/models/out`` left ``new/models`` behind, empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile, or it is gone: leave the rest
            return


def _discard(temp: Path, made: Sequence[Path]) -> None:
    """A save that did not finish: its temporary folder, and the folders it made for the output, go, through further
    Ctrl-Cs (a few in a row left the hidden partial folder behind, a model's size, until a later save to that name)."""
    _remove_through_interrupts(temp)
    _remove_if_empty(made)


def _sync_files(folder: Path) -> None:
    """Every file written into ``folder`` on the disk before the folder moves into place: after a power cut the
    system may have kept the rename but not the data, and a folder that looks finished around an empty config,
    tokenizer or shard does not load. (Syncing what is already on the disk costs nothing.)"""
    flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY  # Windows flushes only a handle open for writing
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            descriptor = os.open(path, flags | getattr(os, "O_BINARY", 0))
        except OSError:  # cannot be opened (made read-only meanwhile, on Windows): left as written
            continue
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """The move itself on the disk (the folder's entries), where the system can sync a folder: not Windows, whose
    NTFS journals it, nor some network drives; the model is in place either way, so a refusal is not an error."""
    if os.name == "nt":
        return
    with suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _keep_finished(temp: Path, out: Path) -> Path:
    """Give the finished folder whose move failed a visible name beside ``out`` (a later save would remove a hidden
    partial folder as abandoned); where even that fails, it stays where it was written."""
    for number in range(1, 100):
        kept = out.with_name(f"{out.name}.finished" + (f"-{number}" if number > 1 else ""))
        if kept.exists():
            continue
        try:
            _replace(temp, kept)
        except OSError:
            break
        return kept
    # kept where it was written: marked beside it, so that no later save removes it as abandoned (it did, once the
    # process had ended: the model said kept was deleted by the next folder check)
    with suppress(OSError):
        temp.with_name(temp.name + KEPT_MARK).touch()
    return temp


#: Beside a partial folder whose finished model could not be given a visible name: :func:`remove_abandoned` leaves it.
KEPT_MARK = ".kept"


def _replace(src: Path, dst: Path) -> None:
    """``os.replace``, tried again for a few seconds where the system refuses it (see :data:`MOVE_RETRY_DELAYS`)."""
    for delay in (*MOVE_RETRY_DELAYS, None):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if delay is None:
                raise
            time.sleep(delay)


def _partial_prefix(out: Path) -> str:
    """How the folder a save writes into beside ``out`` begins: it names this machine and this process, so that a
    later save can tell a folder whose job was killed from one another job is still writing."""
    return f".{out.name}.partial-{_host_tag()}-{os.getpid()}-"


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _aside_prefix(out: Path) -> str:
    """How the folder the old output is moved into while the new one takes its place begins (this machine and this
    process named, as :func:`_partial_prefix`)."""
    return f".{out.name}.old-{_host_tag()}-{os.getpid()}-"


def remove_abandoned(out: Path) -> list[Path]:
    """Remove the folders that saves to ``out`` from this machine left when their process was killed (a SIGKILL,
    a power cut, the window killed from a task manager): each is hidden and may hold a whole model. A folder whose
    process still runs, or that another machine made (a shared disk), is left alone.

    A save killed between moving the old output aside and moving the new one in left no ``out`` at all, the old
    output hidden in its ``.old-`` folder for good: it is put back first (the new one, never said to be saved, goes
    with the other partial folders). An ``.old-`` folder beside an ``out`` that exists again is left alone: it may
    hold the only copy of that earlier output. One killed while removing the old output after the swap left a
    ``.done-`` folder half removed: it goes."""
    tag, name = _host_tag(), re.escape(out.name)
    # whole names (mkdtemp's suffix has no dot): ".m.done-…-x.partial-…" is a save to an output named "m.done-…-x"
    aside = re.compile(rf"\.{name}\.old-{tag}-(\d+)-[a-z0-9_]+")
    gone = re.compile(rf"\.{name}\.(?:partial|done)-{tag}-(\d+)-[a-z0-9_]+")

    def order(entry: Path) -> tuple[bool, float]:  # the ".old-" ones first, the newest of them first
        try:
            return not aside.fullmatch(entry.name), -entry.lstat().st_mtime
        except OSError:
            return True, 0.0

    try:
        entries = sorted(out.parent.iterdir(), key=order)
    except OSError:
        return []
    removed = []
    for entry in entries:
        found = gone.fullmatch(entry.name) or aside.fullmatch(entry.name)
        if not found or not entry.is_dir() or entry.is_symlink() or _running(int(found[1])):
            continue
        if entry.with_name(entry.name + KEPT_MARK).exists():
            continue  # a finished model said kept there
        old = entry / out.name
        if found.re is aside and old.is_dir():  # (an empty one, killed before its move, just goes)
            if os.path.lexists(out):
                continue  # beside an output that exists again: it may hold the only copy of an earlier one
            try:
                os.replace(old, out)
                log.warning("Put back the earlier output %s, which a killed save had moved aside.", out)
            except OSError:
                continue  # left where it is: a later save tries again
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine. psutil asks without sending anything (on Windows
    ``os.kill(pid, 0)`` would end the process it asks about, so abandoned folders were never removed there)."""
    import psutil

    if pid == os.getpid():
        return True
    try:
        return psutil.pid_exists(pid)
    except (OSError, OverflowError, ValueError):  # no pid this app wrote: left alone
        return True


def _check_still_replaceable(out: Path, force: bool) -> None:
    """Refuse the move when ``out`` changed while the model was written (another job's output, the user's files)."""
    if out.is_dir() and any(out.iterdir()):
        why = "is no longer empty" if not force else (not_an_earlier_output(out) or "")
        if why:
            raise OutputError(f"{out} {why} (something was put there while the model was written); nothing was "
                              "replaced, and the pruned model was not kept.")
    elif out.exists() and not out.is_dir():
        raise OutputError(f"{out} is now a file (made while the model was written); nothing was replaced.")



def _chmod_like_a_new_folder(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; the finished model should be readable like any other folder."""
    os.chmod(folder, 0o777 & ~current_umask(folder.parent))


def _like_the_replaced(folder: Path, out: Path) -> None:
    """Give ``folder`` the mode and group of the folder ``out`` it replaces, where there is one: a private (0700) or
    a group's (2770) output folder chosen by the user became world-readable (0755) and the user's own."""
    if os.name == "nt":  # no group, and a folder's mode there is only a read-only flag
        return
    try:
        held = out.stat()
    except OSError:
        return
    if not stat.S_ISDIR(held.st_mode):
        return
    with suppress(OSError):  # a group the user is not in: the mode still follows
        os.chown(folder, -1, held.st_gid)
    os.chmod(folder, stat.S_IMODE(held.st_mode) | stat.S_IRWXU)  # the owner still writes the model into it


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


def _move_into_place(temp: Path, out: Path, replacing: bool = True) -> None:
    """Swap the finished folder in; an earlier output (``replacing``, checked as one) is moved aside first.

    The folder that held the old output is removed whether the swap succeeds (with the old output in it) or
    fails and is rolled back (then empty): no ``.name.old-*`` folder is left behind either way. Where ``out`` was
    empty or missing it is never moved aside: a folder filled since (another save to the same new folder, between
    the check and the move) makes the move fail instead, and its files stay (both saves said saved, one model lost).
    """
    if not replacing:
        with suppress(FileNotFoundError):
            out.rmdir()  # empty, as checked; a folder filled since is not removed (OSError: the move is refused)
        _move_in(temp, out)  # onto a folder made since: refused where it holds anything (and anywhere on Windows)
        return
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=_aside_prefix(out), dir=out.parent))
        try:
            _replace(out, aside / out.name)
        except BaseException:
            # a Ctrl-C that came once the old output was aside: put back (rmdir then failed on it, and its "directory
            # not empty" was said as a move refused by "another program", the old output left hidden)
            with suppress(OSError):
                if os.path.lexists(aside / out.name) and not os.path.lexists(out):
                    os.replace(aside / out.name, out)
                aside.rmdir()  # where the put-back failed, the next save's folder check puts it back
            raise
        try:
            _replace(temp, out)
            _moved_in[0] = True
        except BaseException as exc:
            # a Ctrl-C that came once the new output was in: the save is done, and only the old one's removal is
            # left (the rollback failed on the new output, and the finished model was said kept where it was not)
            if not (isinstance(exc, KeyboardInterrupt) and not os.path.lexists(temp)):
                _replace(aside / out.name, out)  # if this fails too, the old output stays in ``aside``
                aside.rmdir()
                raise
            _moved_in[0] = True
        # renamed first: a save killed while removing it leaves a ".done-" folder, which the next save removes; an
        # ".old-" one it finds holds the only copy of an earlier output
        done = aside.with_name(f".{out.name}.done-" + aside.name[len(f".{out.name}.old-"):])  # (a name may hold .old-)
        with suppress(OSError):
            os.replace(aside, done)
            aside = done
        _remove_through_interrupts(aside)
    else:
        _move_in(temp, out)


def _move_in(temp: Path, out: Path) -> None:
    """``temp`` moved to ``out``, where nothing is to be moved aside. A Ctrl-C that came once it was there is the save
    done (it said "cancelled; nothing was written"); :func:`an_output_is_in_place` says so from that moment."""
    try:
        _replace(temp, out)
        _moved_in[0] = True
    except KeyboardInterrupt:
        if os.path.lexists(temp):
            raise
        _moved_in[0] = True


#: Whether a finished output has been moved into place in this process since :func:`forget_outputs_in_place`.
_moved_in = [False]


def an_output_is_in_place() -> bool:
    """Whether this process has moved a finished output into place (since :func:`forget_outputs_in_place`). The
    command line's Ctrl-C stops cancelling there: a Ctrl-C while the folder above was synced, or the summary or the
    report was written, said "cancelled; nothing was written" with the new model in place (an earlier one replaced)
    and no report. Set inside the move itself, so that no moment is left between the two."""
    return _moved_in[0]


def forget_outputs_in_place() -> None:
    """Start a job afresh for :func:`an_output_is_in_place`."""
    _moved_in[0] = False


def _remove_through_interrupts(folder: Path) -> None:
    """Remove ``folder`` whatever Ctrl-Cs come meanwhile: the old output's after the new one is in place (the save is
    done, only this removal is left: a second Ctrl-C left it half removed, and the command line said nothing was
    written), and an unfinished save's partial one."""
    while True:  # each try removes more of it, so it ends
        try:
            shutil.rmtree(folder, ignore_errors=True)
            return
        except KeyboardInterrupt:
            continue


def check_report_path(path: str | Path, sources: Sequence[str | Path] = (), texts: Sequence[str | Path] = (),
                      out: str | Path | None = None, replaces: str | None = None) -> Path:
    """``path`` expanded, or the sentence why a file cannot be written there (checked before a job runs too):
    never inside a ``sources`` model's folder, nor over its file (``--json model/config.json`` replaced the
    source's config with the report); never over a ``texts`` file (the calibration or evaluation text the job
    reads: ``--json notes.txt`` replaced the user's text) nor inside a ``texts`` folder; never at or inside the
    output folder ``out`` (the save writes and ``--force`` replaces it: the report replaced its config.json); never
    over a read-only file. ``replaces`` (the command line, where no dialog asked; :data:`.report_files.SCORE_REPORT`
    ...): an existing file is replaced only where it is an earlier report of that kind (or empty): ``--csv test.txt``,
    typed for ``--eval-text``, replaced the user's text; ``--csv curve.json`` replaced the curve's JSON with its table,
    and ``score --json`` replaced prune's report, the record of where a model was saved; ``prune --json`` an eval's."""
    foreign = windows_path_here(path)
    if foreign:
        raise OutputError(foreign)
    if str(path) == "-":  # read as standard output by many tools: it wrote a file named "-" without a word
        raise OutputError("Cannot write a report to '-': standard output holds the summary; give a file's path, "
                          "such as report.json.")
    separators = "".join(filter(None, ("/", os.sep, os.altsep)))
    if isinstance(path, str) and (path.endswith(tuple(separators)) or os.path.basename(path) in (".", "..")):
        # ``--json reports/`` (or ``reports/.``): a file named "reports" was written after the job, and broke
        # ``--out reports/sub``
        from .report_files import CURVE_CSV

        folder = path.rstrip(separators) or path
        name = "report.csv" if replaces == CURVE_CSV else "report.json"
        raise OutputError(f"Cannot write {path}: it names a folder; give a file name, such as "
                          f"{folder}{'/' if '/' in path else os.sep}{name}.")
    try:
        return _checked_report_path(expand_home(path), sources, texts, out, replaces)
    except OSError as exc:  # a name too long for the file system: it raised a traceback, before or after the job
        raise OutputError(f"Cannot write {path}: {os_reason(exc)}.") from None


def _checked_report_path(path: Path, sources: Sequence[str | Path], texts: Sequence[str | Path],
                         out: str | Path | None, replaces: str | None) -> Path:
    """:func:`check_report_path`'s checks of an expanded ``path``."""
    if path.exists() and not path.is_file() and not path.is_dir():  # replacing /dev/null (as root) broke the machine
        # as given, before a link is followed: /dev/stdout into a pipe resolves to /proc/…/pipe:[N], a name that is
        # not there, and was refused only after the job ("Cannot write /proc/9993/fd/pipe:[18879]")
        raise OutputError(f"Cannot write {path}: it is not a regular file (a device, a pipe or a socket); give a "
                          "file name.")
    if path.is_symlink():  # written through: the link stays, its target is replaced (and checked as such)
        path = path.resolve()
    missing = _missing_folders(path.parent)  # made as the report is written, as --out's folders are
    if any(folder.is_symlink() for folder in missing):  # a link to nowhere: said as such, not made through
        raise OutputError(f"Cannot write {path}: the folder {path.parent} {not_there(path.parent)}.")
    from ..free_space import nearest_existing

    where = nearest_existing(path.parent)  # the folder itself, or the one its missing folders go into
    if not where.is_dir():
        raise OutputError(f"Cannot write {path}: {where} is a file, not a folder.")
    for source in sources:
        model = expand_home(source)
        if not model.exists():  # a Hub id, or not there: nothing of it to overwrite here
            continue
        inside = model.is_dir() and _is_within(where, model.resolve())
        if inside or (path.exists() and _same_file(path, model)):
            said = "inside the folder of the model" if inside else "the model's own file"
            raise OutputError(f"Cannot write {path}: it is {said} {model}; choose another place.")
    for text in texts:
        given = expand_home(text)
        if given.is_dir() and _is_within(where, given.resolve()):
            raise OutputError(f"Cannot write {path}: it is inside the folder of text the job reads, {given}; "
                              "choose another place.")
        if path.exists() and _same_file(path, given):
            raise OutputError(f"Cannot write {path}: it is the text the job reads, {given}; choose another place.")
    if out is not None:
        folder = expand_home(out)
        # resolved too, for an output folder not made yet: "--out /abs/new --json new/config.json" was let through,
        # the report's folders made, and the report replaced the saved model's config
        at, into = path.resolve(), folder.resolve()
        if path == folder or folder in path.parents or at == into or into in at.parents or (
                path.exists() and _same_file(path, folder)) or (folder.exists() and _is_within(where, into)):
            said = "the output folder" if at == into or _same_file(path, folder) else "in the output folder"
            raise OutputError(f"Cannot write {path}: it is {said} {folder}, which the save writes; choose a place "
                              "beside it.")
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder; give a file name.")
    # refused now where the report or its folders could not be written then (no permission, /proc), not after
    # the job: the job ran, its model was saved, and the command still said "Cannot write" with exit 2. A file, as
    # the report's temporary one is named (where a folder may be made but no file, or its name is too long), and a
    # folder where folders are to be made.
    try:
        if missing:
            _probe(where, ".report.", folder=True, suffix=".probe")
        else:
            _probe(where, _report_prefix(path), folder=False, suffix=".partial")
    except OSError as exc:
        made = f"the folder {path.parent} cannot be made in {where}" if missing else f"{where} cannot be written"
        raise OutputError(f"Cannot write {path}: {made} ({os_reason(exc)}).") from None
    if path.is_file() and read_only(path):
        raise OutputError(f"Cannot write {path}: the file is read-only; choose another name.")
    if replaces is not None and path.is_file():
        found = earlier_report(path)
        if found is None:
            raise OutputError(f"Cannot write {path}: the file exists and is not a report of this tool; choose another "
                              "name, or delete it first.")
        if found and found != replaces:
            raise OutputError(f"Cannot write {path}: it holds {REPORT_NAMES[found]}, which this would replace with "
                              f"{REPORT_NAMES[replaces]}; choose another name.")
    return path


def _report_prefix(path: Path) -> str:
    """The start of the temporary file a report is written to beside ``path``: its name, cut to 64 characters (a
    report named with 240 of the 255 a name may hold could not have its temporary file)."""
    return f".{path.name[:64]}."


def write_file_atomically(path: Path, write: Callable[[Any], None], sources: Sequence[str | Path] = (),
                          texts: Sequence[str | Path] = (), replaces: str | None = None) -> Path:
    """``write(stream)`` (text) into a temporary file beside ``path``, moved into place only when complete.

    A path that cannot be written (no such folder, no permission, a folder in the way, a full disk) is one
    :class:`OutputError` sentence, and nothing is left behind; nor is one :func:`check_report_path` refuses with
    the ``sources`` and ``texts`` of the job, or over a file other than an earlier report of the kind ``replaces``
    names (where given).
    """
    path = check_report_path(path, sources, texts, replaces=replaces)
    made = _missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=_report_prefix(path), suffix=".partial", dir=path.parent)
    except OSError as exc:
        _remove_if_empty(made)
        raise OutputError(f"Cannot write {path}: {os_reason(exc)}.") from None
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~current_umask(path.parent))  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        _remove_if_empty(made)
        raise OutputError(f"Cannot write {path}: {os_reason(exc)}.") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        _remove_if_empty(made)
        raise
    return path
