"""Repaired and healed weights written into a GGUF file come back from transformers' GGUF loader unchanged.

The round trip on the writer level, for every architecture transformers reads from GGUF with a tensor
processor of its own and the plain ones: a value in Hugging Face orientation is written by the pruning writer
(F32 source, so no rounding), the written tensor is read back with gguf-py and put through the processor
transformers' loader applies (``TENSOR_PROCESSORS``) with the config it builds from the metadata, and must equal
the value. Where the layout is not known the job is refused with one sentence before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shortgpt_desktop.core.errors import UnsupportedModelError
from shortgpt_desktop.core.formats import gguf_writer

gguf = pytest.importorskip("gguf")
V = gguf.GGUFValueType

HIDDEN, HEADS, KV_HEADS, FFN, N_LAYER = 16, 4, 2, 24, 3

#: GGUF architecture → [(Hugging Face parameter of layer 1, GGUF tensor kind, HF shape)].
CASES: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {
    "llama": [("model.layers.1.self_attn.q_proj.weight", "attn_q", (HIDDEN, HIDDEN)),
              ("model.layers.1.self_attn.k_proj.weight", "attn_k", (HIDDEN // HEADS * KV_HEADS, HIDDEN)),
              ("model.layers.1.mlp.down_proj.weight", "ffn_down", (HIDDEN, FFN))],
    "qwen2": [("model.layers.1.self_attn.q_proj.weight", "attn_q", (HIDDEN, HIDDEN)),
              ("model.layers.1.self_attn.k_proj.weight", "attn_k", (HIDDEN // HEADS * KV_HEADS, HIDDEN))],
    "stablelm": [("model.layers.1.self_attn.q_proj.weight", "attn_q", (HIDDEN, HIDDEN)),
                 ("model.layers.1.self_attn.k_proj.weight", "attn_k", (HIDDEN // HEADS * KV_HEADS, HIDDEN))],
    "starcoder2": [("model.layers.1.self_attn.q_proj.weight", "attn_q", (HIDDEN, HIDDEN))],
    "phi3": [("model.layers.1.self_attn.qkv_proj.weight", "attn_qkv", (3 * HIDDEN, HIDDEN))],
    "falcon": [("transformer.h.1.self_attention.query_key_value.weight", "attn_qkv", (HIDDEN + 2 * 4, HIDDEN))],
    "gpt2": [("transformer.h.1.attn.c_attn.weight", "attn_qkv", (HIDDEN, 3 * HIDDEN)),
             ("transformer.h.1.mlp.c_proj.weight", "ffn_down", (FFN, HIDDEN)),
             ("transformer.h.1.mlp.c_fc.weight", "ffn_up", (HIDDEN, FFN))],
    "nemotron": [("model.layers.1.input_layernorm.weight", "attn_norm", (HIDDEN,))],  # stored as 1 + w
    "bloom": [("transformer.h.1.self_attention.query_key_value.weight", "attn_qkv", (3 * HIDDEN, HIDDEN))],
    "gemma2": [("model.layers.1.self_attn.q_proj.weight", "attn_q", (HIDDEN, HIDDEN)),
               ("model.layers.1.input_layernorm.weight", "attn_norm", (HIDDEN,))],
    "gemma3": [("model.layers.1.post_attention_layernorm.weight", "post_attention_norm", (HIDDEN,))],
}


def _metadata(arch: str) -> dict[str, tuple[Any, Any]]:
    kv = 1 if arch == "falcon" else KV_HEADS
    return {f"{arch}.attention.head_count": (HEADS, V.UINT32), f"{arch}.attention.head_count_kv": (kv, V.UINT32),
            f"{arch}.embedding_length": (HIDDEN, V.UINT32), f"{arch}.feed_forward_length": (FFN, V.UINT32)}


def _tiny_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], metadata: dict[str, tuple[Any, Any]]) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(N_LAYER)
    for key, (value, vtype) in metadata.items():
        writer.add_key_value(key, value, vtype)
    writer.add_tensor("token_embd.weight", np.zeros((8, HIDDEN), np.float32))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gguf_shape(arch: str, kind: str, hf_shape: tuple[int, ...]) -> tuple[int, ...]:
    """numpy shape of the GGUF tensor: GPT-2 keeps Conv1D's [in, out], the GGUF stores [out, in]."""
    if arch == "gpt2" and len(hf_shape) == 2:
        return hf_shape[::-1]
    return hf_shape


