"""Devices to offer and memory to show in the status bar. No Qt; torch only inside :func:`probe_devices`."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceChoice:
    key: str  # what the core's ``device`` argument takes: auto, cpu, cuda:N, mps
    label: str


#: Offered before torch has been imported (the window must not wait for it).
INITIAL_DEVICES = (DeviceChoice("auto", "Auto (best available)"), DeviceChoice("cpu", "CPU"))


def probe_devices() -> list[DeviceChoice]:
    """Auto, each CUDA GPU by name and memory, Apple MPS if present, and the CPU. Imports torch (seconds)."""
    import torch

    from ..format import human_bytes

    choices = [INITIAL_DEVICES[0]]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            choices.append(DeviceChoice(f"cuda:{index}",
                                        f"GPU {index}: {props.name} ({human_bytes(props.total_memory)})"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        choices.append(DeviceChoice("mps", "Apple GPU (MPS)"))
    choices.append(INITIAL_DEVICES[1])
    return choices


def process_memory() -> int:
    """Resident memory of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def total_memory() -> int:
    """Physical memory of the machine in bytes."""
    import psutil

    return int(psutil.virtual_memory().total)


def gpu_memory(device: str) -> tuple[int, int] | None:
    """(allocated, total) bytes on a CUDA device, only if torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    try:
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return int(torch.cuda.memory_allocated(index)), int(total)
    except (RuntimeError, ValueError, AssertionError):  # CUDA not initialised, a bad index, no driver
        return None
