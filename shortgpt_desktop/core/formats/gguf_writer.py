"""Prune a GGUF file and keep its quantization: a file llama.cpp, Ollama and LM Studio run as they are.

The kept blocks' tensors are copied byte for byte (``blk.N.`` renumbered), so a Q4_1 source gives a Q4_1
result a fraction smaller instead of a float checkpoint several times bigger. Renaming tensors is not enough
for llama.cpp, which reads the layer structure from metadata (``llama-quantize --prune-layers`` only changes
``block_count`` and its output fails to load, or loads and runs wrong):

1. ``{arch}.block_count`` becomes the number of kept blocks; multi-token-prediction (``nextn``) blocks at the
   end are always kept.
2. Every ``{arch}.*`` array as long as the old block count is per-layer (``feed_forward_length``,
   ``attention.head_count(_kv)``, ``attention.sliding_window_pattern``...): it is sliced by kept index.
   llama.cpp refuses some unsliced arrays ("wrong array length") and silently misreads others.
3. Periodic sliding-window layouts that llama.cpp derives from the layer index (``set_swa_pattern`` in
   llama.cpp: gemma2 every 2nd, gemma3 every 6th layer...) shift when a layer goes; the kept layers' pattern is
   then written out as an explicit ``{arch}.attention.sliding_window_pattern`` bool array.
4. ``{arch}.leading_dense_block_count`` counts the kept layers below its old value.

Layouts that metadata cannot describe are refused before anything is written (:func:`plan_gguf_pruning`).
"""

from __future__ import annotations

import functools
import logging
import math
import mmap
import re
import struct
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Cancelled, PlanError, UnsupportedModelError
from ..model.sources import ModelSource
from ..progress import CancelCheck, Progress
from .gguf_orientation import replacement_problem, to_gguf
from .gguf_reader import GGUF_SCALARS, GGUFField, GGUFLayout, check_gguf
from .output_folder import check_output_folder, output_folder
from .provenance import GGUF_KEY, gguf_removed_layers, removed_in_first_original

log = logging.getLogger(__name__)


STAGE = "writing GGUF"
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_COPY_CHUNK = 64 * 1024**2
_ARRAY, _STRING, _BOOL, _UINT32, _INT32 = 9, 8, 7, 4, 5
_SCALAR_FORMATS = GGUF_SCALARS  # the reader's table of value types: one table for reading and writing

#: Architectures whose layer layout llama.cpp hard-codes by layer index in a way metadata cannot express.
REFUSED_ARCHITECTURES = {
    "llama4": "llama.cpp decides which llama4 layers are mixture-of-experts, use chunked attention or skip RoPE "
              "from each layer's position",
    "ernie4_5-moe": "llama.cpp places ernie4_5-moe's mixture-of-experts layers by layer position",
    "gemma3n": "gemma3n shares key/value caches between layers and sizes its per-layer embeddings by the layer "
               "count",
}

#: Layouts llama.cpp derives from the layer index with a fixed period and no metadata to override it:
#: pruning is allowed when every kept layer keeps its phase (layers removed in runs of the period).
POSITION_PERIODS = {"smollm3": (4, "which layers skip RoPE")}
#: Metadata scalars that give such a period (llama.cpp: ``(il + 1) % step == 0``).
_PERIOD_KEYS = ("interleave_moe_layer_step", "full_attention_interval", "moe_every_n_layers", "dense_every_n_layers")


@dataclass(frozen=True)
class SWARule:
    """llama.cpp's ``set_swa_pattern(period, dense_first)`` for one architecture (llama-hparams.cpp)."""

    period: int
    dense_first: bool = False
    needs_window: bool = False  # only applied when ``{arch}.attention.sliding_window`` is present and > 0

    def pattern(self, n_layer: int, period: int | None = None) -> list[bool]:
        """True where llama.cpp treats the layer as sliding-window."""
        p = self.period if period is None else period
        if self.dense_first:
            return [p == 0 or il % p != 0 for il in range(n_layer)]
        return [p == 0 or il % p < p - 1 for il in range(n_layer)]


