"""The window's controller without Qt: the same jobs the window runs, driven as the command line drives the
engine; the memory estimate beside a job changes nothing in the engine."""

from __future__ import annotations

from pathlib import Path

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
    session.refuse_save(final, final_spec, out, False)
    saved_plan, result = session.save_job(final, final_spec, out, False)(noop, lambda: False)
    assert saved_plan.removed == final.removed and (Path(result.folder) / "model.safetensors").is_file()
