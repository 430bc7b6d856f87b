"""Write a pruned model as a new safetensors folder, and move it into place only when it is complete.

Tensors stream straight from the source checkpoint files (safetensors as raw bytes, legacy ``.bin`` read with
``weights_only=True``; see :mod:`.safetensors_io`): removed layers are skipped and the rest renamed to their new
index, so the model is never held in memory twice. A GGUF source has no Hugging Face tensors on disk, so its
(already dequantised) tensors are taken from the model in memory, with the names a stock loader expects.

``replaced`` (parameter name with the ORIGINAL layer index → tensor, e.g. the output of the training-free
repair) swaps single tensors for new values, written in the dtype the checkpoint stores that tensor in, under
the same name and shape; everything else is still copied byte for byte.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shortgpt_desktop.core.formats.output_folder import check_output_folder, model_own_files, output_folder
from shortgpt_desktop.core.formats.provenance import CONFIG_KEY, earlier_removed, removed_in_first_original

from ..errors import Cancelled, UnsupportedModelError
from ..model.dtypes import dtype_name
from ..model.families import Family, layer_count, prune_config
from ..model.sources import TOKENIZER_FILES, ModelSource, looks_like_hub_id
from .safetensors_io import checkpoint_entries, model_entries, plan_shards, replacement_entry, write_sharded

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
#: Config keys a GGUF-derived config carries that make no sense in a plain safetensors folder.
_GGUF_ONLY_KEYS = ("quantization_config", "_name_or_path", "transformers_version")


@dataclass
class SaveResult:
    folder: Path
    files: list[str]
    tensors: int
    bytes_written: int


# ------------------------------------------------------------------------------------------ output checks


# --------------------------------------------------------------------------------------- tensor streaming


def renamed(name: str, family: Family, new_index: dict[int, int]) -> str | None:
    """The tensor's name in the pruned model, or None when it belongs to a removed layer."""
    match = family.key_pattern().match(name)
    if match is None:
        return name
    old = int(match["idx"])
    if old not in new_index:
        return None
    return f"{match['pre']}{family.layers_path.rsplit('.', 1)[-1]}.{new_index[old]}.{match['rest']}"


def canonical_name(name: str, family: Family) -> str:
    """A layer tensor's name with the family's full module path (GPT-2 checkpoints may say ``h.0.``)."""
    match = family.key_pattern().match(name)
    if match is None:
        return name
    return f"{family.layers_path}.{match['idx']}.{match['rest']}"


# -------------------------------------------------------------------------------------------------- save


def save_pruned(
    *,
    source: ModelSource,
    family: Family,
    original_config: dict[str, Any],
    removed: Sequence[int],
    out: str | Path,
    model: Any = None,
    tokenizer: Any = None,
    card_text: str = "",
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    replaced: Mapping[str, Any] | None = None,
) -> SaveResult:
    """Write the pruned model to ``out`` atomically: a temporary folder beside it, moved in when complete.

    ``original_config`` is the loaded (unpruned) config as a dict, which includes fields the loader derives
    (``layer_types`` and the like); the written ``config.json`` keeps the source file's own keys and adds the
    corrected per-layer fields. ``model`` (unpruned) is needed only for a GGUF source. ``replaced`` maps
    parameter names with original layer indices (``model.layers.5.mlp.down_proj.weight``) to new values.
    """
    out_path = check_output_folder(Path(out), source, force)
    n_layers = layer_count(original_config, family)
    gone = set(removed)
    kept = [i for i in range(n_layers) if i not in gone]
    new_index = {old: new for new, old in enumerate(kept)}
    patch = prune_config(original_config, family, kept)
    patch.values[CONFIG_KEY] = removed_in_first_original(earlier_removed(source), sorted(gone), n_layers)

    with output_folder(out_path, force) as temp:
        written = _write_all(
            temp, source, family, original_config, patch.values, new_index, model,
            tokenizer, card_text, max_shard_bytes, progress, cancel, replaced or {},
        )
    log.info("saved pruned model to %s", out_path)
    return replace(written, folder=out_path)


