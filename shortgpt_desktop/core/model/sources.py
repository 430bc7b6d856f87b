"""What the user typed (a folder, a ``.gguf`` file or a Hub id) → local files, checked before anything loads."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from shortgpt_desktop.core.formats.gguf_reader import SPLIT_GGUF, check_gguf
from shortgpt_desktop.core.formats.safetensors_reader import check_safetensors

from ...format import counted, in_number, some_of
from ..errors import Cancelled, HubError, HubModelNotFound, ModelSourceError
from ..user_paths import expand_home, not_there, os_reason

#: (bytes_done, bytes_total) while a Hub download runs.
DownloadProgress = Callable[[int, int], None]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: A model's licence texts, which its licence may require to travel with any copy (Gemma's terms, Llama's use
#: policy): a Hub download fetches them and the writer copies them (``formats.output_folder.model_own_files``); the
#: card's ``license_link: LICENSE`` points to the first.
LICENCE_FILES = ("LICENSE", "LICENSE.*", "LICENCE", "LICENCE.*", "NOTICE", "NOTICE.*", "USE_POLICY.*")
#: What a Hub download fetches: config, tokenizer, weights, and the model card and licence texts (README.md: the
#: licence the pruned copy's card carries over). ``.bin`` only when there is no safetensors.
_HUB_BASE_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja", "tokenizer*", "*.tiktoken", "README.md",
                      *LICENCE_FILES]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def file_stamp(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """A file's real path, size and modification time: what a cache of something read from it is keyed on, so that
    a file rewritten in place (a folder converted again) is read again. OSError where it is gone."""
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


def weights_stamp(source: ModelSource) -> tuple[tuple[str, int, int], ...]:
    """:func:`file_stamp` of each file holding the model's weights (its GGUF, or its checkpoint files): what a cache
    of something read from the weights is keyed on, and how a change on disk after loading is noticed. OSError where
    one is gone."""
    paths = [source.folder / source.gguf_file] if source.gguf_file else [w.path for w in source.weight_files]
    return tuple(file_stamp(path) for path in paths)


@dataclass
class WeightFile:
    path: Path
    format: str  # "safetensors" | "bin" | "gguf"
    size: int


@dataclass
class ModelSource:
    """A model on local disk, ready to be loaded."""

    spec: str  # what the user typed
    kind: str  # "folder" | "gguf" | "hub"
    folder: Path  # the folder holding config (or the .gguf)
    gguf_file: str | None = None  # file name inside ``folder`` for a GGUF source
    weight_files: list[WeightFile] = field(default_factory=list)
    revision: str | None = None
    #: A Hub model's id: ``spec`` may be its page's address (``https://huggingface.co/org/name/tree/dev``, which the
    #: window keeps as typed so that it opens that revision again), and the title, the suggested folder and the card
    #: named the model "dev".
    repo_id: str | None = None

    @property
    def display_name(self) -> str:
        if self.kind == "hub":
            return self.repo_id or self.spec
        return self._snapshot_id or Path(self.spec).name or self.spec

    @property
    def in_hub_cache(self) -> str | None:
        """The Hub id of the cache a model opened by its path lies in (``…/models--org--name/snapshots/COMMIT/``,
        a folder picked in ``~/.cache/huggingface``), else None: the title, the suggested name and folder of a save
        named the model by its commit hash and offered a folder inside the cache, beside its snapshots."""
        return self._cache_id if self.kind != "hub" else None

    @property
    def _snapshot_id(self) -> str | None:
        """:attr:`in_hub_cache` where the model's folder is a snapshot itself, not a GGUF in it: its name is a commit
        hash, and the id names it (a folder inside a snapshot, or a GGUF file, has a name of its own)."""
        return self.in_hub_cache if self.gguf_file is None and self.folder.parent.name == "snapshots" else None

    @property
    def _cache_id(self) -> str | None:
        """The id the Hub cache folder the model lies in holds (:attr:`hub_cache_folder`), else None."""
        folder = self.hub_cache_folder
        return _hub_id_of(folder.name) if folder is not None else None

    @property
    def hub_cache_folder(self) -> Path | None:
        """The Hub cache's folder of the model (``models--org--name``, holding ``snapshots/`` and the ``blobs/`` its
        files link to), where it lies in one, opened by its id or its path; else None."""
        return hub_cache_holding(self.folder)

    @property
    def hub_cache_behind_links(self) -> Path | None:
        """:attr:`hub_cache_folder`, or the one the model's folder lies in once its links are followed (a link to a
        snapshot, ``~/models/qwen -> …/snapshots/abc``): what no output may go into (through the link, the output
        was let into the cache). Not the model's name: one opened through a link of the user's keeps the link's."""
        found = self.hub_cache_folder
        if found is None:
            with suppress(OSError, RuntimeError):  # a link loop, a folder one may not enter: as written
                found = hub_cache_holding(self.folder.resolve())
        return found

    @property
    def cached_id(self) -> str | None:
        """A Hub model's id as its cache folder spells it (``models--org--name/snapshots/COMMIT``), else None: the Hub
        and its cache find an id whatever its capitals, and the card named ``SomeOrg/Tiny`` as typed."""
        return self._cache_id if self.kind == "hub" else None

    def as_cached(self, model: str) -> str:
        """``model`` as the Hub cache spells it (:attr:`cached_id`) where the two differ only in capitals, else as
        given: ``SomeOrg/Tiny`` typed opens ``someorg/tiny``, and the report and the card named it as typed."""
        cached = self.cached_id
        return cached if cached is not None and cached.lower() == model.lower() else model

    @property
    def card_name(self) -> str:
        """What the card calls the model: :meth:`as_cached` of the name it was given by (a Hub model's id; a folder in
        the Hub cache, by the id it is cached under: the card named it by its commit hash)."""
        return self.as_cached(self.repo_id or self._snapshot_id or self.spec)

    @property
    def location(self) -> Path:
        """Where the model lies, as a sentence names it: the ``.gguf`` file itself, or the model's folder (a GGUF's
        folder is wherever it was saved, ~/Downloads say, and "the model in Downloads" named no model)."""
        return self.folder / self.gguf_file if self.gguf_file else self.folder

    @property
    def bytes_on_disk(self) -> int:
        return sum(w.size for w in self.weight_files)

    @property
    def weight_format(self) -> str:
        return self.weight_files[0].format if self.weight_files else "none"


