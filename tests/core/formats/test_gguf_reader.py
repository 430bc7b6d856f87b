"""The GGUF header reader's sentences about a corrupt header stay one short line, whatever the file holds."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from shortgpt_desktop.core.errors import ModelSourceError
from shortgpt_desktop.core.formats.gguf_reader import SHOWN_NAME_CHARS, check_gguf, read_gguf_layout
from shortgpt_desktop.core.testing.fuzz import gguf_slots

gguf = pytest.importorskip("gguf")


def header(key: bytes, type_id: int) -> bytes:
    """A GGUF v3 header with no tensors and one metadata entry ``key`` of type ``type_id``, then zeros."""
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", type_id) + bytes(64))


@pytest.mark.parametrize("key", [b"general.name", b"\t".join(b"token%d" % i for i in range(2000))],
                         ids=["short", "a token list read as a key"])
def test_an_unknown_metadata_type_is_one_short_line_naming_the_key(tmp_path: Path, key: bytes) -> None:
    """A misaligned header (found by the fuzz test) can read a whole tab-separated token list as one key."""
    path = tmp_path / "model.gguf"
    path.write_bytes(header(key, 1946157056))
    with pytest.raises(ModelSourceError) as caught:
        read_gguf_layout(path)
    message = str(caught.value)
    assert "unknown metadata type 1946157056" in message
    assert "\n" not in message and "\t" not in message
    assert len(message) < 200 + SHOWN_NAME_CHARS, message
    assert key.decode()[:10].replace("\t", "\\t") in message


def _gguf(path: Path, alignment: int | None = None, extra: dict | None = None, name: str = "token_embd.weight") -> Path:
    """A two-block llama file of small F32 tensors, written by gguf-py: what a converter gives."""
    writer = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_block_count(2)
    for key, value in (extra or {}).items():
        writer.add_uint16(key, value)
    writer.add_tensor(name, np.zeros((8, 32), np.float32))
    for i in range(2):
        writer.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((32, 32), np.float32))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((32, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _patched(data: bytes, label: str, value: int) -> bytes:
    slot = next(s for s in gguf_slots(data) if s.label == label)
    out = bytearray(data)
    out[slot.offset:slot.offset + slot.width] = value.to_bytes(slot.width, "little")
    return bytes(out)


def _refused(path: Path, data: bytes, match: str) -> None:
    path.write_bytes(data)
    with pytest.raises(ModelSourceError, match=match) as refused:
        check_gguf(path)
    assert str(refused.value).startswith(f"{path.name} ") and "\n" not in str(refused.value)


@pytest.mark.parametrize("alignment", [32, 64])
def test_an_explicit_power_of_two_alignment_is_read(tmp_path: Path, alignment: int) -> None:
    layout = check_gguf(_gguf(tmp_path / "a.gguf", alignment))
    assert layout.alignment == alignment and layout.data_start % alignment == 0


@pytest.mark.parametrize("value", [0, 48, 1 << 31])
def test_an_alignment_that_is_not_a_power_of_two_is_one_sentence(tmp_path: Path, value: int) -> None:
    data = _gguf(tmp_path / "a.gguf", 32).read_bytes()
    _refused(tmp_path / "bad.gguf", _patched(data, "value of general.alignment", value), "not a power of two")


def test_an_alignment_stored_as_another_type_is_refused(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf", 32).read_bytes()
    _refused(tmp_path / "bad.gguf", _patched(data, "type of general.alignment", 5), "alignment")  # INT32


def test_a_file_one_byte_short_is_incomplete(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf").read_bytes()
    _refused(tmp_path / "bad.gguf", data[:-1],
             rf"incomplete or corrupt \({len(data) - 1:,} bytes, {len(data):,} expected\)")


def test_gguf_version_1_is_named(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf").read_bytes()
    _refused(tmp_path / "bad.gguf", _patched(data, "version", 1), "GGUF version 1, which this tool cannot read")


def test_a_repeated_key_or_tensor_name_is_refused(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf", extra={"llama.aaaa": 1, "llama.bbbb": 2}).read_bytes()
    _refused(tmp_path / "key.gguf", data.replace(b"llama.bbbb", b"llama.aaaa"), "'llama.aaaa' appears twice")
    i = data.index(b"blk.0.ffn_up.weight")
    twice = data[:i] + b"blk.1.ffn_up.weight" + data[i + 19:]
    _refused(tmp_path / "tensor.gguf", twice, "'blk.1.ffn_up.weight' is empty or appears twice")


def test_a_tensor_of_zero_dimensions_is_named(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf").read_bytes()
    _refused(tmp_path / "bad.gguf", _patched(data, "dimensions of token_embd.weight", 0), "has 0 dimensions")


def test_a_block_count_of_zero_is_refused_as_such(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf").read_bytes()
    _refused(tmp_path / "bad.gguf", _patched(data, "value of llama.block_count", 0), r"block_count is 0 \(1 to 1000")


def test_a_split_part_is_refused_by_its_metadata_or_an_upper_case_name(tmp_path: Path) -> None:
    renamed = _gguf(tmp_path / "renamed.gguf", extra={"split.count": 2, "split.no": 0})
    with pytest.raises(ModelSourceError, match="one part of a split GGUF model"):
        check_gguf(renamed)
    upper = _gguf(tmp_path / "M-00001-OF-00002.GGUF")  # the parts named as this one is (it was said missing itself)
    with pytest.raises(ModelSourceError, match=r"^M-00001-OF-00002\.GGUF is part 1 of 2 of a split GGUF model and "
                                               r"1 part is missing, starting with M-00002-OF-00002\.GGUF;"):
        check_gguf(upper)
    _gguf(tmp_path / "M-00002-OF-00002.GGUF")
    with pytest.raises(ModelSourceError, match=r"merge .*--merge M-00001-OF-00002\.GGUF merged\.gguf"):
        check_gguf(upper)


def test_block_tensors_without_a_block_count_are_refused(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf").read_bytes()
    _refused(tmp_path / "bad.gguf", data.replace(b"llama.block_count", b"llama.block_cnt_x", 1),
             "has blk.N tensors but no llama.block_count")


def test_an_empty_metadata_key_is_refused(tmp_path: Path) -> None:
    data = _gguf(tmp_path / "a.gguf", extra={"x": 1}).read_bytes()
    i = data.index(b"\x01\x00\x00\x00\x00\x00\x00\x00x")  # the key "x": its length, then its byte
    _refused(tmp_path / "bad.gguf", data[:i] + (0).to_bytes(8, "little") + data[i + 9:], "an empty metadata key")


def test_a_tensor_name_is_at_most_63_bytes_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    """llama.cpp refuses a name of GGML_MAX_NAME (64) bytes or more; 64 was accepted here, and such a file failed
    to load only in the runtime."""
    check_gguf(_gguf(tmp_path / "a.gguf", name="x" * 63))
    with pytest.raises(ModelSourceError, match="64 bytes long"):
        check_gguf(_gguf(tmp_path / "b.gguf", name="x" * 64))
