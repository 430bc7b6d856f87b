"""What the user typed (a folder, a ``.gguf`` file or a Hub id) → local files, checked before anything loads."""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Cancelled, HubError, ModelSourceError

#: (bytes_done, bytes_total) while a Hub download runs.
DownloadProgress = Callable[[int, int], None]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: What a Hub download fetches: config, tokenizer, weights. ``.bin`` only when there is no safetensors.
_HUB_BASE_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja", "tokenizer*", "*.tiktoken"]
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

    @property
    def display_name(self) -> str:
        return self.spec if self.kind == "hub" else Path(self.spec).name or self.spec

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
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(
                f"{path} is a file but not a .gguf model; choose the model's folder or a .gguf file."
            )
        check_gguf(path)
        return ModelSource(
            spec=spec,
            kind="gguf",
            folder=path.parent,
            gguf_file=path.name,
            weight_files=[WeightFile(path, "gguf", path.stat().st_size)],
        )
    if path.is_dir():
        return _folder_source(path, spec)
    if looks_like_hub_id(spec):
        folder = hub_download(spec, revision=revision, progress=progress, cancel=cancel)
        source = _folder_source(folder, spec)
        source.kind = "hub"
        source.revision = revision
        return source
    raise ModelSourceError(f"{spec} does not exist: give a model folder, a .gguf file or a Hub id like org/name.")


def _folder_source(folder: Path, spec: str) -> ModelSource:
    if not (folder / "config.json").is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        hint = f" It holds {ggufs[0].name}: choose that file instead." if ggufs else ""
        raise ModelSourceError(f"{folder} has no config.json, so it is not a Hugging Face model folder.{hint}")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"{folder / 'config.json'} is not valid JSON ({exc}).") from None
    files = find_weight_files(folder)
    if not files:
        raise ModelSourceError(f"{folder} has a config.json but no weights (.safetensors or .bin files).")
    for weight in files:
        if weight.format == "safetensors":
            check_safetensors(weight.path)
    return ModelSource(spec=spec, kind="folder", folder=folder, weight_files=files)


def find_weight_files(folder: Path) -> list[WeightFile]:
    """The checkpoint files of a folder: safetensors (sharded via its index) first, legacy ``.bin`` else."""
    for fmt, index_name, single in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelSourceError(f"{index} is not a valid checkpoint index ({exc}).") from None
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise ModelSourceError(
                    f"{folder} is incomplete: {len(missing)} weight file(s) listed in {index_name} are missing, "
                    f"starting with {missing[0]}."
                )
            return [WeightFile(folder / n, fmt, (folder / n).stat().st_size) for n in names]
        if (folder / single).is_file():
            return [WeightFile(folder / single, fmt, (folder / single).stat().st_size)]
        others = sorted(folder.glob(f"*.{fmt}"))
        if others:
            return [WeightFile(p, fmt, p.stat().st_size) for p in others]
    return []


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets), without the data."""
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ValueError("file too short")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > 100_000_000:
                raise ValueError("header length is implausible")
            raw_header = f.read(header_len)
            if len(raw_header) < header_len:
                raise ModelSourceError(f"{path.name} is truncated (it ends inside its header); download it again.")
            header = json.loads(raw_header)
        if not isinstance(header, dict):
            raise ValueError("header is not a table")
        header["__header_bytes__"] = 8 + header_len
        return header
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{path.name} is not a valid safetensors file ({exc}); download it again.") from None


def check_safetensors(path: Path) -> dict[str, Any]:
    """Check that a safetensors file's header is readable and its data is all there (catches truncation)."""
    header = read_safetensors_header(path)
    data_start = header["__header_bytes__"]
    end = max((v["data_offsets"][1] for k, v in header.items() if not k.startswith("__")), default=0)
    size = path.stat().st_size
    if data_start + end > size:
        raise ModelSourceError(
            f"{path.name} is truncated ({size:,} bytes, {data_start + end:,} expected); download it again."
        )
    return header


#: ``name-00001-of-00003.gguf``: one part of a model that llama.cpp's gguf-split cut into several files.
_SPLIT_GGUF = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
#: GGUF metadata value types: id → struct format of a scalar (8 = string, 9 = array, handled apart).
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass
class GGUFTensorInfo:
    name: str
    type_id: int
    shape: tuple[int, ...]  # ggml order (innermost first)
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass
class GGUFField:
    """Where one metadata entry lies in the file, so that it can be copied byte for byte or decoded."""

    key: str
    type_id: int  # GGUF value type (9 = array)
    item_type: int | None  # arrays: the items' value type
    count: int  # arrays: number of items; 1 otherwise
    start: int  # first byte of the entry (its key's length)
    value_start: int  # first byte after the value type (arrays: after item type and count)
    end: int  # one past the entry's last byte