#: Endings that make a name a file path, never a Hub id (a mistyped ``models/nope.gguf`` is "does not exist").
_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".pt", ".pth", ".txt")


def looks_like_hub_id(spec: str) -> bool:
    """``org/name`` that is not a path: no file ending, no drive or home prefix, and no local folder ``org``."""
    if not _HUB_ID.match(spec) or spec.startswith((".", "/", "~")) or "\\" in spec:
        return False
    if spec.lower().endswith(_FILE_SUFFIXES) or Path(spec).exists():
        return False
    return not Path(spec.split("/", 1)[0]).is_dir()


def resolve(
    spec: str,
    revision: str | None = None,
    progress: DownloadProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ModelSource:
    """Turn a path or Hub id into a checked :class:`ModelSource`; downloads from the Hub when needed."""
    spec = str(spec).strip()
    if not spec:
        raise ModelSourceError("No model given: choose a model folder, a .gguf file or a Hugging Face Hub id.")
    try:
        local = _local_source(spec)
    except OSError as exc:  # a folder one may not enter, a file one may not read
        raise ModelSourceError(f"{spec} cannot be read ({os_reason(exc)}); choose a model you can open.") from None
    if local is not None:
        return local
    hub_file = hub_file_of(spec, revision)
    if hub_file is not None:  # a GGUF file's page on the Hub: that one file, where the id alone was refused
        repo_id, revision, filename = hub_file
        split = SPLIT_GGUF.match(PurePosixPath(filename).name)
        if split is not None:  # one part of tens of GB was downloaded, then refused as a part (a review)
            raise ModelSourceError(
                f"{PurePosixPath(filename).name} is part {int(split['no'])} of {int(split['count'])} of a split GGUF "
                "model, which opens only merged into one file: download every part, merge them (llama.cpp's "
                "llama-gguf-split --merge) and choose that file, or choose a quantization of one file.")
        path = hub_download(repo_id, revision=revision, progress=progress, cancel=cancel, filename=filename)
        source = _gguf_source(path, spec)
        source.revision, source.repo_id = revision, repo_id
        return source
    repo_id, revision = hub_id_of(spec, revision)
    if looks_like_hub_id(repo_id):
        try:
            folder = hub_download(repo_id, revision=revision, progress=progress, cancel=cancel)
        except HubModelNotFound as exc:  # a local path typed wrong (models/llama) was told only of the Hub
            raise HubModelNotFound(f"{str(exc).rstrip('.')} ({spec} is not a folder or file on this computer "
                                   "either).") from None
        source = _folder_source(folder, spec)  # named as given: the front ends give the id itself (hub_id_of)
        source.kind = "hub"
        source.revision, source.repo_id = revision, repo_id
        return source
    bare = spec.rstrip("/")
    if bare != spec and looks_like_hub_id(bare):  # an id copied with its slash: read as a folder, and said so
        raise ModelSourceError(f"{spec} does not exist as a folder; as a Hub id, give it without the slash: {bare}.")
    raise ModelSourceError(f"{spec} does not exist: give a model folder, a .gguf file or a Hub id like org/name.")


#: A model's Hub page as a browser shows it: ``https://huggingface.co/org/name``, ``hf.co/org/name/tree/dev``.
_HUB_PAGE = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<kind>datasets/|spaces/)?"
                       r"(?P<id>[^/\s?#]+/[^/\s?#]+)(?:/(?:tree|blob|resolve)/(?P<revision>[^/\s?#]+))?[^\s]*$",
                       re.IGNORECASE)


#: A file's page or download address on the Hub: ``https://huggingface.co/org/name/blob/main/x-Q4_K_M.gguf`` (or
#: ``/resolve/…``, ``?download=true``), as a browser copies it from a GGUF repo's file list.
_HUB_FILE = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<id>[^/\s?#]+/[^/\s?#]+)"
                       r"/(?:blob|resolve)/(?P<revision>[^/\s?#]+)/(?P<file>[^\s?#]+\.gguf)(?:[?#]\S*)?$",
                       re.IGNORECASE)


