"""The engine's quality curve is the recipe Save uses: its point at a count is what Check gives for it."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import pytest

from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.model import memory
from shortgpt_desktop.core.model.memory import SAFETY
from shortgpt_desktop.core.pipeline import JobSpec


def small_job(model: Path, calib: Path, **settings: Any) -> JobSpec:
    """8 x 32 tokens of ``calib``, 2 held-out windows, on the CPU in float32, no prompt unless given."""
    return JobSpec(**{"model": str(model), "calib": [str(calib)], "samples": 8, "seq_len": 32, "eval_windows": 2,
                      "batch_size": 4, "device": "cpu", "dtype": "float32", "prompt": "", **settings})


def test_the_quality_curve_point_at_a_count_is_the_check_at_that_count(tiny_model: Path, small_calib: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    curve = engine.quality_curve(spec, max_removed=3)
    assert [p.k for p in curve.points] == [0, 1, 2, 3]
    assert curve.label == "bi+ + repair"
    assert curve.baseline is not None and [p.k for p in curve.baseline.points] == [0, 1, 2, 3]
    assert curve.points[0].perplexity == curve.baseline.points[0].perplexity
    assert curve.points[0].same_top == 1.0 and curve.points[0].mean_kl == 0.0
    for k in (2, 3):
        plan = engine.prepare(spec, engine.plan(count=k))
        checked = engine.check(spec, plan.removed)
        point = curve.points[k]
        assert point.removed == plan.removed
        assert point.perplexity == pytest.approx(checked.ppl_after, rel=1e-9)
        assert point.same_top == pytest.approx(checked.fidelity.same_top, rel=1e-9)
        assert point.mean_kl == pytest.approx(checked.fidelity.mean_kl, rel=1e-9) and point.mean_kl > 0
        assert checked.ppl_before == pytest.approx(curve.points[0].perplexity, rel=1e-9)
    # Plain BI is plain removal in BI order, measured on the same windows.
    assert all(p.quiz_known is None for p in curve.points + curve.baseline.points)  # no prompt: no quiz, as Check
    bi = engine.stats.bi
    order = sorted(range(len(bi)), key=lambda i: (bi[i], -i))
    assert curve.baseline.points[1].removed == [order[0]]


def test_a_curve_point_says_which_part_of_its_cut_the_repair_could_not_reach(tiny_model: Path,
                                                                             small_calib: Path) -> None:
    """The sequential order removes layer 0 first: a run starting there has no kept layer before it to refit, so
    the curve's "+ repair" is not true of those points, and each says so; reverse order's runs are repaired."""
    spec = small_job(tiny_model, small_calib, metric="sequential")
    engine = Engine()
    engine.score(spec)
    curve = engine.quality_curve(spec, max_removed=2)
    assert curve.label == "sequential + repair"
    assert [p.removed for p in curve.points[1:]] == [[0], [0, 1]]
    assert curve.points[0].not_repaired == []
    assert all(len(p.not_repaired) == 1 and "starts at layer 0" in p.not_repaired[0] for p in curve.points[1:])
    reverse = Engine()
    reverse.score(dataclasses.replace(spec, metric="reverse"))
    curve = reverse.quality_curve(dataclasses.replace(spec, metric="reverse"), max_removed=2)
    assert [p.removed for p in curve.points[1:]] != [[0], [0, 1]]
    assert all(p.not_repaired == [] for p in curve.points)


def test_the_rest_of_a_job_is_estimated_from_the_scoring_speed(tiny_model: Path, small_calib: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    assert engine.job_estimate(spec, 2, check=True) is None  # nothing measured yet
    engine.score(spec)
    # At the speed of the pass alone: the load and the tokenising made the first estimate three times the job.
    assert 0 < engine.scored.pass_seconds < engine.scored.seconds
    estimate = engine.job_estimate(spec, 2, check=True)
    # on 8 samples bi+ judges its finalists with the fit the job saves: the repair is made while choosing
    assert list(estimate.steps) == ["choosing", "checking"] and estimate.total > 0
    assert "checking" not in engine.job_estimate(spec, 2, check=False).steps
    engine.prepare(spec, engine.plan(count=2))
    assert list(engine.job_estimate(spec, 2, check=True).steps) == ["checking"]  # chosen and repaired already
    # Healing asked for after that: it is still to come (only the plan's layers were compared, and it was left out).
    healed = JobSpec(**{**spec.__dict__, "heal_steps": 3})
    assert list(engine.job_estimate(healed, 2, check=True).steps) == ["healing", "checking"]


def test_the_repair_bi_plus_asked_its_finalist_with_is_the_one_saved(tiny_model: Path, small_calib: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """bi+ asks the answer probe with the repair the saved model gets (every calibration sample); the job then
    repairs with that very fit instead of fitting it again, and its tensors are what a fresh full fit gives."""
    import torch

    from shortgpt_desktop.core.cut import repair as repair_module
    from shortgpt_desktop.core.cut.answer_probe import AnswerProbe

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=24, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    assert len(engine.tokens_for(spec).samples) > 16  # the quick fits (2 × 8 samples) are not the full one
    # A probe no finalist falls silent on (no token ends a turn): the first finalist asked wins.
    monkeypatch.setattr(Engine, "_answer_probe", lambda self: AnswerProbe([[5, 6, 7, 8]], {-1}, 0))
    full_fits: list[tuple[int, ...]] = []
    fit = repair_module.fit_linear_repair

    def counting_fit(model, family, token_set, removed, *args, **kwargs):
        if len(token_set.samples) == len(engine.tokens_for(spec).samples):
            full_fits.append(tuple(removed))
        return fit(model, family, token_set, removed, *args, **kwargs)

    monkeypatch.setattr(repair_module, "fit_linear_repair", counting_fit)
    plan = engine.prepare(spec, engine.plan(count=2))
    selection = engine.selections[2]
    asked = [c for c in selection.candidates if c.silent is not None]
    assert asked and all(c.silent == 0 for c in asked)
    assert full_fits == [tuple(plan.removed)], "the winner's repair is fitted once, while choosing"
    adjusted = engine.adjust(spec, plan.removed)
    assert full_fits == [tuple(plan.removed)], "and not again when the job repairs"
    assert adjusted.repair is engine.fitted.get(plan.removed)
    fresh = fit(engine.loaded.model, engine.loaded.family, engine.tokens_for(spec), plan.removed, spec.batch_size)
    assert fresh.tensors and set(fresh.tensors) == set(adjusted.weights)
    for name, tensor in fresh.tensors.items():
        torch.testing.assert_close(adjusted.weights[name], tensor, rtol=0, atol=0)
    engine.forget()
    assert len(engine.fitted) == 0


def test_a_chat_models_estimate_counts_its_own_answers_until_they_are_written(tiny_model: Path,
                                                                             small_calib: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=64, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    engine.loaded.tokenizer.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                                             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    estimate = engine.job_estimate(spec, 2, check=False)
    assert list(estimate.steps) == ["choosing", "answering"] and estimate.steps["answering"] > 0  # fitted choosing
    import dataclasses

    assert "answering" not in engine.job_estimate(dataclasses.replace(spec, repair="none"), 2, check=False).steps
    engine.answers = ((("another model",), spec.seq_len), [[7, 7, 7]])  # another model's, kept from before
    engine.repair_tokens(engine.tokens_for(spec))
    assert engine.answers[0] == (engine.load_key, spec.seq_len) and engine.answers[1] != [[7, 7, 7]]
    assert "answering" not in engine.job_estimate(spec, 2, check=False).steps  # written once per model


def test_the_healing_teacher_runs_the_original_over_the_batches_healing_reads_alone(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps of healing read two of the four calibration batches: the original runs over those alone (no
    head pass), its logits on them are the logits of the original over every batch (both computed in the dtype
    healing computes in), and so is the healing."""
    import dataclasses

    import torch

    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.backends.layerwise import Batch, InMemoryStack
    from shortgpt_desktop.core.cut import healing

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=16, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="", heal_steps=2)
    engine = Engine()
    engine.load(spec)
    tokens = engine.tokens_for(spec)
    assert len(tokens.samples) == 16
    loaded, stack = engine.loaded, engine.backend.stack
    with healing.autocast_to(loaded.model, healing.compute_dtype_for(loaded.model)):  # as healing computes (bf16?)
        whole = ops.reference(stack, tokens.samples, tokens.pad_id, spec.batch_size)  # the teacher as it was
    read: list[int] = []
    final_states = ops.final_states
    monkeypatch.setattr(ops, "final_states", lambda s, windows, *a, **k: read.append(len(windows)) or
                        final_states(s, windows, *a, **k))
    monkeypatch.setattr(ops, "head_nll", lambda *a, **k: pytest.fail("the teacher needs no perplexity"))
    teacher = engine._teacher(spec, tokens, None)
    assert read == [2 * spec.batch_size]
    monkeypatch.undo()
    logits = teacher.bind()
    head = InMemoryStack(loaded.model, loaded.family)
    batches = healing._batches(tokens, spec.batch_size, "cpu")
    for number in (0, 1):
        ids, mask = batches[number]
        with head.head() as logits_of:
            expected = logits_of(Batch(ids, mask, None), whole.final_states[number])
        torch.testing.assert_close(logits(number, ids, mask), expected, rtol=0, atol=0)
    with pytest.raises(IndexError):
        logits(2, *batches[2])  # never read by two steps

    removed = [2, 3]
    healed = engine.adjust(spec, removed)
    with head.head() as logits_of, healing.autocast_to(loaded.model, healing.compute_dtype_for(loaded.model)):
        full = [logits_of(Batch(ids, mask, None), whole.final_states[i]) for i, (ids, mask) in enumerate(batches)]
    monkeypatch.setattr(Engine, "_teacher", lambda self, *a: type("Whole", (), {
        "bind": lambda _: lambda number, ids, mask: full[number].clone()})())
    engine.adjusted = None
    as_before = engine.adjust(dataclasses.replace(spec), removed)
    assert set(healed.weights) == set(as_before.weights) and healed.heal is not None
    for name, tensor in as_before.weights.items():
        torch.testing.assert_close(healed.weights[name], tensor, rtol=0, atol=0)


