"""Write a pruned model as a new safetensors folder, streaming tensors, and move it into place only when complete.

Tensors come straight from the source checkpoint files (safetensors, or legacy ``.bin`` read with
``weights_only=True``): removed layers are skipped, the rest renamed to their new index, and shards are flushed
as they fill, so memory holds at most one shard. A GGUF source has no Hugging Face tensors on disk, so its
(already dequantised) tensors are taken from the model in memory with the names a stock loader expects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architectures import Family, layer_count, prune_config
from .errors import Cancelled, OutputError
from .sources import TOKENIZER_FILES, ModelSource

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


def check_output_folder(out: Path, source: ModelSource, force: bool) -> Path:
    """Refuse outputs that could destroy data: the source, anything inside or above it, a non-empty folder."""
    out = Path(out).expanduser().resolve()
    # A GGUF source is one file: a new folder beside it is fine. A model folder is off limits as a whole.
    src = (source.folder / source.gguf_file).resolve() if source.gguf_file else source.folder.resolve()
    if out == src or src in out.parents:
        raise OutputError(f"The output folder {out} is the source model's folder or inside it; choose another.")
    if out in src.parents:
        raise OutputError(f"The output folder {out} contains the source model; choose another.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file; choose a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out} is not empty; choose an empty folder or overwrite it with --force.")
    return out


# --------------------------------------------------------------------------------------- tensor streaming


TensorStream = Iterator[tuple[str, Callable[[], Any]]]


def renamed(name: str, family: Family, new_index: dict[int, int]) -> str | None:
    """The tensor's name in the pruned model, or None when it belongs to a removed layer."""
    match = family.key_pattern().match(name)
    if match is None:
        return name
    old = int(match["idx"])
    if old not in new_index:
        return None
    return f"{match['pre']}{family.layers_path.rsplit('.', 1)[-1]}.{new_index[old]}.{match['rest']}"