def hub_file_of(spec: str, revision: str | None) -> tuple[str, str | None, str] | None:
    """(Hub id, revision, file) of a GGUF file's address on the Hub, else None. ``main`` is the default branch;
    a revision given on its own goes with it (:func:`one_revision`)."""
    found = _HUB_FILE.match(spec)
    if found is None:
        return None
    from urllib.parse import unquote

    asked = one_revision(spec, revision, unquote(found["revision"]))
    return found["id"], None if asked == "main" else asked, unquote(found["file"])


def one_revision(spec: str, given: str | None, in_address: str | None) -> str | None:
    """The revision to open: the one ``spec``'s address names (``in_address``) or the one ``given`` on its own
    (``--revision``), which may stand beside the ``main`` a copied file link carries. Two different ones are refused:
    ``--revision v1`` beside an address pinned at a commit opened v1 without a word (a review)."""
    if given and in_address and in_address != "main" and given != in_address:
        raise ModelSourceError(f"{spec} names revision {in_address} and --revision says {given}: give one of them.")
    return given or in_address


_HUB_ID_AT = re.compile(r"^(?P<id>[A-Za-z0-9][\w.-]*/[\w.-]+)@(?P<revision>[\w./-]+)$")


def hub_id_of(spec: str, revision: str | None) -> tuple[str, str | None]:
    """The Hub id (and revision) in a pasted page address (``https://huggingface.co/org/name/tree/dev`` → ``org/name``,
    ``dev``) or in ``org/name@dev``; ``spec`` as it is otherwise (``org/name/`` too: a path with a slash after it
    that does not exist is a folder typed wrong, not looked up on the Hub). A revision given on its own goes with it
    (:func:`one_revision`). Called for what is not a local path."""
    page = _HUB_PAGE.match(spec)
    if page is None:
        at = _HUB_ID_AT.match(spec)  # org/name@dev, as pip and other tools write a revision: "does not exist"
        if at is not None and not Path(spec).exists():
            return at["id"], one_revision(spec, revision, at["revision"])
        return spec, revision
    if page["kind"]:
        raise ModelSourceError(f"{spec} is a Hub {page['kind'].rstrip('s/')}, not a model; give a model's id like "
                               "org/name.")
    return page["id"], one_revision(spec, revision, page["revision"])


def _local_source(spec: str) -> ModelSource | None:
    """The model at the local path ``spec`` (None where there is no such file or folder)."""
    path = expand_home(spec)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            if _starts_as_gguf(path):  # an Ollama blob (sha256-…) is a GGUF file without the ending
                raise ModelSourceError(
                    f"{path} is a GGUF model without the .gguf ending (as Ollama stores them); give it one, for "
                    "example with a link named model.gguf that points to it.")
            raise ModelSourceError(
                f"{path} is a file but not a .gguf model; choose the model's folder or a .gguf file."
            )
        return _gguf_source(path, spec)
    if path.is_dir():
        return _folder_source(path, spec)
    if path.exists():  # a device or a pipe was said not to exist
        raise ModelSourceError(f"{path} is not a file or a folder; choose the model's folder or a .gguf file.")
    if path.is_symlink():  # one named like org/name was looked up on the Hub
        raise ModelSourceError(f"{spec} {not_there(spec)}; choose the model's folder or a .gguf file.")
    return None


def _starts_as_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(4) == b"GGUF"
    except OSError:
        return False


def _gguf_source(path: Path, spec: str) -> ModelSource:
    """The checked GGUF file ``path``, named ``spec`` as the user gave it (the file, or the folder holding it)."""
    check_gguf(path)
    return ModelSource(spec=spec, kind="gguf", folder=path.parent, gguf_file=path.name,
                       weight_files=[WeightFile(path, "gguf", path.stat().st_size)])


def _one_split_model(paths: Sequence[Path]) -> bool:
    """Whether ``paths`` are all parts of one model that llama.cpp's gguf-split cut (same name, same count)."""
    matches = [_SHARD.match(p.name) for p in paths]
    return all(matches) and len({(m["stem"], m["total"]) for m in matches if m}) == 1