def test_the_quality_curve_asks_the_quiz_the_check_asks_at_each_count(tiny_model: Path, small_calib: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """With a prompt the check asks the quiz, and so does the curve: its point at k is the check's quiz at k."""
    from shortgpt_desktop.core.measure import quiz as quiz_module

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="Hello")
    engine = Engine()
    engine.score(spec)
    # A random model knows none of the real questions: accept a word the original writes to two of them.
    questions = quiz_module.QUESTIONS[:3]
    original = quiz_module.ask_quiz(engine.backend.stack, engine.loaded.tokenizer, engine.loaded.model, [1], None,
                                    questions=questions)[1]
    words = [answer.split()[0].lower() for answer in original[:2]]
    monkeypatch.setattr(quiz_module, "QUESTIONS", ((questions[0][0], (words[0],)), (questions[1][0], (words[1],)),
                                                   (questions[2][0], ("qqzx",))))
    curve = engine.quality_curve(spec, max_removed=2)
    assert curve.points[0].quiz_kept == curve.points[0].quiz_known == 2
    for k in (1, 2):
        checked = engine.check(spec, engine.prepare(spec, engine.plan(count=k)).removed)
        assert (curve.points[k].quiz_kept, curve.points[k].quiz_known) == (checked.quiz.kept, checked.quiz.known) \
            and checked.quiz.known == 2
    assert all(p.quiz_known is None for p in curve.baseline.points)
    header, first, *_ = curve.write_csv(tmp_path / "curve.csv").read_text().splitlines()
    assert header.split(",")[8:10] == ["quiz_kept", "quiz_known"] and first.split(",")[8:10] == ["2", "2"]


def test_the_checks_joint_pass_counts_as_one_stage_to_its_end(tiny_model: Path, small_calib: Path) -> None:
    """The original's and the pruned model's first pass run together: one stage, counted to its total. Named by
    its last step, it said 'perplexity, original 30/31' and then 'perplexity, pruned 31/31 in 0.0 s'."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2,
                   batch_size=2, device="cpu", dtype="float32", prompt="", repair="none")
    engine = Engine()
    engine.load(spec)
    seen: list[tuple[str, int, int]] = []
    engine.check(spec, [2, 3], progress=lambda stage, done, total, partial=None: seen.append((stage, done, total)))
    joint = [(done, total) for stage, done, total in seen if stage.startswith("ppl")]
    assert {stage for stage, _, _ in seen if stage.startswith("ppl")} == {"ppl_both"}
    assert joint[0][0] == 0 and joint[-1][0] == joint[-1][1] == 7  # 6 layers, then the head
    seen.clear()
    engine.check(spec, [1], progress=lambda stage, done, total, partial=None: seen.append((stage, done, total)))
    assert {stage for stage, _, _ in seen if stage.startswith("ppl")} == {"ppl_after"}  # the original's is kept
    seen.clear()
    first = engine.checked
    fewer = engine.check(dataclasses.replace(spec, eval_windows=1), [1],
                         progress=lambda stage, done, total, partial=None: seen.append((stage, done, total)))
    assert {stage for stage, _, _ in seen if stage.startswith("ppl")} == {"ppl_both"}  # other windows: run again
    assert fewer.eval_tokens < first.eval_tokens and fewer.ppl_before != first.ppl_before
    # and the original's pass kept for the curve is the one of its own windows
    assert engine.reference_for(spec, engine.tokens_for(spec)).result.perplexity == first.ppl_before


def test_a_rescore_of_the_same_text_keeps_the_fit_and_other_text_drops_it(tiny_model: Path,
                                                                          small_calib: Path) -> None:
    """The repair and healing are fitted on the calibration tokens, not on the scores: scoring the same text again
    (another metric, say) keeps them, so Save does not heal again; scoring other tokens drops them, as the sizes
    and the report read them."""
    import dataclasses

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", prompt="", heal_steps=1)
    engine = Engine()
    engine.score(spec)
    plan = engine.prepare(spec, engine.plan(count=2))
    fitted = engine.adjusted
    assert fitted is not None and fitted.heal is not None and fitted.removed == plan.removed
    engine.score(dataclasses.replace(spec, metric="bi"))
    assert engine._adjusted_for(plan.removed) is fitted
    assert engine.adjust(spec, plan.removed) is fitted  # not healed again
    engine.score(dataclasses.replace(spec, samples=4))
    assert engine._adjusted_for(plan.removed) is None
    assert engine.adjust(spec, plan.removed) is not fitted


def test_a_rescore_after_the_text_was_edited_reads_it_again(tiny_model: Path, small_calib: Path,
                                                             tmp_path: Path) -> None:
    """The tokens were kept by the calibration paths alone: a file edited (or one added to a listed folder) was
    never read again until another model was opened. Jobs after a scoring keep the tokens it scored."""
    import shutil

    calib = tmp_path / "texts"
    calib.mkdir()
    shutil.copy(small_calib, calib / "a.txt")
    spec = JobSpec(model=str(tiny_model), calib=[str(calib)], samples=8, seq_len=32, eval_windows=4, batch_size=4,
                   device="cpu", dtype="float32", prompt="")
    engine = Engine()
    engine.score(spec)
    first = engine.tokens_for(spec)
    (calib / "a.txt").write_text("Other prose entirely, of another kind and another length. " * 400)
    assert engine.tokens_for(spec) is first  # until the next scoring: the check and the save use what was scored
    engine.score(spec)
    edited = engine.tokens_for(spec)
    assert edited is not first and edited.samples != first.samples
    (calib / "b.txt").write_text(small_calib.read_text(encoding="utf-8"), encoding="utf-8")
    engine.score(spec)
    added = engine.tokens_for(spec)
    assert added is not edited
    engine.score(spec)
    assert engine.tokens_for(spec) is added  # nothing changed since: kept


def test_an_evaluation_text_too_short_is_named(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """It was told to "give a separate evaluation text", which it was."""
    from shortgpt_desktop.core.errors import CalibrationError

    short = tmp_path / "eval.txt"
    short.write_text("a")  # one token: no window of two
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], eval_text=str(short), samples=4, seq_len=32,
                   eval_windows=2, batch_size=4, device="cpu", dtype="float32", prompt="")
    with pytest.raises(CalibrationError, match=f"^The evaluation text {short} is too short"):
        Engine().held_out(spec)


def test_the_room_asked_before_scoring_is_for_the_largest_layers_gone(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """Layers of different sizes: the least the output can weigh is the file without the largest ones."""
    from types import SimpleNamespace

    from shortgpt_desktop.core import engine as engine_module

    layer_bytes = [10, 50, 20, 40, 30]
    rest = 1000
    engine = Engine()
    engine.source, engine.info = object(), SimpleNamespace(n_layers=len(layer_bytes))
    monkeypatch.setattr(Engine, "writer", property(lambda self: SimpleNamespace(
        side_files_bytes=7, sizes=lambda source, removed, n: (rest + sum(layer_bytes),
                                                              rest + sum(layer_bytes) - layer_bytes[removed[0]]))))
    asked: list[tuple] = []
    monkeypatch.setattr(engine_module, "check_room", lambda *args, **kwargs: asked.append((args, kwargs)))
    engine.check_room_before_scoring(tmp_path, 2)
    assert asked == [((tmp_path, rest + 10 + 20 + 30, 7), {"at_least": True})]
    engine.check_room_before_scoring(tmp_path, 0)
    engine.check_room_before_scoring(tmp_path, 5)  # nothing to choose from: refused by the plan, not the disk
    assert len(asked) == 1


@pytest.mark.parametrize("config_dtype", ["bfloat16", None])
def test_a_bfloat16_checkpoint_loaded_in_float32_is_sized_by_what_its_files_store(
        tiny_model: Path, small_calib: Path, tmp_path: Path, config_dtype: str | None) -> None:
    """A bfloat16 safetensors folder (its config.json saying so, or saying no dtype) loaded in float32, as on a
    CPU: the size expected before Save is what its files store (2 bytes a value, copied byte for byte), not the
    loaded float32's 4, and it is what Save writes."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    if config_dtype:
        config["torch_dtype"] = config_dtype
    (folder / "config.json").write_text(json.dumps(config))
    import torch

    weights = folder / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    spec = JobSpec(model=str(folder), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4, batch_size=4,
                   device="cpu", dtype="float32", prompt="", metric="bi", repair="none")
    engine = Engine()
    engine.score(spec)
    plan = engine.plan(count=2)
    result = engine.save(plan, tmp_path / "out")
    written = sum((result.folder / f).stat().st_size for f in result.files if f.endswith(".safetensors"))
    assert plan.bytes_after == pytest.approx(written, rel=0.02)


def test_the_quality_curve_keeps_the_fit_check_made(tiny_model: Path, small_calib: Path) -> None:
    """The curve fits each count linear and unhealed; it replaced the healed fit of the check, and Save healed again
    (minutes to hours on a CPU) for the same result."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", prompt="", metric="bi", heal_steps=1)
    engine = Engine()
    engine.score(spec)
    removed = engine.plan(count=2).removed
    healed_ppl = engine.check(spec, removed).ppl_after
    healed = engine.adjusted
    assert healed is not None and healed.heal is not None
    curve = engine.quality_curve(spec)  # half the 6 layers by default
    assert [p.k for p in curve.points] == [0, 1, 2, 3]
    assert engine.adjusted is healed and engine.adjust(spec, removed) is healed  # nothing to heal again
    # and its points are unhealed: they would train once per count
    unhealed = engine.check(dataclasses.replace(spec, heal_steps=0), removed)
    assert curve.points[2].removed == removed
    assert curve.points[2].perplexity == pytest.approx(unhealed.ppl_after, rel=1e-9) != healed_ppl


@pytest.mark.parametrize(("dtype", "scale", "low_memory", "said", "ran"), [
    ("float32", float("nan"), False, r"hidden states are not finite numbers at layer 3 and 2 more in float32, so no "
                                     r"layer can be scored: its weights may hold NaN", 4),
    ("float16", 1e6, False, r"hidden states overflow float16 at layer 3 and 2 more \(not finite numbers\), so no "
                            r"layer can be scored\.$", 4),
    ("float16", 1e6, True, r"hidden states overflow float16 at layer 3 \(not finite numbers\), so no layer can be "
                           r"scored\.$", 4),
])
def test_hidden_states_that_are_not_numbers_are_refused_at_the_first_batch(tiny_model: Path, small_calib: Path,
                                                                          tmp_path: Path, dtype: str, scale: float,
                                                                          low_memory: bool, said: str,
                                                                          ran: int) -> None:
    """Gemma 3 in float16 (on the CPU asked for, and where ``auto`` picks it) overflowed from layer 7 on: 11 of its 18
    layers scored NaN, the job chose among NaNs, saved the model and exited 0 with "perplexity: nan". Weights
    holding NaN did the same. Both are now one sentence, the float16 one with the front end's way out, said after
    the first batch (``ran``: 4 of the 8 samples), or one layer at a time after the layer (4 of 6), not after the
    whole pass."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from shortgpt_desktop import cli
    from shortgpt_desktop.core.errors import Hint, UserError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.mul_(scale)
    model.save_pretrained(broken)
    spec = JobSpec(model=str(broken), calib=[str(small_calib)], samples=8, seq_len=32, batch_size=4, device="cpu",
                   dtype=dtype, low_memory=low_memory)
    done: list[int] = []
    with pytest.raises(UserError, match=said) as refused:
        Engine().score(spec, progress=lambda stage, at, total, partial=None: done.append(at) if stage == "scoring"
                       else None)
    assert max(done) == ran
    if dtype == "float16":
        assert refused.value.hint is Hint.WIDER_DTYPE
        assert cli.error_line(refused.value).endswith("be scored; use --dtype float32 or --dtype bfloat16.")
    Engine().score(JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, batch_size=4,
                           device="cpu", dtype=dtype))  # the same model whole scores in either type


