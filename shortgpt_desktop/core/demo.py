"""A tiny random model with a real tokenizer, built offline in seconds.

The self-test of the installed app, the tests and the benchmarks use it: it goes through the very same
loading, scoring, saving and reloading code as a real model, without a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .calibration import builtin_corpus

TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
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


def build_tiny_model(folder: str | Path, model_type: str = "llama", config_overrides: dict[str, Any] | None = None,
                     seed: int = 0, tokenizer_from: str | Path | None = None) -> Path:
    """Write a random ``model_type`` model (safetensors + config + tokenizer) to ``folder``."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        for item in Path(tokenizer_from).iterdir():
            if item.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy2(item, folder / item.name)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        tokenizer = build_tokenizer(folder)
    kwargs = dict(TINY_LLAMA) if model_type == "llama" and config_overrides is None else dict(config_overrides or {})
    kwargs.setdefault("vocab_size", len(tokenizer))
    kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
    kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
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
