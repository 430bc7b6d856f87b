"""What a GGUF file is, from its header alone: a small config for inspection, and the file type's name.

transformers' ``AutoConfig.from_pretrained(gguf_file=...)`` parses every metadata array (the tokenizer's
vocabulary and merges) through gguf-py: seconds for a 135M model, half a minute for a 0.5B one. Inspection
needs only a few scalars (architecture, layer count, widths, vocabulary size), which the one GGUF header reader
(:mod:`..formats.gguf_reader`) gives in milliseconds. The full transformers config is kept for loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UnsupportedModelError
from ..formats.gguf_reader import GGUFLayout, check_gguf

_GGUF_BOOL = 7  # GGUF value type of a bool

#: gguf architecture → transformers ``model_type`` where they differ (as transformers' GGUF loader renames them).
_RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
            "gemma3": "gemma3_text", "gemma4": "gemma4_text"}


def header_config(path: Path, layout: GGUFLayout | None = None) -> dict[str, Any]:
    """A config dict with the fields inspection reads, built from the GGUF header's metadata scalars.

    Keys and renames follow transformers' own GGUF mapping, so the figures equal what its config would say;
    an architecture transformers cannot load is refused with the sentence :func:`.config.read_config` gives.
    """
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    layout = layout or check_gguf(path)
    meta = layout.metadata
    arch = str(meta.get("general.architecture", ""))
    model_type = _RENAMED.get(arch, arch)
    if arch == "llama" and "mistral" in str(meta.get("general.name", "")).lower():
        model_type = "mistral"
    mapping = GGUF_CONFIG_MAPPING.get(model_type) or GGUF_CONFIG_MAPPING.get(arch)
    if mapping is None:
        raise UnsupportedModelError(
            f"{path.name} cannot be read as a model by transformers (GGUF model with architecture {arch or '?'} "
            "is not supported yet)."
        )
    config: dict[str, Any] = {"model_type": model_type}
    for gguf_key, config_key in mapping.items():
        if not config_key or config_key == -1:
            continue
        value = meta.get(f"{arch}.{gguf_key}")
        if value is None and f"{arch}.{gguf_key}#len" in meta:
            continue  # a per-layer array: only its length is in the header read; inspection does not need it
        if value is not None:
            config[config_key] = value
    if not config.get("vocab_size"):
        config["vocab_size"] = int(meta.get("tokenizer.ggml.tokens#len", 0))
    config["tie_word_embeddings"] = all(t.name != "output.weight" for t in layout.tensors) or arch in ("falcon",
                                                                                                        "bloom")
    return config


def sliding_window_layers(path: Path, layout: GGUFLayout | None = None) -> list[bool] | None:
    """The per-layer sliding-window pattern a GGUF states (``{arch}.attention.sliding_window_pattern``, one bool a
    layer, True where the layer slides), or None where it states none, or a period instead.

    This tool writes one for a pruned Gemma 2/3 (the kept layers' pattern is no longer periodic by index), and
    llama.cpp reads it; transformers' GGUF config ignores it and derives the pattern from the layer count, so the
    pruned file was read back, here, as another model than the one llama.cpp runs."""
    layout = layout or check_gguf(path)
    arch = str(layout.metadata.get("general.architecture", ""))
    field = layout.fields.get(f"{arch}.attention.sliding_window_pattern")
    if field is None or field.item_type != _GGUF_BOOL or field.count != layout.metadata.get(f"{arch}.block_count"):
        return None
    with open(path, "rb") as handle:
        handle.seek(field.value_start)
        data = handle.read(field.count)
    return [byte != 0 for byte in data] if len(data) == field.count else None


def file_type_name(layout: GGUFLayout) -> str | None:
    """The quantization as llama.cpp names the file (``general.file_type`` 15 → ``Q4_K_M``), or None."""
    value = layout.metadata.get("general.file_type")
    if not isinstance(value, int):
        return None
    try:
        from gguf import LlamaFileType

        name = LlamaFileType(value).name
    except (ImportError, ValueError):
        return None
    if name == "GUESSED":
        return None
    return name.removeprefix("MOSTLY_").replace("ALL_F32", "F32")


def quantization_label(layout: GGUFLayout) -> str:
    """What a report calls the file's quantization: llama.cpp's file type name (``Q4_K_M``: a mix of tensor
    types, as llama-quantize chose them); a file without one gets its blocks' most common tensor type."""
    named = file_type_name(layout)
    if named:
        return named
    from collections import Counter

    from gguf.constants import GGMLQuantizationType

    counts = Counter(t.type_id for t in layout.tensors if t.name.startswith("blk.") and len(t.shape) > 1)
    return GGMLQuantizationType(counts.most_common(1)[0][0]).name if counts else ""


def block_elements(layout: GGUFLayout) -> tuple[dict[int, int], int]:
    """Elements of each ``blk.N`` block and of every other tensor (embeddings, head, final norm)."""
    import math

    blocks: dict[int, int] = {}
    other = 0
    for tensor in layout.tensors:
        parts = tensor.name.split(".")
        n = math.prod(tensor.shape)
        if parts[0] == "blk" and len(parts) > 1 and parts[1].isdigit():
            blocks[int(parts[1])] = blocks.get(int(parts[1]), 0) + n
        else:
            other += n
    return blocks, other
