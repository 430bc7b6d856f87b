"""Every supported family: prune two non-adjacent layers (one of them the last), save, reload, generate.

Each family's outcome is recorded in pytest's cache; ``python benchmarks/family_table.py`` turns the last run
into the README's table of supported families.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.surgery import prune_in_memory
from shortgpt_desktop.core.errors import UnsupportedModelError
from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
from shortgpt_desktop.core.measure.scoring import _identity_hook
from shortgpt_desktop.core.model.families import FAMILIES, discover_family, family_for_model_type
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

RESULTS_KEY = "shortgpt/family-results"
PROMPT = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])  # 12 tokens > sliding window 8


def skip_layers_reference(model, layers, removed: list[int]) -> torch.Tensor:
    """The original model with the removed layers turned into no-ops: no surgery involved at all."""
    handles = [layers[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in removed]
    try:
        with torch.no_grad():
            return model(input_ids=PROMPT).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest):
    recorded: dict[str, dict[str, object]] = {}
    yield recorded
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is None:
        return
    previous = cache.get(RESULTS_KEY, {})
    previous.update(recorded)
    cache.set(RESULTS_KEY, previous)


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_family_prunes_saves_reloads_and_generates(tiny_family, name: str, tiny_model: Path, tmp_path: Path,
                                                   results) -> None:
    from transformers import AutoModelForCausalLM

    model_type = TINY_FAMILIES[name][0]
    results[name] = {"model_type": model_type, "passed": False}
    folder = tiny_family(name)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    family = family_for_model_type(model_type)
    assert loaded.family is family, "every tested family has its own entry, not the fallback"
    n = loaded.n_layers
    removed = [1, n - 1]
    original_types = loaded.config.get("layer_types")
    layers = loaded.model.get_submodule(family.layers_path)
    reference = skip_layers_reference(loaded.model, layers, removed)

    save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=removed,
                out=tmp_path / "out", model=loaded.model, tokenizer=loaded.tokenizer)
    prune_in_memory(loaded.model, loaded.family, removed)
    with torch.no_grad():
        in_memory = loaded.model(input_ids=PROMPT).logits
    torch.testing.assert_close(in_memory, reference, rtol=1e-5, atol=1e-5)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    with torch.no_grad():
        saved = reloaded(input_ids=PROMPT).logits
    torch.testing.assert_close(saved, in_memory, rtol=1e-5, atol=1e-5)

    with torch.no_grad():
        cached = reloaded.generate(PROMPT, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=True)
        full = reloaded.generate(PROMPT, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config[family.count_field] == n - 2
    kept_types = None
    if original_types:
        kept_types = [original_types[i] for i in range(n) if i not in removed]
        assert config["layer_types"] == kept_types
        assert reloaded.config.layer_types == kept_types
        assert len(set(original_types)) > 1 or name not in ("qwen2", "qwen3", "gemma2", "gemma3"), "mixed types"
    results[name] = {
        "model_type": model_type, "passed": True, "layers": n, "removed": removed,
        "layers_path": family.layers_path, "count_field": family.count_field,
        "per_layer_types": kept_types is not None,
    }


def test_every_family_entry_is_tested() -> None:
    assert {f.name for f in FAMILIES} == {mt for mt, _ in TINY_FAMILIES.values()}


def test_discovery_fallback_finds_the_layers(tiny_model: Path) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    config = dict(loaded.config, model_type="brand_new_llm", layer_types=["full_attention"] * 6)
    family = discover_family(loaded.model, config)
    assert family.layers_path == "model.layers" and family.count_field == "num_hidden_layers"
    assert family.per_layer_lists == ("layer_types",)


def test_fallback_refuses_what_it_cannot_find() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(UnsupportedModelError, match="MysteryForCausalLM is not a supported architecture"):
        discover_family(model, {"model_type": "mystery", "architectures": ["MysteryForCausalLM"],
                                "num_hidden_layers": 4})


def test_fallback_refuses_experts_every_kth_layer(tiny_model: Path) -> None:
    """DeepSeek's ``moe_layer_freq``: removing a layer would shift which layers have experts."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    config = dict(loaded.config, model_type="mystery_moe", moe_layer_freq=2)
    with pytest.raises(UnsupportedModelError, match="one layer in 2 is a mixture of experts"):
        discover_family(loaded.model, config)
    assert discover_family(loaded.model, dict(config, moe_layer_freq=1)).index_thresholds == ()


def test_gpt2_with_per_layer_attention_scaling_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    model_type, kwargs = TINY_FAMILIES["gpt2"]
    folder = build_tiny_model(tmp_path / "g", model_type, config_overrides={**kwargs,
                              "scale_attn_by_inverse_layer_idx": True}, tokenizer_from=tiny_model)
    with pytest.raises(UnsupportedModelError, match="scale_attn_by_inverse_layer_idx"):
        load_model(resolve(str(folder)), "cpu", "float32")


