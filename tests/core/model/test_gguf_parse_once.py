"""A GGUF's metadata is parsed once per load, and the model, config and tokenizer are the ones four parses give."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.base import open_backend
from shortgpt_desktop.core.model import gguf_parse_once
from shortgpt_desktop.core.model.gguf_parse_once import gguf_parsed_once
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.testing.gguf_export import export_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer")
    return path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the GGUFReader parses from here on (every reader is built by this class's __init__)."""
    import gguf.gguf_reader

    seen: list[str] = []
    init = gguf.gguf_reader.GGUFReader.__init__

    def counted(self, path, *args, **kwargs) -> None:
        seen.append(os.fspath(path))
        init(self, path, *args, **kwargs)

    monkeypatch.setattr(gguf.gguf_reader.GGUFReader, "__init__", counted)
    return seen


@pytest.mark.parametrize("mode", ["memory", "streamed"])
def test_a_load_parses_the_file_once_and_gives_what_a_parse_per_reader_gives(
        tiny_gguf: Path, parses: list[str], mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = resolve(str(tiny_gguf))
    with monkeypatch.context() as patch:  # transformers' own way: a parse per reader
        patch.setattr(gguf_parse_once, "gguf_parsed_once", contextlib.nullcontext)
        reference = open_backend(mode, source, "cpu", "float32", False)
    assert len(parses) >= 3
    parses.clear()

    backend = open_backend(mode, source, "cpu", "float32", False)
    try:
        assert len(parses) == 1
        assert backend.loaded.config == reference.loaded.config
        text = "The history of the tower, in 1887, and of the men who built it."
        ids = reference.loaded.tokenizer(text)["input_ids"]
        assert backend.loaded.tokenizer(text)["input_ids"] == ids
        windows = [ids, ids[::-1]]
        got = ops.perplexity(backend.stack, windows, 0, removed=[2]).perplexity
        assert got == pytest.approx(ops.perplexity(reference.stack, windows, 0, removed=[2]).perplexity, rel=1e-6)
        if mode == "memory":
            expected = reference.loaded.model.state_dict()
            for name, tensor in backend.loaded.model.state_dict().items():
                assert torch.equal(tensor, expected[name]), name
    finally:
        backend.close()
        reference.close()


def test_the_block_hands_back_gguf_as_it_was_and_drops_its_readers(tiny_gguf: Path) -> None:
    import gguf

    reader_class, dequantize = gguf.GGUFReader, gguf.dequantize
    with pytest.raises(RuntimeError), gguf_parsed_once():
        with gguf_parsed_once():  # nested: the inner end keeps the outer block's readers
            first = gguf.GGUFReader(tiny_gguf)
        assert gguf.GGUFReader(tiny_gguf) is first
        raise RuntimeError("a load that fails")
    assert gguf.GGUFReader is reader_class and gguf.dequantize is dequantize
    assert not gguf_parse_once._readers
    kept = first.__class__  # a name imported while a block was open still builds readers after it
    assert isinstance(gguf_parse_once._shared_reader(tiny_gguf), kept)


def test_a_file_rewritten_inside_the_block_is_parsed_again(tiny_gguf: Path, tmp_path: Path, parses: list[str]) -> None:
    import gguf

    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    with gguf_parsed_once():
        first = gguf.GGUFReader(copy)
        assert gguf.GGUFReader(str(copy)) is first and len(parses) == 1
        assert gguf.GGUFReader(copy, "r+") is not first  # a writable reader is never shared
        os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 1_000_000_000))
        assert gguf.GGUFReader(copy) is not first
        assert len(parses) == 3


def test_threads_share_the_readers_until_the_last_block_ends(tiny_gguf: Path, parses: list[str]) -> None:
    import gguf

    inside, leave = threading.Event(), threading.Event()
    readers: list[object] = []

    def other() -> None:
        with gguf_parsed_once():
            readers.append(gguf.GGUFReader(tiny_gguf))
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert inside.wait(30)
        with gguf_parsed_once():
            assert gguf.GGUFReader(tiny_gguf) is readers[0]
        assert gguf.GGUFReader is not gguf.gguf_reader.GGUFReader  # the other thread's block is still open
    finally:
        leave.set()
        thread.join(30)
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader
    assert len(parses) == 1


