"""In-memory surgery: the reversible view equals permanent pruning and leaves the model exactly as it was."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shortgpt_desktop.core.cut.surgery import layer_sizes, prune_in_memory, pruned_view, renumber_layer_indices
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
            # The model's own config says what it now is (the cache and the attention masks read it).
            assert getattr(loaded.model.config, loaded.family.count_field) == 4
            if "layer_types" in config_before:
                kept_types = [config_before["layer_types"][i] for i in (0, 2, 3, 4)]
                assert loaded.model.config.layer_types == kept_types
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


def test_a_submodules_own_config_is_pruned_in_the_view_and_restored_after_it(tiny_model: Path) -> None:
    """Some models copy config values onto submodules at construction: those copies are patched too, and the view
    puts back their values, and takes away a field it added."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    copied, bare = SimpleNamespace(num_hidden_layers=6), SimpleNamespace()
    loaded.model.model.norm.config, loaded.model.lm_head.config = copied, bare
    with pruned_view(loaded.model, loaded.family, [1, 5]):
        assert copied.num_hidden_layers == 4 and bare.num_hidden_layers == 4
    assert vars(copied) == {"num_hidden_layers": 6} and vars(bare) == {}


def test_renumbering_changes_only_the_attributes_that_held_the_layers_old_index() -> None:
    attention, other = torch.nn.Module(), torch.nn.Module()
    attention.layer_idx, other.layer_id = 3, 7  # 7: an unrelated integer that happens to share a name
    layer = torch.nn.Module()
    layer.attention, layer.other = attention, other
    renumber_layer_indices([layer])
    assert (attention.layer_idx, other.layer_id) == (0, 7)