@dataclass
class GGUFLayout:
    """What a GGUF file's header says, read without loading its tensors (tokenizer arrays are only skipped)."""

    version: int
    metadata: dict[str, Any]  # scalars and strings only; arrays are stored as their length under "<key>#len"
    fields: dict[str, GGUFField]
    tensors: list[GGUFTensorInfo]
    header_end: int  # end of the tensor table
    alignment: int
    data_start: int
    expected_size: int  # bytes the file must have for its last tensor to be complete


class _Truncated(Exception):
    pass


def read_gguf_layout(path: Path) -> GGUFLayout:
    """Parse a GGUF header (metadata and tensor table) and work out the size the file must have.

    Raises :class:`ModelSourceError` with one sentence for a file that is not GGUF, ends early or whose header
    makes no sense (gguf-py's reader would fail later with a numpy reshape error instead).
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelSourceError(f"{name} is not a GGUF file (it does not start with the GGUF magic bytes).")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                metadata, fields, tensors, header_end = _parse_gguf_header(
                    view, size, GGML_QUANT_SIZES, GGMLQuantizationType
                )
        version = metadata.pop("#version")
        alignment = int(metadata.get("general.alignment", 32))
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        data_start = -(-header_end // alignment) * alignment
    except _Truncated:
        raise ModelSourceError(f"{name} is incomplete or corrupt (it ends inside its header); download it again.") \
            from None
    except (ValueError, OverflowError, struct.error, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{name} is incomplete or corrupt ({exc}); download it again.") from None
    except OSError as exc:
        raise ModelSourceError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    end = data_start + max((t.offset + t.n_bytes for t in tensors), default=0)
    return GGUFLayout(version, metadata, fields, tensors, header_end, alignment, data_start, end)


def _parse_gguf_header(view: Any, size: int, quant_sizes: Any, quant_type: Any) -> tuple[dict, dict, list, int]:
    """Walk the header in ``view`` (a read-only mmap): metadata scalars, array lengths, the tensor table."""
    pos = 4

    def unpack(fmt: str) -> Any:
        nonlocal pos
        width = struct.calcsize(fmt)
        if pos + width > size:
            raise _Truncated()
        (value,) = struct.unpack_from("<" + fmt, view, pos)
        pos += width
        return value

    def read_string() -> str:
        nonlocal pos
        length = unpack("Q")
        if pos + length > size:
            raise _Truncated()
        pos += length
        return bytes(view[pos - length:pos]).decode("utf-8")

    version = unpack("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}, which this tool cannot read"
                         + (" (a big-endian file?)" if version > 65535 else ""))
    n_tensors, n_kv = unpack("Q"), unpack("Q")
    if n_tensors > 10_000_000 or n_kv > 10_000_000:
        raise ValueError("implausible tensor or metadata counts")
    metadata: dict[str, Any] = {"#version": version}
    fields: dict[str, GGUFField] = {}
    for _ in range(n_kv):
        start = pos
        key = read_string()
        type_id = unpack("I")
        item_type, count = None, 1
        if type_id == _GGUF_ARRAY:
            item_type, count = unpack("I"), unpack("Q")
            value_start = pos
            if item_type == _GGUF_STRING:
                for _ in range(count):
                    length = unpack("Q")  # (not ``pos += unpack(...)``: that would read pos before unpack moves it)
                    pos += length
            elif item_type in _GGUF_SCALARS:
                pos += count * struct.calcsize(_GGUF_SCALARS[item_type])
            else:
                raise ValueError(f"unknown array item type {item_type} in {key}")
            if pos > size:
                raise _Truncated()
            metadata[key + "#len"] = count
        elif type_id == _GGUF_STRING:
            value_start = pos
            metadata[key] = read_string()
        elif type_id in _GGUF_SCALARS:
            value_start = pos
            metadata[key] = unpack(_GGUF_SCALARS[type_id])
        else:
            raise ValueError(f"unknown metadata type {type_id} for {key}")
        if key in fields:
            raise ValueError(f"metadata key {key} appears twice")
        fields[key] = GGUFField(key, type_id, item_type, count, start, value_start, pos)
    tensors = []
    for _ in range(n_tensors):
        tensor_name = read_string()
        n_dims = unpack("I")
        if n_dims > 8:
            raise ValueError(f"tensor {tensor_name} has {n_dims} dimensions")
        shape = tuple(unpack("Q") for _ in range(n_dims))
        type_id, offset = unpack("I"), unpack("Q")
        try:
            block, type_size = quant_sizes[quant_type(type_id)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {tensor_name} has unknown type {type_id}") from None
        tensors.append(GGUFTensorInfo(tensor_name, type_id, shape, offset, math.prod(shape) // block * type_size))
    return metadata, fields, tensors, pos


def check_gguf(path: Path) -> GGUFLayout:
    """A GGUF file that is whole: readable header, every tensor's bytes present, not one part of a split model."""
    _check_not_split(path)
    layout = read_gguf_layout(path)
    size = path.stat().st_size
    if size < layout.expected_size:
        raise ModelSourceError(
            f"{path.name} is incomplete or corrupt ({size:,} bytes, {layout.expected_size:,} expected); "
            "download it again."
        )
    if int(layout.metadata.get("split.count", 1) or 1) > 1:
        raise ModelSourceError(
            f"{path.name} is one part of a split GGUF model; merge the parts into one file first "
            "(llama.cpp's llama-gguf-split --merge) and choose that file."
        )
    return layout


