"""One parse of a GGUF file's metadata per model load, where transformers would parse it four to six times.

transformers' GGUF loader builds a ``gguf.GGUFReader`` (which walks every metadata array, the vocabulary one
numpy view per token) for the config, again for the config inside the model's ``from_pretrained``, for the
tokenizer's config and for the weights; the streamed backend's skeleton and weight reader add two more. On a
2-core CPU one parse takes 4.9 s for SmolLM2's 49k-token vocabulary and 22.6 s for Gemma 3's 262k, so most of
a load went to reading the same header again.

Within :func:`gguf_parsed_once` every read-only ``GGUFReader`` of a file is the first one built for it (the
file named by its real path, size and modification time, so a rewritten file is parsed afresh), and it is built
by :class:`.gguf_fast_reader.FastGGUFReader`, which reads the same fields about 20 times faster. A reader is
only read, so the model, its config and its tokenizer are the same. The readers are dropped when the outermost
block ends; a reader kept by its user (the streamed backend's) stays valid, as any ``GGUFReader`` does.

Memory: transformers held a reader while it read the weights and built one more for the tokenizer with the
model loaded; this is the one reader alive at those points. Measured peaks (``benchmarks/bench_load.py``), the
fast reader's against a parse per reader: SmolLM2 7% lower in memory and 24% streamed, Gemma 3 32% and 30%
lower (its plain views weigh less than gguf-py's ``np.memmap`` ones, one per vocabulary string).
transformers' metadata dict (another 220 MB for Gemma 3) is not kept: it is rebuilt from the shared reader in
about 2.3 s.

The block also builds gguf-py's tensor name map once per architecture and block count: transformers'
``get_gguf_hf_weights_map`` builds a new one for every submodule it walks (397 times, 10.7 s, for one streamed
load of SmolLM2; 313 times, 2.6 s, for Gemma 3), and a name map is only read. And transformers' weights are
dequantized by :mod:`.gguf_dequant` (gguf-py's values to the last bit, in torch on every core), as the streamed
backend's are.

And transformers' reading of each metadata value (``_gguf_parse_value``, called once per element: 1.6 million times
for one parse of Gemma 3's vocabulary, scores and token types) is done by :func:`_parse_value`, which gives the same
values of the same types 3.6 times faster (1.01 s → 0.28 s a parse of Gemma 3's metadata, four to five parses a
load).

A block opened with a cancel check (:func:`gguf_parsed_once`) polls it before each tensor is dequantized and each
name map is asked for, in the thread that opened it: a Cancel while a big GGUF loaded waited for the whole load
(about 20 s for Gemma 3 on a 2-core CPU), and now stops at the next tensor.

Limits: the names are patched for the whole process while a block is open, so a thread outside any block gets
shared readers too (they are only read, so that is harmless), and one lock guards the cache, so a thread
parsing another file meanwhile waits for the parse under way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..progress import CancelCheck, raise_if_cancelled
from .sources import file_stamp

_lock = threading.RLock()
_depth = 0
#: gguf.GGUFReader, gguf.get_tensor_name_map, gguf.dequantize, and (transformers' module, its _gguf_parse_value), as
#: they were before the outermost block
_original: list[Any] = []
_readers: dict[tuple[str, int, int], Any] = {}
_name_maps: dict[tuple[Any, int], Any] = {}
#: Each thread's open blocks' cancel checks (``checks``, innermost last): a load polls only its own.
_cancels = threading.local()


def _poll_cancel() -> None:
    """Raise :class:`~..errors.Cancelled` where a block this thread opened was given a check that says so."""
    for check in getattr(_cancels, "checks", ()):
        raise_if_cancelled(check)


def _kept(cache: dict[Any, Any], key: Any, build: Callable[[], Any]) -> Any:
    """``cache[key]``, built by ``build()`` the first time, while a block is open; after every block has ended
    (a name imported meanwhile is still called) a new one, kept nowhere. The depth is read under the lock, so a
    block ending meanwhile is never left holding what was built."""
    with _lock:
        if _depth > 0:
            found = cache.get(key)
            if found is None:
                found = cache[key] = build()
            return found
    return build()


def _shared_reader(path: Any, mode: str = "r") -> Any:
    """``gguf.GGUFReader`` while a block is open: the first read-only reader of this file, built by
    :class:`.gguf_fast_reader.FastGGUFReader`. Called after every block has ended (a module that imported the name
    meanwhile keeps it), it builds a new one; a writable reader is always gguf-py's own."""
    from gguf.gguf_reader import GGUFReader  # the class itself, never this function

    if mode != "r":
        return GGUFReader(path, mode)
    from .gguf_fast_reader import FastGGUFReader

    return _kept(_readers, file_stamp(path), lambda: FastGGUFReader(path, mode))


