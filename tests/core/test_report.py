"""The model card says what the repair did per run, where its ridge was chosen on held-out samples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from shortgpt_desktop.core.report import Report, model_card


def chosen_runs(refit: bool, fit: str = "map", after: bool = False) -> list[dict]:
    """Two runs whose ridge was chosen: a fit at ridge 0.1, and the identity (no fit did better than none);
    ``after``: the kept layer after each refitted too, at ridge 0.3 after the first, left as it was after the second."""
    base = {"patched_layer": 1, "parameter": "model.layers.1.mlp.down_proj.weight", "residual_before": 0.5,
            "residual_after": 0.4, "note": "", "fit": fit}
    runs = [{**base, "layers": [2, 3], "ridge": 0.1, "held_out_residual": 0.41},
            {**base, "layers": [5, 5], "patched_layer": 4, "parameter": "model.layers.4.mlp.down_proj.weight",
             "residual_after": 0.5, "ridge": None, "held_out_residual": 0.52}]
    if refit:
        runs[1].update(refit_before=0.5, refit_after=0.3, refit_kept=True)
    if after:
        layer = {"parameter": "model.layers.{}.mlp.down_proj.weight", "residual_before": 0.6, "fit": fit}
        runs[0]["after"] = {**layer, "patched_layer": 4, "parameter": layer["parameter"].format(4),
                            "residual_after": 0.45, "ridge": 0.3, "held_out_residual": 0.5}
        runs[1]["after"] = {**layer, "patched_layer": 6, "parameter": layer["parameter"].format(6),
                            "residual_after": 0.6, "ridge": None, "held_out_residual": 0.61}
    return runs


def card_repair_line(refit: bool, fit: str = "map", after: bool = False) -> str:
    report = Report(model="m", n_layers=8, removed_layers=[2, 3, 5], kept_layers=[0, 1, 4, 6, 7],
                    repair="refit" if refit else "linear", repair_runs=chosen_runs(refit, fit, after))
    return next(line for line in model_card(report, "m").splitlines() if "linear repair" in line)


def test_the_card_counts_only_the_layers_a_map_changed_and_names_each_ridge() -> None:
    line = card_repair_line(refit=False)
    assert "a fitted map folded into the MLP output projection of 1 kept layer;" in line, line
    assert "for removed layers 2-3: 0.1, for removed layer 5: no fit did better than none" in line, line
    whole = card_repair_line(refit=False, fit="projection")
    assert "the MLP output projection of 1 kept layer before a run of removed layers refitted in closed form;" \
        in whole, whole
    assert "map" not in whole, whole
    refitted = card_repair_line(refit=True)
    assert "refitted" in refitted and "no layer is changed" not in refitted, refitted
    assert (", then the whole MLP of that layer refitted on the calibration activations to the original's next state "
            "(trained by gradient steps: this part is not training-free)") in refitted, refitted


def test_the_card_counts_the_kept_layers_after_the_runs_that_were_refitted() -> None:
    line = card_repair_line(refit=False, fit="projection", after=True)
    assert "the MLP output projection of 1 kept layer before a run of removed layers refitted in closed form; that " \
           "of 1 kept layer after a run refitted the same way;" in line, line
    assert "for removed layers 2-3: 0.1, for removed layer 5: no fit did better than none; kept layer 4 after a run: " \
           "0.3; kept layer 6 after a run: no fit did better than none)" in line, line


def test_the_card_counts_a_layer_after_a_run_refitted_where_the_run_itself_was_left_as_it_was() -> None:
    from shortgpt_desktop.core.report import after_fitted

    runs = chosen_runs(refit=False, fit="projection", after=True)[1:]  # kept as it was; the layer after: same
    runs[0]["after"].update(ridge=0.3, residual_after=0.5)
    assert after_fitted(runs[0])
    report = Report(model="m", n_layers=8, removed_layers=[5], kept_layers=[0, 1, 2, 3, 4, 6, 7], repair="linear",
                    repair_runs=runs)
    line = next(line for line in model_card(report, "m").splitlines() if "linear repair" in line)
    assert "(the MLP output projection of 1 kept layer after a run refitted the same way; no new parameters)" in line
    assert "nothing fitted" not in line, line


def test_the_card_gives_the_figures_of_the_report() -> None:
    """The layers, the perplexity before and after and the KL figures were in no assertion: swapped or wrong, every
    test passed."""
    report = Report(model="m", metric="bi", scores=[0.1] * 6, removed_layers=[1, 2], calibration=["/data/wiki.txt"],
                    samples=8, seq_len=32, tokens=2560)
    report.n_layers = 6
    report.ppl_before, report.ppl_after, report.eval_tokens = 10.0, 12.5, 2048
    report.fidelity = {"mean_kl": 0.1234, "p99_kl": 1.5, "same_top": 0.8}
    card = model_card(report, "m")
    assert "2 of 6 decoder layers were removed from `m`" in card
    assert "| layers | 6 | 4 |" in card
    assert "| perplexity | 10.000 | 12.500 |" in card
    assert "mean KL divergence 0.1234 nats per token (99th percentile 1.500), same top token for 80.0% of" in card
    assert "- Calibration: wiki.txt; 8 samples × 32 tokens, seed 0 (2,560 tokens scored)\n" in card
    assert "No quality figures" not in card
    assert "Quiz" not in card  # none asked
    report.quiz = {"asked": 26, "known": 0, "kept": 0}  # asked, the original knew none: it was left out unsaid
    assert ("Quiz (26 short questions of fact, greedy answers): the original answers none right, so it says nothing "
            "of this cut.") in model_card(report, "m")
    report.quiz = {"asked": 26, "known": 17, "kept": 5}
    assert "the original answers 17 right, the pruned model 5 of those." in model_card(report, "m")


def test_a_card_saved_without_a_check_says_so_and_how_to_measure() -> None:
    """The window's Save without Check (and --no-eval) wrote a card with layers and sizes and not a word on quality."""
    report = Report(model="org/m", metric="bi", scores=[0.1] * 6, removed_layers=[1, 2], samples=8, seq_len=32)
    report.n_layers, report.changed_types = 6, {"blk.1.ffn_down.weight": ["Q4_K", "Q8_0"]}
    card = model_card(report, "org/m")
    assert ("No quality figures: this model was saved without a check. `shortgpt eval org/m --against THIS_FOLDER` "
            "measures both models' perplexity, the fidelity and the quiz.") in card
    assert "| perplexity |" not in card and "measured before the changed weights" not in card
    local = model_card(report, "/home/u/models/SmolLM2-135M")  # named by its folder alone: not a command to run
    assert "`shortgpt eval ORIGINAL_MODEL --against THIS_FOLDER`" in local