#: Architectures whose sliding-window layers llama.cpp derives from the layer index (llama-model.cpp).
SWA_PERIODIC = {
    "gemma2": SWARule(2),
    "gemma3": SWARule(6, needs_window=True),
    "cohere2": SWARule(4),
    "olmo2": SWARule(4, needs_window=True),
    "exaone4": SWARule(4, needs_window=True),
    "gpt-oss": SWARule(2),
    "afmoe": SWARule(4, needs_window=True),
    "smallthinker": SWARule(4, dense_first=True, needs_window=True),
    "gptneo": SWARule(2),
}
#: ``{arch}.*`` arrays that are not per-layer even when their length happens to equal the block count.
_NOT_PER_LAYER = ("rope.dimension_sections",)
_PROVENANCE = GGUF_KEY  # the layers of the first original the file lacks


@dataclass
class GGUFPlan:
    """What pruning a GGUF file will do, known before anything heavy runs; plain data."""

    source: Path
    architecture: str
    old_block_count: int
    new_block_count: int
    removed: list[int]
    kept: list[int]  # old indices of the kept blocks, in order (new index = position in this list)
    nextn_layers: int  # multi-token-prediction blocks at the end, always kept
    dropped_tensors: list[str]
    kept_tensors: int
    sliced_arrays: list[str]  # metadata keys sliced by kept index
    swa_pattern: list[bool] | None  # the explicit sliding-window pattern written, when pruning shifted it
    leading_dense: tuple[int, int] | None  # (old, new) ``leading_dense_block_count``
    #: Removed layers counted in the ORIGINAL model (a source pruned before carries its own list), stored in the
    #: output as ``shortgpt.removed_layers``.
    removed_from_original: list[int]
    source_bytes: int
    output_bytes: int  # the pruned .gguf's exact size when no tensor changes type
    #: The per-layer sliding-window layout the output states, where it is not the one llama.cpp's period gives for
    #: its layer count (which transformers' GGUF loader derives instead): ``swa_pattern`` written now, or the array
    #: of a source pruned before, sliced (pruned again, the card said nothing of it).
    stated_swa: list[bool] | None = None


@dataclass
class GGUFSaveResult:
    folder: Path
    gguf_path: Path
    files: list[str]
    bytes_written: int  # size of the .gguf
    tensors: int
    plan: GGUFPlan
    replaced: list[str] = field(default_factory=list)  # GGUF names (new index) whose values were replaced
    changed_types: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (source type, written type)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------------- plan


def plan_gguf_pruning(source: ModelSource | str | Path, removed: Sequence[int]) -> GGUFPlan:
    """Check that ``removed`` blocks can be cut out of this GGUF file for llama.cpp, and what it gives.

    Raises :class:`UnsupportedModelError` for layouts llama.cpp hard-codes by layer position, and
    :class:`PlanError` for an impossible layer list; reads only the file's header.
    """
    path = _gguf_path(source)
    layout = check_gguf(path)
    return _plan(path, layout, removed)


