"""Inspect a model before loading it (what it will cost), choose device and dtype, and load it."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .architectures import Family, family_for_model_type, layer_count, resolve_family
from .errors import Hint, ModelSourceError, ResourceError, UnsupportedModelError
from .sources import ModelSource

if TYPE_CHECKING:
    from .memory_plan import MemoryEstimate

log = logging.getLogger(__name__)


def _load_errors() -> tuple[type[BaseException], ...]:
    """What transformers, safetensors and the tokenizers raise for a model they cannot read: files missing or
    unreadable (OSError), configs or checkpoints they do not understand (ValueError, KeyError), tensors that do
    not fit the config (RuntimeError). Anything else is a bug in this tool and keeps its traceback."""
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, RuntimeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # older safetensors keep it elsewhere; OSError covers most of its cases there
        pass
    return tuple(errors)


LOAD_ERRORS = _load_errors()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a loader's error is the machine running out of memory rather than a bad file: Python's
    MemoryError, an OS error ENOMEM (safetensors maps and reads say "Cannot allocate memory"), or torch's CPU
    allocator ("DefaultCPUAllocator: not enough memory")."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return True
    text = str(exc)
    return "Cannot allocate memory" in text or "not enough memory" in text


DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelInfo:
    """What a model is and what it will cost, known before its weights are loaded."""

    name: str
    architecture: str
    model_type: str
    n_layers: int
    n_params: int
    hidden_size: int
    vocab_size: int
    bytes_on_disk: int
    weight_format: str
    device: str
    dtype: str
    memory: MemoryEstimate  # what a job needs in memory and layer by layer, for the chosen settings

    @property
    def memory_needed_bytes(self) -> int:
        """The peak of a whole job with the model in memory, the program included."""
        return self.memory.peak_bytes


@dataclass
class LoadedModel:
    """A model in memory with everything the engine needs to prune and save it."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    family: Family
    config: dict[str, Any]  # the loaded config as a plain dict (derived per-layer fields included)
    source: ModelSource
    device: str
    dtype: str

    @property
    def n_layers(self) -> int:
        return layer_count(self.config, self.family)


def quiet_library_progress() -> None:
    """Silence the progress bars transformers, huggingface_hub and tqdm draw on stderr (loading weights,
    dequantising GGUF, writing shards): the command line and the window report progress themselves.

    Environment variables are read when those libraries are imported, so call this first thing.
    """
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------- device and dtype


def resolve_device(name: str = "auto") -> str:
    """``auto`` → CUDA, then Apple MPS, else CPU; an explicit name is checked."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResourceError("CUDA was asked for but no CUDA GPU is available.", hint=Hint.USE_CPU)
        if ":" in name:
            index = int(name.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise ResourceError(f"There is no CUDA GPU number {index}; this machine has "
                                    f"{torch.cuda.device_count()}.")
        return name
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ResourceError("Apple MPS was asked for but is not available here.", hint=Hint.USE_CPU)
        return name
    if name == "cpu":
        return name
    raise ResourceError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.")


def resolve_dtype(name: str, device: str) -> str:
    """``auto`` → bf16 on GPUs that support it (fp16 on older ones and MPS), fp32 on CPU."""
    import torch

    name = (name or "auto").lower()
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    name = aliases.get(name, name)
    if name == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float16" if device == "mps" else "float32"
    if name not in DTYPE_NAMES:
        raise ResourceError(f"Unknown dtype {name!r}: use auto, float32, bfloat16 or float16.")
    return name


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


# ------------------------------------------------------------------------------------------------- inspect


def read_config(source: ModelSource) -> dict[str, Any]:
    """The model's config as a dict, without loading weights (GGUF metadata goes through transformers)."""
    if source.gguf_file:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(source.folder, gguf_file=source.gguf_file).to_dict()
        except LOAD_ERRORS as exc:  # transformers raises ValueError/RuntimeError for unknown GGUF architectures
            raise UnsupportedModelError(
                f"{source.gguf_file} cannot be read as a model by transformers ({_first_line(exc)})."
            ) from None
    path = source.folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path} cannot be read ({_first_line(exc)}).") from None


