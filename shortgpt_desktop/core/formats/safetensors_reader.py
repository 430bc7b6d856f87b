"""Reading a safetensors file's header (names, dtypes, shapes, offsets) without its data.

Nothing in the header is believed before it is checked against the file's size and the format's rules (those
the safetensors library itself enforces when it loads: a JSON object, known dtypes, shapes of non-negative
integers, data offsets that match dtype × shape and tile the data section without gaps or overlaps, string
metadata), so a bad file is one sentence at inspection instead of an error deep inside a load.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelSourceError

#: The largest header the safetensors library accepts (100 MB, ``MAX_HEADER_SIZE``).
MAX_HEADER_BYTES = 100_000_000
MAX_DIMS = 16

#: Bits per element of every dtype safetensors knows (the library's ``Dtype``).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4,
    "F6_E2M3": 6, "F6_E3M2": 6,
}


class _Bad(ValueError):
    """What is wrong with a header, as the end of a sentence."""


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets), without the data.

    Raises :class:`ModelSourceError` with one sentence naming the file and what is wrong.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise _Bad("it is shorter than a header")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER_BYTES:
                raise _Bad(f"its header claims {header_len:,} bytes (at most {MAX_HEADER_BYTES:,})")
            if header_len > size - 8:
                raise ModelSourceError(f"{path.name} is truncated (it ends inside its header); download it again.")
            raw_header = f.read(header_len)
        header = _parse(raw_header)
        _check_entries(header)
        header["__header_bytes__"] = 8 + header_len
        return header
    except _Bad as exc:
        raise ModelSourceError(f"{path.name} is not a valid safetensors file: {exc}; download it again.") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ModelSourceError(f"{path.name} is not a valid safetensors file ({reason}); download it again.") \
            from None


def stored_values_and_bytes(path: Path) -> tuple[int, int]:
    """How many values a safetensors file's tensors hold and how many bytes they take, from its header."""
    tensors = [v for k, v in read_safetensors_header(path).items() if not k.startswith("__")]
    return (sum(math.prod(v["shape"]) for v in tensors),
            sum(v["data_offsets"][1] - v["data_offsets"][0] for v in tensors))


def _parse(raw: bytes) -> dict[str, Any]:
    """The header's JSON object; repeated keys (which JSON would silently merge) are refused."""
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        table = dict(pairs)
        if len(table) != len(pairs):
            raise _Bad("its header names a tensor twice")
        return table

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_repeats)
    except UnicodeDecodeError:
        raise _Bad("its header is not UTF-8 text") from None
    except RecursionError:
        raise _Bad("its header nests too deeply") from None
    except json.JSONDecodeError as exc:
        raise _Bad(f"its header is not JSON ({exc.msg.removesuffix(' at')}, byte {exc.pos})") from None
    if not isinstance(header, dict):
        raise _Bad("its header is not a JSON object")
    return header


def _check_entries(header: dict[str, Any]) -> None:
    """Every entry's dtype, shape and offsets, and the metadata; the tensors tile the data section."""
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise _Bad("its __metadata__ is not a table of strings")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if name.startswith("__"):  # every reader here skips such keys as its own: the tensor was left out unsaid
            raise _Bad(f"tensor {name} has a name starting with __, which this tool keeps for the file's own entries")
        if not isinstance(info, dict):
            raise _Bad(f"the entry of {name} is not a table")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise _Bad(f"tensor {name} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_whole(d) for d in shape):
            raise _Bad(f"tensor {name} has shape {shape!r}, not a list of non-negative whole numbers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise _Bad(f"tensor {name} has data offsets {offsets!r}, not [begin, end]")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
            size = offsets[1] - offsets[0]
            raise _Bad(f"tensor {name} is {dtype} {shape} but has {size:,} byte{'' if size == 1 else 's'} of data")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end, previous = 0, None
    for begin, stop, name in spans:
        if begin != end:
            what = "overlaps" if begin < end else "leaves a gap after"
            raise _Bad(f"tensor {name}'s data {what} {previous or 'the start of the data'}")
        end, previous = stop, name


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_safetensors(path: Path) -> dict[str, Any]:
    """Check that a safetensors file's header is sound and its data is all there (catches truncation)."""
    header = read_safetensors_header(path)
    data_start = header["__header_bytes__"]
    end = max((v["data_offsets"][1] for k, v in header.items() if not k.startswith("__")), default=0)
    size = path.stat().st_size
    if data_start + end > size:
        raise ModelSourceError(
            f"{path.name} is truncated ({size:,} bytes, {data_start + end:,} expected); download it again."
        )
    if data_start + end < size:
        extra = size - data_start - end
        what = "1 byte follows" if extra == 1 else f"{extra:,} bytes follow"
        raise ModelSourceError(f"{path.name} is not a valid safetensors file: {what} its last tensor; download it "
                               "again.")
    return header
