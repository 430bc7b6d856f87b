"""gguf-py's ``GGUFReader`` with its metadata arrays read about 20 times faster, to the same fields.

``GGUFReader`` walks each metadata array one element at a time through its general field reader: for each of
Gemma 3's 262,144 vocabulary strings it builds an enum, asks numpy for a dtype's size twice and slices the
memory map twice (each slice of an ``np.memmap`` runs a Python hook). That is 20 s of a Gemma 3 load on a 2-core
CPU (4.6 s for SmolLM2's 49k vocabulary), for a header of a few megabytes. :class:`FastGGUFReader` reads the
arrays of scalars and of strings, which is all a model's metadata holds, with one struct unpack per string and
plain numpy views: 1.1 s and 0.22 s (``benchmarks/bench_load.py``, its first lines).

The reader it builds is the same: the same fields in the same order, each with the same offset, name, data
indices, types, and parts of the same dtype, shape and bytes, and the same tensors (``tests/core/model/
test_gguf_fast_reader.py`` compares them field by field on tiny files, and on SmolLM2 and Gemma 3 in the slow
suite). The array elements' parts are views of plain ``ndarray`` type into the file's memory map instead of
``np.memmap`` views; nothing transformers or gguf-py does with them tells the two apart. Anything else (an array
of arrays, an empty array, a file in the other byte order than the host's, a writable reader) goes through
gguf-py's own code.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from gguf.constants import GGUFValueType
from gguf.gguf_reader import GGUFReader

_LENGTH = struct.Struct("=Q")  # a string's length: uint64 in the host's order (the file's, where this is used)
_UINT64 = np.dtype(np.uint64)


class FastGGUFReader(GGUFReader):
    """``GGUFReader`` (read-only use) whose metadata arrays of scalars and strings are read in bulk."""

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if raw_type != GGUFValueType.ARRAY or self.byte_order != "I" or getattr(self.data, "mode", "r") != "r":
            return super()._get_field_parts(orig_offs, raw_type)  # "S": the file's byte order is not the host's
        if orig_offs + 12 > self.data.shape[0]:
            raise ValueError(f"a metadata array's header runs past the end of the file (at byte {orig_offs})")
        raw_item_type = self._get(orig_offs, np.uint32)
        length = self._get(orig_offs + 4, np.uint64)
        count = int(length[0])
        try:
            item_type = GGUFValueType(raw_item_type[0])
        except ValueError:
            return super()._get_field_parts(orig_offs, raw_type)  # gguf-py says what is wrong
        scalar = self.gguf_scalar_to_np.get(item_type)
        if count == 0 or (scalar is None and item_type != GGUFValueType.STRING):
            return super()._get_field_parts(orig_offs, raw_type)
        offset = orig_offs + 12
        parts: list[Any] = [raw_item_type, length]
        if scalar is not None:
            items = self._get(offset, scalar, count).view(np.ndarray)
            if items.shape[0] != count:
                raise ValueError(f"a metadata array runs past the end of the file (at byte {orig_offs})")
            parts += [items[i : i + 1] for i in range(count)]
            offset += int(items.nbytes)
            return offset - orig_offs, parts, list(range(2, 2 + count)), [GGUFValueType.ARRAY, item_type]
        offset = self._read_strings(offset, count, parts)
        return offset - orig_offs, parts, list(range(3, 2 + 2 * count, 2)), [GGUFValueType.ARRAY, item_type]

    def _read_strings(self, offset: int, count: int, parts: list[Any]) -> int:
        """Append each string's two parts (its uint64 length, its bytes) to ``parts``; the offset after them."""
        plain = self.data.view(np.ndarray)  # slicing an np.memmap runs a Python hook; a plain view does not
        buffer = memoryview(plain)
        size = plain.shape[0]
        append = parts.append
        for _ in range(count):
            if offset + 8 > size:
                raise ValueError(f"a metadata string runs past the end of the file (at byte {offset})")
            (length,) = _LENGTH.unpack_from(buffer, offset)
            end = offset + 8 + length
            if end > size:
                raise ValueError(f"a metadata string runs past the end of the file (at byte {offset})")
            append(plain[offset : offset + 8].view(_UINT64))
            append(plain[offset + 8 : end])
            offset = end
        return offset
