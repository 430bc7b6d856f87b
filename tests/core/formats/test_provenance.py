"""Pruning a pruned model again: what is gone is recorded and said in the first original's numbering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shortgpt_desktop import cli
from shortgpt_desktop.core.formats.provenance import (
    CONFIG_KEY,
    earlier_removed,
    gguf_removed_layers,
    layers_a_copy_lacks,
    removed_in_first_original,
    source_license,
)
from shortgpt_desktop.core.model.sources import ModelSource


def test_removed_layers_are_counted_in_the_first_originals_numbering() -> None:
    assert removed_in_first_original([], [1, 3], 6) == [1, 3]
    # The first original had 7 layers; 0 and 5 went first, so the 5 left are 1, 2, 3, 4, 6.
    assert removed_in_first_original([0, 5], [1], 5) == [0, 2, 5]
    assert removed_in_first_original([0, 5], [4], 5) == [0, 5, 6]


def prune(model: Path, remove: str, out: Path, calib: Path, *extra: str) -> None:
    assert cli.main(["prune", str(model), "--remove", remove, "--repair", "none", "--no-eval", "--calib", str(calib),
                     "--samples", "2", "--seq-len", "32", "--out", str(out), "-q", *extra]) == 0


def removed_line(folder: Path) -> str:
    card = (folder / "README.md").read_text(encoding="utf-8")
    return next(line for line in card.splitlines() if line.startswith("Removed layers"))


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_a_second_prune_says_what_the_first_original_lacks(fmt: str, tiny_model: Path, tiny_q4_gguf: Path,
                                                           small_calib: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The card of a second prune called the pruned copy's numbering the original's ("original numbering: 1" for
    the first original's layer 2), and a safetensors copy kept no record of the first cut. The terminal said
    "removed 1 of 4 layers: 1" in the copy's numbering without a word."""
    source = tiny_model if fmt == "safetensors" else tiny_q4_gguf
    prune(source, "0,5", tmp_path / "first", small_calib)
    first = tmp_path / "first" if fmt == "safetensors" else next((tmp_path / "first").glob("*.gguf"))
    assert removed_line(tmp_path / "first") == "Removed layers (0-based, original numbering): 0, 5."
    assert "removed 2 of 6 layers (33% of them): 0,5\n" in capsys.readouterr().out
    prune(first, "1", tmp_path / "second", small_calib)
    assert (f"removed 1 of 4 layers (25% of them): 1 (as numbered in {first.name}, which lacks its original's layers "
            "0, 5; in the original: 2)\n") in capsys.readouterr().out
    if fmt == "safetensors":
        config = json.loads((tmp_path / "second" / "config.json").read_text(encoding="utf-8"))
        assert config[CONFIG_KEY] == [0, 2, 5] and config["num_hidden_layers"] == 3
    else:
        assert gguf_removed_layers(next((tmp_path / "second").glob("*.gguf"))) == [0, 2, 5]
        # Runtimes show the file's general.name: the pruned file went by the original's.
        from shortgpt_desktop.core.formats.gguf_reader import check_gguf

        assert check_gguf(first).metadata["general.name"] == "tiny (pruned to 4 layers)"
        second_file = next((tmp_path / "second").glob("*.gguf"))
        assert check_gguf(second_file).metadata["general.name"] == "tiny (pruned to 3 layers)"
    line = removed_line(tmp_path / "second")
    assert "which had been pruned before: it lacked layers 0, 5 of its original): 1." in line, line
    assert line.endswith("Of the first original's 6 layers, this model lacks 0, 2, 5."), line
    # eval --against a copy names the layers it lacks, in the first model's numbering, where its record fits that
    # model (the JSON left them empty, the summary said nothing of them).
    second = tmp_path / "second" if fmt == "safetensors" else next((tmp_path / "second").glob("*.gguf"))
    evaluated = tmp_path / "eval.json"
    for reference, lacking in ((source, [0, 2, 5]), (first, [1])):
        assert cli.main(["eval", str(reference), "--against", str(second), "--calib", str(small_calib), "--seq-len",
                         "32", "--eval-windows", "2", "--json", str(evaluated), "-q"]) == 0
        report = json.loads(evaluated.read_text(encoding="utf-8"))
        assert report["removed_layers"] == lacking
        assert report["kept_layers"] == [i for i in range(report["n_layers"]) if i not in lacking]
        listed = ",".join(map(str, lacking))
        assert f"layers ({len(lacking) / report['n_layers']:.0%} of them): {listed}" in capsys.readouterr().out
    assert cli.main(["eval", str(first), "--against", str(first), "--calib", str(small_calib), "--seq-len", "32",
                     "--eval-windows", "2", "--json", str(evaluated), "-q"]) == 0
    assert json.loads(evaluated.read_text(encoding="utf-8"))["removed_layers"] == []  # the same layers: none
    # A third prune, back to the safetensors a GGUF source can be saved as: the record goes on.
    prune(second, "2", tmp_path / "third", small_calib, "--format", "safetensors")
    config = json.loads((tmp_path / "third" / "config.json").read_text(encoding="utf-8"))
    assert config[CONFIG_KEY] == [0, 2, 4, 5] and config["num_hidden_layers"] == 2


