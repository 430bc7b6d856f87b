"""What a pruned model can be written as, as a registry keyed by format: the engine asks the writer of the chosen
format for everything format-specific (whether the source can be written so, the refusals before any work, the
sizes before and after, the quantization label, the writing itself) and never names a format.

Shipped: ``gguf`` (a GGUF source keeps its quantization, :mod:`.gguf_writer`) and ``safetensors`` (a Hugging Face
folder, :mod:`.safetensors_writer`). Adding a format is one class and one :func:`register` call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UserError
from .safetensors_writer import SaveResult


@dataclass(frozen=True)
class WeightChanges:
    """Which weights a job changes beyond removing layers: what a format that re-encodes changed weights (a
    quantized GGUF writes them as Q8_0) must count in the size it expects to write."""

    repair: bool = False  # the training-free repair: the MLP output projection beside each cut
    refit: bool = False  # the MLP refit: every MLP projection before each cut
    heal: bool = False  # healing: every projection of every kept layer
    #: The parameters changed (Hugging Face names, original layer index), once the repair and healing were fitted
    #: for the plan: the exact set, where the three flags above give a bound.
    names: frozenset[str] | None = None

    @classmethod
    def of(cls, spec: Any) -> WeightChanges:
        """What a job with ``spec`` (a :class:`..pipeline.JobSpec`: its ``repair`` and ``heal_steps``) changes."""
        return cls(repair=spec.repair != "none", refit=spec.repair == "refit", heal=spec.heal_steps > 0)


class Writer:
    """One output format."""

    name: ClassVar[str]
    label: ClassVar[str]
    #: The most it writes beside the weights and the model card (config, tokenizer: Gemma 3's tokenizer alone is
    #: 33 MB), for the room asked of the disk before a job.
    side_files_bytes: ClassVar[int] = 0
    #: Said when a source cannot be written in this format.
    unavailable: ClassVar[str] = "This model cannot be saved in this format."

    def available(self, source: Any) -> bool:
        """Whether a model from ``source`` can be written in this format."""
        raise NotImplementedError

    def refuse(self, source: Any, removed: Sequence[int]) -> None:
        """Raise, before any slow step, what this format cannot take (``removed`` may be empty: not known yet)."""

    def refuse_adjusted(self, source: Any, repair: bool, heal: bool, refit: bool = False) -> None:
        """Raise, before any slow step, when weights the repair, MLP refit or healing change cannot be written
        back."""

    def sizes(self, source: Any, removed: Sequence[int], n_layers: int, changes: WeightChanges = WeightChanges()
              ) -> tuple[int, int] | None:
        """Bytes before and after in this format, when the format knows them better than parameters × dtype
        (``changes``: the weights the job changes, where the format writes them in another type)."""
        return None

    def quantization(self, source: Any) -> str:
        """What the written weights are (a GGUF file type such as Q4_K_M, the float type a safetensors copy keeps),
        or "" where the job's own float type says it."""
        return ""

    def write(self, loaded: Any, plan: Any, out: str | Path, report: Any, force: bool, progress: Any, cancel: Any,
              weights: dict[str, Any]) -> SaveResult:
        raise NotImplementedError