def test_the_memory_said_before_a_job_is_for_the_way_it_will_run(tiny_model: Path, small_calib: Path) -> None:
    """One layer at a time (asked for, or chosen because the whole model would not fit), the job said the whole
    model's peak: 2.7 GB for SmolLM2's quick score, whose peak was under 1 GB. The way is decided when the model is
    opened and kept for its load."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, batch_size=4,
                   device="cpu", dtype="float32", eval_windows=2)
    engine = Engine()
    whole = engine.open(spec)
    assert whole.mode == "memory" and whole.memory_needed_bytes == whole.memory.peak_bytes
    streamed = engine.open(JobSpec(**{**spec.__dict__, "low_memory": True}))
    memory = streamed.memory
    assert streamed.mode == "streamed"
    assert streamed.memory_needed_bytes == memory.runtime_bytes + memory.streamed_total < memory.peak_bytes
    engine.score(JobSpec(**{**spec.__dict__, "low_memory": True}))
    assert engine.is_streamed
    # `shortgpt score` runs the scoring pass alone: bi+'s caches and the repair's streams, which it never holds,
    # were counted (2.3 GB said for a peak of 0.8 GB one layer at a time).
    from shortgpt_desktop.jobs import run_score

    said = []
    run_score(Engine(), spec, on_info=said.append)
    assert said[0].memory.recipe_bytes == 0 < whole.memory.recipe_bytes
    assert said[0].memory_needed_bytes < whole.memory_needed_bytes


def test_a_scoring_pass_that_stops_at_the_final_norm_counts_no_logits(tiny_model: Path, small_calib: Path) -> None:
    """`shortgpt score` with a hooked metric never runs the head, and its estimate counted three float32 copies of
    a batch's logits: a random 1.3 GB Llama (49k vocabulary) at 4 x 2048 tokens said 6.2 GB for a 1.3 GB peak, and
    with 3 GB free the job was refused. The single-removal perplexity metric does run the head."""
    from shortgpt_desktop.jobs import run_score

    def said(metric: str) -> Any:
        infos: list[Any] = []
        spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, batch_size=4,
                       device="cpu", dtype="float32", metric=metric)
        run_score(Engine(), spec, on_info=infos.append)
        return infos[0].memory

    hooked, own = said("bi"), said("ppl")
    vocab = Engine().open(JobSpec(model=str(tiny_model), calib=[str(small_calib)])).vocab_size
    assert own.batch_working_bytes - hooked.batch_working_bytes == 4 * 32 * 3 * 4 * vocab
    assert said("angular").batch_working_bytes == hooked.batch_working_bytes == 4 * 32 * 8 * 64 * 4  # hidden 64


def test_the_memory_said_before_eval_counts_a_batch_of_its_windows(tiny_model: Path, small_calib: Path) -> None:
    """eval draws one sample, and its estimate counted the logits of one window where its passes hold a batch of
    four: Gemma 3's ``eval --against`` said 2.6 GB and peaked at 4.7 GB while comparing the two models' logits."""
    from shortgpt_desktop.jobs import run_eval

    said = []
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], seq_len=32, eval_windows=4, batch_size=4,
                   device="cpu", dtype="float32")
    run_eval(Engine(), spec, on_info=said.append)
    four = Engine().open(JobSpec(**{**spec.__dict__, "samples": 4, "metric": "bi", "repair": "none"})).memory
    one = Engine().open(JobSpec(**{**spec.__dict__, "samples": 1, "check_perplexity": False})).memory
    assert said[0].memory.batch_working_bytes == four.batch_working_bytes == 4 * one.batch_working_bytes


def test_the_report_carries_the_check_only_for_the_recipe_it_measured(tiny_model: Path, small_calib: Path) -> None:
    """The window's Check of the repaired cut, then Save with Repair unticked: the card gave the repaired model's
    perplexity, KL and same top beside 'Repair: none'. A check is the report's only for the same cut, repair,
    healing and tokens."""
    import dataclasses

    spec = small_job(tiny_model, small_calib, metric="bi", repair="linear")
    engine = Engine()
    engine.score(spec)
    plan = engine.plan(count=2)
    checked = engine.check(spec, plan.removed)
    report = engine.report(plan, spec)
    assert report.ppl_after == checked.ppl_after and report.fidelity["mean_kl"] == checked.fidelity.mean_kl
    assert report.repair == "linear" and report.repair_runs
    # A cut that shares its first layer with the one repaired is not that cut: no repair of it is written or named.
    first = plan.removed[0]
    other_cut = engine.plan(layers=[first, next(i for i in range(first + 1, 6) if i not in plan.removed)])
    assert engine.report(other_cut, spec).repair == "none" and not engine.report(other_cut, spec).repair_runs
    for other in (dataclasses.replace(spec, repair="none"), dataclasses.replace(spec, heal_steps=1),
                  dataclasses.replace(spec, eval_windows=1)):
        report = engine.report(plan, other)
        assert report.ppl_before is None and report.ppl_after is None and not report.fidelity, other
    plain = engine.check(dataclasses.replace(spec, repair="none"), plan.removed)
    assert plain.ppl_after != checked.ppl_after  # the repair changes the figures the card gave
    assert engine.report(plan, dataclasses.replace(spec, repair="none")).ppl_after == plain.ppl_after


def test_a_block_metrics_curve_leaves_the_scores_of_the_plan_on_screen(tiny_model: Path, small_calib: Path) -> None:
    """Angular scores depend on the block size: the curve's plans for 1..k recomputed them, and the engine kept the
    blocks of its last count, so the export and the card of a 2-layer plan said 'block of 3'."""
    spec = small_job(tiny_model, small_calib, metric="angular", repair="none")
    engine = Engine()
    engine.score(spec)
    plan = engine.plan(count=2)
    shown = engine.scores
    assert shown.block_size == 2
    engine.quality_curve(spec, 3)
    assert engine.scores is shown
    assert engine.report(plan, spec).block_size == 2


def test_a_plan_bi_plus_has_still_to_choose_says_so_and_bounds_no_size(tiny_q4_gguf: Path, small_calib: Path) -> None:
    """The lowest scores stand in until bi+ measures: its other layers can have more cuts to repair, so the size of
    the layers shown is no 'up to' (SmolLM2: 84.8 MB said 'up to', 86.3 MB written)."""
    spec = small_job(tiny_q4_gguf, small_calib, metric="bi+")
    engine = Engine()
    engine.open(spec)
    engine.set_output_format("gguf")  # the format that writes a repaired weight in another type (Q8_0)
    engine.score(spec)
    shown = engine.plan(count=2)
    assert shown.chosen_later and shown.bytes_reencoded > 0 and not shown.reencoded_at_most
    final = engine.prepare(spec, shown)
    assert not final.chosen_later and not engine.plan(count=2).chosen_later
    plain = engine.rescore("bi", 1)
    engine.use_scores(plain)
    by_bi = engine.plan(count=2)
    assert not by_bi.chosen_later and by_bi.reencoded_at_most  # plain BI's layers are the ones saved: a bound


def test_a_check_without_the_repair_does_not_reuse_a_choice_compared_repaired(tiny_model: Path,
                                                                             small_calib: Path) -> None:
    spec = small_job(tiny_model, small_calib, metric="bi+")
    engine = Engine()
    engine.score(spec)
    plan = engine.prepare(spec, engine.plan(count=2))
    assert engine.selections[2].judged_repaired
    unrepaired = dataclasses.replace(spec, repair="none")
    engine.prepare(unrepaired, plan)
    assert not engine.selections[2].judged_repaired  # measured again, compared as the job saves it: unrepaired


def test_bi_plus_measured_choices_come_back_with_bi_plus_after_a_look_at_another_metric(
        tiny_model: Path, small_calib: Path) -> None:
    """The window's Metric box shows another metric of the same pass; flipping to BI and back threw away every
    choice bi+ had measured (minutes each on a CPU for a real model)."""
    spec = small_job(tiny_model, small_calib, metric="bi+", repair="none")
    engine = Engine()
    engine.score(spec)
    removed = engine.prepare(spec, engine.plan(count=2)).removed
    measured = engine.selections[2]
    engine.use_scores(engine.rescore("bi", 1))
    assert engine.selections == {} and "not yet checked" not in " ".join(engine.plan(count=2).notes)
    engine.use_scores(engine.rescore("bi+", 1))
    assert engine.selections[2] is measured and engine.plan(count=2).removed == removed
    engine.score(spec)  # a new pass: what was measured on the last one is gone
    assert engine.selections == {} and engine.set_aside == {}


def test_the_curve_of_imported_bi_plus_scores_names_its_baseline_plain_bi(tiny_model: Path, small_calib: Path) -> None:
    """Scores read back from a report have no pass statistics; bi+'s are BI's, and the dashed baseline in their
    order was labelled 'plain bi+'."""
    spec = small_job(tiny_model, small_calib, metric="bi+", repair="none")
    engine = Engine()
    engine.score(spec)
    fresh = engine.quality_curve(spec, 2)
    engine.use_imported_scores(spec, engine.scores)
    assert engine.stats is None
    imported = engine.quality_curve(spec, 2)
    assert imported.baseline.label == fresh.baseline.label == "bi"
    assert [p.removed for p in imported.baseline.points] == [p.removed for p in fresh.baseline.points]


def test_a_blank_prompt_is_no_prompt_in_the_check_and_the_card(tiny_model: Path, small_calib: Path) -> None:
    """A prompt of spaces generates nothing, and the card gave it as the prompt, with its chat template's note."""
    spec = small_job(tiny_model, small_calib, prompt="   ", metric="bi", repair="none")
    engine = Engine()
    engine.score(spec)
    plan = engine.plan(count=1)
    checked = engine.check(spec, plan.removed)
    assert checked.prompt == "" and checked.generation_before == checked.generation_after == ""
    assert checked.quiz is None  # nor is the quiz asked
    report = engine.report(plan, spec)
    assert report.generation_prompt in ("", None) and not report.generation_chat_template and not report.quiz


