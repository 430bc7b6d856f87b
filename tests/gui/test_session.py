"""The window's controller without Qt: the same jobs the window runs, driven as the command line drives the
engine; the memory estimate beside a job changes nothing in the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.gui.session import Session, suggested_output

VALUES = {"samples": 8, "seq_len": 32, "eval_windows": 4, "batch_size": 4, "metric": "bi+", "device": "cpu",
          "dtype": "float32", "trust_remote_code": False, "low_memory": False, "repair": True, "heal_steps": 0}


def noop(*args: object) -> None:
    pass


def test_a_session_runs_the_window_jobs_without_qt(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    session = Session()
    spec = session.job_spec(VALUES, [str(small_calib)], "The history of", str(tiny_model))
    info = session.open_job(spec)(noop, lambda: False)
    assert info.n_layers == 6
    before = session.engine.info
    view = session.memory_job(spec)(noop, lambda: False)
    assert view.mode == "whole, in memory" and "whole model" in view.details
    assert session.engine.info is before, "the estimate must not write the engine"
    session.score_job(spec)(noop, lambda: False)
    plan = session.engine.plan(count=2)
    final_spec = session.final_spec(spec)
    assert "choosing" in session.next_job_text(final_spec, 2, check=True)
    final, checked = session.check_job(plan, final_spec)(noop, lambda: False)
    assert checked.fidelity is not None and checked.removed == final.removed
    out = suggested_output(session.engine, final, str(tmp_path))
    session.refuse_plan(final, final_spec)
    session.refuse_folder(final, final_spec, out, False)
    from shortgpt_desktop.core import free_space
    from shortgpt_desktop.core.errors import OutputError

    with pytest.MonkeyPatch.context() as patch:  # a disk without room for the folder: refused before the job
        patch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
        with pytest.raises(OutputError, match="is free on the disk of"):
            session.refuse_folder(final, final_spec, out, False)
    saved_plan, result, _ = session.save_job(final, final_spec, out, False)(noop, lambda: False)
    assert saved_plan.removed == final.removed and (Path(result.folder) / "model.safetensors").is_file()



def test_a_save_that_requantizes_checked_weights_says_its_figures_came_before(tiny_q4_gguf: Path, small_calib: Path,
                                                                               tmp_path: Path) -> None:
    """A repaired 4-bit GGUF is written with its changed weights as Q8_0 after the check measured them in full
    precision: the card, the command line and the JSON said so; the window's save said nothing."""
    from shortgpt_desktop.core.report import measured_before_requantized

    session = Session()
    values = {**VALUES, "metric": "bi"}
    said = {}
    for repair in (True, False):
        spec = session.job_spec({**values, "repair": repair}, [str(small_calib)], "", str(tiny_q4_gguf))
        session.open_job(spec)(noop, lambda: False)
        session.score_job(spec)(noop, lambda: False)
        final_spec = session.final_spec(spec)
        plan, _ = session.check_job(session.engine.plan(count=2), final_spec)(noop, lambda: False)
        *_, notes = session.save_job(plan, final_spec, str(tmp_path / f"out-{repair}"), False)(noop, lambda: False)
        said[repair] = notes
    assert said == {True: [measured_before_requantized(False)], False: []}, said  # no quiz: the tiny model knows none


# ------------------------------------------------------------------------ free memory that drops as it loads

def _window_sequence(session: Session, model: Path, calib: Path, out: Path) -> dict:
    """What the window runs, in its order: open, the memory estimate, score, check, save, the quality curve."""
    spec = session.job_spec(VALUES, [str(calib)], "The history of", str(model))
    session.open_job(spec)(noop, lambda: False)
    session.memory_job(spec)(noop, lambda: False)
    session.score_job(spec)(noop, lambda: False)
    final_spec = session.final_spec(spec)
    plan, checked = session.check_job(session.engine.plan(count=2), final_spec)(noop, lambda: False)
    adjusted = session.engine.adjusted
    view = session.memory_job(spec)(noop, lambda: False)  # the panel's estimate, asked again with the model loaded
    saved_plan, result, _ = session.save_job(plan, final_spec, str(out), False)(noop, lambda: False)
    curve = session.curve_job(final_spec)(noop, lambda: False)
    return {"plan": plan, "saved": saved_plan, "checked": checked, "adjusted": adjusted, "view": view,
            "folder": Path(result.folder), "curve": curve, "streamed": session.engine.is_streamed}