def _shared_name_map(arch: Any, n_blocks: int) -> Any:
    """``gguf.get_tensor_name_map`` while a block is open: one map per architecture and block count."""
    _poll_cancel()  # asked for each submodule transformers walks
    from gguf.tensor_mapping import get_tensor_name_map

    return _kept(_name_maps, (arch, int(n_blocks)), lambda: get_tensor_name_map(arch, n_blocks))


def _torch_dequantize(data: Any, qtype: Any) -> Any:
    """``gguf.dequantize`` while a block is open: the same values, computed in torch (:mod:`.gguf_dequant`)."""
    from gguf.quants import dequantize as gguf_pys  # the function itself, never this one

    from .gguf_dequant import dequantize

    _poll_cancel()
    return dequantize(data, qtype, fallback=gguf_pys)


#: GGUF value types read as one number: the integers, the floats (gguf-py's GGUFValueType)
_INTEGERS = frozenset((0, 1, 2, 3, 4, 5, 10, 11))
_FLOATS = frozenset((6, 12))
_STRING, _BOOL, _ARRAY = 8, 7, 9
#: (transformers' own _gguf_parse_value, numpy.ndarray), bound as the first block opens (the function runs once
#: per element: no import in it)
_parse_with: tuple[Any, type] = (None, type(None))


def _parse_value(value: Any, data_type: Any) -> Any:
    """transformers' ``_gguf_parse_value`` while a block is open: one element of a metadata field (a numpy view of
    its bytes) as the Python value transformers makes of it, without its per-call list building and its string
    decoding byte by byte through a list; what is not a plain element of these types goes to transformers' own."""
    transformers_own, array_type = _parse_with
    kind = data_type
    if type(data_type) is list:
        if len(data_type) == 1:
            kind = data_type[0]
        elif len(data_type) == 2 and data_type[0] == _ARRAY and data_type[1] != _ARRAY:
            kind = data_type[1]
        else:
            return transformers_own(value, data_type)
    if type(value) is not array_type:
        return transformers_own(value, data_type)
    if kind == _STRING:
        return value.tobytes().decode()
    if kind in _INTEGERS:
        return int(value[0])
    if kind in _FLOATS:
        return float(value[0])
    if kind == _BOOL:
        return bool(value[0])
    return transformers_own(value, data_type)


def reader_for(path: Any) -> Any:
    """A read-only reader of the GGUF file ``path``: the shared one inside a block, else a new fast one."""
    return _shared_reader(path)


@contextmanager
def gguf_parsed_once(cancel: CancelCheck | None = None) -> Iterator[None]:
    """Within the block, each GGUF file's metadata is parsed once (see the module's docstring). Blocks nest, and
    may be open in several threads at once: the readers are shared until the last one ends. ``cancel``: polled
    before each tensor this thread dequantizes within the block (:class:`~..errors.Cancelled` ends it)."""
    global _depth
    try:
        import gguf
    except ImportError:
        yield
        return
    import numpy as np

    values = _transformers_values()
    global _parse_with
    with _lock:
        if _depth == 0:
            _original.append((gguf.GGUFReader, gguf.get_tensor_name_map, gguf.dequantize, values))
            gguf.GGUFReader = _shared_reader
            gguf.get_tensor_name_map = _shared_name_map
            gguf.dequantize = _torch_dequantize
            if values is not None:
                _parse_with = (values[1], np.ndarray)
                values[0]._gguf_parse_value = _parse_value
        _depth += 1
    checks = getattr(_cancels, "checks", None)
    if checks is None:
        checks = _cancels.checks = []
    if cancel is not None:
        checks.append(cancel)
    try:
        yield
    finally:
        if cancel is not None:
            checks.remove(cancel)
        with _lock:
            _depth -= 1
            if _depth == 0:
                # the block that patched transformers' reading may not be the last to end (threads): its own
                gguf.GGUFReader, gguf.get_tensor_name_map, gguf.dequantize, patched = _original.pop()
                if patched is not None:
                    patched[0]._gguf_parse_value = patched[1]
                _readers.clear()
                _name_maps.clear()


def _transformers_values() -> tuple[Any, Any] | None:
    """transformers' GGUF loading module and its own ``_gguf_parse_value`` (None where a version has neither, or a
    block open in another thread has it patched: the values are then read its own way, or that block's)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as module
        from transformers.integrations.ggml import _gguf_parse_value as own
    except ImportError:
        return None
    return (module, own) if getattr(module, "_gguf_parse_value", None) is own else None
