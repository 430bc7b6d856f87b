"""The command line: a whole job, its JSON report, and one line with exit code 2 for every bad input."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "shortgpt_desktop.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_prune_end_to_end(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    out, report_path = tmp_path / "pruned", tmp_path / "report.json"
    result = run("prune", str(tiny_model), "--calib", str(small_calib), "--samples", "8", "--seq-len", "64",
                 "--ratio", "0.34", "--out", str(out), "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["metric"] == "bi+" and len(report["scores"]) == 6  # the default recipe
    assert len(report["removed_layers"]) == 2
    assert report["ppl_before"] > 1 and report["ppl_after"] > 1
    assert report["tokens"] == 8 * 64 and report["seconds"] > 0
    assert "perplexity:" in result.stdout and "saved to" in result.stdout
    assert f"report written to {report_path.resolve()}" in result.stdout  # no command said where it went
    # The check's quiz, in the report and the summary (a random model knows none of the answers, and says so).
    assert report["quiz"]["asked"] == len(report["quiz"]["answers"]) > 0
    assert any(line in result.stdout for line in ("quiz: the original answers none of the",
                                                   "quiz: the pruned model answers"))
    assert "scoring: [" in result.stderr and "] 8/8 samples" in result.stderr  # the bar, in the unit it counts
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    # bi+ judged its finalists with the very fit the job saves (8 samples): the fit's seconds are the selection's,
    # and the repair step took none (it said "repair": 1.4e-05, the lookup's time)
    assert report["timings"]["repair"] == 0.0 and report["timings"]["repair_within_selection"] > 0


def test_a_repair_fitted_after_the_choice_has_its_own_seconds(tiny_model: Path, small_calib: Path,
                                                              tmp_path: Path) -> None:
    report = tmp_path / "bi.json"
    assert cli.main(["prune", str(tiny_model), "--calib", str(small_calib), "--samples", "4", "--seq-len", "32",
                     "--metric", "bi", "--layers", "2", "--no-eval", "--out", str(tmp_path / "cut"), "--json",
                     str(report), "-q"]) == 0
    timings = json.loads(report.read_text())["timings"]
    assert timings["repair"] > 0 and "repair_within_selection" not in timings


@pytest.mark.parametrize("template", ["{{ raise_exception('System role not supported') }}", "{% if %}"])
def test_a_chat_template_that_fails_leaves_the_prompt_as_raw_text(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                                  template: str,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """A template that raises on a user turn, or does not parse, was a traceback in the check's generation after
    the scoring and the choice (nothing saved); the prompt now goes in as text, as for a base model."""
    import shutil

    model = tmp_path / "tiny-template"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = template
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    report = tmp_path / "report.json"
    assert cli.main(["prune", str(model), "--remove", "2", "--repair", "none", "--calib", str(small_calib),
                     "--samples", "4", "--seq-len", "32", "--eval-windows", "2", "--out", str(tmp_path / "out"),
                     "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["generation_chat_template"] is False and data["generation_before"] is not None
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err
    assert f"report written to {report.resolve()}" in printed.out  # with -q too: the summary's last line


def test_a_model_file_name_that_is_not_utf8_is_saved(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """A GGUF named with a Latin-1 byte (``g\\xe9.gguf``, from an old archive) ran the whole job, then the model
    card could not be written (UnicodeEncodeError, a traceback): the card shows the byte as U+FFFD."""
    from shortgpt_desktop.core.testing.fuzz import write_gguf

    name = os.fsdecode(b"g\xe9.gguf")
    gguf = write_gguf(tiny_model, tmp_path / name)
    out = tmp_path / "out"
    logging.disable(logging.CRITICAL)  # the logs name the file: pytest-xdist cannot send them to its controller
    try:
        assert cli.main(["prune", str(gguf), "--remove", "2", "--repair", "none", "--no-eval", "--calib",
                         str(small_calib), "--samples", "4", "--seq-len", "32", "--out", str(out), "-q"]) == 0
    finally:
        logging.disable(logging.NOTSET)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "g\ufffd" in card and (out / "out.gguf").stat().st_size > 0


def test_an_empty_prompt_leaves_out_the_generation_and_the_quiz(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    """``--prompt ""`` keeps the check's perplexity and fidelity and leaves out its text and quiz (it used to fall
    back to the default prompt, so the quiz could not be turned off); no ``--prompt`` asks both."""
    reports = {}
    for name, extra in (("empty", ["--prompt", ""]), ("default", [])):
        path = tmp_path / f"{name}.json"
        assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--calib", str(small_calib),
                         "--samples", "4", "--seq-len", "32", "--eval-windows", "2", "--out", str(tmp_path / name),
                         "--json", str(path), "-q", *extra]) == 0
        reports[name] = (json.loads(path.read_text()), capfd.readouterr().out)
    (empty, out), (default, default_out) = reports["empty"], reports["default"]
    assert empty["ppl_after"] > 1 and empty["fidelity"]["mean_kl"] >= 0
    assert not empty["quiz"] and empty["generation_before"] is None
    assert "prompt:" not in out and "quiz" not in out
    assert default["quiz"]["asked"] > 0 and default["generation_prompt"]
    assert "prompt:" in default_out


def test_sweep_no_quiz_leaves_out_the_quiz_at_every_count(tiny_model: Path, small_calib: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep --no-quiz`` keeps each point's perplexity and fidelity and asks no quiz (a point asked and known to
    none reads 0 of 0; one not asked reads none); without it every point of the recipe's curve is asked."""
    curves = {}
    for name, extra in (("no quiz", ["--no-quiz"]), ("default", [])):
        path = tmp_path / f"{name}.json"
        assert cli.main(["sweep", str(tiny_model), "--metric", "bi", "--max", "2", "--calib", str(small_calib),
                         "--samples", "4", "--seq-len", "32", "--eval-windows", "2", "--json", str(path),
                         *extra]) == 0
        curves[name] = json.loads(path.read_text())["points"]
        # the whole sweep's time after the scoring pass (each step said only its own time left)
        assert "the whole job: about" in capsys.readouterr().err
    quiet, default = curves["no quiz"], curves["default"]
    assert [p["perplexity"] for p in quiet] == pytest.approx([p["perplexity"] for p in default], rel=1e-6)
    assert all(p["quiz_known"] is None for p in quiet)
    assert all(p["quiz_known"] is not None for p in default)