def test_another_seed_draws_other_samples_from_an_open_engine(tiny_model: Path, small_calib: Path) -> None:
    """The tokens are cached per text and sizes; a key without the seed gave the first seed's samples again."""
    import dataclasses

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, device="cpu",
                   dtype="float32", seed=0)
    engine = Engine()
    engine.open(spec)
    engine.load(spec)
    first = engine.tokens_for(spec).samples
    assert engine.tokens_for(dataclasses.replace(spec, seed=1)).samples != first
    assert engine.tokens_for(spec).samples == first


@pytest.mark.parametrize("low_memory", [False, True])
def test_weights_rewritten_after_loading_are_refused_before_check_save_and_curve(tiny_model: Path, small_calib: Path,
                                                                                 tmp_path: Path,
                                                                                 low_memory: bool) -> None:
    """Another model copied over the folder between Score and Save was saved: its tensors, pruned by the first
    model's scores, with the first one's repair in a layer and its perplexities on the card; one layer at a time,
    Check set the first model's perplexity beside the second's. A folder removed meanwhile was "not a valid
    safetensors file… download it again". Each is refused in a sentence, and nothing is written."""
    import shutil

    from shortgpt_desktop.core.errors import ModelSourceError
    from shortgpt_desktop.core.testing.tiny_models import build_tiny_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    other = build_tiny_model(tmp_path / "other", "llama", seed=1)
    spec = JobSpec(model=str(folder), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=4, batch_size=4,
                   device="cpu", dtype="float32", count=2, metric="bi", low_memory=low_memory, prompt="",
                   out=str(tmp_path / "out"))
    engine = Engine()
    engine.score(spec)
    plan = engine.plan(count=2)
    engine.check(spec, plan.removed)
    shutil.copyfile(other / "model.safetensors", folder / "model.safetensors")
    for step in (lambda: engine.check(spec, plan.removed), lambda: engine.quality_curve(spec, 1),
                 lambda: engine.save(plan, tmp_path / "out")):
        with pytest.raises(ModelSourceError, match="changed on disk since it was loaded; open it again and score it"):
            step()
    assert not (tmp_path / "out").exists()
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="are no longer where they were loaded from"):
        engine.save(plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_way_said_when_the_model_opens_is_the_way_it_loads_though_free_memory_drops_meanwhile(
        tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model line says the way when the model opens; the load that follows (the first Score) keeps it, as it
    keeps it once the model is loaded: the decision is made once per opened model and settings."""
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, batch_size=4, device="cpu",
                   dtype="float32", metric="bi", repair="none", scores_only=True)
    engine = Engine()
    info = engine.open(spec)
    assert info.mode == "memory"
    need = engine.memory_estimate(spec)
    _only_streamed_fits(need, monkeypatch)
    engine.refusal(spec)
    assert engine.decided_mode(spec) == "memory"
    engine.load(spec)
    assert engine.backend is not None and engine.backend.mode == "memory"


def test_more_samples_decide_their_way_anew(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repair's streams grow with the samples: a way decided for 8 samples is not kept for 256, which do not
    fit beside the whole model."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.errors import ResourceError

    few = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, batch_size=4, device="cpu",
                  dtype="float32", metric="bi", repair="linear", count=2)
    many = dataclasses.replace(few, samples=256)
    probe = Engine()
    probe.open(few)
    need_few, need_many = probe.memory_estimate(few), probe.memory_estimate(many)
    room = int(need_few.in_memory_total / SAFETY) + 1024
    assert SAFETY * room < need_many.in_memory_total
    monkeypatch.setattr(memory, "available_memory", lambda device: (room, room))
    engine = Engine()
    engine.open(few)
    assert engine.mode_for(few) == "memory"
    try:
        way = engine.mode_for(many)
    except ResourceError:
        way = "refused"
    assert way != "memory"


def test_a_loaded_model_keeps_its_way_when_a_later_job_adds_healing(tiny_model, small_calib,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Scored whole with just enough memory; then the window's Prune with healing. The loaded model runs it whole:
    a fresh decision, with the model's own weights counted against the free memory, would say 'one layer at a
    time' and refuse the healing job mid-session in a sentence about memory the job never ran short of."""
    from shortgpt_desktop.core import engine as engine_module
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=64, batch_size=4,
                   device="cpu", dtype="float32", metric="bi", repair="none", count=2)
    probe = Engine()
    probe.open(spec)
    healed = dataclasses.replace(spec, heal_steps=1)
    need = max(probe.memory_estimate(spec).in_memory_total, probe.memory_estimate(healed).in_memory_total)
    loaded = {"bytes": 0}
    real_open = engine_module.open_backend

    def open_and_count(mode, *args, **kwargs):
        backend = real_open(mode, *args, **kwargs)
        loaded["bytes"] = sum(p.numel() * p.element_size() for p in backend.loaded.model.parameters())
        return backend

    def free(device: str) -> tuple[int, int]:
        room = int(need / SAFETY) + 1024 - loaded["bytes"]
        return room, room

    monkeypatch.setattr(memory, "available_memory", free)
    monkeypatch.setattr(engine_module, "open_backend", open_and_count)
    engine = Engine()
    engine.score(spec)
    assert engine.backend.mode == "memory" and free("cpu")[0] * SAFETY < need
    engine.refusal(healed)  # nothing to refuse: the model is loaded whole
    assert engine.decided_mode(healed) == "memory"


def test_reopening_the_model_decides_its_way_again(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening is the one moment the way is decided; opening the same model again (after other programs took the
    memory) decides it anew rather than keeping the way of a closed model."""
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, batch_size=4, device="cpu",
                   dtype="float32", metric="bi", repair="none", scores_only=True)
    engine = Engine()
    assert engine.open(spec).mode == "memory"
    need = engine.memory_estimate(spec)
    _only_streamed_fits(need, monkeypatch)
    assert engine.open(spec).mode == "streamed" and engine.decided_mode(spec) == "streamed"


def test_another_dtype_loads_the_model_anew(tiny_model) -> None:
    import torch

    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, device="cpu", dtype="float32")
    engine = Engine()
    assert next(engine.load(spec).model.parameters()).dtype == torch.float32
    half = dataclasses.replace(spec, dtype="bfloat16")
    assert next(engine.load(half).model.parameters()).dtype == torch.bfloat16


def test_the_healing_refusal_says_the_healing_jobs_own_figure(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.errors import ResourceError
    from shortgpt_desktop.format import human_bytes

    spec = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, batch_size=4, device="cpu",
                   dtype="float32", metric="bi", repair="none", heal_steps=2, count=2)
    engine = Engine()
    engine.open(spec)
    healing = engine.memory_estimate(spec)
    room = _only_streamed_fits(healing, monkeypatch)
    with pytest.raises(ResourceError) as refused:
        _refuse(spec)
    assert f"needs about {human_bytes(healing.in_memory_total)} of memory but {human_bytes(room)} is free" in str(
        refused.value)


def _refuse(spec: JobSpec) -> None:
    from shortgpt_desktop.core.engine import Engine

    engine = Engine()
    engine.open(spec)
    engine.refusal(spec)


def test_the_estimate_after_scoring_runs_at_the_scoring_passes_speed_per_token_and_layer(tiny_model,
                                                                                         small_calib) -> None:
    """The scoring pass ran every sample token through every layer: the speed is its seconds over tokens × layers,
    and the check (the original and the pruned model over the held-out windows) is counted at that speed. Over
    tokens alone every step was said n_layers times too long."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.estimate import shape_of

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", metric="bi", repair="none", count=2, prompt="")
    engine = Engine()
    engine.score(spec)
    scored = engine.scored
    shape = shape_of(engine.loaded)
    n, head = shape.n_layers, shape.head_layers
    rate = (scored.pass_seconds if scored.pass_seconds is not None else scored.seconds) / (scored.sample_tokens * n)
    steps = engine.job_estimate(spec, 2, check=True).steps
    assert steps["checking"] == pytest.approx(scored.eval_tokens * ((n + head) + (n - 2 + 2 * head)) * rate)


def test_a_chat_models_own_answers_one_layer_at_a_time_are_counted_without_a_cache(tiny_chat_model,
                                                                                   small_calib) -> None:
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=32, device="cpu",
                   dtype="float32", metric="bi", count=2)
    for low, cached in ((True, False), (None, True)):
        engine = Engine()
        engine.load(dataclasses.replace(spec, low_memory=low))
        work = engine.answer_work(spec)
        assert work is not None and work.kv_cache is cached


def test_the_own_answers_are_counted_as_far_as_the_sample_length_lets_them_run(tiny_chat_model, small_calib) -> None:
    """The answers stop at the sample length, prompt included, and a prompt as long is left out (own_answers): at
    8 × 64 SmolLM2's ran 27 steps, not the 64 counted."""
    from shortgpt_desktop.core.cut.answer_probe import answer_probe_for
    from shortgpt_desktop.core.cut.own_answers import FIT_PROMPTS, MAX_NEW_TOKENS, own_answers
    from shortgpt_desktop.core.engine import Engine

    engine = Engine()
    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=512, device="cpu",
                   dtype="float32", metric="bi", count=2)
    engine.load(spec)
    lengths = sorted(len(p) for p in answer_probe_for(engine.loaded.tokenizer, engine.loaded.model,
                                                     FIT_PROMPTS).prompts)
    long = engine.answer_work(spec)  # room for every answer
    assert (long.prompts, long.new_tokens) == (len(lengths), MAX_NEW_TOKENS)
    seq_len = lengths[len(lengths) // 2] + 1  # the longer half of the prompts is left out
    short = engine.answer_work(dataclasses.replace(spec, seq_len=seq_len))
    kept = [n for n in lengths if n < seq_len]
    assert short.prompts == len(kept) < len(lengths)
    assert short.prompt_tokens == pytest.approx(sum(kept) / len(kept))
    assert short.new_tokens == seq_len - lengths[0] < MAX_NEW_TOKENS
    written = own_answers(engine.backend.stack, engine.loaded.tokenizer, engine.loaded.model, max_len=seq_len)
    assert len(written) == short.prompts and max(map(len, written)) <= seq_len  # what is counted is what runs
    # Written for one length, they are the fit's for that length only: at a length no prompt fits, none is written
    # and none counted (the answers kept from the earlier length were counted in the fit)
    engine.answers = (engine._answers_key(seq_len), written)
    at_length = dataclasses.replace(spec, seq_len=seq_len)
    assert engine._repair_fit(at_length, 100) == (None, spec.samples + len(written), 100 + sum(map(len, written)))
    none_fit = dataclasses.replace(spec, seq_len=lengths[0])
    assert engine.answer_work(none_fit) is None
    assert engine._repair_fit(none_fit, 100) == (None, spec.samples, 100)


def test_the_checks_quiz_counts_the_originals_answers_until_they_are_written(tiny_chat_model, small_calib) -> None:
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=2,
                   device="cpu", dtype="float32", metric="bi", repair="none", count=2, prompt="The history of",
                   max_new_tokens=4)
    engine = Engine()
    engine.load(spec)
    first = engine.quiz_work(spec)
    assert first is not None, "the tiny chat model is asked the quiz"
    engine.quiz_original = ((engine.load_key, engine.loaded_stamp), ["written"])  # as after the first check
    assert first.runs == 2 and engine.quiz_work(spec).runs == 1 and engine.quiz_work(spec).prompts == first.prompts
    engine.quiz_original = ((("another model",), engine.loaded_stamp), ["written"])  # a model loaded before
    assert engine.quiz_work(spec).runs == 2
    # The same folder with other weights copied over it and opened again: the same load key, not the same model. The
    # next check graded its pruned answers against the first model's.
    engine.quiz_original = ((engine.load_key, (("model.safetensors", 1, 2),)), ["written"])
    assert engine.quiz_work(spec).runs == 2


