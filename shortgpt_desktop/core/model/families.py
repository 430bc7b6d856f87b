"""Per-family facts about decoder-only models, as data, plus a generic fallback for unknown ones.

For every family the pruner needs to know four things:

* where the list of decoder layers lives in the module tree (``model.layers``, ``transformer.h``...);
* which config field holds the layer count (``num_hidden_layers``, ``n_layer``...);
* which config fields are indexed by layer and how to shorten them (``layer_types`` lists one entry per layer,
  ``mlp_only_layers`` lists layer *indices*, ``max_window_layers`` is a threshold on the index...);
* how the layers' tensors are named in a checkpoint, so saving can rename them without loading the model.

It also names each family's MLP output projection, where the training-free repair of :mod:`.repair` folds
its linear map.

Everything here works on plain dicts (a ``config.json``) so that the saver and the in-memory surgery apply the
very same rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedModelError

#: Config fields that may hold the number of decoder layers, in the order they are tried.
LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass(frozen=True)
class Family:
    """How one family of models lays out its decoder layers."""

    name: str
    model_types: tuple[str, ...]
    label: str = ""  # how people call the family (README table, window)
    layers_path: str = "model.layers"
    count_field: str = "num_hidden_layers"
    #: Config fields holding one entry per layer (sliced to the kept layers).
    per_layer_lists: tuple[str, ...] = ("layer_types",)
    #: Config fields holding a list of layer indices (remapped; removed layers drop out).
    layer_index_lists: tuple[str, ...] = ()
    #: Integer fields "layers with index >= N behave differently" (N becomes the count of kept layers < N).
    index_thresholds: tuple[str, ...] = ()
    #: Integer field "every k-th layer is sparse" (MoE); replaced by an explicit list after pruning.
    sparse_step: str | None = None
    #: The MLP's output projection, relative to a decoder layer (``mlp.down_proj``); its output is exactly what
    #: the layer adds to the residual stream, so a linear map folded into it needs no new parameters
    #: (:mod:`.repair`). None where no such projection exists; ``repair_note`` then says why.
    mlp_out: str | None = None
    #: A norm applied to the MLP output before the residual add (Gemma 2/3, OLMo 2), relative to a decoder layer:
    #: the repair's map is then fitted through it (:mod:`.repair`), since a plain least-squares map would be undone.
    mlp_out_norm: str | None = None
    #: The config field that bounds the positions a model can read, where it keeps a table of them: learned absolute
    #: position embeddings (GPT-2, OPT), or GPT-J's table of rotary sines and cosines. A longer sample indexes past
    #: the table (IndexError). None: positions computed as far as asked (rotary in other families, ALiBi).
    positions_field: str | None = None
    repair_note: str = ""
    notes: str = ""

    def key_pattern(self) -> re.Pattern[str]:
        """Regex over checkpoint tensor names: groups ``pre`` (prefix), ``idx`` (layer index), ``rest``.

        Checkpoints do not always carry the full module path (GPT-2's original weights say ``h.0.`` rather
        than ``transformer.h.0.``), so every suffix of the path is accepted.
        """
        parts = self.layers_path.split(".")
        prefixes = [".".join(parts[i:-1]) for i in range(len(parts) - 1)] + [""]
        alternatives = "|".join(re.escape(p + ".") if p else "" for p in prefixes)
        return re.compile(rf"^(?P<pre>(?:{alternatives})){re.escape(parts[-1])}\.(?P<idx>\d+)\.(?P<rest>.+)$")


_LABELS = {
    "llama": "Llama 1-3", "mistral": "Mistral", "mixtral": "Mixtral (MoE)", "qwen2": "Qwen2 / Qwen2.5",
    "qwen2_moe": "Qwen2-MoE", "qwen3": "Qwen3", "qwen3_moe": "Qwen3-MoE", "gemma": "Gemma", "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3 (text)", "phi3": "Phi-3", "gpt2": "GPT-2", "gpt_neox": "GPT-NeoX (Pythia)",
    "gptj": "GPT-J", "opt": "OPT", "falcon": "Falcon", "stablelm": "StableLM", "olmo": "OLMo", "olmo2": "OLMo 2",
}


#: Why a family's decoder layers have no single MLP output projection to fold a repair into.
MOE_NOTE = "a mixture-of-experts layer has no single MLP output projection to fold a linear map into"
DISCOVERED_NOTE = "the MLP of a model found by shape is not known"


def _family(name: str, *model_types: str, **kwargs: Any) -> Family:
    return Family(name=name, model_types=model_types or (name,), label=_LABELS.get(name, name), **kwargs)


#: The families this tool is tested on (see tests/core/model/test_families.py and the README table).
FAMILIES: tuple[Family, ...] = (
    _family("llama", mlp_out="mlp.down_proj"),
    _family("mistral", mlp_out="mlp.down_proj"),
    _family("mixtral", repair_note=MOE_NOTE),
    _family("qwen2", index_thresholds=("max_window_layers",), mlp_out="mlp.down_proj"),
    _family(
        "qwen2_moe",
        index_thresholds=("max_window_layers",),
        layer_index_lists=("mlp_only_layers",),
        sparse_step="decoder_sparse_step",
        mlp_out="mlp.down_proj",  # dense (mlp_only) layers only; a sparse layer is skipped at repair time
    ),
    _family("qwen3", index_thresholds=("max_window_layers",), mlp_out="mlp.down_proj"),
    _family(
        "qwen3_moe",
        index_thresholds=("max_window_layers",),
        layer_index_lists=("mlp_only_layers",),
        sparse_step="decoder_sparse_step",
        mlp_out="mlp.down_proj",  # dense (mlp_only) layers only; a sparse layer is skipped at repair time
    ),
    _family("gemma", mlp_out="mlp.down_proj"),
    _family("gemma2", mlp_out="mlp.down_proj", mlp_out_norm="post_feedforward_layernorm"),
    _family("gemma3_text", mlp_out="mlp.down_proj", mlp_out_norm="post_feedforward_layernorm"),
    _family("phi3", mlp_out="mlp.down_proj"),
    _family("gpt2", layers_path="transformer.h", count_field="n_layer", mlp_out="mlp.c_proj",
            positions_field="n_positions"),
    _family("gpt_neox", layers_path="gpt_neox.layers", mlp_out="mlp.dense_4h_to_h"),
    _family("gptj", layers_path="transformer.h", count_field="n_layer", mlp_out="mlp.fc_out",
            positions_field="n_positions"),
    _family("opt", layers_path="model.decoder.layers", mlp_out="fc2", positions_field="max_position_embeddings"),
    _family("falcon", layers_path="transformer.h", mlp_out="mlp.dense_4h_to_h"),
    _family("stablelm", mlp_out="mlp.down_proj"),
    _family("olmo", mlp_out="mlp.down_proj"),
    _family("olmo2", mlp_out="mlp.down_proj", mlp_out_norm="post_feedforward_layernorm"),
)

_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def family_for_model_type(model_type: str | None) -> Family | None:
    """The known family for a ``config.model_type``, or None."""
    return _BY_MODEL_TYPE.get(model_type or "")


def layer_count(config: dict[str, Any], family: Family | None = None) -> int:
    """Number of decoder layers a config dict declares."""
    fields = (family.count_field, *LAYER_COUNT_FIELDS) if family else LAYER_COUNT_FIELDS
    for name in fields:
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    raise UnsupportedModelError(
        f"The model's config ({config.get('model_type', 'unknown type')}) does not say how many layers it has."
    )


def refits_whole(family: Family, width: int) -> bool:
    """Whether the repair may refit an MLP output projection ``width`` inputs wide whole (:mod:`..cut.repair`): no
    norm follows it and its sums stay within :data:`..defaults.MAX_PROJECTION_INPUTS` (whether its ridge can be
    judged on held-out samples is the fit's call)."""
    from .. import defaults

    return family.mlp_out_norm is None and 0 < width <= defaults.MAX_PROJECTION_INPUTS


def get_submodule(model: Any, dotted: str) -> Any:
    obj = model
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


#: Integer config fields known to mean "layers below this index differ" in families with no entry here: DeepSeek
#: V2/V3's dense layers before the experts (``first_k_dense_replace``), Qwen-style sliding-window layers. Kept as
#: they were, a pruned DeepSeek's first expert layer was built dense, its expert weights dropped as unexpected.
DISCOVERED_THRESHOLDS = ("first_k_dense_replace", "max_window_layers")


def discover_family(model: Any, config: dict[str, Any]) -> Family:
    """Fallback for a model type we have no entry for: find its decoder layers by shape.

    The decoder stack is the longest ``ModuleList`` whose children all share one class and whose length is the
    config's layer count. Config fields whose value is a list as long as the layer count are treated as
    per-layer. If nothing fits, the model is refused rather than mis-pruned.
    """
    import torch.nn as nn

    model_type = config.get("model_type", "unknown")
    architecture = (config.get("architectures") or [model_type])[0]
    try:
        count = layer_count(config)
    except UnsupportedModelError:
        count = -1
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1 or len(module) != count:
            continue
        if best is None or len(module) > best[0]:
            best = (len(module), name)
    if best is None:
        raise UnsupportedModelError(
            f"{architecture} is not a supported architecture: its decoder layers could not be found, so it "
            "cannot be pruned safely."
        )
    count_field = next(f for f in LAYER_COUNT_FIELDS if config.get(f) == count)
    per_layer = tuple(
        k for k, v in config.items() if isinstance(v, list) and len(v) == count and k != "architectures"
    )
    step = config.get("moe_layer_freq")
    if isinstance(step, int) and not isinstance(step, bool) and step > 1:
        raise UnsupportedModelError(
            f"{architecture} is not a supported architecture: one layer in {step} is a mixture of experts "
            "(moe_layer_freq), a pattern that removing layers would shift, so it cannot be pruned safely.")
    thresholds = tuple(k for k in DISCOVERED_THRESHOLDS
                       if isinstance(config.get(k), int) and not isinstance(config.get(k), bool))
    return Family(
        name=f"{model_type} (discovered)",
        model_types=(model_type,),
        layers_path=best[1],
        count_field=count_field,
        per_layer_lists=per_layer,
        index_thresholds=thresholds,
        repair_note=DISCOVERED_NOTE,
        notes="found by shape, not tested",
    )


def resolve_family(model: Any, config: dict[str, Any]) -> Family:
    """The family entry for a loaded model, checked against the model itself."""
    family = family_for_model_type(config.get("model_type"))
    if family is None:
        return discover_family(model, config)
    try:
        layers = get_submodule(model, family.layers_path)
    except AttributeError:
        return discover_family(model, config)
    if family.name == "gpt2" and config.get("scale_attn_by_inverse_layer_idx"):
        raise UnsupportedModelError(
            "GPT2LMHeadModel with scale_attn_by_inverse_layer_idx scales each layer's attention by its position, "
            "which a pruned checkpoint cannot keep; this model cannot be pruned faithfully."
        )
    if len(layers) != layer_count(config, family):
        raise UnsupportedModelError(
            f"{family.name} model has {len(layers)} decoder layers but its config says "
            f"{layer_count(config, family)}; refusing to prune an inconsistent model."
        )
    return family


@dataclass
class ConfigPatch:
    """The config fields pruning changes, as new values (apply to a dict or to a config object)."""

    values: dict[str, Any] = field(default_factory=dict)


def prune_config(config: dict[str, Any], family: Family, kept: Sequence[int]) -> ConfigPatch:
    """The config changes for keeping only ``kept`` (original 0-based indices, ascending) of the layers."""
    n_layers = layer_count(config, family)
    kept = list(kept)
    new_index = {old: new for new, old in enumerate(kept)}
    patch: dict[str, Any] = {}
    for name in LAYER_COUNT_FIELDS:
        if config.get(name) == n_layers:
            patch[name] = len(kept)
    patch[family.count_field] = len(kept)

    for name in family.per_layer_lists:
        value = config.get(name)
        if isinstance(value, list) and len(value) == n_layers:
            patch[name] = [value[i] for i in kept]

    for name in family.layer_index_lists:
        value = config.get(name)
        if isinstance(value, list):
            patch[name] = [new_index[i] for i in value if i in new_index]

    for name in family.index_thresholds:
        value = config.get(name)
        if isinstance(value, int):
            patch[name] = sum(1 for i in kept if i < value)

    per_layer_config = config.get("per_layer_config")
    if isinstance(per_layer_config, dict) and per_layer_config:
        patch["per_layer_config"] = {
            str(new_index[int(k)]): v for k, v in per_layer_config.items() if int(k) in new_index
        }

    if family.sparse_step and isinstance(config.get(family.sparse_step), int):
        step = config[family.sparse_step]
        dense = set(config.get("mlp_only_layers") or [])
        if step > 1:
            dense |= {i for i in range(n_layers) if (i + 1) % step != 0}
        patch[family.sparse_step] = 1
        patch["mlp_only_layers"] = sorted(new_index[i] for i in dense if i in new_index)

    return ConfigPatch(patch)
