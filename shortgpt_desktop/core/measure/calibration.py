"""Calibration text: files and folders → texts → token samples, a held-out part for perplexity, a built-in corpus.

The scoring samples and the perplexity windows are cut from one token stream at a boundary, so they never share
a token unless the user gives separate evaluation text.
"""

from __future__ import annotations

import json
import logging
import os
import random
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...format import counted, human_bytes, in_number
from .. import defaults
from ..errors import CalibrationError
from ..user_paths import exists, expand_home, not_there, os_reason

log = logging.getLogger(__name__)

#: Endings read in a format of their own; any other file that decodes as text is used as it is (source code,
#: .rst, .tex, .html, .csv, no ending at all...). Binary files are recognised by their content, not their name.
FORMAT_NOTES = {
    ".jsonl": 'JSON Lines: the "text" field of each record',
    ".json": "JSON: a list of strings (or of records with a \"text\" field)",
    ".ipynb": "Jupyter notebook: the cells' source, not the JSON around it",
}
#: What the file dialogs offer first; every file is accepted.
TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".ipynb", ".py", ".rst", ".html", ".csv")
#: Bytes read to recognise a binary file before the whole file is read.
SNIFF_BYTES = 8192
#: The streams this process writes (file descriptor, name), which may be files in a calibration folder.
OUTPUT_STREAMS = ((1, "standard output"), (2, "standard error"))
#: File signatures (magic bytes) → what the file is, for the sentence that says why it is skipped. Other binary
#: files (programs, pickles, audio...) hold NUL bytes early, or do not decode.
_MAGIC = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF89a", "a GIF image"),
    (b"GIF87a", "a GIF image"),
    (b"PK\x03\x04", "a zip archive (also .docx, .xlsx, .epub and PyTorch checkpoints)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"GGUF\x03\x00\x00\x00", "a GGUF model file"),
    (b"GGUF\x02\x00\x00\x00", "a GGUF model file"),
    (b"\x7fELF", "a program (ELF)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
)
#: The most calibration text one job reads, in bytes: some 8 M tokens, well over a hundred times what the largest
#: preset samples (128 × 512 tokens and 64 held-out windows). Tokenising keeps a Python list of ids, about 28
#: bytes of memory per byte of text at this size (20 MB of text took 560 MB more): a file of several GB read
#: whole was killed for want of memory, with no sentence. Text past it is left out, and the job says so.
MAX_TEXT_BYTES = 32_000_000
#: How the note begins where the calibration text gives fewer samples than asked (the job's warnings; the window
#: keeps it under the calibration list until the list changes).
SAMPLES_SHORT = "The calibration text gives only"
#: Share of the calibration tokens held out for perplexity when no separate evaluation text is given.
DEFAULT_HELDOUT_FRACTION = 0.2
#: Rough characters per token, for estimates shown before a tokenizer is loaded.
CHARS_PER_TOKEN = 4.0
BUILTIN_CORPUS = "builtin"
#: Shown before the corpus is built (building it imports some 90 modules); a test keeps it honest.
BUILTIN_TOKENS_ESTIMATE = 155_000


@dataclass
class TextSet:
    """Texts read from the user's files, and what was skipped and why."""

    texts: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one sentence per skipped file


@dataclass
class TokenSet:
    """Token samples for scoring and token windows for perplexity, as plain lists of ids."""

    samples: list[list[int]]  # each at most seq_len long; shorter ones are padded in batches
    eval_windows: list[list[int]]
    seq_len: int
    bos_id: int | None  # prepended to every sample and window (consistent BOS handling)
    pad_id: int

    @property
    def sample_tokens(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def eval_tokens(self) -> int:
        return sum(len(w) for w in self.eval_windows)


# ------------------------------------------------------------------------------------------------- reading


def _hidden(path: Path, root: Path) -> bool:
    """Dot files and folders, and Python's ``__pycache__`` (compiled bytecode), are not the user's text."""
    return any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts)


#: What a saved model's folder holds beside its card: only a README.md beside one of them is opened to look for it.
_MODEL_FILES = ("config.json", ".gguf", ".safetensors")


def saved_models_within(files: Sequence[Path]) -> set[Path]:
    """The folders among ``files`` that hold a model this app saved (its model card beside its weights or config):
    ``--calib . --out pruned`` put the model among the texts, and the next job read its card as calibration text."""
    from ..formats.output_folder import card_written_here

    holders = {f.parent for f in files if f.name == _MODEL_FILES[0] or f.suffix in _MODEL_FILES[1:]}
    return {f.parent for f in files if f.name == "README.md" and f.parent in holders and card_written_here(f)}


def collect_files(paths: Iterable[str | Path], left_out: list[str] | None = None,
                  what: str = "calibration") -> list[Path]:
    """Files under the given paths (folders recursively, hidden files left out), sorted, unique. Also left out, each
    with a sentence in ``left_out``: the folders of models this app saved (:func:`saved_models_within`), and a file
    this run writes its output to (:func:`own_output`). ``what``: the text's name where a path is refused
    ("evaluation" for ``--eval-text``, which /dev/null was refused as "the calibration path").

    Every file is returned whatever its ending: what is text is decided by its content when it is read
    (:func:`texts_from_file`).
    """
    found: list[Path] = []
    notes: list[str] = []
    for raw in paths:
        path = expand_home(raw)
        if not exists(path):  # a name too long to look up: a traceback, now said by not_there
            raise CalibrationError(f"The {what} path {path} {not_there(path)}.")
        if path.is_dir():
            files, odd, hidden = [], [], 0
            for p in path.rglob("*"):
                if _hidden(p, path):
                    hidden += p.is_file()
                    continue
                if p.is_file():
                    files.append(p)
                elif not p.is_dir():  # a pipe, a device, a socket, a link to nowhere or to itself: left out unsaid
                    odd.append(p)
            files.sort()
            if hidden and not files:  # "no files were found in notes" of a folder holding .notes.txt (a walkthrough)
                them = "it" if hidden == 1 else "them"
                notes.append(f"Left out {counted(hidden, 'hidden file')} in {path}: names that start with a dot (and "
                             f"__pycache__) are not read as text; rename {them} to use {them}.")
            notes += [f"Left out {p}: it is not a regular file (a pipe, a device, or a link to nothing)."
                      for p in sorted(odd)]
            models = saved_models_within(files)
            notes += [f"Left out {m.resolve()}: it holds a model this app saved, not text." for m in sorted(models)]
            found += [p for p in files if models.isdisjoint(p.parents)]
        elif path.is_file():
            found.append(path)
        else:  # reading a pipe or a terminal waits for a writer that may never come
            raise CalibrationError(f"The {what} path {path} is not a file (a pipe or a device); give text "
                                   "files or folders.")
    unique: dict[Path, None] = {}
    for p in found:
        stream = own_output(p)
        if stream is None:
            unique.setdefault(p.resolve(), None)
        else:
            notes.append(f"Skipped {p.resolve()}: this run writes its {stream} to it.")
    if left_out is not None:
        left_out += [note for note in dict.fromkeys(notes) if note not in left_out]  # each said once
    return list(unique)


def binary_kind(head: bytes) -> str | None:
    """Why the first bytes of a file show it is not text ("a PDF document", "binary data"), or None."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors model file"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or bomless_utf16(head):
        return None  # UTF-16 text has NUL bytes
    if b"\x00" in head:
        return "binary data"
    return None


def bomless_utf16(data: bytes) -> str | None:
    """``"utf-16-le"`` or ``"utf-16-be"`` for UTF-16 text saved without a BOM (Windows tools and PowerShell's
    ``Out-File`` write it): mostly Latin script, so every other byte is NUL and the rest are not. Such text was
    "binary data". None otherwise."""
    sample = data[:8192]
    sample = sample[: len(sample) - len(sample) % 2]
    if len(sample) < 16:
        return None
    for codec, zeros, others in (("utf-16-le", sample[1::2], sample[0::2]), ("utf-16-be", sample[0::2], sample[1::2])):
        if zeros.count(0) >= 0.9 * len(zeros) and others.count(0) <= 0.1 * len(others):
            try:
                text = sample.decode(codec)
            except UnicodeDecodeError:
                continue
            spaces = sum(ch in " \t\r\n" for ch in text)
            printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
            # words between spaces, and more than a few letters: b"\x00\xff" * 500 reads as "ÿÿÿ…", not as text
            if printable >= 0.95 * len(text) and spaces >= 0.03 * len(text) and len(set(text)) >= 10:
                return codec
    return None


def sniff(path: Path) -> str | None:
    """Why ``path`` is not text, from its first few kilobytes only (None when it may be text)."""
    with open(path, "rb") as handle:
        return binary_kind(handle.read(SNIFF_BYTES))


def format_note(path: Path) -> str | None:
    """How a file of this ending is read, where it is not plain text taken as it is."""
    return FORMAT_NOTES.get(path.suffix.lower())


def decode_bytes(data: bytes) -> str | None:
    """UTF-8 (with or without BOM), UTF-16 or UTF-32 with BOM, else a legacy 8-bit encoding; None for binary
    data (:func:`decode_text`'s text)."""
    return decode_text(data)[0]


def decode_text(data: bytes) -> tuple[str | None, bool]:
    """:func:`decode_bytes`' text, and whether it was read as Windows-1252, the legacy fallback. UTF-32's
    little-endian BOM begins with UTF-16's, so it is looked for first (read as UTF-16, every other character was a
    NUL)."""
    for boms, codec in (((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"), "utf-32"), ((b"\xff\xfe", b"\xfe\xff"), "utf-16")):
        if data.startswith(boms):
            try:
                return data.decode(codec), False
            except UnicodeDecodeError:
                return None, False
    if b"\x00" in data[:8192]:
        codec = bomless_utf16(data)
        return (data.decode(codec, errors="replace") if codec else None), False
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        pass
    # UTF-8 with a stray byte, or cut in the middle of a character (``head -c``): where the text's other non-ASCII
    # characters are UTF-8, only the bad bytes are replaced (read as cp1252, every other character turned to
    # mojibake, "Café" to "CafÃ©"). Legacy text has no valid multi-byte sequences to speak for UTF-8.
    mostly = data.decode("utf-8-sig", errors="replace")
    bad = mostly.count("\ufffd")
    valid = sum(1 for ch in mostly if ord(ch) > 127 and ch != "\ufffd")
    if bad and valid >= bad:
        log.info("%s that %s not UTF-8 replaced in otherwise UTF-8 text", counted(bad, "byte sequence"),
                 in_number(bad, "is", "are"))
        return mostly, False
    # Legacy 8-bit text: cp1252 covers Windows Western text; control bytes betray binary content.
    sample = data[:65536]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if controls > len(sample) * 0.01:
        return None, False
    return data.decode("cp1252", errors="replace"), True


def reads_as_another_encoding(text: str) -> bool:
    """Whether text read as Windows-1252 looks like text of another legacy encoding (Shift-JIS, GBK, EUC-KR, Big5,
    Windows-1251…): more than 30% of its characters came out above ASCII, where Western text has a few accented
    letters. Such text was read as gibberish without a word (a walkthrough); no guess is made of which encoding it
    is."""
    sample = [ch for ch in text[:65536] if not ch.isspace()]
    return len(sample) >= 20 and sum(ord(ch) > 127 for ch in sample) > 0.3 * len(sample)


def texts_from_file(path: Path, notes: list[str] | None = None, limit: int | None = None) -> list[str]:
    """The texts in one file; raises ValueError (with a reason) when it cannot be used.

    Records left out of a usable file (JSON Lines without a ``text`` field, or lines that are not JSON) are counted
    in ``notes``. ``limit``: the most bytes read, cut back to the last whole line (a JSON or notebook file is one
    document: refused).
    """
    kind = sniff(path)
    if kind is not None:
        raise ValueError(f"it is {kind}, not text")
    with open(path, "rb") as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        # what is left of the text a job reads, where other files took some ("larger than the 480 B of text a job
        # reads" named no limit of the tool's)
        room = human_bytes(limit) + (f" left of the {human_bytes(MAX_TEXT_BYTES)}" if limit < MAX_TEXT_BYTES else "")
        if path.suffix.lower() in (".json", ".ipynb"):
            raise ValueError(f"it is one JSON document larger than the {room} of text a job reads")
        if path.suffix.lower() == ".jsonl" and b"\n" not in data[:limit]:  # its first record, cut, was "not JSON"
            raise ValueError(f"its first record is larger than the {room} of text a job reads")
        data = data[: data.rfind(b"\n", 0, limit) + 1] or data[:limit]
    text, legacy = decode_text(data)
    if text is None:
        raise ValueError("it looks binary (it does not decode as text)")
    if legacy and notes is not None and reads_as_another_encoding(text):
        notes.append(f"{path} is not UTF-8, and read as Windows-1252 much of it comes out as gibberish (accented "
                     "letters and symbols): if it is in another encoding (Shift-JIS, GBK, EUC-KR, Big5, "
                     "Windows-1251…), save it as UTF-8.")
    # Line ends as Python's text files read them: the same text saved on Windows (Notepad, git's autocrlf) gave
    # other tokens, so other scores and possibly other layers, than on Linux.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    suffix = path.suffix.lower()
    if suffix == ".ipynb":
        return _notebook_cells(text)
    if suffix == ".jsonl":
        out = []
        dropped = 0
        broken: list[int] = []  # lines that are not JSON: a record cut by a download or `head -c`, a stray line
        # Records end at "\n" only: splitlines() also splits at U+2028, U+2029 and U+0085, which JSON strings may
        # hold unescaped (scraped text often does), and dropped the whole file as "not JSON".
        last = 0  # the last line with anything on it
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            last = number
            try:
                record = _json(line)
            except json.JSONDecodeError:
                broken.append(number)
                continue
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                out.append(record["text"])
            elif isinstance(record, str):
                out.append(record)
            else:
                dropped += 1
        if not out:
            raise ValueError(f"line {broken[0]} is not JSON" if broken else 'it has no records with a "text" field')
        within = [n for n in broken if n != last]  # a last record cut short (a stopped download) is no sign
        if len(within) >= len(out) + dropped:
            # one bad record no longer loses the file's others; a file with as many lines not JSON as JSON records is
            # not JSON Lines (prose saved as .jsonl whose one quoted line parsed), refused as before
            lines = len(broken) + len(out) + dropped
            raise ValueError(f"{len(broken)} of its {lines} lines are not JSON (the first: line {broken[0]}): it is "
                             "not JSON Lines")
        if dropped and notes is not None:
            notes.append(f'Left out {dropped} line{"s" if dropped != 1 else ""} of {path} without a "text" field.')
        if broken and notes is not None:
            lines = ", ".join(map(str, broken[:5])) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
            notes.append(f'Left out {len(broken)} line{"s" if len(broken) != 1 else ""} of {path} that '
                         f'{"is" if len(broken) == 1 else "are"} not JSON (line{"s" if len(broken) != 1 else ""} '
                         f"{lines}).")
        return out
    if suffix == ".json":
        try:
            value = _json(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"it is not valid JSON ({exc.msg})") from None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, list) and all(isinstance(v, dict) and isinstance(v.get("text"), str) for v in value):
            return [v["text"] for v in value]
        if isinstance(value, dict) and "n_layers" in value and "scores" in value:
            # an exported scores file dropped on the calibration list read as a JSON of the wrong shape
            raise ValueError("it is a report of this app (layer scores), not text; the window's File → Import "
                             "scores… reads it")
        raise ValueError("it is not a JSON list of strings")
    return [text]


def _json(text: str) -> Any:
    """``json.loads``, with nesting too deep for Python's parser (RecursionError, a traceback) made a decode error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def _notebook_cells(text: str) -> list[str]:
    """A Jupyter notebook's cells (code and Markdown), without the JSON, outputs and metadata around them."""
    try:
        notebook = _json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not a valid notebook ({exc.msg})") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ValueError("it is not a Jupyter notebook (no cells)")
    out = []
    for cell in cells:
        source = cell.get("source") if isinstance(cell, dict) else None
        # a list of lines; what is not text in it (a hand-edited or broken notebook) is left out, not a TypeError
        joined = "".join(line for line in source if isinstance(line, str)) if isinstance(source, list) else source
        if isinstance(joined, str) and joined.strip():
            out.append(joined)
    return ["\n\n".join(out)] if out else []


def own_output(path: Path) -> str | None:
    """The name of this process's stream (standard output or error) that is written to ``path``, or None.
    ``shortgpt score m --calib . > log.txt 2> err.txt`` read err.txt as calibration text: it held the job's own
    notes by the time the text was read (it was empty, and said skipped, when the text was checked)."""
    try:
        file = path.stat()
    except OSError:
        return None
    if not file.st_ino:  # a file system that gives no file numbers: every file would match
        return None
    for descriptor, name in OUTPUT_STREAMS:
        try:
            stream = os.fstat(descriptor)
        except OSError:  # closed, or no console (a windowed app on Windows)
            continue
        if stat.S_ISREG(stream.st_mode) and (stream.st_dev, stream.st_ino) == (file.st_dev, file.st_ino):
            return name
    return None


def read_texts(paths: Iterable[str | Path], what: str = "calibration") -> TextSet:
    """Read every usable file; binary and unreadable ones are skipped with a warning that names them (``what``: as
    :func:`collect_files`').

    Past :data:`MAX_TEXT_BYTES` text is left out, the smallest files read first: in the order of their names, a
    50 MB file that sorted first took the whole budget and the 2,000 files beside it were left out, unnamed (a
    walkthrough). The texts stay in the order of their names.

    The notes are returned (``skipped``), not logged: the front end says them once. Logged here as well, one Score in
    the window logged each four times (the calibration list's read, the job's check, its tokenising and the end of
    the job)."""
    result = TextSet()
    budget = MAX_TEXT_BYTES
    notes: list[str] = []
    files = collect_files(paths, notes, what)
    result.skipped += notes
    sizes = [size_of(path) for path in files]
    read: dict[int, tuple[list[str], list[str]]] = {}  # file → its texts and its notes
    left_out: list[Path] = []
    for index in sorted(range(len(files)), key=lambda i: (sizes[i], i)):
        path, size = files[index], sizes[index]
        if budget <= 0 or (size > budget and size <= MAX_TEXT_BYTES and path.suffix.lower() in (".json", ".ipynb")):
            left_out.append(path)  # a JSON document is read whole or not at all: one that fits a job is left out
            continue
        said: list[str] = []
        try:
            texts = [t for t in texts_from_file(path, said, budget if size > budget else None) if t.strip()]
        except (OSError, ValueError) as exc:  # a ValueError is texts_from_file's reason (binary, …)
            why = f"it cannot be read ({os_reason(exc)})" if isinstance(exc, OSError) else str(exc)
            said.append(f"Skipped {path}: {why}.")
            read[index] = ([], said)
            continue
        if not texts:
            said.append(f"Skipped {path}: it is empty.")
        elif size > budget:
            said.append(f"Read the first {human_bytes(budget)} of {path} ({human_bytes(size)}): " + _reads_at_most())
        if texts:
            budget -= min(size, budget)
        read[index] = (texts, said)
    for index in sorted(read):
        texts, said = read[index]
        result.skipped += said
        if texts:
            result.texts += texts
            result.files.append(files[index])
    if left_out:
        left_out.sort()
        named = ", ".join(str(p) for p in left_out[:3]) + (", …" if len(left_out) > 3 else "")
        result.skipped.append(f"Left out {len(left_out)} more file{'s' if len(left_out) != 1 else ''} ({named}): "
                              + _reads_at_most())
    return result


def size_of(path: Path) -> int:
    """A file's size, 0 where it cannot be read (reading it says why)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _reads_at_most() -> str:
    """Why text was left out (MAX_TEXT_BYTES read when said)."""
    return f"a job reads at most {human_bytes(MAX_TEXT_BYTES)} of text, far more than it samples."


def text_files(path: str | Path) -> list[Path]:
    """The files of a file or folder that may be text (their first bytes are not binary)."""
    usable = []
    for file in collect_files([path]):
        try:
            if sniff(file) is None:
                usable.append(file)
        except OSError:
            continue
    return usable


def estimate_tokens(path: str | Path) -> int:
    """A quick token estimate for a file or folder's text files (bytes / 4), shown before a tokenizer loads."""
    return int(sum(p.stat().st_size for p in text_files(path)) / CHARS_PER_TOKEN)


# ------------------------------------------------------------------------------------------ built-in corpus

_BUILTIN_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.server", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "math", "mimetypes", "numbers",
    "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "pprint", "queue", "random", "re",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket", "socketserver",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "types", "typing", "unittest", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "xml.dom.minidom", "zipfile", "zoneinfo",
)


def builtin_corpus() -> list[str]:
    """English prose that is already on every machine: the docstrings of Python's standard library.

    No network and nothing copied into the project: the interpreter running this code carries these texts (a
    frozen app too, since docstrings are kept). About 630 k characters, some 150 k tokens; the same whatever
    else was imported first.
    """
    import importlib
    import inspect

    texts: list[str] = []
    for name in _BUILTIN_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module missing from a minimal interpreter is simply left out
            continue
        docs = [inspect.getdoc(module)]
        for attr in sorted(vars(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            docs.append(inspect.getdoc(obj))
            if inspect.isclass(obj):
                for member in sorted(vars(obj)):
                    value = getattr(obj, member, None)
                    # Other libraries add methods to stdlib classes (transformers: Logger.warning_once);
                    # only the module's own members keep the corpus the same whatever was imported first.
                    if not member.startswith("_") and getattr(value, "__module__", module.__name__) == module.__name__:
                        docs.append(inspect.getdoc(value))
        body = "\n\n".join(d for d in docs if d and len(d) > 80)
        if body:
            texts.append(body)
    return texts


# ---------------------------------------------------------------------------------------------- tokenising


def bos_policy(tokenizer: Any) -> int | None:
    """The BOS id to prepend to every window: the one the tokenizer itself adds to plain text, else none.

    This follows how the model was trained: Llama/Gemma tokenizers add BOS (Gemma is unusable without it),
    GPT-2 style ones do not. The same rule applies to the original and the pruned model.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except Exception:
        return None
    return bos if ids and ids[0] == bos else None


#: Characters tokenised at a time (a progress report after each).
TOKENIZE_CHUNK = 200_000
#: ``on_text(characters, chars_in_all)``: how far tokenising is (a 40 MB text took 41 s without a word).
TextProgress = Callable[[int, int], None]


def tokenize_stream(tokenizer: Any, texts: Sequence[str], on_text: TextProgress | None = None,
                    before: int = 0, in_all: int | None = None, enough: int | None = None) -> list[int]:
    """All texts as one token stream, documents separated by a blank line, no special tokens. ``on_text`` hears
    the characters done after each chunk, counted from ``before`` out of ``in_all`` (default: these texts').

    ``enough``: stop once the stream holds at least so many tokens (the rest of the text is not tokenised). Each
    chunk is tokenised on its own, so the tokens kept are the first ones of the whole stream, exactly."""
    ids: list[int] = []
    end = before + text_length(texts)
    in_all = in_all if in_all is not None else end
    done = before
    for chunk in _chunks(texts, TOKENIZE_CHUNK):
        ids += tokenizer(chunk, add_special_tokens=False)["input_ids"]
        done = min(done + len(chunk), end)  # a chunk counts the blank lines put between documents too
        through = enough is not None and len(ids) >= enough  # what is left is not needed
        if on_text is not None:
            on_text(end if through else done, in_all)
        if through:
            break
    return ids


def text_length(texts: Sequence[str]) -> int:
    """The texts' characters, what :func:`tokenize_stream` counts through (the blank lines it puts between
    documents are not counted)."""
    return sum(len(text) for text in texts)


def _chunks(texts: Sequence[str], size: int) -> Iterable[str]:
    """Join documents with blank lines and cut into pieces of about ``size`` chars at paragraph breaks; a paragraph
    longer than ``size`` is cut at the end of a line past it (WikiText's files have no blank line at all: a 40 MB one
    went to the tokenizer whole, 41 s without a progress report), a line longer than ``size`` before a space past it
    (the next piece starts with the space, as its word's token does), and a run of ``size`` chars without a space at
    ``size`` (a 50 MB text of one line went whole: a minute without a report, and Ctrl-C waited for it). Joined, the
    pieces are the documents."""
    last: tuple[str, str] | None = None
    for piece, separator in _pieces(texts, size):
        if last is not None:
            yield last[0] + last[1]
        last = (piece, separator)
    if last is not None:  # the blank line after the last piece would come before nothing: it was tokenised too
        yield last[0]


def _pieces(texts: Sequence[str], size: int) -> Iterable[tuple[str, str]]:
    """:func:`_chunks`' pieces, each with the blank line that follows it where one does (``"\n\n"`` or "")."""
    buffer: list[str] = []
    length = 0
    for text in texts:
        for para in text.split("\n\n"):
            while len(para) > size:
                cut = para.find("\n", size) + 1  # just after a line break: the next piece starts a line
                if cut <= 0:
                    line_end = para.find("\n")
                    if 0 <= line_end < size:  # lines shorter than a piece: cut after the last line break before it
                        cut = para.rfind("\n", 0, size) + 1
                    else:
                        space = para.find(" ", size, 2 * size)
                        cut = space if space > 0 else size
                if cut <= 0 or cut >= len(para):
                    break
                buffer.append(para[:cut])
                yield "\n\n".join(buffer), ""
                buffer, length, para = [], 0, para[cut:]
            buffer.append(para)
            length += len(para) + 2
            if length >= size:
                yield "\n\n".join(buffer), "\n\n"
                buffer, length = [], 0
    if buffer:
        yield "\n\n".join(buffer), ""


#: Fewest tokens of calibration text a job scores on.
MIN_TOKENS = 16


def surely_too_short(texts: Sequence[str], held_out: bool) -> str | None:
    """The sentence for calibration text too short whatever the tokenizer (None where it may be long enough):
    a tokenizer gives about one token per UTF-8 byte at most (a byte-fallback newline can take two; at this
    size that never decides it). ``held_out``: a share of the text will be held
    out for the perplexity check (no evaluation text given). Said before the model loads; the exact count is
    checked when the text is tokenized."""
    size = sum(len(t.encode("utf-8")) for t in texts)
    if size * (1 - DEFAULT_HELDOUT_FRACTION if held_out else 1) < MIN_TOKENS:
        return f"The calibration text is too short ({size} bytes); give at least a few paragraphs."
    return None


def build_token_set(
    tokenizer: Any,
    calib_texts: Sequence[str],
    eval_texts: Sequence[str] | None = None,
    samples: int = 128,
    seq_len: int = 512,
    seed: int = 0,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    max_eval_windows: int = 64,
    on_text: TextProgress | None = None,
) -> TokenSet:
    """Cut scoring samples and perplexity windows; deterministic for a given seed.

    Without separate evaluation text, the last ``heldout_fraction`` of the calibration token stream is held
    out for perplexity and the samples are drawn only from the part before it.
    """
    if samples < 1 or seq_len < defaults.MIN_SEQ_LEN:
        raise CalibrationError(f"Use at least 1 sample and a sequence length of at least {defaults.MIN_SEQ_LEN} "
                               "tokens.")
    if not calib_texts or not any(t.strip() for t in calib_texts):
        raise CalibrationError("The calibration text is empty: add text files or use the built-in corpus.")
    bos = bos_policy(tokenizer)
    body_len = seq_len - (1 if bos is not None else 0)
    calib_length = text_length(calib_texts)
    in_all = calib_length + (text_length(eval_texts) if eval_texts is not None else 0)
    stream = tokenize_stream(tokenizer, calib_texts, on_text, 0, in_all)
    if eval_texts is not None:
        # Only the first ``max_eval_windows`` windows are measured: a long evaluation text (a 40 MB corpus) was
        # tokenised whole, about 20 s on this CPU, for the first few hundred kB.
        eval_stream = tokenize_stream(tokenizer, eval_texts, on_text, calib_length, in_all,
                                      enough=max_eval_windows * body_len)
        if not eval_stream:
            raise CalibrationError("The evaluation text is empty.")
        score_stream = stream
    else:
        cut = int(len(stream) * (1 - heldout_fraction))
        score_stream, eval_stream = stream[:cut], stream[cut:]
    if len(score_stream) < MIN_TOKENS:
        raise CalibrationError(
            f"The calibration text is too short ({len(stream)} tokens); give at least a few paragraphs."
        )
    chunks = [score_stream[i : i + body_len] for i in range(0, len(score_stream), body_len)]
    chunks = [c for c in chunks if len(c) >= min(body_len, 16)]
    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(chunks)), min(samples, len(chunks))))
    prefix = [bos] if bos is not None else []
    sample_ids = [prefix + chunks[i] for i in picked]
    windows = [prefix + eval_stream[i : i + body_len] for i in range(0, len(eval_stream), body_len)]
    windows = [w for w in windows if len(w) - len(prefix) >= 2][:max_eval_windows]
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None) or 0
    return TokenSet(sample_ids, windows, seq_len, bos, int(pad))


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, device: str | Any = "cpu") -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for token lists of different lengths."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)