def test_the_sweeps_reference_order_is_named_for_what_it_is(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """With a metric that gives no BI statistics (reverse, sequential, ppl) the reference curve is that metric's
    own order, unrepaired: it was labelled plain BI in the table, the JSON and the window."""
    path = tmp_path / "curve.json"
    assert cli.main(["sweep", str(tiny_model), "--metric", "reverse", "--max", "2", "--no-quiz", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "--eval-windows", "2", "--json",
                     str(path)]) == 0
    curve = json.loads(path.read_text())
    baseline = curve["baseline"]
    assert baseline["label"] == "reverse" and baseline["order"] == [5, 4]
    # measured on what the curve was, and said to be plain removal (its block said model '' and 0 samples)
    for key in ("model", "calibration", "samples", "seq_len", "seed", "eval_text", "windows", "tokens"):
        assert baseline[key] == curve[key], key
    assert baseline["model"] == str(tiny_model) and baseline["data"].endswith("plain removal, no repair")
    # its passes ran between the curve's: their time is the curve's (it said 0.0 seconds, as if free)
    assert curve["seconds"] > 0 and baseline["seconds"] is None
    assert "plain reverse" in capsys.readouterr().out


def test_the_mlp_refit_is_a_repair_choice_said_in_the_summary(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    """The summary says what the refit did; its bar counts layer runs (the training's steps counted in them)."""
    assert cli.main(["prune", str(tiny_model), "--remove", "2,3", "--repair", "refit", "--no-eval",
                     "--calib", str(small_calib), "--samples", "4", "--seq-len", "32",
                     "--out", str(tmp_path / "out")]) == 0
    out = capfd.readouterr().out
    assert "repaired layers 2-3: a map folded into layer 1" in out, out  # 4 samples: too few for the projection
    assert "then its whole MLP trained (held-out error" in out, out


def test_the_repairs_ridge_chosen_on_held_out_samples_is_said_and_reported(tiny_model: Path, small_calib: Path,
                                                                           tmp_path: Path,
                                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """With 20 calibration samples or more, each run's ridge is chosen on the samples held out of its fit: the
    summary says so (or that no map did better than none) and the report holds the ridge and its residual."""
    report_path = tmp_path / "report.json"
    assert cli.main(["prune", str(tiny_model), "--remove", "2,3", "--no-eval", "--calib", str(small_calib),
                     "--samples", "20", "--seq-len", "32", "--out", str(tmp_path / "out"),
                     "--json", str(report_path)]) == 0
    out = capfd.readouterr().out
    run = json.loads(report_path.read_text())["repair_runs"][0]
    assert run["held_out_residual"] is not None and "ridge" in run
    said = ("chosen on held-out samples" if run["ridge"] is not None
            else "did better than none on held-out calibration samples")
    assert said in out, out
    assert run["fit"] == "projection" and "layer 1's MLP output projection" in out, out  # refitted whole
    after = run["after"]  # and the kept layer after the run, its ridge chosen the same way
    assert after["patched_layer"] == 4 and after["fit"] == "projection" and after["held_out_residual"] is not None
    said = ("layer 4's MLP output projection, after the run, refitted too" if after["ridge"] is not None
            else "layer 4, after the run, unchanged (no refit did better on held-out calibration samples)")
    assert said in out, out


def test_a_run_left_unmapped_by_its_ridge_choice_is_said_so_unless_its_mlp_was_refitted() -> None:
    import io

    from shortgpt_desktop.core.report import Report
    from tests.core.test_report import chosen_runs

    def summary(refit: bool) -> str:
        out = io.StringIO()
        cli.print_summary(Report(model="m", n_layers=8, removed_layers=[2, 3, 5], repair_runs=chosen_runs(refit)),
                          out)
        return out.getvalue()

    plain = summary(refit=False)
    assert "repaired layers 2-3: a map folded into layer 1 (calibration error 0.500 -> 0.400; ridge 0.1, " \
           "chosen on held-out samples)" in plain, plain
    assert "layer 5: no map folded into layer 4 did better than none on held-out calibration samples, so it " \
           "is unchanged (plain removal)" in plain, plain
    refitted = summary(refit=True)
    assert "unchanged" not in refitted, refitted
    assert "then its whole MLP trained (held-out error 0.500 -> 0.300)" in refitted, refitted
    whole = io.StringIO()
    cli.print_summary(Report(model="m", n_layers=8, removed_layers=[2, 3, 5],
                             repair_runs=chosen_runs(False, fit="projection")), whole)
    assert "repaired layers 2-3: layer 1's MLP output projection refitted (calibration error 0.500 -> 0.400; " \
           "ridge 0.1, chosen on held-out samples)" in whole.getvalue(), whole.getvalue()
    assert "layer 5: no refit of layer 4's MLP output projection did better than none" in whole.getvalue()
    both = io.StringIO()
    cli.print_summary(Report(model="m", n_layers=8, removed_layers=[2, 3, 5],
                             repair_runs=chosen_runs(False, fit="projection", after=True)), both)
    assert "ridge 0.1, chosen on held-out samples); layer 4's MLP output projection, after the run, refitted too " \
           "(calibration error 0.600 -> 0.450; ridge 0.3)" in both.getvalue(), both.getvalue()
    assert "so it is unchanged (plain removal); layer 6" in both.getvalue(), both.getvalue()  # neither side fitted
    assert "layer 6, after the run, unchanged (no refit did better on held-out calibration samples)" \
           in both.getvalue(), both.getvalue()


def test_a_refit_the_chat_guard_drops_is_said_and_the_linear_repair_is_saved(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from shortgpt_desktop.core.cut import chat_guard

    # As if the model were a chat model whose answers the refit made less likely (the guard's own tests measure).
    monkeypatch.setattr(chat_guard, "chat_answers", lambda *args, **kwargs: object())
    monkeypatch.setattr(chat_guard, "keep_refits", lambda *args, **kwargs: ([], chat_guard.GuardFigures(2.0, 2.5, 2.0)))
    for repair in ("refit", "linear"):
        assert cli.main(["prune", str(tiny_model), "--remove", "2,3", "--repair", repair, "--no-eval", "--calib",
                         str(small_calib), "--samples", "8", "--seq-len", "32", "--out", str(tmp_path / repair),
                         "--json", str(tmp_path / f"{repair}.json")]) == 0
    out = capfd.readouterr().out
    assert "then its whole MLP trained (held-out error" in out and "refit dropped: the original's chat answers" in out
    refit, linear = (load_file(tmp_path / r / "model.safetensors") for r in ("refit", "linear"))
    assert refit.keys() == linear.keys() and all(torch.equal(refit[k], linear[k]) for k in linear)
    report = json.loads((tmp_path / "refit.json").read_text())
    assert report["repair_runs"][0]["refit_kept"] is False and report["repair"] == "linear"  # what is saved
    assert report["refit_chat"] == {"linear": 2.0, "refit": 2.5, "kept": 2.0}
    card = (tmp_path / "refit" / "README.md").read_text(encoding="utf-8")
    assert ("the MLP refit was not kept: the original's own answers to the answer check's prompts were less likely "
            "with it (loss per answer token 2.000 with the linear repair alone, 2.500 refitted)") in card
    assert ("refit's chat check: the original's answers to the check prompts, loss per answer token 2.000 with the "
            "linear repair, 2.500 refitted, 2.000 as saved") in out


def test_score_and_eval(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    score_json = tmp_path / "score.json"
    assert cli.main(["score", str(tiny_model), "--calib", str(small_calib), "--samples", "4", "--seq-len", "32",
                     "--metric", "relative_magnitude", "--json", str(score_json), "-q"]) == 0
    report = json.loads(score_json.read_text())
    assert report["metric"] == "relative_magnitude" and len(report["scores"]) == 6
    assert report["removed_layers"] == []
    eval_json = tmp_path / "eval.json"
    pruned = tmp_path / "pruned"
    prune_json = tmp_path / "prune.json"
    assert cli.main(["prune", str(tiny_model), "--remove", "2,4", "--out", str(pruned), "-q", "--json",
                     str(prune_json), "--calib", str(small_calib), "--samples", "2", "--seq-len", "32"]) == 0
    assert cli.main(["eval", str(tiny_model), "--against", str(pruned), "--calib", str(small_calib),
                     "--seq-len", "64", "--json", str(eval_json), "-q"]) == 0
    evaluated = json.loads(eval_json.read_text())
    assert evaluated["ppl_before"] > 1 and evaluated["ppl_after"] > 1
    assert evaluated["against"] == str(pruned) and evaluated["eval_text"] is None  # the end of --calib
    # Nothing scored or sampled: no metric or sample count of the estimate's spec is named; the text is, where the
    # windows were cut from its end (with --eval-text it is not, below)
    assert evaluated["metric"] == "" and evaluated["samples"] == 0 and evaluated["calibration"]
    # The check's quiz, asked of the saved copy: the same answers, word for word, as the check's pruned view gave.
    checked_quiz = json.loads(prune_json.read_text())["quiz"]
    assert evaluated["quiz"]["asked"] == checked_quiz["asked"] > 0
    assert evaluated["quiz"]["answers"] == checked_quiz["answers"]
    assert any(a["original"] != a["pruned"] for a in checked_quiz["answers"]), "the cut must change some answer"
    # The pruned copy shares the head: its fidelity to the original is measured on the same tokens, and one
    # layer at a time the numbers are the same.
    assert 0 < evaluated["fidelity"]["same_top"] < 1 and evaluated["fidelity"]["mean_kl"] > 0
    streamed_json = tmp_path / "eval-streamed.json"
    assert cli.main(["eval", str(tiny_model), "--against", str(pruned), "--calib", str(small_calib),
                     "--seq-len", "64", "--json", str(streamed_json), "-q", "--low-memory"]) == 0
    streamed = json.loads(streamed_json.read_text())
    assert streamed["ppl_before"] == pytest.approx(evaluated["ppl_before"], rel=1e-4)
    assert streamed["ppl_after"] == pytest.approx(evaluated["ppl_after"], rel=1e-4)
    assert streamed["fidelity"]["mean_kl"] == pytest.approx(evaluated["fidelity"]["mean_kl"], rel=1e-3)
    assert not streamed["quiz"], "one layer at a time, as in the check, no quiz"


#: A home folder no user here has (``~user`` of an unknown user).
NO_SUCH_HOME = "~no-such-user-shortgpt"


def bad(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_the_score_table_of_bi_plus_says_what_it_shows(tiny_model: Path, small_calib: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """bi+'s column is plain BI and bi+'s search leaves the ends out, but the table said "bi+" and marked nothing: a
    user who passed its lowest rows to --remove removed a layer bi+ keeps. --block-size with a metric that scores one
    layer at a time was ignored without a word."""
    base = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "-q"]
    assert cli.main(["score", str(tiny_model), *base]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:1] == ["layer"])
    rows = out[header + 1:header + 7]
    assert out[header].split() == ["layer", "bi+", "(BI)"]
    assert [row.split()[0] for row in rows if row.endswith("  protected")] == ["0", "5"]
    # it said "bi+ keeps the protected layers", and then a prune took them where plain BI's set measured best
    # what the figures mean, said nowhere but the saved model's card (a command-line walkthrough)
    assert out[header + 7] == "lower = more redundant, removed first, the protected layers apart"
    assert out[header + 8].startswith("bi+ leaves the protected layers out of its search and measures its finalists, "
                                      "plain BI's lowest layers among them, before it removes any")
    # 3 of 4 layers took both ends, which the line denied (a walkthrough): the ends are protected while the others
    # are enough (selection.protected_for)
    assert out[header + 8].endswith("takes a protected one only where plain BI's set measures best, or where so many "
                                    "layers go that the others are too few.")
    assert cli.main(["score", str(tiny_model), "--metric", "bi", *base]) == 0
    assert "protected" not in capsys.readouterr().out
    # a block's score stands on its first layer; the last rows start no whole block
    assert cli.main(["score", str(tiny_model), "--metric", "angular", "--block-size", "3", *base]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:1] == ["layer"])
    assert [row.split()[1] for row in out[header + 5:header + 7]] == ["—", "—"]
    assert out[header + 7] == ("lower = more redundant, removed first; each row is the block of 3 layers starting "
                               "there; — no block of that length starts there (it would run past the last layer)")
    assert cli.main(["score", str(tiny_model), "--metric", "reverse", *base]) == 0  # positions: redundant says nothing
    assert "lower = removed first (an order by position, not a measure)\n" in capsys.readouterr().out
    line = bad(capsys, "score", str(tiny_model), "--metric", "bi", "--block-size", "3", *base)
    assert line.endswith("--block-size scores blocks of layers with --metric angular only, and bi scores each layer "
                         "on its own; leave it out or choose that metric.")


def test_the_report_counts_the_samples_the_text_gave(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A text short of --samples was warned about ("only 24 samples"), and the JSON and the card said the 100 asked."""
    report = tmp_path / "score.json"
    assert cli.main(["score", str(tiny_model), "--calib", str(small_calib), "--samples", "100000", "--seq-len", "32",
                     "--metric", "bi", "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    out = capsys.readouterr().out
    assert f"gives only {data['samples']} samples of 32 tokens" in out
    assert "parameters: 287,552\n" in out  # nothing removed: no "-> 287,552 (100.0%)"
    assert 0 < data["samples"] < 100000 and data["tokens"] <= data["samples"] * 32


def test_fewer_held_out_windows_than_asked_are_said_by_each_job_that_measures_them(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--eval-windows 1000 on a text that gives a few measured those few without a word (only the tokens measured
    hinted at it): prune, eval and sweep say it, their JSON carries it; as many as asked say nothing, and a score,
    which reads no window, says nothing either."""
    sizes = ["--calib", str(small_calib), "--seq-len", "32", "--samples", "4"]

    def said(args: list[str]) -> tuple[list[str], dict]:
        report = tmp_path / "r.json"
        report.unlink(missing_ok=True)
        assert cli.main([*args, *sizes, "--json", str(report), "-q"]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if "windows of at most" in line]
        return lines, json.loads(report.read_text())

    lines, data = said(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--out",
                        str(tmp_path / "cut"), "--eval-windows", "1000"])
    windows = -(-data["eval_tokens"] // 31)  # 31 tokens predicted a window of 32, fewer in the last
    assert 1 < windows < 1000
    expected = (f"The calibration text's held-out end gives only {windows} windows of at most 32 tokens (1,000 asked "
                "for), and perplexity is measured on them; give more calibration text to measure on more.")
    assert lines == [f"warning: {expected}"] and data["warnings"] == [expected]
    lines, data = said(["eval", str(tiny_model), "--eval-windows", "1000"])
    assert lines == [f"warning: {expected}"] and data["warnings"] == [expected]
    lines, data = said(["sweep", str(tiny_model), "--metric", "bi", "--max", "1", "--no-quiz", "--eval-windows",
                        "1000"])
    assert lines[-1] == f"warning: {expected}" and data["warnings"] == [expected]
    assert said(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--out", str(tmp_path / "cut2"),
                 "--eval-windows", str(windows)])[1]["warnings"] == []
    assert said(["score", str(tiny_model), "--metric", "bi", "--eval-windows", "1000"])[1]["warnings"] == []


def test_a_cut_by_hand_checked_on_its_own_text_names_no_calibration(tiny_model: Path, small_calib: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--remove 2 --repair none --eval-text t`` used no calibration text, yet the card named it and its sizes for
    figures any other text gives alike, the job said the check's text "is also calibration text" (the layers were
    neither chosen nor repaired on it), and a short calibration text was refused as too short; with the repair it is
    used, and named."""
    sizes = ["--eval-text", str(small_calib), "--seq-len", "32", "--samples", "100000", "--eval-windows", "2",
             "--prompt", ""]
    short = tmp_path / "short.txt"
    short.write_text("Fifteen tokens only here.", encoding="utf-8")
    assert cli.main(["prune", str(tiny_model), "--calib", str(short), "--remove", "2", "--repair", "none", *sizes,
                     "--out", str(tmp_path / "short"), "-q"]) == 0
    for repair, calibration in (("none", []), ("linear", [str(small_calib)])):
        out, report = tmp_path / repair, tmp_path / f"{repair}.json"
        capsys.readouterr()
        assert cli.main(["prune", str(tiny_model), "--calib", str(small_calib), "--remove", "2", "--repair", repair,
                         *sizes, "--out", str(out), "--json", str(report), "-q"]) == 0
        assert ("is also calibration text" in capsys.readouterr().err) == (repair == "linear")
        data = json.loads(report.read_text())
        card = (out / "README.md").read_text()
        assert [str(Path(c)) for c in data["calibration"]] == calibration
        # "gives only 2,288 samples (100,000 asked for)" was said of text the job never used
        assert any("gives only" in w for w in data["warnings"]) == (repair == "linear"), data["warnings"]
        if repair == "none":
            assert data["samples"] == 0
            assert ("- Calibration: none (the layers were given by hand, and nothing was fitted on text; the check "
                    "read its own text)") in card
        else:
            assert data["samples"] > 0 and f"{data['samples']} samples × 32 tokens" in card


def test_a_check_one_layer_at_a_time_says_what_it_leaves_out(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--low-memory dropped the quiz and cut the text to 8 tokens, in prune and in eval, without a word."""
    sizes = ["--calib", str(small_calib), "--seq-len", "32", "--samples", "4", "--eval-windows", "2"]
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", *sizes, "--low-memory",
                     "--out", str(tmp_path / "cut"), "-q"]) == 0
    assert ("warning: One layer at a time, the check writes 8 tokens of the prompt and asks no quiz: each new token "
            "runs every layer again; run it in memory for the whole check.") in capsys.readouterr().out
    assert cli.main(["eval", str(tiny_model), "--against", str(tmp_path / "cut"), *sizes, "--low-memory", "-q"]) == 0
    assert ("warning: One layer at a time, the check asks no quiz: each new token runs every layer again; run it in "
            "memory for the whole check.") in capsys.readouterr().out
    assert cli.main(["eval", str(tiny_model), "--against", str(tmp_path / "cut"), *sizes, "-q"]) == 0
    assert "One layer at a time" not in capsys.readouterr().out  # in memory: the whole check, and no note
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", *sizes, "--low-memory",
                     "--prompt", "", "--out", str(tmp_path / "quiet"), "-q"]) == 0
    assert "One layer at a time" not in capsys.readouterr().out  # no prompt: neither text nor quiz was asked
    assert cli.main(["sweep", str(tiny_model), "--metric", "bi", "--max", "1", *sizes, "--low-memory", "-q"]) == 0
    assert ("warning: One layer at a time, the curve has no quiz column: each answer would run every layer again for "
            "each token; run it in memory for the quiz.") in capsys.readouterr().out  # gone without a word


def test_a_healed_file_larger_than_the_original_is_said_before_the_healing_runs(
        tiny_q4_gguf: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A healed 4-bit SmolLM2 came to 122 MB from 98 MB, said only after the job, its healing included."""
    from shortgpt_desktop.core import engine as engine_module

    said_at: list[str] = []
    prepare = engine_module.Engine.prepare

    def prepared(self: object, *args: object, **kwargs: object) -> object:  # the repair and healing run in here
        said_at.append(capsys.readouterr().err)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.Engine, "prepare", prepared)
    sizes = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--eval-windows", "1", "--prompt", "",
             "-q"]
    assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "2", "--heal", "2", *sizes,
                     "--out", str(tmp_path / "healed")]) == 0
    out = capsys.readouterr().out
    before = next(line for line in said_at[0].splitlines() if "the saved model will be about" in line)
    said_kb = float(before.split("will be about ")[1].split(" kB,")[0])
    written = int(out.split("healed.gguf: ")[1].split(" = ")[1].split(" bytes")[0].replace(",", ""))
    assert before.startswith("note: the saved model will be about ") and "larger than the original's 404.8 kB" in before
    assert "healing changes nearly every kept weight" in before and "; without --heal it would be at most " in before
    assert abs(said_kb * 1000 - written) < 0.01 * written, (said_kb, written)  # what was written, within 1%
    assert "note: the saved model is 17% larger than the original in this format (404.8 kB)" in out
    # the repair alone changes a few projections: the file stays smaller, and nothing is said
    assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "2", *sizes, "--out", str(tmp_path / "repaired")]) == 0
    assert "will be about" not in said_at[-1] + capsys.readouterr().err


def test_figures_measured_before_weights_were_requantized_are_said_so(tiny_q4_gguf: Path, small_calib: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A repaired 4-bit GGUF writes its refitted weights as Q8_0 after the check measured them in full precision:
    only the card said the file's own figures may differ; the summary and the JSON now do too."""
    sizes = ["--calib", str(small_calib), "--seq-len", "32", "--samples", "8", "--eval-windows", "2", "--prompt", ""]
    for repair in ("linear", "none"):
        report = tmp_path / f"{repair}.json"
        assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "2", "--repair", repair, *sizes,
                         "--out", str(tmp_path / repair), "--json", str(report), "-q"]) == 0
        data, out = json.loads(report.read_text()), capsys.readouterr().out
        said = any("measured before the changed weights were re-quantized" in w for w in data["warnings"])
        assert said == bool(data["changed_types"]) == (repair == "linear")
        # no quiz was asked (no prompt): none is named (one layer at a time a job named the quiz it never asked)
        assert ("warning: This job's perplexity and fidelity were measured before" in out) == said
        assert "quiz" not in out


def test_the_curves_plain_bi_columns_name_their_own_layers_where_they_differ() -> None:
    """Plain BI removed 0, then 0 and 5, beside the recipe's 3, then 2 and 3: only the CSV said so, and the table's
    right-hand columns read as the same layers unrepaired."""
    from shortgpt_desktop.core.measure.sweep import CurvePoint, QualityCurve

    def point(k: int, removed: list[int]) -> CurvePoint:
        return CurvePoint(k, removed[-1] if removed else None, removed, 10.0 + k, 2.3, 100, 1.0, 0.0)

    curve = QualityCurve("bi+ + repair", [3], [point(0, []), point(1, [3]), point(2, [2, 3])], 4, 2000)
    curve.baseline = QualityCurve("bi", [0, 5], [point(0, []), point(1, [0]), point(2, [0, 5])], 4, 2000)
    out = io.StringIO()
    cli.print_curve(curve, out)
    title, header, *rows = out.getvalue().splitlines()
    assert header.endswith("plain bi layers") and [row.split()[-1] for row in rows] == ["-", "0", "0,5"]
    # its own column, apart from "same top" ("same top plain bi layers"), and said to be plain removal: the window's
    # dashed line says "no repair", the table said nothing and the repair's gap read as the metric's
    assert header.split("same top")[-1].startswith("   plain bi layers")
    assert title.endswith("; plain bi beside it, no repair)"), title
    curve.baseline.points = [point(0, []), point(1, [3]), point(2, [2, 3])]  # the same layers: no column
    out = io.StringIO()
    cli.print_curve(curve, out)
    assert "plain bi layers" not in out.getvalue()


