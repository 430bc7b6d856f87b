"""One decoder layer's weights at a time: a model skeleton without weights, and readers that fill one part of it.

The skeleton is built with every parameter on the meta device and every buffer real (rotary ``inv_freq`` and
the like are computed in ``__init__`` and are not stored in checkpoints). A part of the model (the modules
before and after the decoder stack, or one decoder layer) is filled by handing its checkpoint tensors to
transformers' own loader (``convert_and_load_state_dict_in_model``), so key prefixes, transformers 5 renames and
fused MoE experts are handled exactly as ``from_pretrained`` handles them. Releasing a part puts its parameters
back on the meta device.

GGUF files go through transformers' GGUF name map and tensor processors (Llama Q/K permutation, Gemma norms
stored +1), one block's tensors dequantized at a time.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelSourceError, UnsupportedModelError
from ..formats.safetensors_reader import read_safetensors_header
from .families import Family, family_for_model_type, get_submodule
from .sources import ModelSource

#: Layer index in a GGUF tensor name (``blk.12.attn_q.weight``).
GGUF_BLOCK = re.compile(r"^blk\.(?P<idx>\d+)\.")


def _torch_dtypes() -> dict[str, Any]:
    import torch

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


class _LazyDtypes(dict):  # type: ignore[type-arg]
    """safetensors dtype name → torch dtype, built on first use (torch is imported late)."""

    def _fill(self) -> None:
        if not super().__len__():
            self.update(_torch_dtypes())

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self._fill()
        return super().__getitem__(key)


_SAFETENSORS_DTYPES = _LazyDtypes()


def generic_layer_pattern() -> re.Pattern[str]:
    """For model types without a family entry: ``...layers.N.`` / ``...h.N.`` / ``...blocks.N.``."""
    return re.compile(r"^(?P<pre>(?:[\w.]*\.)?)(?:layers|h|blocks|block)\.(?P<idx>\d+)\.(?P<rest>.+)$")


def layer_pattern(model_type: str | None) -> re.Pattern[str]:
    family = family_for_model_type(model_type)
    return family.key_pattern() if family is not None else generic_layer_pattern()


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers draws a "Loading weights" bar per call; one per layer would flood the terminal."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _sequential_loading() -> Iterator[None]:
    """Load without transformers' thread pool: fresh worker threads per layer each get a malloc arena that
    keeps the freed layers' memory (measured: streamed peak RSS 1.2 GB instead of 0.3 GB on a 3 GB model)."""
    import os

    key = "HF_DEACTIVATE_ASYNC_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def trim_heap() -> None:
    """Hand freed memory back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ------------------------------------------------------------------------------------------------ readers


@dataclass
class TensorIndex:
    """Which checkpoint tensors belong to which decoder layer, and their sizes (from headers only)."""

    layer_keys: dict[int, list[str]] = field(default_factory=dict)
    other_keys: list[str] = field(default_factory=list)
    #: Elements per tensor (before any dtype conversion).
    numel: dict[str, int] = field(default_factory=dict)
    #: Bytes of data per tensor, as stored.
    nbytes: dict[str, int] = field(default_factory=dict)

    def layer_numel(self, index: int) -> int:
        return sum(self.numel[k] for k in self.layer_keys.get(index, []))

    def other_numel(self) -> int:
        return sum(self.numel[k] for k in self.other_keys)

    def layer_bytes(self, index: int) -> int:
        return sum(self.nbytes[k] for k in self.layer_keys.get(index, []))

    def other_bytes(self) -> int:
        return sum(self.nbytes[k] for k in self.other_keys)


class SafetensorsReader:
    """Reads chosen tensors of a (possibly sharded) safetensors checkpoint; nothing else is touched."""

    #: Tensors are mapped from the file: loading costs nothing and only touched pages are resident.
    mapped = True

    def __init__(self, source: ModelSource, model_type: str | None) -> None:
        if source.gguf_file or any(w.format != "safetensors" for w in source.weight_files):
            raise UnsupportedModelError(
                "Layer-by-layer scoring needs safetensors or GGUF weights; this model's weights are in the legacy "
                ".bin format."
            )
        pattern = layer_pattern(model_type)
        self._file_of: dict[str, Path] = {}
        self.index = TensorIndex()
        import math

        self._meta: dict[str, dict[str, Any]] = {}
        self._data_start: dict[Path, int] = {}
        for weight in source.weight_files:
            header = read_safetensors_header(weight.path)
            self._data_start[weight.path] = int(header["__header_bytes__"])
            for key, meta in header.items():
                if key.startswith("__"):
                    continue
                if meta["dtype"] not in _SAFETENSORS_DTYPES:
                    raise UnsupportedModelError(
                        f"{weight.path.name} stores {key} as {meta['dtype']}, which layer-by-layer scoring cannot "
                        "read; load the whole model instead."
                    )
                self._file_of[key] = weight.path
                self._meta[key] = meta
                self.index.numel[key] = math.prod(meta["shape"])
                self.index.nbytes[key] = meta["data_offsets"][1] - meta["data_offsets"][0]
                match = pattern.match(key)
                if match:
                    self.index.layer_keys.setdefault(int(match["idx"]), []).append(key)
                else:
                    self.index.other_keys.append(key)

    def read(self, keys: list[str]) -> dict[str, Any]:
        """Checkpoint name → tensor (CPU, stored dtype) for ``keys``, mapped from the file, not copied.

        Each tensor is a copy-on-write map of its own bytes (``mmap.ACCESS_COPY``): nothing is read until the
        tensor is used, pages come straight from the page cache (no copy into fresh memory: a 200 MB layer
        "loads" in well under a millisecond instead of about 50 ms), and writing to the tensor changes only this
        process's copy, never the checkpoint. The map closes when the tensor is freed (its layer released), so
        the resident set holds what the current step touches. Only each tensor's own bytes are mapped:
        ``safe_open`` maps the whole shard (several GB) privately, which counts against a process's data limit
        although it is never resident. A tensor whose bytes are not aligned for its dtype is copied.
        """
        import mmap

        import torch

        tensors: dict[str, Any] = {}
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self._file_of[key], []).append(key)
        granularity = mmap.ALLOCATIONGRANULARITY
        for path, names in by_file.items():
            size = path.stat().st_size
            with open(path, "rb") as handle:
                for name in sorted(names, key=lambda k: self._meta[k]["data_offsets"][0]):
                    meta = self._meta[name]
                    start, end = meta["data_offsets"]
                    offset = self._data_start[path] + start
                    if offset + (end - start) > size:
                        raise ModelSourceError(f"{path.name} is truncated; download it again.")
                    dtype = _SAFETENSORS_DTYPES[meta["dtype"]]
                    if end == start:
                        tensors[name] = torch.empty(meta["shape"], dtype=dtype)
                        continue
                    base = offset // granularity * granularity
                    mapped = mmap.mmap(handle.fileno(), offset + (end - start) - base, access=mmap.ACCESS_COPY,
                                       offset=base)
                    raw = torch.frombuffer(mapped, dtype=torch.uint8)[offset - base:]
                    del mapped  # the tensor holds the map; it closes with the tensor
                    item = torch.empty((), dtype=dtype).element_size()
                    if (offset - base) % item:
                        raw = raw.clone()
                    tensors[name] = raw.view(dtype).reshape(meta["shape"])
        return tensors

    def layer(self, index: int) -> dict[str, Any]:
        return self.read(self.index.layer_keys.get(index, []))

    def others(self, skip_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
        return self.read([k for k in self.index.other_keys if not k.startswith(skip_prefixes)])


class GgufReader:
    """Dequantizes chosen blocks of a GGUF file and names them as transformers does (legacy GGUF loader)."""

    def __init__(self, source: ModelSource) -> None:
        from transformers.modeling_gguf_pytorch_utils import read_field

        from .gguf_parse_once import reader_for

        assert source.gguf_file is not None
        self.path = source.folder / source.gguf_file
        self.reader = reader_for(self.path)
        self.architecture = str(read_field(self.reader, "general.architecture")[0])
        self.index = TensorIndex()
        self._tensors = {t.name: t for t in self.reader.tensors}
        for tensor in self.reader.tensors:
            self.index.numel[tensor.name] = int(tensor.n_elements)
            match = GGUF_BLOCK.match(tensor.name)
            if match:
                self.index.layer_keys.setdefault(int(match["idx"]), []).append(tensor.name)
            else:
                self.index.other_keys.append(tensor.name)
        self._processor: Any = None
        self._name_map: dict[str, str] | None = None
        self._parsed: dict[str, Any] | None = None

    def bind(self, model: Any) -> None:
        """Build the GGUF → transformers name map against the (meta) model, as the legacy loader does."""
        from transformers.integrations.gguf.utils import is_gguf_arch_supported
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            load_gguf_checkpoint,
        )

        if is_gguf_arch_supported(self.architecture):
            raise UnsupportedModelError(
                f"GGUF files of the {self.architecture} architecture cannot be scored layer by layer yet; load the "
                "whole model instead."
            )
        self._parsed = load_gguf_checkpoint(str(self.path), return_tensors=False)
        self._parsed["tensors"] = {}
        processor_class = TENSOR_PROCESSORS.get(self.architecture, TensorProcessor)
        self._processor = processor_class(config=self._parsed.get("config", {}))
        self._name_map = get_gguf_hf_weights_map(model, self._processor)

    def read(self, names: list[str]) -> dict[str, Any]:
        """transformers parameter name → float32 tensor for the GGUF tensors ``names``."""
        import torch

        from .gguf_dequant import dequantize

        assert self._name_map is not None and self._parsed is not None, "bind() first"
        out: dict[str, Any] = {}
        for name in names:
            tensor = self._tensors[name]
            weights = dequantize(tensor.data, tensor.tensor_type)
            self._parsed["tensors"] = {}
            result = self._processor.process(weights=weights, name=name, tensor_key_mapping=self._name_map,
                                             parsed_parameters=self._parsed)
            # Some processors (MoE experts) write their tensors into parsed_parameters themselves.
            for hf_name, value in self._parsed["tensors"].items():
                out[hf_name] = value if isinstance(value, torch.Tensor) else _tensor_of(value)
            if result.name in self._name_map:
                out[self._name_map[result.name]] = _tensor_of(result.weights)
        self._parsed["tensors"] = {}
        return out

    def layer(self, index: int) -> dict[str, Any]:
        return self.read(self.index.layer_keys.get(index, []))

    def others(self, skip_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
        tensors = self.read(self.index.other_keys)
        return {k: v for k, v in tensors.items() if not k.startswith(skip_prefixes)}


def _tensor_of(array: Any) -> Any:
    """``array`` as a contiguous tensor, copied only where it is not already one in memory of its own: what the
    kernels dequantized is used as it is, while gguf-py's F32 tensors are read-only views of the file's map."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(array) if array.flags.writeable else np.copy(array))


