"""Before anything loads: how much memory scoring needs in memory and layer by layer, and which one to use.

Figures come from checkpoint headers (safetensors) or the GGUF tensor table, and the config; no weight is read.
The program itself (Python, torch, transformers: a few hundred MB) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dtypes import bytes_per_element
from .errors import ResourceError
from .sources import ModelSource

#: Share of the free memory a plan may use; the rest is left to the program and the system.
SAFETY = 0.9


@dataclass
class MemoryEstimate:
    """Bytes each way of scoring needs, on the device and in RAM (equal places when the device is the CPU)."""

    device: str
    dtype: str
    n_layers: int
    largest_layer_bytes: int
    outside_layers_bytes: int  # embeddings, final norm, output head
    weights_bytes: int  # the whole model in ``dtype``
    hidden_states_bytes: int  # all calibration samples' hidden states between two layers (RAM)
    batch_working_bytes: int  # activations of one batch inside one layer, and its logits
    in_memory_device_bytes: int
    in_memory_ram_bytes: int
    streamed_device_bytes: int
    streamed_ram_bytes: int
    available_ram_bytes: int
    available_device_bytes: int  # the GPU's free memory, or the free RAM for the CPU

    @property
    def on_cpu(self) -> bool:
        return not self.device.startswith("cuda")

    def _fits(self, device_bytes: int, ram_bytes: int) -> bool:
        if self.on_cpu:
            return device_bytes + ram_bytes <= SAFETY * self.available_ram_bytes
        return (device_bytes <= SAFETY * self.available_device_bytes
                and ram_bytes <= SAFETY * self.available_ram_bytes)

    @property
    def in_memory_fits(self) -> bool:
        return self._fits(self.in_memory_device_bytes, self.in_memory_ram_bytes)

    @property
    def streamed_fits(self) -> bool:
        return self._fits(self.streamed_device_bytes, self.streamed_ram_bytes)

    @property
    def in_memory_total(self) -> int:
        return self.in_memory_device_bytes + self.in_memory_ram_bytes

    @property
    def streamed_total(self) -> int:
        return self.streamed_device_bytes + self.streamed_ram_bytes


def available_memory(device: str) -> tuple[int, int]:
    """(free RAM, free memory on ``device``) in bytes; for the CPU and Apple MPS both are the free RAM."""
    import psutil

    ram = int(psutil.virtual_memory().available)
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return ram, int(free)
    return ram, ram


def estimate_memory(
    source: ModelSource,
    device: str = "auto",
    dtype: str = "auto",
    samples: int = 128,
    seq_len: int = 512,
    batch_size: int = 4,
) -> MemoryEstimate:
    """What scoring ``samples`` × ``seq_len`` tokens costs in memory and layer by layer (weights unread)."""
    from .loading import read_config, resolve_device, resolve_dtype
    from .streaming_weights import open_reader

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    config = read_config(source)
    per = int(bytes_per_element(dtype))
    index = open_reader(source, config.get("model_type")).index
    layer_numels = [index.layer_numel(i) for i in sorted(index.layer_keys)] or [0]
    largest = max(layer_numels) * per
    outside = index.other_numel() * per
    weights = sum(layer_numels) * per + outside
    hidden = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    vocab = int(config.get("vocab_size") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    head_dim = int(config.get("head_dim") or (hidden // max(heads, 1)))
    batch = min(batch_size, samples)
    # A layer's activations (MLP intermediate, attention) are a few hidden-state copies; the head's logits fp32.
    working = batch * seq_len * (8 * hidden * per + 4 * vocab)
    states = samples * seq_len * hidden * per
    # Captured call arguments kept between layers: rotary cos/sin per sample (masks are None without padding).
    call_args = samples * seq_len * head_dim * 2 * 4
    # Reading one layer: the checkpoint's tensors on the CPU before they move (dequantized float32 for GGUF).
    read_buffer = max(layer_numels) * (8 if source.gguf_file else per)
    in_memory_device = weights + working
    streamed_device = largest + outside + working
    if device.startswith("cuda"):
        in_memory_ram = weights  # loading reads the weights on the CPU before they move to the GPU
        streamed_ram = states + call_args + read_buffer
    else:
        in_memory_ram = 0  # the device is the RAM
        # The outputs of a batch replace its inputs, so one copy of all the states and a batch's are held.
        streamed_ram = states + batch * seq_len * hidden * per + call_args + read_buffer
    ram, free_device = available_memory(device)
    return MemoryEstimate(
        device=device, dtype=dtype, n_layers=len(index.layer_keys), largest_layer_bytes=largest,
        outside_layers_bytes=outside, weights_bytes=weights, hidden_states_bytes=states,
        batch_working_bytes=working, in_memory_device_bytes=in_memory_device, in_memory_ram_bytes=in_memory_ram,
        streamed_device_bytes=streamed_device, streamed_ram_bytes=streamed_ram, available_ram_bytes=ram,
        available_device_bytes=free_device,
    )


def choose_mode(estimate: MemoryEstimate) -> str:
    """``"memory"`` when the whole model fits, else ``"streamed"``; a sentence when neither can run."""
    if estimate.in_memory_fits:
        return "memory"
    if estimate.hidden_states_bytes > SAFETY * estimate.available_ram_bytes:
        raise ResourceError(
            f"The calibration samples' hidden states alone need {_gb(estimate.hidden_states_bytes)} of memory but "
            f"only {_gb(estimate.available_ram_bytes)} is free; use fewer samples or a shorter sequence length."
        )
    if estimate.streamed_fits:
        return "streamed"
    where = "memory" if estimate.on_cpu else f"memory on {estimate.device}"
    raise ResourceError(
        f"Even one layer at a time this model needs {_gb(estimate.streamed_total)} but only "
        f"{_gb(estimate.available_device_bytes if not estimate.on_cpu else estimate.available_ram_bytes)} of "
        f"{where} is free; use a smaller dtype, fewer samples or a shorter sequence length."
    )


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def describe(estimate: MemoryEstimate) -> dict[str, Any]:
    """Plain figures for the front ends (bytes)."""
    return {
        "in_memory": estimate.in_memory_total,
        "streamed": estimate.streamed_total,
        "available_ram": estimate.available_ram_bytes,
        "available_device": estimate.available_device_bytes,
        "in_memory_fits": estimate.in_memory_fits,
        "streamed_fits": estimate.streamed_fits,
    }
