"""Which dtype training computes in: bfloat16 only where the hardware is faster at it and the model is float32."""

from __future__ import annotations

import pytest
import torch

from shortgpt_desktop.core.model import memory
from shortgpt_desktop.core.model.devices import fast_training_dtype


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)])
def test_a_cpu_computes_in_bfloat16_where_it_has_the_instructions(monkeypatch: pytest.MonkeyPatch, amx: bool,
                                                                   avx512_bf16: bool, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert fast_training_dtype("cpu", torch.float32) is expected


def test_a_model_already_in_sixteen_bits_or_on_mps_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert fast_training_dtype("cpu", torch.bfloat16) is None
    assert fast_training_dtype("cpu", torch.float16) is None
    assert fast_training_dtype("mps", torch.float32) is None


def test_a_torch_without_the_cpu_probes_trains_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes are private to torch: where a build lacks them, the CPU is taken as having neither."""
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert fast_training_dtype("cpu", torch.float32) is None


def test_a_cuda_gpu_computes_in_bfloat16_where_it_does_so_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ampere (8.0) and later compute bfloat16 natively; a V100 or a T4 (7.x) would emulate it, slower. The
    model's own GPU is asked."""
    asked: list[int] = []
    for major, expected in ((8, torch.bfloat16), (9, torch.bfloat16), (7, None)):
        monkeypatch.setattr(torch.cuda, "get_device_capability",
                            lambda index, major=major: asked.append(index) or (major, 0))
        assert fast_training_dtype("cuda:1", torch.float32) is expected
    assert asked == [1, 1, 1]


def test_the_last_gpu_is_accepted_and_the_one_after_it_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from shortgpt_desktop.core.model.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(memory.ResourceError, match="no CUDA GPU number 2"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(("device", "bf16", "expected"), [("cuda", True, "bfloat16"), ("cuda:0", False, "float16"),
                                                          ("mps", False, "float16"), ("cpu", True, "float32")])
def test_auto_dtype_is_bfloat16_where_the_gpu_supports_it(device: str, bf16: bool, expected: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from shortgpt_desktop.core.model.devices import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype("auto", device) == expected
    assert resolve_dtype("half", device) == "float16" and resolve_dtype("bf16", device) == "bfloat16"


def test_auto_picks_a_gpu_first_and_mps_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from shortgpt_desktop.core.model.devices import resolve_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "mps" and resolve_device("mps") == "mps" and resolve_device("MPS") == "mps"