def _plan(path: Path, layout: GGUFLayout, removed: Sequence[int]) -> GGUFPlan:
    meta = layout.metadata
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise UnsupportedModelError(f"{path.name} has no general.architecture, so it is not a llama.cpp model.")
    if arch in REFUSED_ARCHITECTURES:
        raise UnsupportedModelError(f"{REFUSED_ARCHITECTURES[arch]}, so its layers cannot be removed from a GGUF "
                                    "file; save as safetensors instead.")
    n_layer = meta.get(f"{arch}.block_count")
    if not isinstance(n_layer, int) or n_layer <= 0:
        raise UnsupportedModelError(f"{path.name} ({arch}) has no {arch}.block_count, so it has no layers to prune.")
    shared_kv = meta.get(f"{arch}.attention.shared_kv_layers", 0)
    if isinstance(shared_kv, int) and shared_kv > 0:
        raise UnsupportedModelError(f"{arch} layers share key/value caches by position in llama.cpp, so its layers "
                                    "cannot be removed from a GGUF file; save as safetensors instead.")
    per_layer = [t.name for t in layout.tensors if not t.name.startswith("blk.") and "per_layer" in t.name]
    if per_layer:
        raise UnsupportedModelError(f"{path.name} has tensors sized by the layer count outside the blocks "
                                    f"({per_layer[0]}), so its layers cannot be removed from a GGUF file.")

    nextn = int(meta.get(f"{arch}.nextn_predict_layers", 0) or 0)
    gone = sorted(set(int(i) for i in removed))
    bad = [i for i in gone if not 0 <= i < n_layer]
    if bad:
        raise PlanError(f"Layer {bad[0]} does not exist: this model has layers 0 to {n_layer - 1}.")
    mtp = [i for i in gone if i >= n_layer - nextn]
    if mtp:
        raise PlanError(f"Layer {mtp[0]} is a multi-token-prediction block, which is always kept; choose layers "
                        f"below {n_layer - nextn}.")
    kept = [i for i in range(n_layer) if i not in gone]
    if len(kept) <= nextn:
        raise PlanError("Removing these layers leaves no decoder layer; remove fewer.")
    _check_positional_periods(arch, meta, kept)

    sliced = [f.key for f in layout.fields.values() if _is_per_layer(f, arch, n_layer)]
    swa = _shifted_swa_pattern(arch, layout, n_layer, kept, sliced)
    lead_key = f"{arch}.leading_dense_block_count"
    leading = None
    if isinstance(meta.get(lead_key), int):
        old_lead = meta[lead_key]
        leading = (old_lead, sum(1 for k in kept if k < old_lead))

    dropped, kept_tensors, gone_set = [], 0, set(gone)
    for tensor in layout.tensors:
        match = _BLOCK.match(tensor.name)
        if match and int(match[1]) in gone_set:
            dropped.append(tensor.name)
        else:
            if match and int(match[1]) >= n_layer:
                raise UnsupportedModelError(f"{path.name} has a tensor {tensor.name} beyond its {n_layer} blocks, so "
                                            "its layers cannot be renumbered safely.")
            kept_tensors += 1
    plan = GGUFPlan(
        source=path, architecture=arch, old_block_count=n_layer, new_block_count=len(kept), removed=gone,
        kept=kept, nextn_layers=nextn, dropped_tensors=dropped, kept_tensors=kept_tensors, sliced_arrays=sliced,
        swa_pattern=swa, leading_dense=leading, removed_from_original=gone, source_bytes=path.stat().st_size,
        output_bytes=0,
    )
    plan.removed_from_original = removed_in_first_original(gguf_removed_layers(path, layout), gone, n_layer)
    plan.stated_swa = swa if swa is not None else _sliced_swa_pattern(arch, path, layout, kept, sliced)
    with _open_view(path) as view:
        header = _header_bytes(view, layout, plan, _tensor_table(layout, plan, _NewData()))
    plan.output_bytes = _aligned(len(header), layout.alignment) + sum(
        _aligned(t.n_bytes, layout.alignment) for t in _kept_tensors(layout, plan)
    )
    return plan


def _check_positional_periods(arch: str, meta: dict[str, Any], kept: list[int]) -> None:
    """Layouts llama.cpp computes from ``il % period``: allowed only when every kept layer keeps its phase."""
    periods: list[tuple[int, str]] = []
    if arch in POSITION_PERIODS:
        periods.append(POSITION_PERIODS[arch])
    for suffix in _PERIOD_KEYS:
        value = meta.get(f"{arch}.{suffix}")
        if isinstance(value, int) and value > 1:
            periods.append((value, f"the layer layout given by {arch}.{suffix}"))
    for period, what in periods:
        shifted = [old for new, old in enumerate(kept) if old % period != new % period]
        if shifted:
            raise UnsupportedModelError(
                f"llama.cpp decides {what} of {arch} models from each layer's position (a period of {period}), and "
                f"removing these layers would shift layer {shifted[0]}; remove layers in runs of {period}, or save "
                "as safetensors instead."
            )


def _is_per_layer(f: GGUFField, arch: str, n_layer: int) -> bool:
    return (f.type_id == _ARRAY and f.key.startswith(f"{arch}.") and f.count == n_layer
            and f.item_type in _SCALAR_FORMATS and not f.key.endswith(_NOT_PER_LAYER))


