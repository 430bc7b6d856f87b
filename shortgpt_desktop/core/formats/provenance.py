"""What a saved model records of its source. Which layers of the first original it lacks, across prunes: a model this
app pruned records them in its ``config.json`` (``shortgpt_removed_layers``) or GGUF header
(``shortgpt.removed_layers``), in the first original's numbering, so that pruning it again says what is gone from the
original and not only from the copy (the card called the copy's numbering the original's). And the source's licence,
which the card carries."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..model.sources import ModelSource, looks_like_hub_id
from .gguf_reader import GGUF_SCALARS, GGUFLayout, check_gguf, read_scalar_array

#: The key in a saved config.json; GGUF output carries the same list under :data:`GGUF_KEY`.
CONFIG_KEY = "shortgpt_removed_layers"
GGUF_KEY = "shortgpt.removed_layers"


def in_first_original(earlier: Sequence[int], layers: Sequence[int], n_layers: int) -> list[int]:
    """``layers`` (indices of a model of ``n_layers`` layers that lacks the first original's ``earlier`` layers) in
    the first original's numbering."""
    gone = set(earlier)
    original = [i for i in range(n_layers + len(gone)) if i not in gone]
    return [original[i] for i in layers]


def removed_in_first_original(earlier: Sequence[int], removed: Sequence[int], n_layers: int) -> list[int]:
    """``removed`` (indices of a model of ``n_layers`` layers) in the first original's numbering, together with the
    ``earlier`` layers that model already lacked (in that numbering)."""
    return sorted(set(earlier) | set(in_first_original(earlier, removed, n_layers)))


def gguf_removed_layers(path: Path, layout: GGUFLayout | None = None) -> list[int]:
    """The layers of the first original a GGUF this app wrote lacks (its :data:`GGUF_KEY`; else [])."""
    layout = layout or check_gguf(path)
    field = layout.fields.get(GGUF_KEY)
    if field is None or field.item_type not in GGUF_SCALARS:
        return []
    return sorted({int(i) for i in read_scalar_array(path, field) if int(i) >= 0})


def earlier_removed(source: ModelSource | None) -> list[int]:
    """The layers of the first original the source lacks, where this app pruned it before (else [])."""
    if source is None:
        return []
    if source.gguf_file is not None:
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


def layers_a_copy_lacks(first: ModelSource | None, first_layers: int, copy: ModelSource | None,
                        copy_layers: int) -> list[int]:
    """The layers of ``first`` (of ``first_layers``, in its own numbering) that ``copy`` lacks, as ``copy``, a model
    this app pruned, records them; [] where it records none, or where what it records does not fit ``first`` (more
    layers gone from ``first`` than from ``copy``, or counts that do not add up to one original)."""
    earlier, gone = set(earlier_removed(first)), set(earlier_removed(copy))
    if not gone or not earlier < gone or first_layers + len(earlier) != copy_layers + len(gone):
        return []
    as_numbered_there = in_first_original(sorted(earlier), range(first_layers), first_layers)
    return [index for index, layer in enumerate(as_numbered_there) if layer in gone]


#: A licence as the Hub's model cards name it (``apache-2.0``, ``llama3.1``, ``other``): anything else is not carried.
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_LICENSE_LINK = re.compile(r"(https?://|LICENSE)[^\s]{0,200}")


def _front_matter(folder: Path) -> list[tuple[str, str]]:
    """The ``key: value`` lines of the front matter of the folder's own card (README.md), values unquoted."""
    try:
        with (folder / "README.md").open(encoding="utf-8", errors="replace") as stream:
            head = stream.read(65536)
    except OSError:
        return []
    if not head.startswith("---"):
        return []
    lines = []
    for line in head[3:].split("\n---", 1)[0].splitlines():
        key, _, value = line.partition(":")
        lines.append((key, value.strip().strip("\"'")))  # an indented key is a nested one: not matched
    return lines


def first_original(source: ModelSource | None) -> str:
    """The Hub id of the model a source this app pruned before was first pruned from, as its card's ``base_model``
    names it ("" for another source, or where its card names none): pruning a pruned copy again wrote a card with
    no ``base_model`` and the Hub id nowhere, "removed from `online`" alone."""
    if source is None or source.gguf_file is not None or source.kind == "hub" or not earlier_removed(source):
        return ""
    found = [value for key, value in _front_matter(source.folder) if key == "base_model"]
    return found[0] if found and looks_like_hub_id(found[0]) else ""


def source_license(source: ModelSource | None) -> dict[str, str]:
    """The licence the source declares, for the card's front matter: a GGUF file's ``general.license``, else the
    front matter of the folder's own card (README.md: ``license``, and for ``other`` its ``license_name`` and
    ``license_link``). Empty where none is said: the card then claims none. The card dropped it, so a pruned copy
    shared on the Hub showed no licence."""
    if source is None:
        return {}
    if source.gguf_file is not None:
        try:
            value = check_gguf(source.folder / source.gguf_file).metadata.get("general.license")
        except Exception:  # the file was read to load it: a licence is not worth a failed save
            return {}
        return {"license": str(value)} if isinstance(value, str) and _LICENSE_ID.fullmatch(value) else {}
    found: dict[str, str] = {}
    for key, value in _front_matter(source.folder):
        pattern = _LICENSE_LINK if key == "license_link" else _LICENSE_ID
        if key in ("license", "license_name", "license_link") and pattern.fullmatch(value):
            found[key] = value
    if "license" not in found:
        return {}
    return found if found["license"] == "other" else {"license": found["license"]}
