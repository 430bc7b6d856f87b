"""Streamed weights are mapped from the safetensors file: the same values, never the file changed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.errors import ModelSourceError
from shortgpt_desktop.core.model.layer_weights import SafetensorsReader
from shortgpt_desktop.core.model.sources import ModelSource, WeightFile


def _write(path: Path, tensors: dict[str, torch.Tensor], pad: int) -> None:
    """A safetensors file by hand, its header padded with ``pad`` spaces (the data can start unaligned)."""
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        data = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": {torch.float32: "F32", torch.bfloat16: "BF16"}[tensor.dtype],
                        "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _source(path: Path) -> ModelSource:
    return ModelSource(spec=str(path.parent), kind="folder", folder=path.parent,
                       weight_files=[WeightFile(path, "safetensors", path.stat().st_size)])


@pytest.mark.parametrize("pad", [0, 1, 3])
def test_mapped_tensors_equal_the_file_and_writing_them_leaves_it_alone(tmp_path: Path, pad: int) -> None:
    tensors = {"model.layers.0.mlp.down_proj.weight": torch.randn(300, 70),
               "model.layers.0.input_layernorm.weight": torch.randn(70).to(torch.bfloat16),
               "model.norm.weight": torch.randn(70)}
    path = tmp_path / "model.safetensors"
    _write(path, tensors, pad)
    before = path.read_bytes()
    reader = SafetensorsReader(_source(path), "llama")
    layer = reader.layer(0)
    assert set(layer) == {k for k in tensors if ".layers.0." in k}
    for name, value in layer.items():
        torch.testing.assert_close(value, tensors[name], rtol=0, atol=0)
        value.mul_(2)  # copy-on-write: this process's copy only
    torch.testing.assert_close(reader.others()["model.norm.weight"], tensors["model.norm.weight"], rtol=0, atol=0)
    assert path.read_bytes() == before
    torch.testing.assert_close(reader.layer(0)["model.layers.0.mlp.down_proj.weight"],
                               tensors["model.layers.0.mlp.down_proj.weight"], rtol=0, atol=0)


def test_a_truncated_file_is_a_sentence_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _write(path, {"model.layers.0.mlp.down_proj.weight": torch.randn(64, 64)}, 0)
    reader = SafetensorsReader(_source(path), "llama")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelSourceError, match="truncated"):
        reader.layer(0)