def test_a_streamed_load_builds_gguf_pys_tensor_name_map_once(tiny_gguf: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers builds a name map for every submodule it maps; within the block each (architecture, block
    count) is built once, and the map a load gets is the one gguf-py builds."""
    import gguf
    import gguf.tensor_mapping

    built: list[tuple[object, int]] = []
    real = gguf.tensor_mapping.get_tensor_name_map

    def counted(arch: object, n_blocks: int) -> object:
        built.append((arch, n_blocks))
        return real(arch, n_blocks)

    monkeypatch.setattr(gguf.tensor_mapping, "get_tensor_name_map", counted)
    source = resolve(str(tiny_gguf))
    with monkeypatch.context() as patch:  # transformers' own way: a map per submodule
        patch.setattr(gguf_parse_once, "gguf_parsed_once", contextlib.nullcontext)
        patch.setattr(gguf, "get_tensor_name_map", counted)
        open_backend("streamed", source, "cpu", "float32", False).close()
    assert len(built) > 5
    built.clear()
    name_map = gguf.get_tensor_name_map
    backend = open_backend("streamed", source, "cpu", "float32", False)
    backend.close()
    assert len(built) == len(set(built)) >= 1
    assert gguf.get_tensor_name_map is name_map  # handed back
    with gguf_parsed_once():
        arch, n_blocks = built[0]
        shared = gguf.get_tensor_name_map(arch, n_blocks)
        assert gguf.get_tensor_name_map(arch, n_blocks) is shared
        assert shared.mapping == real(arch, n_blocks).mapping


class CancelAfter:
    """A cancel check that says "cancel" from its ``polls``-th question on (counting them)."""

    def __init__(self, polls: int) -> None:
        self.polls, self.asked = polls, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.polls


def test_a_cancel_stops_a_gguf_load_at_the_next_tensor(tiny_gguf: Path, dequantized: list[object]) -> None:
    """A Cancel while a big GGUF loaded waited for the whole load (about 20 s for Gemma 3 on a 2-core CPU): the check
    is asked before each tensor is dequantized, in the loading thread only, and the block ends as after a failure."""
    import gguf

    from shortgpt_desktop.core.errors import Cancelled

    source = resolve(str(tiny_gguf))
    open_backend("memory", source, "cpu", "float32", False).close()
    every = len(dequantized)
    assert every > 10
    dequantized.clear()

    with pytest.raises(Cancelled):  # Cancel pressed as the third tensor was dequantized
        open_backend("memory", source, "cpu", "float32", False, lambda: len(dequantized) >= 3)
    assert len(dequantized) == 3 < every  # stopped at the next tensor, not after the load
    assert gguf.dequantize is gguf.quants.dequantize and not gguf_parse_once._readers
    assert not gguf_parse_once._cancels.checks  # this thread's next load is not asked

    def other_thread_load() -> None:  # a block open elsewhere with a check that says "cancel" stops only its own
        with gguf_parsed_once(lambda: True):
            loaded.set()
            leave.wait(30)

    loaded, leave = threading.Event(), threading.Event()
    thread = threading.Thread(target=other_thread_load)
    thread.start()
    try:
        assert loaded.wait(30)
        open_backend("memory", source, "cpu", "float32", False).close()
    finally:
        leave.set()
        thread.join(30)


@pytest.mark.parametrize("polls", [1, 2, 3])
def test_a_cancel_stops_a_streamed_gguf_opening_between_its_steps(tiny_gguf: Path, polls: int) -> None:
    """Opening a GGUF one layer at a time reads its config, builds the skeleton, maps the names and builds the
    tokenizer (a Gemma 3's about 7 s and 4.6 s): a Cancel is heard between them."""
    from shortgpt_desktop.core.errors import Cancelled

    cancel = CancelAfter(polls)
    with pytest.raises(Cancelled):
        open_backend("streamed", resolve(str(tiny_gguf)), "cpu", "float32", False, cancel)
    assert cancel.asked == polls


def test_metadata_values_are_read_as_transformers_reads_them(tiny_gguf: Path, tmp_path: Path) -> None:
    """Within the block transformers' per-element reading of the metadata is :func:`gguf_parse_once._parse_value`:
    every field of a file (strings, arrays of strings, floats and integers, one of each value type besides) gives
    the same values of the same types as transformers' own, and the block hands transformers' own back."""
    import gguf
    import numpy as np
    from transformers import modeling_gguf_pytorch_utils as transformers_gguf
    from transformers.integrations.ggml import _gguf_parse_value as transformers_own

    values = {"u8": (7, gguf.GGUFValueType.UINT8), "i8": (-7, gguf.GGUFValueType.INT8),
              "u16": (700, gguf.GGUFValueType.UINT16), "i16": (-700, gguf.GGUFValueType.INT16),
              "u32": (70_000, gguf.GGUFValueType.UINT32), "i32": (-70_000, gguf.GGUFValueType.INT32),
              "u64": (2**40, gguf.GGUFValueType.UINT64), "i64": (-(2**40), gguf.GGUFValueType.INT64),
              "f32": (0.1, gguf.GGUFValueType.FLOAT32), "f64": (0.1, gguf.GGUFValueType.FLOAT64),
              "yes": (True, gguf.GGUFValueType.BOOL), "no": (False, gguf.GGUFValueType.BOOL),
              "text": ("Tōkyō — 東京 ▁", gguf.GGUFValueType.STRING), "empty": ("", gguf.GGUFValueType.STRING)}
    files = []
    for order in (gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG):  # a big-endian file's arrays are in its own order
        files.append(tmp_path / f"types-{order.name}.gguf")
        writer = gguf.GGUFWriter(str(files[-1]), "llama", endianess=order)
        for key, (value, kind) in values.items():
            writer.add_key_value(f"test.{key}", value, kind)
        writer.add_array("test.strings", ["a", "", "é", "<0x0A>"])
        writer.add_array("test.integers", [1, -(2**31), 2**31 - 1])
        writer.add_array("test.floats", [0.5, -1.25])
        writer.add_array("test.bools", [True, False])
        writer.add_array("test.nested", [[1, 2], [3]])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    checked = 0
    with gguf_parsed_once():  # where it is used
        for path in (tiny_gguf, *files):
            for reader in (gguf_parse_once.reader_for(path), gguf.gguf_reader.GGUFReader(path)):
                for key, field in reader.fields.items():
                    try:
                        theirs = [transformers_own(field.parts[i], field.types) for i in field.data]
                    except ValueError:  # an array of arrays: transformers cannot read it, nor does the block
                        with pytest.raises(ValueError):
                            [gguf_parse_once._parse_value(field.parts[i], field.types) for i in field.data]
                        continue
                    ours = [gguf_parse_once._parse_value(field.parts[i], field.types) for i in field.data]
                    assert ours == theirs and [type(v) for v in ours] == [type(v) for v in theirs], key
                    checked += 1
    assert checked > 80
    assert isinstance(gguf_parse_once.reader_for(tiny_gguf).fields["general.architecture"].parts[-1], np.ndarray)
    with gguf_parsed_once():
        assert transformers_gguf._gguf_parse_value is gguf_parse_once._parse_value
    assert transformers_gguf._gguf_parse_value is transformers_own


def test_transformers_reading_is_handed_back_whichever_thread_leaves_last() -> None:
    """The block that patched transformers' value reading (the first opened) may end before a block another thread
    opened meanwhile: the last to end hands transformers' own back all the same, and nothing is asked after."""
    from transformers import modeling_gguf_pytorch_utils as transformers_gguf
    from transformers.integrations.ggml import _gguf_parse_value as transformers_own

    opened, leave, left = threading.Event(), threading.Event(), threading.Event()
    asked_after: list[object] = []

    def first() -> None:
        with gguf_parsed_once(lambda: False):
            opened.set()
            leave.wait(30)
        asked_after.extend(gguf_parse_once._cancels.checks)  # this thread's check, gone with its block
        left.set()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert opened.wait(30)
        with gguf_parsed_once():
            assert transformers_gguf._gguf_parse_value is gguf_parse_once._parse_value
            leave.set()
            assert left.wait(30)  # the first block ended, this one is still open
            assert transformers_gguf._gguf_parse_value is gguf_parse_once._parse_value
    finally:
        leave.set()
        thread.join(30)
    assert transformers_gguf._gguf_parse_value is transformers_own
    assert asked_after == []


def test_a_block_that_fails_as_it_opens_leaves_no_check_and_nothing_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel check added before the block's imports stayed asked by this thread's later loads where they failed."""
    import gguf

    reader_class = gguf.GGUFReader

    def failing() -> None:
        raise ImportError("a transformers that cannot be imported")

    monkeypatch.setattr(gguf_parse_once, "_transformers_values", failing)
    with pytest.raises(ImportError), gguf_parsed_once(lambda: True):
        pass
    assert not getattr(gguf_parse_once._cancels, "checks", []) and gguf_parse_once._depth == 0
    assert gguf.GGUFReader is reader_class


def test_a_transformers_without_the_value_reading_it_knows_loads_as_before(tiny_gguf: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers is required from 5.0 on, and its private ``_gguf_parse_value`` may change or go: the block then
    leaves transformers' reading as it is, and the load is the same."""
    from transformers import modeling_gguf_pytorch_utils as transformers_gguf

    def another_version(value, data_type):
        raise AssertionError("not this version's")

    own = transformers_gguf._gguf_parse_value
    monkeypatch.setattr(transformers_gguf, "_gguf_parse_value", another_version)
    with gguf_parsed_once():
        assert transformers_gguf._gguf_parse_value is another_version
    assert transformers_gguf._gguf_parse_value is another_version
    monkeypatch.setattr(transformers_gguf, "_gguf_parse_value", own)
    reference = open_backend("memory", resolve(str(tiny_gguf)), "cpu", "float32", False)
    monkeypatch.setattr(gguf_parse_once, "_transformers_values", lambda: None)
    backend = open_backend("memory", resolve(str(tiny_gguf)), "cpu", "float32", False)
    try:
        assert backend.loaded.config == reference.loaded.config
        text = "The history of the tower, in 1887."
        assert backend.loaded.tokenizer(text)["input_ids"] == reference.loaded.tokenizer(text)["input_ids"]
    finally:
        backend.close()
        reference.close()
    assert transformers_gguf._gguf_parse_value is own
