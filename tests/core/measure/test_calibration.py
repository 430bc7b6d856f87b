"""Calibration text: reading every supported format and encoding, sampling, held-out split, built-in corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shortgpt_desktop.core.errors import CalibrationError
from shortgpt_desktop.core.measure import calibration
from shortgpt_desktop.core.pipeline import read_calibration

PROSE = "The quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_reads_every_format_and_encoding(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain UTF-8 café", encoding="utf-8")
    (tmp_path / "b.md").write_bytes("UTF-16 naïve".encode("utf-16"))  # with BOM
    (tmp_path / "c.txt").write_bytes("Legacy façade".encode("cp1252"))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["one", "two"]) + "\n")
    (tmp_path / "e.json").write_text(json.dumps(["three", "four"]))
    sub = tmp_path / "nested" / "deeper"
    sub.mkdir(parents=True)
    (sub / "f.txt").write_text("found recursively")
    (sub / "ignored.bin").write_bytes(b"\x00\x01")  # not a text suffix: not read, but counted
    (tmp_path / "g.jsonl").write_text(json.dumps({"text": "five"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    result = calibration.read_texts([tmp_path])
    assert "plain UTF-8 café" in result.texts
    assert "UTF-16 naïve" in result.texts
    assert "Legacy façade" in result.texts
    assert {"one", "two", "three", "four", "five", "found recursively"} <= set(result.texts)
    assert result.skipped == [
        f"Skipped 1 file in {tmp_path} that is not text (.json, .jsonl, .md, .txt).",
        f'Left out 1 line of {(tmp_path / "g.jsonl").resolve()} without a "text" field.',
    ]


def test_binary_and_broken_files_are_skipped_by_name(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text(PROSE)
    binary = tmp_path / "photo.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = calibration.read_texts([good, binary, broken])
    assert result.texts == [PROSE]
    assert len(result.skipped) == 2
    assert any("photo.txt" in s and "binary" in s for s in result.skipped)
    assert any("broken.json" in s for s in result.skipped)


def test_only_binary_files_is_an_error(tmp_path: Path) -> None:
    binary = tmp_path / "x.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(CalibrationError, match="No usable calibration text"):
        read_calibration([str(binary)])


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError):
        read_calibration([str(tmp_path)])
    with pytest.raises(CalibrationError, match="does not exist"):
        read_calibration([str(tmp_path / "missing.txt")])


def test_builtin_corpus_needs_no_files() -> None:
    texts = calibration.builtin_corpus()
    assert sum(len(t) for t in texts) > 200_000
    estimate = sum(len(t) for t in texts) / calibration.CHARS_PER_TOKEN
    assert abs(calibration.BUILTIN_TOKENS_ESTIMATE - estimate) < 0.2 * estimate
    texts2, names, warnings = read_calibration([])
    assert texts2 == texts and "built-in" in names[0] and warnings == []


def test_builtin_corpus_is_the_same_whatever_was_imported_first() -> None:
    import hashlib
    import subprocess
    import sys

    import transformers  # noqa: F401  (it adds methods to logging.Logger)

    code = ("import hashlib; from shortgpt_desktop.core.measure.calibration import builtin_corpus; "
            "print(hashlib.sha256(''.join(builtin_corpus()).encode()).hexdigest())")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert hashlib.sha256("".join(calibration.builtin_corpus()).encode()).hexdigest() == fresh


def test_samples_are_deterministic_and_disjoint_from_heldout(tokenizer, tmp_path: Path, valid_text: Path) -> None:
    text = valid_text.read_text(encoding="utf-8")[:40_000]
    a = calibration.build_token_set(tokenizer, [text], samples=8, seq_len=64, seed=1)
    b = calibration.build_token_set(tokenizer, [text], samples=8, seq_len=64, seed=1)
    c = calibration.build_token_set(tokenizer, [text], samples=8, seq_len=64, seed=2)
    assert a.samples == b.samples and a.samples != c.samples
    assert len(a.samples) == 8 and all(len(s) == 64 for s in a.samples)
    assert a.bos_id == tokenizer.bos_token_id and all(s[0] == a.bos_id for s in a.samples + a.eval_windows)
    # The held-out windows come from the tail of the stream, the samples from before the cut.
    stream = calibration.tokenize_stream(tokenizer, [text])
    cut = int(len(stream) * (1 - calibration.DEFAULT_HELDOUT_FRACTION))
    body = a.eval_windows[0][1:]
    assert stream[cut : cut + len(body)] == body
    for sample in a.samples:
        start = _find(stream, sample[1:])
        assert start is not None and start + len(sample) - 1 <= cut


def _find(stream: list[int], part: list[int]) -> int | None:
    for i in range(len(stream) - len(part) + 1):
        if stream[i : i + len(part)] == part:
            return i
    return None


def test_separate_eval_text_is_used_whole(tokenizer) -> None:
    tokens = calibration.build_token_set(tokenizer, [PROSE], ["A different evaluation text. " * 30],
                                         samples=2, seq_len=32)
    eval_stream = calibration.tokenize_stream(tokenizer, ["A different evaluation text. " * 30])
    used = [t for w in tokens.eval_windows for t in w[1:]]
    assert used == eval_stream[: len(used)]


def test_too_short_or_empty_text(tokenizer) -> None:
    with pytest.raises(CalibrationError, match="empty"):
        calibration.build_token_set(tokenizer, ["   "], samples=2, seq_len=32)
    with pytest.raises(CalibrationError, match="too short"):
        calibration.build_token_set(tokenizer, ["Hi."], samples=2, seq_len=32)


def test_decode_bytes() -> None:
    assert calibration.decode_bytes("x".encode("utf-16-le")) is None  # NULs without a BOM: binary
    assert calibration.decode_bytes(b"\xef\xbb\xbfbom") == "bom"
    assert calibration.decode_bytes("é".encode("cp1252")) == "é"


def test_estimate_tokens(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 4000)
    assert calibration.estimate_tokens(tmp_path) == 1000