def test_a_larger_second_model_is_not_said_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """eval of a pruned model --against its original said "(134.6% kept)"."""
    from shortgpt_desktop.core.report import Report

    out = io.StringIO()
    cli.print_summary(Report(model="small", n_layers=4, params_before=200, params_after=300, against="big"), out)
    assert "parameters: 200 -> 300 (1.50 times as many)\n" in out.getvalue()
    out = io.StringIO()
    cli.print_summary(Report(model="big", n_layers=6, params_before=300, params_after=200, against="small",
                             removed_layers=[1, 2]), out)
    assert "parameters: 300 -> 200 (66.7% kept)\n" in out.getvalue()
    # another model, none of its layers recorded as removed: no pruned copy (a walkthrough: another architecture)
    out = io.StringIO()
    cli.print_summary(Report(model="big", n_layers=6, params_before=300, params_after=200, against="other"), out)
    assert "parameters: 300 -> 200 (66.7% as many)\n" in out.getvalue()


def test_a_model_saved_among_the_texts_is_not_read_as_text_by_the_next_job(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--calib texts --out texts/pruned``: the next job read the saved model's card as calibration text and said its
    weights skipped. The folder of a model this app saved is left out, in one sentence; a README of the user's is
    text as before."""
    texts = tmp_path / "texts"
    (texts / "notes").mkdir(parents=True)
    (texts / "a.txt").write_text(small_calib.read_text())
    (texts / "notes" / "README.md").write_text("---\ntitle: my notes\n---\n" + "Some notes of mine. " * 50)
    for run in (1, 2):
        report = tmp_path / f"{run}.json"
        assert cli.main(["prune", str(tiny_model), "--calib", str(texts), "--remove", "2", "--no-eval", "--samples",
                         "4", "--seq-len", "32", "--out", str(texts / f"pruned{run}"), "--json", str(report),
                         "-q"]) == 0
        data = json.loads(report.read_text())
        assert sorted(Path(c).name for c in data["calibration"]) == ["README.md", "a.txt"]
        left_out = [w for w in data["warnings"] if w.startswith("Left out")]
        assert left_out == ([] if run == 1 else [f"Left out {texts / 'pruned1'}: it holds a model this app saved, "
                                                 "not text."])
        assert not any("Skipped" in w for w in data["warnings"]), data["warnings"]
    capsys.readouterr()


def test_a_saved_model_given_as_the_calibration_folder_is_left_out_in_one_sentence(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--calib *`` run again, with the first output among the names: its card was read as text and its files
    said skipped one by one."""
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--no-eval", "--out",
                     str(tmp_path / "pruned"), "-q"]) == 0
    assert cli.main(["score", str(tiny_model), "--calib", str(tmp_path / "pruned"), "--metric", "bi", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"shortgpt: error: No usable calibration text: left out {(tmp_path / 'pruned').resolve()}: it "
                       "holds a model this app saved, not text.")
    assert cli.main(["score", str(tiny_model), "--calib", str(tmp_path / "pruned"), str(small_calib), "--metric",
                     "bi", "--samples", "4", "--seq-len", "32", "-q"]) == 0
    assert capsys.readouterr().out.count("Left out") == 1


def test_a_sweep_says_what_its_text_gave_short_of_what_was_asked(tiny_model: Path, small_calib: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """prune and score warned of a text short of --samples; the sweep printed its curve without a word."""
    assert cli.main(["sweep", str(tiny_model), "--calib", str(small_calib), "--samples", "100000", "--seq-len", "32",
                     "--metric", "bi", "--max", "1", "--no-quiz", "-q"]) == 0
    out = capsys.readouterr().out
    assert "warning: The calibration text gives only" in out and "(100,000 asked for)" in out


def test_eval_with_its_own_text_does_not_read_the_calibration_text(tiny_model: Path, small_calib: Path,
                                                                     tmp_path: Path) -> None:
    """eval measures on --eval-text and reads no calibration text, but a short --calib was refused ("too short")."""
    short = tmp_path / "short.txt"
    short.write_text("four")
    report = tmp_path / "eval.json"
    assert cli.main(["eval", str(tiny_model), "--calib", str(short), "--eval-text", str(small_calib), "--seq-len",
                     "32", "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["ppl_before"] > 1 and data["calibration"] == [] and data["eval_text"] == str(small_calib)
    # --samples and --seed draw nothing for eval: not offered in its help, still taken from a script that gives them
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "--samples" not in help_text and "--seed" not in help_text and "--seq-len" in help_text
    # its presets are windows to measure on, not a prune's minutes
    quick = cli.defaults.PRESETS["quick"]
    assert f"quick: {quick.eval_windows} held-out windows of {quick.seq_len} tokens" in " ".join(help_text.split())
    assert quick.trade_off not in " ".join(help_text.split())
    assert "tokens per held-out window" in " ".join(help_text.split())  # it said "per sample"
    assert cli.main(["eval", str(tiny_model), "--eval-text", str(small_calib), "--seq-len", "32", "--samples", "3",
                     "--seed", "1", "-q"]) == 0


def test_score_says_and_records_that_an_evaluation_text_changes_its_scores(tiny_model: Path, small_calib: Path,
                                                                           tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``score --eval-text`` reads the calibration text whole (its last 20% is not held out), so its scores differ
    from a run without it, and neither the screen nor the JSON said why: its eval_text was null (a command-line
    walkthrough)."""
    reports = [tmp_path / "plain.json", tmp_path / "whole.json"]
    base = ["score", str(tiny_model), "--calib", str(small_calib), "--samples", "4", "--seq-len", "64"]
    assert cli.main([*base, "--json", str(reports[0])]) == 0
    assert "--eval-text" not in capsys.readouterr().err
    assert cli.main([*base, "--eval-text", "builtin", "--json", str(reports[1])]) == 0
    assert ("note: score measures no held-out perplexity, but --eval-text still changes the scores: the calibration "
            "text is used whole, where without it its last 20% is held out") in capsys.readouterr().err
    plain, whole = (json.loads(r.read_text()) for r in reports)
    assert plain["eval_text"] is None and whole["eval_text"] == "builtin" and plain["scores"] != whole["scores"]
    # a metric that reads no text: nothing changes, and the options of the text are said not to be used
    assert cli.main([*base, "--metric", "reverse", "--eval-text", "builtin", "-q"]) == 0
    err = capsys.readouterr().err
    assert "still changes the scores" not in err and "--seq-len and --eval-text are not used." in err


def test_an_evaluation_text_that_is_also_calibration_text_is_said(tiny_model: Path, small_calib: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--eval-text naming a calibration file (or a file inside a calibration folder) measured the pruned model on the
    text its layers were chosen and repaired on, without a word."""
    import shutil

    folder = tmp_path / "texts"
    folder.mkdir()
    shutil.copy(small_calib, folder / "a.txt")
    # repaired on the calibration text (cut by hand with nothing fitted, the job reads none: not said then, see
    # test_a_cut_by_hand_checked_on_its_own_text_names_no_calibration)
    base = ["prune", str(tiny_model), "--remove", "2", "--repair", "linear", "--samples", "4", "--seq-len", "32",
            "--eval-windows", "2", "--prompt", ""]
    for calib, evaluated in ((small_calib, small_calib), (folder, folder / "a.txt")):
        out = tmp_path / f"out-{calib.name}"
        assert cli.main([*base, "--calib", str(calib), "--eval-text", str(evaluated), "--out", str(out)]) == 0
        err = capsys.readouterr().err
        assert (f"note: The evaluation text {evaluated} is also calibration text: the check measures the pruned "
                "model on text its layers were chosen and repaired on") in err
    other = tmp_path / "other.txt"
    shutil.copy(small_calib, other)  # the same words in another file are not looked for
    assert cli.main([*base, "--calib", str(folder), "--eval-text", str(other), "--out", str(tmp_path / "o3")]) == 0
    assert "is also calibration text" not in capsys.readouterr().err
    # Nor where no cut is measured on it: eval measures the model itself, and prune --no-eval measures nothing
    assert cli.main(["eval", str(tiny_model), "--eval-text", "builtin", "--seq-len", "32", "--eval-windows", "1"]) == 0
    assert cli.main([*base, "--calib", str(small_calib), "--eval-text", str(small_calib), "--no-eval", "--out",
                     str(tmp_path / "o4")]) == 0
    assert "is also calibration text" not in capsys.readouterr().err


def test_bad_inputs_are_one_line_and_write_nothing(
    tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["--calib", str(small_calib), "--samples", "2", "--seq-len", "32", "-q", "--out", str(out)]
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model, corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[:1000])
    unsupported = tmp_path / "t5"
    shutil.copytree(tiny_model, unsupported)
    config = json.loads((unsupported / "config.json").read_text())
    config.update(model_type="t5", architectures=["T5ForConditionalGeneration"])
    (unsupported / "config.json").write_text(json.dumps(config))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\xff" * 500)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    m = str(tiny_model)
    cases = {
        "does not exist": ["prune", str(tmp_path / "missing"), "--ratio", "0.2", *base],
        "no config.json": ["prune", str(no_config), "--ratio", "0.2", *base],
        "truncated": ["prune", str(corrupt), "--ratio", "0.2", *base],
        "T5ForConditionalGeneration": ["prune", str(unsupported), "--ratio", "0.2", *base],
        "No usable calibration text": ["prune", m, "--ratio", "0.2", *base[:1], str(binary), *base[2:]],
        "No usable calibration text ": ["prune", m, "--ratio", "0.2", *base[:1], str(empty), *base[2:]],
        "above 0": ["prune", m, "--ratio", "0", *base],
        "below 1 (got 1.5); for 1.5% write 0.015.": ["prune", m, "--ratio", "1.5", *base],
        "below 1 (got 25); for 25% write 0.25, for 25 layers --layers 25.": ["prune", m, "--ratio", "25", *base],
        "leaves none": ["prune", m, "--layers", "6", *base],
        "The model has only 6 layers; remove at most 5.": ["prune", m, "--layers", "7", *base],  # "7 of 6" read as 7
        "out of range": ["prune", m, "--remove", "1,6", *base],
        "twice": ["prune", m, "--remove", "2,2", *base],
        "no model has that many layers": ["prune", m, "--remove", "99999999999999999999", *base],
        # an empty name was ignored: the report the user asked for was never written
        "--json was given an empty name": ["prune", m, "--ratio", "0.2", *base, "--json", ""],
        "--against was given an empty name": ["eval", m, "--against", " ", *base[:-2]],
        "--revision picks a Hub revision, but": ["prune", m, "--ratio", "0.2", "--revision", "main", *base],
        "names revision abc123 and --revision says v1: give one of them.": [
            "prune", "https://huggingface.co/org/x-GGUF/blob/abc123/x.gguf", "--revision", "v1", "--ratio", "0.2",
            *base],
        "A block of 7 layers does not fit this 6-layer model": ["score", m, "--metric", "angular", "--block-size",
                                                                "7", *base[:-2]],
        "inside it": ["prune", m, "--ratio", "0.2", *base[:-1], str(tiny_model / "sub")],
        "source model's folder": ["prune", m, "--ratio", "0.2", *base[:-1], m],
        "small.gguf names a file, but the output is a folder": [
            "prune", m, "--ratio", "0.2", *base[:-1], str(tmp_path / "small.gguf")],
        "invalid choice": ["prune", m, "--ratio", "0.2", "--metric", "nope", *base],
        # ~user for no such user: Path.expanduser raised RuntimeError, a traceback
        f"{NO_SUCH_HOME}/model does not exist": ["prune", f"{NO_SUCH_HOME}/model", "--ratio", "0.2", *base],
        f"calibration path {NO_SUCH_HOME}/a.txt does not exist": [
            "prune", m, "--ratio", "0.2", *base[:1], f"{NO_SUCH_HOME}/a.txt", *base[2:]],
        # a report over the text the job reads replaced it (exit 0), or over the output made it no model
        "it is the text the job reads": ["prune", m, "--ratio", "0.2", *base, "--json", str(small_calib)],
        "in the output folder": ["prune", m, "--ratio", "0.2", *base, "--json", str(out / "report.json")],
        "give each its own file": ["sweep", m, *base[:-2], "--json", str(tmp_path / "r"), "--csv",
                                   str(tmp_path / "r")],
        f"evaluation text {NO_SUCH_HOME}/b.txt does not exist": [
            "prune", m, "--ratio", "0.2", "--eval-text", f"{NO_SUCH_HOME}/b.txt", *base],
    }
    for expected, argv in cases.items():
        line = bad(capsys, *argv)
        assert expected.strip() in line, (expected, line)
        assert not out.exists(), expected
    assert sorted(p.name for p in tiny_model.iterdir()) == sorted(
        p.name for p in tiny_model.iterdir() if p.name != "sub")


def test_eval_given_the_pruned_model_first_says_the_figures_read_backwards(tiny_model: Path, small_calib: Path,
                                                                           tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`eval pruned --against original`, the order a user types, printed "x0.70" and the original answering "3 of the
    4 questions" the pruned model knew, without a word: the first model is the reference."""
    sizes = ["--calib", str(small_calib), "--seq-len", "32", "--samples", "4", "--eval-windows", "2"]
    cut = tmp_path / "cut"
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", *sizes, "--no-eval",
                     "--out", str(cut), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(cut), "--against", str(tiny_model), *sizes, "-q"]) == 0
    assert (f"note: {cut} is a model this app pruned, with fewer layers than {tiny_model}: the first model is the "
            f"reference, so the figures read backwards; to measure the cut, run shortgpt eval {tiny_model} --against "
            f"{cut} with the other options as given.") in capsys.readouterr().err
    assert cli.main(["eval", str(tiny_model), "--against", str(cut), *sizes, "-q"]) == 0
    assert "read backwards" not in capsys.readouterr().err


def test_eval_against_a_model_of_another_vocabulary_is_one_sentence(tiny_model: Path, small_calib: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The second model is fed the first one's tokens: ids past its vocabulary raised IndexError, a traceback (the
    README's own example compared two models of different vocabularies)."""
    from shortgpt_desktop.core.testing.tiny_models import TINY_LLAMA, build_tiny_model

    small = build_tiny_model(tmp_path / "small-vocab", config_overrides={**TINY_LLAMA, "vocab_size": 300})
    line = bad(capsys, "eval", str(tiny_model), "--against", str(small), "--calib", str(small_calib),
               "--seq-len", "32", "-q")
    assert line.endswith(f"{small} has a vocabulary of 300 tokens and {tiny_model} one of 512: they do not share a "
                         "tokenizer, so they cannot be measured on the same tokens; compare a model with a pruned "
                         "copy of it.")
    # A vocabulary of the same size that maps ids to other tokens (Llama 2 and Mistral): the second model's
    # perplexity was printed for tokens that meant other text to it.
    import shutil

    other = tmp_path / "other-tokens"
    shutil.copytree(tiny_model, other)
    data = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    first, second = list(vocab)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    line = bad(capsys, "eval", str(tiny_model), "--against", str(other), "--calib", str(small_calib),
               "--seq-len", "32", "-q")
    assert line.endswith(f"{other} and {tiny_model} have vocabularies of the same size but not the same tokens: they "
                         "do not share a tokenizer, so they cannot be measured on the same tokens; compare a model "
                         "with a pruned copy of it.")
    pruned = tmp_path / "pruned"  # the same tokens: compared, each model named (given first, the pruned copy was
    # called "the original")
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "--out", str(pruned), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(pruned), "--against", str(tiny_model), "--calib", str(small_calib),
                     "--seq-len", "32", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"fidelity of {tiny_model.name} to pruned (as llama-perplexity --kl-divergence): mean KLD" in out
    assert "original" not in out.replace("  original:", "")  # the generation's label is not printed by eval
    # Each model's size and memory is said, the second (loaded once the first is freed) as "against": the pruned
    # copy's figure alone was printed, where the larger original is what the job needs.
    assert cli.main(["eval", str(pruned), "--against", str(tiny_model), "--calib", str(small_calib),
                     "--seq-len", "32"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith(("model:", "against:"))]
    assert [line.split(":")[0] for line in said] == ["model", "against"], said
    assert "5 layers" in said[0] and "6 layers" in said[1], said


def test_eval_against_names_each_model_in_its_progress(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Given the pruned copy first, its perplexity was drawn as "perplexity, original" and the original's as
    "perplexity, pruned"."""
    pruned = tmp_path / "pruned"
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "--out", str(pruned), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(pruned), "--against", str(tiny_model), "--calib", str(small_calib),
                     "--seq-len", "32"]) == 0
    out, err = capsys.readouterr()
    # The two models' sizes, the pruned copy's first (the summary said neither; the JSON said 0 for both)
    sizes = re.search(r"^parameters: ([\d,]+) -> ([\d,]+) \(", out, re.MULTILINE)
    assert sizes is not None and 0 < int(sizes[1].replace(",", "")) < int(sizes[2].replace(",", "")), out
    # Each model's bars come after its own load: the pruned copy's first, then the original's.
    first, loading, second = err.partition("loading...")[2].partition("loading...")
    assert loading, err
    for labels, part in (("pruned", first), (tiny_model.name, second)):
        assert f"perplexity, {labels}: " in part and f"quiz, {labels}: " in part, err
    assert tiny_model.name not in first and "pruned" not in second and "original" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_while_saving_leaves_no_partial_folder(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, signum: int,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``timeout``, ``kill`` or a closed terminal during the save left a hidden ``.pruned.partial-…`` folder (as big
    as the model) beside the output, removed only by a later save to that name: no handler unwound the job."""
    from shortgpt_desktop.core.formats import safetensors_writer as saving

    real = saving.write_sharded

    def stopped_part_way(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # the weights are on disk in the temporary folder
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs at once; this is never reached

    monkeypatch.setattr(saving, "write_sharded", stopped_part_way)
    before = signal.getsignal(signum)
    code = cli.main(["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "--out", str(tmp_path / "pruned"), "-q"])
    assert code == 128 + signum
    assert capsys.readouterr().err.strip().endswith(f"stopped by {signal.Signals(signum).name}; nothing was written.")
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder
    assert signal.getsignal(signum) == before  # the handler that was there is back


def test_ctrl_c_exits_130_and_leaves_no_output(tiny_model: Path, valid_text: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shortgpt_desktop.cli", "prune", str(tiny_model), "--calib", str(valid_text),
         "--samples", "100000", "--seq-len", "256", "--batch-size", "1", "--metric", "ppl", "--ratio", "0.3",
         "--repair", "none", "--out", str(out)],  # no repair: its streams of 100,000 samples would not fit
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
        # As from a terminal: a test run started in the background by a script inherits SIGINT ignored, and
        # Python then installs no Ctrl-C handler in the child, so the signal would be dropped.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline and "scoring" not in seen:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "scoring" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "said", "code"), [("SIGINT", "cancelled", 130), ("SIGTERM", "stopped", 143)])
def test_signals_that_come_while_the_first_one_unwinds_leave_one_sentence_and_its_exit_code(
        tiny_model: Path, small_calib: Path, tmp_path: Path, name: str, said: str, code: int) -> None:
    """Three Ctrl-Cs 10 ms apart printed a traceback once in about 13 tries: the second came inside the first one's
    unwinding. Here the second and third come exactly there, as the first one's sentence is being said; a stop
    signal (``kill``, ``timeout``) likewise."""
    driver = ("import os, signal, sys, time\n"
              "import shortgpt_desktop.jobs as jobs\n"
              "from shortgpt_desktop.cli import entry\n"
              "def job(*args, **kwargs):\n"  # the first Ctrl-C comes while the job runs
              f"    os.kill(os.getpid(), signal.{name})\n"
              "    time.sleep(5)\n"
              "jobs.run_score = job\n"
              "class Err:\n"
              "    def __init__(self, real):\n"
              "        self.real = real\n"
              "    def write(self, text):\n"
              f"        if '{said}' in text:\n"
              f"            os.kill(os.getpid(), signal.{name})\n"
              f"            os.kill(os.getpid(), signal.{name})\n"
              "        return self.real.write(text)\n"
              "    def __getattr__(self, name):\n"
              "        return getattr(self.real, name)\n"
              "sys.stderr = Err(sys.stderr)\n"
              "sys.argv = ['shortgpt', *sys.argv[1:]]\n"
              "entry()\n")
    result = subprocess.run([sys.executable, "-c", driver, "score", str(tiny_model), "--calib", str(small_calib),
                             "--samples", "2", "--seq-len", "16", "--metric", "bi"],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(said) == 1, result.stderr
    # each further one is said: a Hub download finishing its files before it stops was minutes of silence
    assert result.stderr.count("still stopping: what was running finishes its step first") == 2, result.stderr


def test_signals_once_the_model_is_in_place_leave_it_saved_and_its_report_written(
        tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """A Ctrl-C just after the finished model was moved into place (its folder synced, the summary or the report being
    written) said "cancelled; nothing was written" and exited 130, with the new model in place (an earlier output
    replaced) and no report: a walkthrough, 5 times in about 80 tries. The job is done there: it ends as saved."""
    out, report = tmp_path / "out", tmp_path / "prune.json"
    driver = ("import os, signal, sys\n"
              "import shortgpt_desktop.core.formats.output_folder as of\n"
              "from shortgpt_desktop.cli import entry\n"
              "sync = of._sync_folder\n"
              "def interrupted(folder):\n"  # each sync once the model is in: its folder's, then the report's
              "    if of.an_output_is_in_place():\n"
              "        os.kill(os.getpid(), signal.SIGINT)\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "    sync(folder)\n"
              "of._sync_folder = interrupted\n"
              "sys.argv = ['shortgpt', *sys.argv[1:]]\n"
              "entry()\n")
    result = subprocess.run([sys.executable, "-c", driver, "prune", str(tiny_model), "--calib", str(small_calib),
                             "--samples", "2", "--seq-len", "16", "--remove", "2", "--repair", "none", "--no-eval",
                             "--out", str(out), "--json", str(report)],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 0, result.stderr
    assert "saved to" in result.stdout and "cancelled" not in result.stderr and "stopped" not in result.stderr
    assert (out / "config.json").is_file() and json.loads(report.read_text())["output"] == str(out)


def test_a_summary_the_terminal_cannot_take_leaves_the_report_written(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal closed once the model was in place (SIGHUP no longer cancels there): printing the summary failed,
    the command ended with a traceback, and the report was not written (a review)."""
    def closed(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli, "print_summary", closed)
    report = tmp_path / "scores.json"
    assert cli.main(["score", str(tiny_model), "--calib", str(small_calib), "--samples", "2", "--seq-len", "16",
                     "--metric", "bi", "--json", str(report), "--quiet"]) == 0
    assert json.loads(report.read_text())["scores"]


def test_a_ctrl_c_once_the_job_has_ended_leaves_its_exit_code(tiny_model: Path, small_calib: Path,
                                                             tmp_path: Path) -> None:
    """Python's teardown after a job (freeing the model and torch, about a second) is not the job: a Ctrl-C there
    made the exit 130, "cancelled", after "saved to" and "report written to", with every file complete. Here the
    Ctrl-C comes as the command exits, after its report, and again as Python frees the modules, after it has put
    the signals' defaults back: there it killed the process (a walkthrough's shell saw 130 after "saved to")."""
    report = tmp_path / "scores.json"
    driver = ("import atexit, os, signal, sys, time\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.3)))\n"
              "class FreedLast:\n"  # freed with __main__'s names, once the signal defaults are back
              "    def __del__(self):\n"
              "        for name in ('SIGINT', 'SIGTERM'):\n"
              "            os.kill(os.getpid(), getattr(signal, name))\n"
              "        time.sleep(0.3)\n"
              "freed_last = FreedLast()\n"
              "from shortgpt_desktop.cli import entry\n"
              "sys.argv = ['shortgpt', *sys.argv[1:]]\n"
              "entry()\n")
    result = subprocess.run([sys.executable, "-c", driver, "score", str(tiny_model), "--calib", str(small_calib),
                             "--samples", "4", "--seq-len", "32", "--metric", "bi", "--json", str(report)],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 0 and "KeyboardInterrupt" not in result.stderr, result.stderr
    assert "report written to" in result.stdout and json.loads(report.read_text())["n_layers"] == 6


def test_what_the_config_and_files_can_tell_is_refused_before_loading(
    tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each of these used to cost a full model load (1-2 minutes on a real model) before the sentence came."""
    from shortgpt_desktop.core import engine

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(engine, "open_backend", no_loading)
    binaries = tmp_path / "binaries"
    binaries.mkdir()
    (binaries / "a.bin").write_bytes(b"\x00" * 10)
    (binaries / "b.png").write_bytes(b"\x89PNG" + b"\x00" * 10)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    bert = tmp_path / "bert"
    shutil.copytree(tiny_model, bert)
    config = json.loads((bert / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertModel"])
    (bert / "config.json").write_text(json.dumps(config))
    gguf_folder = tmp_path / "saved"  # where a GGUF prune saves: the model is the file inside
    gguf_folder.mkdir()
    (gguf_folder / "pruned.gguf").write_bytes(b"GGUF")
    m, calib = str(tiny_model), ["--calib", str(small_calib)]
    out = ["--out", str(tmp_path / "out"), "-q"]
    cases = {
        "binary data, not text (and 1 more file skipped)":
            ["prune", m, "--ratio", "0.3", "--calib", str(binaries), *out],
        "out of range": ["prune", m, "--remove", "1,40", *calib, *out],
        "leaves none": ["prune", m, "--layers", "6", *calib, *out],
        "holds no model but other files (keep.txt)": ["prune", m, "--ratio", "0.3", *calib, "--out", str(full), "-q"],
        "encoder model": ["prune", str(bert), "--ratio", "0.3", *calib, *out],
        "does not exist": ["prune", str(Path("models") / "nope.gguf"), "--ratio", "0.3", *calib, *out],
        "counted from 0": ["prune", m, "--remove=-1", *calib, *out],
        "but --remove names them": ["prune", m, "--remove", "2,3", "--metric", "angular", *calib, *out],
        "The evaluation text": ["prune", m, "--ratio", "0.3", *calib, *out, "--eval-text", "nope-eval.txt"],
        # report files that cannot be written, found before the job (they were found after it, the summary lost)
        "is a file, not a folder": ["prune", m, "--ratio", "0.3", *calib, *out, "--json",
                                    str(small_calib / "r.json")],
        "it is a folder": ["sweep", m, *calib, "-q", "--csv", str(tmp_path)],
        # a report over the model: --json model/config.json replaced the source's config with the report
        "inside the folder of the model": ["prune", m, "--ratio", "0.3", *calib, *out, "--json",
                                           str(Path(m) / "config.json")],
        "the model's own file": ["eval", m, *calib, "--against", str(gguf_folder / "pruned.gguf"), "--json",
                                 str(gguf_folder / "pruned.gguf"), "-q"],
        # eval's second model, found before the first one's passes run
        # a folder of one GGUF is that file, read as such (here a stub)
        "pruned.gguf is incomplete or corrupt": ["eval", m, *calib, "--against", str(gguf_folder), "-q"],
        "nope-pruned": ["eval", m, *calib, "--against", str(tmp_path / "nope-pruned"), "-q"],
        # a name too long for the file system: a traceback, before the job for --calib, after it for --json
        "r.json: file name too long": ["prune", m, "--ratio", "0.3", *calib, *out, "--json",
                                       str(tmp_path / ("r" * 300 + ".json"))],
        "c.csv: file name too long": ["sweep", m, *calib, "-q", "--csv", str(tmp_path / ("c" * 300 + ".csv"))],
        "t.txt cannot be read (file name too long)": ["score", m, "--calib", str(tmp_path / ("t" * 300 + ".txt")),
                                                      "-q"],
        "e.txt cannot be read (file name too long)": ["eval", m, "--eval-text", str(tmp_path / ("e" * 300 + ".txt")),
                                                      "-q"],
    }
    if sys.platform.startswith("linux"):
        # found after the job, its model saved and exit 2: /proc takes no file, and standard output through a pipe
        # (/dev/stdout there) resolved to a name that is not there ("Cannot write /proc/9993/fd/pipe:[18879]")
        cases["/proc cannot be written"] = ["prune", m, "--ratio", "0.3", *calib, *out, "--json", "/proc/r.json"]
        read_end, write_end = os.pipe()
        cases["not a regular file (a device, a pipe"] = ["prune", m, "--ratio", "0.3", *calib, *out, "--json",
                                                         f"/proc/self/fd/{write_end}"]
    for expected, argv in cases.items():
        line = bad(capsys, *argv)
        assert expected in line, (expected, line)
    if sys.platform.startswith("linux"):
        os.close(read_end)
        os.close(write_end)
    # --force would refuse a folder of the user's files too: it is not offered (it was, then refused)
    assert "--force" not in bad(capsys, *cases["holds no model but other files (keep.txt)"])
    assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "out").exists()


def test_ratio_rounds_down_and_says_so(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["prune", str(tiny_model), "--ratio", "0.4", "--calib", str(small_calib), "--samples", "4",
                     "--seq-len", "32", "--no-eval", "-q", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "removed 2 of 6 layers" in out and "33%" in out  # 0.4 × 6 = 2.4: two layers, never three


def test_reports_to_a_path_that_cannot_be_written_are_one_line(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep --json/--csv`` and ``score --json`` to a folder, or below a file: exit 2, one sentence, before the job.
    A missing folder is made, as ``--out``'s is (it was refused, where ``--out`` in the same place was not)."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("notes")
    common = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--eval-windows", "1", "-q"]
    for flag in ("--json", "--csv"):
        error = bad(capsys, "sweep", str(tiny_model), "--max", "1", flag, str(folder), *common)
        assert error.startswith("shortgpt: error: Cannot write") and "it is a folder" in error
    error = bad(capsys, "score", str(tiny_model), "--json", str(a_file / "r.json"), *common)
    assert error == f"shortgpt: error: Cannot write {a_file / 'r.json'}: {a_file} is a file, not a folder."
    # A folder not there yet, named with a trailing slash: a file named "reports" was written after the job
    for command, flag, given, name in (("score", "--json", "/", "report.json"), ("sweep", "--csv", "//", "report.csv"),
                                       ("score", "--json", "/.", "report.json")):
        error = bad(capsys, command, str(tiny_model), flag, f"{tmp_path / 'reports'}{given}", *common)
        said = f"{tmp_path / 'reports'}" + ("/." if given == "/." else "")
        assert error == (f"shortgpt: error: Cannot write {tmp_path / 'reports'}{given}: it names a folder; give a "
                         f"file name, such as {said}/{name}."), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"] and not any(folder.iterdir())
    report = tmp_path / "reports" / "june" / "r.json"
    assert cli.main(["score", str(tiny_model), "--json", str(report), *common]) == 0
    assert json.loads(report.read_text())["n_layers"] == 6 and list(report.parent.iterdir()) == [report]


def test_a_report_replaces_only_an_earlier_report_and_never_a_read_only_file(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep --csv wiki.test.txt`` (meant for ``--eval-text``) replaced the user's file with the curve, read-only or
    not: ``--out`` asks for ``--force``, and a report path asked nothing. An existing file is replaced only where it
    is an earlier report of this tool, or empty; never where it is read-only (``os.replace`` needs only the folder's
    permission). Refused before the job, in one sentence, the file unchanged."""
    common = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--eval-windows", "1", "-q"]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a report\n", encoding="utf-8")
    for command, flag in (("sweep", "--csv"), ("sweep", "--json"), ("score", "--json")):
        extra = ["--max", "1"] if command == "sweep" else []
        error = bad(capsys, command, str(tiny_model), *extra, flag, str(notes), *common)
        assert error == (f"shortgpt: error: Cannot write {notes}: the file exists and is not a report of this tool; "
                         "choose another name, or delete it first.")
    assert notes.read_text(encoding="utf-8") == "my notes, not a report\n"
    report, curve, table = tmp_path / "r.json", tmp_path / "c.json", tmp_path / "c.csv"
    table.write_text("", encoding="utf-8")  # an empty file: made by touch, nothing to lose
    for _ in range(2):  # the same command again replaces its own reports
        assert cli.main(["score", str(tiny_model), "--json", str(report), *common]) == 0
        assert cli.main(["sweep", str(tiny_model), "--max", "1", "--json", str(curve), "--csv", str(table),
                         *common]) == 0
    assert json.loads(report.read_text())["n_layers"] == 6 and json.loads(curve.read_text())["points"]
    assert table.read_text().startswith("k,layer,removed,")
    report.chmod(0o444)
    error = bad(capsys, "score", str(tiny_model), "--json", str(report), *common)
    assert error == f"shortgpt: error: Cannot write {report}: the file is read-only; choose another name."


def test_a_report_replaces_only_an_earlier_report_of_its_own_kind(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep --csv curve.json`` replaced the curve's JSON with its table, and ``score --json`` replaced the report
    of a prune, the record of where a model was saved: any report of this tool could be replaced by any other."""
    common = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--eval-windows", "1", "-q"]
    saved = {"model": "tiny", "n_layers": 6, "removed_layers": [2], "output": "pruned", "metric": "bi+"}
    files = {"saved.json": json.dumps(saved), "score.json": json.dumps({**saved, "output": None}),
             "eval.json": json.dumps({**saved, "output": None, "metric": ""}),
             "curve.json": json.dumps({"label": "bi+", "order": [2], "points": []}),
             "curve.csv": "k,layer,removed,perplexity\n0,,,12.5\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    for command, flag, name, held, wrote in (
            ("sweep", "--csv", "curve.json", "a quality curve's JSON report", "a quality curve's table"),
            # "it holds a quality curve's table, which this would replace with a quality curve" (a walkthrough)
            ("sweep", "--json", "curve.csv", "a quality curve's table", "a quality curve's JSON report"),
            ("score", "--json", "curve.json", "a quality curve's JSON report", "the scores of a score job"),
            ("score", "--json", "saved.json", "the report of a saved model", "the scores of a score job"),
            ("eval", "--json", "saved.json", "the report of a saved model", "the report of an evaluation"),
            # prune --json eval.json replaced the evaluation without a word; score and eval replaced each other's
            ("prune", "--json", "eval.json", "the report of an evaluation", "the report of a saved model"),
            ("prune", "--json", "score.json", "the scores of a score job", "the report of a saved model"),
            ("score", "--json", "eval.json", "the report of an evaluation", "the scores of a score job"),
            ("eval", "--json", "score.json", "the scores of a score job", "the report of an evaluation")):
        extra = {"sweep": ["--max", "1"], "prune": ["--layers", "1", "--out", str(tmp_path / "no")]}.get(command, [])
        path = tmp_path / name
        assert bad(capsys, command, str(tiny_model), *extra, flag, str(path), *common) == (
            f"shortgpt: error: Cannot write {path}: it holds {held}, which this would replace with {wrote}; "
            "choose another name.")
    assert all((tmp_path / name).read_text(encoding="utf-8") == text for name, text in files.items())
    assert not (tmp_path / "no").exists()  # refused before the job
    # each command replaces its own kind: prune's report of an earlier save, eval's evaluation
    for _ in range(2):
        assert cli.main(["prune", str(tiny_model), "--layers", "1", "--metric", "bi", "--repair", "none", "--no-eval",
                         "--out", str(tmp_path / "out"), "--force", "--json", str(tmp_path / "saved.json"),
                         *common]) == 0
        assert cli.main(["eval", str(tiny_model), "--json", str(tmp_path / "eval.json"), *common]) == 0
    assert json.loads((tmp_path / "saved.json").read_text())["output"] == str(tmp_path / "out")
    assert json.loads((tmp_path / "eval.json").read_text())["metric"] == ""


def test_the_curves_files_say_what_it_was_measured_on_and_the_csv_has_plain_bis_kl(
        tiny_model: Path, small_calib: Path, test_text: Path, tmp_path: Path) -> None:
    """``sweep --json`` named no model, text, sizes or seed (``prune --json`` does), and the CSV left out the
    plain-BI curve's mean KL, which the JSON has."""
    curve_json, curve_csv = tmp_path / "c.json", tmp_path / "c.csv"
    assert cli.main(["sweep", str(tiny_model), "--max", "2", "--calib", str(small_calib), "--eval-text",
                     str(test_text), "--samples", "4", "--seq-len", "32", "--eval-windows", "1", "--seed", "3",
                     "--json", str(curve_json), "--csv", str(curve_csv), "-q"]) == 0
    data = json.loads(curve_json.read_text())
    assert (data["model"], data["calibration"], data["eval_text"]) == (str(tiny_model), [str(small_calib)],
                                                                      str(test_text))
    assert (data["samples"], data["seq_len"], data["seed"]) == (4, 32, 3)
    # where, as prune's and score's JSON say it (a command-line walkthrough)
    assert (data["version"], data["device"], data["dtype"]) == (cli.__version__, "cpu", "float32")
    rows = list(csv.DictReader(curve_csv.open()))
    assert [float(r["baseline_mean_kl"]) for r in rows] == [p["mean_kl"] for p in data["baseline"]["points"]]


def test_progress_counters_say_the_unit_they_count() -> None:
    from shortgpt_desktop.core.progress import counts_layers, stage_unit

    assert "scoring: [" in cli.progress_text("scoring", 29, 29, 1.0)
    assert cli.progress_text("scoring", 29, 29, 1.0).split("]")[1].startswith(" 29/29 samples")
    per_layer = stage_unit("scoring", counts_layers("scoring", streamed=True, metric="bi+"))
    assert " 24/24 layers" in cli.progress_text("scoring", 24, 24, 1.0, per_layer)
    assert counts_layers("scoring", streamed=False, metric="ppl") and not counts_layers("scoring", False, "bi")
    assert not counts_layers("repair", True, "bi")
    # A perplexity pass counts each kept layer over all the windows, then the head, on either backend.
    for streamed in (False, True):
        unit = stage_unit("ppl_before", counts_layers("ppl_before", streamed, "bi"))
        assert " 31/31 steps" in cli.progress_text("ppl_before", 31, 31, 1.0, unit)
    assert cli.progress_text("ppl_both", 31, 31, 1.0).startswith("perplexity, original and pruned: [")
    assert "10/10 passes" in cli.progress_text("selecting", 10, 10, 1.0)
    # The curve measures the recipe and plain BI at each count: 30 for 15 counts, which "30/30 points" misread.
    assert " 30/30 measurements" in cli.progress_text("sweep", 30, 30, 1.0)
    assert "refitting the MLPs beside the cuts: [" in cli.progress_text("refit", 3, 40, 1.0)
    assert " 3/40 layer runs" in cli.progress_text("refit", 3, 40, 1.0)
    assert cli.progress_text("load", 0, 1, 0.5).startswith("loading...")


def test_the_curve_table_has_a_quiz_column_only_where_the_quiz_was_asked() -> None:
    import io

    from shortgpt_desktop.core.measure.sweep import CurvePoint, QualityCurve

    points = [CurvePoint(0, None, [], 10.0, 2.3, 100, 1.0, 0.0, 9, 9), CurvePoint(1, 4, [4], 12.0, 2.5, 100, 0.8, 0.2,
                                                                                  5, 9)]
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 4, 1100, data="held-out windows (the check's)"), out)
    title, header, first, second = out.getvalue().splitlines()
    assert header.split()[-1] == "quiz" and first.split()[-1] == "9/9" and second.split()[-1] == "5/9"
    # The windows said once (it said "on 4 held-out windows, 100 tokens; held-out windows (the check's)"), one in
    # number
    assert title == ("quality curve (bi+ + repair; perplexity and same top token vs the original on 4 held-out "
                     "windows (the check's), 1,100 tokens)")
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 1, 100, data="held-out windows (the check's)"), out)
    assert ("on 1 held-out window (the check's), 100 tokens; few for a steady figure: another text of this length can "
            "move it by a fifth or more; a larger --eval-windows gives a steadier one)") in out.getvalue()
    # Where the text gave fewer windows than asked, more windows would measure no more: more text would.
    fewer = ("The evaluation text t.txt gives only 1 window of at most 256 tokens (64 asked for), and perplexity is "
             "measured on it; give a longer evaluation text to measure on more.")
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 1, 100, data="held-out windows (the check's)",
                                 eval_text="t.txt", warnings=[fewer], text_ran_out=True), out)
    assert "by a fifth or more; give a longer evaluation text)" in out.getvalue()
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 2, 100, data="text of its own"), out)
    assert "on 2 held-out windows (text of its own), 100 tokens; few for a steady figure" in out.getvalue()
    # an evaluation text's windows are not "held out" (it may be the calibration text itself; a walkthrough)
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 4, 1100, eval_text="/texts/small.txt",
                                 data="windows of the evaluation text (the check's)"), out)
    assert "vs the original on 4 windows of small.txt (the check's), 1,100 tokens)" in out.getvalue()
    for point in points:
        point.quiz_kept, point.quiz_known = 0, 0  # asked, and the original answers none: said, not left out unsaid
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 4, 100), out)
    assert out.getvalue().splitlines()[1].split()[-1] == "top"  # no quiz column
    assert "quiz: the original answers none of the questions right, so it says nothing of these cuts\n" in \
        out.getvalue()
    for point in points:
        point.quiz_kept = point.quiz_known = None
    out = io.StringIO()
    cli.print_curve(QualityCurve("bi+ + repair", [4], points, 4, 100), out)
    assert "quiz" not in out.getvalue()


def test_the_curve_table_marks_the_points_not_wholly_repaired_and_fits_long_layer_lists() -> None:
    import io

    from shortgpt_desktop.core.measure.sweep import CurvePoint, QualityCurve

    note = "layer 0 not repaired: the run starts at layer 0, so no kept layer comes before it to refit"
    many = list(range(1, 15))  # 14 layers: "1,2,...,14" is 32 characters, past the column's 24
    points = [CurvePoint(0, None, [], 10.0, 2.3, 100, 1.0, 0.0), CurvePoint(1, 0, [0], 12.0, 2.5, 100, 0.8, 0.2,
                                                                           not_repaired=[note]),
              CurvePoint(14, None, many, 90.0, 4.5, 100, 0.3, 2.0)]
    out = io.StringIO()
    cli.print_curve(QualityCurve("sequential + repair", [0], points, 4, 1100), out)
    lines = out.getvalue().splitlines()
    header, rows = lines[1], lines[2:5]
    assert rows[1].split()[1] == "0*" and "*" not in rows[0] + rows[2]
    assert rows[2].split()[1] == ",".join(map(str, many))
    # every row's perplexity ends where the header's does
    end = header.index("perplexity") + len("perplexity")
    assert all(row[end - 6: end] in ("10.000", "12.000", "90.000") for row in rows)
    assert lines[-1] == ("*: part of the cut not repaired (the run starts at layer 0, so no kept layer comes before "
                         "it to refit)")
    # a baseline's heading wider than its figures ("plain relative_magnitude"): they end where it ends
    plain = QualityCurve("relative_magnitude", [5], [CurvePoint(0, None, [], 10.0, 2.3, 100, 1.0, 0.0),
                                                      CurvePoint(1, 5, [5], 15.0, 2.5, 100, 0.7, 0.2)], 4, 100)
    out = io.StringIO()
    cli.print_curve(QualityCurve("relative_magnitude + repair", [0], points[:2], 4, 100, baseline=plain), out)
    header, row = out.getvalue().splitlines()[1], out.getvalue().splitlines()[3]
    end = header.index("plain relative_magnitude") + len("plain relative_magnitude")
    assert row[end - 6: end] == "15.000"


def test_the_time_left_counts_from_where_a_stage_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    """bi+'s selection stops for the chat answers its repair needs and resumes at 74 of 92 passes: the pace after
    it is one pass in 11 s, not 75 passes in 11 s ("about 2.5 s left" for three more minutes)."""
    import io

    assert "about 3 min 07 s left" in cli.progress_text("selecting", 75, 92, 11.0, since=74)
    clock = iter([300.0, 300.0, 320.0, 320.0, 331.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    for stage, done, total in (("selecting", 74, 92), ("answers", 0, 64), ("answers", 64, 64),
                               ("selecting", 74, 92), ("selecting", 75, 92)):
        bar(stage, done, total)
    assert stream.getvalue().splitlines()[-1].endswith("about 3 min 07 s left"), stream.getvalue()


def test_a_stage_another_one_interrupted_resumes_with_its_own_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """bi+'s choice, 50 of 100 passes in 100 s, waits 300 s for the chat answers and resumes: its line said 0.0s and
    its pace came from the seconds since it resumed (about 7 min left after one pass, then 3 min 30 s). Its clock
    counts the 100 s it ran, not the answers' 300 s; a stage counting again from below where it stood starts
    afresh."""
    import io

    clock = iter([0.0, 100.0, 100.0, 400.0, 400.0, 406.0, 500.0, 510.0])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    for stage, done, total in (("selecting", 0, 100), ("selecting", 50, 100), ("answers", 0, 64),
                               ("answers", 64, 64), ("selecting", 50, 100), ("selecting", 51, 100)):
        bar(stage, done, total)
    lines = stream.getvalue().splitlines()
    assert lines[-2].startswith("checking candidates: [") and "50/100 passes  100.0s" in lines[-2], lines
    assert lines[-1].endswith("51/100 passes  106.0s, about 1 min 41 s left"), lines  # 106 s for 51, 49 to go
    bar("answers", 0, 64)  # interrupts at 51, then the choice counts again from 0: a new run
    bar("selecting", 0, 100)
    assert stream.getvalue().splitlines()[-1].endswith("0/100 passes    0.0s"), stream.getvalue()


def test_a_run_starting_at_layer_0_says_not_repaired_once(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["prune", str(tiny_model), "--remove", "0,3", "--no-eval", "--calib", str(small_calib),
                     "--samples", "4", "--seq-len", "32", "--out", str(tmp_path / "out")]) == 0
    out = capfd.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("not repaired, layer 0: "))
    assert line.count("not repaired") == 1 and "removed 2 of 6 layers (33% of them): 0,3" in out
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert card.count("not repaired") == 1


def test_a_refit_a_family_cannot_have_is_said(tiny_family, small_calib: Path, tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """OPT's MLP is not one module: --repair refit kept the linear repair alone, and nothing said so (the README
    promises it does)."""
    from shortgpt_desktop.core.cut.mlp_refit import NOTE_NO_MLP_MODULE

    report = tmp_path / "opt.json"
    assert cli.main(["prune", str(tiny_family("opt")), "--remove", "2", "--repair", "refit", "--no-eval", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "--out", str(tmp_path / "out"),
                     "--json", str(report)]) == 0
    assert f"warning: {NOTE_NO_MLP_MODULE}" in capfd.readouterr().out
    saved = json.loads(report.read_text())
    assert saved["warnings"] == [NOTE_NO_MLP_MODULE] and saved["repair"] == "linear"  # what is saved


def test_output_in_a_legacy_encoding_is_written_not_a_traceback() -> None:
    """A Windows console or a redirected file in cp1252: the help's '−' and '‖', a generated text's CJK or U+FFFD
    and a path outside cp1252 raised UnicodeEncodeError (exit 1, after the model was saved and before its report)."""
    result = subprocess.run([sys.executable, "-m", "shortgpt_desktop.cli", "score", "--help"], capture_output=True,
                            env=dict(os.environ, PYTHONIOENCODING="cp1252"), timeout=120)
    assert result.returncode == 0, result.stderr.decode("cp1252", "replace")[-300:]
    assert b"--block-size" in result.stdout


def test_calib_before_model_is_told_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    """``--calib`` takes every path after it: ``prune --calib notes.txt MODEL`` said MODEL was missing, though given."""
    assert cli.main(["prune", "--calib", "notes.txt", "some/model", "--ratio", "0.25", "--out", "o"]) == 2
    assert "put MODEL before --calib, or end its list with --" in capsys.readouterr().err
    assert cli.main(["prune", "some/model", "--layers", "3,5", "--out", "o"]) == 2
    assert "to name the layers, use --remove 3,5" in capsys.readouterr().err


def test_a_mistyped_option_is_named_and_a_list_of_layers_split_in_two_is_hinted(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--ratoi 0.25`` said only that one of --ratio, --layers and --remove is required; ``score --ratio`` and
    ``--remove 3 5`` only that an argument was not recognised."""
    assert bad(capsys, "prune", "m", "--ratoi", "0.25", "--out", "o").endswith(
        "one of the arguments --ratio --layers --remove is required (--ratoi is not an option; did you mean --ratio?)")
    assert bad(capsys, "score", "m", "--calibb=x").endswith(
        "unrecognized arguments: --calibb=x (--calibb is not an option; did you mean --calib?)")
    assert bad(capsys, "score", "m", "--zzz").endswith("unrecognized arguments: --zzz (--zzz is not an option)")
    assert bad(capsys, "score", "m", "--ratio", "0.3").endswith(
        "unrecognized arguments: --ratio 0.3 (--ratio is an option of prune, not of score)")
    assert bad(capsys, "prune", "m", "--remove", "3", "5-6", "--out", "o").endswith(
        "unrecognized arguments: 5-6 (--remove takes one list: write --remove 3,5-6)")
    assert bad(capsys, "prune", "m", "--remove", "3", "--out", "o", "5").endswith("unrecognized arguments: 5")
    for split in (["--remove", "3,", "5"], ["--remove=3", "5"], ["--rem", "3", "5"]):
        assert bad(capsys, "prune", "m", *split, "--out", "o").endswith(
            "unrecognized arguments: 5 (--remove takes one list: write --remove 3,5)"), split
    # A command's own parser reports a missing required option: it knew only its own options.
    assert bad(capsys, "prune", "m", "--against", "x", "--out", "o").endswith(
        "one of the arguments --ratio --layers --remove is required (--against is an option of eval, not of prune)")
    # Abbreviations argparse takes stay as they were.
    assert bad(capsys, "prune", "m", "--rat", "2", "--out", "o").endswith(
        "The ratio must be above 0 and below 1 (got 2); for 2% write 0.02, for 2 layers --layers 2.")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null here")
def test_an_evaluation_text_that_is_a_device_is_named_as_the_evaluation_text(
        tiny_model: Path, small_calib: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--eval-text /dev/null`` was refused as "The calibration path /dev/null is not a file"."""
    line = bad(capsys, "score", str(tiny_model), "--calib", str(small_calib), "--eval-text", "/dev/null", "-q")
    assert line.endswith("The evaluation path /dev/null is not a file (a pipe or a device); give text files or "
                         "folders."), line


@pytest.mark.skipif(os.name == "nt", reason="a Windows path is Windows' own there")
def test_a_windows_path_to_write_to_is_refused_elsewhere(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``--out 'C:\\models\\out'`` on Linux made a folder of that name in the current folder ("saved to
    /home/me/C:\\models\\out"), and ``--json 'C:\\out\\r.json'`` a file so named: both are refused before the job, and
    nothing is written."""
    monkeypatch.chdir(tmp_path)
    common = ["--calib", str(small_calib), "--samples", "2", "--seq-len", "16", "-q"]
    line = bad(capsys, "prune", str(tiny_model), "--remove", "1", "--repair", "none", "--no-eval", "--out",
               "C:\\models\\out", *common)
    assert line.endswith("C:\\models\\out is a Windows path, which this system would take as a name in the current "
                         "folder; give a path of this system, such as ~/out."), line
    line = bad(capsys, "score", str(tiny_model), "--metric", "bi", "--json", "C:/out/r.json", *common)
    assert line.endswith("C:/out/r.json is a Windows path, which this system would take as a name in the current "
                         "folder; give a path of this system, such as ~/r.json."), line
    assert list(tmp_path.iterdir()) == []


def test_samples_longer_than_learned_positions_are_one_sentence(tiny_family, tiny_model: Path, small_calib: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """GPT-2 and OPT learn a table of positions and GPT-J keeps one of sines and cosines (the tiny ones 256; GPT-2
    1,024): a longer --seq-len indexed past it, an IndexError traceback, in score, prune, sweep and eval (the
    --against model too). Only the refusal is said: a note that such samples run past what the model was trained on
    came first and said the contrary."""
    gpt2, opt, gptj = tiny_family("gpt2"), tiny_family("opt"), tiny_family("gptj")
    common = ["--calib", str(small_calib), "--samples", "2", "-q"]
    for argv, name in ((["score", str(gpt2), "--seq-len", "257", "--metric", "bi"], gpt2.name),
                       (["score", str(opt), "--seq-len", "300", "--metric", "bi"], opt.name),
                       (["score", str(gptj), "--seq-len", "300", "--metric", "bi"], gptj.name),
                       (["eval", str(tiny_model), "--against", str(gpt2), "--seq-len", "300"], gpt2.name)):
        code = cli.main([*argv, *common])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "Traceback" not in "\n".join(err)
        assert err[-1].endswith(f"Samples of {argv[argv.index('--seq-len') + 1]} tokens are longer than {name} can "
                                "read (256 positions); use samples of at most 256 tokens."), err
        # the note for computed positions ("was trained to read … past that") came first, then this refusal
        assert not any("trained to read" in line for line in err), err
    assert cli.main(["score", str(gpt2), "--seq-len", "256", "--metric", "bi", *common]) == 0  # the most it reads


def test_samples_longer_than_the_trained_positions_are_said_when_the_model_is_read(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model with computed positions (RoPE) reads samples past what it was trained on, so ``--seq-len 4096`` on a
    model trained on 1,024 ran without a word; it is said as the model's header is read, and in the report, by
    every command that reads samples (eval --against: of either model)."""
    model = tmp_path / "short-context"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["max_position_embeddings"] = 32
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    sizes = ["--calib", str(small_calib), "--samples", "2", "--eval-windows", "1"]
    report = tmp_path / "score.json"
    assert cli.main(["score", str(model), *sizes, "--metric", "bi", "--seq-len", "40", "--json", str(report)]) == 0
    err = capsys.readouterr().err
    sentence = ("Samples of 40 tokens are longer than short-context was trained to read (32 positions): past that its "
                "scores and perplexity come from positions it never saw; use samples of at most 32 tokens.")
    assert f"note: {sentence}" in err and err.index(sentence) < err.index("scoring")
    assert sentence in json.loads(report.read_text())["warnings"]
    for argv in (["eval", str(tiny_model), "--against", str(model)],
                 ["sweep", str(model), "--max", "1", "--no-quiz", "--metric", "bi"],
                 ["prune", str(model), "--remove", "2", "--repair", "none", "--prompt", "", "--out",
                  str(tmp_path / "out")]):
        assert cli.main([*argv, *sizes, "--seq-len", "40", "-q"]) == 0
        assert f"note: {sentence}" in capsys.readouterr().err, argv[0]
    assert cli.main(["score", str(model), *sizes, "--metric", "bi", "--seq-len", "32"]) == 0  # the most it read
    assert "trained to read" not in capsys.readouterr().err


def test_a_folder_of_many_unusable_files_is_said_in_a_few_lines(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A folder like ~/Documents gave a note for each of its hundreds of binary files, and a warning for each again
    after the job; the JSON report keeps every one."""
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text(small_calib.read_text(encoding="utf-8"), encoding="utf-8")
    for i in range(40):
        (folder / f"photo{i:02}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    report = tmp_path / "score.json"
    assert cli.main(["score", str(tiny_model), "--calib", str(folder), "--samples", "2", "--seq-len", "32",
                     "--metric", "bi", "--json", str(report)]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    warnings = [line for line in captured.out.splitlines() if line.startswith("warning: ")]
    for lines in (notes, warnings):
        assert len(lines) == 6 and lines[-1].endswith("... and 35 more files left out (a --json report lists each).")
    assert len([w for w in json.loads(report.read_text())["warnings"] if w.startswith("Skipped")]) == 40


def test_a_gguf_padding_id_past_the_vocabulary_is_a_sentence(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """transformers' embedding asserted on such a file while its parameters were counted, a traceback (exit 1) in
    every command, one layer at a time too. The config now leaves the id unset, as llama.cpp does; transformers'
    GGUF tokenizer still cannot read it, which is said in one sentence."""
    from types import SimpleNamespace

    from gguf import GGUFValueType

    from shortgpt_desktop.core.model.config import drop_bad_pad_id
    from shortgpt_desktop.core.testing.gguf_export import export_gguf

    path = tmp_path / "pad.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer", block_weights="Q4_0",
                extra={"tokenizer.ggml.padding_token_id": (512, GGUFValueType.UINT32)})  # the vocabulary is 512
    for low in ([], ["--low-memory"]):
        line = bad(capsys, "score", str(path), "--calib", str(small_calib), "--samples", "4", "--seq-len", "32",
                   "--metric", "bi", "-q", *low)
        assert f"The model in {path} has no usable tokenizer" in line, line  # the file, not the folder it lies in
    assert drop_bad_pad_id(SimpleNamespace(pad_token_id=512, vocab_size=512)).pad_token_id is None
    assert drop_bad_pad_id(SimpleNamespace(pad_token_id=3, vocab_size=512)).pad_token_id == 3


def test_the_built_in_corpus_can_be_the_evaluation_text(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """``--calib builtin`` is the built-in corpus; ``--eval-text builtin`` was "does not exist"."""
    report = tmp_path / "eval.json"
    assert cli.main(["eval", str(tiny_model), "--calib", str(small_calib), "--eval-text", "builtin", "--seq-len", "32",
                     "--eval-windows", "2", "-q", "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    assert evaluated["ppl_before"] > 1 and evaluated["calibration"] == []  # --calib was not read


def test_a_hub_page_address_is_the_models_id(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub model's page address, as copied from the browser, was "does not exist"; it opens as its id, which
    the report names with the revision and commit its files came from (the card named no revision), and
    ``--against`` says it takes no revision."""
    from tests.core.model.test_sources import fill_hub_cache

    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    report = tmp_path / "score.json"
    assert cli.main(["score", "https://huggingface.co/someone/tiny-llama/tree/main", "--calib", str(small_calib),
                     "--samples", "4", "--seq-len", "32", "--metric", "bi", "-q", "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    assert scored["model"] == "someone/tiny-llama" and scored["model_revision"] == "main"
    assert scored["model_commit"] == "0123456789abcdef0123456789abcdef01234567"  # the snapshot's
    # Another revision: the card's base_model line names the repo alone (its main revision), the text names it.
    fill_hub_cache(cache, "someone/tiny-dev", tiny_model, revision="dev")
    assert cli.main(["prune", "someone/tiny-dev", "--revision", "dev", "--remove", "2", "--repair", "none",
                     "--no-eval", "--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "-q", "--out",
                     str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert ("removed from `someone/tiny-dev` at revision `dev` (commit `0123456789abcdef0123456789abcdef01234567`)"
            in card), card
    # Pruned again from the saved copy: the card names the Hub model it was first pruned from (it had no base_model
    # and the Hub id nowhere, "removed from `out`" alone)
    assert cli.main(["prune", str(tmp_path / "out"), "--remove", "1", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "4", "--seq-len", "32", "-q", "--out",
                     str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "README.md").read_text(encoding="utf-8")
    assert "\nbase_model: someone/tiny-dev\n" in again
    assert "pruned before, first pruned from `someone/tiny-dev`:" in again
    # typed in other capitals, the card names it as the Hub (its cache) spells it
    assert cli.main(["prune", "Someone/Tiny-Dev", "--revision", "dev", "--remove", "2", "--repair", "none",
                     "--no-eval", "--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "-q", "--out",
                     str(tmp_path / "typed")]) == 0
    typed = (tmp_path / "typed" / "README.md").read_text(encoding="utf-8")
    assert "\nbase_model: someone/tiny-dev\n" in typed and "removed from `someone/tiny-dev`" in typed, typed
    line = bad(capsys, "eval", str(tiny_model), "--against", "https://hf.co/someone/tiny-llama/tree/dev", "--calib",
               str(small_calib), "--seq-len", "32", "-q")
    # it said "give its id", which then compared with the main revision without a word
    assert line == ("shortgpt: error: --against cannot take a revision (dev): it compares with someone/tiny-llama's "
                    "main revision on the Hub, or with a local folder or .gguf file; to compare with dev, download "
                    "that revision and give its folder."), line
    # main is the revision it opens: taken as the id
    cli.main(["eval", str(tiny_model), "--against", "https://hf.co/someone/tiny-llama/tree/main", "--calib",
              str(small_calib), "--seq-len", "32", "-q"])
    assert "cannot take a revision" not in capsys.readouterr().err


def test_a_model_name_past_the_file_systems_limit_is_a_sentence(small_calib: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Whether such a name exists cannot be asked (Path.exists raises OSError: File name too long)."""
    line = bad(capsys, "score", "y" * 300, "--calib", str(small_calib), "-q")
    assert line.endswith("cannot be read (file name too long); choose a model you can open."), line
    line = bad(capsys, "eval", "y" * 300, "--against", "z" * 300, "--calib", str(small_calib), "-q")
    assert "cannot be read (file name too long)" in line, line


def test_a_quantized_gguf_saved_as_safetensors_says_how_big_it_will_be(tiny_q4_gguf: Path, small_calib: Path,
                                                                       tmp_path: Path,
                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """A 98 MB Q4_1 SmolLM2 saved as safetensors became a 439 MB folder, said only once written."""
    for fmt in ("safetensors", "gguf"):
        assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "2", "--repair", "none", "--no-eval", "--format", fmt,
                         "--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "-q", "--out",
                         str(tmp_path / fmt)]) == 0
        err = capfd.readouterr().err
        said = "note: a quantized GGUF saved as safetensors is written in float32: about "
        assert (said in err) == (fmt == "safetensors"), err
        if fmt == "safetensors":
            assert f"where the GGUF is {cli.human_bytes(tiny_q4_gguf.stat().st_size)}" in err
        # and the card, which travels with the folder, says why it is larger (it said nothing of it)
        card = (tmp_path / fmt / "README.md").read_text()
        assert ("from a Q4_0 GGUF whose weights were de-quantized to float32 (larger on disk than the GGUF)"
                in card) == (fmt == "safetensors"), card


def test_the_model_line_says_when_the_job_runs_one_layer_at_a_time(tiny_model: Path, small_calib: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Chosen for want of memory (or asked for), one layer at a time was said nowhere: only the progress counting
    layers hinted at it."""
    for flag, said in (([], False), (["--low-memory"], True)):
        assert cli.main(["score", str(tiny_model), "--calib", str(small_calib), "--samples", "2", "--seq-len", "32",
                         *flag]) == 0
        line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("model:"))
        assert line.endswith(", one layer at a time") == said, line


def test_the_summary_gives_the_figures_of_the_report() -> None:
    """The parameters' share, the perplexity ratio and the healing's first and last loss were in no assertion."""
    import io
    from types import SimpleNamespace

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.pipeline import JobSpec
    from shortgpt_desktop.core.report import Report

    report = Report(model="m", metric="bi", scores=[0.1] * 6, removed_layers=[1, 2])
    report.n_layers = 6
    report.params_before, report.params_after = 1000, 750
    report.ppl_before, report.ppl_after, report.eval_tokens = 10.0, 12.5, 2048
    report.heal_steps, report.heal_losses = 2, [0.5, 0.3]
    stream = io.StringIO()
    cli.print_summary(report, stream)
    out = stream.getvalue()
    assert "parameters: 1,000 -> 750 (75.0% kept)" in out
    assert "perplexity: 10.000 -> 12.500 (x1.25) on 2,048 tokens\n" in out
    for tokens, rough in ((510, True), (768, True), (1023, True), (1024, False)):  # 2 and 3 windows of 256: rough
        report.eval_tokens = tokens
        stream = io.StringIO()
        cli.print_summary(report, stream)
        assert (f"on {tokens:,} tokens (few for a steady figure" in stream.getvalue()) == rough, tokens
    # The advice that gives more: windows where the text has more to give, else text (more windows measured no more)
    report.eval_tokens = 510
    advice = {}
    for eval_text, ran_out in ((None, False), (None, True), ("t.txt", True)):
        report.eval_text = eval_text
        spec = JobSpec(model="m", eval_text=eval_text, eval_windows=64, seq_len=256)
        report.warnings = [pipeline.fewer_windows(spec, SimpleNamespace(eval_windows=[[1]] * 2))] if ran_out else []
        report.text_ran_out = ran_out
        stream = io.StringIO()
        cli.print_summary(report, stream)
        advice[eval_text, ran_out] = stream.getvalue().split("or more; ")[1].split(")\n")[0]
    assert advice == {(None, False): "a larger --eval-windows gives a steadier one",
                      (None, True): "give more calibration text (its held-out end is measured) or an evaluation text "
                                    "(--eval-text)",
                      ("t.txt", True): "give a longer evaluation text"}, advice
    assert "loss (KL to the original) 0.5 -> 0.3\n" in out
    from shortgpt_desktop.core.measure.calibration import BUILTIN_CORPUS
    from shortgpt_desktop.core.pipeline import BUILTIN_CORPUS_NAME

    # What text was measured, where it is not the calibration text's held-out end: eval without --calib measured the
    # built-in corpus without a word, and read twice as bad as the prune had on WikiText (a walkthrough)
    report.eval_tokens, report.text_ran_out, report.warnings = 2048, False, []
    for eval_text, calibration, said in (
            (None, ["valid.txt"], " on 2,048 tokens\n"),
            ("test.txt", ["valid.txt"], " on 2,048 tokens of test.txt\n"),
            (None, [BUILTIN_CORPUS_NAME],
             " on 2,048 tokens of the built-in corpus (Python docstrings; --calib or --eval-text FILE measures your "
             "own text)\n"),
            (BUILTIN_CORPUS, ["valid.txt"], " on 2,048 tokens of the built-in corpus (Python docstrings; ")):
        report.eval_text, report.calibration = eval_text, calibration
        stream = io.StringIO()
        cli.print_summary(report, stream)
        assert "perplexity: 10.000 -> 12.500 (x1.25)" + said in stream.getvalue(), (eval_text, stream.getvalue())
    report.heal_losses = [0.00368, 0.00441]  # four significant digits, as the warning beside it: it said 0.004 -> 0.004
    stream = io.StringIO()
    cli.print_summary(report, stream)
    assert "loss (KL to the original) 0.00368 -> 0.00441\n" in stream.getvalue()


def test_every_prune_flag_reaches_the_job() -> None:
    """A flag parsed but not handed on to the engine is ignored without a word: --force would still refuse the
    earlier output, --no-eval would still spend minutes on perplexity, --repair none would still refit."""
    parser = cli.build_parser()
    given = cli.spec_from_args(parser.parse_args([
        "prune", "m", "--ratio", "0.25", "--out", "o", "--force", "--no-eval", "--heal", "3", "--repair", "none",
        "--format", "gguf", "--samples", "7", "--seq-len", "48", "--eval-windows", "5", "--batch-size", "3",
        "--seed", "9", "--device", "cpu", "--dtype", "float32", "--revision", "v1", "--trust-remote-code",
        "--low-memory", "--prompt", "Hi", "--metric", "bi"]))
    assert (given.force, given.check_perplexity, given.heal_steps, given.repair, given.output_format) == (
        True, False, 3, "none", "gguf")
    assert (given.samples, given.seq_len, given.eval_windows, given.batch_size, given.seed) == (7, 48, 5, 3, 9)
    assert (given.device, given.dtype, given.revision, given.trust_remote_code, given.low_memory) == (
        "cpu", "float32", "v1", True, True)
    assert (given.ratio, given.out, given.prompt, given.metric) == (0.25, "o", "Hi", "bi")
    plain = cli.spec_from_args(parser.parse_args(["prune", "m", "--layers", "2", "--out", "o"]))
    assert (plain.force, plain.check_perplexity, plain.heal_steps, plain.trust_remote_code, plain.low_memory) == (
        False, True, 0, False, None)
    assert plain.count == 2 and plain.ratio is None and plain.layers is None
    assert cli.spec_from_args(parser.parse_args(["prune", "m", "--remove", "1,3", "--out", "o"])).layers == [1, 3]
    block = cli.spec_from_args(parser.parse_args(["score", "m", "--metric", "angular", "--block-size", "2"]))
    assert block.block_size == 2


@pytest.mark.parametrize(("argv", "said"), [
    (["score", "m", "--samples", "0"], "--samples: 0 must be at least 1"),
    (["score", "m", "--seq-len", "-1"], "--seq-len: -1 must be at least 8"),
    (["eval", "m", "--seq-len", "7"], "--seq-len: 7 must be at least 8"),  # was said after the model had loaded
    (["prune", "m", "--ratio", "0.2", "--out", "o", "--heal", "-1"], "--heal: -1 must be at least 0"),
    (["prune", "m", "--out", "o"], "one of the arguments --ratio --layers --remove is required"),
    (["prune", "m", "--ratio", "a quarter", "--out", "o"], "--ratio: 'a quarter' is not a number"),
    (["prune", "m", "--ratio", "25%", "--out", "o"], "--ratio: '25%' is not a number; for a share, write 0.25"),
    (["prune", "m", "--ratio", "0,25", "--out", "o"], "--ratio: '0,25' is not a number; for a share, write 0.25"),
    (["score"], "required: MODEL"),
])
def test_usage_errors_are_one_line_with_exit_2(argv: list[str], said: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own errors printed the usage block above the error, and --samples 0 became the default 128
    without a word; the command line promises one line and exit code 2."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("shortgpt: error: ") and err.count("\n") == 1, err
    assert said in err, err


def test_a_report_that_fails_to_write_after_the_job_is_one_line_after_the_summary(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills (or the folder goes) while the job runs: the summary is still shown, then one sentence and exit
    2, not a traceback after minutes of work."""
    from shortgpt_desktop.core.report import Report

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Report, "write_json", full)
    report = tmp_path / "r.json"
    code = cli.main(["score", str(tiny_model), "--metric", "bi", "--json", str(report), "--calib", str(small_calib),
                     "--samples", "4", "--seq-len", "32", "-q"])
    captured = capsys.readouterr()
    assert code == 2
    assert "layer" in captured.out  # the table, shown before the report is written
    assert captured.err.strip().splitlines() == [
        f"shortgpt: error: Could not write the report to {report}: No space left on device."]


def test_the_curve_goes_no_further_than_one_layer_left(tiny_model: Path, small_calib: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep --max 6`` of a 6-layer model would remove every layer: one sentence, before scoring."""
    line = bad(capsys, "sweep", str(tiny_model), "--max", "6", "--calib", str(small_calib), "--samples", "4",
               "--seq-len", "32", "-q")
    assert "The curve can go up to 5 removed layers of 6 (asked for 6)" in line


def test_json_and_csv_naming_one_file_through_the_home_folder_are_refused(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--json ~/curve --csv /home/me/curve`` name one file: the CSV was written over the JSON report."""
    monkeypatch.setenv("HOME", str(tmp_path))
    line = bad(capsys, "sweep", str(tiny_model), "--max", "1", "--json", "~/curve", "--csv", str(tmp_path / "curve"),
               "--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "-q")
    assert "give each its own file" in line
    assert not (tmp_path / "curve").exists()


def test_quiet_prints_no_model_line_but_still_the_notes(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """-q: no progress and no model line on stderr (a script's log), but a file left out is still said."""
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    shutil.copy(small_calib, tmp_path / "text.txt")
    assert cli.main(["score", str(tiny_model), "--metric", "bi", "--calib", str(tmp_path), "--samples", "4",
                     "--seq-len", "32", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert not any(line.startswith(("model:", "scoring")) for line in err), err
    assert any(line.startswith("note: ") and "a.pdf" in line for line in err), err


def test_what_no_eval_leaves_idle_is_said_and_each_commands_help_prints(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``prune --no-eval`` dropped --prompt and --eval-windows without a word, and --eval-text changed the cut (the
    calibration text is then used whole) though it reads as a perplexity option."""
    checked = ["prune", str(tiny_model), "--remove", "2", "--repair", "none", "--calib", str(small_calib), "-q",
               "--seq-len", "32"]
    common = [*checked, "--no-eval"]
    assert cli.main([*common, "--prompt", "Hi", "--eval-windows", "3", "--eval-text", str(small_calib),
                     "--out", str(tmp_path / "a")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    # layers by hand and nothing fitted: no text is read at all (it said --eval-text "still changes the cut")
    assert notes == ["note: --no-eval leaves out the check, so --prompt, --eval-windows and --eval-text are not "
                     "used."]
    variants = [(["--repair", "linear"], "the repair"), (["--metric", "bi", "--layers", "1"], "the cut"),
                (["--heal", "1"], "the healing"), (["--repair", "linear", "--heal", "1"], "the repair and the healing"),
                (["--metric", "reverse", "--layers", "1", "--repair", "linear"], "the repair")]  # reverse reads none
    for n, (how, changes) in enumerate(variants):
        args = [*common, "--eval-text", str(small_calib), "--out", str(tmp_path / f"out{n}"), *how]
        if "--layers" in how:
            args = [a for i, a in enumerate(args) if a != "--remove" and args[i - 1] != "--remove"]
        assert cli.main(args) == 0
        notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
        assert notes == [f"note: --eval-text still changes {changes} with --no-eval: the calibration text is used "
                         "whole, where without it its last 20% is held out for the check."]
    assert cli.main([*common, "--prompt", "", "--out", str(tmp_path / "b")]) == 0
    assert "note: --no-eval leaves out the check, so --prompt is not used." in capsys.readouterr().err
    assert cli.main([*checked, "--out", str(tmp_path / "c"), "--prompt", "Hi", "--eval-windows", "2"]) == 0
    assert "note:" not in capsys.readouterr().err  # with the check, both are used
    score = ["score", str(tiny_model), "--calib", str(small_calib), "-q", "--seq-len", "32", "--samples", "4"]
    assert cli.main([*score, "--eval-windows", "3"]) == 0  # it was taken silently
    assert ("note: score measures no held-out perplexity (the check's windows), so --eval-windows is not used."
            in capsys.readouterr().err)
    assert cli.main(score) == 0
    assert "note:" not in capsys.readouterr().err
    for command in ("score", "prune", "sweep", "eval"):  # a "%" in a help text was a TypeError traceback
        assert cli.main([command, "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        # score's spoke of a "separate text for perplexity", which score does not measure (a walkthrough)
        assert ("the last 20% of the calibration text, held out; given, the calibration text is used whole" in shown
                ) == (command in ("prune", "sweep"))
        # eval fits nothing with the text: "the calibration text is used whole" meant nothing there
        assert ("the text to measure perplexity on (default: the last 20% of the --calib text, or the built-in corpus; "
                "given, --calib is not used)" in shown) == (command == "eval")
        assert ("score measures no perplexity; given, the calibration text is scored whole, not less its last 20%"
                in shown) == (command == "score")
        assert ("(--prompt and --eval-windows are then not used)" in shown) == (command == "prune")


def test_eval_says_that_it_does_not_use_samples_or_seed(tiny_model: Path, small_calib: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``eval --samples 4 --seed 3`` was taken without a word (hidden from eval -h, as eval draws no samples);
    a note says they are not used, as score's does for --eval-windows."""
    common = ["eval", str(tiny_model), "--calib", str(small_calib), "-q", "--seq-len", "32", "--eval-windows", "2"]
    assert cli.main([*common, "--samples", "4", "--seed", "3"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: eval draws no calibration samples (it measures the held-out windows), so --samples and "
                     "--seed are not used."], notes
    assert cli.main([*common, "--seed", "0"]) == 0  # given as the default, still given
    assert "so --seed is not used." in capsys.readouterr().err
    assert cli.main(common) == 0
    assert "note:" not in capsys.readouterr().err
    # --calib beside --eval-text: the text measured is the latter, and --calib went unused without a word
    assert cli.main([*common, "--eval-text", str(small_calib)]) == 0
    assert f"note: eval measures {small_calib.name} (--eval-text), so --calib is not used." in capsys.readouterr().err


@pytest.mark.parametrize(("n_layers", "said"), [(1, "1 layer,"), (2, "2 layers,")])
def test_the_model_line_counts_its_layers_in_the_right_number(n_layers: int, said: str) -> None:
    """A one-layer model (a pruned copy given to eval --against, say) was "1 layers"."""
    from types import SimpleNamespace

    info = SimpleNamespace(architecture="LlamaForCausalLM", n_layers=n_layers, n_params=4_000_000,
                           bytes_on_disk=8_000_000, weight_format="safetensors", memory_needed_bytes=16_000_000,
                           device="cpu", dtype="float32", mode="in memory")
    out = io.StringIO()
    cli.print_model_info(info, out, label="against")
    assert out.getvalue().startswith(f"against: LlamaForCausalLM, {said} 4.0 M parameters"), out.getvalue()


def test_sweeps_help_writes_max_as_the_readme_does(capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep -h`` showed ``--max MAX_REMOVED`` (its dest), which reads as an option --max-removed that is not one;
    the README's table writes ``--max N``."""
    assert cli.main(["sweep", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--max N" in shown and "MAX_REMOVED" not in shown, shown
    assert "`--max N`" in (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_fits_its_width_and_other_lines_start_lines_of_their_own(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bar was padded to 78 columns whatever its width (on 40 columns every update wrapped and
    left fragments), and the model's line was written after "reading the model's header...  0.0s" and its padding."""
    import shutil

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((40, 24)))
    assert cli.main(["score", str(tiny_model), "--metric", "bi", "--calib", str(small_calib), "--samples", "4",
                     "--seq-len", "32"]) == 0
    drawn = terminal.getvalue()
    lines = drawn.split("\n")
    assert any(line.startswith("model: LlamaForCausalLM, 6 layers") for line in lines), drawn
    updates = [part for line in lines for part in line.split("\r")[1:]]  # each bar drawn in place
    assert updates and all(len(part) == 39 for part in updates), updates
    assert any(part.startswith("scoring: [") for part in updates)


def test_progress_to_a_file_is_plain_lines_without_blank_ones() -> None:
    """stderr redirected to a log: every event is one line, the estimate too (no carriage returns, no blank line
    before the estimate), and -q writes nothing."""
    import io
    from types import SimpleNamespace

    log = io.StringIO()
    bar = cli.ProgressBar(log)
    bar("scoring", 0, 8)
    bar("estimate", 0, 0, SimpleNamespace(steps={"scoring": 4.0}, total=10.0, basis="the second scoring batch"))
    bar("scoring", 8, 8)
    lines = log.getvalue().split("\n")
    assert lines[-1] == "" and "" not in lines[:-1] and "\r" not in log.getvalue(), lines
    assert lines[0].startswith("scoring: [") and lines[1].startswith("the whole job: about")
    assert lines[2].startswith("scoring: [") and "8/8" in lines[2]
    bar("scoring", 8, 8)  # a stage that reports its end twice (bi+'s choice, then the engine) says it once
    assert log.getvalue().count("8/8") == 1, log.getvalue()
    bar("scoring", 0, 8)  # a stage that starts again is drawn again
    bar("scoring", 8, 8)
    assert log.getvalue().count("8/8") == 2, log.getvalue()
    quiet = io.StringIO()
    q = cli.ProgressBar(quiet, quiet=True)
    q("scoring", 0, 8)
    q("estimate", 0, 0, SimpleNamespace(steps={}, total=1.0, basis="x"))
    assert quiet.getvalue() == ""


def test_the_bar_counts_layers_where_the_scoring_pass_goes_layer_by_layer(
        tiny_model: Path, small_calib: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--metric ppl measures one layer's removal at a time: its bar said "6/6 samples" for 6 layers."""
    assert cli.main(["score", str(tiny_model), "--metric", "ppl", "--calib", str(small_calib), "--samples", "4",
                     "--seq-len", "32"]) == 0
    assert "] 6/6 layers" in capsys.readouterr().err


def test_no_command_prints_the_commands_and_a_report_to_dash_is_refused(tiny_model: Path, small_calib: Path,
                                                                       tmp_path: Path, monkeypatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``shortgpt`` alone said "the following arguments are required: command" and named none; ``--json -`` wrote a
    file named "-" in the working folder without a word."""
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: shortgpt") and all(c in err for c in ("score", "prune", "sweep", "eval"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["score", str(tiny_model), "--calib", str(small_calib), "--samples", "4", "--seq-len", "32",
                     "--json", "-", "-q"]) == 2
    assert "Cannot write a report to '-'" in capsys.readouterr().err and not (tmp_path / "-").exists()


def test_a_copy_of_a_bfloat16_model_says_the_type_its_weights_keep(tiny_model: Path, small_calib: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A bfloat16 model's pruned copy kept bfloat16 weights, while its card said "Device: cpu, float32" and its JSON
    "dtype": "float32" (the type the job computed in) and nothing said bfloat16 (a walkthrough)."""
    import torch
    from transformers import AutoModelForCausalLM

    halved = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(halved)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).is_file():
            shutil.copyfile(tiny_model / name, halved / name)
    report = tmp_path / "r.json"
    assert cli.main(["prune", str(halved), "--remove", "2", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "2", "--seq-len", "32", "--out", str(tmp_path / "out"), "--json",
                     str(report), "-q"]) == 0
    assert f"saved to {tmp_path / 'out'} (safetensors bfloat16; " in capsys.readouterr().out
    assert json.loads(report.read_text())["quantization"] == "bfloat16"
    assert "- Format: safetensors (bfloat16)\n" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")


def test_the_help_says_each_default() -> None:
    """--prompt, --block-size and --preset did not say what they are when not given (a command-line walkthrough)."""
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    prune, score = (" ".join(choices[c].format_help().split()) for c in ("prune", "score"))
    assert f'(default: "{cli.defaults.PROMPT}")' in prune
    assert "sizes in one word (default: none, the sizes below as given)" in prune
    assert "layers per block for --metric angular (default 1)" in score


def test_a_refused_safetensors_copy_of_a_gguf_is_not_sized_first(tiny_q4_gguf: Path, tmp_path: Path, capsys) -> None:
    """Low-memory mode refuses a GGUF saved as safetensors: the copy's size in float32 was said on the line before the
    refusal, of a save that would not happen (a walkthrough). Whole, the note is said before the job."""
    args = ["prune", str(tiny_q4_gguf), "--format", "safetensors", "--remove", "3", "--no-eval", "--repair", "none",
            "-q"]
    assert cli.main([*args, "--low-memory", "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shortgpt: error: In low-memory mode a GGUF model is saved as GGUF") and "note:" not in err
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert "note: a quantized GGUF saved as safetensors is written in float32" in capsys.readouterr().err


@pytest.mark.parametrize("metric", ["sequential", "reverse"])
def test_score_by_position_says_the_text_options_are_not_used(metric: str, tiny_model: Path, small_calib: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``score --metric sequential --calib … --samples 8`` took the text's options without a word, as score's unused
    --eval-windows no longer is (a walkthrough); without them, nothing is said."""
    assert cli.main(["score", str(tiny_model), "--metric", metric, "--calib", str(small_calib), "--samples", "8",
                     "--seq-len", "32", "-q"]) == 0
    assert (f"note: {metric} orders the layers by their position alone, reading no text, so --calib, --samples and "
            "--seq-len are not used.") in capsys.readouterr().err
    assert cli.main(["score", str(tiny_model), "--metric", metric, "-q"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_choice_typed_in_another_case_or_with_a_hyphen_is_the_choice_it_names(capsys) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["prune", "m", "--metric", "BI", "--repair", "Linear", "--preset", "Quick", "--format",
                              "GGUF", "--ratio", "0.25", "--out", "o"])
    assert (args.metric, args.repair, args.preset, args.output_format) == ("bi", "linear", "quick", "gguf")
    assert parser.parse_args(["score", "m", "--metric", "Relative-Magnitude"]).metric == "relative_magnitude"
    with pytest.raises(SystemExit) as stopped:  # a word that names no choice is still refused, with the choices
        parser.parse_args(["score", "m", "--metric", "bi++"])
    said = capsys.readouterr().err.replace("'", "")  # Python 3.12.8 and 3.13.1 on quote no choice
    assert stopped.value.code == 2 and "invalid choice: bi++ (choose from bi+, bi," in said


def test_a_gguf_files_address_on_the_hub_is_that_file_not_its_repo(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A page address is read as its id, which for a GGUF file's address opened the repo, refused as GGUF files
    alone: the file is what is looked for (here offline, in an empty cache)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    address = "https://huggingface.co/someone/tiny-GGUF/blob/main/tiny-Q4_K_M.gguf"
    assert cli.main(["score", address, "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("shortgpt: error: tiny-Q4_K_M.gguf of someone/tiny-GGUF is not in the "
                                              "local Hub cache")
    assert cli.main(["eval", str(tiny_model), "--against", address, "--quiet"]) == 2
    assert "tiny-Q4_K_M.gguf of someone/tiny-GGUF is not in the local Hub cache" in capsys.readouterr().err


def test_a_model_pruned_from_a_hub_gguf_files_address_is_named_by_it(tiny_q4_gguf: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The card and the report named the repo alone, which no file, and whose eval line is refused (GGUF files
    alone); the revision and commit were dropped (a review). The file is named with its repo, and runs again."""
    import json

    from tests.core.model.test_sources import offline_gguf_repo

    snapshot, address = offline_gguf_repo(tmp_path, tiny_q4_gguf, monkeypatch)
    assert cli.main(["prune", address, "--remove", "2", "--repair", "none", "--no-eval", "-q", "--out",
                     str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert (report["model"], report["model_revision"], report["model_commit"]) == (address, "main", snapshot.name)
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "\nbase_model: someone/tiny-GGUF\n" in card
    assert f" from `tiny-Q4_0.gguf` of `someone/tiny-GGUF` at revision `main` (commit `{snapshot.name}`)" in card
    assert f"`shortgpt eval {address} --against THIS_FOLDER`" in card
