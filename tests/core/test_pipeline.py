"""What the pipeline reads from a checkpoint without loading it: the bytes a value takes in its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shortgpt_desktop.core.model.sources import ModelSource, WeightFile
from shortgpt_desktop.core.pipeline import stored_bytes_per_param


def _shard(path: Path, tensors: dict[str, torch.Tensor]) -> WeightFile:
    save_file(tensors, path)
    return WeightFile(path, "safetensors", path.stat().st_size)


def test_every_shard_counts_in_the_bytes_a_value_takes(tmp_path: Path) -> None:
    """Two shards, 1,000 float32 values and 3,000 bfloat16 ones: 2.5 bytes a value over both (the first shard alone
    said 4), whatever the config says."""
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    shards = [_shard(tmp_path / "a.safetensors", {"w": torch.zeros(10, 100)}),
              _shard(tmp_path / "b.safetensors", {"v": torch.zeros(30, 100, dtype=torch.bfloat16)})]
    source = ModelSource("m", "folder", tmp_path, weight_files=shards)
    assert stored_bytes_per_param(source) == pytest.approx((1000 * 4 + 3000 * 2) / 4000)


@pytest.mark.parametrize(("config", "expected"), [({"torch_dtype": "bfloat16"}, 2.0), ({"dtype": "float16"}, 2.0),
                                                  ({}, 4.0)])
def test_legacy_bin_files_are_sized_by_the_configs_dtype(tmp_path: Path, config: dict, expected: float) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4, 4)}, weights)
    source = ModelSource("m", "folder", tmp_path, weight_files=[WeightFile(weights, "bin", weights.stat().st_size)])
    assert stored_bytes_per_param(source) == expected
