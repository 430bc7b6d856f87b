"""Prune a loaded model in memory: drop layers, renumber the cache indices, fix every per-layer config field.

After :func:`prune_in_memory` the model behaves exactly like the folder the safetensors writer writes for the
same plan (the tests check logits and cached generation against each other).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from ..model.families import Family, get_submodule, prune_config
from .plan import LayerSizes

#: Submodule attributes that hold a layer's position; the KV cache is indexed by them.
LAYER_INDEX_ATTRIBUTES = ("layer_idx", "layer_id", "layer_index", "layer_number")


def layer_sizes(model: Any, family: Family, bytes_per_param: float | None = None) -> LayerSizes:
    """Parameters per decoder layer and outside them (tied weights counted once)."""
    layers = get_submodule(model, family.layers_path)
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    if bytes_per_param is None:
        bytes_per_param = next(model.parameters()).element_size()
    return LayerSizes(per_layer, total - sum(per_layer), float(bytes_per_param))


def renumber_layer_indices(layers: Sequence[Any]) -> None:
    """Set every ``layer_idx``-like attribute below layer ``n`` to ``n``.

    Only attributes that already held the layer's *old* index are changed, so unrelated integers that
    happen to share a name are left alone.
    """
    for new_index, layer in enumerate(layers):
        old_index = _own_index(layer)
        for module in layer.modules():
            for name in LAYER_INDEX_ATTRIBUTES:
                value = getattr(module, name, None)
                if isinstance(value, int) and not isinstance(value, bool) and (
                    old_index is None or value == old_index
                ):
                    setattr(module, name, new_index)


def _own_index(layer: Any) -> int | None:
    for module in layer.modules():
        for name in LAYER_INDEX_ATTRIBUTES:
            value = getattr(module, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def prune_in_memory(model: Any, family: Family, removed: Sequence[int]) -> dict[str, Any]:
    """Delete ``removed`` layers from ``model`` (in place) and return the config changes that were applied."""
    import torch.nn as nn

    parent_path, _, attr = family.layers_path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    layers = getattr(parent, attr)
    gone = set(removed)
    kept = [i for i in range(len(layers)) if i not in gone]
    patch = prune_config(model.config.to_dict(), family, kept).values
    new_layers = nn.ModuleList([layers[i] for i in kept])
    renumber_layer_indices(new_layers)
    setattr(parent, attr, new_layers)
    apply_patch_to_config(model.config, patch)
    # Some models copy config values onto submodules at construction time (e.g. the decoder's layer count).
    for module in model.modules():
        if module is not model and getattr(module, "config", None) is not None and module.config is not model.config:
            apply_patch_to_config(module.config, patch)
    return patch


def apply_patch_to_config(config: Any, patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        setattr(config, key, value)


@contextmanager
def pruned_view(model: Any, family: Family, removed: Sequence[int]) -> Iterator[dict[str, Any]]:
    """The model with ``removed`` layers deleted, for the duration of the ``with`` block only.

    Lets the window measure perplexity and generate with the cache on for any plan, then slide again, without
    a second copy of the model. Inside the block the model is exactly what :func:`prune_in_memory` makes.
    """
    parent_path, _, attr = family.layers_path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    old_layers = getattr(parent, attr)
    old_indices = [
        (module, name, getattr(module, name))
        for module in old_layers.modules()
        for name in LAYER_INDEX_ATTRIBUTES
        if isinstance(getattr(module, name, None), int)
    ]
    configs = [model.config] + [
        m.config for m in model.modules() if m is not model and getattr(m, "config", None) is not None
    ]
    unique_configs = list({id(c): c for c in configs}.values())
    missing = object()
    patch = prune_config(model.config.to_dict(), family, [i for i in range(len(old_layers)) if i not in set(removed)])
    saved = [(c, k, getattr(c, k, missing)) for c in unique_configs for k in patch.values]
    try:
        yield prune_in_memory(model, family, removed)
    finally:
        setattr(parent, attr, old_layers)
        for module, name, value in old_indices:
            setattr(module, name, value)
        for config, key, value in saved:
            if value is missing:
                with suppress(AttributeError):
                    delattr(config, key)
            else:
                setattr(config, key, value)
