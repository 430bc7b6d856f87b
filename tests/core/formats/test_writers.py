"""The writers' registry: what a job changes for the size it expects, the note on a quantized GGUF saved as
safetensors, and an unknown format."""

from __future__ import annotations

import pytest

from shortgpt_desktop.core.errors import UserError
from shortgpt_desktop.core.formats.writers import WeightChanges, expanded_from_gguf, get_writer
from shortgpt_desktop.core.pipeline import JobSpec


def test_what_a_job_changes_follows_its_repair_and_healing() -> None:
    """The size a quantized GGUF is expected to reach counts the weights each step re-encodes as Q8_0: the plain
    repair does not refit the MLPs before the cuts (counted, a disk that holds the output was refused), and the
    refit repairs the projection after them too (left out, a disk too small passed, and the save failed)."""
    def changes(repair: str, heal_steps: int = 0) -> WeightChanges:
        return WeightChanges.of(JobSpec(model="m", repair=repair, heal_steps=heal_steps))

    assert changes("none") == WeightChanges()
    assert changes("linear") == WeightChanges(repair=True)
    assert changes("refit") == WeightChanges(repair=True, refit=True)
    assert changes("none", heal_steps=1) == WeightChanges(heal=True)


def test_a_quantized_gguf_saved_as_safetensors_is_said_at_its_expanded_size() -> None:
    assert expanded_from_gguf(98_000_000, 135_000_000, "float32") == (
        "a quantized GGUF saved as safetensors is written in float32: about 540.0 MB before the cut, where the GGUF "
        "is 98.0 MB (--format gguf keeps its quantization).")
    assert expanded_from_gguf(270_000_000, 135_000_000, "float16") is None  # an F16 GGUF: no bigger as float16


def test_an_unknown_format_is_refused_naming_the_formats_there_are() -> None:
    with pytest.raises(UserError, match=r"^Unknown output format 'onnx': choose gguf or safetensors\.$"):
        get_writer("onnx")
    assert get_writer("gguf").label == "GGUF" and get_writer("safetensors").label == "safetensors"
