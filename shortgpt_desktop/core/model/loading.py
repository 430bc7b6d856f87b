"""Inspect a model before loading it (what it will cost), choose device and dtype, and load it."""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...format import counted
from ..errors import Hint, ModelSourceError, ResourceError
from ..progress import CancelCheck, raise_if_cancelled
from .families import Family, family_for_model_type, layer_count, resolve_family
from .skeleton import check_config_fits_weights
from .sources import ModelSource

if TYPE_CHECKING:
    from .memory import MemoryEstimate
from shortgpt_desktop.core.model.config import (
    _first_line,
    architecture_name,
    check_supported,
    from_pretrained_kwargs,
    is_out_of_memory,
    read_config,
    read_header_config,
    rejected_by_library,
    transformers_config,
)
from shortgpt_desktop.core.model.devices import resolve_device, resolve_dtype, torch_dtype

log = logging.getLogger(__name__)


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
    #: The most tokens a sample may hold, where the model keeps a table of positions (GPT-2, OPT, GPT-J); None: no
    #: such bound.
    context_length: int | None = None
    #: The positions it was trained on (:func:`trained_positions`): a model whose positions are computed (RoPE) reads
    #: more, but past them it sees positions it never saw (one with a table of positions cannot: ``context_length``).
    trained_positions: int | None = None
    #: How the job will run the model, where the engine has settled it: "memory" (whole) or "streamed".
    mode: str = "memory"

    @property
    def memory_needed_bytes(self) -> int:
        """The peak of a whole job run as :attr:`mode` says, the program included (one layer at a time, the whole
        model's figure was printed: 2.7 GB for SmolLM2 where its peak was under 1 GB)."""
        if self.mode == "streamed":
            return self.memory.runtime_bytes + self.memory.streamed_total
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

    Environment variables are read when those libraries are imported, so call this first thing: before torch
    too, which imports tqdm (after it, transformers' GGUF loading still draws its bar).
    """
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------- device and dtype


# ------------------------------------------------------------------------------------------------- inspect


def inspect_model(source: ModelSource, device: str = "auto", dtype: str = "auto", samples: int = 128,
                  seq_len: int = 512, batch_size: int = 1, trust_remote_code: bool = False, refines: bool = False,
                  repairs: bool = False, heal_steps: int = 0, check_windows: int = 0,
                  logits: bool = True) -> ModelInfo:
    """Architecture, layers, parameters, bytes on disk and the memory a job on ``samples`` × ``seq_len`` tokens
    needs with the chosen device and dtype (with bi+'s measured choice and the repair when ``refines`` and
    ``repairs``: see :func:`.memory.recipe_bytes`; with healing for ``heal_steps``: :func:`.memory.healing_bytes`;
    with the check's ``check_windows``)."""
    from .memory import estimate_memory

    config = read_header_config(source)
    check_supported(config, trust_remote_code)
    memory = estimate_memory(source, device, dtype, samples, seq_len, batch_size, config=config, refines=refines,
                             repairs=repairs, heal_steps=heal_steps, check_windows=check_windows, logits=logits)
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
        context_length=_position_table(config),
        trained_positions=trained_positions(config),
    )


def _as_count(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def trained_positions(config: dict[str, Any]) -> int | None:
    """The positions a model was trained on, from its config: ``max_position_embeddings``, or GPT-J's (and GPT-2's)
    ``n_positions``."""
    return _as_count(config.get("max_position_embeddings")) or _as_count(config.get("n_positions"))


def _position_table(config: dict[str, Any]) -> int | None:
    """How many positions a model that keeps a table of them has (learned embeddings, GPT-J's sines and cosines;
    None for the others)."""
    family = family_for_model_type(config.get("model_type"))
    return _as_count(config.get(family.positions_field) if family is not None and family.positions_field else None)


# --------------------------------------------------------------------------------------------------- load


def load_model(
    source: ModelSource,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    cancel: CancelCheck | None = None,
) -> LoadedModel:
    """Load model and tokenizer on ``device`` in ``dtype``; every failure the user can fix is a sentence.

    A GGUF's metadata is parsed once for the config, the weights and the tokenizer, and gguf-py's tensor name map
    built once (:mod:`.gguf_parse_once`). ``cancel`` is polled between the steps of the load and, for a GGUF,
    before each tensor is dequantized (:class:`~..errors.Cancelled`).
    """
    from . import gguf_parse_once

    with gguf_parse_once.gguf_parsed_once(cancel):
        return _load_model(source, device, dtype, trust_remote_code, cancel)


def _for_where_it_is(reason: str, source: ModelSource) -> str:
    """A library's reason worded for where the model is. transformers ends "…does not appear to have a file named
    configuration_x.py" with "Checkout 'https://huggingface.co/<folder>/tree/main' for available files", a page built
    from the folder it was given: a Hub page for a folder on this computer, and for a downloaded model one named
    after its cache folder. The link is left out, the cache folder is named by the model's id, and the sentence
    says what to do."""
    reason = re.sub(r"\.?\s*Checkout 'https?://[^']*' for available files\.?", "", reason).rstrip(".!:; ")
    missing = re.search(r"does not appear to have a file named (\S+?)$", reason)
    if source.kind == "hub":
        reason = reason.replace(str(source.folder), source.display_name)
        if missing:
            # its id, not as typed: org/name@dev and a page's address gave huggingface.co/org/name@dev/tree/dev
            reason += (f"; the model's page, https://huggingface.co/{source.display_name}/tree/"
                       f"{source.revision or 'main'}, lists the files it has")
    elif missing:
        reason += f"; put the model's own code ({missing[1]}) in its folder"
    return reason


def _load_model(source: ModelSource, device: str, dtype: str, trust_remote_code: bool,
                cancel: CancelCheck | None = None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    raw_config = read_config(source)
    check_supported(raw_config, trust_remote_code)
    kwargs = from_pretrained_kwargs(source, trust_remote_code)
    try:
        config = transformers_config(source, trust_remote_code)
        check_config_fits_weights(source, config, raw_config, trust_remote_code)
        raise_if_cancelled(cancel)
        model, info = AutoModelForCausalLM.from_pretrained(  # gguf-py's name maps: built once (.gguf_parse_once)
            source.folder, config=config, dtype=torch_dtype(dtype), low_cpu_mem_usage=True,
            output_loading_info=True, **kwargs
        )
    except torch.OutOfMemoryError:
        raise ResourceError(
            f"Not enough memory on {device} to load the model in {dtype}; choose a smaller dtype or the CPU."
        ) from None
    except Exception as exc:  # MemoryError too; what is not the file's or memory's fault is re-raised
        if is_out_of_memory(exc):
            raise ResourceError(f"Not enough memory on {device} to load the whole model in {dtype}.",
                                hint=Hint.LOW_MEMORY) from None
        if not rejected_by_library(exc):
            raise
        where = source.display_name if source.kind == "hub" else source.location  # not its cache folder
        raise ModelSourceError(f"The model in {where} could not be loaded: "
                               f"{_for_where_it_is(_first_line(exc), source)}.") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # transformers fills them with random values and says so only in a log line
        raise ModelSourceError(f"The checkpoint in {source.folder} has no weights for {missing[0]}"
                               + (f" and {counted(len(missing) - 1, 'other parameter')}" if len(missing) > 1 else "")
                               + ", so the model would run with random values there.")
    raise_if_cancelled(cancel)
    tokenizer = load_tokenizer(source, trust_remote_code)
    raise_if_cancelled(cancel)
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


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer (from the folder's files or the GGUF's metadata)."""
    from transformers import AutoTokenizer

    kwargs = from_pretrained_kwargs(source, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(source.folder, **kwargs)
    except Exception as exc:  # the tokenizers binding raises TypeError for merges it cannot parse
        if not (rejected_by_library(exc) or isinstance(exc, TypeError)):
            raise
        reason = _first_line(exc)
        if reason.startswith("Couldn't instantiate the backend tokenizer"):  # its list of three ways, on more lines
            reason = "none of tokenizer.json, tokenizer.model, or vocab.json with merges.txt is there to build it from"
        raise ModelSourceError(f"The model in {source.location} has no usable tokenizer ({reason}).") from None


