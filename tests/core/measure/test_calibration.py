"""Calibration text: reading every supported format and encoding, sampling, held-out split, built-in corpus."""

from __future__ import annotations

import json
import os
import stat
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
    (sub / "ignored.bin").write_bytes(b"\x00\x01")  # binary by its content: skipped with a sentence
    (tmp_path / "g.jsonl").write_text(json.dumps({"text": "five"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    result = calibration.read_texts([tmp_path])
    assert "plain UTF-8 café" in result.texts
    assert "UTF-16 naïve" in result.texts
    assert "Legacy façade" in result.texts
    assert {"one", "two", "three", "four", "five", "found recursively"} <= set(result.texts)
    assert result.skipped == [
        f'Left out 1 line of {(tmp_path / "g.jsonl").resolve()} without a "text" field.',
        f"Skipped {(sub / 'ignored.bin').resolve()}: it is binary data, not text.",
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
    with pytest.raises(CalibrationError, match=f"no files were found in {tmp_path}"):  # which folder, said
        read_calibration([str(tmp_path)])
    with pytest.raises(CalibrationError, match="does not exist"):
        read_calibration([str(tmp_path / "missing.txt")])


def test_a_link_that_leads_nowhere_is_said_as_such(tmp_path: Path) -> None:
    """A dangling link and a loop of links, which ``ls`` lists, were said not to exist."""
    from shortgpt_desktop.core.pipeline import JobSpec, check_calibration

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "old").symlink_to("notes-gone.txt")
    loop = f"{tmp_path / 'a'} is a link that leads back to itself (a loop of links)."
    gone = f"{tmp_path / 'old'} is a link to {tmp_path / 'notes-gone.txt'}, which does not exist."
    for path, said in ((tmp_path / "a", loop), (tmp_path / "old", gone)):
        with pytest.raises(CalibrationError) as raised:
            read_calibration([str(path)])
        assert str(raised.value) == f"The calibration path {said}"
        with pytest.raises(CalibrationError) as raised:
            check_calibration(JobSpec(model="m", calib=["builtin"], eval_text=str(path)))
        assert str(raised.value) == f"The evaluation text {said}"


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


def test_tokenising_says_how_far_it_is_through_the_calibration_and_evaluation_text(tokenizer, valid_text: Path,
                                                                                     test_text: Path) -> None:
    """A 40 MB text sat at "tokenising..." for 41 s without a word: each chunk reports the characters done, through
    the calibration text and then the evaluation text, up to their sum; the tokens are the same as without it."""
    calib = [valid_text.read_text(encoding="utf-8")] * 4  # about 480,000 characters: three chunks
    evaluation = [test_text.read_text(encoding="utf-8")]
    heard: list[tuple[int, int]] = []
    tokens = calibration.build_token_set(tokenizer, calib, evaluation, samples=4, seq_len=64,
                                         on_text=lambda done, in_all: heard.append((done, in_all)))
    in_all = sum(map(len, calib)) + len(evaluation[0])
    assert len(heard) >= 3 and {total for _, total in heard} == {in_all}
    done = [d for d, _ in heard]
    assert done == sorted(done) and done[-1] == in_all and sum(map(len, calib)) in done
    assert tokens == calibration.build_token_set(tokenizer, calib, evaluation, samples=4, seq_len=64)


def test_a_paragraph_longer_than_a_chunk_is_cut_at_the_end_of_a_line() -> None:
    """WikiText's files have no blank line: a 40 MB one went to the tokenizer as one piece. Pieces end at a line's
    end, join back to the documents, and text whose paragraphs fit is cut at paragraph breaks as before."""
    lines = "".join(f"line {i} of the only paragraph\n" for i in range(40))
    pieces = list(calibration._chunks([lines, "second document"], 200))
    assert "".join(pieces) == lines + "\n\n" + "second document"
    assert len(pieces) > 3 and all(piece.endswith("\n") for piece in pieces[:-1])
    assert all(len(piece) < 2 * 200 for piece in pieces)
    assert list(calibration._chunks(["a" * 150 + "\n\n" + "b" * 150, "c"], 200)) == [
        "a" * 150 + "\n\n" + "b" * 150 + "\n\n", "c"]


def test_a_line_longer_than_a_chunk_is_cut_before_a_space_and_a_run_without_one_at_the_chunks_size() -> None:
    """A 50 MB text of one line went to the tokenizer whole: a minute without a progress report, and Ctrl-C waited
    for it. A long line is cut before a space (the next piece starts with the space its word's token carries), text
    without spaces at the chunk's size, and the pieces join back to the text."""
    one_line = "short line\n" + " ".join(f"word{i}" for i in range(300))
    pieces = list(calibration._chunks([one_line], 200))
    assert "".join(pieces) == one_line and len(pieces) > 5
    assert pieces[0] == "short line\n" and all(p.startswith(" ") for p in pieces[2:])
    assert all(len(p) < 2 * 200 for p in pieces)
    unspaced = "字" * 1000
    assert list(calibration._chunks([unspaced], 200)) == ["字" * 200] * 5


def test_too_short_or_empty_text(tokenizer) -> None:
    with pytest.raises(CalibrationError, match="empty"):
        calibration.build_token_set(tokenizer, ["   "], samples=2, seq_len=32)
    with pytest.raises(CalibrationError, match="too short"):
        calibration.build_token_set(tokenizer, ["Hi."], samples=2, seq_len=32)


def test_text_too_short_for_any_tokenizer_is_refused_before_the_model(tmp_path: Path) -> None:
    """No tokenizer gives more tokens than the text has bytes: a few words are refused by the check that runs
    before the model is opened (it was refused only once the model had loaded and the text was tokenized)."""
    from shortgpt_desktop.core.pipeline import JobSpec, check_calibration

    short = tmp_path / "short.txt"
    short.write_text("Hello there, world.", encoding="utf-8")  # 19 bytes: 15 once a fifth is held out
    with pytest.raises(CalibrationError, match=r"too short \(19 bytes\)"):
        check_calibration(JobSpec(model="m", calib=[str(short)]))
    check_calibration(JobSpec(model="m", calib=[str(short)], eval_text=str(short)))  # all 19 bytes score: may do
    assert calibration.surely_too_short(["x" * 20], held_out=True) is None


def test_decode_bytes() -> None:
    assert calibration.decode_bytes("x".encode("utf-16-le")) is None  # NULs without a BOM: binary
    assert calibration.decode_bytes(b"\xef\xbb\xbfbom") == "bom"
    assert calibration.decode_bytes("é".encode("cp1252")) == "é"
    # UTF-32's little-endian BOM begins with UTF-16's: read as UTF-16, every other character was a NUL
    assert calibration.decode_bytes("naïve 字".encode("utf-32")) == "naïve 字"
    assert calibration.decode_bytes("\ufeffnaïve 字".encode("utf-32-be")) == "naïve 字"
    # UTF-16 without a BOM (PowerShell's Out-File, Windows tools) was "binary data": every other byte is NUL
    prose = "The tower is 324 metres tall, about the same height as an 81-storey building.\r\n" * 3
    for codec in ("utf-16-le", "utf-16-be"):
        assert calibration.decode_bytes(prose.encode(codec)) == prose
        assert calibration.binary_kind(prose.encode(codec)) is None
    packed = b"".join(i.to_bytes(4, "little") for i in range(1000))  # numbers, not text
    for data in (packed, b"\x00\xff" * 500):  # the second decodes as UTF-16 to "ÿÿÿ…"
        assert calibration.decode_bytes(data) is None and calibration.binary_kind(data) == "binary data"


def test_text_of_another_legacy_encoding_is_said_and_western_legacy_text_is_not(tmp_path: Path) -> None:
    """Shift-JIS, GBK and EUC-KR files were read as Windows-1252 gibberish without a word (a walkthrough): said in
    one sentence that names the file and what to do; a Windows-1252 text with its accents is read as before."""
    samples = {"shift_jis": "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 4,
               "gbk": "中文文本，用于校准。这是一个测试句子，没有别的意思。" * 4,
               "euc_kr": "한국어 텍스트 파일입니다. 이것은 시험용 문장입니다." * 4,
               "cp1251": "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 4}
    for codec, text in samples.items():
        path = tmp_path / f"{codec}.txt"
        path.write_bytes(text.encode(codec))
        read = calibration.read_texts([path])
        assert read.files == [path]  # still read: which encoding it is is not guessed
        assert [s for s in read.skipped if "is not UTF-8" in s] == [
            f"{path} is not UTF-8, and read as Windows-1252 much of it comes out as gibberish (accented letters and "
            "symbols): if it is in another encoding (Shift-JIS, GBK, EUC-KR, Big5, Windows-1251…), save it as "
            "UTF-8."], codec
    western = tmp_path / "western.txt"
    western.write_bytes(("Le café du coin était fermé; à côté, une crêperie naïve servait des œufs. " * 4)
                        .encode("cp1252"))
    read = calibration.read_texts([western])
    assert read.skipped == [] and "café" in read.texts[0]
    utf8 = tmp_path / "utf8.txt"
    utf8.write_text(samples["shift_jis"], encoding="utf-8")
    assert calibration.read_texts([utf8]).skipped == []


def test_json_nested_too_deeply_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """Python's JSON parser raises RecursionError, not a decode error, on nesting this deep: a traceback."""
    good = tmp_path / "good.txt"
    good.write_text(PROSE)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    (tmp_path / "deep.ipynb").write_text(deep)
    (tmp_path / "deep.jsonl").write_text(json.dumps({"text": PROSE}) + "\n" + deep + "\n")
    (tmp_path / "deeper.jsonl").write_text(deep + "\n")
    result = calibration.read_texts([good, *(tmp_path / f"deep.{s}" for s in ("json", "ipynb", "jsonl")),
                                     tmp_path / "deeper.jsonl"])
    assert result.texts == [PROSE, PROSE]  # the JSON Lines file's first record is kept
    assert sorted(result.skipped) == sorted([
        f"Skipped {tmp_path / 'deep.ipynb'}: it is not a valid notebook (nested too deeply).",
        f"Skipped {tmp_path / 'deep.json'}: it is not valid JSON (nested too deeply).",
        f"Left out 1 line of {tmp_path / 'deep.jsonl'} that is not JSON (line 2).",
        f"Skipped {tmp_path / 'deeper.jsonl'}: line 1 is not JSON.",
    ])


def test_a_json_lines_record_that_is_not_json_loses_only_itself(tmp_path: Path) -> None:
    """A JSON Lines file whose last record was cut (a download stopped, ``head -c``) or with a stray line was
    skipped whole as "line N is not JSON", its other records lost: only the bad lines are left out, by number."""
    records = [json.dumps({"text": f"record {i}"}) for i in range(9)]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(records) + "\n" + records[0][:12])  # the last record cut off
    many = tmp_path / "many.jsonl"
    many.write_text("\n".join(records[:8] + ["oops"] * 7 + ['{"title": 1}']) + "\n")
    prose = tmp_path / "prose.jsonl"  # prose saved as .jsonl, one quoted line of it parsing: not JSON Lines
    prose.write_text('A line of prose.\n"A quoted line."\nAnother line.\n')
    result = calibration.read_texts([cut, many, prose])
    assert result.texts == [f"record {i}" for i in range(9)] + [f"record {i}" for i in range(8)]
    assert sorted(result.skipped) == sorted([
        f"Left out 1 line of {cut} that is not JSON (line 10).",
        f"Left out 7 lines of {many} that are not JSON (lines 9, 10, 11, 12, 13 and 2 more).",
        f'Left out 1 line of {many} without a "text" field.',
        f"Skipped {prose}: 2 of its 3 lines are not JSON (the first: line 1): it is not JSON Lines.",
    ])
    tie = tmp_path / "tie.jsonl"  # a line of prose and a quoted one: as many lines not JSON as records
    tie.write_text('A line of prose.\n"A quoted line."\n')
    assert calibration.read_texts([tie]).skipped == [f"Skipped {tie}: 1 of its 2 lines are not JSON (the first: "
                                                     "line 1): it is not JSON Lines."]
    # one record and a last one cut short: the cut record is left out, the file read
    one = tmp_path / "one.jsonl"
    one.write_text(records[0] + "\n" + records[1][:9])
    assert calibration.read_texts([one]).texts == ["record 0"]
    # JSON Lines with few "text" records: its other records count as JSON (it was refused for two bad lines)
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join([records[0], *['{"title": 1}'] * 10, "oops", "oops", '{"title": 2}']) + "\n")
    assert calibration.read_texts([few]).texts == ["record 0"]


def test_estimate_tokens(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 4000)
    assert calibration.estimate_tokens(tmp_path) == 1000


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"stream\n\x00\x9c\x01\nendstream\n"


def code_folder(root: Path) -> Path:
    """What a coder calibrates on: source code, HTML and a file without an ending, beside a PDF and a PNG."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n" * 20)
    (root / "lib.rs").write_text("pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n" * 20)
    (root / "page.html").write_text("<html><body><p>Hello, calibration.</p></body></html>\n" * 20)
    (root / "LICENSE").write_text("Permission is hereby granted, free of charge, to any person.\n" * 20)
    (root / "paper.pdf").write_bytes(PDF)
    (root / "figure.png").write_bytes(PNG)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00")
    return root


def test_code_html_and_files_without_ending_are_used_binaries_said(tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "code")
    result = calibration.read_texts([folder])
    assert sorted(p.name for p in result.files) == ["LICENSE", "lib.rs", "main.py", "page.html"]
    assert len(result.texts) == 4 and all(t.strip() for t in result.texts)
    assert result.skipped == [
        f"Skipped {(folder / 'figure.png').resolve()}: it is a PNG image, not text.",
        f"Skipped {(folder / 'paper.pdf').resolve()}: it is a PDF document, not text.",
    ]


def test_a_folder_of_pdfs_is_refused_with_the_reason(tmp_path: Path) -> None:
    for name in ("a.pdf", "b.pdf"):
        (tmp_path / name).write_bytes(PDF)
    with pytest.raises(CalibrationError, match=r"No usable calibration text: skipped .*a\.pdf: it is a PDF document"):
        read_calibration([str(tmp_path)])


def test_notebook_gives_its_cells_not_its_json(tmp_path: Path) -> None:
    notebook = {"cells": [{"cell_type": "markdown", "source": ["# Title\n", "Some prose."]},
                          {"cell_type": "code", "source": "x = 1\nprint(x)", "outputs": [{"text": "1"}]}],
                "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4}
    (tmp_path / "n.ipynb").write_text(json.dumps(notebook))
    texts = calibration.texts_from_file(tmp_path / "n.ipynb")
    assert texts == ["# Title\nSome prose.\n\nx = 1\nprint(x)"]
    assert "nbformat" not in texts[0] and "kernelspec" not in texts[0]
    assert calibration.format_note(tmp_path / "n.ipynb").startswith("Jupyter notebook")
    assert calibration.format_note(tmp_path / "x.py") is None
    # A hand-edited notebook whose lines are not all text was a TypeError (a traceback on the command line): what is
    # not text is left out.
    notebook["cells"][0]["source"] = ["# Title\n", 3, None, "Some prose."]
    (tmp_path / "n.ipynb").write_text(json.dumps(notebook))
    assert calibration.texts_from_file(tmp_path / "n.ipynb") == texts


@pytest.mark.parametrize(("head", "kind"), [
    (b"GGUF\x03\x00\x00\x00" + bytes(8), "a GGUF model file"),
    (b"PK\x03\x04\x14\x00", "a zip archive"),
    ((123).to_bytes(8, "little") + b'{"a": {}}', "a safetensors model file"),
    (b"\x7fELF\x02\x01", "a program (ELF)"),
])
def test_binary_kinds_by_content(head: bytes, kind: str) -> None:
    assert calibration.binary_kind(head).startswith(kind)


@pytest.mark.parametrize("text", ["GGUF files hold a model.", "MZ is a name.", "%PDF is how a PDF begins",
                                  "RIFF chunks", "ID3 tags", "plain"])
def test_text_that_begins_like_a_signature_is_still_text(text: str) -> None:
    assert calibration.binary_kind(text.encode()) is None
    assert calibration.binary_kind(text.encode("utf-16")) is None


# ------------------------------------------------------------------------------ what a hobbyist drops in


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.timeout(30)  # reading a pipe without a writer waited for ever
def test_a_pipe_or_device_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(CalibrationError, match=r"The calibration path .* is not a file"):
            calibration.read_texts([path])
    (tmp_path / "text.txt").write_text(PROSE)
    assert calibration.read_texts([tmp_path]).texts == [PROSE]  # a folder's pipe is passed over


def test_json_lines_keep_line_separators_inside_their_strings(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 may stand unescaped in a JSON string; splitlines() cut the records there, and the
    whole file was dropped as "not JSON"."""
    texts = ["first\u2028line", "second\u2029para", "third\u0085next"]
    path = tmp_path / "scraped.jsonl"
    path.write_text("\r\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\r\n",
                    encoding="utf-8")
    assert calibration.read_texts([path]).texts == texts


def test_windows_line_ends_read_as_the_same_text(tokenizer, tmp_path: Path) -> None:
    """The same text saved on Windows (Notepad, git's autocrlf: CR LF) or an old Mac (CR) gave other tokens than on
    Linux, so other scores and possibly other layers removed. Read as Python reads text files, they are one text."""
    lines = [f"Line {i} of the text, with a few words to read." for i in range(400)]
    unix, windows, mac = (tmp_path / name for name in ("unix.txt", "windows.txt", "mac.txt"))
    unix.write_bytes("\n".join(lines).encode() + b"\n")
    windows.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    mac.write_bytes("\r".join(lines).encode() + b"\r")
    texts = [calibration.read_texts([path]).texts for path in (unix, windows, mac)]
    assert texts[0] == texts[1] == texts[2] and "\r" not in texts[0][0]
    samples = [calibration.build_token_set(tokenizer, t, samples=4, seq_len=32).samples for t in texts]
    assert samples[0] == samples[1] == samples[2]


def test_utf8_with_a_stray_byte_stays_utf8() -> None:
    """A file cut in the middle of a character, or with one bad byte, was read whole as cp1252: every accent and
    every CJK character turned to mojibake. Only the bad bytes are replaced now; legacy text stays legacy."""
    text = "Café in Tōkyō, 東京, naïve façade. " * 20
    cut = text.encode("utf-8")[:-2] + b"\xe6\x9d"  # head -c in the middle of a character
    stray = text.encode("utf-8") + b"\xff" + text.encode("utf-8")
    for data in (cut, stray):
        decoded = calibration.decode_bytes(data)
        assert decoded is not None and decoded.count("\ufffd") == 1 and "Café in Tōkyō, 東京" in decoded
    assert calibration.decode_bytes("Legacy café and façade".encode("cp1252")) == "Legacy café and façade"


def test_a_job_reads_at_most_so_much_text_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of several GB was read and tokenised whole (killed for want of memory, no sentence): the job reads
    the first MAX_TEXT_BYTES, cut at a line's end, and says what it left out."""
    monkeypatch.setattr(calibration, "MAX_TEXT_BYTES", 1000)
    line = "A line of plain prose, forty-odd bytes.\n"
    (tmp_path / "a-big.txt").write_text(line * 100)
    (tmp_path / "b-more.txt").write_text(line * 5)
    (tmp_path / "c-big.json").write_text(json.dumps(["x" * 2000]))
    result = calibration.read_texts([tmp_path / "a-big.txt", tmp_path / "b-more.txt"])
    # the smaller file first, whole, then what is left of the big one (it took all, and b-more was left out); the
    # texts in the order of the names
    assert result.texts == [line * ((1000 - 5 * len(line)) // len(line)), line * 5]
    assert result.skipped == [f"Read the first 800 B of {tmp_path / 'a-big.txt'} (4.0 kB): a job reads at most "
                              "1.0 kB of text, far more than it samples."]
    for name in ("e-small.txt", "f-small.txt", "g-small.txt", "h-small.txt"):
        (tmp_path / name).write_text(line * 6)
    result = calibration.read_texts([tmp_path / name for name in ("a-big.txt", "b-more.txt", "e-small.txt",
                                                                  "f-small.txt", "g-small.txt", "h-small.txt")])
    # 200 + 3 × 240 bytes whole, the first 80 of the last small one, and the big one left out, named
    assert result.files == [tmp_path / n for n in ("b-more.txt", "e-small.txt", "f-small.txt", "g-small.txt",
                                                   "h-small.txt")]
    assert result.skipped == [
        f"Read the first 80 B of {tmp_path / 'h-small.txt'} (240 B): a job reads at most 1.0 kB of text, far more "
        "than it samples.",
        f"Left out 1 more file ({tmp_path / 'a-big.txt'}): a job reads at most 1.0 kB of text, far more than it "
        "samples."]
    # read smallest first, a JSON document (read whole or not at all) that fits a job but not what the smaller files
    # left is left out and named, not called too large with the figure left (a review)
    (tmp_path / "i-doc.json").write_text(json.dumps(["y" * 600]))
    result = calibration.read_texts([tmp_path / "b-more.txt", tmp_path / "e-small.txt", tmp_path / "i-doc.json"])
    assert result.files == [tmp_path / "b-more.txt", tmp_path / "e-small.txt"]
    assert result.skipped == [f"Left out 1 more file ({tmp_path / 'i-doc.json'}): a job reads at most 1.0 kB of "
                              "text, far more than it samples."]
    skipped = calibration.read_texts([tmp_path / "c-big.json"]).skipped
    assert skipped == [f"Skipped {tmp_path / 'c-big.json'}: it is one JSON document larger than the 1.0 kB of text "
                       "a job reads."]
    # One JSON Lines record larger than that was cut, then called "line 1 is not JSON"
    (tmp_path / "d-big.jsonl").write_text(json.dumps({"text": "x" * 2000}) + "\n")
    skipped = calibration.read_texts([tmp_path / "d-big.jsonl"]).skipped
    assert skipped == [f"Skipped {tmp_path / 'd-big.jsonl'}: its first record is larger than the 1.0 kB of text a "
                       "job reads."]


def test_unusable_evaluation_text_is_called_so(tmp_path: Path) -> None:
    """It was called calibration text, which the user had given and which was fine."""
    from shortgpt_desktop.core.pipeline import JobSpec, check_calibration

    good, binary = tmp_path / "good.txt", tmp_path / "eval.txt"
    good.write_text(PROSE * 4)
    binary.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(CalibrationError, match=r"^No usable evaluation text: skipped .*eval\.txt"):
        check_calibration(JobSpec(model="m", calib=[str(good)], eval_text=str(binary)))


def test_the_held_out_windows_stop_at_the_count_asked_for(tokenizer, valid_text: Path) -> None:
    """``max_eval_windows`` bounds the check: without it the check ran on the whole held-out text, slower and
    larger than its estimate."""
    text = valid_text.read_text(encoding="utf-8")[:20_000]
    assert len(calibration.build_token_set(tokenizer, [text], samples=4, seq_len=32, max_eval_windows=3).eval_windows) \
        == 3


def test_a_long_evaluation_text_is_tokenised_only_as_far_as_its_windows_reach(
        tokenizer, valid_text: Path, test_text: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 40 MB evaluation text was tokenised whole (about 20 s) for the first ``max_eval_windows`` windows: it stops
    at the chunk that gives them, and the windows are those of the whole text's stream."""
    monkeypatch.setattr(calibration, "TOKENIZE_CHUNK", 10_000)
    evaluation = [test_text.read_text(encoding="utf-8")] * 3  # about 180 kB: many chunks
    read: list[int] = []

    def counting(text: str, add_special_tokens: bool = True) -> dict:
        read.append(len(text))
        return tokenizer(text, add_special_tokens=add_special_tokens)

    for name in ("bos_token_id", "pad_token_id", "eos_token_id"):
        setattr(counting, name, getattr(tokenizer, name))
    calib = [valid_text.read_text(encoding="utf-8")[:20_000]]
    heard: list[tuple[int, int]] = []
    tokens = calibration.build_token_set(counting, calib, evaluation, samples=4, seq_len=64, max_eval_windows=8,
                                         on_text=lambda done, in_all: heard.append((done, in_all)))
    whole = calibration.tokenize_stream(tokenizer, evaluation)
    body = 64 - (tokens.bos_id is not None)
    assert [w[len(w) - body:] for w in tokens.eval_windows] == [whole[i: i + body] for i in range(0, 8 * body, body)]
    assert sum(read) < calibration.text_length(calib) + calibration.TOKENIZE_CHUNK * 2
    assert calibration.text_length(evaluation) > calibration.TOKENIZE_CHUNK * 4
    assert heard[-1][0] == heard[-1][1]  # the bar ends full


def test_json_lines_of_plain_strings_are_texts(tmp_path: Path) -> None:
    """A JSON Lines file whose records are strings, not objects with a ``text`` field, is read as those strings."""
    path = tmp_path / "a.jsonl"
    path.write_text('"first document"\n"second document"\n', encoding="utf-8")
    assert calibration.read_texts([path]).texts == ["first document", "second document"]


class CharTokenizer:
    """One token per character (id = code point + 10); BOS id 1 added to plain text when ``adds_bos``."""

    def __init__(self, adds_bos: bool = True) -> None:
        self.bos_token_id, self.pad_token_id, self.eos_token_id, self.adds_bos = 1, 0, 2, adds_bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [ord(c) + 10 for c in text]
        return {"input_ids": ([1] if add_special_tokens and self.adds_bos else []) + ids}


def test_samples_and_windows_are_the_stream_cut_exactly_once() -> None:
    """Every scored token appears once, before the cut; every held-out token once, after it; a last partial
    sample of at least 16 tokens and a last partial window are kept."""
    text = "".join(chr(0x4E00 + i) for i in range(260))  # 260 distinct tokens
    tokens = calibration.build_token_set(CharTokenizer(), [text], samples=100, seq_len=32)
    stream = calibration.tokenize_stream(CharTokenizer(), [text])
    cut = int(len(stream) * (1 - calibration.DEFAULT_HELDOUT_FRACTION))
    assert (len(stream), cut) == (260, 208)  # 6 samples of 31 tokens and one of 22; windows of 31 and 21
    assert all(s[0] == 1 for s in tokens.samples + tokens.eval_windows)
    assert [t for s in tokens.samples for t in s[1:]] == stream[:cut]
    assert [t for w in tokens.eval_windows for t in w[1:]] == stream[cut:]


def test_a_scoring_part_under_the_minimum_is_refused_not_left_empty() -> None:
    """19 tokens: 15 left once a fifth is held out, which gave a TokenSet with no samples (then a bare ValueError)."""
    with pytest.raises(CalibrationError, match="too short"):
        calibration.build_token_set(CharTokenizer(), ["Nineteen tokens ok."], samples=4, seq_len=32)


def test_no_bos_is_prepended_where_the_tokenizer_adds_none() -> None:
    tokens = calibration.build_token_set(CharTokenizer(adds_bos=False), ["plain prose " * 30], samples=2, seq_len=32)
    assert tokens.bos_id is None and all(s[0] != 1 for s in tokens.samples + tokens.eval_windows)


def test_text_over_the_budget_is_cut_at_a_line_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "MAX_TEXT_BYTES", 1000)
    line = "A line of plain prose, some thirty-seven.\n"  # 42 bytes: 1000 is not a whole number of lines
    (tmp_path / "big.txt").write_text(line * 100)
    assert calibration.read_texts([tmp_path / "big.txt"]).texts == [line * (1000 // len(line))]
    records = "".join(json.dumps({"text": f"record {i} of some prose"}) + "\n" for i in range(100))
    (tmp_path / "big.jsonl").write_text(records)
    result = calibration.read_texts([tmp_path / "big.jsonl"])
    assert result.texts == [f"record {i} of some prose" for i in range(len(result.texts))] and len(result.texts) > 10
    assert result.skipped[0].startswith("Read the first 1.0 kB of")


def test_one_file_named_twice_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("Some prose to calibrate on. " * 10)
    (tmp_path / "link.txt").symlink_to(folder / "a.txt")
    result = calibration.read_texts([folder, folder / ".." / "texts" / "a.txt", tmp_path / "link.txt"])
    assert len(result.texts) == 1 and len(result.files) == 1


def test_windows_1252_text_with_short_lines_and_curly_quotes() -> None:
    text = "“Quoted” – line one, café\nline two\nline three, € 5\n" * 5
    assert calibration.decode_bytes(text.encode("cp1252")) == text


def test_a_short_utf16_file_without_bom_is_text() -> None:
    data = "Short note: buy milk and eggs.\r\n".encode("utf-16-le")  # 64 bytes
    assert calibration.binary_kind(data) is None
    assert calibration.decode_bytes(data) == "Short note: buy milk and eggs.\r\n"


def test_one_accent_and_one_stray_byte_stay_utf8() -> None:
    assert calibration.decode_bytes("Café menu".encode() + b"\xff") == "Café menu\ufffd"


def test_binary_data_without_nul_bytes_does_not_decode() -> None:
    blob = bytes((i * 7919 + 13) % 255 + 1 for i in range(20_000))  # every byte but NUL
    assert calibration.decode_bytes(blob) is None


def test_utf16_like_data_that_is_not_prose_is_binary() -> None:
    assert calibration.bomless_utf16(("ÿ " * 500).encode("utf-16-le")) is None  # too few distinct characters
    assert calibration.bomless_utf16(("abcdefghijkl" * 50).encode("utf-16-le")) is None  # no spaces: not words


def test_a_json_list_of_records_gives_their_text(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"text": "first doc"}, {"text": "second doc"}]))
    assert calibration.read_texts([path]).texts == ["first doc", "second doc"]


def test_a_file_of_whitespace_is_said_empty(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("   \n\n  ")
    result = calibration.read_texts([path])
    assert result.texts == [] and result.skipped == [f"Skipped {path.resolve()}: it is empty."]


def test_the_tokenizer_chunks_keep_every_character() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 50 for i in range(2000))  # over two 200k-char chunks
    assert "".join(calibration._chunks([text], 200_000)) == text


def test_a_file_this_run_writes_its_output_to_is_not_read_as_calibration_text(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``--calib . 2> err.txt`` read the job's own notes as text (err.txt had them by the time the text was read);
    a file of the same name that is not the stream, and the other texts, are read as before."""
    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "a.txt").write_text(text)
    log_file = tmp_path / "err.txt"
    log_file.write_text("note: reading the model's header...\n" * 40)
    with open(log_file, "a") as stream:
        monkeypatch.setattr(calibration, "OUTPUT_STREAMS", ((stream.fileno(), "standard error"),))
        read = calibration.read_texts([tmp_path])
    assert read.files == [(tmp_path / "a.txt").resolve()] and read.texts == [text]
    assert read.skipped == [f"Skipped {log_file.resolve()}: this run writes its standard error to it."]
    monkeypatch.setattr(calibration, "OUTPUT_STREAMS", ((1, "standard output"), (2, "standard error")))
    assert len(calibration.read_texts([tmp_path]).files) == 2  # the same file, not this run's stream, is text


def test_a_file_system_without_file_numbers_matches_no_file_to_the_output(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every file's number is 0 (some Windows file systems), every file on the volume of a redirected stream
    would have been taken for it."""
    text = tmp_path / "a.txt"
    text.write_text("Some text.")
    with open(tmp_path / "log.txt", "w") as stream:
        monkeypatch.setattr(calibration, "OUTPUT_STREAMS", ((stream.fileno(), "standard output"),))
        real = os.stat_result
        numberless = real((*text.stat()[:1], 0, *text.stat()[2:]))
        assert calibration.own_output(tmp_path / "log.txt") == "standard output"
        monkeypatch.setattr(Path, "stat", lambda self, **kw: numberless)
        monkeypatch.setattr(calibration.os, "fstat", lambda fd: real((stat.S_IFREG | 0o644, 0, *numberless[2:])))
        assert calibration.own_output(text) is None


def test_a_file_that_cannot_be_read_is_skipped_in_one_sentence(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable file was skipped as "Skipped /a/b.txt: [Errno 13] Permission denied: '/a/b.txt'." (the path
    twice, in Python's words; a walkthrough as another user)."""
    good, locked = tmp_path / "good.txt", tmp_path / "locked.txt"
    good.write_text("Some text to read. " * 20, encoding="utf-8")
    locked.write_text("Not to be read. " * 20, encoding="utf-8")
    read = calibration.texts_from_file

    def refusing(path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(calibration, "texts_from_file", refusing)
    result = calibration.read_texts([tmp_path])
    assert len(result.texts) == 1
    assert result.skipped == [f"Skipped {locked}: it cannot be read (permission denied)."]


def test_a_pipe_or_a_broken_link_in_a_folder_is_left_out_with_a_note(tmp_path: Path) -> None:
    """They were left out without a word, while a binary or empty file is named (a walkthrough)."""
    import os

    (tmp_path / "good.txt").write_text("Some text to read. " * 20, encoding="utf-8")
    (tmp_path / "nowhere.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    odd = [tmp_path / "loop.txt", tmp_path / "nowhere.txt"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.txt")
        odd.append(tmp_path / "pipe.txt")
    result = calibration.read_texts([tmp_path])
    assert len(result.texts) == 1
    assert result.skipped == [f"Left out {p}: it is not a regular file (a pipe, a device, or a link to nothing)."
                              for p in sorted(odd)]


def test_a_scores_report_given_as_text_is_named_for_what_it_is(tmp_path: Path) -> None:
    """An exported scores file dropped on the calibration list was "not a JSON list of strings", with no word of
    where it goes (a window walkthrough)."""
    report = tmp_path / "SmolLM2-bi.json"
    report.write_text(json.dumps({"metric": "bi", "n_layers": 2, "scores": [0.1, 0.2]}))
    assert calibration.read_texts([report]).skipped == [
        f"Skipped {report}: it is a report of this app (layer scores), not text; the window's File → Import scores… "
        "reads it."]


def test_a_folder_of_hidden_files_only_says_they_were_left_out(tmp_path: Path) -> None:
    """A folder holding only .notes.txt was "no files were found in hid" (a walkthrough): the hidden files are named
    as left out; beside other files they are left out unsaid, as the README says."""
    hid = tmp_path / "hid"
    hid.mkdir()
    (hid / ".notes.txt").write_text(PROSE)
    (hid / "__pycache__").mkdir()
    (hid / "__pycache__" / "x.txt").write_text(PROSE)
    notes: list[str] = []
    assert calibration.collect_files([hid], notes) == []
    assert notes == [f"Left out 2 hidden files in {hid}: names that start with a dot (and __pycache__) are not read "
                     "as text; rename them to use them."]
    (hid / "notes.txt").write_text(PROSE)
    notes.clear()
    assert calibration.collect_files([hid], notes) == [(hid / "notes.txt").resolve()] and notes == []