def inspect_model(source: ModelSource, device: str = "auto", dtype: str = "auto", samples: int = 128,
                  seq_len: int = 512, batch_size: int = 1, trust_remote_code: bool = False) -> ModelInfo:
    """Architecture, layers, parameters, bytes on disk and the memory a job on ``samples`` × ``seq_len`` tokens
    needs with the chosen device and dtype."""
    from .memory_plan import estimate_memory

    config = read_config(source)
    check_supported(config, trust_remote_code)
    memory = estimate_memory(source, device, dtype, samples, seq_len, batch_size, config=config)
    return ModelInfo(
        name=source.display_name,
        architecture=architecture_name(config),
        model_type=str(config.get("model_type", "unknown")),
        n_layers=layer_count(config),
        n_params=memory.n_params,
        hidden_size=int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0),
        vocab_size=int(config.get("vocab_size") or 0),
        bytes_on_disk=source.bytes_on_disk,
        weight_format=source.weight_format,
        device=memory.device,
        dtype=memory.dtype,
        memory=memory,
    )


def architecture_name(config: dict[str, Any]) -> str:
    """``LlamaForCausalLM`` and the like; GGUF metadata has no ``architectures``, so it is derived."""
    if config.get("architectures"):
        return str(config["architectures"][0])
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = str(config.get("model_type", "unknown"))
    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, model_type))


def check_supported(config: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse, by name, what is not a decoder-only causal LM that transformers can build.

    Encoder models (BERT, RoBERTa…) have a causal-LM head class in transformers too, so the causal-LM
    mapping alone would let them through: a model type that is a masked-LM (encoder) type and not one of the
    families this tool knows, or an encoder-decoder, is refused.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    architecture = (config.get("architectures") or [model_type or "unknown"])[0]
    encoder = config.get("is_encoder_decoder") or (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and family_for_model_type(model_type) is None
    )
    if encoder:
        raise UnsupportedModelError(
            f"{architecture} ({model_type}) is an encoder model: only decoder-only causal language models "
            "can be pruned."
        )
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return
    if trust_remote_code and "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        raise UnsupportedModelError(
            f"{architecture} needs the model's own code to run, which is off unless you allow it "
            "(only for models you trust).", hint=Hint.TRUST_REMOTE_CODE,
        )
    raise UnsupportedModelError(
        f"{architecture} ({model_type}) is not a supported architecture: only decoder-only causal language "
        "models can be pruned."
    )


# --------------------------------------------------------------------------------------------------- load


def load_model(
    source: ModelSource,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model and tokenizer on ``device`` in ``dtype``; every failure the user can fix is a sentence."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    raw_config = read_config(source)
    check_supported(raw_config, trust_remote_code)
    kwargs = _from_pretrained_kwargs(source, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(source.folder, **kwargs)
        with cached_gguf_name_maps():
            model = AutoModelForCausalLM.from_pretrained(
                source.folder, config=config, dtype=torch_dtype(dtype), low_cpu_mem_usage=True, **kwargs
            )
    except torch.OutOfMemoryError:
        raise ResourceError(
            f"Not enough memory on {device} to load the model in {dtype}; choose a smaller dtype or the CPU."
        ) from None
    except (MemoryError, *LOAD_ERRORS) as exc:
        if is_out_of_memory(exc):
            raise ResourceError(f"Not enough memory on {device} to load the whole model in {dtype}.",
                                hint=Hint.LOW_MEMORY) from None
        raise ModelSourceError(f"The model in {source.folder} could not be loaded: {_first_line(exc)}") from None
    tokenizer = load_tokenizer(source, trust_remote_code)
    try:
        model.to(device)
    except torch.OutOfMemoryError:
        raise ResourceError(f"Not enough memory on {device} for the model in {dtype}.") from None
    model.eval()
    config_dict = model.config.to_dict()
    family = resolve_family(model, config_dict)
    log.info("loaded %s (%s, %d layers) on %s in %s", source.display_name, family.name,
             layer_count(config_dict, family), device, dtype)
    return LoadedModel(model, tokenizer, family, config_dict, source, device, dtype)


def _from_pretrained_kwargs(source: ModelSource, trust_remote_code: bool) -> dict[str, Any]:
    """What every ``from_pretrained`` call of a source takes: the GGUF file, the Hub revision, the code gate."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    return kwargs


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer (from the folder's files or the GGUF's metadata)."""
    from transformers import AutoTokenizer

    kwargs = _from_pretrained_kwargs(source, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(source.folder, **kwargs)
    except LOAD_ERRORS as exc:
        raise ModelSourceError(
            f"The model in {source.folder} has no usable tokenizer ({_first_line(exc)})."
        ) from None


@contextmanager
def cached_gguf_name_maps() -> Iterator[None]:
    """Build gguf-py's tensor-name map once per architecture while a GGUF loads.

    transformers' GGUF loader asks gguf-py for the name map once per submodule of the model, and each call
    rebuilds it from scratch: most of a small GGUF's load time went there. The map depends only on its
    arguments, so a cache gives the same names.
    """
    try:
        import gguf
    except ImportError:
        yield
        return
    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__).rstrip(".")
