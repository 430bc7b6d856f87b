"""The MLP refit beside each cut (``--repair refit``), on tiny random models.

It must bring the pruned model closer to the original on windows it never saw (KL divergence to the original,
measured as the check measures it), keep the linear repair when no training step beats it on the held-out rows,
leave the model untouched, run alike in memory and one layer at a time, and save a stock model that reloads to
the same logits. The real-model figures are in the slow tests and ``benchmarks/bench_quality.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.layerwise import InMemoryStack
from shortgpt_desktop.core.cut import mlp_refit
from shortgpt_desktop.core.cut.mlp_refit import NOTE_NO_MLP_MODULE, fit_mlp_refit, training_steps
from shortgpt_desktop.core.cut.repair import fit_linear_repair
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.pipeline import JobSpec
from shortgpt_desktop.jobs import run_prune

PROMPT = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])


@pytest.fixture(scope="module")
def prose(tiny_model: Path, valid_text: Path, test_text: Path):
    """Calibration from the validation slice, held-out windows from the test slice (the tiny models share one
    tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return build_token_set(tokenizer, [valid_text.read_text(encoding="utf-8")[:60_000]],
                           [test_text.read_text(encoding="utf-8")[:20_000]], samples=32, seq_len=64,
                           max_eval_windows=16)


def _fits(folder: Path, tokens, removed: list[int]):
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    # The refit's own gain is measured from the map (on these tiny random models the default's refit of the whole
    # projection leaves it little: see fit_linear_repair's ``fit``).
    repair = fit_linear_repair(model, family, tokens, removed, batch_size=8, fit="map")
    stack = InMemoryStack(model, family)
    refit = fit_mlp_refit(stack, family, tokens, repair, batch_size=8)
    return loaded, stack, repair, refit


def _kl(stack, tokens, removed: list[int], weights: dict) -> float:
    reference = ops.reference(stack, tokens.eval_windows, tokens.pad_id, 8)
    return ops.compare(stack, tokens.eval_windows, tokens.pad_id, reference, removed, weights)[1].mean_kl


@pytest.mark.parametrize("name", ["llama", "gpt2", "falcon"])
def test_the_refit_brings_held_out_text_closer_to_the_original(tiny_family, name: str, prose) -> None:
    """Llama (gated MLP), GPT-2 (Conv1D projections with biases), Falcon (parallel attention and MLP)."""
    removed = [2, 3]
    loaded, stack, repair, refit = _fits(tiny_family(name), prose, removed)
    with torch.no_grad():
        before = loaded.model(input_ids=PROMPT).logits
    (run,) = refit.runs
    assert run.layer == 1 and run.steps == training_steps(run.tokens) and run.tokens == prose.sample_tokens
    assert run.residual_after < 0.9 * run.residual_before, run  # on rows the training never saw
    mlp = mlp_refit.mlp_path(loaded.family)
    changed = [k for k, v in refit.tensors.items() if not torch.equal(v, loaded.model.get_parameter(k))]
    assert changed and all(f".1.{mlp}." in k for k in changed), changed
    linear_kl, refit_kl = _kl(stack, prose, removed, repair.tensors), _kl(stack, prose, removed, refit.tensors)
    print(f"{name}: held-out KL to the original, linear repair {linear_kl:.5f}, + MLP refit {refit_kl:.5f}")
    assert refit_kl < 0.9 * linear_kl
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=PROMPT).logits, before, rtol=0, atol=0)  # untouched


def test_the_linear_repair_stays_when_no_step_beats_it_on_the_held_out_rows(tiny_family, prose) -> None:
    """The tiny random Gemma 3 (its MLP output normalised) only overfits its 1,843 training rows: the held-out
    error rises from the first step, so the refit must hand back the linear repair's weights unchanged."""
    _, _, repair, refit = _fits(tiny_family("gemma3"), prose, [2, 3])
    (run,) = refit.runs
    assert run.residual_after == run.residual_before and not run.kept
    # Nothing of that MLP is written (its unchanged gate and up projections were, and a GGUF re-quantized them).
    assert refit.tensors.keys() == repair.tensors.keys()
    for key, value in repair.tensors.items():
        assert torch.equal(refit.tensors[key], value), key


def test_a_family_without_an_mlp_module_keeps_the_linear_repair(tiny_family, prose) -> None:
    _, _, repair, refit = _fits(tiny_family("opt"), prose, [2, 3])
    assert repair.tensors and refit.tensors.keys() == repair.tensors.keys()
    assert refit.notes == [NOTE_NO_MLP_MODULE] and not refit.runs


def test_few_tokens_per_run_are_a_memory_bound_said_in_the_result(tiny_model: Path, prose,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlp_refit, "MAX_REFIT_TOKENS", 700)
    monkeypatch.setattr(mlp_refit, "BATCH_TOKENS", 256)
    _, _, _, refit = _fits(tiny_model, prose, [3])
    assert refit.capped and refit.runs[0].tokens == 700  # evenly spread over the set


