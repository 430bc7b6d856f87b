"""A model built without weights (every parameter on the meta device), and the check that its config describes
the checkpoint it came with, both before anything allocates.

Kept apart from :mod:`.layer_weights` (the readers) and :mod:`.memory` (the sizes read from the headers), which it
uses, so that loading, streaming and the memory estimate import it without a circle.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelSourceError
from .config import read_config, transformers_config
from .memory import _tensor_elements
from .sources import ModelSource

#: How much bigger than its checkpoint a config's model may be before it is refused: tied or absent heads and
#: rotary tables stored in some GGUF files make the two differ by a little, never by much.
_SLACK = 1.1


def check_config_fits_weights(source: ModelSource, config: Any, raw_config: dict[str, Any],
                              trust_remote_code: bool = False) -> None:
    """Refuse a config that describes a much bigger model than the checkpoint holds, before anything allocates.

    transformers builds every parameter the config describes and only then compares it with the checkpoint: a
    config.json (or GGUF metadata) claiming a vocabulary or MLP a thousand times too big makes it allocate
    gigabytes first. The model is built here on the meta device (no memory, buffers included) and its
    parameter count compared with the checkpoint's, read from the headers.
    """
    layers, others, _ = _tensor_elements(source, raw_config)
    stored = sum(layers) + others
    described = described_parameters(config, trust_remote_code)
    if described > _SLACK * stored + 1_000_000:
        raise ModelSourceError(f"The config of {source.display_name} describes a model of {described:,} parameters "
                               f"but its weights hold {stored:,}, so the files do not belong together.")


#: Parameter counts of the configs already built on the meta device, by class and JSON: a job loads the same model
#: several times (open, score, save, check), and each build runs every module's constructor.
_described: dict[tuple[str, str], int] = {}


def described_parameters(config: Any, trust_remote_code: bool = False) -> int:
    """How many parameters ``config``'s model has, counted on the meta device (buffers too: a hostile config's
    buffer would allocate). Remembered per config, except for remote code, which may change between calls."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    key = (type(config).__qualname__, config.to_json_string(use_diff=False))
    if not trust_remote_code and key in _described:
        return _described[key]
    with init_empty_weights(include_buffers=True):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    described = sum(p.numel() for p in skeleton.parameters())
    if not trust_remote_code:
        _described[key] = described
    return described


def build_skeleton(source: ModelSource, dtype: str, trust_remote_code: bool = False) -> Any:
    """The model with every parameter on the meta device (no weight memory) and its buffers computed."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = transformers_config(source, trust_remote_code)
    check_config_fits_weights(source, config, read_config(source), trust_remote_code)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype),
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    return model