def test_a_generation_step_slowed_once_does_not_stand_for_all(tiny_chat_model, small_calib: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Timed once, a step another program slowed stood for every step: the answers of a 21 s job were said at 4 min
    21 s on a busy machine. Each size is timed PROBE_TRIES times and the median kept."""
    import time

    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.estimate import PROBE_ROWS, PROBE_TRIES

    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=32, device="cpu",
                   dtype="float32", metric="bi", low_memory=False)
    engine = Engine()
    engine.load(spec)
    model_class = type(engine.loaded.model)
    forward = model_class.forward
    wide: list[int] = []

    def one_slow_try(self, input_ids=None, **kwargs):
        if input_ids is not None and tuple(input_ids.shape) == (PROBE_ROWS, 1):
            wide.append(1)
            if len(wide) == 3:  # the second timed try, after the untimed first touch
                time.sleep(1.5)
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model_class, "forward", one_slow_try)
    engine._probe_generation()
    assert len(wide) == 1 + PROBE_TRIES and PROBE_TRIES >= 3
    # the median: neither the slow try (1.5 s) nor a mean with it (0.5 s or more) but a fast one's (a tiny model: ms)
    assert engine.step_probe[1].many < 0.4


def test_the_scoring_job_times_a_generation_step_for_the_estimates_in_memory_only(
        tiny_chat_model, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answers', the quiz's and the check's continuation's steps are counted at a step timed on the model (the
    scoring pass's speed alone said a fifth of their time); one layer at a time, where none runs with the KV cache,
    none is timed."""
    from shortgpt_desktop.core.engine import Engine

    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=32, eval_windows=2,
                   device="cpu", dtype="float32", metric="bi", repair="linear", count=2, prompt="The history of",
                   low_memory=False)
    engine = Engine()
    engine.score(spec)
    probe = engine.step_probe[1]
    assert engine.step_probe[0] == engine.load_key and 0 < probe.one <= probe.many
    for work in (engine.quiz_work(spec), engine.answer_work(spec), engine.prompt_work(spec)):
        assert work is not None and work.probe is probe
    assert engine.prompt_work(spec).runs == 2 and engine.prompt_work(spec).prompts == 1
    assert engine.prompt_work(dataclasses.replace(spec, prompt=" ")) is None
    streamed = Engine()
    streamed.score(dataclasses.replace(spec, low_memory=True))
    assert streamed.step_probe is None and streamed.answer_work(spec).probe is None
    # One layer at a time each new token reads every layer again: the reads the scoring pass timed (one per layer,
    # with its freeing) are counted for each step of the answers and the continuation, never in memory
    reads = streamed.backend.stack.read_seconds
    assert len(reads) >= streamed.n_layers and all(r > 0 for r in reads)
    assert streamed.layer_read_seconds() == statistics.median(reads) > 0
    for work in (streamed.answer_work(spec), streamed.prompt_work(spec)):
        assert work.layer_read == streamed.layer_read_seconds()
    assert engine.layer_read_seconds() == 0.0 and engine.prompt_work(spec).layer_read == 0.0
    engine.forget()  # another model copied over the folder has the same load key: its steps are timed again
    assert engine.step_probe is None
    # Only an estimate hangs on the probe: a model whose one-token step fails still scores, estimated as before.
    failing = Engine()
    failing.load(spec)
    model_class = type(failing.loaded.model)
    forward = model_class.forward

    def no_single_token(self, input_ids=None, **kwargs):
        if input_ids is not None and input_ids.shape[1] == 1:
            raise RuntimeError("no single-token step here")
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model_class, "forward", no_single_token)
    assert failing.score(spec).scores is not None and failing.step_probe is None
    assert failing.quiz_work(spec).probe is None


def test_the_repairs_estimate_counts_the_runs_of_the_layers_the_plan_removes(tiny_model: Path, small_calib: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The repair solves once per run of removed layers: three apart are three runs, where the count alone guesses
    two (five apart once took twice the estimate). A plan already chosen is counted, not guessed."""
    from shortgpt_desktop.core.estimate import JobWork, estimate_job, guessed_runs, shape_of

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, batch_size=4,
                   device="cpu", dtype="float32", metric="bi", repair="linear", count=3, prompt="")
    engine = Engine()
    engine.score(spec)
    real_plan = engine.plan
    monkeypatch.setattr(engine, "plan", lambda **kw: dataclasses.replace(real_plan(**kw), removed=[0, 2, 4]))
    assert guessed_runs(3) != 3
    said = engine.job_estimate(spec, 3, check=False).steps["repairing"]
    scored = engine.scored
    shape = shape_of(engine.loaded)
    rate = (scored.pass_seconds if scored.pass_seconds is not None else scored.seconds) / (
        scored.sample_tokens * shape.n_layers)

    def repairing(runs: int) -> float:
        return estimate_job(spec, shape, rate, scored.sample_tokens, scored.eval_tokens, 3, False,
                            JobWork(runs=runs, fit_samples=spec.samples)).steps["repairing"]

    assert repairing(3) != repairing(guessed_runs(3))
    assert said == pytest.approx(repairing(3))


def test_a_cut_checked_without_the_repair_still_counts_the_repair_a_later_job_fits(tiny_model: Path,
                                                                                    small_calib: Path) -> None:
    """Checked with --repair none, then saved with the repair: the cut is the same, but nothing was fitted, so the
    repair's time stays in the estimate (it was left out: a job said seconds for minutes of fitting)."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, batch_size=4,
                   device="cpu", dtype="float32", metric="bi", repair="none", count=2, prompt="")
    engine = Engine()
    engine.score(spec)
    linear = dataclasses.replace(spec, repair="linear")
    assert engine.job_estimate(linear, 2, check=False).steps.get("repairing", 0) > 0
    engine.adjust(spec, engine.plan(count=2).removed)  # the check's adjustment: nothing fitted
    assert engine.adjusted is not None and engine.adjusted.repair is None
    assert engine.job_estimate(linear, 2, check=False).steps.get("repairing", 0) > 0
    engine.adjust(linear, engine.plan(count=2).removed)  # fitted now: the job keeps it
    assert "repairing" not in engine.job_estimate(linear, 2, check=False).steps
    # fitted on these samples only: fewer samples fit it again
    assert engine.job_estimate(dataclasses.replace(linear, samples=4), 2, check=False).steps["repairing"] > 0