def test_imported_scores_card_says_what_they_were_measured_on_and_what_this_job_read() -> None:
    """Scores imported from a file were measured on another job's text: the card names that text and its token
    count, and says when this job read none of its own (no repair, no check) rather than naming an empty text."""
    imported = {"file": "/home/alice/scores.json", "calibration": ["/data/wiki.txt"], "samples": 64, "seq_len": 256,
                "seed": 3, "tokens": 16384}

    def line(**kwargs: object) -> str:
        report = Report(model="m", n_layers=6, removed_layers=[2], scores=[0.1] * 6, scores_imported=imported,
                        **kwargs)
        return next(x for x in model_card(report, "m").splitlines() if x.startswith("- Calibration:"))

    measured = ("- Calibration: layer scores imported from scores.json, measured there on wiki.txt; 64 samples × 256 "
                "tokens, seed 3 (16,384 tokens scored)")
    assert line() == measured + "; this job read no text"
    assert line(calibration=["/data/own.txt"], samples=8, seq_len=32, seed=0) == (
        measured + "; text this job read itself: own.txt (8 samples × 32 tokens, seed 0)")


def test_the_card_carries_the_sources_licence(tiny_model: Path, tmp_path: Path) -> None:
    """A source whose card or GGUF metadata declares a licence: the pruned copy's card dropped it, so the copy
    shared on the Hub showed none. Only a licence id is carried (a value that is not one is left out)."""
    import shutil

    import yaml

    from shortgpt_desktop.core.formats.provenance import source_license
    from shortgpt_desktop.core.model.sources import resolve

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    assert source_license(resolve(str(folder))) == {}
    (folder / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\ntags:\n- chat\n---\n# A model\n",
                                      encoding="utf-8")
    assert source_license(resolve(str(folder))) == {"license": "apache-2.0"}
    (folder / "README.md").write_text('---\nlicense: other\nlicense_name: "gemma"\n'
                                      "license_link: https://ai.google.dev/gemma/terms\n---\n", encoding="utf-8")
    other = source_license(resolve(str(folder)))
    assert other == {"license": "other", "license_name": "gemma", "license_link": "https://ai.google.dev/gemma/terms"}
    (folder / "README.md").write_text("---\nlicense: see the file: {evil}\n---\n", encoding="utf-8")
    assert source_license(resolve(str(folder))) == {}
    # Only the front matter declares: a "license:" line in the card's text, after it or with none, is prose.
    for text in ("# A model\nlicense: mit\n", "---\nlanguage: en\n---\n# A model\nlicense: mit\n"):
        (folder / "README.md").write_text(text, encoding="utf-8")
        assert source_license(resolve(str(folder))) == {}, text
    # A name and a link go with "other" only: beside an id they would contradict it.
    (folder / "README.md").write_text("---\nlicense: mit\nlicense_name: gemma\nlicense_link: LICENSE\n---\n",
                                      encoding="utf-8")
    assert source_license(resolve(str(folder))) == {"license": "mit"}

    report = Report(model="org/name", n_layers=6, removed_layers=[2], scores=[0.1] * 6, license=other)
    front = yaml.safe_load(model_card(report, "org/name").split("---")[1])
    assert front["license"] == "other" and front["license_name"] == "gemma"
    assert front["license_link"] == "https://ai.google.dev/gemma/terms" and front["base_model"] == "org/name"
    assert front["pipeline_tag"] == "text-generation" and "shortgpt" in front["tags"]
    plain = yaml.safe_load(model_card(Report(model="m", n_layers=6, scores=[0.1] * 6), "m").split("---")[1])
    assert "license" not in plain and plain["pipeline_tag"] == "text-generation"