def test_the_window_jobs_keep_one_mode_though_free_memory_drops_as_the_model_loads(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free memory just above the whole model's estimate before loading, and that minus the model once it is
    loaded: every job of the window's sequence runs on the one backend chosen before the load, repaired, and
    gives what the same sequence gives with memory to spare."""
    from safetensors.torch import load_file

    from shortgpt_desktop.core import engine as engine_module
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.model import memory

    plenty = _window_sequence(Session(), tiny_model, small_calib, tmp_path / "plenty")
    assert not plenty["streamed"]

    probe = Session()
    spec = probe.job_spec(VALUES, [str(small_calib)], "", str(tiny_model))
    probe.engine.open(spec)
    need = probe.engine.memory_estimate(spec).in_memory_total
    loaded = {"bytes": 0}
    opened: list[str] = []
    real_open = engine_module.open_backend

    def free(device: str) -> tuple[int, int]:
        room = int(need / memory.SAFETY) + 1024 - loaded["bytes"]
        return room, room

    def open_and_count(mode: str, *args: object, **kwargs: object) -> object:
        opened.append(mode)
        backend = real_open(mode, *args, **kwargs)
        loaded["bytes"] += sum(p.numel() * p.element_size() for p in backend.loaded.model.parameters())
        return backend

    monkeypatch.setattr(memory, "available_memory", free)
    monkeypatch.setattr(engine_module, "open_backend", open_and_count)
    session = Session(Engine())
    tight = _window_sequence(session, tiny_model, small_calib, tmp_path / "tight")

    assert free("cpu")[0] < need, "the test must make a fresh estimate after the load say 'streamed'"
    assert opened == ["memory"], "loaded once, in one mode, for the whole sequence"
    assert not tight["streamed"]
    assert tight["view"].mode == "whole, in memory", "the panel must say how the model runs, not a fresh guess"
    repair = tight["adjusted"].repair
    assert repair is not None and any(run.repaired for run in repair.runs) and repair.tensors
    assert tight["plan"].removed == plenty["plan"].removed == tight["saved"].removed
    assert tight["checked"].ppl_before == pytest.approx(plenty["checked"].ppl_before, rel=1e-6)
    assert tight["checked"].ppl_after == pytest.approx(plenty["checked"].ppl_after, rel=1e-6)
    assert tight["checked"].generation_after == plenty["checked"].generation_after
    a, b = load_file(plenty["folder"] / "model.safetensors"), load_file(tight["folder"] / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert [p.k for p in tight["curve"].points] == [p.k for p in plenty["curve"].points] == [0, 1, 2, 3]
    assert [p.perplexity for p in tight["curve"].points] == \
        pytest.approx([p.perplexity for p in plenty["curve"].points], rel=1e-6)


# ------------------------------------------------------------------------------------------- progress words

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_worded_here_with_the_counters_unit_and_the_time_left() -> None:
    from shortgpt_desktop.gui.session import JobProgress

    clock = Clock()
    words = JobProgress(clock)
    assert words.started("score") == "Scoring…" and words.started("curve") == "Quality curve…"
    first = words.update("scoring", 0, 30, [None] * 30, streamed=True, metric="bi+")
    assert first.text == "Scoring: 0 of 30 layers…" and first.bar == (0, 30) and first.scores == [None] * 30
    clock.now = 10.0
    view = words.update("scoring", 3, 30, [0.1, 0.2, 0.3], streamed=True, metric="bi+")
    assert view.text == "Scoring: 3 of 30 layers, about 1 min 30 s left…" and view.scores == [0.1, 0.2, 0.3]
    assert words.update("scoring", 30, 30, streamed=True).text == "Scoring: 30 of 30 layers"  # done: no "…"
    assert words.update("scoring", 3, 30, metric="bi").text.startswith("Scoring: 3 of 30 samples")
    assert words.update("scoring", 3, 30, metric="ppl").text.startswith("Scoring: 3 of 30 layers")
    clock.now = 100.0
    assert words.update("selecting", 1, 10).text == "Checking the candidate layers: 1 of 10 passes…"
    clock.now = 110.0
    assert words.update("selecting", 2, 10).text == \
        "Checking the candidate layers: 2 of 10 passes, about 80.0 s left…", "the stage's own pace, from 1"
    load = words.update("load", 0, 1)
    assert load.text == "Loading the model…" and load.bar is None and load.download is None
    download = words.update("download", 1_500_000, 3_000_000)
    assert download.text.startswith("Downloading the model: 1.5 MB of 3.0 MB") and download.download == (
        1_500_000, 3_000_000)
    assert words.update("a new stage", 0, 0).text == "a new stage…"


def test_a_job_that_ended_says_its_time_and_the_time_said_before_it() -> None:
    """A Check of 4 min 23 s said nothing of its time in the Log, where a scoring says "Scored 18 layers in 21.3 s";
    set against the 3 min 14 s said before it, the estimate can be judged."""
    from shortgpt_desktop.gui.session import JobProgress

    clock = Clock()
    words = JobProgress(clock)
    assert words.took("save", 21.0) == "Saving took 21.0 s."
    words.keep_whole(194.0)
    assert words.took("check", 263.0) == "Checking perplexity took 4 min 23 s, 3 min 14 s said before it."
    # the whole raised on the way (a step's pace said more) is not what was said before it: "about 38.5 s" was said,
    # and the Log set the 33.1 s it took against "1 min 42 s" (a walkthrough)
    words.started("check")
    words.keep_whole(38.5)
    words.update("perplexity", 0, 10)
    clock.now = 30.0
    words.update("perplexity", 3, 10)
    assert words.whole is not None and words.whole[1] > 38.5  # raised: 70 s left at the step's pace
    assert words.took("check", 33.1) == "Checking perplexity took 33.1 s, 38.5 s said before it."


def test_a_stage_another_one_interrupted_keeps_its_own_pace() -> None:
    """bi+'s choice, 74 of 92 passes in 148 s, waits 300 s for the chat answers its repair fits on, then resumes: its
    pace is its own 2 s a pass, neither the answers' seconds nor the 7 s its first pass after them took (the time
    left said "about 1 min 59 s" for 35 s)."""
    from shortgpt_desktop.gui.session import JobProgress

    clock = Clock()
    words = JobProgress(clock)
    words.started("prune")
    words.update("selecting", 0, 92)
    clock.now = 148.0
    words.update("selecting", 74, 92)
    words.update("answers", 0, 64)
    clock.now = 448.0
    words.update("answers", 64, 64)
    words.update("selecting", 74, 92)
    clock.now = 455.0
    assert words.update("selecting", 75, 92).text == \
        "Checking the candidate layers: 75 of 92 passes, about 35.1 s left…", "155 s for 75 passes, 17 to go"


def test_a_new_job_times_its_first_stage_afresh() -> None:
    """A save after a save starts on the stage the last one ended on: its time left is not the old job's."""
    from shortgpt_desktop.gui.session import JobProgress

    clock = Clock()
    words = JobProgress(clock)
    words.started("save")
    words.update("saving", 0, 10)
    clock.now = 1000.0
    words.started("save")
    assert words.update("saving", 1, 10).text == "Saving the pruned model: 1 of 10 tensors…"


