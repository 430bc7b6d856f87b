"""What the pipeline reads from a checkpoint without loading it (the bytes a value takes in its files), the job's
settings, the model it opens, the tokens it cuts and the stamp of the text they were cut from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shortgpt_desktop.core.model.sources import ModelSource, WeightFile
from shortgpt_desktop.core.pipeline import JobSpec, open_model, prepare_tokens, stored_bytes_per_param, text_stamp


def _shard(path: Path, tensors: dict[str, torch.Tensor]) -> WeightFile:
    save_file(tensors, path)
    return WeightFile(path, "safetensors", path.stat().st_size)


def test_every_shard_counts_in_the_bytes_a_value_takes(tmp_path: Path) -> None:
    """Two shards, 1,000 float32 values and 3,000 bfloat16 ones: 2.5 bytes a value over both (the first shard alone
    said 4), whatever the config says."""
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    shards = [_shard(tmp_path / "a.safetensors", {"w": torch.zeros(10, 100)}),
              _shard(tmp_path / "b.safetensors", {"v": torch.zeros(30, 100, dtype=torch.bfloat16)})]
    source = ModelSource("m", "folder", tmp_path, weight_files=shards)
    assert stored_bytes_per_param(source) == pytest.approx((1000 * 4 + 3000 * 2) / 4000)


@pytest.mark.parametrize(("config", "expected"), [({"torch_dtype": "bfloat16"}, 2.0), ({"dtype": "float16"}, 2.0),
                                                  ({}, 4.0)])
def test_legacy_bin_files_are_sized_by_the_configs_dtype(tmp_path: Path, config: dict, expected: float) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4, 4)}, weights)
    source = ModelSource("m", "folder", tmp_path, weight_files=[WeightFile(weights, "bin", weights.stat().st_size)])
    assert stored_bytes_per_param(source) == expected


def test_the_text_stamp_changes_when_any_calibration_or_evaluation_file_is_edited(tmp_path: Path) -> None:
    """Tokens are kept while the stamp holds: an edit to the second calibration file or to the evaluation text
    that it missed would keep tokens cut from text that is no longer there."""
    files = [tmp_path / name for name in ("a.txt", "b.txt", "eval.txt")]
    for path in files:
        path.write_text("Some prose. " * 10, encoding="utf-8")
    spec = JobSpec(model="m", calib=[str(files[0]), "builtin", str(files[1])], eval_text=str(files[2]))
    stamp = text_stamp(spec)
    assert len(stamp) == 3
    for path in files:
        path.write_text("Other prose, longer than before. " * 20, encoding="utf-8")
        edited = text_stamp(spec)
        assert edited != stamp, path.name
        stamp = edited
    # The built-in corpus as the evaluation text (--eval-text builtin) is left out as it is from the calibration: it
    # emptied the whole stamp, so an edited calibration file went unnoticed.
    builtin_eval = JobSpec(model="m", calib=[str(files[0])], eval_text="builtin")
    stamp = text_stamp(builtin_eval)
    assert len(stamp) == 1
    files[0].write_text("Prose edited once more. " * 30, encoding="utf-8")
    assert text_stamp(builtin_eval) not in (stamp, ())


def test_a_missing_evaluation_text_is_named_as_one_when_scoring(small_calib: Path, tmp_path: Path) -> None:
    """The stamp of a path that is gone is empty: the refusal is the check's sentence, not the stamp's "calibration
    path" one (said of the evaluation text)."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.errors import CalibrationError

    missing = tmp_path / "eval.txt"
    spec = JobSpec(model="m", calib=[str(small_calib)], eval_text=str(missing))
    assert text_stamp(spec) == ()
    with pytest.raises(CalibrationError, match=f"^The evaluation text {missing} does not exist"):
        Engine().score(spec)


def test_the_window_and_a_prune_sample_and_score_as_the_command_lines_defaults_do() -> None:
    """The window never sets the seed or the block size, nor does ``prune`` the block size: the job spec's
    defaults are what ``score`` takes without flags (angular scores each layer on its own). ``eval`` sets no
    prompt: it asks the quiz as the check does, with the default prompt."""
    from shortgpt_desktop.cli import build_parser, spec_from_args
    from shortgpt_desktop.core.pipeline import DEFAULT_PROMPT

    args = build_parser().parse_args(["score", "m"])
    spec = JobSpec(model="m")
    assert (spec.seed, spec.block_size) == (args.seed, args.block_size) == (0, 1)
    assert DEFAULT_PROMPT.strip() and spec_from_args(build_parser().parse_args(["eval", "m"])).prompt == DEFAULT_PROMPT


