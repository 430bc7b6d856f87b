"""Dtype names: bytes per element of every name the engine meets (torch names and safetensors names alike)."""

from __future__ import annotations

from typing import Any

BYTES_PER_DTYPE: dict[str, float] = {
    "float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint8": 1, "bool": 1,
    "F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}


def dtype_name(dtype: object) -> str:
    """A dtype's bare name as configs and reports write it: ``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def stored_bytes_per_element(config: dict[str, Any]) -> float:
    """Bytes per value a checkpoint's ``config.json`` says it stores (``torch_dtype``, or ``dtype`` as newer
    transformers writes it); 4 when it says neither. For files whose headers cannot tell (``.bin``)."""
    return bytes_per_element(config.get("torch_dtype") or config.get("dtype"))


def bytes_per_element(name: str | None, default: float = 4.0) -> float:
    """Bytes per element for ``name`` ("bfloat16", "torch.float16", "F32"…); ``default`` when unknown."""
    if not name:
        return default
    return BYTES_PER_DTYPE.get(dtype_name(name), default)