def _shifted_swa_pattern(arch: str, layout: GGUFLayout, n_layer: int, kept: list[int],
                         sliced: list[str]) -> list[bool] | None:
    """The kept layers' sliding-window pattern, when llama.cpp would otherwise re-derive it wrongly by index."""
    rule = SWA_PERIODIC.get(arch)
    key = f"{arch}.attention.sliding_window_pattern"
    if rule is None or key in sliced:
        return None  # no periodic default, or an explicit per-layer array that gets sliced
    meta = layout.metadata
    if rule.needs_window and not (meta.get(f"{arch}.attention.sliding_window") or 0) > 0:
        return None
    if f"{key}#len" in meta:
        raise UnsupportedModelError(f"{key} has {meta[f'{key}#len']} entries for {n_layer} layers, so the sliding-"
                                    "window layout cannot be carried over.")
    stored = meta.get(key)  # some files store the period itself as a scalar
    period = stored if isinstance(stored, int) and not isinstance(stored, bool) else None
    new = [rule.pattern(n_layer, period)[k] for k in kept]
    return new if new != rule.pattern(len(kept), period) else None


def _sliced_swa_pattern(arch: str, path: Path, layout: GGUFLayout, kept: list[int],
                        sliced: list[str]) -> list[bool] | None:
    """The kept layers' part of a per-layer sliding-window array the source states (a file pruned before), where
    it is not what llama.cpp's period gives for the new layer count."""
    from ..model.gguf_facts import sliding_window_layers

    rule = SWA_PERIODIC.get(arch)
    if rule is None or f"{arch}.attention.sliding_window_pattern" not in sliced:
        return None
    stated = sliding_window_layers(path, layout)
    if stated is None:
        return None
    new = [stated[k] for k in kept]
    return new if new != rule.pattern(len(kept)) else None


# --------------------------------------------------------------------------------------------------- write


