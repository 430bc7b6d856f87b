"""The header readers believe nothing before checking it: one targeted case per rule, one sentence each."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from shortgpt_desktop.core.errors import ModelSourceError
from shortgpt_desktop.core.formats.gguf_reader import check_gguf
from shortgpt_desktop.core.formats.safetensors_reader import check_safetensors
from shortgpt_desktop.core.model.config import check_config_values
from shortgpt_desktop.core.testing.fuzz import gguf_slots

gguf = pytest.importorskip("gguf")


@pytest.fixture
def small_gguf(tmp_path: Path) -> bytes:
    path = tmp_path / "base.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    for i in range(2):
        writer.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((32, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _patched(data: bytes, label: str, value: int) -> bytes:
    slot = next(s for s in gguf_slots(data) if s.label == label)
    out = bytearray(data)
    out[slot.offset:slot.offset + slot.width] = value.to_bytes(slot.width, "little")
    return bytes(out)


@pytest.mark.parametrize(("label", "value", "message"), [
    ("tensor count", 1 << 60, "more than the .* file can hold"),
    ("metadata count", 1 << 40, "more than the .* file can hold"),
    ("dimensions of blk.0.ffn_down.weight", 5, "5 dimensions"),
    ("dimension 1 of blk.0.ffn_down.weight", 0, "impossible"),
    ("dimension 0 of token_embd.weight", 1 << 62, "impossible"),
    ("type of blk.1.ffn_down.weight", 12, "not whole blocks of 256"),  # Q4_K rows of 32 values
    ("type of blk.1.ffn_down.weight", 99, "unknown type 99"),
    ("offset of blk.1.ffn_down.weight", 8, "not a multiple of the alignment"),
    ("offset of blk.1.ffn_down.weight", 0, "overlap"),
    ("offset of blk.1.ffn_down.weight", 1 << 62, "beyond the end of the file"),
    ("value of llama.block_count", 3, "block_count is 3 but it has no tensors for block 2"),
    ("value of llama.block_count", 1, "block_count is 1 but it has tensors for block 1"),
    ("key length", 1 << 20, "ends inside its header|at most"),
])
def test_a_gguf_header_is_checked_against_the_file(small_gguf: bytes, tmp_path: Path, label: str, value: int,
                                                   message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(_patched(small_gguf, label, value))
    with pytest.raises(ModelSourceError, match=message) as refused:
        check_gguf(path)
    assert str(refused.value).startswith("bad.gguf ") and "\n" not in str(refused.value)


def test_a_gguf_key_that_is_not_utf8_is_named(small_gguf: bytes, tmp_path: Path) -> None:
    slot = next(s for s in gguf_slots(small_gguf) if s.label == "key length")
    data = bytearray(small_gguf)
    data[slot.offset + 8] = 0xFF
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match=r"metadata key at byte 32 is not UTF-8"):
        check_gguf(path)


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


@pytest.mark.parametrize(("change", "message"), [
    ({"a": {"dtype": "Q4", "shape": [2, 2], "data_offsets": [0, 16]}}, "unknown dtype 'Q4'"),
    ({"a": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}, "not a list of non-negative whole"),
    ({"a": {"dtype": "F32", "shape": [2, True], "data_offsets": [0, 16]}}, "not a list of non-negative whole"),
    ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, r"is F32 \[2, 3\] but has 16 bytes"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}, "not \\[begin, end\\]"),
    ({"b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}}, "overlaps"),
    ({"b": {"dtype": "F16", "shape": [4], "data_offsets": [20, 28]}}, "leaves a gap"),
    ({"__metadata__": {"format": 5}}, "not a table of strings"),
    ({"a": [1]}, "not a table"),
    ({"__metadata__": {"format": "pt", "note": 5}}, "not a table of strings"),
    ({"a": {"dtype": "F32", "shape": [1] * 15 + [2, 2], "data_offsets": [0, 16]}}, "not a list of non-negative"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16, 24]}}, "not \\[begin, end\\]"),
    ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]},  # 12 bits: not whole bytes
      "b": {"dtype": "F16", "shape": [4], "data_offsets": [1, 9]}}, r"F4 \[3\] but has 1 byte of data;"),
    # Every reader skipped such a key as its own: the tensor was counted by the check, then left out of the save.
    ({"b": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]},
      "__b": {"dtype": "F32", "shape": [1], "data_offsets": [20, 24]}},
     "tensor __b has a name starting with __"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]},
      "b": {"dtype": "F16", "shape": [4], "data_offsets": [24, 32]}}, "a's data leaves a gap after the start of the"),
])
def test_a_safetensors_header_is_checked(tmp_path: Path, change: dict, message: str) -> None:
    path = _safetensors(tmp_path / "model.safetensors", {**GOOD, **change}, bytes(28 if "28" in str(change) else 24))
    with pytest.raises(ModelSourceError, match=message) as refused:
        check_safetensors(path)
    assert str(refused.value).startswith("model.safetensors ") and "\n" not in str(refused.value)


def test_safetensors_trailing_bytes_repeated_names_and_deep_json(tmp_path: Path) -> None:
    assert check_safetensors(_safetensors(tmp_path / "ok.safetensors", GOOD, bytes(24)))
    with pytest.raises(ModelSourceError, match="8 bytes follow its last tensor"):
        check_safetensors(_safetensors(tmp_path / "t.safetensors", GOOD, bytes(32)))
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
          b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    (tmp_path / "d.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4))
    with pytest.raises(ModelSourceError, match="names a tensor twice"):
        check_safetensors(tmp_path / "d.safetensors")
    raw = b"[" * 50_000 + b"]" * 50_000
    (tmp_path / "n.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ModelSourceError, match=r"nests too deeply|not a JSON object"):
        check_safetensors(tmp_path / "n.safetensors")


def test_a_safetensors_file_too_short_or_claiming_too_much_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    for data, message in [(b"\x08\x00\x00", "it is shorter than a header"),
                          (struct.pack("<Q", 100_000_001), "its header claims 100,000,001 bytes"),
                          (struct.pack("<Q", 20) + b'{"a": 1}' + bytes(11), r"truncated \(it ends inside its header")]:
        path.write_bytes(data)
        with pytest.raises(ModelSourceError, match=message):
            check_safetensors(path)


def test_one_byte_missing_or_left_over_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="not a valid safetensors file: 1 byte follows its last tensor"):
        check_safetensors(_safetensors(tmp_path / "t.safetensors", GOOD, bytes(25)))
    with pytest.raises(ModelSourceError, match=r"truncated \(\d+ bytes, \d+ expected\)"):
        check_safetensors(_safetensors(tmp_path / "s.safetensors", GOOD, bytes(23)))


@pytest.mark.parametrize(("config", "message"), [
    ({"num_hidden_layers": 0}, "num_hidden_layers = 0"),
    ({"num_hidden_layers": True}, "num_hidden_layers = True"),
    ({"num_hidden_layers": 1001}, "num_hidden_layers = 1001; a model has a whole number from 1 to 1,000"),
    ({"num_key_value_heads": []}, r"num_key_value_heads = \[\]"),  # a per-layer list of no layers
    ({"hidden_size": "64"}, "hidden_size = '64'"),
    ({"vocab_size": 10**9}, "vocab_size = 1000000000"),
    ({"intermediate_size": -1}, "intermediate_size = -1"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "do not group evenly"),
    ({"hidden_size": 64, "num_attention_heads": 5}, "does not divide evenly"),
    ({"model_type": ["llama"]}, "not a name"),
    ({"architectures": ["LlamaForCausalLM", 7]}, "not a list of names"),
    ({"text_config": {"hidden_size": 0}}, "hidden_size = 0"),
    ({"hidden_size": [1, 2, 3]}, r"hidden_size = \[1, 2, 3\]"),  # found by the fuzz test: per-layer lists only
])
def test_config_sizes_are_bounded(config: dict, message: str) -> None:
    with pytest.raises(ModelSourceError, match=rf"^config\.json gives .*{message}.*\.$"):
        check_config_values(config, "config.json")
    check_config_values({"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                         "num_key_value_heads": 3, "vocab_size": 49152, "num_kv_heads": [1, 2]}, "config.json")
    # Llama 3.1 405B's sizes; heads whose head_dim is given need not divide the hidden size.
    check_config_values({"num_hidden_layers": 126, "hidden_size": 16384, "num_attention_heads": 128,
                         "num_key_value_heads": 8, "intermediate_size": 53248, "vocab_size": 128256,
                         "max_position_embeddings": 131072}, "config.json")
    check_config_values({"hidden_size": 64, "num_attention_heads": 5, "head_dim": 16}, "config.json")
