"""torch's dequantization gives gguf-py's float32 values to the last bit, for every block layout it covers."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from shortgpt_desktop.core.model import gguf_dequant

Q = GGMLQuantizationType


def random_blocks(qtype: GGMLQuantizationType, rows: int, blocks_per_row: int, seed: int = 0) -> np.ndarray:
    """Every byte random: the float16 scales take every exponent (subnormals, the largest, and now and then an
    infinity or a NaN), the packed values every bit pattern."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(rows, blocks_per_row * type_size), dtype=np.uint8)


def assert_same_bits(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)  # a NaN's payload is the platform's; where it is, both have one
    assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))


@pytest.mark.parametrize("qtype", sorted(gguf_dequant.KERNELS, key=lambda t: t.name), ids=lambda t: t.name)
def test_each_kernel_gives_gguf_pys_values_to_the_last_bit(qtype: GGMLQuantizationType,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_blocks(qtype, rows=7, blocks_per_row=5)
    expected = gguf.quants.dequantize(data, qtype)
    assert_same_bits(gguf_dequant.dequantize(data, qtype), expected)
    # Several chunks, the last one short: 35 blocks, 4 at a time.
    block_size, _ = GGML_QUANT_SIZES[qtype]
    monkeypatch.setattr(gguf_dequant, "CHUNK_VALUES", 4 * block_size)
    assert_same_bits(gguf_dequant.dequantize(data, qtype), expected)
    # A one-dimensional tensor (a norm or a bias stored quantized) keeps its shape.
    flat = data[0]
    assert_same_bits(gguf_dequant.dequantize(flat, qtype), gguf.quants.dequantize(flat, qtype))


def test_the_covered_types_are_those_of_common_downloads() -> None:
    """The legacy and k-quant types, which nearly every published GGUF is made of."""
    assert set(gguf_dequant.KERNELS) == {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K,
                                         Q.Q6_K}


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.IQ4_NL], ids=lambda t: t.name)
def test_other_types_go_to_gguf_py(qtype: GGMLQuantizationType) -> None:
    block_size = GGML_QUANT_SIZES[qtype][0]
    data = random_blocks(qtype, rows=3, blocks_per_row=64 // block_size or 1)
    if qtype == Q.F32:
        data = data.view(np.float32)
    elif qtype == Q.F16:
        data = data.view(np.float16)
    asked: list[GGMLQuantizationType] = []

    def gguf_pys(array: np.ndarray, kind: GGMLQuantizationType) -> np.ndarray:
        asked.append(kind)
        return gguf.quants.dequantize(array, kind)

    assert_same_bits(gguf_dequant.dequantize(data, qtype, fallback=gguf_pys), gguf.quants.dequantize(data, qtype))
    assert asked == [qtype]


def test_a_row_that_is_not_whole_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match="not whole blocks"):
        gguf_dequant.dequantize(np.zeros((2, 35), dtype=np.uint8), Q.Q8_0)


@pytest.fixture(scope="module")
def q8_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> object:
    from shortgpt_desktop.core.testing.gguf_export import export_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-q8.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer", q8_down=True)
    return path


@pytest.mark.parametrize("mode", ["memory", "streamed"])
def test_a_gguf_loads_through_the_kernels_to_the_weights_gguf_py_gives(q8_gguf, mode: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a GGUF is read (transformers' loader in memory, the streamed backend's reader layer by layer) use
    the kernels, and the model's weights are gguf-py's."""
    import torch

    from shortgpt_desktop.core.backends.base import open_backend
    from shortgpt_desktop.core.model.sources import resolve

    def weights() -> dict[str, torch.Tensor]:
        backend = open_backend(mode, resolve(str(q8_gguf)), "cpu", "float32", False)
        try:
            if mode == "memory":
                return {k: v.clone() for k, v in backend.loaded.model.state_dict().items()}
            reader = backend.stack.reader
            return {k: v for i in range(backend.stack.n_layers) for k, v in reader.layer(i).items()}
        finally:
            backend.close()

    calls: list[int] = []
    kernel = gguf_dequant.KERNELS[Q.Q8_0]
    monkeypatch.setitem(gguf_dequant.KERNELS, Q.Q8_0, lambda blocks: calls.append(len(blocks)) or kernel(blocks))
    ours = weights()
    assert len(calls) >= 2  # every layer's down projection
    monkeypatch.setattr(gguf_dequant, "KERNELS", {})  # gguf-py's numpy code for every type
    theirs = weights()
    assert ours.keys() == theirs.keys() and any("down_proj" in k for k in ours)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


def test_the_streamed_reader_hands_out_no_view_of_the_files_memory_map(q8_gguf) -> None:
    """What a kernel dequantized is used as it is, but the F32 tensors (gguf-py's read-only views of the file) are
    copied: a tensor over the map would fail to be written, and would keep the file's pages as the model's."""
    import numpy as np

    from shortgpt_desktop.core.backends.base import open_backend
    from shortgpt_desktop.core.model.sources import resolve

    backend = open_backend("streamed", resolve(str(q8_gguf)), "cpu", "float32", False)
    try:
        reader = backend.stack.reader
        mapped = reader.reader.data
        tensors = {k: v for i in range(backend.stack.n_layers) for k, v in reader.layer(i).items()}
        assert any("down_proj" in k for k in tensors) and any("norm" in k for k in tensors)
        for name, tensor in tensors.items():
            assert not np.may_share_memory(tensor.numpy(), mapped), name
            assert tensor.is_contiguous(), name
    finally:
        backend.close()


@pytest.mark.slow
def test_the_real_models_tensors_dequantize_to_gguf_pys_values(smollm2_gguf, gemma3_gguf) -> None:
    """Every tensor of SmolLM2 (Q4_1, Q8_0) and Gemma 3 270M (Q4_K_M's mix of k-quants and Q5_0, Q8_0)."""
    seen = set()
    for path in (smollm2_gguf, gemma3_gguf):
        for tensor in gguf.GGUFReader(path).tensors:
            seen.add(tensor.tensor_type)
            got = gguf_dequant.dequantize(tensor.data, tensor.tensor_type)
            assert_same_bits(got, gguf.quants.dequantize(tensor.data, tensor.tensor_type))
    assert len(seen & set(gguf_dequant.KERNELS)) >= 3, seen


def test_the_thread_count_is_given_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels run on one thread; torch's count is restored after, also when a kernel fails (every forward pass
    after a GGUF load would otherwise run on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gguf_dequant.dequantize(np.zeros((4, 34), np.uint8), GGMLQuantizationType.Q8_0)
        assert torch.get_num_threads() == 2

        def broken(blocks):
            assert torch.get_num_threads() == 1  # the kernels run on one thread
            raise RuntimeError("kernel failed")

        monkeypatch.setitem(gguf_dequant.KERNELS, GGMLQuantizationType.Q8_0, broken)
        with pytest.raises(RuntimeError, match="kernel failed"):
            gguf_dequant.dequantize(np.zeros((4, 34), np.uint8), GGMLQuantizationType.Q8_0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_type_given_as_an_int_finds_its_kernel() -> None:
    """transformers and the streamed reader may hand the type over as a plain int: gguf-py's slower path is then
    never taken (same values, several times the time)."""
    def fallback(data, qtype):
        raise AssertionError("went to gguf-py")

    data = np.random.default_rng(0).integers(0, 256, size=(3, 2 * 34), dtype=np.uint8)
    got = gguf_dequant.dequantize(data, int(GGMLQuantizationType.Q8_0), fallback=fallback)
    assert got.shape == (3, 64)
