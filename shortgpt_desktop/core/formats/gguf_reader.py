"""Reading a GGUF file's header (metadata and tensor table) without its tensors: the one GGUF reader."""

from __future__ import annotations

import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...format import counted, in_number
from ..errors import ModelSourceError
from ..model.layer_set import first_layer_gap

#: ``name-00001-of-00003.gguf``: one part of a model that llama.cpp's gguf-split cut into several files.
SPLIT_GGUF = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-(?P<of>of)-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


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


#: Limits of the format and of llama.cpp (gguf.cpp, ggml.h): what a sound file never exceeds.
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # llama.cpp refuses a name of GGML_MAX_NAME (64) bytes or more: its buffer ends in a zero
MAX_KEY_BYTES = 65_535
#: Characters of a key or tensor name an error quotes: a corrupt header can make a "key" of a whole token list.
SHOWN_NAME_CHARS = 60


def _shown(name: str) -> str:
    """``name`` as one short quoted line for an error sentence (control characters escaped, long ones cut)."""
    return repr(name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "…")
MAX_ALIGNMENT = 1 << 30
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, the smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, 1-byte name, n_dims, one dimension, type, offset


def read_gguf_layout(path: Path) -> GGUFLayout:
    """Parse a GGUF header (metadata and tensor table) and work out the size the file must have.

    Nothing in the header is believed before it is checked against the file's size and the format's limits:
    counts, string and array lengths, dimensions, tensor types, offsets and alignment. A file that is not GGUF,
    ends early or whose header makes no sense raises :class:`ModelSourceError` with one sentence, in time and
    memory bounded by the file's size (gguf-py's reader would fail later with a numpy error, or allocate first).
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
        alignment = _alignment(fields, metadata)
        data_start = -(-header_end // alignment) * alignment
        _check_offsets(tensors, alignment)
    except _Truncated:
        raise ModelSourceError(f"{name} is incomplete or corrupt (it ends inside its header); download it again.") \
            from None
    except (ValueError, OverflowError, struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ModelSourceError(f"{name} is incomplete or corrupt ({exc}); download it again.") from None
    except OSError as exc:
        raise ModelSourceError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    end = data_start + max((t.offset + t.n_bytes for t in tensors), default=0)
    return GGUFLayout(version, metadata, fields, tensors, header_end, alignment, data_start, end)


def _alignment(fields: dict[str, GGUFField], metadata: dict[str, Any]) -> int:
    """``general.alignment``: a uint32 power of two (32 when absent), as llama.cpp requires."""
    f = fields.get("general.alignment")
    if f is None:
        return 32
    value = metadata.get("general.alignment")
    if f.type_id != 4 or not isinstance(value, int) or not 0 < value <= MAX_ALIGNMENT or value & (value - 1):
        raise ValueError(f"general.alignment {value!r} is not a power of two")
    return value


def _check_offsets(tensors: list[GGUFTensorInfo], alignment: int) -> None:
    """Each tensor's data starts on the alignment and no two tensors' data overlap."""
    previous: GGUFTensorInfo | None = None
    for tensor in sorted(tensors, key=lambda t: t.offset):
        if tensor.offset % alignment:
            raise ValueError(f"tensor {tensor.name} starts at offset {tensor.offset}, not a multiple of the "
                             f"alignment {alignment}")
        if previous is not None and previous.offset + previous.n_bytes > tensor.offset:
            raise ValueError(f"the data of tensors {previous.name} and {tensor.name} overlap")
        previous = tensor


def _parse_gguf_header(view: Any, size: int, quant_sizes: Any, quant_type: Any) -> tuple[dict, dict, list, int]:
    """Walk the header in ``view`` (a read-only mmap): metadata scalars, array lengths, the tensor table.

    Every length is checked against the bytes left in the file before anything is read or skipped, so a
    hostile count costs no memory and at most one pass over the file.
    """
    pos = 4

    def unpack(fmt: str) -> Any:
        nonlocal pos
        width = struct.calcsize(fmt)
        if pos + width > size:
            raise _Truncated()
        (value,) = struct.unpack_from("<" + fmt, view, pos)
        pos += width
        return value

    def read_string(what: str, limit: int | None = None) -> str:
        nonlocal pos
        length = unpack("Q")
        if pos + length > size:
            raise _Truncated()
        if limit is not None and length > limit:
            raise ValueError(f"{what} is {length:,} bytes long (at most {limit:,})")
        pos += length
        try:
            return bytes(view[pos - length:pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} at byte {pos - length:,} is not UTF-8 text") from None

    version = unpack("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}, which this tool cannot read"
                         + (" (a big-endian file?)" if version > 65535 else ""))
    n_tensors, n_kv = unpack("Q"), unpack("Q")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > size - pos:
        raise ValueError(f"its header claims {n_tensors:,} tensors and {n_kv:,} metadata entries, more than the "
                         f"{size:,}-byte file can hold")
    metadata: dict[str, Any] = {"#version": version}
    fields: dict[str, GGUFField] = {}
    for _ in range(n_kv):
        start = pos
        key = read_string("a metadata key", MAX_KEY_BYTES)
        if not key:
            raise ValueError(f"an empty metadata key at byte {start:,}")
        type_id = unpack("I")
        item_type, count = None, 1
        if type_id == _GGUF_ARRAY:
            item_type, count = unpack("I"), unpack("Q")
            value_start = pos
            if item_type == _GGUF_STRING:
                if count * 8 > size - pos:
                    raise _Truncated()
                for _ in range(count):
                    length = unpack("Q")  # (not ``pos += unpack(...)``: that would read pos before unpack moves it)
                    if length > size - pos:
                        raise _Truncated()
                    pos += length
            elif item_type in GGUF_SCALARS:
                if count * struct.calcsize(GGUF_SCALARS[item_type]) > size - pos:
                    raise _Truncated()
                pos += count * struct.calcsize(GGUF_SCALARS[item_type])
            else:
                raise ValueError(f"unknown array item type {item_type} in {_shown(key)}")
            metadata[key + "#len"] = count
        elif type_id == _GGUF_STRING:
            value_start = pos
            metadata[key] = read_string(f"the value of {_shown(key)}")
        elif type_id in GGUF_SCALARS:
            value_start = pos
            metadata[key] = unpack(GGUF_SCALARS[type_id])
        else:
            raise ValueError(f"unknown metadata type {type_id} for {_shown(key)}")
        if key in fields:
            raise ValueError(f"metadata key {_shown(key)} appears twice")
        fields[key] = GGUFField(key, type_id, item_type, count, start, value_start, pos)
    tensors: list[GGUFTensorInfo] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        tensor_name = read_string("a tensor name", MAX_TENSOR_NAME)
        if not tensor_name or tensor_name in names:
            raise ValueError(f"tensor name {_shown(tensor_name)} is empty or appears twice")
        names.add(tensor_name)
        n_dims = unpack("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"tensor {tensor_name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(unpack("Q") for _ in range(n_dims))
        type_id, offset = unpack("I"), unpack("Q")
        try:
            block, type_size = quant_sizes[quant_type(type_id)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {tensor_name} has unknown type {type_id}") from None
        if any(d == 0 for d in shape) or math.prod(shape) > size * block:
            raise ValueError(f"tensor {tensor_name} has dimensions {list(shape)}, impossible in a {size:,}-byte "
                             "file")
        if shape[0] % block:
            raise ValueError(f"tensor {tensor_name}'s rows of {shape[0]} values are not whole blocks of {block}")
        n_bytes = math.prod(shape) // block * type_size
        if offset > size or n_bytes > size:
            raise ValueError(f"tensor {tensor_name}'s data lies beyond the end of the file")
        tensors.append(GGUFTensorInfo(tensor_name, type_id, shape, offset, n_bytes))
    return metadata, fields, tensors, pos


def read_scalar_array(path: Path, field: GGUFField) -> list[Any]:
    """The values of an array entry of numbers (its ``item_type`` in :data:`GGUF_SCALARS`), read from its place in
    the file (:func:`read_gguf_layout` keeps only an array's length)."""
    fmt = f"<{field.count}{GGUF_SCALARS[field.item_type or 0]}"
    with open(path, "rb") as stream:
        stream.seek(field.value_start)
        return list(struct.unpack(fmt, stream.read(struct.calcsize(fmt))))


def check_gguf(path: Path) -> GGUFLayout:
    """A GGUF file that is whole: readable header, every tensor's bytes present, not one part of a split model,
    and a block count that matches its ``blk.N`` tensors."""
    _check_not_split(path)
    layout = read_gguf_layout(path)
    size = path.stat().st_size
    if size < layout.expected_size:
        raise ModelSourceError(
            f"{path.name} is incomplete or corrupt ({size:,} bytes, {layout.expected_size:,} expected); "
            "download it again."
        )
    split_count = layout.metadata.get("split.count", 1)
    if not isinstance(split_count, int) or split_count > 1:
        raise ModelSourceError(
            f"{path.name} is one part of a split GGUF model; merge the parts into one file first "
            "(llama.cpp's llama-gguf-split --merge) and choose that file."
        )
    _check_blocks(path.name, layout)
    return layout


#: The most decoder layers a model may declare (the largest released models have under 200).
MAX_LAYERS = 1000


def _check_blocks(name: str, layout: GGUFLayout) -> None:
    """``{arch}.block_count`` is a sane count and every block below it, and none above, has tensors."""
    arch = layout.metadata.get("general.architecture")
    if "general.architecture" in layout.fields and not isinstance(arch, str):
        raise ModelSourceError(f"{name} is corrupt: general.architecture is not text; download it again.")
    if not arch:
        return  # not a model llama.cpp or transformers can run; refused by name where it matters
    count = layout.metadata.get(f"{arch}.block_count")
    blocks = {int(m[1]) for t in layout.tensors if (m := _BLOCK_INDEX.match(t.name))}
    if count is None:
        if blocks:
            raise ModelSourceError(f"{name} has blk.N tensors but no {arch}.block_count; it is not a valid model.")
        return
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_LAYERS:
        raise ModelSourceError(f"{name} is corrupt: {arch}.block_count is {count!r} (1 to {MAX_LAYERS} expected); "
                               "download it again.")
    gap = first_layer_gap(count, blocks)
    if gap is not None:
        what = f"no tensors for block {gap.layer}" if gap.missing else f"tensors for block {gap.layer}"
        raise ModelSourceError(f"{name} is corrupt: its {arch}.block_count is {count} but it has {what}; "
                               "download it again.")


_BLOCK_INDEX = re.compile(r"^blk\.(\d+)\.")


def _check_not_split(path: Path) -> None:
    """Split GGUF models are refused with a sentence that says which part is missing, or how to merge them."""
    match = SPLIT_GGUF.match(path.name)
    if match is None:
        return
    count = int(match["count"])
    no = int(match["no"])
    # The parts' "-of-" and ending as this one has them: on a case-sensitive disk ``-OF-…GGUF`` parts are not
    # ``-of-…gguf`` files (this very file was said to be missing).
    parts = [path.with_name(f"{match['stem']}-{i:05d}-{match['of']}-{count:05d}{path.suffix}")
             for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ModelSourceError(
            f"{path.name} is part {no} of {count} of a split GGUF model and {counted(len(missing), 'part')} "
            f"{in_number(len(missing), 'is', 'are')} missing, "
            f"starting with {missing[0]}; download every part."
        )
    raise ModelSourceError(
        f"{path.name} is part {no} of {count} of a split GGUF model; merge the parts into one file first "
        f"(llama.cpp's llama-gguf-split --merge {parts[0].name} merged.gguf) and choose that file."
    )
