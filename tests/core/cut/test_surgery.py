"""In-memory surgery: the reversible view equals permanent pruning and leaves the model exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.surgery import layer_sizes, prune_in_memory, pruned_view
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve

IDS = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])


@pytest.mark.parametrize("name", ["gemma3", "qwen2_moe", "gpt2"])
def test_view_equals_pruning_and_restores(tiny_family, name: str, tiny_model: Path, tmp_path: Path) -> None:
    folder = tiny_family(name)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    removed = [1, 5]
    with torch.no_grad():
        before = loaded.model(input_ids=IDS).logits
        config_before = loaded.model.config.to_dict()
        with pruned_view(loaded.model, loaded.family, removed) as patch:
            viewed = loaded.model(input_ids=IDS).logits
            viewed_generation = loaded.model.generate(IDS, max_new_tokens=5, do_sample=False, use_cache=True)
            assert patch[loaded.family.count_field] == 4
        assert loaded.model.config.to_dict() == config_before
        torch.testing.assert_close(loaded.model(input_ids=IDS).logits, before, rtol=0, atol=0)
        other = load_model(resolve(str(folder)), "cpu", "float32")
        prune_in_memory(other.model, other.family, removed)
        torch.testing.assert_close(other.model(input_ids=IDS).logits, viewed, rtol=1e-6, atol=1e-6)
        assert torch.equal(other.model.generate(IDS, max_new_tokens=5, do_sample=False, use_cache=True),
                           viewed_generation)


def test_layer_sizes_count_tied_weights_once(tiny_model: Path) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    sizes = layer_sizes(loaded.model, loaded.family)
    assert sizes.total_params == sum(p.numel() for p in loaded.model.parameters())
    assert len(sizes.layer_params) == 6 and len(set(sizes.layer_params)) == 1