def test_the_whole_jobs_time_stays_beside_each_steps_progress() -> None:
    """The first step's line replaced the whole job's time at once ("about 8 min 39 s" gone within 0.1 s), and only
    the tooltip kept it: each step's line now says the job's time so far against the whole said at its start."""
    from shortgpt_desktop.gui.session import JobProgress

    clock = Clock()
    words = JobProgress(clock)
    words.started("check")
    words.keep_whole(519.0)
    clock.now += 130.0
    assert words.update("ppl_before", 5, 38).text.endswith(" · 2 min 10 s of about 8 min 39 s in all…")
    clock.now += 389.4  # a moment past what was said, shown alike: not "8 min 39 s so far, past the 8 min 39 s said"
    assert words.update("ppl_before", 38, 38).text.endswith(" · 8 min 39 s of about 8 min 39 s in all")
    clock.now += 10.6  # past what was said: "8 min 50 s of about 8 min 39 s in all" read as a slip
    assert words.update("ppl_before", 38, 38).text.endswith(" · 8 min 50 s so far, past the 8 min 39 s said")
    # A step whose own pace says more is left than the whole said raises the whole: "about 2 min 40 s left · 5.0 s of
    # about 2 min 17 s in all" contradicted itself
    words.started("check")
    words.keep_whole(137.0)
    clock.now += 1.0
    words.update("ppl_before", 0, 33)
    clock.now += 5.0
    assert words.update("ppl_before", 1, 33).text.endswith(
        ", about 2 min 40 s left · 6.0 s of about 2 min 46 s in all…")
    # faster since: back to the whole first said. The first pass's pace (its warm-up) is no steady one: a check said
    # 12 min in all after 1 of its 105 passes, and kept it to the end of a job of 4 min (a walkthrough)
    clock.now += 30.0
    assert words.update("ppl_before", 30, 33).text.endswith(", about 3.5 s left · 36.0 s of about 2 min 17 s in all…")
    # a quarter of a step done at a pace that says more than the whole: the whole is raised, and stays raised
    words.update("ppl_after", 0, 40)
    clock.now += 100.0
    assert words.update("ppl_after", 10, 40).text.endswith(
        ", about 5 min 00 s left · 2 min 16 s of about 7 min 16 s in all…")
    clock.now += 10.0
    assert words.update("ppl_after", 40, 40).text.endswith(" · 2 min 26 s of about 7 min 16 s in all")
    clock.now += 300.0  # past it: said against the raised whole
    assert words.update("generate", 0, 0).text.endswith(" · 7 min 26 s so far, past the 7 min 16 s said…")
    # a step of four units: its first alone is a quarter of it, and no steady pace either
    words.started("check")
    words.keep_whole(60.0)
    words.update("quiz", 0, 4)
    clock.now += 40.0
    assert words.update("quiz", 1, 4).text.endswith(" · 40.0 s of about 2 min 40 s in all…")
    clock.now += 2.0
    assert words.update("quiz", 3, 4).text.endswith(" · 42.0 s of about 60.0 s in all…")
    words.finished("ok")
    words.started("check")  # a job announced with no estimate says none
    assert "in all" not in words.update("ppl_before", 5, 38).text
    words.keep_whole(None)
    assert "in all" not in words.update("ppl_before", 6, 38).text