def write_pruned_gguf(
    source: ModelSource | str | Path,
    removed: Sequence[int],
    out: str | Path,
    *,
    file_name: str | None = None,
    card_text: str | Callable[[Mapping[str, tuple[str, str]], GGUFPlan], str] = "",
    replaced: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> GGUFSaveResult:
    """Write ``out/<file_name>.gguf`` (and ``README.md`` from ``card_text``) with ``removed`` blocks cut out.

    ``card_text`` may be a function of the tensors re-quantized (name → source type, written type) and of the plan
    (the sliding-window layout written out, say), which are known only here: a card made before named none of them.

    ``replaced`` maps Hugging Face parameter names with the ORIGINAL layer index (``model.layers.5.mlp.down_proj.
    weight``) to new values (torch or numpy, Hugging Face orientation); each is written in its source tensor's
    type when that has 8 bits or more, else as Q8_0 (see ``_KEPT_TYPES``). The folder is written beside ``out``
    and moved into place when complete; the source is only read.
    """
    started = time.perf_counter()
    model_source = source if isinstance(source, ModelSource) else None
    path = _gguf_path(source)
    layout = check_gguf(path)
    plan = _plan(path, layout, removed)
    if model_source is None:
        model_source = ModelSource(spec=str(path), kind="gguf", folder=path.parent, gguf_file=path.name)
    out_path = check_output_folder(Path(out), model_source, force)
    name = file_name or f"{out_path.name}.gguf"
    if not name.endswith(".gguf"):
        name += ".gguf"
    new_data, changed = _requantize(layout, plan, replaced or {})

    with output_folder(out_path, force) as temp:
        written, n_tensors = _write_file(temp / name, path, layout, plan, new_data, progress, cancel)
        files = [name]
        card = card_text(changed, plan) if callable(card_text) else card_text
        if card:
            (temp / "README.md").write_text(card, encoding="utf-8")
            files.append("README.md")
    log.info("wrote pruned GGUF %s (%d bytes)", out_path / name, written)
    return GGUFSaveResult(
        folder=out_path, gguf_path=out_path / name, files=files, bytes_written=written, tensors=n_tensors,
        plan=plan, replaced=sorted(_renamed(n, plan) for n in new_data), changed_types=changed,
        seconds=time.perf_counter() - started,
    )


def _write_file(target: Path, source: Path, layout: GGUFLayout, plan: GGUFPlan, new_data: _NewData,
                progress: Progress | None, cancel: CancelCheck | None) -> tuple[int, int]:
    tensors = _kept_tensors(layout, plan)
    table = _tensor_table(layout, plan, new_data)
    align = layout.alignment
    with _open_view(source) as view, open(target, "wb") as out:
        header = _header_bytes(view, layout, plan, table)
        out.write(header)
        out.write(b"\0" * (_aligned(len(header), align) - len(header)))
        if progress is not None:  # the bar starts at 0, so its clock starts with the first tensor
            progress(STAGE, 0, len(tensors), None)
        for done, tensor in enumerate(tensors, 1):
            if cancel is not None and cancel():
                raise Cancelled()
            if tensor.name in new_data:
                data = new_data[tensor.name]
                out.write(data)
                size = len(data)
            else:
                start = layout.data_start + tensor.offset
                for chunk_start in range(start, start + tensor.n_bytes, _COPY_CHUNK):
                    out.write(view[chunk_start:min(chunk_start + _COPY_CHUNK, start + tensor.n_bytes)])
                    if cancel is not None and cancel():
                        raise Cancelled()
                size = tensor.n_bytes
            out.write(b"\0" * (_aligned(size, align) - size))
            if progress is not None:
                progress(STAGE, done, len(tensors), None)
        written = out.tell()
    return written, len(tensors)


# ------------------------------------------------------------------------------------------- header bytes


def _header_bytes(view: Any, layout: GGUFLayout, plan: GGUFPlan, table: bytes) -> bytes:
    """Header, metadata (copied byte for byte unless it changes) and tensor table of the pruned file."""
    arch = plan.architecture
    changes: dict[str, bytes] = {
        f"{arch}.block_count": _pack_scalar(layout.fields[f"{arch}.block_count"].type_id, plan.new_block_count),
    }
    for key in plan.sliced_arrays:
        f = layout.fields[key]
        values = _read_array(view, f)
        changes[key] = _pack_array(f.item_type or 0, [values[k] for k in plan.kept])
    swa_key = f"{arch}.attention.sliding_window_pattern"
    if plan.swa_pattern is not None:
        changes[swa_key] = _pack_array(_BOOL, plan.swa_pattern)
    if plan.leading_dense is not None:
        lead_key = f"{arch}.leading_dense_block_count"
        changes[lead_key] = _pack_scalar(layout.fields[lead_key].type_id, plan.leading_dense[1])
    if plan.removed:
        changes[_PROVENANCE] = _pack_array(_INT32, plan.removed_from_original)
        name = layout.metadata.get("general.name")
        if isinstance(name, str) and layout.fields["general.name"].type_id == _STRING:
            changes["general.name"] = _pack_string_value(pruned_name(name, plan.new_block_count))
        label = _size_label(layout, plan)
        if label is not None:
            changes["general.size_label"] = _pack_string_value(label)

    entries: list[bytes] = []
    for key, f in layout.fields.items():
        if key in changes:
            entries.append(_pack_string(key) + changes.pop(key))
        else:
            entries.append(bytes(view[f.start:f.end]))
    for key, value in changes.items():  # keys the source did not have (the sliding-window pattern, provenance)
        entries.append(_pack_string(key) + value)
    counts = struct.pack("<4sIQQ", b"GGUF", 3, plan.kept_tensors, len(entries))
    return counts + b"".join(entries) + table


def _tensor_table(layout: GGUFLayout, plan: GGUFPlan, new_data: _NewData) -> bytes:
    """Tensor infos of the kept tensors, renamed to their new block index, with offsets in the new file."""
    rows, offset = [], 0
    for tensor in _kept_tensors(layout, plan):
        type_id, size = tensor.type_id, tensor.n_bytes
        if tensor.name in new_data:
            type_id, size = int(new_data.type_of[tensor.name]), len(new_data[tensor.name])
        rows.append(_pack_string(_renamed(tensor.name, plan)) + struct.pack("<I", len(tensor.shape))
                    + b"".join(struct.pack("<Q", d) for d in tensor.shape) + struct.pack("<IQ", type_id, offset))
        offset += _aligned(size, layout.alignment)
    return b"".join(rows)


def _kept_tensors(layout: GGUFLayout, plan: GGUFPlan) -> list[Any]:
    dropped = set(plan.dropped_tensors)
    return [t for t in layout.tensors if t.name not in dropped]


def _renamed(name: str, plan: GGUFPlan) -> str:
    match = _BLOCK.match(name)
    if match is None:
        return name
    return f"blk.{plan.kept.index(int(match[1]))}.{match[2]}"


#: The suffix :func:`pruned_name` adds, taken off again when a pruned file is pruned once more.
_PRUNED_SUFFIX = re.compile(r" \(pruned to \d+ layers?\)$")


def pruned_name(name: str, layers: int) -> str:
    """``general.name`` of the pruned file: runtimes (llama.cpp's log, Ollama, LM Studio) showed the pruned file under
    the original's name, as if it were the original."""
    return f"{_PRUNED_SUFFIX.sub('', name)} (pruned to {layers} layer{'' if layers == 1 else 's'})"  # not "1 layers"


def _size_label(layout: GGUFLayout, plan: GGUFPlan) -> str | None:
    """``general.size_label`` of the pruned file, as llama.cpp's converter writes it (``135M`` → ``104M``), from the
    kept tensors' elements; None where the source has none, or for a mixture of experts (its label counts one
    expert's share, ``8x7B``, which the tensors alone do not tell)."""
    field = layout.fields.get("general.size_label")
    if field is None or field.type_id != _STRING:
        return None
    experts = layout.metadata.get(f"{plan.architecture}.expert_count")
    if isinstance(experts, int) and experts > 0:
        return None
    from gguf.utility import size_label

    return size_label(sum(math.prod(t.shape) for t in _kept_tensors(layout, plan)), 0, 0, 0)


def _pack_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _pack_string_value(text: str) -> bytes:
    """A metadata value of type string: its type, then the string."""
    return struct.pack("<I", _STRING) + _pack_string(text)


def _pack_scalar(type_id: int, value: Any) -> bytes:
    return struct.pack("<I" + _SCALAR_FORMATS[type_id], type_id, value)


def _pack_array(item_type: int, values: Sequence[Any]) -> bytes:
    fmt = _SCALAR_FORMATS[item_type]
    return struct.pack("<IIQ", _ARRAY, item_type, len(values)) + struct.pack(f"<{len(values)}{fmt}", *values)


def _read_array(view: Any, f: GGUFField) -> list[Any]:
    fmt = _SCALAR_FORMATS[f.item_type or 0]
    return list(struct.unpack_from(f"<{f.count}{fmt}", view, f.value_start))


def _aligned(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


class _open_view:
    """A read-only memory map of the source; nothing is read before it is needed, and the file is never written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        self.file = open(self.path, "rb")
        self.view = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        return self.view

    def __exit__(self, *exc: object) -> None:
        self.view.close()
        self.file.close()


def _gguf_path(source: ModelSource | str | Path) -> Path:
    if isinstance(source, ModelSource):
        if not source.gguf_file:
            raise ValueError("GGUF output needs a GGUF source")
        return source.folder / source.gguf_file
    return Path(source).expanduser()


# --------------------------------------------------------------------------------------- replaced weights


class _NewData(dict):
    """GGUF name (old index) → quantized bytes, with the written type of each in ``type_of``."""

    def __init__(self) -> None:
        super().__init__()
        self.type_of: dict[str, Any] = {}


def gguf_tensor_name(hf_name: str, architecture: str, n_layer: int) -> str | None:
    """The GGUF name of a Hugging Face parameter (same layer index), from gguf-py's tensor name map."""
    names = _name_map(architecture, n_layer)
    return names.get_name(hf_name, try_suffixes=(".weight", ".bias")) if names is not None else None


@functools.lru_cache(maxsize=8)
def _name_map(architecture: str, n_layer: int) -> Any:
    """gguf-py's tensor name map for an architecture, built once (a few milliseconds each: a healed model's
    weights are named one by one, and the size before Save names them at every plan)."""
    import gguf

    arch = {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}.get(architecture)
    return gguf.get_tensor_name_map(arch, n_layer) if arch is not None else None


def _meta_int(view: Any, layout: GGUFLayout, arch: str) -> Any:
    """``(tensor name, key) → int | None``: a scalar ``{arch}.key``, or its layer's entry of a per-layer array."""
    def read(name: str, key: str) -> int | None:
        full = f"{arch}.{key}"
        f = layout.fields.get(full)
        if f is None:
            return None
        if f.type_id == _ARRAY and f.item_type in _SCALAR_FORMATS:
            match = _BLOCK.match(name)
            values = _read_array(view, f)
            index = int(match[1]) if match else 0
            return int(values[index]) if index < len(values) else None
        value = layout.metadata.get(full)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return read


def replacement_targets(layout: GGUFLayout, repair: bool, heal: bool, refit: bool = False) -> list[str]:
    """The GGUF tensors a repair (each kept layer's MLP output), an MLP refit (the MLP's projections and their
    biases) or a healing (every 2-D weight of a block: the linear projections LoRA trains) may replace; what the
    writer must be able to write back."""
    names = []
    for tensor in layout.tensors:
        match = _BLOCK.match(tensor.name)
        if match is None:
            continue
        if refit and match[2].startswith("ffn_") and not match[2].startswith("ffn_norm") \
                and "_exps" not in match[2] and "_shexp" not in match[2]:
            names.append(tensor.name)
        elif not tensor.name.endswith(".weight"):
            continue
        elif (heal and len(tensor.shape) == 2) or (repair and match[2] == "ffn_down.weight"):
            names.append(tensor.name)
    return names


def check_gguf_replacements(source: ModelSource | str | Path, repair: bool, heal: bool, refit: bool = False) -> None:
    """Refuse, before any slow step, a job whose repair, MLP refit or healing would change GGUF tensors the writer
    cannot write back in the file's layout (reads only the header)."""
    if not (repair or heal or refit):
        return
    path = _gguf_path(source)
    layout = check_gguf(path)
    arch = str(layout.metadata.get("general.architecture") or "")
    with _open_view(path) as view:
        meta_int = _meta_int(view, layout, arch)
        for name in replacement_targets(layout, repair, heal, refit):
            problem = replacement_problem(name, arch, meta_int)
            if problem is not None:
                what = "the healing" if heal else "the MLP refit" if refit else "the repair"
                raise UnsupportedModelError(f"{problem[0].upper()}{problem[1:]}, and {what} would change it; save "
                                            "as safetensors instead, or prune without the repair and healing.")


#: Source types a replaced weight keeps; any coarser one (4-, 5- and 6-bit, K-quants) is written as Q8_0.
#: Measured on SmolLM2 Q4_1 with the default recipe's repaired down projections re-quantized to Q4_1: the file
#: read back by transformers was up to 6.4 nats from the repaired model on a token (argmax agreement 67%); the
#: few replaced tensors cost next to nothing in size at 8 bits.
_KEPT_TYPES = ("F32", "F16", "BF16", "Q8_0")


def written_type_of(source_type: Any, row_length: int) -> Any:
    """The type a replaced weight is written in: its source tensor's when that has 8 bits or more
    (:data:`_KEPT_TYPES`), else Q8_0, and F16 where a row of ``row_length`` values is not whole blocks of it."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    q8_0, f16 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.F16
    first = source_type if source_type.name in _KEPT_TYPES else q8_0
    return next(t for t in (first, q8_0, f16) if row_length % GGML_QUANT_SIZES[t][0] == 0)


def rewritten_tensors(layout: GGUFLayout, removed: Sequence[int], repair: bool, refit: bool, heal: bool
                      ) -> list[Any]:
    """The tensors (old names) a job with these weight changes rewrites, at most, once ``removed`` go: healing
    every 2-D weight of every kept block; the repair the MLP output projection of the kept layers on both sides of
    each run of removed layers, and the MLP refit every MLP projection of the kept layer before each run. A run
    that starts at layer 0 has no layer before it and is left unrepaired; the layer after a run is refitted only
    where that does better on held-out samples, so this is a bound."""
    gone = set(removed)
    if not gone:
        return []  # nothing removed: the job repairs and heals nothing (and saves nothing)
    kept = {i for i in range(_arch_and_layers(layout)[1]) if i not in gone}
    before, after = set(), set()
    for layer in sorted(gone):
        if layer - 1 in kept:  # a run starts here: the layer before it, and the one after the run
            end = layer
            while end + 1 in gone:
                end += 1
            before.add(layer - 1)
            after |= {end + 1} & kept
    healed = set(replacement_targets(layout, repair=False, heal=heal))
    repaired = set(replacement_targets(layout, repair=repair, heal=False))
    refitted = set(replacement_targets(layout, repair=False, heal=False, refit=refit))
    out = []
    for tensor in layout.tensors:
        match = _BLOCK.match(tensor.name)
        if match is None:
            continue
        index = int(match[1])
        if ((tensor.name in healed and index in kept) or (tensor.name in repaired and index in before | after)
                or (tensor.name in refitted and index in before)):
            out.append(tensor)
    return out


def replaced_tensors(layout: GGUFLayout, hf_names: Collection[str]) -> list[Any]:
    """The tensors (old names) that the weights ``hf_names`` (Hugging Face names, original layer index: what a
    fitted repair or healing replaced) are written over; a name without a tensor is left out."""
    arch, n_layer = _arch_and_layers(layout)
    names = {gguf_tensor_name(n, arch, n_layer) for n in hf_names}
    return [t for t in layout.tensors if t.name in names]


def _arch_and_layers(layout: GGUFLayout) -> tuple[str, int]:
    """The header's architecture and its block count (0 where it has none: such a file is refused on open)."""
    arch = str(layout.metadata.get("general.architecture") or "")
    n_layer = layout.metadata.get(f"{arch}.block_count")
    return arch, n_layer if isinstance(n_layer, int) else 0


def _requantize(layout: GGUFLayout, plan: GGUFPlan, replaced: Mapping[str, Any]) -> tuple[_NewData, dict]:
    """Quantize each replaced weight to its source tensor's type when that has 8 bits or more, else to Q8_0
    (F16 where a row is not whole Q8_0 blocks); every change of type is reported."""
    import numpy as np
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    by_name = {t.name: t for t in layout.tensors}
    arch = plan.architecture
    new_data, changed = _NewData(), {}
    if not replaced:
        return new_data, changed
    with _open_view(plan.source) as view:
        meta_int = _meta_int(view, layout, arch)
        for hf_name, value in replaced.items():
            name = gguf_tensor_name(hf_name, arch, plan.old_block_count)
            if name is None or name not in by_name:
                raise UnsupportedModelError(f"The repaired or healed weight {hf_name} has no tensor in "
                                            f"{plan.source.name}; save as safetensors instead, or prune without "
                                            "the repair and healing.")
            if name in plan.dropped_tensors:
                raise ValueError(f"{hf_name} belongs to a removed layer")  # a bug: the engine replaces kept layers
            tensor = by_name[name]
            expected = tuple(reversed(tensor.shape))  # numpy order of the ggml shape
            array = to_gguf(_as_numpy(value), name, arch, expected, meta_int)
            source_type = GGMLQuantizationType(tensor.type_id)
            written_type = written_type_of(source_type, expected[-1])
            data = quants.quantize(np.ascontiguousarray(array, dtype=np.float32), written_type)
            raw = np.ascontiguousarray(data).tobytes()
            block, type_size = GGML_QUANT_SIZES[written_type]
            assert len(raw) == math.prod(expected) // block * type_size
            new_data[name] = raw
            new_data.type_of[name] = written_type
            if written_type != source_type:
                changed[_renamed(name, plan)] = (source_type.name, written_type.name)
    return new_data, changed


def _as_numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)
