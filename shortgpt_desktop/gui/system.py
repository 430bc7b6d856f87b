"""Devices to offer and memory to show in the status bar. No Qt; torch only inside :func:`probe_devices`."""

from __future__ import annotations

import os
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


def process_memory() -> int | None:
    """Resident memory of this process in bytes, or None where it cannot be read cheaply."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        if sys.platform == "win32":
            import ctypes
            from ctypes import wintypes

            class Counters(ctypes.Structure):
                _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                            ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
                            ("QuotaPagedPoolUsage", ctypes.c_size_t),
                            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
                            ("QuotaNonPagedPoolUsage", ctypes.c_size_t), ("PagefileUsage", ctypes.c_size_t),
                            ("PeakPagefileUsage", ctypes.c_size_t)]

            counters = Counters()
            counters.cb = ctypes.sizeof(counters)
            process = ctypes.windll.kernel32.GetCurrentProcess()  # type: ignore[attr-defined]
            if ctypes.windll.psapi.GetProcessMemoryInfo(  # type: ignore[attr-defined]
                process, ctypes.byref(counters), counters.cb
            ):
                return int(counters.WorkingSetSize)
            return None
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes (peak, the best we have)
        return int(peak)
    except Exception:
        return None


def total_memory() -> int | None:
    """Physical memory of the machine in bytes."""
    try:
        if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if sys.platform == "win32":
            import ctypes

            class Status(ctypes.Structure):
                _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                            ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                            ("ullTotalPageFile", ctypes.c_ulonglong),
                            ("ullAvailPageFile", ctypes.c_ulonglong),
                            ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                            ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

            status = Status()
            status.dwLength = ctypes.sizeof(status)
            ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))  # type: ignore[attr-defined]
            return int(status.ullTotalPhys)
    except Exception:
        return None
    return None


def gpu_memory(device: str) -> tuple[int, int] | None:
    """(allocated, total) bytes on a CUDA device, only if torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    try:
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return int(torch.cuda.memory_allocated(index)), int(total)
    except Exception:
        return None