def _model_folders_in(folder: Path) -> list[Path]:
    """The folders right inside ``folder`` that hold a model (a config.json or a .gguf), sorted; none where it
    cannot be listed."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if (entry / "config.json").is_file() or any(entry.glob("*.gguf")):
                found.append(entry)
        except OSError:
            continue
    return found


def _folder_source(folder: Path, spec: str) -> ModelSource:
    if not (folder / "config.json").is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        others = _model_folders_in(folder) if ggufs else []
        if others:  # a folder of models: its one stray .gguf was pruned, unnamed, as "the folder" (a walkthrough)
            raise ModelSourceError(
                f"{folder} holds other models beside {some_of([p.name for p in ggufs], 3)} "
                f"({some_of([p.name + '/' for p in others], 3)}): choose the one you mean, the file or a folder.")
        if ggufs and ggufs[0].is_file() and (len(ggufs) == 1 or _one_split_model(ggufs)):
            # A folder holding one GGUF (what this tool saves, a card beside the file): that file, named as typed.
            # It was refused ("choose that file instead") though the prune had just said "saved to" the folder. The
            # parts of one split model: the first part, whose refusal says which part is missing or how to merge
            # them (the folder was "choose that file", and that file then refused).
            return _gguf_source(ggufs[0], spec)
        if len(ggufs) > 1:
            hint = f" It holds {some_of([p.name for p in ggufs], 5)}: choose one of those files instead."
        else:
            hint = f" It holds {ggufs[0].name}: choose that file instead." if ggufs else ""
        raise ModelSourceError(f"{folder} has no config.json, so it is not a Hugging Face model folder.{hint}")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelSourceError(f"{folder / 'config.json'} cannot be read ({exc.strerror or exc}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"{folder / 'config.json'} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise ModelSourceError(f"{folder / 'config.json'} is not a model config (it nests too deeply).") from None
    if (folder / "adapter_config.json").is_file():
        # transformers (with peft installed) applies the adapter while loading the whole model, but not one
        # layer at a time, and the save copies the base checkpoint: the scores and the saved model disagreed.
        raise ModelSourceError(f"{folder} holds a LoRA adapter (adapter_config.json) beside the model; merge it into "
                               "the model first, or move it out to prune the base model.")
    files = find_weight_files(folder)
    if not files:
        raise ModelSourceError(f"{folder} has a config.json but no weights (no model.safetensors, pytorch_model.bin "
                               "or shards of either).")
    for weight in files:
        if weight.format == "safetensors":
            check_safetensors(weight.path)
    return ModelSource(spec=spec, kind="folder", folder=folder, weight_files=files)


def find_weight_files(folder: Path) -> list[WeightFile]:
    """The checkpoint files of a folder: safetensors (sharded via its index) first, legacy ``.bin`` else; a single
    file before an index, as transformers chooses (a stale index beside a whole ``model.safetensors`` was refused
    for the shards it names, though transformers loads the single file and never reads the index)."""
    for fmt, index_name, single in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / single).is_file():
            return [WeightFile(folder / single, fmt, (folder / single).stat().st_size)]
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
                if not all(isinstance(n, str) for n in names):
                    raise ValueError("a file name that is not a string")
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise ModelSourceError(f"{index} is not a valid checkpoint index ({exc}).") from None
            outside = [n for n in names if _outside_the_folder(n)]
            if outside:  # it was read, then called "not a valid safetensors file… download it again"
                raise ModelSourceError(f"{index} names a weight file outside the model's folder ({outside[0]}); the "
                                       "index is broken or belongs to another model.")
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise ModelSourceError(
                    f"{folder} is incomplete: {counted(len(missing), 'weight file')} listed in {index_name} "
                    f"{in_number(len(missing), 'is', 'are')} missing, starting with {missing[0]}."
                )
            return [WeightFile(folder / n, fmt, (folder / n).stat().st_size) for n in names]
        # Shards without their index, as a download that stopped leaves them; not every file of the format: a
        # training run's training_args.bin or adapter_model.safetensors was taken for the weights (a model of 5
        # bytes and 1 parameter, then transformers' own "no file named model.safetensors" at the load).
        others = sorted(p for p in folder.glob(f"*.{fmt}") if is_checkpoint_file(p.name))
        broken = [p for p in others if not p.is_file()]
        if broken:  # a link into a Hub cache whose blob is gone
            raise ModelSourceError(f"{broken[0]} is missing (a link to a file that is not there: an interrupted "
                                   "download?); download the model again.")
        missing = missing_shards([p.name for p in others])
        if missing:  # shards without their index: an interrupted download fetches them before it
            raise ModelSourceError(f"{folder} is incomplete: {missing[0]} is missing "
                                   f"({counted(len(missing), 'weight file')} of the set), and no index names the "
                                   "files.")
        if others:
            return [WeightFile(p, fmt, p.stat().st_size) for p in others]
    return []


#: ``model-00002-of-00004.safetensors``: part 2 of a checkpoint saved in 4 shards.
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<part>\d+)-of-(?P<total>\d+)(?P<suffix>\.\w+)$")


def is_checkpoint_file(name: str) -> bool:
    """Whether a file of a model's folder (or a Hub repo's top folder) holds its weights as transformers names
    them: ``model.safetensors``, ``pytorch_model.bin``, or a shard of a set (``model-00001-of-00004.safetensors``).
    Not the other ``.bin`` or ``.safetensors`` files beside them (``training_args.bin``, ``optimizer.bin``,
    ``adapter_model.safetensors``)."""
    if name in ("model.safetensors", "pytorch_model.bin"):
        return True
    shard = _SHARD.match(name)
    return shard is not None and shard["suffix"] in (".safetensors", ".bin")


def _outside_the_folder(name: str) -> bool:
    """Whether an index's file name points out of the model's folder, read as Windows reads it too: there
    ``\\x\\m.safetensors``, ``/x/m.safetensors`` and ``C:m.safetensors`` leave the folder (a root or a drive), and a
    posix reading sees none of them."""
    return any(path.is_absolute() or path.anchor or ".." in path.parts for path in (PurePosixPath(name),
                                                                                    PureWindowsPath(name)))


def missing_shards(names: Sequence[str]) -> list[str]:
    """The shard files a set names by its ``-NNNNN-of-MMMMM`` parts and that are not among ``names``."""
    found: dict[tuple[str, str, str, int], set[int]] = {}
    for name in names:
        shard = _SHARD.match(name)
        if shard is not None:
            key = (shard["stem"], shard["suffix"], shard["total"], len(shard["part"]))
            found.setdefault(key, set()).add(int(shard["part"]))
    return [f"{stem}-{part:0{width}d}-of-{total}{suffix}" for (stem, suffix, total, width), parts in found.items()
            for part in range(1, int(total) + 1) if part not in parts]


# --------------------------------------------------------------------------------------------------- Hub


def hub_download(
    repo_id: str,
    revision: str | None = None,
    progress: DownloadProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    cache_dir: str | Path | None = None,
    filename: str | None = None,
) -> Path:
    """Download only what a model needs from the Hub (or take it from the cache when offline); with ``filename``,
    that one file (a GGUF of a repo of GGUF files), whose path is returned.

    The token comes from huggingface_hub's own login store (``hf auth login``) or ``HF_TOKEN``; it is never
    asked for or stored here. Each Hub error becomes a sentence the user can act on.
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.utils import logging as hub_logging

    # Its retry chatter (each of five retries logged, twice with a root handler) ends in our one sentence anyway;
    # importing it resets its logger, so a front end's setting made before the import does not hold.
    hub_logging.set_verbosity_error()
    named = f"{repo_id} (revision {revision})" if revision else repo_id
    if filename is not None:
        named = f"{filename} of {named}"
    incomplete: str | None = None
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
        revision = _whole_commit(repo_id, revision, cache_dir) or revision
        if filename is not None:
            return _download_file(repo_id, filename, revision, progress, cancel, cache_dir)
        cached, incomplete = _cached_snapshot(repo_id, revision, cache_dir)
        if cached is not None:
            return cached
        return _download(repo_id, revision, progress, cancel, cache_dir)
    except HubUnreachable as exc:
        raise _unreachable_here(exc.why, named, repo_id, revision, incomplete, cache_dir, filename) from None
    except (Cancelled, HubError):
        raise
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled):
        where = (f"is in the local Hub cache but incomplete ({incomplete})" if incomplete
                 else "is not in the local Hub cache")
        error = HubError if incomplete else HubModelNotFound  # an incomplete one is a Hub model: nothing to add
        # what the cache holds instead (another revision, an id spelled nearly the same), as without HF_HUB_OFFLINE;
        # and, where HF_HUB_OFFLINE keeps the Hub from being asked, that (connecting to the internet does not help)
        held = ("" if incomplete else _what_the_cache_holds(repo_id, revision, None, cache_dir) if filename is None
                else _other_cached_files(repo_id, filename, cache_dir))
        if _offline_set():
            raise error(f"{named} {where}, and HF_HUB_OFFLINE is set, so the Hub is not asked{held}; unset "
                        "HF_HUB_OFFLINE to download it, or choose a model folder or .gguf file on this computer.") \
                from None
        raise error(f"{named} {where} and the Hub cannot be reached{held}; connect to the internet or choose a local "
                    "folder.") from None
    except hub_errors.RemoteEntryNotFoundError:
        if filename is None:  # a whole model's file gone between the listing and its download (said "no file None")
            raise HubError(f"The Hub lost a file of {named} during its download; try again later.") from None
        raise HubError(f"{repo_id} has no file {filename} at {revision or 'main'}; copy the file's address from its "
                       "Files page again.") from None
    except hub_errors.GatedRepoError:
        raise HubError(
            f"{repo_id} is gated: accept its licence on its Hub page, then log in with `hf auth login`."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}; check the branch, tag or commit.") from None
    except hub_errors.RepositoryNotFoundError:
        raise HubModelNotFound(
            f"{repo_id} was not found on the Hub; check the spelling, or log in if it is private."
        ) from None
    except hub_errors.HFValidationError:
        raise HubError(f"{repo_id} is not a valid Hub id; use the form org/name.") from None
    except hub_errors.HfHubHTTPError as exc:
        raise HubError(f"The Hub refused the download of {repo_id} ({exc.__class__.__name__}); try again later.") \
            from None
    except OSError as exc:
        if "No space" in str(exc) or getattr(exc, "errno", None) == 28:
            raise HubError(f"The disk is full while downloading {repo_id}; free some space.") from None
        raise HubError(f"Could not download {repo_id}: {exc}.") from None
    except _network_errors() as exc:  # the HTTP client's own errors: no connection, DNS failure, time-out
        raise _unreachable_here(exc.__class__.__name__, named, repo_id, revision, incomplete, cache_dir,
                                filename) from None