def _write_all(
    temp: Path,
    source: ModelSource,
    family: Family,
    original_config: dict[str, Any],
    patch: dict[str, Any],
    new_index: dict[int, int],
    model: Any,
    tokenizer: Any,
    card_text: str,
    max_shard_bytes: int,
    progress: Callable[[str, int, int], None] | None,
    cancel: Callable[[], bool] | None,
    replaced: Mapping[str, Any],
) -> SaveResult:
    if source.gguf_file is not None and model is None:
        raise ValueError("a GGUF source is saved from the model in memory; pass model=")
    wanted = {canonical_name(name, family): value for name, value in replaced.items()}
    used: set[str] = set()
    entries = []
    for entry in model_entries(model) if source.gguf_file else checkpoint_entries(source):
        new_name = renamed(entry.name, family, new_index)
        if new_name is None:
            continue
        key = canonical_name(entry.name, family)
        if key in wanted:
            entry = replacement_entry(entry, wanted[key])
            used.add(key)
        entries.append(replace(entry, name=new_name))
    missing = sorted(set(wanted) - used)
    if missing:
        raise UnsupportedModelError(f"The repaired or healed weight {missing[0]} has no tensor of that name in the "
                                    "checkpoint, so it cannot be written; prune this model without the repair and "
                                    "healing.")
    shards = plan_shards(entries, max_shard_bytes)
    done = 0

    def on_tensor() -> None:
        nonlocal done
        done += 1
        if cancel is not None and cancel():
            raise Cancelled()
        if progress is not None:
            progress("saving", done, len(entries))

    if progress is not None:  # the bar starts at 0, so its clock starts with the first tensor
        progress("saving", 0, len(entries))
    files, total_bytes = write_sharded(temp, shards, on_tensor)
    config = _base_config(source, model, original_config)
    config.update(patch)
    (temp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files.append("config.json")
    files += _copy_side_files(temp, source, model, tokenizer)
    if card_text:
        (temp / "README.md").write_text(card_text, encoding="utf-8")
        files.append("README.md")
    return SaveResult(temp, files, len(entries), total_bytes)


def _base_config(source: ModelSource, model: Any, original_config: dict[str, Any]) -> dict[str, Any]:
    """The source's own config.json keys (GGUF: the loaded config, without its GGUF-only keys)."""
    if source.gguf_file is None:
        config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
        name_or_path = config.get("_name_or_path")
        if isinstance(name_or_path, str) and name_or_path and not looks_like_hub_id(name_or_path):
            # A fine-tune's config names the folder it was saved from ("/home/alice/runs/final"): a pruned copy
            # shared on the Hub carried the user's home folder. A Hub id stays.
            del config["_name_or_path"]
        return config
    config = {k: v for k, v in original_config.items() if k not in _GGUF_ONLY_KEYS}
    config["architectures"] = [type(model).__name__]
    config["dtype"] = dtype_name(next(model.parameters()).dtype)
    return config


def _copy_side_files(temp: Path, source: ModelSource, model: Any, tokenizer: Any) -> list[str]:
    """Tokenizer and generation config travel with the weights, and so do a remote-code model's own modules (its
    config's ``auto_map`` names them: without them the output did not load), tiktoken vocabularies and licence
    texts."""
    copied = []
    if source.gguf_file is None:
        for name in (*TOKENIZER_FILES, "generation_config.json", *model_own_files(source.folder)):
            if (source.folder / name).is_file():
                # The bytes only: copy2 carried a read-only source's mode (a Nix store, a shared cache) to the output.
                shutil.copyfile(source.folder / name, temp / name)
                copied.append(name)
        return copied
    if tokenizer is not None:
        tokenizer.save_pretrained(temp)
    if model is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(temp)
    return sorted(p.name for p in temp.iterdir()
                  if not p.name.endswith(".safetensors") and p.name != "config.json")