def test_a_gguf_sources_licence_comes_from_its_metadata(tiny_model: Path, tmp_path: Path) -> None:
    import gguf

    from shortgpt_desktop.core.formats.provenance import source_license
    from shortgpt_desktop.core.model.sources import resolve
    from shortgpt_desktop.core.testing.gguf_export import export_gguf

    path = tmp_path / "licensed.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer",
                extra={"general.license": ("apache-2.0", gguf.GGUFValueType.STRING)})
    assert source_license(resolve(str(path))) == {"license": "apache-2.0"}
    export_gguf(tiny_model, tmp_path / "plain.gguf", "llama", tokens="tokenizer")
    assert source_license(resolve(str(tmp_path / "plain.gguf"))) == {}


def test_a_folder_of_the_hub_cache_is_named_by_its_repo() -> None:
    """Given the Hub cache's snapshot folder as a local path, the card's title was the commit hash, with no base
    model; a plain local path still shows its last part only."""
    from shortgpt_desktop.core.report import public_name

    snapshot = "/home/alice/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/" + "a" * 40
    assert public_name(snapshot) == public_name(snapshot + "/") == "HuggingFaceTB/SmolLM2-135M"
    assert public_name(snapshot + "/model.gguf") == "HuggingFaceTB/SmolLM2-135M"
    assert public_name("/home/alice/models/final") == "final"
    card = model_card(Report(model=snapshot, n_layers=6, removed_layers=[2], scores=[0.1] * 6), snapshot)
    assert "base_model: HuggingFaceTB/SmolLM2-135M\n" in card and "# SmolLM2-135M, pruned" in card
    assert "alice" not in card


def test_the_card_names_the_runs_left_unrepaired_and_why() -> None:
    runs = [*chosen_runs(refit=False), {"layers": [7, 7], "note": "the last layer has no kept layer after it"}]
    report = Report(model="m", n_layers=8, removed_layers=[2, 3, 5, 7], kept_layers=[0, 1, 4, 6], repair="linear",
                    repair_runs=runs)
    line = next(line for line in model_card(report, "m").splitlines() if "linear repair" in line)
    assert line.endswith("; not repaired: layer 7: the last layer has no kept layer after it"), line


def test_the_score_table_gives_each_layers_score_and_whether_it_was_removed() -> None:
    report = Report(model="m", n_layers=4, metric="bi", scores=[0.5, 0.125, None, 0.75], removed_layers=[1])
    assert ("| layer | bi | |\n|---|---|---|\n| 0 | 0.5000 | kept |\n| 1 | 0.1250 | removed |\n| 2 | — | kept |\n"
            "| 3 | 0.7500 | kept |\n") in model_card(report, "m")


