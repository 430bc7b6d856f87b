"""Stream tensors from checkpoints into new safetensors shards without materialising them.

A safetensors file is an 8-byte header length, a JSON header (name → dtype, shape, byte offsets) and the raw
bytes. Since every tensor's dtype and shape are known up front (from the source headers, or from tensors in
memory), the header of each output shard can be written first and the data copied after it, tensor by tensor.
From a safetensors source that is a plain byte copy in bounded chunks: no tensor is ever built, and memory use
stays at one chunk whatever the model's size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UnsupportedModelError
from ..model.dtypes import dtype_name
from ..model.sources import ModelSource
from .safetensors_reader import read_safetensors_header

COPY_CHUNK_BYTES = 16 * 1024 * 1024

_TORCH_TO_SAFETENSORS = {
    "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}

_SAFETENSORS_TO_TORCH = {code: name for name, code in _TORCH_TO_SAFETENSORS.items()}
#: Stored dtypes a repaired or healed float weight can be written in (an integer-quantized one cannot).
_REPLACEABLE = ("F64", "F32", "F16", "BF16")


def dtype_of_code(code: str) -> str:
    """A safetensors dtype code as torch names the type ("BF16" → "bfloat16"; an unknown code as it is)."""
    return _SAFETENSORS_TO_TORCH.get(code, code)


@dataclass
class TensorEntry:
    """One tensor to write: its name in the output, its layout, and how to put its bytes into a file."""

    name: str
    dtype: str  # safetensors dtype code, e.g. "BF16"
    shape: list[int]
    nbytes: int
    write_to: Callable[[BinaryIO], None]


# ----------------------------------------------------------------------------------------------- sources


def safetensors_entries(path: Path) -> Iterator[TensorEntry]:
    """Entries for every tensor of a safetensors file, in file order; data is copied as raw bytes."""
    header = read_safetensors_header(path)
    data_start = header["__header_bytes__"]
    items = [(k, v) for k, v in header.items() if not k.startswith("__")]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in items:
        start, end = info["data_offsets"]
        yield TensorEntry(name, info["dtype"], list(info["shape"]), end - start,
                          _byte_copier(path, data_start + start, end - start))


def _byte_copier(path: Path, offset: int, length: int) -> Callable[[BinaryIO], None]:
    def copy(out: BinaryIO) -> None:
        with open(path, "rb") as src:
            src.seek(offset)
            left = length
            while left:
                chunk = src.read(min(COPY_CHUNK_BYTES, left))
                if not chunk:
                    raise OSError(f"{path.name} ended early while copying a tensor")
                out.write(chunk)
                left -= len(chunk)

    return copy


def tensor_entry(name: str, tensor: Any) -> TensorEntry:
    """An entry for a torch tensor (legacy ``.bin`` checkpoints, or a model in memory)."""
    dtype = dtype_name(tensor.dtype)
    if dtype not in _TORCH_TO_SAFETENSORS:
        raise UnsupportedModelError(f"The model's tensor {name} is {dtype}, which a safetensors file cannot store, so "
                                    "this model cannot be saved as safetensors.")

    def write(out: BinaryIO) -> None:
        import torch

        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        out.write(memoryview(flat.view(torch.uint8).numpy()))

    return TensorEntry(name, _TORCH_TO_SAFETENSORS[dtype], list(tensor.shape),
                       tensor.numel() * tensor.element_size(), write)


def replacement_entry(entry: TensorEntry, tensor: Any) -> TensorEntry:
    """``tensor`` written in place of ``entry``: same name and shape, cast to the dtype the entry stores."""
    import torch

    dtype = _SAFETENSORS_TO_TORCH.get(entry.dtype) if entry.dtype in _REPLACEABLE else None
    if dtype is None:
        raise UnsupportedModelError(f"The checkpoint stores {entry.name} as {entry.dtype}, which the repair and "
                                    "healing cannot write; prune this model without them.")
    if list(tensor.shape) != list(entry.shape):
        raise ValueError(f"tensor {entry.name} has shape {entry.shape}; its replacement has {list(tensor.shape)}")
    return tensor_entry(entry.name, tensor.detach().to("cpu", getattr(torch, dtype)))


def bin_entries(path: Path) -> Iterator[TensorEntry]:
    """Entries for a legacy PyTorch checkpoint, read with ``weights_only=True`` (no code runs), mapped where the
    file is torch's zip format (the format before it, torch < 1.6, cannot be mapped: it is read whole, as
    transformers reads it; mapping it failed the save after the whole job)."""
    import zipfile

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    for name, tensor in state.items():
        yield tensor_entry(name, tensor)


def checkpoint_entries(source: ModelSource) -> Iterator[TensorEntry]:
    for weight in source.weight_files:
        if weight.format == "safetensors":
            yield from safetensors_entries(weight.path)
        elif weight.format == "bin":
            yield from bin_entries(weight.path)
        else:
            raise ValueError(f"cannot stream tensors from a {weight.format} file")


def model_entries(model: Any) -> Iterator[TensorEntry]:
    """Entries for a model in memory; a tied ``lm_head`` is left out, as a stock checkpoint does."""
    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embed = model.get_input_embeddings().weight if tied else None
    for name, tensor in state.items():
        if embed is not None and name.endswith("lm_head.weight") and tensor.data_ptr() == embed.data_ptr():
            continue
        yield tensor_entry(name, tensor)


# ------------------------------------------------------------------------------------------------ writing


def plan_shards(entries: Iterable[TensorEntry], max_bytes: int) -> list[list[TensorEntry]]:
    """Group entries, in order, into shards of at most ``max_bytes`` (a bigger tensor gets a shard alone)."""
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return [s for s in shards if s]


def write_shard(path: Path, entries: list[TensorEntry], on_tensor: Callable[[], None] | None = None) -> int:
    """Write one safetensors file, header first, then each tensor's bytes; returns data bytes written."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in entries:
        header[entry.name] = {"dtype": entry.dtype, "shape": entry.shape,
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for entry in entries:
            before = out.tell()
            entry.write_to(out)
            if out.tell() - before != entry.nbytes:
                written = out.tell() - before
                raise OSError(f"tensor {entry.name} wrote {written} bytes, {entry.nbytes} expected")
            if on_tensor is not None:
                on_tensor()
    return offset


def write_sharded(folder: Path, shards: list[list[TensorEntry]],
                  on_tensor: Callable[[], None] | None = None) -> tuple[list[str], int]:
    """Write shards with Hugging Face's names (and an index when there is more than one)."""
    if len(shards) == 1:
        return ["model.safetensors"], write_shard(folder / "model.safetensors", shards[0], on_tensor)
    total = 0
    names: list[str] = []
    weight_map: dict[str, str] = {}
    for number, entries in enumerate(shards, 1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(folder / name, entries, on_tensor)
        names.append(name)
        weight_map.update({e.name: name for e in entries})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*names, "model.safetensors.index.json"], total