class SafetensorsWriter(Writer):
    name = "safetensors"
    label = "safetensors"
    side_files_bytes = 64_000_000

    def quantization(self, source: Any) -> str:
        """The float type a safetensors model's weights keep in the copy (each tensor is written in its own type,
        a repaired one cast back to it): the type that holds most of the source's bytes, "bfloat16" say. A bfloat16
        model's copy said "Device: cpu, float32" on its card and "dtype": "float32" in the JSON, the type the job
        computed in, and its own type nowhere. "" for a GGUF source (its card says what it was de-quantized to) and
        a legacy .bin checkpoint."""
        from collections import Counter

        from .safetensors_io import dtype_of_code, safetensors_entries

        if source is None or source.gguf_file is not None:
            return ""
        held: Counter[str] = Counter()
        try:
            for weight in source.weight_files:
                if weight.format != "safetensors":
                    return ""
                for entry in safetensors_entries(weight.path):
                    held[entry.dtype] += entry.nbytes
        except (OSError, ValueError):  # read when the model was opened: a file gone since is the save's to say
            return ""
        return dtype_of_code(held.most_common(1)[0][0]) if held else ""

    def __init__(self) -> None:
        #: per set of weight files (each with its size and time of change: a folder converted again is read again)
        #: and layer count: bytes per decoder layer and the rest, or None where they cannot be told
        self._layers: dict[tuple[Any, ...], tuple[list[int], int] | None] = {}

    def available(self, source: Any) -> bool:
        return True

    def sizes(self, source: Any, removed: Sequence[int], n_layers: int, changes: WeightChanges = WeightChanges()
              ) -> tuple[int, int] | None:
        """The tensor data before and after, from a safetensors checkpoint's headers before anything loads (the
        headers, a few kB, left out): every tensor is copied byte for byte and a repaired or healed weight is cast
        back to the dtype it is stored in, so only the removed layers' tensors change the size (``changes`` adds
        nothing). None for a GGUF or ``.bin`` source, for a family whose tensor names are only known once the model
        is loaded, for files whose layers do not match the config's count, and for files that can no longer be read:
        the engine then counts parameters × stored bytes."""
        layers = self._layer_bytes(source, n_layers)
        if layers is None:
            return None
        per_layer, rest = layers
        before = rest + sum(per_layer)
        return before, before - sum(per_layer[i] for i in set(removed) if 0 <= i < n_layers)

    def _layer_bytes(self, source: Any, n_layers: int) -> tuple[list[int], int] | None:
        from ..errors import ModelSourceError, UnsupportedModelError

        if source is None or source.gguf_file or not source.weight_files:
            return None
        from ..model.sources import weights_stamp

        try:
            key = (weights_stamp(source), n_layers)
            if key not in self._layers:
                self._layers[key] = self._read_layer_bytes(source, n_layers)
        # moved or broken since it was opened (said where it is read again), or what the layer reader refuses (a
        # legacy .bin, a stored dtype it does not take): the engine counts it
        except (OSError, ModelSourceError, UnsupportedModelError):
            return None
        return self._layers[key]

    @staticmethod
    def _read_layer_bytes(source: Any, n_layers: int) -> tuple[list[int], int] | None:
        from ..model.config import read_config
        from ..model.families import family_for_model_type
        from ..model.layer_weights import SafetensorsReader

        model_type = read_config(source).get("model_type")
        if family_for_model_type(model_type) is None:  # the reader's generic names are a guess: no exact size
            return None
        index = SafetensorsReader(source, model_type).index  # the headers the streamed job reads layers by
        per_layer = [index.layer_bytes(i) for i in range(n_layers)]
        # Every layer the config counts has tensors, and none past them (the save would drop those too): names
        # this family's pattern does not know, or files that do not match the config, are left to the engine.
        if sorted(index.layer_keys) != list(range(n_layers)) or not all(per_layer):
            return None
        return per_layer, index.other_bytes()

    def write(self, loaded: Any, plan: Any, out: str | Path, report: Any, force: bool, progress: Any, cancel: Any,
              weights: dict[str, Any]) -> SaveResult:
        from .. import pipeline

        return pipeline.save(loaded, plan, out, report, force, progress, cancel, weights=weights)