def test_the_json_report_writes_nan_and_infinity_as_null(tmp_path: Path) -> None:
    """A diverged model's perplexity is infinite and a layer's score can be NaN: ``json.dumps`` writes them as bare
    NaN and Infinity, which strict JSON readers (browsers' JSON.parse, jq) refuse."""
    import json
    import math

    report = Report(model="m", n_layers=3, scores=[0.5, math.nan, 0.25], ppl_before=12.0, ppl_after=math.inf,
                    fidelity={"mean_kl": math.inf, "same_top": 0.5}, other_scores={"ppl": [1.0, -math.inf, 2.0]})
    report.write_json(tmp_path / "report.json")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"), parse_constant=refuse)
    assert data["scores"] == [0.5, None, 0.25] and (data["ppl_before"], data["ppl_after"]) == (12.0, None)
    assert data["fidelity"] == {"mean_kl": None, "same_top": 0.5} and data["other_scores"]["ppl"] == [1.0, None, 2.0]


def test_the_front_matter_names_only_a_hub_base_model_and_the_library_of_the_output_format() -> None:
    import yaml

    def front(report: Report, base_model: str) -> dict:
        return yaml.safe_load(model_card(report, base_model).split("---")[1])

    local = front(Report(model="/home/alice/tiny", n_layers=6), "/home/alice/tiny")
    assert "base_model" not in local and local["library_name"] == "transformers"
    hub = front(Report(model="org/name", n_layers=6, output_format="gguf"), "org/name")
    assert hub["base_model"] == "org/name" and hub["library_name"] == "gguf"


def test_the_card_says_the_healing_steps_their_precision_and_what_the_gguf_re_quantized_after() -> None:
    report = Report(model="m.gguf", n_layers=6, removed_layers=[0], kept_layers=[1, 2, 3, 4, 5], repair="linear",
                    heal_steps=20, heal_losses=[0.5, 0.3], heal_compute_dtype="bfloat16", output_format="gguf",
                    changed_types={"blk.1.ffn_down.weight": ["Q4_0", "Q8_0"]})
    card = model_card(report, "m.gguf")
    assert ("; healed with 20 LoRA steps on the calibration text (distilled from the original, computed in bfloat16), "
            "merged; its loss 0.5 → 0.3\n") in card
    report.heal_losses = [0.00368, 0.00441]  # a loss that rose is said so (the card said "healed" alone)
    assert ("merged; its loss 0.00368 → 0.00441 (not lowered: the healed weights may be no better than the repair's "
            "alone)\n") in model_card(report, "m.gguf")
    assert ("- Format: gguf; re-quantized after repair and healing: layer 2 ffn_down.weight (blk.1 in the pruned "
            "file): Q4_0 → Q8_0\n") in card
    report.heal_steps = 0
    assert "re-quantized after repair: layer 2 ffn_down.weight" in model_card(report, "m.gguf")


def test_up_to_eight_re_quantized_tensors_are_named_one_by_one_and_more_are_summed_up() -> None:
    from shortgpt_desktop.core.report import NAMED_CHANGES, requantized

    kept = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    changed = {f"blk.{i}.ffn_down.weight": ["Q4_0", "Q8_0"] for i in range(NAMED_CHANGES)}
    named = requantized(changed, kept)
    assert NAMED_CHANGES == 8 and len(named) == 8
    assert named[-1] == "layer 8 ffn_down.weight (blk.7 in the pruned file): Q4_0 → Q8_0"
    changed["blk.8.ffn_down.weight"] = ["Q4_0", "Q8_0"]
    assert requantized(changed, kept) == ["9 weights Q4_0 → Q8_0: ffn_down.weight of layers 0–2, 4–9"]