#: A commit's hash cut short, as the Hub's pages and git show it (``0123456``).
SHORT_COMMIT = re.compile(r"[0-9a-f]{7,39}")


def _cached_repo_folder(repo_id: str, cache_dir: str | Path | None) -> Path:
    """The Hub cache's folder of ``repo_id``, under the spelling the cache holds it by (:func:`cached_spelling`)."""
    from huggingface_hub import constants

    spelled = cached_spelling(repo_id, cache_dir) or repo_id
    return Path(cache_dir or constants.HF_HUB_CACHE) / _cache_folder_of(spelled)


def _whole_commit(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> str | None:
    """The whole hash of the one commit the local Hub cache holds of ``repo_id`` that a short hash (``--revision
    0123456``, as the Hub's pages show a commit) begins, else None: the Hub resolves a short hash itself, but the
    cache is a folder per whole hash, so offline a short one was "not in the local Hub cache" beside that very
    commit."""
    if revision is None or not SHORT_COMMIT.fullmatch(revision):
        return None
    snapshots = _cached_repo_folder(repo_id, cache_dir) / "snapshots"
    try:
        found = [p.name for p in snapshots.iterdir() if p.is_dir() and p.name.startswith(revision)]
    except OSError:
        return None
    return found[0] if len(found) == 1 else None


class HubUnreachable(HubModelNotFound):
    """The Hub's host cannot be reached (``why``: the lookup's or the connection's failure)."""

    def __init__(self, repo_id: str, why: str) -> None:
        super().__init__(_unreachable(repo_id, why))
        self.why = why


def _unreachable_here(why: str, named: str, repo_id: str, revision: str | None, incomplete: str | None,
                      cache_dir: str | Path | None, filename: str | None = None) -> HubError:
    """The Hub cannot be reached, with what the local cache holds of the model: set ``HF_HUB_OFFLINE`` and the same
    cases were exact ("is in the local Hub cache but incomplete (no tokenizer)"); without it each said only that the
    Hub cannot be reached, the revision asked for unnamed and the cached model unmentioned."""
    held = (_what_the_cache_holds(repo_id, revision, incomplete, cache_dir) if filename is None
            else _other_cached_files(repo_id, filename, cache_dir))
    error = HubError if incomplete else HubModelNotFound  # an incomplete one is a Hub model: nothing to add
    return error(f"The Hugging Face Hub cannot be reached to download {named} ({why}){held}; check the connection, "
                 "or choose a model folder or .gguf file on this computer.")


def _other_cached_files(repo_id: str, filename: str, cache_dir: str | Path | None) -> str:
    """``; the local Hub cache holds …`` for one file asked of ``repo_id``: the repo's other GGUF files there, or the
    file at another revision ("holds it at 0000…, not at main" was said of a repo whose main lacked only the file)."""
    snapshots = _cached_repo_folder(repo_id, cache_dir) / "snapshots"
    try:
        held = sorted({p.relative_to(s).as_posix() for s in snapshots.iterdir() for p in s.rglob("*.gguf")})
    except OSError:
        return ""
    if filename in held:
        return "; the local Hub cache holds it at another revision"
    return f"; the local Hub cache holds {some_of(held, 3)} of {repo_id}" if held else ""


def _what_the_cache_holds(repo_id: str, revision: str | None, incomplete: str | None,
                          cache_dir: str | Path | None) -> str:
    """``; the local Hub cache holds it …`` where the cache has it incomplete, at other revisions, or has an id
    spelled nearly the same (a typing slip); "" where it holds nothing of the kind."""
    import difflib

    from huggingface_hub import constants

    if incomplete:
        return f"; the local Hub cache holds it, but incomplete ({incomplete})"
    root = Path(cache_dir or constants.HF_HUB_CACHE)
    folder = _cached_repo_folder(repo_id, cache_dir)
    try:
        if folder.is_dir():
            snapshots = folder / "snapshots"
            commits = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
            refs = folder / "refs"
            # the branches and tags whose snapshot is there (not a pull request's ref, nor one whose files are gone)
            named = sorted(p.name for p in refs.iterdir() if p.is_file()
                           and p.read_text(encoding="utf-8", errors="replace").strip() in commits) \
                if refs.is_dir() else []
            wanted = revision or "main"
            at = [r for r in named if r != wanted] or [c[:12] for c in commits if not c.startswith(wanted)]
            if at:
                return f"; the local Hub cache holds it at {', '.join(at)}, not at {wanted}"
            return ""
        ids = [repo for repo in (_hub_id_of(e.name) for e in root.iterdir()) if repo is not None]
    except OSError:
        return ""
    near = difflib.get_close_matches(repo_id.lower(), [i.lower() for i in ids], n=1, cutoff=0.85)
    if not near:
        return ""
    match = next(i for i in ids if i.lower() == near[0])
    return f"; the local Hub cache holds {match}, spelled otherwise"


def _offline_set() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set now, read as huggingface_hub reads it (its own constant is read once, at its
    import)."""
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ENV_VARS_TRUE_VALUES


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport errors: huggingface_hub talks through httpx (1.x) or httpx2 (2.x)."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            client = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(client.HTTPError)
    return tuple(errors)


def _cached_snapshot(repo_id: str, revision: str | None,
                     cache_dir: str | Path | None) -> tuple[Path | None, str | None]:
    """A usable snapshot from the cache (config, tokenizer and every weight file), if there is one: cached models
    load offline. Else None, and why a snapshot that is there cannot be used (a notebook's ``from_pretrained``
    caches no tokenizer; an interrupted download leaves some shards): the download then fetches what is missing.
    A snapshot of GGUF files alone is said at once: the Hub id is not what opens them."""
    import huggingface_hub as hub
    from huggingface_hub import errors as hub_errors

    folder = None
    for spelled in (repo_id, cached_spelling(repo_id, cache_dir)):
        try:
            if spelled is not None:
                folder = Path(hub.snapshot_download(spelled, revision=revision, cache_dir=cache_dir,
                                                    local_files_only=True))
                break
        except (hub_errors.LocalEntryNotFoundError, hub_errors.HFValidationError, OSError, ValueError):
            continue
    if folder is None:
        return None, None
    if not (folder / "config.json").is_file():
        ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file())
        if ggufs:
            raise HubError(gguf_only(repo_id, [p.name for p in ggufs], folder))
        return None, "no config.json"
    try:
        if not find_weight_files(folder):
            return None, "no weights"
    except ModelSourceError as exc:
        return None, str(exc).rstrip(".")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        return None, "no tokenizer"
    return folder, None


def cached_spelling(repo_id: str, cache_dir: str | Path | None) -> str | None:
    """The id the Hub cache holds ``repo_id`` under when it is spelled with other capitals there, else None.

    The Hub finds a repo whatever the case of its id (``huggingfacetb/smollm2-135m`` opens HuggingFaceTB's), but its
    cache is a folder per spelling: a model downloaded as ``HuggingFaceTB/SmolLM2-135M`` was "not in the local Hub
    cache" offline when typed in lower case, and online it was downloaded a second time."""
    from huggingface_hub import constants

    typed = _cache_folder_of(repo_id)
    try:
        entries = [entry.name for entry in Path(cache_dir or constants.HF_HUB_CACHE).iterdir()]
    except OSError:
        return None
    spelled = [name for name in entries if name.lower() == typed.lower() and name != typed]
    return _hub_id_of(spelled[0]) if len(spelled) == 1 else None


def _cache_folder_of(repo_id: str) -> str:
    """The Hub cache's folder name for a model ``repo_id`` (``models--org--name``)."""
    return "models--" + repo_id.replace("/", "--")


def hub_cache_holding(path: Path) -> Path | None:
    """The Hub cache's model folder (``models--org--name``) that ``path`` lies in through its ``snapshots/`` or its
    ``blobs/``, else None: a GGUF linked from the user's own folder to a snapshot's file resolves to a blob."""
    for folder in (path, *path.parents):
        if folder.name in ("snapshots", "blobs") and _hub_id_of(folder.parent.name) is not None:
            return folder.parent
    return None


def _hub_id_of(folder_name: str) -> str | None:
    """The model id a Hub cache folder holds (``models--org--name`` → ``org/name``); None for another folder."""
    return folder_name.removeprefix("models--").replace("--", "/", 1) if folder_name.startswith("models--") else None


def gguf_only(repo_id: str, names: Sequence[str], folder: Path | None = None) -> str:
    """The sentence for a Hub repo of GGUF files alone (the usual ``*-GGUF`` repos): which to open, and how (the
    address quoted, so that a name with a space reads back as one)."""
    from urllib.parse import quote

    listed = some_of(names, 5)
    if folder is not None:  # in the cache already: the file itself opens
        return (f"{repo_id} holds GGUF files only ({listed}); open the file itself, e.g. "
                f"{folder / names[0]}.")
    return (f"{repo_id} holds GGUF files only ({listed}); open the one you want by its address on the Hub, which "
            f"downloads that file alone, e.g. https://huggingface.co/{repo_id}/blob/main/{quote(names[0])}.")


def _download(
    repo_id: str,
    revision: str | None,
    progress: DownloadProgress | None,
    cancel: Callable[[], bool] | None,
    cache_dir: str | Path | None,
) -> Path:
    import huggingface_hub as hub

    if _offline_set():
        from huggingface_hub.errors import LocalEntryNotFoundError

        raise LocalEntryNotFoundError("offline")
    check_hub_reachable(repo_id)
    files = hub.list_repo_files(repo_id, revision=revision)
    patterns = hub_patterns(files)
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if ggufs and not any(is_checkpoint_file(f) for f in files if "/" not in f):
        raise HubError(gguf_only(repo_id, ggufs))  # before a download that fetches no weights
    plan = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                 dry_run=True)
    check_free_space(cache_dir, sum(f.file_size or 0 for f in plan if f.will_download), repo_id)
    tqdm_class = _progress_tqdm(progress, cancel) if (progress or cancel) else None
    return Path(
        hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, tqdm_class=tqdm_class
        )
    )


