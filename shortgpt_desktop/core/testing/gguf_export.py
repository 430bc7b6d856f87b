"""A tiny transformers model written as a GGUF that llama.cpp runs, as ``convert_hf_to_gguf.py`` writes one, for the
tests (GGUF in and out, the fuzz bases, whole jobs from a GGUF). One exporter, so every test file agrees on how
llama's Q/K rows are permuted and how Gemma's norms are stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def export_gguf(folder: Path, path: Path, arch: str = "llama", *, per_layer_arrays: bool = False,
                extra: dict[str, tuple[Any, Any]] | None = None, q8_down: bool = False,
                tokens: str = "ids", block_weights: str = "") -> Any:
    """Write the model in ``folder`` as an F32 GGUF at ``path``; returns the model (float32, eval).

    ``per_layer_arrays`` writes the feed-forward length and head counts as per-layer arrays; ``extra`` adds
    metadata (key → (value, GGUFValueType)); ``q8_down`` stores the MLP down projections as Q8_0, ``block_weights``
    every 2-D weight of the blocks in that type (a name gguf-py quantizes: ``"Q4_0"``, as a 4-bit file). ``tokens``:
    ``"ids"`` names token i ``[i]`` (ids are fed directly, and llama.cpp's per-token log-probabilities stay one
    per token), ``"tokenizer"`` writes the folder's own BPE tokenizer (for jobs that tokenise text).
    """
    import gguf
    import numpy as np
    import torch
    from gguf import quants
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg = model.config
    n_layer, n_head, n_kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(n_layer)
    per_layer = (lambda v: [v] * n_layer) if per_layer_arrays else (lambda v: v)
    writer.add_feed_forward_length(per_layer(cfg.intermediate_size))
    writer.add_head_count(per_layer(n_head))
    writer.add_head_count_kv(per_layer(n_kv))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = cfg.rope_parameters
    writer.add_rope_freq_base(float((rope.get("full_attention") or rope)["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    for key, (value, value_type) in (extra or {}).items():
        writer.add_key_value(key, value, value_type)
    _add_tokenizer(writer, folder, cfg, tokens)
    names = gguf.get_tensor_name_map({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], n_layer)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert target is not None, name
        if arch == "llama" and target.endswith(("attn_q.weight", "attn_k.weight")):
            heads = n_head if "attn_q" in target else n_kv
            data = data.reshape(heads, 2, data.shape[0] // heads // 2, *data.shape[1:]).swapaxes(1, 2) \
                .reshape(data.shape)
        if arch.startswith("gemma") and target.endswith("norm.weight"):
            data = data + 1.0  # gemma's RMSNorm multiplies by (1 + w); llama.cpp by the stored w
        kind = (block_weights if block_weights and target.startswith("blk.") and data.ndim == 2
                else "Q8_0" if q8_down and target.endswith("ffn_down.weight") else "")
        if kind:
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(target, quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _add_tokenizer(writer: Any, folder: Path, cfg: Any, tokens: str) -> None:
    if tokens == "ids":
        # ASCII texts keep llama.cpp's per-token log-probabilities one per token (a byte-level piece that is not
        # whole UTF-8 is merged into the next entry).
        names = [f"[{i}]" for i in range(cfg.vocab_size)]
        types = [1] * len(names)
        merges = ["[ 1"]
    elif tokens == "tokenizer":
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = tok["model"]["vocab"]
        for added in tok.get("added_tokens", []):
            vocab.setdefault(added["content"], added["id"])
        names = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        special = {a["content"] for a in tok.get("added_tokens", [])}
        types = [3 if t in special else 1 for t in names]
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    else:
        raise ValueError(f"tokens must be 'ids' or 'tokenizer', not {tokens!r}")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(names)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
