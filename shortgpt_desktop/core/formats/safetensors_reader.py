"""Reading a safetensors file's header (names, dtypes, shapes, offsets) without its data."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelSourceError


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets), without the data."""
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ValueError("file too short")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > 100_000_000:
                raise ValueError("header length is implausible")
            raw_header = f.read(header_len)
            if len(raw_header) < header_len:
                raise ModelSourceError(f"{path.name} is truncated (it ends inside its header); download it again.")
            header = json.loads(raw_header)
        if not isinstance(header, dict):
            raise ValueError("header is not a table")
        header["__header_bytes__"] = 8 + header_len
        return header
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{path.name} is not a valid safetensors file ({exc}); download it again.") from None


def check_safetensors(path: Path) -> dict[str, Any]:
    """Check that a safetensors file's header is readable and its data is all there (catches truncation)."""
    header = read_safetensors_header(path)
    data_start = header["__header_bytes__"]
    end = max((v["data_offsets"][1] for k, v in header.items() if not k.startswith("__")), default=0)
    size = path.stat().st_size
    if data_start + end > size:
        raise ModelSourceError(
            f"{path.name} is truncated ({size:,} bytes, {data_start + end:,} expected); download it again."
        )
    return header
