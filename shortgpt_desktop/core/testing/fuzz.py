"""Seeded hostile variants of a small GGUF file and a small safetensors model folder, for the fuzz tests.

Each mutation is a pure function of its seed: the same seed gives the same bytes, so a failure found once is
found again. Targeted mutations rewrite one field the header states (a count, a length, a dimension, a type,
an offset, a JSON entry, a config size) with a value chosen to break a reader that believes it; random ones flip
bytes, truncate or append. The bases are built here from the tiny random llama (no download).
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------- bases


def build_bases(folder: Path) -> tuple[Path, Path]:
    """(a 2-layer llama as one .gguf with a real tokenizer, the same model as a safetensors folder)."""
    from .tiny_models import TINY_LLAMA, build_tiny_model

    hf = build_tiny_model(folder / "safetensors", "llama",
                          config_overrides=dict(TINY_LLAMA, num_hidden_layers=2, hidden_size=32, intermediate_size=64))
    return write_gguf(hf, folder / "tiny.gguf"), hf


def write_gguf(hf: Path, path: Path, extra: dict[str, tuple[Any, Any]] | None = None, q8_down: bool = True) -> Path:
    """The model of ``hf`` as a llama GGUF (F32; with ``q8_down`` the down projections Q8_0) with its BPE
    tokenizer (:func:`.gguf_export.export_gguf`); ``extra`` metadata: key → (value, GGUFValueType)."""
    from .gguf_export import export_gguf

    export_gguf(hf, path, "llama", extra=extra, q8_down=q8_down, tokens="tokenizer")
    return path


# --------------------------------------------------------------------------------------------- GGUF fields


@dataclass(frozen=True)
class Slot:
    """One field of the header: where it lies, how wide it is (bytes), what it is."""

    label: str
    offset: int
    width: int


def gguf_slots(data: bytes) -> list[Slot]:
    """Every count, length, type, dimension and offset in a (sound) GGUF header."""
    slots = [Slot("version", 4, 4), Slot("tensor count", 8, 8), Slot("metadata count", 16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24
    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string(label: str) -> str:
        nonlocal pos
        (length,) = struct.unpack_from("<Q", data, pos)
        slots.append(Slot(f"{label} length", pos, 8))
        text = data[pos + 8:pos + 8 + length].decode("utf-8")
        pos += 8 + length
        return text

    for _ in range(n_kv):
        key = string("key")
        slots.append(Slot(f"type of {key}", pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vtype == 9:
            (item, count) = struct.unpack_from("<IQ", data, pos)
            slots += [Slot(f"item type of {key}", pos, 4), Slot(f"length of {key}", pos + 4, 8)]
            pos += 12
            for i in range(count):
                if item == 8 and (i < 3 or i == count - 1):  # a few of a long string array are listed
                    string(f"{key}[{i}]")
                elif item == 8:
                    pos += 8 + struct.unpack_from("<Q", data, pos)[0]
                else:
                    pos += scalar[item]
        elif vtype == 8:
            string(f"value of {key}")
        else:
            slots.append(Slot(f"value of {key}", pos, scalar[vtype]))
            pos += scalar[vtype]
    for t in range(n_tensors):
        name = string(f"tensor {t} name")
        (n_dims,) = struct.unpack_from("<I", data, pos)
        slots.append(Slot(f"dimensions of {name}", pos, 4))
        pos += 4
        slots += [Slot(f"dimension {d} of {name}", pos + 8 * d, 8) for d in range(n_dims)]
        pos += 8 * n_dims
        slots += [Slot(f"type of {name}", pos, 4), Slot(f"offset of {name}", pos + 4, 8)]
        pos += 12
    return slots


def gguf_header_end(data: bytes) -> int:
    slots = gguf_slots(data)
    last = slots[-1]
    return last.offset + last.width


def _hostile_values(old: int, width: int, rng: random.Random) -> int:
    top = (1 << (8 * width)) - 1
    choices = [0, 1, 2, 3, 7, 9, 13, 31, 255, 1 << 16, 1 << 31, top >> 1, top, (old + 1) & top,
               (old - 1) & top, (old * 2) & top, old ^ (1 << rng.randrange(8 * width)), rng.randrange(top + 1)]
    return rng.choice(choices)


def mutate_gguf(data: bytes, seed: int) -> tuple[str, bytes]:
    """One seeded hostile variant of a GGUF file's bytes, and what was done."""
    rng = random.Random(seed)
    kind = rng.random()
    if kind < 0.65:
        slot = rng.choice(gguf_slots(data))
        (old,) = struct.unpack_from("<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[slot.width], data, slot.offset)
        new = _hostile_values(old, slot.width, rng)
        out = bytearray(data)
        out[slot.offset:slot.offset + slot.width] = new.to_bytes(slot.width, "little")
        return f"{slot.label}: {old} -> {new}", bytes(out)
    if kind < 0.75:  # a key or a tensor name that is not UTF-8, or a token string flipped
        slots = [s for s in gguf_slots(data) if s.label.endswith(" length") and "tensor" not in s.label]
        slot = rng.choice(slots)
        (length,) = struct.unpack_from("<Q", data, slot.offset)
        out = bytearray(data)
        if length:
            out[slot.offset + 8 + rng.randrange(length)] = rng.choice([0xFF, 0xC3, 0x00, 0x80])
        return f"bytes of the string at {slot.label}", bytes(out)
    return _random_bytes(data, rng, gguf_header_end(data))


def _random_bytes(data: bytes, rng: random.Random, header_end: int) -> tuple[str, bytes]:
    kind = rng.random()
    out = bytearray(data)
    if kind < 0.45:
        n = rng.randint(1, 8)
        limit = header_end if rng.random() < 0.7 else len(out)
        for _ in range(n):
            out[rng.randrange(limit)] ^= 1 << rng.randrange(8)
        return f"{n} random bits flipped", bytes(out)
    if kind < 0.7:
        cut = rng.randrange(len(out))
        return f"truncated at byte {cut}", bytes(out[:cut])
    if kind < 0.85:
        start = rng.randrange(header_end)
        length = rng.randint(1, 64)
        out[start:start + length] = bytes(min(length, len(out) - start))
        return f"{length} bytes zeroed at {start}", bytes(out)
    extra = rng.randbytes(rng.choice([1, 31, 4096]))
    return f"{len(extra)} bytes appended", bytes(out) + extra


# ------------------------------------------------------------------------------------------- safetensors


def _rewrite_header(data: bytes, header: Any, raw: bytes | None = None) -> bytes:
    (length,) = struct.unpack_from("<Q", data, 0)
    text = raw if raw is not None else json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


_BAD_JSON_VALUES: list[Any] = [-1, 0, 1, True, None, 3.5, "7", [], {}, [1, 2, 3], 1 << 40, 1 << 64, -(1 << 63)]


def mutate_safetensors(folder: Path, out: Path, seed: int) -> str:
    """Copy ``folder`` to ``out`` with one seeded hostile change to its safetensors file or config; what was done."""
    rng = random.Random(seed)
    shutil.copytree(folder, out)
    weights, config_path = out / "model.safetensors", out / "config.json"
    data = weights.read_bytes()
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + length])
    names = sorted(k for k in header if k != "__metadata__")
    kind = rng.random()
    if kind < 0.2:  # a config size
        config = json.loads(config_path.read_text(encoding="utf-8"))
        key = rng.choice(["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                          "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim", "model_type",
                          "architectures", "torch_dtype", "rms_norm_eps", "rope_theta"])
        value = rng.choice([*_BAD_JSON_VALUES, 3, 1000, 1001, 10_000_000, 999_999, 1 << 20, "bert", ["x"]])
        config[key] = value
        config_path.write_text(json.dumps(config), encoding="utf-8")
        return f"config.json {key} = {value!r}"
    if kind < 0.55:
        name = rng.choice(names)
        entry = header[name]
        field = rng.choice(["dtype", "shape", "data_offsets", "entry", "shape-dim", "offset-item"])
        if field == "dtype":
            entry["dtype"] = rng.choice(["F32", "F16", "I8", "BOOL", "F4", "Q4_0", "f32", "", 5, None])
        elif field == "shape":
            entry["shape"] = rng.choice([[], [0], [-1, 4], [True], [1 << 62, 1 << 62], "4", None,
                                         list(reversed(entry["shape"])), [*entry["shape"], 1],
                                         [d * 2 for d in entry["shape"]], [1] * 40])
        elif field == "shape-dim" and entry["shape"]:
            entry["shape"][rng.randrange(len(entry["shape"]))] = rng.choice(_BAD_JSON_VALUES)
        elif field == "data_offsets":
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = rng.choice([[end, begin], [begin, end + 4], [begin - 4, end], [0, end - begin],
                                                [begin, 1 << 60], [begin], [begin, end, 1], "0,4", None])
        elif field == "offset-item":
            entry["data_offsets"][rng.randrange(2)] = rng.choice(_BAD_JSON_VALUES)
        else:
            header[name] = rng.choice([None, [], "x", 5, {}])
        weights.write_bytes(_rewrite_header(data, header))
        return f"{name} {field} -> {header.get(name)!r}"[:200]
    if kind < 0.65:
        what = rng.choice(["metadata", "drop", "duplicate", "not-object", "deep", "utf8", "length"])
        raw = None
        if what == "metadata":
            header["__metadata__"] = rng.choice([{"format": 5}, ["pt"], "pt", {"a": None}, {"a": {"b": "c"}}])
        elif what == "drop":
            del header[rng.choice(names)]
        elif what == "duplicate":
            text = json.dumps(header)
            first = json.dumps({names[0]: header[names[0]]})[1:-1]
            raw = ("{" + first + ", " + text[1:]).encode()
        elif what == "not-object":
            raw = rng.choice([b"[]", b"5", b"\"x\"", b"null", b"{", b""])
        elif what == "deep":
            raw = b"[" * 100_000 + b"]" * 100_000
        elif what == "utf8":
            raw = json.dumps(header).encode()[:-1] + b"\xff}"
        else:
            out_bytes = bytearray(data)
            out_bytes[0:8] = _hostile_values(length, 8, rng).to_bytes(8, "little")
            weights.write_bytes(bytes(out_bytes))
            return "header length rewritten"
        weights.write_bytes(_rewrite_header(data, header, raw))
        return f"header {what}"
    label, new = _random_bytes(data, rng, 8 + length)
    weights.write_bytes(new)
    return f"model.safetensors: {label}"
