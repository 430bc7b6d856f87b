"""Which dtype training computes in: bfloat16 only where the hardware is faster at it and the model is float32."""

from __future__ import annotations

import pytest
import torch

from shortgpt_desktop.core.model.devices import fast_training_dtype


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)])
def test_a_cpu_computes_in_bfloat16_where_it_has_the_instructions(monkeypatch: pytest.MonkeyPatch, amx: bool,
                                                                   avx512_bf16: bool, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert fast_training_dtype("cpu", torch.float32) is expected


def test_a_model_already_in_sixteen_bits_or_on_mps_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fast_training_dtype("cpu", torch.bfloat16) is None
    assert fast_training_dtype("cpu", torch.float16) is None
    assert fast_training_dtype("mps", torch.float32) is None


def test_a_cuda_gpu_computes_in_bfloat16_where_it_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for supported, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert fast_training_dtype("cuda:0", torch.float32) is expected