def test_the_end_of_a_job_and_what_the_next_will_cost_are_worded_here() -> None:
    from shortgpt_desktop.gui.session import JobProgress, job_title

    words = JobProgress(Clock())
    assert [words.finished(o) for o in ("ok", "cancelled", "failed")] == ["", "Cancelled.", "Failed."]
    # named: "Failed." under the Score button after a model failed to open read as a failed scoring
    assert [words.finished(o, "open") for o in ("ok", "cancelled", "failed")] == [
        "", "Opening the model cancelled.", "Opening the model failed."]
    assert words.cancelling() == "Cancelling…"
    assert words.announced("check", "about 2 min") == "Checking perplexity: about 2 min…"
    assert words.announced("save", "") == "" and job_title("save") == "Saving" and job_title("x") == "x"


@pytest.mark.parametrize(("repair", "refit", "expected"), [(True, True, "refit"), (True, False, "linear"),
                                                           (False, True, "none"), (False, False, "none")])
def test_the_repair_boxes_give_the_jobs_repair(repair: bool, refit: bool, expected: str) -> None:
    """Ticking "Refit the MLP" ran a linear repair, and no test looked at the job the boxes made."""
    values = dict(samples=8, seq_len=64, eval_windows=4, batch_size=2, metric="bi", device="cpu", dtype="float32",
                  trust_remote_code=False, low_memory=False, repair=repair, refit=refit, heal_steps=0)
    assert Session.__new__(Session).job_spec(values, ["a.txt"], "hi", "m").repair == expected