def test_a_source_pruned_before_has_its_layers_counted_in_the_first_originals_numbering_too() -> None:
    report = Report(model="m", n_layers=4, earlier_removed=[0, 5], removed_layers=[1])
    assert ("Removed layers (0-based, numbered as in `m`, which had been pruned before: it lacked layers 0, 5 of its "
            "original): 1. Of the first original's 6 layers, this model lacks 0, 2, 5.") in model_card(report, "m")
    report.earlier_removed = [5]  # "it lacked layers 5"
    assert "which had been pruned before: it lacked layer 5 of its original): 1." in model_card(report, "m")
    # "Repair: none" read as said of the model's whole history, though the earlier job had refitted 4 kept layers
    assert ("- Repair: none (plain layer removal); this job's only: the pruning that made `m` may have repaired or "
            "healed its kept layers, as its own card says\n") in model_card(report, "m")
    report.earlier_removed = []
    assert "- Repair: none (plain layer removal)\n" in model_card(report, "m")


def test_a_path_that_only_looks_like_a_hub_id_is_named_by_its_last_part(tmp_path: Path, monkeypatch) -> None:
    """``org/name`` names a Hub model unless a folder of that name is here; a path with more parts is never one."""
    from shortgpt_desktop.core.report import public_name

    monkeypatch.chdir(tmp_path)
    assert public_name("someone/tiny") == "someone/tiny"
    (tmp_path / "someone" / "tiny").mkdir(parents=True)
    assert public_name("someone/tiny") == "tiny"
    assert public_name("models/someone/final") == "final"


def test_a_hub_models_card_names_its_revision_and_commit_and_a_local_models_neither() -> None:
    hub = Report(model="org/name", n_layers=6, model_revision="dev", model_commit="0123abc")
    assert "were removed from `org/name` at revision `dev` (commit `0123abc`) (" in model_card(hub, "org/name")
    pinned = dataclasses.replace(hub, model_revision="0123abc")  # the commit asked for: said once
    assert "were removed from `org/name` at commit `0123abc` (" in model_card(pinned, "org/name")
    assert "were removed from `tiny` (" in model_card(Report(model="/models/tiny", n_layers=6), "/models/tiny")


def test_the_card_says_how_the_layers_were_chosen_and_which_text_the_perplexity_was_measured_on() -> None:
    report = Report(model="m", n_layers=6, metric="manual", removed_layers=[2], ppl_before=10.0, ppl_after=11.0,
                    eval_tokens=512, eval_text="builtin")
    card = model_card(report, "m")
    assert "1 of 6 decoder layers was removed from `m` () as listed by hand (no scoring)." in card
    # under 1,024 tokens the card says the figure is rough, as the summary does (the shared file lost it)
    assert ("Perplexity measured on 512 tokens of the built-in corpus, the same tokens for both models (fewer than "
            "1,024 tokens: a rough figure, which another text of this length can move by a fifth or more).") in card
    report.eval_text = "/home/alice/test.txt"
    assert "Perplexity measured on 512 tokens of `test.txt`, the same tokens" in model_card(report, "m")
    report.eval_tokens = 1024
    assert "the same tokens for both models.\n" in model_card(report, "m")


def test_only_a_quantized_gguf_saved_as_safetensors_is_said_de_quantized() -> None:
    """An F32 GGUF read "from a F32 GGUF whose weights were de-quantized to float32 (larger…)": neither is true."""
    report = Report(model="m.gguf", n_layers=4, removed_layers=[1], output_format="safetensors", dtype="float32",
                    source_quantization="Q4_1")
    assert ("- Format: safetensors, from a Q4_1 GGUF whose weights were de-quantized to float32 (larger on disk than "
            "the GGUF)\n") in model_card(report, "m.gguf")
    for floats in ("F32", "BF16", "MOSTLY_F16"):
        report.source_quantization = floats
        assert "- Format: safetensors\n" in model_card(report, "m.gguf")


def test_a_file_name_that_is_not_utf8_is_written_to_the_json_as_strict_readers_read_it(tmp_path: Path) -> None:
    """The JSON's calibration held a lone surrogate ("caf\\udce9 notes.txt"), which strict JSON parsers refuse; the
    card already wrote U+FFFD."""
    report = Report(model="m", calibration=["/texts/caf\udce9 notes.txt"], warnings=["Skipped /texts/bin\udce9.dat"])
    report.write_json(tmp_path / "r.json")
    raw = (tmp_path / "r.json").read_bytes()
    assert b"\\udc" not in raw
    data = json.loads(raw.decode("utf-8"))
    assert data["calibration"] == ["/texts/caf\ufffd notes.txt"]
    assert data["warnings"] == ["Skipped /texts/bin\ufffd.dat"]