def _check_not_split(path: Path) -> None:
    """Split GGUF models are refused with a sentence that says which part is missing, or how to merge them."""
    match = _SPLIT_GGUF.match(path.name)
    if match is None:
        return
    count = int(match["count"])
    no = int(match["no"])
    parts = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ModelSourceError(
            f"{path.name} is part {no} of {count} of a split GGUF model and {len(missing)} part(s) are missing, "
            f"starting with {missing[0]}; download every part."
        )
    raise ModelSourceError(
        f"{path.name} is part {no} of {count} of a split GGUF model; merge the parts into one file first "
        f"(llama.cpp's llama-gguf-split --merge {parts[0].name} merged.gguf) and choose that file."
    )


# --------------------------------------------------------------------------------------------------- Hub


def hub_download(
    repo_id: str,
    revision: str | None = None,
    progress: DownloadProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download only what a model needs from the Hub (or take it from the cache when offline).

    The token comes from huggingface_hub's own login store (``hf auth login``) or ``HF_TOKEN``; it is never
    asked for or stored here. Each Hub error becomes a sentence the user can act on.
    """
    from huggingface_hub import errors as hub_errors

    try:
        cached = _cached_snapshot(repo_id, revision, cache_dir)
        if cached is not None:
            return cached
        return _download(repo_id, revision, progress, cancel, cache_dir)
    except (Cancelled, HubError):
        raise
    except hub_errors.GatedRepoError:
        raise HubError(
            f"{repo_id} is gated: accept its licence on its Hub page, then log in with `hf auth login`."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}; check the branch, tag or commit.") from None
    except hub_errors.RepositoryNotFoundError:
        raise HubError(
            f"{repo_id} was not found on the Hub; check the spelling, or log in if it is private."
        ) from None
    except hub_errors.LocalEntryNotFoundError:
        raise HubError(
            f"{repo_id} is not in the local Hub cache and the Hub cannot be reached; connect to the internet "
            "or choose a local folder."
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
        raise HubError(
            f"The Hugging Face Hub cannot be reached to download {repo_id} ({exc.__class__.__name__}); check the "
            "connection, or choose a model folder or .gguf file on this computer."
        ) from None


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


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path | None:
    """A usable snapshot (config + weights) from the cache, if there is one: cached models load offline."""
    import huggingface_hub as hub
    from huggingface_hub import errors as hub_errors

    try:
        folder = Path(hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (hub_errors.LocalEntryNotFoundError, hub_errors.HFValidationError, OSError, ValueError):
        return None
    try:
        usable = (folder / "config.json").is_file() and bool(find_weight_files(folder))
    except ModelSourceError:
        return None
    return folder if usable else None


def _download(
    repo_id: str,
    revision: str | None,
    progress: DownloadProgress | None,
    cancel: Callable[[], bool] | None,
    cache_dir: str | Path | None,
) -> Path:
    import huggingface_hub as hub

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub.errors import LocalEntryNotFoundError

        raise LocalEntryNotFoundError("offline")
    files = hub.list_repo_files(repo_id, revision=revision)
    patterns = list(_HUB_BASE_PATTERNS)
    patterns += ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
    plan = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                 dry_run=True)
    check_free_space(cache_dir, sum(f.file_size or 0 for f in plan if f.will_download), repo_id)
    tqdm_class = _progress_tqdm(progress, cancel) if (progress or cancel) else None
    return Path(
        hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, tqdm_class=tqdm_class
        )
    )


def check_free_space(cache_dir: str | Path | None, needed: int, repo_id: str) -> None:
    """Refuse a download the disk cannot hold, before it starts (a half-written cache helps nobody)."""
    import shutil

    from huggingface_hub import constants

    folder = Path(cache_dir or constants.HF_HUB_CACHE)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise HubError(
            f"{repo_id} needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free on the disk of {folder}; "
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
