"""A tiny random model with a real tokenizer, built offline in seconds.

The self-test of the installed app, the tests and the benchmarks use it: it goes through the very same
loading, scoring, saving and reloading code as a real model, without a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..measure.calibration import builtin_corpus

TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}

#: A tiny Llama shaped so that healing outweighs the rest of a job (16 layers, a 1536-wide MLP): what autograd
#: keeps for a step's backward pass dominates its memory (the healing tests and ``benchmarks/bench_heal_memory.py``).
HEALING_HEAVY_LLAMA: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 1536,
    "num_hidden_layers": 16,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}


_TINY_COMMON = dict(vocab_size=512, max_position_embeddings=256)
_TINY_TOKENS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)

#: One tiny random config per supported family (4-6 layers, hidden 64): short name → (model_type, kwargs).
#: Families with per-layer attention types get *mixed* types with a sliding window of 8, shorter than the test
#: prompts, so that keeping each surviving layer's own type after pruning is actually exercised.
TINY_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
    )),
    # Mistral: one global sliding_window for ALL layers (no layer_types).
    "mistral": ("mistral", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )),
    "mixtral": ("mixtral", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=8,
    )),
    # Qwen2: layer_types derived from max_window_layers: layers i >= max_window_layers are sliding.
    "qwen2": ("qwen2", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
        use_sliding_window=True, sliding_window=8, max_window_layers=3,
    )),
    # Qwen2-MoE: decoder_sparse_step=2 -> layers with (i+1)%2==0 (1,3,5) are MoE, 0,2,4 dense MLP;
    # layer_types derived: sliding iff (i+1)%2 and i < max_window_layers -> [S,F,S,F,F,F].
    "qwen2_moe": ("qwen2_moe", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, decoder_sparse_step=2,
        use_sliding_window=True, sliding_window=8, max_window_layers=4,
    )),
    "qwen3": ("qwen3", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        use_sliding_window=True, sliding_window=8, max_window_layers=3,
    )),
    # Qwen3-MoE: NO layer_types (sliding_window, if enabled, is global). MoE/dense mix via
    # mlp_only_layers=[0, 3] (dense) with decoder_sparse_step=1 (all others MoE).
    "qwen3_moe": ("qwen3_moe", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        decoder_sparse_step=1, mlp_only_layers=[0, 3],
    )),
    "gemma": ("gemma", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )),
    # Gemma2: default layer_types alternate sliding/full (even i sliding).
    "gemma2": ("gemma2", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=8,
    )),
    # Gemma3 text-only (Gemma3ForCausalLM / Gemma3TextConfig): explicit mixed layer_types.
    "gemma3": ("gemma3_text", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention",
                     "sliding_attention", "sliding_attention", "full_attention"],
    )),
    # Phi-3: optional global sliding_window (no layer_types).
    "phi3": ("phi3", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, original_max_position_embeddings=256,
        sliding_window=8,
    )),
    "gpt2": ("gpt2", dict(
        vocab_size=512, n_positions=256, n_embd=64, n_layer=6, n_head=4, n_inner=128,
        bos_token_id=1, eos_token_id=2,
    )),
    "gpt_neox": ("gpt_neox", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4,
    )),
    "gptj": ("gptj", dict(
        vocab_size=512, n_positions=256, n_embd=64, n_layer=6, n_head=4, n_inner=128, rotary_dim=8,
        bos_token_id=1, eos_token_id=2,
    )),
    "opt": ("opt", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, ffn_dim=128, num_hidden_layers=6, num_attention_heads=4,
    )),
    "falcon": ("falcon", dict(
        vocab_size=512, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
        hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
    )),
    "stablelm": ("stablelm", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
    )),
    "olmo": ("olmo", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
    )),
    "olmo2": ("olmo2", dict(
        **_TINY_COMMON, **_TINY_TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2,
    )),
}


def build_tokenizer(folder: str | Path, vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on the built-in corpus; it adds ``<s>`` like Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(builtin_corpus()[:40], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[
        ("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(folder))
    return fast


def with_tokenizer(folder: Path, config_kwargs: dict[str, Any], tokenizer_from: str | Path | None) -> dict[str, Any]:
    """Put a tokenizer in ``folder`` (copied from ``tokenizer_from``, or trained) and return ``config_kwargs`` with
    the vocabulary size and special token ids it gives (where they are not set already)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        for item in Path(tokenizer_from).iterdir():
            if item.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy2(item, folder / item.name)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        tokenizer = build_tokenizer(folder)
    kwargs = dict(config_kwargs)
    kwargs.setdefault("vocab_size", len(tokenizer))
    kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
    kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    return kwargs


def build_tiny_model(folder: str | Path, model_type: str = "llama", config_overrides: dict[str, Any] | None = None,
                     seed: int = 0, tokenizer_from: str | Path | None = None) -> Path:
    """Write a random ``model_type`` model (safetensors + config + tokenizer) to ``folder``."""

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    kwargs = dict(TINY_LLAMA) if model_type == "llama" and config_overrides is None else dict(config_overrides or {})
    kwargs = with_tokenizer(folder, kwargs, tokenizer_from)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms start at exactly 1; real ones are not, and cosines would not notice the norm
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    model.eval()
    model.save_pretrained(folder)
    return folder
