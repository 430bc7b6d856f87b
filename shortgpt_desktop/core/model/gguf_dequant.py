"""GGUF block dequantization in torch: gguf-py's values bit for bit, a few times faster.

gguf-py dequantizes with numpy, through several whole-tensor temporaries: 3.8 to 10 ns a value on this project's
2-core build machine (``benchmarks/bench_dequant.py``). Loading a GGUF in memory goes through it once per tensor,
and the streamed backend each time it opens a layer (bi+'s search alone opens each layer once per greedy step),
and the larger the model, the more of a streamed pass this is next to the forward pass itself.

The kernels here are gguf-py's own formulas (``gguf/quants.py``, ``dequantize_blocks``), written with torch's
integer and float32 operations in the same order: every product and sum is the same float32 operation on the
same operands, so the values are the same to the last bit (``tests/core/model/test_gguf_dequant.py`` compares
them on every block layout, with extreme scales). They run a chunk of blocks at a time, so the temporaries stay about
a megabyte whatever the tensor, on one thread: a kernel is a dozen small operations a chunk, and torch's threads
meet after each one, so on a CPU that another program keeps busy two threads took longer than gguf-py (1.22 of
its time with one busy process beside, where one thread took 0.27), and on an idle one they gained little over
one thread (0.22 against 0.27 of gguf-py's time on SmolLM2). Types without a kernel here (the IQ and ternary
types, the 4-bit floats) and the plain float types go to gguf-py unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch  # imported only where a GGUF is read (``layer_weights``, ``gguf_parse_once``), never at launch
from gguf.constants import GGML_QUANT_SIZES, QK_K, GGMLQuantizationType

#: Values dequantized at a time: a kernel's temporaries are then about 1 MB each, within a core's cache (on this
#: project's 2-core build machine, chunks of 2^18 and 2^19 values took 0.4-0.6 of the time of 2^20-value chunks).
CHUNK_VALUES = 1 << 18

Kernel = Callable[[Any], Any]  # (n_blocks, type_size) uint8 → (n_blocks, block_size) float32


def _f16(raw: Any) -> Any:
    """(n, 2) bytes → (n, 1) float32: a block's float16 scale."""
    return raw.contiguous().view(torch.float16).to(torch.float32)


def _bits(raw: Any, shifts: tuple[int, ...], mask: int | None, dim: int) -> Any:
    """``(raw >> s) & mask`` for each shift ``s`` (no mask: the shifted bytes), stacked along ``dim`` (gguf-py's
    broadcast shift)."""
    shifted = [raw >> s if s else raw for s in shifts]
    return torch.stack(shifted if mask is None else [v & mask for v in shifted], dim=dim)


def _low_high_nibbles(qs: Any) -> Any:
    """A block's 4-bit values: the low nibbles of its bytes, then the high ones."""
    n = qs.shape[0]
    return _bits(qs.reshape(n, 1, -1), (0, 4), 0x0F, 1).reshape(n, -1)


def _fifth_bits(qh: Any) -> Any:
    """Q5's high bits: bit j of the little-endian uint32 is value j's."""
    n = qh.shape[0]
    return _bits(qh.reshape(n, 4, 1), tuple(range(8)), 0x01, 2).reshape(n, 32)


def q4_0(b: Any) -> Any:
    d = _f16(b[:, :2])
    q = (_low_high_nibbles(b[:, 2:]).to(torch.int8) - 8).to(torch.float32)
    return d * q


def q4_1(b: Any) -> Any:
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    q = _low_high_nibbles(b[:, 4:]).to(torch.float32)
    return (d * q) + m


def q5_0(b: Any) -> Any:
    d = _f16(b[:, :2])
    q = _low_high_nibbles(b[:, 6:]) | (_fifth_bits(b[:, 2:6]) << 4)
    return d * (q.to(torch.int8) - 16).to(torch.float32)


def q5_1(b: Any) -> Any:
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    q = (_low_high_nibbles(b[:, 8:]) | (_fifth_bits(b[:, 4:8]) << 4)).to(torch.float32)
    return (d * q) + m


def q8_0(b: Any) -> Any:
    d = _f16(b[:, :2])
    return b[:, 2:].contiguous().view(torch.int8).to(torch.float32) * d