def _download_file(repo_id: str, filename: str, revision: str | None, progress: DownloadProgress | None,
                   cancel: Callable[[], bool] | None, cache_dir: str | Path | None) -> Path:
    """One file of a Hub repo, from the local cache where it is there (offline too), else downloaded into it after
    the disk's room is checked."""
    import huggingface_hub as hub

    cached = hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if _offline_set():
        from huggingface_hub.errors import LocalEntryNotFoundError

        raise LocalEntryNotFoundError("offline")
    check_hub_reachable(repo_id)
    plan = hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, dry_run=True)
    check_free_space(cache_dir, getattr(plan, "file_size", 0) or 0, repo_id)
    tqdm_class = _progress_tqdm(progress, cancel) if (progress or cancel) else None
    return Path(hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, tqdm_class=tqdm_class))


def hub_patterns(files: Sequence[str]) -> list[str]:
    """What to fetch of a Hub repo's ``files``: config, tokenizer and the model's own code (a model that needs
    ``--trust-remote-code`` brings its ``*.py``), and one copy of the weights: the top folder's safetensors (else
    its ``.bin``), without Mistral's ``consolidated`` copy or the ``original/`` folder's, which doubled the
    download and the room asked for."""
    top = [f for f in files if "/" not in f]
    for suffix in (".safetensors", ".bin"):
        weights = [f for f in top if f.endswith(suffix)]
        own = [f for f in weights if not f.startswith("consolidated")]
        if weights:
            return [*_HUB_BASE_PATTERNS, "*.py", *(own or weights)]
    return [*_HUB_BASE_PATTERNS, "*.py"]