def test_readme_table_lists_every_family() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("<!-- families:begin -->") : readme.index("<!-- families:end -->")]
    for family in FAMILIES:
        row = next((line for line in table.splitlines() if f"| `{family.name}` |" in line), "")
        assert "passed" in row, f"README has no passing row for {family.name}; run tools/family_table.py"


FALLBACK_FAMILIES = {
    "phi": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5,
            "num_attention_heads": 4, "max_position_embeddings": 256},
    "granite": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256},
    # Two dense layers, then experts: with layer 1 removed the saved config must say one dense layer, or the first
    # expert layer reloads as a dense MLP with its weights missing. A sliding-window threshold, as Qwen-style models
    # carry it, must be renumbered the same way (DeepSeek ignores it; the config keeps it).
    "deepseek_v3": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                    "num_hidden_layers": 5, "num_attention_heads": 4, "num_key_value_heads": 4,
                    "max_position_embeddings": 256, "n_routed_experts": 4, "n_shared_experts": 1,
                    "num_experts_per_tok": 2, "first_k_dense_replace": 2, "n_group": 1, "topk_group": 1,
                    "q_lora_rank": None, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
                    "v_head_dim": 16, "max_window_layers": 4},
}


@pytest.mark.parametrize("model_type", list(FALLBACK_FAMILIES))
def test_unlisted_family_goes_through_the_fallback_end_to_end(model_type: str, tiny_model: Path,
                                                              tmp_path: Path) -> None:
    """A transformers family with no entry here is found by shape and pruned as faithfully as a listed one."""
    from transformers import AutoModelForCausalLM

    assert family_for_model_type(model_type) is None
    folder = build_tiny_model(tmp_path / model_type, model_type, config_overrides=FALLBACK_FAMILIES[model_type],
                              tokenizer_from=tiny_model)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    assert loaded.family.name.endswith("(discovered)")
    layers = loaded.model.get_submodule(loaded.family.layers_path)
    removed = [1, 4]
    reference = skip_layers_reference(loaded.model, layers, removed)
    save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=removed,
                out=tmp_path / "out", model=loaded.model, tokenizer=loaded.tokenizer)
    saved = json.loads((tmp_path / "out" / "config.json").read_text(encoding="utf-8"))
    kept = [i for i in range(len(layers)) if i not in removed]
    for key in ("first_k_dense_replace", "max_window_layers"):  # "the layers below this index": among the kept ones
        if key in FALLBACK_FAMILIES[model_type]:
            kept_below = sum(1 for i in kept if i < FALLBACK_FAMILIES[model_type][key])
            assert saved[key] == kept_below, (key, saved[key])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=PROMPT).logits, reference, rtol=1e-5, atol=1e-5)
        cached = reloaded.generate(PROMPT, max_new_tokens=10, min_new_tokens=10, do_sample=False, use_cache=True)
        full = reloaded.generate(PROMPT, max_new_tokens=10, min_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen2_moe", "qwen3", "qwen3_moe"])
def test_the_config_patch_renumbers_every_field_that_counts_or_names_layers(model_type: str) -> None:
    """What reloads the pruned weights is the patched config: every field holding the layer count, the "layers below
    this index" thresholds of the listed families (Qwen2's sliding window, read by older transformers and other
    runtimes), and transformers' per-layer overrides keyed by layer index."""
    from shortgpt_desktop.core.model.families import prune_config

    kept = [0, 2, 3, 5]  # of 6: layers 1 and 4 removed
    family = family_for_model_type(model_type)
    config = {"model_type": model_type, "num_hidden_layers": 6, "n_layer": 6, "max_window_layers": 4,
              "per_layer_config": {"3": {"rope_theta": 1.0}, "4": {"rope_theta": 2.0}, "5": {"rope_theta": 3.0}}}
    patch = prune_config(config, family, kept).values
    assert patch["num_hidden_layers"] == patch["n_layer"] == 4
    assert patch["max_window_layers"] == 3  # layers 0, 2 and 3 are below the old 4
    assert patch["per_layer_config"] == {"2": {"rope_theta": 1.0}, "3": {"rope_theta": 3.0}}


def test_layer_keys_are_found_with_or_without_the_models_prefix() -> None:
    """GPT-2's own checkpoint names its layers ``h.0.`` (no ``transformer.``): its tensors are renumbered too."""
    pattern = family_for_model_type("gpt2").key_pattern()
    for key, pre in (("transformer.h.3.mlp.c_proj.weight", "transformer."), ("h.3.mlp.c_proj.weight", "")):
        found = pattern.match(key)
        assert found is not None and (found["pre"], found["idx"], found["rest"]) == (pre, "3", "mlp.c_proj.weight")
    assert pattern.match("transformer.wte.weight") is None
