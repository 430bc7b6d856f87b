"""Streamed weights are mapped from the safetensors file: the same values, never the file changed."""

from __future__ import annotations

import json
import mmap
import shutil
import struct
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends.streamed import StreamedModel
from shortgpt_desktop.core.errors import ModelSourceError, UnsupportedModelError
from shortgpt_desktop.core.model.layer_weights import SafetensorsReader
from shortgpt_desktop.core.model.sources import ModelSource, WeightFile, resolve


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


@pytest.mark.parametrize("cut", [100, 1])
def test_a_truncated_file_is_a_sentence_not_a_crash(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "model.safetensors"
    _write(path, {"model.layers.0.mlp.down_proj.weight": torch.randn(64, 64)}, 0)
    reader = SafetensorsReader(_source(path), "llama")
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ModelSourceError, match="truncated"):
        reader.layer(0)


def test_a_tensor_stored_in_a_dtype_the_layer_reader_cannot_read_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    text = json.dumps({"model.layers.0.mlp.down_proj.weight": {"dtype": "U16", "shape": [2],
                                                               "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    with pytest.raises(UnsupportedModelError, match=r"^model\.safetensors stores model\.layers\.0\.mlp\.down_proj"
                                                    r"\.weight as U16, which layer-by-layer scoring cannot read"):
        SafetensorsReader(_source(path), "llama")


def test_an_empty_tensor_whose_data_starts_on_a_page_reads_as_empty(tmp_path: Path) -> None:
    """An empty tensor maps nothing: a map of 0 bytes would take the rest of the file."""
    tensors = {"model.layers.0.mlp.bias": torch.empty(0, 5), "model.layers.0.input_layernorm.weight": torch.randn(5)}
    path = tmp_path / "model.safetensors"
    _write(path, tensors, 0)
    header_bytes = int.from_bytes(path.read_bytes()[:8], "little")
    _write(path, tensors, mmap.ALLOCATIONGRANULARITY - 8 - header_bytes)  # the data starts on a map boundary
    layer = SafetensorsReader(_source(path), "llama").layer(0)
    assert layer["model.layers.0.mlp.bias"].shape == (0, 5)
    torch.testing.assert_close(layer["model.layers.0.input_layernorm.weight"],
                               tensors["model.layers.0.input_layernorm.weight"], rtol=0, atol=0)


def _broken_copy(tiny_model: Path, folder: Path, change) -> ModelSource:
    """A copy of the tiny model whose checkpoint ``change`` edits (it gets the name → tensor dict to change)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_model, folder)
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return resolve(str(folder))


def test_a_layer_with_weights_missing_or_of_the_wrong_shape_is_a_sentence(tiny_model: Path, tmp_path: Path) -> None:
    def drop_mlp(tensors: dict) -> None:
        for name in [k for k in tensors if k.startswith("model.layers.2.mlp.")]:
            del tensors[name]

    def drop_down(tensors: dict) -> None:
        del tensors["model.layers.2.mlp.down_proj.weight"]

    def narrow(tensors: dict) -> None:
        name = "model.layers.2.mlp.down_proj.weight"
        tensors[name] = tensors[name][:, :-1].contiguous()

    for change, message in [
        (drop_mlp, r"^The checkpoint has no weights for decoder layer 2 \(mlp\.\w+_proj\.weight and 2 more\); it "
                   r"cannot be scored layer by layer\.$"),
        (drop_down, r"^The checkpoint has no weights for decoder layer 2 \(mlp\.down_proj\.weight\); it cannot be "
                    r"scored layer by layer\.$"),  # not "… and 0 more"
        (narrow, r"^The checkpoint's model\.layers\.2\.mlp\.down_proj\.weight has shape \(64, 127\) where the model "
                 r"expects \(64, 128\); it cannot be scored layer by layer \(decoder layer 2\)\.$"),
    ]:
        source = _broken_copy(tiny_model, tmp_path / change.__name__, change)
        with StreamedModel(source) as model:
            with model.open_layer(1):
                pass
            with pytest.raises(UnsupportedModelError, match=message), model.open_layer(2):
                pass


def test_a_gguf_streams_its_first_and_last_blocks(tiny_q4_gguf: Path) -> None:
    with StreamedModel(resolve(str(tiny_q4_gguf))) as model:
        for index in (0, len(model.layers) - 1):
            with model.open_layer(index) as layer:
                assert all(p.device.type != "meta" for p in layer.parameters())
