"""The fast GGUF reader builds, field for field and tensor for tensor, the reader gguf-py builds."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from shortgpt_desktop.core.model.gguf_fast_reader import FastGGUFReader
from shortgpt_desktop.core.testing.gguf_export import export_gguf


def assert_same_reader(fast: Any, reference: Any) -> None:
    """Every field (offset, name, data indices, types, and each part's dtype, shape and bytes) and every tensor."""
    assert list(fast.fields) == list(reference.fields)
    for name, expected in reference.fields.items():
        got = fast.fields[name]
        assert (got.offset, got.name, got.data, got.types) == (expected.offset, expected.name, expected.data,
                                                                expected.types), name
        assert len(got.parts) == len(expected.parts), name
        for mine, theirs in zip(got.parts, expected.parts, strict=True):
            assert (mine.dtype, mine.shape, mine.tobytes()) == (theirs.dtype, theirs.shape, theirs.tobytes()), name
        assert got.contents() == expected.contents(), name
    assert (fast.alignment, fast.data_offset, fast.byte_order) == (reference.alignment, reference.data_offset,
                                                                   reference.byte_order)
    assert len(fast.tensors) == len(reference.tensors)
    for mine, theirs in zip(fast.tensors, reference.tensors, strict=True):
        assert (mine.name, mine.tensor_type, mine.n_elements, mine.n_bytes, mine.data_offset) == \
            (theirs.name, theirs.tensor_type, theirs.n_elements, theirs.n_bytes, theirs.data_offset)
        assert np.array_equal(mine.shape, theirs.shape) and np.array_equal(mine.data, theirs.data)


def test_a_models_file_reads_as_gguf_py_reads_it(tmp_path: Path, tiny_model: Path) -> None:
    """A tiny Llama exported with its tokenizer: string arrays (tokens, merges), float and int arrays (scores,
    token types), scalars and tensors."""
    path = tmp_path / "tiny.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer")
    fast = FastGGUFReader(path)
    reference = gguf.GGUFReader(path)
    tokens = reference.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) > 100  # the arrays this reader is for
    assert_same_reader(fast, reference)
    # ... read its own way: plain views where gguf-py's are memory-map slices
    assert type(fast.fields["tokenizer.ggml.tokens"].parts[tokens.data[0]]) is np.ndarray
    assert type(tokens.parts[tokens.data[0]]) is np.memmap


def test_every_kind_of_array_reads_as_gguf_py_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "kinds.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_array("test.strings", ["a", "", "é 漢字 🙂", "x" * 1000])
    writer.add_array("test.floats", [0.5, -1.0, float("inf")])
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_array("test.bools", [True, False])
    writer.add_array("test.nested", [[1, 2], [3]])  # an array of arrays: gguf-py's own code reads it
    writer.add_string("test.string", "hello")
    writer.add_uint32("test.uint", 7)
    writer.add_tensor("weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_same_reader(FastGGUFReader(path), gguf.GGUFReader(path))


def _handmade(path: Path, item_type: int, count: int, items: bytes) -> Path:
    """A GGUF v3 file with no tensors and one array field ``test.array`` (``count`` elements, ``items`` bytes)."""
    key = b"test.array"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    body = struct.pack("<IIQ", 9, item_type, count) + items  # 9: array
    data = header + body
    path.write_bytes(data + b"\0" * (-len(data) % 32))
    return path


def test_an_empty_array_reads_as_gguf_py_reads_it(tmp_path: Path) -> None:
    path = _handmade(tmp_path / "empty.gguf", 8, 0, b"")
    assert_same_reader(FastGGUFReader(path), gguf.GGUFReader(path))


def test_a_writable_reader_is_gguf_pys_own(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "tiny.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer")
    field = FastGGUFReader(path, "r+").fields["tokenizer.ggml.tokens"]
    assert type(field.parts[field.data[0]]) is np.memmap


@pytest.mark.parametrize("cut", ["in a string's length", "in a string's bytes", "in a float array",
                                 "in an array's header"])
def test_an_array_cut_short_is_refused_with_a_value_error(tmp_path: Path, cut: str) -> None:
    """A file that ends inside its vocabulary is refused (the loaders turn a ValueError into one sentence)."""
    if cut == "in an array's header":
        path = tmp_path / "header.gguf"
        data = _handmade(path, 8, 3, b"").read_bytes()
        path.write_bytes(data[: data.index(b"test.array") + len(b"test.array") + 6])
    elif cut == "in a float array":
        path = tmp_path / "floats.gguf"
        data = _handmade(path, 6, 1000, struct.pack("<3f", 1, 2, 3)).read_bytes()
        path.write_bytes(data.rstrip(b"\0"))
    else:
        one = struct.pack("<Q", 5) + b"hello"
        items = one + (struct.pack("<Q", 5)[:4] if cut == "in a string's length" else struct.pack("<Q", 50) + b"ab")
        path = tmp_path / "strings.gguf"
        path.write_bytes(_handmade(path, 8, 3, items).read_bytes().rstrip(b"\0"))
    with pytest.raises(ValueError):
        FastGGUFReader(path)


@pytest.mark.slow
def test_the_real_models_read_as_gguf_py_reads_them(smollm2_gguf: Path, gemma3_gguf: Path) -> None:
    """SmolLM2's 49k-token vocabulary and Gemma 3's 262k (byte tokens, every script) read alike; and each metadata
    value as transformers reads it, by the faster reading a load uses (``gguf_parse_once._parse_value``)."""
    from transformers.integrations.ggml import _gguf_parse_value

    from shortgpt_desktop.core.model import gguf_parse_once

    for path in (smollm2_gguf, gemma3_gguf):
        fast = FastGGUFReader(path)
        assert_same_reader(fast, gguf.GGUFReader(path))
        with gguf_parse_once.gguf_parsed_once():
            for key, field in fast.fields.items():
                theirs = [_gguf_parse_value(field.parts[i], field.types) for i in field.data]
                ours = [gguf_parse_once._parse_value(field.parts[i], field.types) for i in field.data]
                assert ours == theirs and list(map(type, ours)) == list(map(type, theirs)), key


def test_a_big_endian_file_reads_as_gguf_py_reads_it(tmp_path: Path) -> None:
    """The fast reader's arrays follow the file's byte order, not this host's."""
    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "hello", "wörld", "x" * 300])
    writer.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0, 3.0])
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8).byteswap())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    fast, reference = FastGGUFReader(str(path)), gguf.GGUFReader(str(path))
    assert fast.byte_order == reference.byte_order == "S"  # the other order than this (little-endian) host's
    for name in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores"):
        assert fast.fields[name].contents() == reference.fields[name].contents()
    assert fast.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "hello", "wörld", "x" * 300]