def test_a_half_precision_models_refit_comes_back_in_its_own_dtype(tiny_model: Path, prose,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained in float32, written in the model's dtype as the linear repair's tensors are (float32 copies of a
    large bfloat16 model's MLPs take twice the memory)."""
    monkeypatch.setattr(mlp_refit, "MIN_STEPS", 20)  # a few steps improve on the map already
    loaded = load_model(resolve(str(tiny_model)), "cpu", "bfloat16")
    repair = fit_linear_repair(loaded.model, loaded.family, prose, [3], batch_size=8, fit="map")
    seen: list[tuple[int, int]] = []
    refit = fit_mlp_refit(InMemoryStack(loaded.model, loaded.family), loaded.family, prose, repair, batch_size=8,
                          progress=lambda stage, done, total, partial=None: seen.append((done, total)))
    assert refit.runs[0].kept and len(refit.tensors) == 3  # the gate, up and down projections of layer 2
    # The bar ends full: the training's fractional work once added up to one short of the total rounded up.
    assert seen[0] == (0, seen[0][1]) and seen[-1] == (seen[0][1], seen[0][1]) and seen == sorted(seen)
    assert {v.dtype for v in refit.tensors.values()} == {torch.bfloat16}


def test_the_refit_keeps_its_rows_within_the_memory_bound_and_counts_the_rows_it_reads() -> None:
    """Two float32 rows a token within 1 GiB, between a batch and MAX_REFIT_TOKENS; the estimate counts a small
    set's rows in batches of that set's size, a large one's in batches of BATCH_TOKENS."""
    assert (mlp_refit.token_cap(4096), mlp_refit.token_cap(64), mlp_refit.token_cap(10**6)) == (32_768, 131_072, 1024)
    assert mlp_refit.trained_rows(500) == 200 * 500  # MIN_STEPS steps of every one of the 500 rows
    assert mlp_refit.trained_rows(100_000) == 880 * 1024  # 10 epochs of 88 batches of the 90,000 not held out


def test_cancel_stops_the_training_and_the_model_is_as_it_was(tiny_model: Path, prose) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    repair = fit_linear_repair(model, family, prose, [3], batch_size=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[int] = []

    def progress(stage: str, done: int, total: int, partial: object = None) -> None:
        assert stage == "refit" and 0 <= done <= total
        seen.append(done)

    with pytest.raises(Cancelled):
        fit_mlp_refit(InMemoryStack(model, family), family, prose, repair, 8, progress=progress,
                      cancel=lambda: len(seen) > 40)  # inside the training (the walk reports ~11 times)
    assert seen == sorted(seen)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def _spec(model: Path, calib: Path, out: Path, **overrides) -> JobSpec:
    values = dict(model=str(model), calib=[str(calib)], samples=8, seq_len=32, eval_windows=4, batch_size=4,
                  device="cpu", dtype="float32", count=3, out=str(out), prompt="The history of",
                  max_new_tokens=4, repair="refit")
    values.update(overrides)
    return JobSpec(**values)


@pytest.mark.parametrize("name", ["gemma3", "gpt2"])
def test_the_refit_job_saves_a_stock_model_alike_in_memory_and_streamed(tiny_family, name: str, small_calib: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole job with ``--repair refit``: in memory and one layer at a time it saves the same tensors, and
    stock transformers reloads them to the logits the engine's own view gives. Gemma 3 (fitted through the norm
    after the MLP) and GPT-2 (Conv1D weights stored transposed, biases); Llama runs in the CLI and GGUF tests."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from shortgpt_desktop.core.pipeline import modified

    monkeypatch.setattr(mlp_refit, "MIN_STEPS", 40)  # what is tested here does not need a full fit

    folder = tiny_family(name)
    reports = {}
    engines = {}
    for mode, low in (("memory", False), ("streamed", True)):
        engine = Engine()
        reports[mode] = run_prune(engine, _spec(folder, small_calib, tmp_path / mode, low_memory=low))
        engines[mode] = engine
    whole, streamed = reports["memory"], reports["streamed"]
    assert streamed.removed_layers == whole.removed_layers
    refitted = [r for r in whole.repair_runs if "refit_after" in r]
    # "refit" where a refitted MLP is written; a run no step improved keeps the linear repair
    assert whole.repair == streamed.repair == ("refit" if any(r["refit_kept"] for r in refitted) else "linear")
    assert refitted and all(r["refit_after"] <= r["refit_before"] for r in refitted)
    assert "refit" in whole.timings
    a, b = load_file(tmp_path / "memory" / "model.safetensors"), load_file(tmp_path / "streamed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)

    engine = engines["memory"]
    adjusted = engine.adjusted
    assert adjusted is not None and adjusted.refit is not None
    with torch.no_grad(), modified(engine.loaded, whole.removed_layers, adjusted.weights):
        in_memory = engine.loaded.model(input_ids=PROMPT).logits
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "memory", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=PROMPT).logits, in_memory, rtol=1e-5, atol=1e-5)
    card = (tmp_path / "memory" / "README.md").read_text(encoding="utf-8")
    # Said where a step did better on held-out rows; a run none improved keeps the linear repair, and says so.
    improved = [r for r in refitted if r["refit_after"] < r["refit_before"]]
    assert ("refitted on the calibration activations" in card) == bool(improved)


def test_the_estimate_counts_the_refit(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model, small_calib, tmp_path / "out", metric="bi")
    engine = Engine()
    engine.score(spec)
    refit = engine.job_estimate(spec, 2, check=False)
    linear = engine.job_estimate(JobSpec(**{**spec.__dict__, "repair": "linear"}), 2, check=False)
    assert list(refit.steps) == ["repairing", "refitting"] and "refitting" not in linear.steps
    assert refit.steps["refitting"] > linear.steps["repairing"]
    linear_spec = JobSpec(**{**spec.__dict__, "repair": "linear"})
    engine.prepare(linear_spec, engine.plan(count=2))  # repaired, not refitted: the refit is still to come
    assert list(engine.job_estimate(spec, 2, check=False).steps) == ["refitting"]
    engine.prepare(spec, engine.plan(count=2))
    assert list(engine.job_estimate(spec, 2, check=False).steps) == []


def test_the_estimate_counts_the_chat_guard_of_a_chat_models_refit(tiny_model: Path, small_calib: Path,
                                                                    tmp_path: Path) -> None:
    from shortgpt_desktop.core.cut.chat_guard import ANSWER_TOKENS
    from shortgpt_desktop.core.estimate import guard_seconds, refit_token_layers, run_count, shape_of

    spec = _spec(tiny_model, small_calib, tmp_path / "out", metric="bi")
    engine = Engine()
    engine.score(spec)
    base = engine.job_estimate(spec, 2, check=False).steps["refitting"]
    assert engine.guard_work(spec) is None  # a base model: no guard
    engine.loaded.tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                                             "{% if add_generation_prompt %}:{% endif %}")
    guard = engine.guard_work(spec)
    assert guard.prompts == 6 and guard.new_tokens == ANSWER_TOKENS and guard.kv_cache
    assert engine.guard_work(JobSpec(**{**spec.__dict__, "repair": "linear"})) is None
    chat = engine.job_estimate(spec, 2, check=False).steps["refitting"]
    rate = engine.scored.pass_seconds / (engine.scored.sample_tokens * shape_of(engine.loaded).n_layers)
    runs = run_count(engine.plan(count=2).removed)  # the plan's own runs, once the layers are known
    # its answers' steps at least the generation step the scoring job timed (:class:`.estimate.StepProbe`); and the
    # refit fits on the model's own chat answers beside the samples, as the repair does
    assert guard.probe is not None
    shape, removed = shape_of(engine.loaded), engine.plan(count=2).removed
    own = engine._repair_fit(spec, 0)[2]  # the own answers' tokens alone
    assert own > 0
    tokens = engine.scored.sample_tokens
    answers = (refit_token_layers(shape, tokens + own, 2, runs, removed)
               - refit_token_layers(shape, tokens, 2, runs, removed)) * rate
    assert chat - base == pytest.approx(guard_seconds(guard, shape, 2, rate, runs) + answers, rel=1e-9)
    assert chat > base


def test_the_refit_keeps_the_best_step_it_reports() -> None:
    """Training keeps the weights of the step with the least held-out error and reports that error; a refit that
    kept the last step's weights reported 0.821 for weights that gave 0.851."""
    import math

    from shortgpt_desktop.core.cut.repair import held_out_split

    torch.manual_seed(0)
    n = 60
    inputs = torch.randn(n, 8)
    targets = inputs @ torch.randn(8, 8) * 0.3 + torch.randn(n, 8)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))
    torch.nn.init.zeros_(mlp[2].weight)
    torch.nn.init.zeros_(mlp[2].bias)
    _, held, _ = held_out_split(n, 0)

    def held_error() -> float:
        with torch.no_grad():
            error = float(((mlp(inputs[held]) - targets[held]) ** 2).sum())
        return math.sqrt(error / float((targets[held] ** 2).sum()))

    errors: list[float] = []  # the held-out error after each step
    before, after, steps = mlp_refit._train(mlp, torch.nn.Identity(), inputs, targets, "cpu", 0,
                                            lambda: errors.append(held_error()))
    assert after < before
    assert held_error() == pytest.approx(after, abs=1e-6)
    # Checked every CHECK_EVERY steps and at the last: here the best check is not the last step.
    checked = [e for step, e in enumerate(errors) if (step + 1) % mlp_refit.CHECK_EVERY == 0 or step == steps - 1]
    assert after == pytest.approx(min(checked), abs=1e-6) and after < errors[-1] - 0.01
