"""Does a checkpoint hold weights for exactly the layers it declares? Shared by the GGUF and safetensors checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerGap:
    """The first layer a checkpoint lacks, or else the first one it has beyond what it declares."""

    layer: int
    missing: bool


def first_layer_gap(declared: int, present: set[int], allowed: int | None = None) -> LayerGap | None:
    """``None`` when ``present`` is exactly ``0 .. declared-1`` (plus any index below ``allowed``, e.g. the
    multi-token-prediction layers some checkpoints keep after the last one)."""
    missing = sorted(set(range(declared)) - present)
    if missing:
        return LayerGap(missing[0], missing=True)
    limit = declared if allowed is None else allowed
    extra = sorted(i for i in present if i >= limit)
    return LayerGap(extra[0], missing=False) if extra else None
