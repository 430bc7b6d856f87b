"""Which device and dtype a job runs on (``auto`` resolved), checked before anything loads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import Hint, ResourceError

if TYPE_CHECKING:
    pass


DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str = "auto") -> str:
    """``auto`` → CUDA, then Apple MPS, else CPU; an explicit name is checked."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda"):
        index = cuda_index(name)
        if not torch.cuda.is_available():
            raise ResourceError("CUDA was asked for but no CUDA GPU is available.", hint=Hint.USE_CPU)
        if index is not None and index >= torch.cuda.device_count():
            raise ResourceError(f"There is no CUDA GPU number {index}; this machine has "
                                f"{torch.cuda.device_count()}.")
        return name
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ResourceError("Apple MPS was asked for but is not available here.", hint=Hint.USE_CPU)
        return name
    if name == "cpu":
        return name
    raise ResourceError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.")


def cuda_index(name: str) -> int | None:
    """``cuda`` → None, ``cuda:N`` → N; anything else that starts with ``cuda`` is refused with a sentence."""
    if name == "cuda":
        return None
    number = name.removeprefix("cuda:") if name.startswith("cuda:") else ""
    if not (number.isascii() and number.isdigit()):
        raise ResourceError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N (N a GPU number, 0 for the "
                            "first) or mps.")
    return int(number)


def wait_for(device: Any) -> None:
    """Wait until the work queued on ``device`` (a torch device or its name) is done, so that a clock read next
    times it: a GPU only queues kernels (a timed layer read as its launch time). Nothing to wait for on the CPU."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def resolve_dtype(name: str, device: str) -> str:
    """``auto`` → bf16 on GPUs that support it (fp16 on older ones and MPS), fp32 on CPU."""
    import torch

    name = (name or "auto").lower()
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    name = aliases.get(name, name)
    if name == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float16" if device == "mps" else "float32"
    if name not in DTYPE_NAMES:
        raise ResourceError(f"Unknown dtype {name!r}: use auto, float32, bfloat16 or float16.")
    return name


def fast_training_dtype(device: str, model_dtype: Any) -> Any:
    """``torch.bfloat16`` where the hardware multiplies it faster than float32 and the model is in float32: a CPU
    with AMX or AVX-512 BF16 (measured on this project's build machine, a Xeon with AMX, 2 threads: a 2048 × 576 by
    576 × 1536 product 21.0 ms in float32, 7.4 ms in bfloat16; a healing step on SmolLM2 14.7 s, 7.9 s), or a
    CUDA GPU that computes it natively (Ampere or later; older ones emulate it, slower). None elsewhere (a model
    already in 16 bits, MPS, a CPU without them), where training runs in the model's own dtype."""
    import torch

    if model_dtype != torch.float32:
        return None
    if device.startswith("cuda"):  # native bfloat16 (compute capability 8 or more), not the emulated kind
        index = cuda_index(device)
        major = torch.cuda.get_device_capability(index if index is not None else torch.cuda.current_device())[0]
        return torch.bfloat16 if major >= 8 else None
    if device == "cpu":
        supported = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() or getattr(
            torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return torch.bfloat16 if supported else None
    return None


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
