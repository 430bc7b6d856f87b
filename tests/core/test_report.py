"""The model card says what the repair did per run, where its ridge was chosen on held-out samples."""

from __future__ import annotations

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
    assert "layers 2-3: 0.1, layers 5-5: no fit did better than none" in line, line
    whole = card_repair_line(refit=False, fit="projection")
    assert "the MLP output projection of 1 kept layer before a run of removed layers refitted in closed form;" \
        in whole, whole
    assert "map" not in whole, whole
    refitted = card_repair_line(refit=True)
    assert "refitted" in refitted and "no layer is changed" not in refitted, refitted


def test_the_card_counts_the_kept_layers_after_the_runs_that_were_refitted() -> None:
    line = card_repair_line(refit=False, fit="projection", after=True)
    assert "the MLP output projection of 1 kept layer before a run of removed layers refitted in closed form; that " \
           "of 1 kept layer after a run refitted the same way;" in line, line
    assert "layers 2-3: 0.1, layers 5-5: no fit did better than none; layer 4 after a run: 0.3; layer 6 after a run: " \
           "no fit did better than none)" in line, line


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
    report = Report(model="m", metric="bi", scores=[0.1] * 6, removed_layers=[1, 2])
    report.n_layers = 6
    report.ppl_before, report.ppl_after, report.eval_tokens = 10.0, 12.5, 2048
    report.fidelity = {"mean_kl": 0.1234, "p99_kl": 1.5, "same_top": 0.8}
    card = model_card(report, "m")
    assert "| layers | 6 | 4 |" in card
    assert "| perplexity | 10.000 | 12.500 |" in card
    assert "mean KL divergence 0.1234 nats per token (99th percentile 1.500)" in card


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