@pytest.mark.parametrize(("recorded", "earlier"), [
    ([5, 0, 5], [0, 5]),  # as written by hand: sorted, once each
    ([0, -1], []), ([True, 2], []), ([0, 5.0], []), ("0,5", []),  # not layer indices: no record
])
def test_the_record_of_earlier_cuts_is_read_only_as_layer_indices(tmp_path: Path, recorded: object,
                                                                  earlier: list[int]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", CONFIG_KEY: recorded}), encoding="utf-8")
    assert earlier_removed(ModelSource(spec=str(tmp_path), kind="folder", folder=tmp_path)) == earlier


def test_the_layers_a_copy_lacks_are_said_only_where_its_record_fits_the_first_model(tmp_path: Path) -> None:
    def source(name: str, recorded: list[int] | None) -> ModelSource:
        folder = tmp_path / name
        folder.mkdir()
        config = {"model_type": "llama"} | ({CONFIG_KEY: recorded} if recorded is not None else {})
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return ModelSource(spec=str(folder), kind="folder", folder=folder)

    original, once, twice = source("original", None), source("once", [0, 5]), source("twice", [0, 2, 5])
    assert layers_a_copy_lacks(original, 6, twice, 3) == [0, 2, 5]
    assert layers_a_copy_lacks(once, 4, twice, 3) == [1]  # the first original's 2 is the first copy's 1
    assert layers_a_copy_lacks(original, 6, original, 6) == []  # no record: nothing said
    assert layers_a_copy_lacks(twice, 3, once, 4) == []  # the other way round: the reference lacks more
    assert layers_a_copy_lacks(original, 8, twice, 3) == []  # 8 layers: not the original the record counts
    assert layers_a_copy_lacks(source("other", [1]), 5, twice, 3) == []  # layer 1 was gone first: another line


def test_a_licence_name_without_a_licence_or_a_gguf_licence_that_is_not_an_id_is_not_carried(
        tiny_model: Path, tmp_path: Path) -> None:
    import gguf

    from shortgpt_desktop.core.model.sources import resolve
    from shortgpt_desktop.core.testing.gguf_export import export_gguf

    (tmp_path / "README.md").write_text("---\nlicense_name: gemma\nlicense_link: LICENSE\n---\n", encoding="utf-8")
    assert source_license(ModelSource(spec=str(tmp_path), kind="folder", folder=tmp_path)) == {}
    path = tmp_path / "licensed.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer",
                extra={"general.license": ("apache-2.0 (see LICENSE)", gguf.GGUFValueType.STRING)})
    assert source_license(resolve(str(path))) == {}