def test_a_metric_refused_where_the_model_was_chosen_to_run_one_layer_at_a_time_speaks_of_memory(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user never asked for low-memory mode: the refusal says the model does not fit, and offers no way out
    through a setting they never ticked."""
    from shortgpt_desktop.core.errors import UserError

    spec = JobSpec(model=str(tiny_model), calib=[], samples=8, seq_len=64, batch_size=4, device="cpu",
                   dtype="float32", metric="ppl", repair="none", scores_only=True)
    engine = Engine()
    engine.open(spec)
    need = engine.memory_estimate(spec)
    _only_streamed_fits(need, monkeypatch)
    assert engine.open(spec).mode == "streamed"
    with pytest.raises(UserError, match="needs the whole model in memory; this model does not fit in memory, so it "
                                        "runs one layer at a time:") as refused:
        engine.refusal(spec, spec.metric)
    assert "low-memory" not in str(refused.value) and refused.value.hint is None


def test_a_gguf_chosen_to_run_one_layer_at_a_time_is_refused_a_float_copy_before_anything_is_written(
        tiny_q4_gguf: Path, tmp_path: Path) -> None:
    """Save names the way the model runs as the user's own only where they asked for it."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.backends.base import Streamed
    from shortgpt_desktop.core.cut.plan import PrunePlan
    from shortgpt_desktop.core.errors import UserError

    spec = JobSpec(model=str(tiny_q4_gguf), calib=[], device="cpu", dtype="float32", metric="bi", repair="none")
    engine = Engine()
    engine.open(spec)
    engine.set_output_format("safetensors")
    # A streamed backend in name only: the refusal needs no weights, and nothing past it may run.
    engine.backend = SimpleNamespace(mode="streamed", loaded=object(), close=lambda: None,
                                     refusal=lambda **wanted: Streamed.refusal_for(engine.source, **wanted))
    plan = PrunePlan(engine.n_layers, [1])
    out = tmp_path / "out"
    engine.scored_spec = spec  # the way was chosen for want of memory
    with pytest.raises(UserError, match=r"^This model does not fit in memory, so it runs one layer at a time, and "
                                        "then a GGUF model is saved as GGUF"):
        engine.save(plan, out)
    engine.scored_spec = dataclasses.replace(spec, low_memory=True)
    with pytest.raises(UserError, match=r"^In low-memory mode a GGUF model is saved as GGUF"):
        engine.save(plan, out)
    assert not out.exists()


def test_a_plan_that_removes_nothing_is_neither_checked_nor_saved(tiny_model: Path, small_calib: Path,
                                                                  tmp_path: Path) -> None:
    from shortgpt_desktop.core.errors import PlanError

    spec = small_job(tiny_model, small_calib, metric="bi", repair="none")
    engine = Engine()
    engine.score(spec)
    with pytest.raises(PlanError, match=r"^The plan removes no layers"):
        engine.check(spec, [])
    with pytest.raises(PlanError, match=r"^The plan removes no layers"):
        engine.save(engine.plan(count=0), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_scoring_cancelled_part_way_counts_the_tokens_it_measured_and_a_rescore_keeps_the_whole_scores(
        tiny_model: Path, small_calib: Path) -> None:
    """The partial scores are kept, said to be measured on the samples done so far (not on every sample); a
    cancelled re-score of a model scored whole leaves those scores and their check (it put 1,024 tokens' partial
    scores in their place)."""
    from shortgpt_desktop.core.errors import Cancelled

    spec = small_job(tiny_model, small_calib, metric="bi", repair="none")
    engine = Engine()
    stop = {"now": False}

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        stop["now"] = stop["now"] or (stage == "scoring" and done >= 2)

    with pytest.raises(Cancelled):
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    scored = engine.scored
    assert scored.partial
    assert 0 < scored.sample_tokens == engine.stats.tokens < engine.tokens.sample_tokens
    stop["now"] = False
    with pytest.raises(Cancelled):  # partial again: the later partial scores stand
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    assert engine.scored is not scored and engine.scored.partial
    whole = engine.score(spec)
    engine.check(spec, engine.plan(count=1).removed)
    checked, stats = engine.checked, engine.stats
    stop["now"] = False
    with pytest.raises(Cancelled):
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    assert engine.scored is whole and not whole.partial and engine.stats is stats and engine.checked is checked


def test_a_cancel_while_the_model_loads_stops_before_the_text_is_read(tiny_model: Path, small_calib: Path) -> None:
    """Cancelled while the model loaded, the job went on to tokenise the text and start the pass before it
    stopped (9.6 s on SmolLM2 in the window)."""
    from shortgpt_desktop.core.errors import Cancelled

    spec = small_job(tiny_model, small_calib, metric="bi", repair="none")
    engine = Engine()
    stages: list[str] = []
    stop = {"now": False}

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        stages.append(stage)
        stop["now"] = stop["now"] or (stage == "load" and done == total)

    with pytest.raises(Cancelled):
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    assert "load" in stages and "tokenize" not in stages and "scoring" not in stages, stages
    assert engine.scored is None and engine.loaded is not None  # loaded, kept for the next job


def test_a_cancel_while_the_text_is_tokenised_stops_after_the_chunk(tiny_model: Path, small_calib: Path,
                                                                     tmp_path: Path) -> None:
    """A Cancel while a 100 MB text was tokenised waited 40 s for the whole of it (a walkthrough): it stops after
    the chunk being tokenised, nothing is kept from the text, and the next job tokenises it whole."""
    from shortgpt_desktop.core.errors import Cancelled
    from shortgpt_desktop.core.measure.calibration import TOKENIZE_CHUNK

    text = small_calib.read_text(encoding="utf-8")
    big = tmp_path / "big.txt"
    big.write_text(text * (5 * TOKENIZE_CHUNK // len(text) + 1), encoding="utf-8")  # five chunks and more
    spec = small_job(tiny_model, big, metric="bi", repair="none")
    engine = Engine()
    heard: list[tuple[int, int]] = []
    stop = {"now": False}

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "tokenize" and total > 1:
            heard.append((done, total))
            stop["now"] = True

    with pytest.raises(Cancelled):
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    assert len(heard) == 1 and heard[0][0] < heard[0][1] / 4, heard  # one chunk of five, not the rest
    assert engine.scored is None and engine.tokens is None
    stop["now"], heard[:] = False, []
    engine.score(spec, progress=lambda *args: None)
    assert engine.scored is not None and engine.tokens is not None


def test_the_scores_a_cancelled_rescore_leaves_keep_the_text_they_were_cut_from(
        tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """The calibration file edited, a re-score cancelled after a batch: the whole scores stayed, but the tokens were
    the edited text's, so the next check measured the original on the old text (cached) and the pruned model on the
    new one."""
    from shortgpt_desktop.core.errors import Cancelled

    calib = tmp_path / "calib.txt"
    calib.write_text(small_calib.read_text(encoding="utf-8"), encoding="utf-8")
    spec = small_job(tiny_model, calib, metric="bi", repair="none")
    engine = Engine()
    engine.score(spec)
    removed = engine.plan(count=1).removed
    first = engine.check(spec, removed)
    tokens = engine.tokens
    calib.write_text("Another text altogether, of other words. " * 400, encoding="utf-8")
    stop = {"now": False}

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        stop["now"] = stop["now"] or (stage == "scoring" and done >= 2)

    with pytest.raises(Cancelled):
        engine.score(spec, progress=progress, cancel=lambda: stop["now"])
    assert engine.tokens is tokens and not engine.scored.partial
    again = engine.check(spec, removed)
    assert (again.ppl_before, again.ppl_after) == (first.ppl_before, first.ppl_after)
    fresh = Engine()
    fresh.score(spec)  # the edited text measures otherwise: the figures above are the old text's, both of them
    assert fresh.check(spec, removed).ppl_after != first.ppl_after


def test_a_block_may_be_as_long_as_the_layers_that_may_go_and_no_longer(tiny_model: Path, small_calib: Path) -> None:
    from shortgpt_desktop.core.errors import PlanError

    engine = Engine()
    longest = small_job(tiny_model, small_calib, metric="angular", repair="none", block_size=5)  # 6 layers
    engine.open(longest)
    with pytest.raises(PlanError, match=r"^A block of 6 layers does not fit this 6-layer model; use a block of 1 to 5"):
        engine.score(dataclasses.replace(longest, block_size=6))
    scores = engine.score(longest).scores
    assert scores.block_size == 5 and sum(s is not None for s in scores.scores) == 2


@pytest.mark.parametrize(("values", "said"), [
    ([0.1, float("inf"), 0.3], "at layer 1 in float32"),
    ([0.1, float("nan"), 0.3, float("-inf")], "at layer 1 and 1 more in float32"),
])
def test_scores_that_are_not_finite_are_refused_and_their_layers_counted(values: list[float], said: str) -> None:
    from shortgpt_desktop.core.engine import _refuse_non_finite
    from shortgpt_desktop.core.errors import UserError

    with pytest.raises(UserError, match=f"not finite numbers {said}, so no layer can be scored"):
        _refuse_non_finite(values, "float32")
    _refuse_non_finite([0.1, None, 0.3], "float32")  # a layer left unscored is no number


def test_the_curve_of_imported_scores_cut_short_stops_at_the_layers_they_scored(tiny_model: Path,
                                                                               small_calib: Path) -> None:
    """A pass cancelled one layer at a time leaves the later layers unscored: no count can be chosen among them."""
    from shortgpt_desktop.core.errors import PlanError
    from shortgpt_desktop.core.measure.scoring import LayerScores

    spec = small_job(tiny_model, small_calib, metric="angular", repair="none")
    engine = Engine()
    with pytest.raises(PlanError, match=r"^These scores are for 5 layers, but the model has 6"):
        engine.use_imported_scores(spec, LayerScores("bi", [0.3, 0.1, 0.2, 0.4, 0.5]))
    origin = {"file": "scores.json", "model": "tiny"}
    engine.use_imported_scores(spec, LayerScores("bi", [0.3, 0.1, None, None, None, None]), partial=True,
                               origin=origin)
    assert engine.scored_spec.metric == "bi"  # the jobs after it plan with the metric the file holds
    assert engine.report(engine.plan(count=1), spec).scores_imported == origin  # and the card names the file
    curve = engine.quality_curve(spec)
    assert [p.removed for p in curve.points] == [[], [1], [0, 1]]
    assert [p.removed for p in curve.baseline.points] == [[], [1], [0, 1]]


def test_the_curve_stops_at_the_layers_whose_scores_are_numbers(tiny_model: Path, small_calib: Path) -> None:
    """A NaN score cannot be ranked: the curve counted it as scored and went on to a count no plan can take."""
    import math

    from shortgpt_desktop.core.measure.scoring import LayerScores

    spec = small_job(tiny_model, small_calib, metric="bi", repair="none")
    engine = Engine()
    engine.use_imported_scores(spec, LayerScores("bi", [0.3, 0.1, math.nan, math.nan, math.nan, 0.5]))
    curve = engine.quality_curve(spec, max_removed=5)
    assert [p.removed for p in curve.points] == [[], [1], [0, 1], [0, 1, 5]]


def test_a_curve_point_names_the_layer_it_adds_only_where_it_adds_one(tiny_model: Path, small_calib: Path) -> None:
    """bi+ chooses each count afresh: where its choice for k is not the choice for k - 1 plus one layer, the point
    names no single layer, and the curve's order stops short of it."""
    from types import SimpleNamespace

    spec = small_job(tiny_model, small_calib, metric="bi+", repair="none")
    engine = Engine()
    engine.score(spec)
    engine.selections = {k: SimpleNamespace(removed=removed, explanation="measured", judged_repaired=False, seconds=0.0)
                         for k, removed in ((1, [3]), (2, [1, 2]), (3, [1, 2, 3]))}
    curve = engine.quality_curve(spec, 3)
    assert [p.removed for p in curve.points] == [[], [3], [1, 2], [1, 2, 3]]
    # the order stops at the first point that is not nested: layer 3 added again after it is no second step
    assert [p.layer for p in curve.points] == [None, 3, None, 3] and curve.order == [3]


def test_a_chat_models_check_writes_its_answers_through_its_chat_template(tiny_chat_model: Path, small_calib: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spec = small_job(tiny_chat_model, small_calib, prompt="The history of", metric="bi", repair="none",
                     max_new_tokens=2)
    engine = Engine()
    engine.load(spec)
    asked: list[bool] = []
    generate_both = engine.backend.generate_both
    monkeypatch.setattr(engine.backend, "generate_both",
                        lambda *args: asked.append(args[4]) or generate_both(*args))  # chat
    monkeypatch.setattr(Engine, "_quiz", lambda self, *args: None)  # not what is measured here
    checked = engine.check(spec, [2])
    assert asked == [True] and checked.chat_template and checked.prompt == "The history of"


def test_the_checks_sample_text_is_counted_in_tokens_and_stops_on_a_cancel_within_a_model(tiny_model: Path,
                                                                                          small_calib: Path) -> None:
    """The original's and the pruned model's continuations: the bar went from 0 to 2 of 2 with nothing between, and
    a cancel waited for both (then for the end of the model's 64 tokens)."""
    from shortgpt_desktop.core.errors import Cancelled

    spec = small_job(tiny_model, small_calib, prompt="The history of", metric="bi", repair="none",
                     max_new_tokens=2)
    engine = Engine()
    engine.score(spec)
    seen: list[tuple[int, int]] = []
    engine.check(spec, [2], progress=lambda stage, done, total, partial=None: seen.append((done, total))
                 if stage == "generate" else None)
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # each model's 2 tokens, the original's first
    stop = {"now": False}
    generated: list[tuple[int, ...]] = []
    generate = engine.backend.generate

    def counted(prompt: str, removed: Any, *args: Any) -> str:
        generated.append(tuple(removed))
        return generate(prompt, removed, *args)

    said: list[int] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "generate":
            said.append(done)
            stop["now"] = stop["now"] or done >= 1  # Cancel pressed once the original's first token is out

    engine.backend.generate = counted  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        engine.check(dataclasses.replace(spec, max_new_tokens=32), [3], progress=progress, cancel=lambda: stop["now"])
    assert generated == [()]  # the original's only: the pruned model's was not begun
    assert said == [0, 1]  # and the original stopped at its next token, not at its 32nd


def test_unusable_calibration_text_is_refused_before_the_next_load_though_other_text_is_tokenised(
        tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """The tokens of the last scoring are for other text: the new text is checked before another model loads."""
    from shortgpt_desktop.core.errors import CalibrationError

    spec = small_job(tiny_model, small_calib, metric="bi", repair="none")
    engine = Engine()
    engine.score(spec)
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "a.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    with pytest.raises(CalibrationError, match=r"^No usable calibration text: skipped .*a\.pdf: it is a PDF document"):
        engine.check_text(dataclasses.replace(spec, calib=[str(papers)]))


def test_a_repair_the_gguf_writer_cannot_write_back_is_refused_right_after_open(
        tiny_q4_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shortgpt_desktop.core.errors import UnsupportedModelError
    from shortgpt_desktop.core.formats import gguf_writer

    monkeypatch.setattr(gguf_writer, "replacement_problem",  # a layout whose down projections cannot be replaced
                        lambda name, arch, meta_int: f"{name} is stored oddly" if "ffn_down" in name else None)
    spec = JobSpec(model=str(tiny_q4_gguf), calib=[], device="cpu", dtype="float32", metric="bi", repair="none")
    engine = Engine()
    engine.open(spec)
    engine.check_output_job(spec)  # nothing changes a weight
    with pytest.raises(UnsupportedModelError, match=r"^Blk\.\d+\.ffn_down\.weight is stored oddly, and the repair "
                                                    r"would change it; save as safetensors instead"):
        engine.check_output_job(dataclasses.replace(spec, repair="linear"))


def test_the_room_asked_before_the_fits_counts_the_weights_the_job_rewrites(tiny_q4_gguf: Path, small_calib: Path,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan on screen was sized for the scoring's settings; healing ticked since writes the kept layers of a
    4-bit GGUF as Q8_0, larger, and that is what the disk must hold."""
    from shortgpt_desktop.core import engine as engine_module
    from shortgpt_desktop.core.measure.scoring import LayerScores

    spec = small_job(tiny_q4_gguf, small_calib, metric="bi", repair="none")
    engine = Engine()
    engine.use_imported_scores(spec, LayerScores("bi", [0.6, 0.1, 0.2, 0.5, 0.4, 0.3]))
    plan = engine.plan(count=2)
    asked: list[int] = []
    monkeypatch.setattr(engine_module, "check_room", lambda out, need, side: asked.append(need))
    engine.check_room(tmp_path, plan, spec)
    engine.check_room(tmp_path, plan, dataclasses.replace(spec, heal_steps=1))
    assert asked[0] == plan.bytes_after < asked[1]


def test_the_curve_of_a_refit_job_shows_the_linear_repair_the_refit_starts_from(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refit trains once per point, as healing does: the curve leaves it out."""
    from shortgpt_desktop.core.cut.adjusters import MlpRefit

    spec = small_job(tiny_model, small_calib, metric="bi", repair="refit")
    engine = Engine()
    engine.score(spec)
    monkeypatch.setattr(MlpRefit, "apply", lambda *args: pytest.fail("the curve refitted"))
    curve = engine.quality_curve(spec, 1)
    assert curve.label == "bi + repair"
    linear = engine.check(dataclasses.replace(spec, repair="linear"), curve.points[1].removed)
    assert curve.points[1].perplexity == pytest.approx(linear.ppl_after, rel=1e-9)


def test_a_checks_words_say_whether_each_runs_mlp_refit_was_kept(tiny_model: Path, small_calib: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The check said "repaired and MLP refitted" of a model whose refit was dropped (byte for byte the repaired one):
    it says what the fit kept."""
    from shortgpt_desktop.core.cut import mlp_refit

    spec = small_job(tiny_model, small_calib, metric="bi", repair="refit", count=2)
    engine = Engine()
    engine.score(spec)
    removed = engine.plan(count=2).removed
    checked = engine.check(spec, removed)
    runs = engine.adjusted.refit.runs
    assert runs and checked.refit_runs == [(run.layer, run.kept) for run in runs]
    fit = mlp_refit.fit_mlp_refit

    def nothing_kept(*args: Any, **kwargs: Any) -> Any:
        result = fit(*args, **kwargs)
        for run in result.runs:
            run.kept = False
        return result

    monkeypatch.setattr(mlp_refit, "fit_mlp_refit", nothing_kept)
    engine.adjusted = engine.checked = None  # fitted again
    checked = engine.check(spec, removed)
    assert checked.refit_runs and not any(kept for _, kept in checked.refit_runs)
    assert checked.adjusted_as.endswith(" and the MLP refit not kept")


def _only_streamed_fits(need, monkeypatch: pytest.MonkeyPatch) -> int:
    """Free memory set halfway between the two ways' needs (``need``, the engine's estimate): one layer at a time
    fits, the whole model does not. Returns that room."""
    room = int((need.streamed_total + need.in_memory_total) / 2 / SAFETY)
    assert need.streamed_total <= SAFETY * room < need.in_memory_total
    monkeypatch.setattr(memory, "available_memory", lambda device: (room, room))
    return room


def test_tokenising_a_long_text_is_counted_and_a_short_one_is_one_step(tiny_model: Path, small_calib: Path,
                                                                       valid_text: Path, tmp_path: Path) -> None:
    """The command line sat at "tokenising..." for 41 s on a 40 MB text: a text of more than one chunk is counted in
    characters up to the whole; a short one still goes from start to done in one step."""
    long_text = tmp_path / "long.txt"
    long_text.write_text(valid_text.read_text(encoding="utf-8") * 3, encoding="utf-8")
    for calib, counted in ((long_text, True), (small_calib, False)):
        heard: list[tuple[int, int]] = []
        engine = Engine()
        spec = small_job(tiny_model, calib)
        engine.load(spec)
        engine.tokens_for(spec, lambda stage, done, total, partial=None, heard=heard: heard.append((done, total))
                          if stage == "tokenize" else None)
        size = len(calib.read_text(encoding="utf-8"))
        assert heard[0] == (0, 1)
        assert heard[1:] == ([(d, size) for d, _ in heard[1:]] if counted else [(1, 1)]), heard
        assert not counted or (len(heard) > 2 and heard[-1] == (size, size))


def test_fewer_held_out_windows_than_asked_are_logged_once_for_the_window(tiny_model: Path, small_calib: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The window's log said nothing when the text gave fewer windows than its box asked for; it says so once, at
    the first job that measures them (not at the scoring, which reads none, nor again at each check or curve)."""
    spec = small_job(tiny_model, small_calib, eval_windows=100000, metric="bi", repair="none")
    engine = Engine()
    with caplog.at_level("INFO", logger="shortgpt_desktop"):
        engine.score(spec)
        assert not [r for r in caplog.records if "windows of at most" in r.getMessage()]
        engine.check(spec, engine.plan(count=1).removed)
        plan = engine.plan(count=2)
        checked = engine.check(spec, plan.removed)
        curve = engine.quality_curve(spec, max_removed=1)
    said = [r.getMessage() for r in caplog.records if "windows of at most" in r.getMessage()]
    assert len(said) == 1 and "(100,000 asked for)" in said[0]
    report = engine.report(plan, spec)
    assert said[0] in report.warnings and report.text_ran_out  # the report (its JSON) carries the check's note
    # ... and the front ends know it, to advise more text, not more windows, for a rough figure
    assert checked.text_ran_out and curve.text_ran_out and any("gives only" in w for w in curve.warnings)
    assert not engine.check(dataclasses.replace(spec, eval_windows=2), plan.removed).text_ran_out


def test_a_cut_given_by_hand_with_nothing_fitted_counts_no_samples_and_no_search(tiny_model: Path,
                                                                                small_calib: Path) -> None:
    """``prune --remove 10 --repair none`` counted 128 × 512 calibration tokens and bi+'s caches that it never runs:
    3.3 GB said for SmolLM2, whose peak was 1.2 GB (which can choose one layer at a time for nothing)."""
    spec = small_job(tiny_model, small_calib, samples=128, seq_len=256, layers=[2], repair="none",
                     check_perplexity=False)
    by_hand = Engine().open(spec)
    assert by_hand.memory.recipe_bytes == 0
    one_sample = Engine().open(dataclasses.replace(spec, samples=1, metric="bi"))
    assert by_hand.memory_needed_bytes == one_sample.memory_needed_bytes
    assert by_hand.memory.hidden_states_bytes == one_sample.memory.hidden_states_bytes
    # fitted on the text, or chosen by a search: the samples (and bi+'s caches) count as before
    repaired = Engine().open(dataclasses.replace(spec, repair="linear"))
    chosen = Engine().open(dataclasses.replace(spec, layers=None))
    assert by_hand.memory.hidden_states_bytes < repaired.memory.hidden_states_bytes
    assert chosen.memory.recipe_bytes > 0 and by_hand.memory_needed_bytes < chosen.memory_needed_bytes
    # with its check, one layer at a time holds the windows' states, the original's and the pruned model's: counted
    checked = Engine().open(dataclasses.replace(spec, check_perplexity=True, eval_windows=64))
    assert checked.memory.hidden_states_bytes == 2 * 64 * by_hand.memory.hidden_states_bytes  # one sample's each
    # ... and so does a fitted job's check where its windows outnumber the samples: the same cut with nothing fitted
    # was estimated above it (the cheapest job as the dearest)
    checked_repaired = Engine().open(dataclasses.replace(spec, check_perplexity=True, eval_windows=1000,
                                                         repair="linear"))
    checked_by_hand = Engine().open(dataclasses.replace(spec, check_perplexity=True, eval_windows=1000))
    assert checked_repaired.memory.hidden_states_bytes == checked_by_hand.memory.hidden_states_bytes \
        == 2 * 1000 * by_hand.memory.hidden_states_bytes
    assert checked_by_hand.memory_needed_bytes <= checked_repaired.memory_needed_bytes
    assert checked_repaired.memory.states_of_windows and not repaired.memory.states_of_windows


def sets_measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The layer sets bi+'s candidate runner measures from now on, in order (filled as it measures them)."""
    from shortgpt_desktop.core.cut import candidates as candidates_module

    sets_run: list[tuple[int, ...]] = []
    measure = candidates_module.CandidateRunner.measure

    def counting(self, sets, *args, **kwargs):
        sets_run.extend(tuple(sorted(s)) for s in sets)
        return measure(self, sets, *args, **kwargs)

    monkeypatch.setattr(candidates_module.CandidateRunner, "measure", counting)
    return sets_run


def test_the_time_said_before_a_search_at_another_count_counts_only_what_it_will_measure(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The time said before a Save at 8 after a Check at 7 counted bi+'s whole search again (about 10 minutes of
    SmolLM2 on a CPU) for a job that took 1.7: the single removals and the first 7 greedy steps were measured
    already. The estimate now counts only the greedy steps past those, and never fewer sets than the search runs."""
    from shortgpt_desktop.core import defaults

    sets_run = sets_measured(monkeypatch)
    spec = small_job(tiny_model, small_calib, metric="bi+")
    engine = Engine()
    engine.score(spec)
    whole = engine.job_estimate(spec, 3, check=False).steps["choosing"]
    engine.refine(spec, 2)
    memo = engine.search_memo[1]
    assert memo.still_to_run(engine.scores.scores, 3) == (False, 1)
    assert memo.still_to_run(engine.scores.scores, 1) == (False, 0)
    left = engine.job_estimate(spec, 3, check=False).steps["choosing"]
    assert 0 < left < 0.7 * whole, (left, whole)  # on this 6-layer model the four finalists judged weigh most
    # another batch size measures other batches: the whole search again, as said
    other = dataclasses.replace(spec, batch_size=spec.batch_size + 1)
    assert engine.job_estimate(other, 3, check=False).steps["choosing"] == pytest.approx(whole)
    # the choice for 2 was compared repaired: a job without the repair measures it again, and said it would not
    unrepaired = dataclasses.replace(spec, repair="none")
    assert "choosing" not in engine.job_estimate(spec, 2, check=False).steps
    assert engine.job_estimate(unrepaired, 2, check=False).steps["choosing"] > 0
    sets_run.clear()
    engine.refine(spec, 3)
    # what the estimate counted: one greedy step's candidates and the four finalists, no single removal
    assert 0 < len(sets_run) <= 2 * defaults.SELECTION_WINDOW + 4 and all(len(s) > 1 for s in sets_run), sets_run


@pytest.mark.parametrize("first, then", [(3, 2), (2, 3), (3, 1)])
def test_bi_plus_at_another_count_takes_what_the_search_before_measured(tiny_model: Path, small_calib: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         first: int, then: int) -> None:
    """A Save at 8 layers after a Check at 7 ran bi+'s whole search again (113 passes, about 10 minutes of SmolLM2
    on a CPU), though its single removals and first greedy steps are the sets the search for 7 measured. Now the
    figures of every set measured before are taken, and the choice is exactly a fresh engine's."""
    from shortgpt_desktop.core.cut import candidates as candidates_module
    from shortgpt_desktop.core.cut.answer_probe import AnswerProbe

    monkeypatch.setattr(Engine, "_answer_probe", lambda self: AnswerProbe([[5, 6, 7, 8]], {-1}, 0))
    sets_run = sets_measured(monkeypatch)
    fills: list[int] = []
    fill = candidates_module.CandidateRunner._fill
    monkeypatch.setattr(candidates_module.CandidateRunner, "_fill", lambda self, start: (fills.append(start),
                                                                                          fill(self, start))[1])
    spec = small_job(tiny_model, small_calib, metric="bi+")
    engine = Engine()
    engine.score(spec)
    engine.refine(spec, first)
    before = list(sets_run)
    sets_run.clear()
    fills.clear()
    chosen = engine.refine(spec, then).removed
    again = list(sets_run)
    assert len(again) < len(before) / 2 and not set(again) & set(before)  # nothing measured twice
    assert bool(again) == (then > 1)  # one layer: every set was among the earlier search's single removals
    assert bool(fills) == bool(again)  # and no pass ran to cache states for none (it ran one whole pass)

    sets_run.clear()
    fresh = Engine()
    fresh.score(spec)
    assert fresh.refine(spec, then).removed == chosen
    ours, theirs = engine.selections[then], fresh.selections[then]
    assert ours.order == theirs.order and ours.order_perplexity == theirs.order_perplexity  # exactly
    assert ours.single_removal == theirs.single_removal and ours.chosen == theirs.chosen
    # what it says it measured on: it said "(0 tokens)" where it measured nothing new
    assert ours.eval_tokens == theirs.eval_tokens > 0 and ours.explanation == theirs.explanation
    assert [(c.name, c.removed, c.calibration_perplexity, c.repaired_perplexity, c.silent)
            for c in ours.candidates] == [(c.name, c.removed, c.calibration_perplexity, c.repaired_perplexity,
                                           c.silent) for c in theirs.candidates]
    # Another batch size measures other batches: nothing is taken from the searches before.
    sets_run.clear()
    other = dataclasses.replace(spec, batch_size=spec.batch_size + 1)
    engine.selections = {}
    engine.refine(other, then)
    assert len(sets_run) == len(set(sets_run)) and len(sets_run) > len(again)


def test_bi_plus_counts_the_saved_repairs_fits_on_its_bar_as_the_jobs_estimate_does(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search is given what a fit of the saved repair costs, as the job's estimate counts it (the streams over
    the fit's tokens, the sums, the solves), for the choice and for the quality curve: its bar counted each fit as
    two passes over the samples until one was timed, and went back from 84% to 30% on SmolLM2."""
    from shortgpt_desktop.core import estimate
    from shortgpt_desktop.core.cut import selection

    given: list[Any] = []
    choose = selection.choose_for_counts

    def recording(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs["fit_cost"])
        return choose(*args, **kwargs)

    monkeypatch.setattr(selection, "choose_for_counts", recording)
    spec = small_job(tiny_model, small_calib, metric="bi+")
    engine = Engine()
    engine.score(spec)
    engine.refine(spec, 2)
    engine.quality_curve(spec, max_removed=3)
    assert len(given) == 2 and all(isinstance(cost, selection.FitCost) for cost in given)
    tokens = sum(map(len, engine.tokens_for(spec).samples))  # no chat template: no own answers beside them
    shape = estimate.shape_of(engine.loaded)
    runs = {k: estimate.likely_runs(k, engine.stats.bi) for k in range(1, 5)}  # as the job's estimate counts them
    assert runs != {k: estimate.guessed_runs(k) for k in runs}  # one per two layers removed, counted before
    for cost in given:
        assert cost.original == tokens * shape.n_layers
        for k, fit_runs in runs.items():
            assert cost.fit(k) == estimate.fit_token_layers(shape, tokens, k, fit_runs, spec.samples) > 0
    # bi+ scores imported (no pass here, so no hooked statistics): the bar counts the runs the estimate counts
    # from the scores shown, where it guessed one per two layers removed
    given.clear()
    imported = Engine()
    imported.use_imported_scores(spec, engine.scores)
    imported.refine(spec, 2)
    assert imported.stats is None and len(given) == 1
    for k, fit_runs in runs.items():
        assert given[0].fit(k) == estimate.fit_token_layers(shape, tokens, k, fit_runs, spec.samples)


def test_a_cancel_while_a_gguf_loads_stops_the_load_and_the_next_job_loads_it(
        tiny_q4_gguf: Path, small_calib: Path, dequantized: list[object]) -> None:
    """The job's cancel check reaches the load itself: a Cancel pressed while the weights were read waited for the
    whole load (about 20 s for Gemma 3); the engine is left without a half-loaded model, and loads again."""
    spec = JobSpec(model=str(tiny_q4_gguf), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2,
                   device="cpu", low_memory=False)
    engine = Engine()
    with pytest.raises(Cancelled):
        engine.load(spec, cancel=lambda: len(dequantized) >= 2)
    assert len(dequantized) == 2 and engine.backend is None
    assert engine.load(spec).model is not None
    assert len(dequantized) > 4


def test_a_check_says_repaired_only_where_the_repair_fitted_something(tiny_model: Path, small_calib: Path) -> None:
    """A cut at the first layer has no kept layer before it to fit: the check said "removed layer 0, repaired." where
    the card said it was not repaired (a window walkthrough)."""
    spec = small_job(tiny_model, small_calib, metric="bi", repair="linear")
    engine = Engine()
    engine.score(spec)
    first = engine.check(spec, [0])
    assert first.adjusted_as == "not repaired (nothing could be fitted for this cut)"
    assert engine.check(spec, [2]).adjusted_as == "repaired"
    assert engine.check(spec, [0, 3]).adjusted_as == "repaired (not at layer 0)"
    # healing changes weights of its own: the repair still fitted nothing at layer 0 (a review)
    healed = engine.check(dataclasses.replace(spec, heal_steps=1), [0])
    assert healed.adjusted_as == "not repaired (nothing could be fitted for this cut) and healed (1 LoRA step)"
    plain = engine.check(dataclasses.replace(spec, repair="none"), [0])
    assert plain.adjusted_as == ""

