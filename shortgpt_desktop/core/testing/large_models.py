"""Random models of any size written straight to sharded safetensors, never whole in memory.

For the streaming benchmark and the memory-limit test: one tensor at a time is drawn and one shard at a time is
written, so a model larger than the RAM can be built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_random_model(
    folder: str | Path,
    config_kwargs: dict[str, Any],
    model_type: str = "llama",
    tokenizer_from: str | Path | None = None,
    shard_bytes: int = 500_000_000,
    seed: int = 0,
) -> Path:
    """Write a random ``model_type`` model (config, tokenizer, safetensors shards + index) to ``folder``.

    Tensor names are the model's parameter names, which is the checkpoint layout of families without weight
    conversions (Llama, Mistral, Qwen2...). Norm weights are drawn in [0.5, 1.5], the rest N(0, 0.02).
    """
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from .tiny_models import with_tokenizer

    folder = Path(folder)
    kwargs = with_tokenizer(folder, config_kwargs, tokenizer_from)
    config = AutoConfig.for_model(model_type, **kwargs)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    shapes = {name: tuple(p.shape) for name, p in skeleton.named_parameters()}  # tied weights appear once
    config.save_pretrained(folder)

    generator = torch.Generator().manual_seed(seed)
    shard: dict[str, Any] = {}
    shard_size = 0
    shard_names: list[list[str]] = []

    def flush() -> None:
        nonlocal shard, shard_size
        if not shard:
            return
        name = f"shard-{len(shard_names):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        shard_names.append(list(shard))
        shard, shard_size = {}, 0

    for name, shape in shapes.items():
        if "norm" in name and name.endswith("weight"):
            tensor = torch.rand(shape, generator=generator) + 0.5
        elif name.endswith("bias"):
            tensor = torch.zeros(shape)
        else:
            tensor = torch.randn(shape, generator=generator).mul_(0.02)
        size = tensor.numel() * 4
        if shard and shard_size + size > shard_bytes:
            flush()
        shard[name] = tensor
        shard_size += size
    flush()
    total = sum(len(names) for names in shard_names)
    final_names = {}
    for i, names in enumerate(shard_names):
        old = folder / f"shard-{i:05d}.safetensors"
        new = f"model-{i + 1:05d}-of-{len(shard_names):05d}.safetensors"
        old.rename(folder / new)
        for key in names:
            final_names[key] = new
    index = {"metadata": {"total_size": sum(4 * _numel(s) for s in shapes.values()), "tensors": total},
             "weight_map": final_names}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return folder


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
