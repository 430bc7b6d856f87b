"""A model's config read without its weights, and what it says about whether the tool can prune it."""

from __future__ import annotations

import errno
import json
import logging
from typing import TYPE_CHECKING, Any

from ..errors import Hint, ModelSourceError, UnsupportedModelError
from .families import family_for_model_type
from .sources import ModelSource

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    pass


def _load_errors() -> tuple[type[BaseException], ...]:
    """What transformers, gguf-py, safetensors and the tokenizers raise for a model they cannot read: files
    missing or unreadable (OSError), configs or checkpoints they do not understand (ValueError, KeyError, and
    huggingface_hub's strict config validation), tensors that do not fit the config (RuntimeError), and what
    gguf-py's numpy views and struct reads raise on a file whose contents are damaged (IndexError,
    OverflowError, struct.error, EOFError). Anything else is a bug in this tool and keeps its traceback."""
    import struct

    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, RuntimeError, IndexError, OverflowError,
                                         struct.error, EOFError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # older safetensors keep it elsewhere; OSError covers most of its cases there
        pass
    try:
        from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

        errors += [StrictDataclassFieldValidationError, StrictDataclassClassValidationError]
    except ImportError:  # older huggingface_hub: configs are not validated
        pass
    return tuple(errors)


def rejected_by_library(exc: BaseException) -> bool:
    """Whether a loader's exception means "this file is not usable" rather than a bug: one of
    :data:`LOAD_ERRORS`, or the plain ``Exception`` the tokenizers library (Rust) raises for a vocabulary it
    cannot build ("Error while initializing BPE: Token ... out of vocabulary")."""
    return isinstance(exc, LOAD_ERRORS) or type(exc) is Exception


LOAD_ERRORS = _load_errors()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a loader's error is the machine running out of memory rather than a bad file: Python's
    MemoryError, an OS error ENOMEM (safetensors maps and reads say "Cannot allocate memory"), or torch's CPU
    allocator ("DefaultCPUAllocator: not enough memory")."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return True
    text = str(exc)
    return "Cannot allocate memory" in text or "not enough memory" in text