def checkpoint_tensors(source: ModelSource) -> TensorStream:
    """(name, loader) for every tensor in the source checkpoint files, one file open at a time."""
    for weight in source.weight_files:
        if weight.format == "safetensors":
            from safetensors import safe_open

            with safe_open(str(weight.path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    yield key, (lambda h=handle, k=key: h.get_tensor(k))
        elif weight.format == "bin":
            import torch

            state = torch.load(weight.path, map_location="cpu", weights_only=True, mmap=True)
            for key in list(state):
                yield key, (lambda s=state, k=key: s[k])
            del state
        else:
            raise ValueError(f"cannot stream tensors from {weight.format}")


def model_tensors(model: Any) -> TensorStream:
    """(name, loader) for a model in memory; a tied ``lm_head`` is left out, as a stock checkpoint does."""
    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embed = model.get_input_embeddings().weight if tied else None
    for key, tensor in state.items():
        if tied and embed is not None and key.endswith("lm_head.weight") and tensor.data_ptr() == embed.data_ptr():
            continue
        yield key, (lambda t=tensor: t)


class ShardWriter:
    """Collect tensors into safetensors shards of at most ``max_bytes``; writes the index when sharded."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.pending: dict[str, Any] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[str, list[str]]] = []
        self.total_bytes = 0
        self.tensors = 0

    def add(self, name: str, tensor: Any) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        # A view into a memory-mapped file or a shared tensor must be materialised on its own.
        self.pending[name] = tensor.detach().to("cpu").contiguous().clone()
        self.pending_bytes += size
        self.total_bytes += size
        self.tensors += 1

    def flush(self) -> None:
        if not self.pending:
            return
        from safetensors.torch import save_file

        temp_name = f"shard-{len(self.shards):05d}.safetensors"
        save_file(self.pending, str(self.folder / temp_name), metadata={"format": "pt"})
        self.shards.append((temp_name, list(self.pending)))
        self.pending = {}
        self.pending_bytes = 0

    def close(self) -> list[str]:
        """Give the shards their final names; returns the file names written."""
        self.flush()
        if len(self.shards) == 1:
            os.replace(self.folder / self.shards[0][0], self.folder / "model.safetensors")
            return ["model.safetensors"]
        count = len(self.shards)
        weight_map: dict[str, str] = {}
        names = []
        for number, (temp_name, keys) in enumerate(self.shards, 1):
            final = f"model-{number:05d}-of-{count:05d}.safetensors"
            os.replace(self.folder / temp_name, self.folder / final)
            names.append(final)
            weight_map.update(dict.fromkeys(keys, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        return [*names, "model.safetensors.index.json"]


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
) -> SaveResult:
    """Write the pruned model to ``out`` atomically: a temporary folder beside it, moved in when complete.

    ``original_config`` is the loaded (unpruned) config as a dict, which includes fields the loader derives
    (``layer_types`` and the like); the written ``config.json`` keeps the source file's own keys and adds the
    corrected per-layer fields. ``model`` (unpruned) is needed only for a GGUF source.
    """
    out_path = check_output_folder(Path(out), source, force)
    n_layers = layer_count(original_config, family)
    gone = set(removed)
    kept = [i for i in range(n_layers) if i not in gone]
    new_index = {old: new for new, old in enumerate(kept)}
    patch = prune_config(original_config, family, kept)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.partial-", dir=out_path.parent))
    _chmod_like_a_new_folder(temp)
    try:
        files, writer = _write_all(
            temp, source, family, original_config, patch.values, new_index, model,
            tokenizer, card_text, max_shard_bytes, progress, cancel,
        )
        _move_into_place(temp, out_path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    log.info("saved pruned model to %s", out_path)
    return SaveResult(out_path, files, writer.tensors, writer.total_bytes)


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
) -> tuple[list[str], ShardWriter]:
    from_memory = source.gguf_file is not None
    if from_memory and model is None:
        raise ValueError("a GGUF source is saved from the model in memory; pass model=")
    stream = model_tensors(model) if from_memory else checkpoint_tensors(source)
    total = _count_tensors(source, model) if progress else 0
    writer = ShardWriter(temp, max_shard_bytes)
    for done, (name, load) in enumerate(stream, 1):
        if cancel is not None and cancel():
            raise Cancelled()
        new_name = renamed(name, family, new_index)
        if new_name is not None:
            writer.add(new_name, load())
        if progress is not None:
            progress("saving", done, total)
    files = writer.close()

    config = _base_config(source, model, original_config)
    config.update(patch)
    (temp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files.append("config.json")
    files += _copy_side_files(temp, source, model, tokenizer)
    if card_text:
        (temp / "README.md").write_text(card_text, encoding="utf-8")
        files.append("README.md")
    return files, writer


def _count_tensors(source: ModelSource, model: Any) -> int:
    if source.gguf_file:
        return len(model.state_dict())
    from .sources import read_safetensors_header

    total = 0
    for weight in source.weight_files:
        if weight.format == "safetensors":
            total += sum(1 for k in read_safetensors_header(weight.path) if not k.startswith("__"))
        else:
            return 0
    return total


def _base_config(source: ModelSource, model: Any, original_config: dict[str, Any]) -> dict[str, Any]:
    """The source's own config.json keys (GGUF: the loaded config, without its GGUF-only keys)."""
    if source.gguf_file is None:
        return json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in original_config.items() if k not in _GGUF_ONLY_KEYS}
    config["architectures"] = [type(model).__name__]
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    return config


def _copy_side_files(temp: Path, source: ModelSource, model: Any, tokenizer: Any) -> list[str]:
    """Tokenizer and generation config travel with the weights."""
    copied = []
    if source.gguf_file is None:
        for name in (*TOKENIZER_FILES, "generation_config.json"):
            if (source.folder / name).is_file():
                shutil.copy2(source.folder / name, temp / name)
                copied.append(name)
        return copied
    if tokenizer is not None:
        tokenizer.save_pretrained(temp)
    if model is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(temp)
    return sorted(p.name for p in temp.iterdir() if not p.name.endswith(".safetensors") and p.name != "config.json")


def _chmod_like_a_new_folder(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; the finished model should be readable like any other folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def _move_into_place(temp: Path, out: Path) -> None:
    """Swap the finished folder in; an existing (empty, or forced) folder is moved aside first."""
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, aside / out.name)
        try:
            os.replace(temp, out)
        except BaseException:
            os.replace(aside / out.name, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(temp, out)
