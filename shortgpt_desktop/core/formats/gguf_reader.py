"""Reading a GGUF file's header (metadata and tensor table) without its tensors: the one GGUF reader."""

from __future__ import annotations

import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelSourceError

#: ``name-00001-of-00003.gguf``: one part of a model that llama.cpp's gguf-split cut into several files.
_SPLIT_GGUF = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


#: GGUF metadata value types: id → struct format of a scalar (8 = string, 9 = array, handled apart).
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


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
            elif item_type in GGUF_SCALARS:
                pos += count * struct.calcsize(GGUF_SCALARS[item_type])
            else:
                raise ValueError(f"unknown array item type {item_type} in {key}")
            if pos > size:
                raise _Truncated()
            metadata[key + "#len"] = count
        elif type_id == _GGUF_STRING:
            value_start = pos
            metadata[key] = read_string()
        elif type_id in GGUF_SCALARS:
            value_start = pos
            metadata[key] = unpack(GGUF_SCALARS[type_id])
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