def from_pretrained_kwargs(source: ModelSource, trust_remote_code: bool = False) -> dict[str, Any]:
    """What every ``from_pretrained`` call of a source takes: the GGUF file, the Hub revision, the code gate."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    return kwargs


def transformers_config(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The transformers config the model is built from, the one place it is made: as ``AutoConfig`` reads it, with
    what transformers' GGUF reader gets wrong put right as llama.cpp reads the file (:func:`drop_bad_pad_id`,
    :func:`_with_gguf_layer_types`)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.folder, **from_pretrained_kwargs(source, trust_remote_code))
    return _with_gguf_layer_types(drop_bad_pad_id(config), source)


def drop_bad_pad_id(config: Any) -> Any:
    """``config`` (a transformers config) without a padding id outside the vocabulary, which llama.cpp ignores ("bad
    special token … using default id -1") and transformers' embedding refuses with an AssertionError, a traceback.
    Changed in place, and returned."""
    pad, vocab = getattr(config, "pad_token_id", None), getattr(config, "vocab_size", None)
    if isinstance(pad, int) and isinstance(vocab, int) and vocab > 0 and not 0 <= pad < vocab:
        log.info("padding token id %d is outside the vocabulary of %d tokens: left unset, as llama.cpp does", pad,
                 vocab)
        config.pad_token_id = None
    return config


def _with_gguf_layer_types(config: Any, source: ModelSource) -> Any:
    """``config`` with the sliding-window layout a GGUF states per layer (:func:`.gguf_facts.sliding_window_layers`),
    where the config has per-layer attention types (Gemma 2/3): as llama.cpp reads the file."""
    if not source.gguf_file or getattr(config, "layer_types", None) is None:
        return config
    from .gguf_facts import sliding_window_layers

    pattern = sliding_window_layers(source.folder / source.gguf_file)
    if pattern is not None:
        config.layer_types = ["sliding_attention" if slides else "full_attention" for slides in pattern]
    return config


def read_config(source: ModelSource) -> dict[str, Any]:
    """The model's config as a dict, without loading weights (GGUF metadata goes through transformers)."""
    if source.gguf_file:
        try:
            config = transformers_config(source).to_dict()
        except Exception as exc:  # transformers raises ValueError/RuntimeError for unknown GGUF architectures
            if not rejected_by_library(exc):
                raise
            # transformers words any failure to parse a GGUF as "the config file ... is not a valid JSON file";
            # the error it caught says what is wrong
            cause = exc.__cause__ or exc.__context__
            reason = _first_line(cause if "valid JSON file" in str(exc) and cause is not None else exc)
            raise UnsupportedModelError(
                f"{source.gguf_file} cannot be read as a model by transformers ({reason})."
            ) from None
        check_config_values(config, source.gguf_file)
        return config
    path = source.folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelSourceError(f"{path} cannot be read ({_first_line(exc)}).") from None
    if not isinstance(config, dict):
        raise ModelSourceError(f"{path} is not a JSON object, so it is not a model config.")
    check_config_values(config, str(path))
    return config


#: Config sizes a real model stays within: (fields, smallest, largest). A value outside is a corrupt or hostile
#: file, refused before anything is allocated from it (a loader believes these numbers).
CONFIG_BOUNDS: tuple[tuple[tuple[str, ...], int, int], ...] = (
    (("num_hidden_layers", "n_layer", "num_layers", "n_layers"), 1, 1000),
    (("hidden_size", "n_embd", "d_model"), 1, 1_000_000),
    (("num_attention_heads", "n_head", "num_key_value_heads", "n_head_kv", "num_kv_heads", "head_dim"), 1, 100_000),
    (("intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size"), 1, 10_000_000),
    (("vocab_size",), 1, 10_000_000),
    (("max_position_embeddings", "n_positions"), 1, 1 << 30),
)


#: Sizes some architectures give per layer as a list; every other bounded size must be a single number (the
#: memory estimate reads hidden size, heads and vocabulary as numbers).
_PER_LAYER_ALLOWED = ("num_key_value_heads", "n_head_kv", "num_kv_heads", "intermediate_size")


def check_config_values(config: dict[str, Any], where: str) -> None:
    """Refuse a config whose sizes are not positive whole numbers within :data:`CONFIG_BOUNDS`, or whose head
    counts do not divide the hidden size; one sentence naming the file. A multimodal config's ``text_config``
    is checked the same way. Absent (or null) fields are left to the loader's defaults."""
    if "model_type" in config and not isinstance(config["model_type"], str):
        raise ModelSourceError(f"{where} gives model_type = {config['model_type']!r}, not a name, so the file is "
                               "corrupt.")
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, list)
                                          and all(isinstance(a, str) for a in architectures)):
        raise ModelSourceError(f"{where} gives architectures = {architectures!r}, not a list of names, so the file "
                               "is corrupt.")
    for part in (config, config.get("text_config")):
        if not isinstance(part, dict):
            continue
        for fields, low, high in CONFIG_BOUNDS:
            for name in fields:
                value = part.get(name)
                if value is None:
                    continue
                # some architectures give a size per layer (OpenELM's key/value heads): a list of such numbers
                per_layer = name in _PER_LAYER_ALLOWED and isinstance(value, list) and 0 < len(value) <= 1000
                values = value if per_layer else [value]
                if not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in values):
                    raise ModelSourceError(f"{where} gives {name} = {value!r}; a model has a whole number from "
                                           f"{low:,} to {high:,} there, so the file is corrupt.")
        hidden = part.get("hidden_size") or part.get("n_embd") or part.get("d_model")
        heads = part.get("num_attention_heads") or part.get("n_head")
        kv = part.get("num_key_value_heads")
        if isinstance(heads, int) and isinstance(kv, int) and heads % kv:
            raise ModelSourceError(f"{where} gives {heads} attention heads and {kv} key/value heads, which do not "
                                   "group evenly, so the file is corrupt.")
        if isinstance(hidden, int) and isinstance(heads, int) and not part.get("head_dim") and hidden % heads:
            raise ModelSourceError(f"{where} gives a hidden size of {hidden} for {heads} attention heads, which "
                                   "does not divide evenly, so the file is corrupt.")


def read_header_config(source: ModelSource) -> dict[str, Any]:
    """What inspection needs from the config, from headers only: a folder's ``config.json``, or a config built
    from a GGUF header's metadata in milliseconds (:func:`.gguf_facts.header_config`); loading keeps
    :func:`read_config`, transformers' full config."""
    if source.gguf_file:
        from .gguf_facts import header_config

        config = header_config(source.folder / source.gguf_file)
        check_config_values(config, source.gguf_file)
        return config
    return read_config(source)


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
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    architecture = (config.get("architectures") or [model_type or "unknown"])[0]
    encoder = config.get("is_encoder_decoder") or (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and family_for_model_type(model_type) is None
    )
    if encoder:
        # T5 was "an encoder" model; BART's config may not say is_encoder_decoder, its type does (a review)
        both = config.get("is_encoder_decoder") or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
        kind = "an encoder-decoder" if both else "an encoder"
        raise UnsupportedModelError(
            f"{architecture} ({model_type}) is {kind} model: only decoder-only causal language models can be pruned."
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


def _first_line(exc: BaseException) -> str:
    """The first line of a library's message, without its closing punctuation (the caller ends the sentence).

    transformers' "You set `ignore_mismatched_sizes` to `False`..." points at a report the user never sees: it
    is said plainly instead.
    """
    text = str(exc).strip().splitlines()
    line = (text[0] if text else exc.__class__.__name__).rstrip(".!:; ")
    if line.startswith(("Validation error for", "Class validation error for")) and len(text) > 1:
        # huggingface_hub's config validation: the reason is on the next line ("    TypeError: Field ...")
        line = text[1].strip().split(": ", 1)[-1].rstrip(".!:; ")
    if "ignore_mismatched_sizes" in line:
        return "its weights do not have the sizes its config gives"
    return line
