"""The metric registry: every shipped metric follows its rules, and a new one needs one class and one register."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.engine import Engine, JobSpec
from shortgpt_desktop.core.errors import UserError
from shortgpt_desktop.core.measure.metrics import METRICS, ScoringContext, get_metric
from shortgpt_desktop.core.measure.scoring import measure_layers


def test_shipped_metrics_and_an_unknown_name() -> None:
    assert list(METRICS)[:2] == ["bi+", "bi"]  # the default first, then the paper's metric
    assert set(METRICS) >= {"relative_magnitude", "angular", "sequential", "reverse", "ppl"}
    assert all(m.label and m.description for m in METRICS.values())
    with pytest.raises(UserError, match="Unknown metric 'nope': choose one of bi\\+, bi"):
        get_metric("nope")


def test_a_metric_added_by_one_class_and_one_register_runs_from_the_command_line(
    extra_metric, tiny_model: Path, small_calib: Path, tmp_path: Path
) -> None:
    """The command line offers it, the engine scores with it and removes its lowest layers; nothing else
    changed. Its scores are checked against the same formula on a separately measured pass."""
    score_json = tmp_path / "score.json"
    argv = ["--calib", str(small_calib), "--samples", "4", "--seq-len", "32", "--batch-size", "2", "-q"]
    assert cli.main(["score", str(tiny_model), "--metric", "last_token_bi", "--json", str(score_json), *argv]) == 0
    report = json.loads(score_json.read_text())
    assert report["metric"] == "last_token_bi"

    engine = Engine()
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, batch_size=2)
    loaded = engine.load(spec)
    tokens = engine.tokens_for(spec)  # the command line's samples: same text, settings and seed
    ctx = ScoringContext(loaded.model, loaded.family, tokens, batch_size=2)
    expected = extra_metric.values(ctx)
    states = measure_layers(loaded.model, loaded.family, tokens, batch_size=2).last_token_states.double()
    by_hand = [1.0 - float(torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1).mean())
               for i in range(6)]
    assert expected == pytest.approx(by_hand, abs=1e-9)
    assert report["scores"] == pytest.approx(expected, abs=1e-5)

    prune_json = tmp_path / "prune.json"
    assert cli.main(["prune", str(tiny_model), "--metric", "last_token_bi", "--layers", "2", "--out",
                     str(tmp_path / "pruned"), "--repair", "none", "--no-eval", "--json", str(prune_json), *argv]) == 0
    lowest_two = sorted(sorted(range(6), key=lambda i: report["scores"][i])[:2])
    assert json.loads(prune_json.read_text())["removed_layers"] == lowest_two


def test_bi_plus_before_its_measurement_keeps_the_ends_too() -> None:
    """The plan shown before bi+'s choice is measured (sizes, time estimate) already keeps the first and last
    layers out, as the measured choice will."""
    scores = [0.01, 0.5, 0.4, 0.3, 0.2, 0.02]
    assert METRICS["bi+"].removal(scores, 2) == [3, 4]
    assert METRICS["bi"].removal(scores, 2) == [0, 5]