def q2_k(b: Any) -> Any:
    n = b.shape[0]
    scales, qs = b[:, :QK_K // 16], b[:, QK_K // 16: QK_K // 16 + QK_K // 4]
    d, dmin = _f16(b[:, -4:-2]), _f16(b[:, -2:])
    dl = (d * (scales & 0x0F).to(torch.float32)).reshape(n, QK_K // 16, 1)
    ml = (dmin * (scales >> 4).to(torch.float32)).reshape(n, QK_K // 16, 1)
    q = _bits(qs.reshape(n, -1, 32), (0, 2, 4, 6), 0x03, 2).reshape(n, QK_K // 16, 16).to(torch.float32)
    return (dl * q - ml).reshape(n, -1)


def q3_k(b: Any) -> Any:
    n = b.shape[0]
    hmask, qs = b[:, :QK_K // 8], b[:, QK_K // 8: QK_K // 8 + QK_K // 4]
    scales, d = b[:, -14:-2], _f16(b[:, -2:])
    low = _bits(scales[:, :8].reshape(n, 1, 8), (0, 4), None, 1).reshape(n, 16)
    high = _bits(scales[:, 8:].reshape(n, 1, 4), (0, 2, 4, 6), None, 1).reshape(n, 16)
    scale = (((low & 0x0F) | ((high & 0x03) << 4)).to(torch.int8) - 32).to(torch.float32)
    dl = (d * scale).reshape(n, 16, 1)
    ql = _bits(qs.reshape(n, -1, 32), (0, 2, 4, 6), 0x03, 2).reshape(n, 16, QK_K // 16)
    qh = _bits(hmask.reshape(n, -1, 32), tuple(range(8)), 0x01, 2).reshape(n, 16, QK_K // 16) ^ 1
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).to(torch.float32)
    return (dl * q).reshape(n, QK_K)


def _scale_min_k4(scales: Any) -> tuple[Any, Any]:
    """Q4_K's and Q5_K's eight 6-bit scales and mins, from their 12 packed bytes."""
    n = scales.shape[0]
    packed = scales.reshape(n, 3, 4)
    d, m, m_d = packed[:, 0], packed[:, 1], packed[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mins = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mins


def _k4_scales(b: Any) -> tuple[Any, Any]:
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mins = _scale_min_k4(b[:, 4:16])
    return ((d * sc.to(torch.float32)).reshape(n, -1, 1), (dmin * mins.to(torch.float32)).reshape(n, -1, 1))


def q4_k(b: Any) -> Any:
    n = b.shape[0]
    d, dm = _k4_scales(b)
    q = _bits(b[:, 16:].reshape(n, -1, 32), (0, 4), 0x0F, 2).reshape(n, -1, 32).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def q5_k(b: Any) -> Any:
    n = b.shape[0]
    d, dm = _k4_scales(b)
    qh, qs = b[:, 16:16 + QK_K // 8], b[:, 16 + QK_K // 8:]
    ql = _bits(qs.reshape(n, -1, 32), (0, 4), 0x0F, 2).reshape(n, -1, 32)
    high = _bits(qh.reshape(n, -1, 32), tuple(range(8)), 0x01, 2).reshape(n, -1, 32)
    q = (ql | (high << 4)).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def q6_k(b: Any) -> Any:
    n = b.shape[0]
    ql, qh = b[:, :QK_K // 2], b[:, QK_K // 2: QK_K // 2 + QK_K // 4]
    scales = b[:, QK_K // 2 + QK_K // 4: -2].contiguous().view(torch.int8).to(torch.float32)
    d = (_f16(b[:, -2:]) * scales).reshape(n, QK_K // 16, 1)
    low = _bits(ql.reshape(n, -1, 64), (0, 4), 0x0F, 2).reshape(n, -1, 32)
    high = _bits(qh.reshape(n, -1, 32), (0, 2, 4, 6), 0x03, 2).reshape(n, -1, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, QK_K // 16, -1).to(torch.float32)
    return (d * q).reshape(n, QK_K)


Q = GGMLQuantizationType
KERNELS: dict[GGMLQuantizationType, Kernel] = {
    Q.Q4_0: q4_0, Q.Q4_1: q4_1, Q.Q5_0: q5_0, Q.Q5_1: q5_1, Q.Q8_0: q8_0,
    Q.Q2_K: q2_k, Q.Q3_K: q3_k, Q.Q4_K: q4_k, Q.Q5_K: q5_k, Q.Q6_K: q6_k,
}


def dequantize(data: np.ndarray, qtype: GGMLQuantizationType, fallback: Callable[..., np.ndarray] | None = None
               ) -> np.ndarray:
    """``gguf.dequantize(data, qtype)``: the tensor's values as a float32 array of its logical shape (``data``: its
    blocks' bytes, one row of blocks per last-axis row). ``fallback`` (gguf-py's, by default) takes the types
    without a kernel here."""
    kernel = KERNELS.get(qtype)  # an int finds its type too
    if kernel is None:
        if fallback is None:
            from gguf.quants import dequantize as fallback
        return fallback(data, qtype)
    qtype = GGMLQuantizationType(qtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = data.view(np.uint8)
    if raw.shape[-1] % type_size:
        raise ValueError(f"{qtype.name} rows of {raw.shape[-1]} bytes are not whole blocks of {type_size}")
    shape = (*raw.shape[:-1], raw.shape[-1] // type_size * block_size)
    blocks = raw.reshape(-1, type_size)
    out = torch.empty((blocks.shape[0], block_size), dtype=torch.float32)
    step = max(1, CHUNK_VALUES // block_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the module's docstring
    try:
        for start in range(0, blocks.shape[0], step):
            # A copy of the chunk's bytes: the file's memory map is read-only, and torch wants memory it may write.
            chunk = torch.from_numpy(np.array(blocks[start:start + step], copy=True))
            out[start:start + step] = kernel(chunk)
    finally:
        torch.set_num_threads(threads)
    return out.numpy().reshape(shape)
