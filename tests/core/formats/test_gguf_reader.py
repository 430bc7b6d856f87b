"""The GGUF header reader's sentences about a corrupt header stay one short line, whatever the file holds."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shortgpt_desktop.core.formats.gguf_reader import SHOWN_NAME_CHARS, read_gguf_layout
from shortgpt_desktop.core.model.sources import ModelSourceError


def header(key: bytes, type_id: int) -> bytes:
    """A GGUF v3 header with no tensors and one metadata entry ``key`` of type ``type_id``, then zeros."""
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", type_id) + bytes(64))


@pytest.mark.parametrize("key", [b"general.name", b"\t".join(b"token%d" % i for i in range(2000))],
                         ids=["short", "a token list read as a key"])
def test_an_unknown_metadata_type_is_one_short_line_naming_the_key(tmp_path: Path, key: bytes) -> None:
    """A misaligned header (found by the fuzz test) can read a whole tab-separated token list as one key."""
    path = tmp_path / "model.gguf"
    path.write_bytes(header(key, 1946157056))
    with pytest.raises(ModelSourceError) as caught:
        read_gguf_layout(path)
    message = str(caught.value)
    assert "unknown metadata type 1946157056" in message
    assert "\n" not in message and "\t" not in message
    assert len(message) < 200 + SHOWN_NAME_CHARS, message
    assert key.decode()[:10].replace("\t", "\\t") in message
