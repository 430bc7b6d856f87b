"""Which layers of the first original a pruned model lacks, across prunes: a model this app pruned records them in
its ``config.json`` (``shortgpt_removed_layers``) or GGUF header (``shortgpt.removed_layers``), in the first
original's numbering, so that pruning it again says what is gone from the original and not only from the copy
(the card called the copy's numbering the original's)."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from ..errors import UserError
from ..model.sources import ModelSource

#: The key in a saved config.json; GGUF output carries the same list as ``shortgpt.removed_layers``.
CONFIG_KEY = "shortgpt_removed_layers"


def removed_in_first_original(earlier: Sequence[int], removed: Sequence[int], n_layers: int) -> list[int]:
    """``removed`` (indices of a model of ``n_layers`` layers) in the first original's numbering, together with the
    ``earlier`` layers that model already lacked (in that numbering)."""
    gone = set(earlier)
    original = [i for i in range(n_layers + len(gone)) if i not in gone]
    return sorted(gone | {original[i] for i in removed})


def earlier_removed(source: ModelSource | None) -> list[int]:
    """The layers of the first original the source lacks, where this app pruned it before (else [])."""
    if source is None:
        return []
    if source.gguf_file is not None:
        from .gguf_writer import gguf_removed_layers

        try:
            return gguf_removed_layers(source.folder / source.gguf_file)
        except (UserError, OSError, ValueError, struct.error):  # a GGUF source saved from memory, its file gone
            return []
    try:
        value = json.loads((source.folder / "config.json").read_text(encoding="utf-8")).get(CONFIG_KEY)
    except (OSError, ValueError, AttributeError):
        return []
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        return sorted(set(value))
    return []
