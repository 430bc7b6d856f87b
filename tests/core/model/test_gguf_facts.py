"""Inspection of a GGUF from its header alone: the same facts as transformers' config, the file type's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shortgpt_desktop.core.errors import UnsupportedModelError
from shortgpt_desktop.core.formats.gguf_reader import read_gguf_layout
from shortgpt_desktop.core.model import gguf_facts
from shortgpt_desktop.core.model.loading import inspect_model
from shortgpt_desktop.core.model.sources import resolve

gguf = pytest.importorskip("gguf")


def write_gguf(path: Path, arch: str = "llama", n_layer: int = 3, file_type: int | None = 15,
               tied: bool = True, metadata: dict[str, tuple[Any, Any]] | None = None) -> Path:
    """A small GGUF with the metadata a converter writes and float tensors of the right shapes."""
    hidden, ffn, vocab = 16, 32, 40
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(4)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([f"[{i}]" for i in range(vocab)])  # no vocab_size key: the token list says it
    writer.add_token_types([1] * vocab)
    writer.add_token_merges(["[ 1"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for key, (value, value_type) in (metadata or {}).items():
        writer.add_key_value(key, value, value_type)
    f32 = np.float32
    writer.add_tensor("token_embd.weight", np.zeros((vocab, hidden), f32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, f32))
    if not tied:
        writer.add_tensor("output.weight", np.zeros((vocab, hidden), f32))
    for i in range(n_layer):
        for name, shape in (("attn_norm", (hidden,)), ("attn_q", (hidden, hidden)), ("attn_k", (8, hidden)),
                            ("attn_v", (8, hidden)), ("attn_output", (hidden, hidden)), ("ffn_norm", (hidden,)),
                            ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.zeros(shape, f32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_header_config_agrees_with_transformers(tmp_path: Path, tied: bool) -> None:
    from transformers import AutoConfig

    path = write_gguf(tmp_path / "m.gguf", tied=tied)
    fast = gguf_facts.header_config(path)
    full = AutoConfig.from_pretrained(tmp_path, gguf_file="m.gguf").to_dict()
    for key in ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "head_dim", "tie_word_embeddings"):
        assert fast[key] == full[key], key
    assert fast["vocab_size"] == 40


def test_a_vocabulary_size_in_the_metadata_wins_over_the_token_lists_length(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", metadata={"llama.vocab_size": (48, gguf.GGUFValueType.UINT32)})
    assert gguf_facts.header_config(path)["vocab_size"] == 48  # an embedding padded past the 40 tokens


def test_falcon_and_bloom_are_tied_even_with_an_output_tensor(tmp_path: Path) -> None:
    for arch in ("falcon", "bloom"):
        path = write_gguf(tmp_path / f"{arch}.gguf", arch=arch, tied=False)
        assert gguf_facts.header_config(path)["tie_word_embeddings"] is True, arch


def test_a_sliding_window_pattern_is_read_only_where_it_has_one_entry_a_layer(tmp_path: Path) -> None:
    """A pattern left unsliced by a tool that pruned only ``block_count`` describes another model: none is read."""
    key, array = "llama.attention.sliding_window_pattern", gguf.GGUFValueType.ARRAY
    stated = write_gguf(tmp_path / "stated.gguf", metadata={key: ([True, False, True], array)})
    assert gguf_facts.sliding_window_layers(stated) == [True, False, True]
    stale = write_gguf(tmp_path / "stale.gguf", metadata={key: ([True, False, True, True], array)})
    assert gguf_facts.sliding_window_layers(stale) is None


def test_inspection_reads_no_transformers_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a GGUF never goes through AutoConfig or gguf-py's reader (seconds on a real model)."""
    write_gguf(tmp_path / "m.gguf", tied=False)

    def slow(*_a, **_k):
        raise AssertionError("inspection parsed the whole GGUF")

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", slow)
    monkeypatch.setattr("gguf.GGUFReader.__init__", slow)
    info = inspect_model(resolve(str(tmp_path / "m.gguf")), "cpu", "float32", samples=2, seq_len=16)
    assert (info.n_layers, info.hidden_size, info.vocab_size, info.model_type) == (3, 16, 40, "llama")
    per_block = 2 * 16 + 2 * 16 * 16 + 2 * 8 * 16 + 3 * 32 * 16
    assert info.n_params == 3 * per_block + 2 * 40 * 16 + 16


def test_unknown_architecture_is_one_sentence(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", arch="nosucharch")
    with pytest.raises(UnsupportedModelError, match="architecture nosucharch is not supported"):
        gguf_facts.header_config(path)


@pytest.mark.parametrize(("file_type", "name"), [(15, "Q4_K_M"), (3, "Q4_1"), (0, "F32"), (1, "F16"), (None, None)])
def test_file_type_is_named_as_llama_cpp_names_it(tmp_path: Path, file_type: int | None, name: str | None) -> None:
    path = write_gguf(tmp_path / "m.gguf", file_type=file_type)
    layout = read_gguf_layout(path)
    assert gguf_facts.file_type_name(layout) == name
    # the file type's name even though every tensor here is F32; only a file without one is labelled by its tensors
    assert gguf_facts.quantization_label(layout) == (name or "F32")


def test_a_file_without_a_file_type_is_labelled_by_its_blocks_matrices_not_their_norms(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_block_count(2)
    for i in range(2):
        writer.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((4, 34), np.uint8),  # 4 rows of one Q8_0 block
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        for norm in ("attn_norm", "ffn_norm", "attn_q_norm"):  # more F32 vectors than matrices in each block
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(32, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_facts.quantization_label(read_gguf_layout(tmp_path / "m.gguf")) == "Q8_0"
