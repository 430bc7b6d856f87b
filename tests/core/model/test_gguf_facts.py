"""Inspection of a GGUF from its header alone: the same facts as transformers' config, the file type's name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shortgpt_desktop.core.errors import UnsupportedModelError
from shortgpt_desktop.core.formats.gguf_reader import read_gguf_layout
from shortgpt_desktop.core.model import gguf_facts
from shortgpt_desktop.core.model.loading import inspect_model
from shortgpt_desktop.core.model.sources import resolve

gguf = pytest.importorskip("gguf")


def write_gguf(path: Path, arch: str = "llama", n_layer: int = 3, file_type: int | None = 15,
               tied: bool = True) -> Path:
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
    assert gguf_facts.file_type_name(read_gguf_layout(path)) == name