@pytest.fixture(scope="module")
def tokenizer_only(tiny_model: Path):
    """What prepare_tokens reads of a loaded model: its tokenizer, its config's positions and its name."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.model.loading import load_tokenizer
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(tiny_model))
    return SimpleNamespace(tokenizer=load_tokenizer(source), config={"max_position_embeddings": 1024}, source=source)


def test_the_tokens_take_the_windows_asked_and_warn_of_the_evaluation_texts_skipped_files(
        tokenizer_only, small_calib: Path, tmp_path: Path) -> None:
    """A text that gives every sample asked for is not warned about; a file left out of the evaluation folder is
    (the report's warnings are these)."""
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "prose.txt").write_text(small_calib.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    spec = JobSpec(model="m", calib=[str(small_calib)], eval_text=str(folder), samples=4, seq_len=32,
                   eval_windows=3)
    tokens, names, warnings = prepare_tokens(tokenizer_only, spec)
    assert len(tokens.samples) == 4 and len(tokens.eval_windows) == 3
    assert names == [str(small_calib)]
    assert len(warnings) == 1 and "image.png" in warnings[0], warnings


def test_a_text_that_runs_out_inside_a_sample_says_the_tokens_it_gives(tokenizer_only, small_calib: Path,
                                                                        tmp_path: Path, caplog) -> None:
    """Two lines of notes: "gives only 1 sample of 512 tokens" was said of a sample of 20 (a walkthrough). A text
    of several samples, the last cut short, is said as before."""
    notes = tmp_path / "notes.md"
    notes.write_text("Some notes about things, and the things they are about.\nMore notes here, then some more.\n",
                     encoding="utf-8")
    with caplog.at_level("INFO"):
        tokens, _, warnings = prepare_tokens(tokenizer_only, JobSpec(model="m", calib=[str(notes)],
                                                                     eval_text="builtin", samples=128, seq_len=512))
    assert len(tokens.samples) == 1 and len(tokens.samples[0]) < 512
    assert warnings == [f"The calibration text gives only 1 sample, of {len(tokens.samples[0])} tokens (128 samples "
                        "of 512 tokens asked for)."]
    # said once, by the job: the token set's own log line said "1 samples of 512 tokens" in the window's Log first
    assert not [r for r in caplog.records if "gives only" in r.getMessage()]
    _, _, warnings = prepare_tokens(tokenizer_only, JobSpec(model="m", calib=[str(notes)], eval_text="builtin",
                                                            samples=1, seq_len=512))
    assert warnings and warnings[0].endswith("(1 sample of 512 tokens asked for).")  # asked for one, it is short
    notes.write_text("Some notes about things. " * 20, encoding="utf-8")  # samples: all whole but the last
    tokens, _, warnings = prepare_tokens(tokenizer_only, JobSpec(model="m", calib=[str(notes)], eval_text="builtin",
                                                                 samples=128, seq_len=64))
    assert len(tokens.samples) > 1
    assert warnings == [f"The calibration text gives only {len(tokens.samples)} samples of 64 tokens (128 asked for)."]


def test_an_evaluation_text_with_nothing_to_read_is_named_as_one_when_tokenising(tokenizer_only, small_calib: Path,
                                                                                 tmp_path: Path) -> None:
    """The check before loading says so first; a file changed between the check and the tokenising reaches here."""
    from shortgpt_desktop.core.errors import CalibrationError

    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    spec = JobSpec(model="m", calib=[str(small_calib)], eval_text=str(image), samples=4, seq_len=32)
    with pytest.raises(CalibrationError, match=r"^No usable evaluation text: skipped "):
        prepare_tokens(tokenizer_only, spec)


def test_open_model_says_what_the_model_is_before_loading_it_in_the_dtype_asked(tiny_model: Path) -> None:
    from dataclasses import replace

    from shortgpt_desktop.core.model.loading import inspect_model
    from shortgpt_desktop.core.model.sources import resolve

    heard: list[tuple] = []
    spec = JobSpec(model=str(tiny_model), device="cpu", dtype="bfloat16", samples=3, seq_len=40, batch_size=2)
    loaded = open_model(spec, progress=lambda stage, done, total, _: heard.append((stage, done, total)),
                        on_info=lambda info: heard.append(("info", info)))
    assert loaded.dtype == "bfloat16" and next(loaded.model.parameters()).dtype == torch.bfloat16
    assert [event[0] for event in heard] == ["info", "load", "load"]
    assert heard[1:] == [("load", 0, 1), ("load", 1, 1)]
    expected = inspect_model(resolve(str(tiny_model)), "cpu", "bfloat16", samples=3, seq_len=40, batch_size=2)
    free = {"available_ram_bytes": 0, "available_device_bytes": 0}  # what is free moves between the two calls
    assert replace(heard[0][1].memory, **free) == replace(expected.memory, **free)