def _transformers_view(arch: str, name: str, data: np.ndarray, metadata: dict[str, tuple[Any, Any]]) -> np.ndarray:
    """What transformers' GGUF loader makes of a stored tensor: its processor, with the config it derives."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    mapping = GGUF_CONFIG_MAPPING[arch]
    config = {mapping[k.split(".", 1)[1]]: v for k, (v, _) in metadata.items()
              if mapping.get(k.split(".", 1)[1])}
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config)
    return processor.process(weights=data, name=name, parsed_parameters={"tensors": {}}).weights


@pytest.mark.parametrize("arch", sorted(CASES))
def test_a_replaced_weight_comes_back_from_transformers_unchanged(arch: str, tmp_path: Path) -> None:
    _check_round_trip(arch, _metadata(arch), tmp_path)


def test_an_older_llama_file_without_a_kv_head_count_keeps_q_and_k_as_stored(tmp_path: Path) -> None:
    """transformers un-permutes Q and K only where both head counts are in the file; without
    ``head_count_kv`` it reads them as stored, so the writer must not permute them either (Q was written permuted,
    and K was a TypeError after the repair had run)."""
    metadata = {k: v for k, v in _metadata("llama").items() if not k.endswith("head_count_kv")}
    _check_round_trip("llama", metadata, tmp_path)


def _check_round_trip(arch: str, metadata: dict[str, tuple[Any, Any]], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {}
    for _, kind, hf_shape in CASES[arch]:
        for i in range(N_LAYER):
            tensors[f"blk.{i}.{kind}.weight"] = rng.normal(0, 1, _gguf_shape(arch, kind, hf_shape)).astype(np.float32)
    path = _tiny_gguf(tmp_path / f"{arch}.gguf", arch, tensors, metadata)
    new = {hf: rng.normal(0, 1, shape).astype(np.float32) for hf, _, shape in CASES[arch]}
    gguf_writer.check_gguf_replacements(path, repair=True, heal=True)  # refuses nothing here
    result = gguf_writer.write_pruned_gguf(path, [0], tmp_path / "out", replaced=new)  # layer 1 becomes 0
    reader = gguf.GGUFReader(str(result.gguf_path))
    written = {t.name: np.asarray(t.data).reshape(tuple(int(d) for d in reversed(t.shape))) for t in reader.tensors}
    for hf, kind, _ in CASES[arch]:
        name = f"blk.0.{kind}.weight"
        back = _transformers_view(arch, name, written[name], metadata)
        np.testing.assert_allclose(back, new[hf], atol=1e-6, err_msg=f"{arch} {hf}")
        unchanged = f"blk.1.{kind}.weight"  # old layer 2, byte for byte
        np.testing.assert_array_equal(written[unchanged], tensors[f"blk.2.{kind}.weight"])


@pytest.mark.parametrize(("arch", "metadata", "kind", "match"), [
    ("falcon", {"falcon.attention.head_count": (4, V.UINT32), "falcon.attention.head_count_kv": (2, V.UINT32)},
     "attn_qkv", "group the fused QKV rows"),
    ("gptneox", {"gptneox.attention.head_count": (4, V.UINT32)}, "attn_qkv", "transformers cannot read gptneox"),
])
def test_unknown_layouts_are_refused_before_any_work(arch: str, metadata: dict, kind: str, match: str,
                                                     tmp_path: Path) -> None:
    tensors = {f"blk.{i}.{kind}.weight": np.zeros((3 * HIDDEN, HIDDEN), np.float32) for i in range(N_LAYER)}
    path = _tiny_gguf(tmp_path / f"{arch}.gguf", arch, tensors, metadata)
    gguf_writer.check_gguf_replacements(path, repair=True, heal=False)  # the repair touches only ffn_down
    with pytest.raises(UnsupportedModelError, match=rf"(?i){match}.*save as safetensors instead.*\.$") as refused:
        gguf_writer.check_gguf_replacements(path, repair=False, heal=True)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("name", "arch", "match"), [
    ("blk.0.ffn_up_exps.weight", "qwen2moe", "mixture-of-experts"),
    ("blk.0.ffn_gate_up_projs.weight", "qwen2moe", "mixture-of-experts"),
    ("blk.0.ffn_down_projs.weight", "minimax-m2", "mixture-of-experts"),
    ("blk.0.ssm_a", "mamba", "stored transformed"),
    ("blk.0.ssm_conv1d.weight", "mamba", "stored transformed"),
])
def test_tensors_stored_fused_or_transformed_are_never_written_back(name: str, arch: str, match: str) -> None:
    from shortgpt_desktop.core.formats.gguf_orientation import replacement_problem

    assert match in (replacement_problem(name, arch, lambda n, k: 4) or "")


def test_a_mixture_of_experts_router_can_be_written_back() -> None:
    from shortgpt_desktop.core.formats.gguf_orientation import replacement_problem

    assert replacement_problem("blk.0.ffn_gate_inp.weight", "qwen2moe", lambda n, k: 4) is None


def test_a_replaced_weight_without_a_gguf_tensor_is_a_sentence(tmp_path: Path) -> None:
    """Used to be a bare ValueError (a bug dialog in the window) after the repair or healing had run."""
    metadata = _metadata("llama")
    tensors = {f"blk.{i}.ffn_down.weight": np.zeros((HIDDEN, FFN), np.float32) for i in range(N_LAYER)}
    path = _tiny_gguf(tmp_path / "llama.gguf", "llama", tensors, metadata)
    with pytest.raises(UnsupportedModelError, match=r"up_proj\.weight has no tensor in llama\.gguf.*\.$"):
        gguf_writer.write_pruned_gguf(path, [0], tmp_path / "out",
                                      replaced={"model.layers.1.mlp.up_proj.weight": np.zeros((FFN, HIDDEN))})
    assert not (tmp_path / "out").exists()