BOXES = dict(samples=8, seq_len=64, eval_windows=5, batch_size=2, metric="bi", device="cpu", dtype="float32",
              trust_remote_code=False, low_memory=False, repair=True, refit=False, heal_steps=0)


def _spec(**over):
    return Session.__new__(Session).job_spec({**BOXES, **over}, ["a.txt"], "hi", "m")


def test_low_memory_unticked_leaves_the_way_to_the_engine() -> None:
    """Unticked is "decide" (None), not "never": told never, a model that does not fit was loaded whole instead of
    one layer at a time. A mutation audit found no test of it."""
    assert _spec(low_memory=False).low_memory is None and _spec(low_memory=True).low_memory is True
    assert _spec().eval_windows == 5


def test_the_suggested_folder_counts_the_kept_layers_and_is_never_in_the_hub_cache(tmp_path: Path) -> None:
    """"…-shortgpt-4L" for a model of 4 layers left; a Hub model's folder is its cache's snapshot, where a save must
    not go: the suggestion is in the home folder instead."""
    from types import SimpleNamespace

    plan = SimpleNamespace(kept=[0, 1, 2, 3], removed=[4, 5])

    def engine(kind: str, folder: Path, gguf_file: str | None = None):
        return SimpleNamespace(source=SimpleNamespace(display_name="my model", kind=kind, folder=folder,
                                                      gguf_file=gguf_file, in_hub_cache=None,
                                                      spec=str(folder / gguf_file) if gguf_file else str(folder)))

    assert suggested_output(engine("folder", tmp_path / "m"), plan, "") == str(tmp_path / "my-model-shortgpt-4L")
    # A GGUF's folder is the one holding the file: the folder above it was offered
    assert suggested_output(engine("gguf", tmp_path / "models", "my model.gguf"), plan, "") == str(
        tmp_path / "models" / "my-model-shortgpt-4L")
    # ... unless the GGUF was named by its folder: that folder is the source (offered, then refused by the save)
    (tmp_path / "smol").mkdir()
    by_folder = engine("gguf", tmp_path / "smol", "my model.gguf")
    by_folder.source.spec = str(tmp_path / "smol")
    assert suggested_output(by_folder, plan, "") == str(tmp_path / "my-model-shortgpt-4L")
    cache = tmp_path / "hub" / "snapshots" / "abc"
    out = suggested_output(engine("hub", cache), plan, "")
    assert not out.startswith(str(cache.parent)) and out.startswith(str(Path.home()))
    # A dot in the name is not an ending: the stem cut "Qwen/Qwen2.5-0.5B-Instruct" to "Qwen2", so that models of
    # one family were offered one folder. Only a GGUF file's ending is dropped.
    for shown, start in [("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct"), ("SmolLM2-Q4.GGUF", "SmolLM2-Q4"),
                         ("my.model v2", "my.model-v2")]:
        source = SimpleNamespace(display_name=shown, kind="folder", folder=tmp_path / "m", in_hub_cache=None)
        assert Path(suggested_output(SimpleNamespace(source=source), plan, "")).name == f"{start}-shortgpt-4L"


