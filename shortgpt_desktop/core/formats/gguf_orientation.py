"""A replaced weight in Hugging Face orientation → the layout its GGUF tensor stores.

The repair and the healing change weights of a model that transformers loaded from the GGUF file, and
transformers' GGUF loader reorders some tensors while it reads them (its ``TENSOR_PROCESSORS``: llama's Q/K rows
are un-permuted, GPT-2's projections transposed, bloom's fused QKV regrouped, gemma 2/3 and nemotron norms
stored as ``1 + w``). Writing a new value back is the exact inverse of what that loader did, so an unchanged
weight would come back byte for byte and llama.cpp reads a changed one the way it reads the original.

Where the inverse is not known (an architecture transformers cannot read from GGUF, a processor this module
does not know, fused expert tensors, falcon's grouped QKV with several key/value heads), replacing the tensor is
refused with a sentence, and :func:`replacement_problem` says so before any work runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import UnsupportedModelError

#: (GGUF tensor name, key without the ``{arch}.`` prefix) → the integer the file holds for that tensor's layer
#: (``head_count`` may be a per-layer array), or None when the key is absent.
MetaInt = Callable[[str, str], "int | None"]

_EXPERTS = re.compile(r"_(exps|projs)\b|gate_up_projs")


def transformers_processor(arch: str) -> str | None:
    """The name of the tensor processor transformers' GGUF loader uses for ``arch``; None when transformers
    cannot read GGUF files of that architecture at all."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    readable = set(GGUF_CONFIG_MAPPING) | {"qwen2moe", "qwen3moe", "gpt-oss", "minimax-m2", "t5encoder"}
    if arch not in readable and arch.replace("-", "_") not in readable:
        return None
    return TENSOR_PROCESSORS.get(arch, TensorProcessor).__name__


#: Processors whose inverse is known here (anything else: replacing weights is refused).
_KNOWN = {
    "TensorProcessor", "T5TensorProcessor", "LlamaTensorProcessor", "GPT2TensorProcessor", "BloomTensorProcessor",
    "Gemma2TensorProcessor", "NemotronTensorProcessor", "Qwen2MoeTensorProcessor", "GptOssTensorProcessor",
    "MiniMaxM2TensorProcessor", "MambaTensorProcessor", "Lfm2TensorProcessor",
}


def replacement_problem(name: str, arch: str, meta_int: MetaInt) -> str | None:
    """Why the GGUF tensor ``name`` of an ``arch`` file cannot be replaced (a sentence), or None when it can."""
    processor = transformers_processor(arch)
    if processor is None:
        return (f"transformers cannot read {arch} GGUF files, so the layout of a repaired or healed {name} is "
                "unknown")
    if processor not in _KNOWN:
        return f"transformers reorders {arch} GGUF tensors in a way this tool does not know ({processor})"
    if _EXPERTS.search(name) and processor in ("Qwen2MoeTensorProcessor", "GptOssTensorProcessor",
                                               "MiniMaxM2TensorProcessor"):
        return f"{name} holds fused mixture-of-experts weights, which cannot be written back"
    if processor == "MambaTensorProcessor" and ("ssm_conv1d" in name or "ssm_a" in name):
        return f"{name} is stored transformed (mamba), and replacing it is not supported"
    if processor == "Lfm2TensorProcessor" and "shortconv.conv" in name:
        return f"{name} is stored reshaped (lfm2), and replacing it is not supported"
    if arch == "falcon" and ".attn_qkv." in name and (meta_int(name, "attention.head_count_kv") or 1) > 1:
        return ("falcon files with several key/value heads group the fused QKV rows differently from "
                f"transformers, so {name} cannot be written back")
    if processor == "BloomTensorProcessor" and "attn_qkv" in name and not meta_int(name, "attention.head_count"):
        return f"{name} is a fused QKV tensor and the file has no attention.head_count to regroup it"
    return None


def to_gguf(array: Any, name: str, arch: str, expected: tuple[int, ...], meta_int: MetaInt) -> Any:
    """``array`` (numpy, Hugging Face orientation) in the layout the GGUF stores, shape ``expected`` (numpy order).

    Raises :class:`UnsupportedModelError` when the tensor cannot be replaced (see :func:`replacement_problem`).
    """
    problem = replacement_problem(name, arch, meta_int)
    if problem is not None:
        raise UnsupportedModelError(f"{problem[0].upper()}{problem[1:]}; save as safetensors instead, or prune "
                                    "without the repair and healing.")
    processor = transformers_processor(arch)
    if processor == "LlamaTensorProcessor" and (".attn_q." in name or ".attn_k." in name):
        heads, kv_heads = meta_int(name, "attention.head_count"), meta_int(name, "attention.head_count_kv")
        if heads is not None and kv_heads is not None:  # transformers un-permutes only when it has both
            n = heads if ".attn_q." in name else kv_heads
            array = array.reshape(n, 2, array.shape[0] // n // 2, *array.shape[1:]).swapaxes(1, 2) \
                .reshape(array.shape)
    elif processor == "GPT2TensorProcessor" and any(
            f"{kind}.weight" in name for kind in ("attn_qkv", "ffn_down", "ffn_up", "attn_output")):
        array = array.T
    elif processor == "BloomTensorProcessor" and "attn_qkv" in name:
        n_head = int(meta_int(name, "attention.head_count") or 0)
        grouped = array.reshape(n_head, 3, array.shape[0] // n_head // 3, *array.shape[1:])
        array = grouped.swapaxes(0, 1).reshape(array.shape)  # [head, q|k|v, ...] → [q|k|v, head, ...]
    elif processor in ("Gemma2TensorProcessor", "NemotronTensorProcessor") and "norm.weight" in name:
        array = array + 1.0
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name}: new value has shape {tuple(array.shape)}, the file has {expected}")  # a bug
    return array