#: Seconds the reachability probe waits for the Hub's host to accept a connection.
PROBE_TIMEOUT = 5.0


def check_hub_reachable(repo_id: str) -> None:
    """Fail at once where the Hub's host cannot be reached (no network, no name resolution): huggingface_hub
    retries five times with back-off first, and the user waited 24 s in silence for the same sentence. Skipped
    where the HTTP client would go through a proxy (from the environment or, on Windows and macOS, the system's
    settings, as ``urllib.request.getproxies`` finds them), since a direct connection says nothing there. The
    name lookup and the connection share one time-out: a lookup that hangs (a DNS server that does not answer,
    where an offline machine fails at once) is left to finish on its own thread."""
    import socket
    import time
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # a malformed HF_ENDPOINT: huggingface_hub says what is wrong with it
        return
    if not host:
        return
    proxies = urllib.request.getproxies()
    if (proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        addresses = _looked_up(host, port, PROBE_TIMEOUT)
    except socket.gaierror:
        raise HubUnreachable(repo_id, f"{host} cannot be looked up: is this computer offline?") from None
    except TimeoutError:
        raise HubUnreachable(repo_id, f"{host} could not be looked up in {PROBE_TIMEOUT:g} s: is the network's "
                             "name server answering?") from None
    error: OSError = TimeoutError()
    for address in addresses:  # as socket.create_connection tries them, within what is left of the time-out
        try:
            socket.create_connection(address, timeout=max(0.01, deadline - time.monotonic())).close()
            return
        except OSError as exc:
            error = exc
    if isinstance(error, TimeoutError):
        raise HubUnreachable(repo_id, f"no answer from {host} in {PROBE_TIMEOUT:g} s") from None
    raise HubUnreachable(repo_id, f"{host}: {error.strerror or error}") from None


def _looked_up(host: str, port: int, timeout: float) -> list[tuple[str, int]]:
    """The (address, port) pairs ``host`` resolves to, or ``TimeoutError`` after ``timeout`` s: the system's lookup
    cannot be interrupted, so it runs on a daemon thread, left to finish alone when it hangs."""
    import socket
    import threading

    found: list[Any] = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    thread = threading.Thread(target=look_up, name="hub-name-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise TimeoutError(f"looking up {host}")
    if isinstance(found[0], OSError):
        raise found[0]
    return [(info[4][0], info[4][1]) for info in found[0]]


def _unreachable(repo_id: str, why: str) -> str:
    return (f"The Hugging Face Hub cannot be reached to download {repo_id} ({why}); check the connection, or choose "
            "a model folder or .gguf file on this computer.")


def check_free_space(cache_dir: str | Path | None, needed: int, repo_id: str) -> None:
    """Refuse a download the disk cannot hold, before it starts (a half-written cache helps nobody)."""
    from huggingface_hub import constants

    from ...format import human_bytes
    from ..free_space import free_bytes

    folder = Path(cache_dir or constants.HF_HUB_CACHE)
    free = free_bytes(folder)
    if free is not None and needed > free:
        raise HubError(
            f"{repo_id} needs {human_bytes(needed)} but only {human_bytes(free)} is free on the disk of {folder}; "
            "free some space or set HF_HOME to a bigger disk."
        )


def _progress_tqdm(progress: DownloadProgress | None, cancel: Callable[[], bool] | None) -> type:
    """A tqdm class that forwards byte counts to ``progress`` and raises :class:`Cancelled` on request."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):  # type: ignore[misc, valid-type]
        """Silent; counts the bytes written to disk (huggingface_hub grows ``total`` as files start)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # huggingface_hub also draws a "Downloading bytes" network bar; counting both would double.
            self._counts_bytes = kwargs.get("unit") == "B" and kwargs.get("desc") != "Downloading bytes"
            self._done = 0
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel():
                raise Cancelled()
            self._done += int(n or 0)
            if progress is not None and self._counts_bytes:
                progress(self._done, max(int(self.total or 0), self._done))
            return None

    return _Forward