class GGUFWriter(Writer):
    name = "gguf"
    label = "GGUF"
    unavailable = ("GGUF output keeps a GGUF source's quantization, and this model is not a GGUF file: save it as "
                   "safetensors.")

    def __init__(self) -> None:
        #: per file (with its size and time of change: a file written again is read again): its header, bytes per
        #: block, the rest
        self._blocks: dict[tuple[Path, int, int], tuple[Any, list[int], int]] = {}

    def available(self, source: Any) -> bool:
        return source is not None and bool(source.gguf_file)

    def refuse(self, source: Any, removed: Sequence[int]) -> None:
        from .gguf_writer import plan_gguf_pruning

        plan_gguf_pruning(source, removed)

    def refuse_adjusted(self, source: Any, repair: bool, heal: bool, refit: bool = False) -> None:
        from .gguf_writer import check_gguf_replacements

        check_gguf_replacements(source, repair=repair, heal=heal, refit=refit)

    def sizes(self, source: Any, removed: Sequence[int], n_layers: int, changes: WeightChanges = WeightChanges()
              ) -> tuple[int, int] | None:
        """From the GGUF header: a quantized file stays quantized, block by block, and each weight the job changes
        is written as the writer will write it (a 4-bit one as Q8_0: healing a Q4 file makes its kept layers
        about twice as big)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        from ..model.sources import file_stamp
        from .gguf_reader import check_gguf
        from .gguf_writer import replaced_tensors, rewritten_tensors, written_type_of

        path = source.folder / source.gguf_file
        try:
            key = file_stamp(path)
        except OSError:  # moved since it was opened: said where it is read again
            return None
        _, file_size, _ = key
        if key not in self._blocks:
            layout = check_gguf(path)
            per_block = [0] * n_layers
            for tensor in layout.tensors:
                parts = tensor.name.split(".")
                if parts[0] == "blk" and parts[1].isdigit() and int(parts[1]) < len(per_block):
                    per_block[int(parts[1])] += tensor.n_bytes
            self._blocks[key] = (layout, per_block, file_size - sum(per_block))
        layout, per_block, rest = self._blocks[key]
        before = rest + sum(per_block)
        after = before - sum(per_block[i] for i in removed)
        rewritten = (replaced_tensors(layout, changes.names) if changes.names is not None
                     else rewritten_tensors(layout, removed, changes.repair, changes.refit, changes.heal))
        for tensor in rewritten:
            written = written_type_of(GGMLQuantizationType(tensor.type_id), int(tensor.shape[0]))
            block, type_size = GGML_QUANT_SIZES[written]
            after += math.prod(tensor.shape) // block * type_size - tensor.n_bytes
        return before, after

    def quantization(self, source: Any) -> str:
        from ..model.gguf_facts import quantization_label
        from .gguf_reader import check_gguf

        return quantization_label(check_gguf(source.folder / source.gguf_file))

    def write(self, loaded: Any, plan: Any, out: str | Path, report: Any, force: bool, progress: Any, cancel: Any,
              weights: dict[str, Any]) -> SaveResult:
        from ..report import model_card
        from .gguf_writer import write_pruned_gguf

        source = loaded.source

        def card(changed: Mapping[str, tuple[str, str]], written: Any) -> str:
            """The card once the writer knows what it re-quantized (made before, it named none of them) and whether
            it wrote the sliding-window layout out."""
            if report is None:
                return ""
            report.changed_types = {k: list(v) for k, v in changed.items()}
            report.gguf_sliding_window = list(written.stated_swa or [])
            return model_card(report, source.card_name)

        result = write_pruned_gguf(source, plan.removed, out, card_text=card, force=force, replaced=weights,
                                   progress=progress, cancel=cancel)
        return SaveResult(result.folder, result.files, result.tensors, result.bytes_written)


#: In the order a source's own format is looked for: a GGUF source is written as GGUF unless asked otherwise.
WRITERS: dict[str, Writer] = {}


def expanded_from_gguf(gguf_bytes: int, n_params: int, dtype: str) -> str | None:
    """The note for a quantized GGUF saved as safetensors, whose weights are written expanded to ``dtype``: a
    98 MB Q4_1 SmolLM2 became a 439 MB folder, said only once written. None where the file is not much smaller
    than that (an F32 or F16 GGUF)."""
    from ...format import human_bytes
    from ..model.dtypes import bytes_per_element

    expanded = int(n_params * bytes_per_element(dtype))
    if gguf_bytes >= 0.8 * expanded:
        return None
    return (f"a quantized GGUF saved as safetensors is written in {dtype}: about {human_bytes(expanded)} before the "
            f"cut, where the GGUF is {human_bytes(gguf_bytes)} (--format gguf keeps its quantization).")


def register(writer: Writer) -> Writer:
    WRITERS[writer.name] = writer
    return writer


def get_writer(name: str) -> Writer:
    if name not in WRITERS:
        raise UserError(f"Unknown output format {name!r}: choose {' or '.join(WRITERS)}.")
    return WRITERS[name]


for _writer in (GGUFWriter(), SafetensorsWriter()):
    register(_writer)