def test_a_suggested_folder_that_holds_something_is_offered_with_a_number(tmp_path: Path) -> None:
    """The same cut saved again (say as safetensors after a GGUF save) was offered the same folder, and a No to
    "Replace folder?" then left no way to save but typing a name: the next free name is offered instead."""
    from types import SimpleNamespace

    plan = SimpleNamespace(kept=[0, 1, 2, 3], removed=[4, 5])
    source = SimpleNamespace(display_name="my model", kind="folder", folder=tmp_path / "m", in_hub_cache=None)
    offered = lambda: Path(suggested_output(SimpleNamespace(source=source), plan, ""))  # noqa: E731
    first = tmp_path / "my-model-shortgpt-4L"
    first.mkdir()
    assert offered() == first  # an empty folder is as good as none
    (first / "model.gguf").write_bytes(b"GGUF")
    assert offered() == tmp_path / "my-model-shortgpt-4L-2"
    (tmp_path / "my-model-shortgpt-4L-2").write_text("a file of that name")
    assert offered() == tmp_path / "my-model-shortgpt-4L-3"


def test_a_model_opened_by_its_path_in_the_hub_cache_is_named_by_its_id_and_saved_outside_the_cache(
        tiny_model: Path, tmp_path: Path) -> None:
    """A snapshot folder picked in ~/.cache/huggingface was named by its commit hash (the title, the suggested
    name) and offered a save folder beside the cache's snapshots, where deleting the cache entry would delete it; a
    GGUF file there was offered its snapshot folder."""
    import shutil
    from types import SimpleNamespace

    from shortgpt_desktop.core.model.sources import resolve
    from shortgpt_desktop.core.testing.fuzz import write_gguf

    repo = tmp_path / "hub" / "models--SomeOrg--Tiny-Model"
    snapshot = repo / "snapshots" / ("0123456789abcdef" * 3)[:40]
    shutil.copytree(tiny_model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    plan = SimpleNamespace(kept=[0, 1, 2, 3], removed=[4, 5])
    source = resolve(str(snapshot))
    assert (source.kind, source.display_name, source.in_hub_cache) == ("folder", "SomeOrg/Tiny-Model",
                                                                       "SomeOrg/Tiny-Model")
    assert source.card_name == "SomeOrg/Tiny-Model"
    out = Path(suggested_output(SimpleNamespace(source=source), plan, ""))
    assert out == Path.home() / "Tiny-Model-shortgpt-4L"
    (snapshot / "sub").mkdir()
    gguf = resolve(str(write_gguf(tiny_model, snapshot / "sub" / "tiny.gguf")))
    assert gguf.display_name == "tiny.gguf" and gguf.in_hub_cache == "SomeOrg/Tiny-Model"
    assert Path(suggested_output(SimpleNamespace(source=gguf), plan, "")) == Path.home() / "tiny-shortgpt-4L"
    # a model in a folder inside a snapshot keeps that folder's name, and is still saved outside the cache
    variant = snapshot / "variant-x"
    shutil.copytree(tiny_model, variant)
    inner = resolve(str(variant))
    assert (inner.display_name, inner.card_name, inner.in_hub_cache) == ("variant-x", str(variant),
                                                                         "SomeOrg/Tiny-Model")
    assert Path(suggested_output(SimpleNamespace(source=inner), plan, "")) == Path.home() / "variant-x-shortgpt-4L"
    # a folder of that name elsewhere, and the last save's folder, are as before
    elsewhere = tmp_path / "snapshots" / "plain"
    shutil.copytree(tiny_model, elsewhere)
    assert resolve(str(elsewhere)).in_hub_cache is None
    assert suggested_output(SimpleNamespace(source=source), plan, str(tmp_path)) == str(tmp_path /
                                                                                        "Tiny-Model-shortgpt-4L")


def test_check_and_save_take_the_scorings_settings_with_the_repair_healing_and_prompt_chosen_now() -> None:
    """The boxes ticked after scoring reach Check and Save: a heal count or prompt typed after scoring was dropped."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.errors import UserError

    session = Session.__new__(Session)
    session.engine = SimpleNamespace(scored_spec=None)
    with pytest.raises(UserError, match="Score the layers first"):
        session.final_spec(_spec())
    session.engine.scored_spec = _spec(samples=16, repair=False)
    now = Session.__new__(Session).job_spec({**BOXES, "refit": True, "heal_steps": 5}, ["b.txt"], "new prompt", "m")
    final = session.final_spec(now)
    assert (final.samples, final.calib, final.repair, final.heal_steps, final.prompt) == (
        16, ["a.txt"], "refit", 5, "new prompt")
    assert _spec(heal_steps=3).heal_steps == 3 and _spec(trust_remote_code=True).trust_remote_code is True


def test_a_save_forwards_its_folder_and_replace_choice_and_is_refused_before_its_job() -> None:
    """Save's job writes where the user chose, replacing an earlier output only when they said yes; the refusals run
    at the click (the folder, the room on the disk), not after the repair has run."""
    from types import SimpleNamespace

    calls: list[tuple] = []

    def recorder(name):
        return lambda *args, **kwargs: calls.append((name, args, kwargs)) or SimpleNamespace(removed=[1], kept=[0],
                                                                                            warnings=[])

    session = Session.__new__(Session)
    session.engine = SimpleNamespace(adjusted=None, **{n: recorder(n) for n in (
        "prepare", "report", "save", "check", "check_output", "refusal", "refusal_to_save", "check_output_job",
        "check_room")})
    plan, spec = SimpleNamespace(removed=[1], kept=[0]), _spec()
    session.save_job(plan, spec, "/o", True)(noop, lambda: False)
    prepare = next(c for c in calls if c[0] == "prepare")
    save = next(c for c in calls if c[0] == "save")
    assert prepare[2].get("out") == "/o" and save[1][1] == "/o" and save[1][3] is True
    calls.clear()
    session.refuse_folder(plan, spec, "/o", True)
    assert [c[0] for c in calls] == ["check_output", "check_room"] and calls[0][1] == ("/o", True)
    calls.clear()
    session.refuse_plan(plan, spec)  # what another folder would not change: no folder asked of
    assert [c[0] for c in calls] == ["report", "refusal", "refusal_to_save", "check_output_job"]
    calls.clear()
    session.refuse_before_folder(spec)  # what no folder changes, before the dialog
    assert [c[0] for c in calls] == ["refusal", "refusal_to_save"]


def test_the_memory_line_says_why_the_model_runs_one_layer_at_a_time() -> None:
    from types import SimpleNamespace

    from shortgpt_desktop.gui.session import describe_modes

    estimate = SimpleNamespace(streamed_total=10**9, not_streamable="", in_memory_total=4 * 10**9,
                               available_device_bytes=2 * 10**9, runtime_bytes=4 * 10**8)
    engine = SimpleNamespace(mode_for=lambda spec, est: "streamed")
    mode, details = describe_modes(engine, _spec(low_memory=True), estimate)
    assert mode == "one layer at a time (as asked)"
    # each way's figure beyond the program's own, which "Memory needed" counts too (2.0 GB beside "whole model:
    # 1.6 GB" and nothing to tell why)
    assert details == ("beyond the program's own 400.0 MB, whole model: 4.0 GB; one layer at a time: 1.0 GB; "
                       "free: 2.0 GB")
    assert describe_modes(engine, _spec(), estimate)[0] == "one layer at a time (it would not fit whole)"
    assert describe_modes(engine, _spec(), estimate, decided="whole")[0] == "whole, in memory"
    # healing cannot run one layer at a time: said as it is set, not only once Check or Save is pressed
    assert describe_modes(engine, _spec(low_memory=True, heal_steps=2), estimate)[0] == (
        "one layer at a time (as asked; healing cannot run so: set Heal steps to 0 or untick Low memory)")
    assert describe_modes(engine, _spec(heal_steps=2), estimate)[0] == (
        "one layer at a time (it would not fit whole; healing cannot run so: set Heal steps to 0)")


def test_no_estimate_for_the_next_job_says_nothing() -> None:
    """An estimate without steps (nothing timed yet) is no text, not "about 0.0 s (, from the scoring speed)"."""
    from types import SimpleNamespace

    session = Session.__new__(Session)
    session.engine = SimpleNamespace(job_estimate=lambda spec, count, check, layers=None: SimpleNamespace(steps={},
                                                                                                        total=0.0))
    assert session.next_job_text(_spec(), 2, check=True) == ""
    session.engine = SimpleNamespace(job_estimate=lambda spec, count, check, layers=None: None)
    assert session.next_job_text(_spec(), 2, check=True) == ""


def test_the_curve_job_goes_as_far_as_the_box_says() -> None:
    """The plan panel's "up to N removed" reached no job: the curve went to half the layers whatever it said."""
    from types import SimpleNamespace

    asked: list[object] = []
    session = Session.__new__(Session)
    session.engine = SimpleNamespace(quality_curve=lambda spec, max_removed, progress, cancel: asked.append(
        max_removed))
    session.curve_job(_spec(), 3)(noop, lambda: False)
    session.curve_job(_spec())(noop, lambda: False)
    assert asked == [3, None]


def test_a_model_that_fits_neither_way_is_said_in_the_memory_line_not_as_a_failed_job() -> None:
    from types import SimpleNamespace

    from shortgpt_desktop.core.errors import ResourceError
    from shortgpt_desktop.gui.session import describe_modes

    def refuse(spec, estimate):
        raise ResourceError("Even one layer at a time this model needs 9.0 GB, and 2.0 GB is free.")

    estimate = SimpleNamespace(streamed_total=9 * 10**9, not_streamable="", in_memory_total=40 * 10**9,
                               available_device_bytes=2 * 10**9, runtime_bytes=4 * 10**8)
    mode, details = describe_modes(SimpleNamespace(mode_for=refuse), _spec(), estimate)
    assert mode == "does not fit" and details.startswith("Even one layer at a time this model needs 9.0 GB")


def test_a_save_of_a_gguf_this_app_saved_is_offered_beside_its_output_folder_not_inside(
        tiny_q4_gguf: Path, small_calib: Path, tmp_path: Path) -> None:
    """A GGUF is saved into a folder of its own (out/once/once.gguf): opened again, the next save was offered inside
    that output (out/once/q4-shortgpt-3L), which then could not be replaced ("holds more than a model"). A GGUF the
    user downloaded is still offered a folder beside it, in its own folder."""
    from types import SimpleNamespace

    from shortgpt_desktop import cli
    from shortgpt_desktop.core.model.sources import resolve

    assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "1", "--repair", "none", "--no-eval", "--calib",
                     str(small_calib), "--samples", "2", "--seq-len", "32", "--out", str(tmp_path / "out" / "once"),
                     "-q"]) == 0
    once = next((tmp_path / "out" / "once").glob("*.gguf"))
    plan = SimpleNamespace(kept=[0, 1, 2])
    assert Path(suggested_output(SimpleNamespace(source=resolve(str(once))), plan, None)).parent == tmp_path / "out"
    downloaded = resolve(str(tiny_q4_gguf))
    assert Path(suggested_output(SimpleNamespace(source=downloaded), plan, None)).parent == tiny_q4_gguf.parent
