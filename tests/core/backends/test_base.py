"""The backend is chosen once per opened model, and both backends run the whole default recipe alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core import engine as engine_module
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.model import memory
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.pipeline import JobSpec
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES
from shortgpt_desktop.jobs import run_prune


def _spec(model: Path, calib: Path, out: Path, **overrides) -> JobSpec:
    values = dict(model=str(model), calib=[str(calib)], samples=8, seq_len=32, eval_windows=4, batch_size=4,
                  device="cpu", dtype="float32", count=2, out=str(out), prompt="The history of",
                  max_new_tokens=4)
    values.update(overrides)
    return JobSpec(**values)


def test_the_way_a_model_runs_is_decided_once_though_free_memory_drops_as_it_loads(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free memory just above the estimate before loading, and that minus the model once it is loaded: a fresh
    estimate in the middle of the job would say "streamed" and lose the scores and the repair."""
    spec = _spec(tiny_model, small_calib, tmp_path / "out")
    estimate = Engine()
    estimate.open(spec)
    need = estimate.memory_estimate(spec).in_memory_total
    loaded = {"bytes": 0}
    opened: list[str] = []

    def free(device: str) -> tuple[int, int]:
        room = int(need / memory.SAFETY) + 1024 - loaded["bytes"]
        return room, room

    real_open = engine_module.open_backend

    def open_and_count(mode, *args, **kwargs):
        opened.append(mode)
        backend = real_open(mode, *args, **kwargs)
        loaded["bytes"] = sum(p.numel() * p.element_size() for p in backend.loaded.model.parameters())
        return backend

    monkeypatch.setattr(memory, "available_memory", free)
    monkeypatch.setattr(engine_module, "open_backend", open_and_count)
    engine = Engine()
    report = run_prune(engine, spec)
    assert opened == ["memory"], "loaded once, in one mode"
    assert free("cpu")[0] < need, "the test must make a second estimate say 'streamed'"
    assert report.repair == "linear" and any(r.get("parameter") for r in report.repair_runs)
    assert report.selection and report.ppl_after is not None and report.fidelity
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_new_settings_decide_their_way_without_the_old_copy_counting(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a settings change (another dtype) the window loads the model anew; while the first copy is still
    held, the free memory is short by its size. The decision for the new settings is taken with that copy gone."""
    first = _spec(tiny_model, small_calib, tmp_path / "out-32")
    second = _spec(tiny_model, small_calib, tmp_path / "out-16", dtype="bfloat16")
    probe = Engine()
    probe.open(second)
    need = probe.memory_estimate(second).in_memory_total
    engine = Engine()

    def free(device: str) -> tuple[int, int]:
        held = 0 if engine.backend is None else sum(
            p.numel() * p.element_size() for p in engine.backend.loaded.model.parameters())
        room = int(need / memory.SAFETY) + 1024 - held
        return room, room

    run_prune(engine, first)
    monkeypatch.setattr(memory, "available_memory", free)
    assert free("cpu")[0] < need, "with the first copy held, the second would not fit: the test proves nothing else"
    engine.load(second)  # as the window does after a settings change (the command line reopens the model)
    assert engine.backend is not None and engine.backend.mode == "memory"


def test_a_recipe_that_needs_more_memory_is_decided_anew(small_calib: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The window asks the way before its first job (to refuse what the backend cannot run). That decision, taken
    for plain BI, must not be kept when the user then runs the default recipe, whose caches and repair streams
    fit one layer at a time but not beside the whole model. (Wider and deeper than the tiny model, so that the
    weights streaming saves outweigh the recipe's caches and the repair's sums, as in a real model.)"""
    from shortgpt_desktop.core.testing.tiny_models import TINY_LLAMA, build_tiny_model

    wide = build_tiny_model(tmp_path / "wide", "llama",
                            {**TINY_LLAMA, "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 12})
    plain = _spec(wide, small_calib, tmp_path / "out", metric="bi", repair="none")
    default = _spec(wide, small_calib, tmp_path / "out")
    probe = Engine()
    probe.open(default)
    plain_need, default_need = probe.memory_estimate(plain), probe.memory_estimate(default)
    room = int(plain_need.in_memory_total / memory.SAFETY) + 1024
    assert room * memory.SAFETY < default_need.in_memory_total, "the recipe must not fit beside the whole model"
    assert default_need.streamed_total <= room * memory.SAFETY, "but one layer at a time it must"
    monkeypatch.setattr(memory, "available_memory", lambda device: (room, room))
    engine = Engine()
    engine.open(plain)
    engine.refusal(plain, plain.metric)
    assert engine.decided_mode(plain) == "memory"
    engine.refusal(default, default.metric)
    assert engine.decided_mode(default) == "streamed" and engine.decided_mode(plain) is None
    engine.load(default)
    assert engine.is_streamed


@pytest.mark.parametrize("name", [n for n in TINY_FAMILIES if n not in ("mixtral", "qwen3_moe")])
def test_the_default_job_streamed_equals_the_job_in_memory(tiny_family, name: str, tiny_model: Path, small_calib: Path,
                                                           tmp_path: Path) -> None:
    """bi+ measured, repaired, checked and saved one layer at a time: the same layers, weights and numbers."""
    from safetensors.torch import load_file

    folder = tiny_family(name)
    reports = {}
    for mode, low in (("memory", False), ("streamed", True)):
        # No prompt: the check's greedy text and quiz are not compared here (the quiz is not asked streamed).
        spec = _spec(folder, small_calib, tmp_path / f"out-{mode}", low_memory=low, count=3, prompt="")
        engine = Engine()
        reports[mode] = run_prune(engine, spec)
        assert engine.is_streamed == low
    whole, streamed = reports["memory"], reports["streamed"]
    assert streamed.removed_layers == whole.removed_layers
    assert streamed.selection == whole.selection
    assert [r.get("parameter") for r in streamed.repair_runs] == [r.get("parameter") for r in whole.repair_runs]
    assert streamed.ppl_before == pytest.approx(whole.ppl_before, rel=1e-4)
    assert streamed.ppl_after == pytest.approx(whole.ppl_after, rel=1e-4)
    assert streamed.fidelity["mean_kl"] == pytest.approx(whole.fidelity["mean_kl"], rel=1e-3, abs=1e-6)
    a = load_file(tmp_path / "out-memory" / "model.safetensors")
    b = load_file(tmp_path / "out-streamed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_both_sides_of_each_cut_are_refitted_alike_streamed_and_in_memory(tiny_family, name: str, small_calib: Path,
                                                                         tmp_path: Path) -> None:
    """With 20 samples the repair refits whole projections and chooses their ridges on held-out samples, so the
    kept layer after each run is refitted too: one layer at a time it saves the same tensors (GPT-2: Conv1D, biases),
    and stock transformers reloads them to the logits of the repaired model in memory."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from shortgpt_desktop.core.pipeline import modified
    from shortgpt_desktop.core.report import after_fitted

    folder = tiny_family(name)
    reports, engines = {}, {}
    for mode, low in (("memory", False), ("streamed", True)):
        spec = _spec(folder, small_calib, tmp_path / f"out-{mode}", low_memory=low, count=None, layers=[2, 3],
                     samples=20, prompt="", check_perplexity=False)
        engines[mode] = Engine()
        reports[mode] = run_prune(engines[mode], spec)
    whole, streamed = reports["memory"], reports["streamed"]
    after = [r["after"]["parameter"] for r in whole.repair_runs if "after" in r]
    assert after and after == [r["after"]["parameter"] for r in streamed.repair_runs if "after" in r]
    a = load_file(tmp_path / "out-memory" / "model.safetensors")
    b = load_file(tmp_path / "out-streamed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)
    engine = engines["memory"]
    assert engine.adjusted is not None
    # The layer after has new values where its ridge was chosen; none where no refit did better (gpt2 here).
    for run in whole.repair_runs:
        if "after" in run:
            assert (run["after"]["parameter"] in engine.adjusted.weights) == after_fitted(run), run
    assert name != "llama" or after_fitted(whole.repair_runs[0])
    ids = torch.tensor([list(range(5, 21))])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out-memory", dtype=torch.float32).eval()
    with torch.no_grad(), modified(engine.loaded, [2, 3], engine.adjusted.weights):
        in_memory = engine.loaded.model(input_ids=ids).logits
        torch.testing.assert_close(reloaded(input_ids=ids).logits, in_memory, rtol=1e-4, atol=1e-4)


def test_a_cancelled_streamed_scoring_keeps_its_partial_scores(tiny_model: Path, small_calib: Path,
                                                               tmp_path: Path) -> None:
    """One layer at a time, the layers measured before Cancel keep their scores (marked partial), as in memory."""
    from shortgpt_desktop.core.errors import Cancelled

    spec = _spec(tiny_model, small_calib, tmp_path / "out", low_memory=True, metric="bi")
    engine = Engine()
    seen: list[int] = []

    def progress(stage: str, done: int, total: int, partial: object = None) -> None:
        if stage == "scoring":
            seen.append(done)

    with pytest.raises(Cancelled):
        engine.score(spec, progress, cancel=lambda: len(seen) > 3)  # after 3 of 6 layers
    scored = engine.scored
    assert engine.is_streamed and scored is not None and scored.partial
    measured = [s for s in scored.scores.scores if s is not None]
    assert 0 < len(measured) < 6 and scored.scores.scores[0] is not None and scored.scores.scores[-1] is None



def _saved_tensors(folder: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """name → (stored type, float values) of a saved folder's weights, safetensors or GGUF (dequantized)."""
    gguf_files = sorted(folder.glob("*.gguf"))
    if not gguf_files:
        from safetensors.torch import load_file

        return {name: (str(value.dtype), value) for name, value in load_file(folder / "model.safetensors").items()}
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(gguf_files[0]))
    return {t.name: (t.tensor_type.name, torch.from_numpy(dequantize(t.data, t.tensor_type).copy()))
            for t in reader.tensors}


@pytest.mark.slow(seconds=171)
@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_smollm2s_default_job_streamed_equals_the_job_in_memory(fmt: str, smollm2_gguf: Path,
                                                                smollm2_safetensors: Path, valid_text: Path,
                                                                test_text: Path, tmp_path: Path) -> None:
    """The whole default job (bi+ measured, repaired, checked with a generation, saved in the source's format)
    on a real model, one layer at a time and in memory: the same layers, repaired weights, perplexities and
    written file. Kept short for the slow suite: 8 × 32 calibration tokens, 4 held-out windows, 2 layers."""
    model = smollm2_gguf if fmt == "gguf" else smollm2_safetensors
    runs = {}
    for mode, low in (("memory", False), ("streamed", True)):
        spec = JobSpec(model=str(model), calib=[str(valid_text)], eval_text=str(test_text), samples=8, seq_len=32,
                       eval_windows=4, batch_size=8, device="cpu", dtype="float32", count=2,
                       out=str(tmp_path / f"out-{mode}"), max_new_tokens=2, low_memory=low)
        assert spec.metric == "bi+" and spec.repair == "linear" and spec.check_perplexity  # the defaults
        engine = Engine()
        report = run_prune(engine, spec)
        assert engine.is_streamed == low and engine.adjusted is not None and engine.checked is not None
        runs[mode] = report, dict(engine.adjusted.weights), engine.checked
    (whole, whole_weights, whole_check), (streamed, streamed_weights, streamed_check) = runs["memory"], runs["streamed"]
    assert len(whole.removed_layers) == 2 and streamed.removed_layers == whole.removed_layers
    assert streamed.selection == whole.selection
    assert any(r.get("parameter") for r in whole.repair_runs)
    assert [r.get("parameter") for r in streamed.repair_runs] == [r.get("parameter") for r in whole.repair_runs]
    assert whole_weights and streamed_weights.keys() == whole_weights.keys()
    for name, value in whole_weights.items():
        torch.testing.assert_close(streamed_weights[name], value, rtol=1e-5, atol=1e-5)
    assert streamed.ppl_before == pytest.approx(whole.ppl_before, rel=1e-4)
    assert streamed.ppl_after == pytest.approx(whole.ppl_after, rel=1e-4)
    assert streamed_check.generation_after == whole_check.generation_after

    a, b = _saved_tensors(tmp_path / "out-memory"), _saved_tensors(tmp_path / "out-streamed")
    assert {k: (t, v.shape) for k, (t, v) in b.items()} == {k: (t, v.shape) for k, (t, v) in a.items()}
    requantized = {k for k in a if fmt == "gguf" and k.endswith("ffn_down.weight")
                   and not torch.equal(a[k][1], b[k][1])}
    for key, (_, value) in a.items():
        if key in requantized:
            # Re-quantized from repaired weights 1e-5 apart: a value may land one quantization step away.
            step = float(value.abs().max()) / 7
            assert (b[key][1] - value).abs().max() <= step and (b[key][1] != value).float().mean() < 0.01
        else:
            torch.testing.assert_close(b[key][1], value, rtol=1e-5, atol=1e-5)


def test_a_mode_chosen_for_want_of_memory_is_not_called_the_users(tiny_q4_gguf: Path) -> None:
    """Chosen for the user (the model did not fit), one layer at a time was refused as "low-memory mode", with
    "leave out --low-memory" for a flag they never gave."""
    from shortgpt_desktop.cli import error_line
    from shortgpt_desktop.core.backends.base import Streamed
    from shortgpt_desktop.core.measure.metrics import get_metric
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(tiny_q4_gguf))
    cases = [dict(metric=get_metric("ppl")), dict(heal_steps=2), dict(output_format="safetensors")]
    for wanted in cases:
        asked, chosen = (Streamed.refusal_for(source, **wanted, asked=a) for a in (True, False))
        assert "low-memory mode" in str(asked) and "low-memory" not in str(chosen), chosen
        assert "does not fit in memory" in str(chosen) and "--low-memory" not in error_line(chosen)


def test_both_backends_give_the_same_check_texts_in_the_same_order(tiny_model: Path, caplog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """generate_both: (original, pruned and repaired), the same on both backends; the streamed one caps its
    length and says which way the model runs."""
    import logging

    from shortgpt_desktop.core.backends import base

    source = resolve(str(tiny_model))
    with caplog.at_level(logging.INFO, logger="shortgpt_desktop.core.backends.base"):
        streamed = base.open_backend("streamed", source, "cpu", "float32", False)
    assert any("runs one layer at a time" in r.getMessage() for r in caplog.records)
    memory = base.open_backend("memory", source, "cpu", "float32", False)
    try:
        name = f"{streamed.stack.family.layers_path}.1.mlp.down_proj.weight"
        with streamed.stack.open_layer(1) as opened:
            weights = {name: opened.mlp.down_proj.weight.detach().clone() * -20.0}
        prompt, removed = "The history of", [2, 3]
        original = streamed.generate(prompt, (), {}, 4, False)
        pruned = streamed.generate(prompt, removed, weights, 4, False)
        assert streamed.generate(prompt, removed, {}, 4, False) != pruned, "the repair must tell"
        assert original != pruned
        assert streamed.generate_both(prompt, removed, weights, 4, False) == (original, pruned)
        assert memory.generate_both(prompt, removed, weights, 4, False) == (original, pruned)
        # Each token counted, over both models: the streamed backend writes one of each per sweep over the layers
        counts: dict[str, list[tuple[int, int]]] = {"streamed": [], "memory": []}
        for kind, backend in (("streamed", streamed), ("memory", memory)):
            assert backend.generate_both(prompt, removed, weights, 4, False,
                                         lambda done, total, kind=kind: counts[kind].append((done, total))) == (
                original, pruned)
        assert counts == {"streamed": [(2, 8), (4, 8), (6, 8), (8, 8)], "memory": [(i, 8) for i in range(1, 9)]}
        # and a cancel stops the streamed sweep before its next layer is read, not after all 8 tokens
        from shortgpt_desktop.core.errors import Cancelled

        opened: list[int] = []
        open_layer = streamed.stack.open_layer
        streamed.stack.open_layer = lambda i: (opened.append(i), open_layer(i))[1]
        stop = {"now": False}
        try:
            with pytest.raises(Cancelled):
                streamed.generate_both(prompt, removed, weights, 4, False,
                                       lambda done, total: stop.update(now=True), lambda: stop["now"])
        finally:
            del streamed.stack.open_layer
        assert opened == list(range(streamed.stack.n_layers))  # one sweep: the first token of each, then stopped
        asked: list[int] = []
        real = base.ops.generate
        monkeypatch.setattr(base.ops, "generate", lambda *a, **k: (asked.append(a[5]), real(*a, **k))[1])
        streamed.generate(prompt, (), {}, 50, False)
        assert asked == [streamed.MAX_NEW_TOKENS]
    finally:
        streamed.close()
        memory.close()