def open_reader(source: ModelSource, model_type: str | None) -> SafetensorsReader | GgufReader:
    return GgufReader(source) if source.gguf_file else SafetensorsReader(source, model_type)


def move_buffers(module: Any, device: str) -> None:
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and buffer.device.type != "meta":
                sub._buffers[name] = buffer.to(device)


def load_part(model: Any, tensors: dict[str, Any], device: str, part: str) -> None:
    """Put ``tensors`` (checkpoint names) into ``model`` on ``device`` through transformers' loader."""
    import torch
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import convert_and_load_state_dict_in_model
    from transformers.modeling_utils import LoadStateDictConfig

    if not tensors:
        return
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    config = LoadStateDictConfig(
        device_map={"": device},
        dtype=dtype,
        dtype_plan=model._get_dtype_plan(dtype),
        weight_mapping=get_model_conversion_mapping(model),
    )
    with quiet_loading(), _sequential_loading():
        info, _ = convert_and_load_state_dict_in_model(model, tensors, config)
    if info.mismatched_keys:
        name, got, expected = sorted(info.mismatched_keys)[0]
        raise UnsupportedModelError(
            f"The checkpoint's {name} has shape {tuple(got)} where the model expects {tuple(expected)}; it cannot "
            f"be scored layer by layer ({part})."
        )
    if info.conversion_errors:
        raise UnsupportedModelError(
            f"transformers could not convert the checkpoint's weights of {part} ({next(iter(info.conversion_errors))})."
        )


def check_materialized(module: Any, part: str) -> None:
    missing = [name for name, p in module.named_parameters() if p.device.type == "meta"]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""  # one missing was "… and 0 more"
        raise UnsupportedModelError(
            f"The checkpoint has no weights for {part} ({missing[0]}{more}); it cannot be scored layer by layer."
        )


def release(module: Any) -> None:
    """Drop a part's weights: its parameters go back to the meta device (buffers stay: they are small)."""
    import torch

    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None and param.device.type != "meta":
                sub._parameters[name] = torch.nn.Parameter(param.detach().to("meta"), requires_grad=False)


def head_prefixes(model: Any) -> tuple[str, ...]:
    """Checkpoint prefixes of the output head (``lm_head.``), unless it shares the input embeddings."""
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head is None or (embed is not None and head.weight is embed.weight):
        return ()
    for name, module in model.named_modules():
        if module is head:
            return (name + ".",)
    return ()


def layers_of(model: Any, family: Family) -> Any:
    return get_submodule(model, family.layers_path)
