"""``shortgpt-desktop --self-test``: the whole flow through the real window, offscreen, on a tiny model.

The installers use it as their smoke test: it builds a tiny random Llama in a temporary folder, then drives
the window as a user would (open, score, slide, save), reloads the saved folder with transformers, checks
perplexity, and prints one line per step. Exit status 0 only if every step worked.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, QSettings, QTimer

#: Seconds any single step may take before the self-test gives up on it.
STEP_TIMEOUT = 300


class SelfTestError(Exception):
    pass


def _say(text: str) -> None:
    if sys.stdout is not None:
        print(text, flush=True)


class _Driver:
    def __init__(self, window: Any) -> None:
        self.window = window
        self.finished: list[tuple[str, str]] = []
        self.errors: list[str] = []
        window.jobFinished.connect(lambda name, outcome: self.finished.append((name, outcome)))
        window.errorShown.connect(self.errors.append)

    def run_job(self, name: str, start: Callable[[], None]) -> None:
        """Start a job through the window and spin the event loop until it has finished."""
        self.finished.clear()
        self.errors.clear()
        start()
        loop = QEventLoop()
        deadline = time.monotonic() + STEP_TIMEOUT
        timer = QTimer()
        timer.setInterval(20)
        # The loop ends at the deadline too: it ended only once the job had, so a job that never reported its end
        # hung --self-test (and an installer's smoke test) forever instead of failing the step.
        timer.timeout.connect(lambda: loop.quit() if self._done(name) or time.monotonic() >= deadline else None)
        timer.start()
        while not self._done(name) and time.monotonic() < deadline:
            loop.exec()
        timer.stop()
        if self.errors:
            raise SelfTestError(self.errors[-1])
        outcome = next((o for n, o in self.finished if n == name), None)
        if outcome is None:
            raise SelfTestError(f"the {name} job did not finish within {STEP_TIMEOUT} s")
        if outcome != "ok":
            raise SelfTestError(f"the {name} job ended: {outcome}")

    def _done(self, name: str) -> bool:
        return bool(self.errors) or any(n == name for n, _ in self.finished)


def run_self_test() -> int:
    from .application import make_app
    from .workers import wait_all

    app = make_app()
    work = Path(tempfile.mkdtemp(prefix="shortgpt-selftest-"))
    results: list[bool] = []
    state: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], str | None]) -> None:
        if results and not all(results):
            _say(f"skip  {name}")
            results.append(False)
            return
        started = time.perf_counter()
        try:
            detail = fn() or ""
        except Exception as exc:
            _say(f"FAIL  {name} ({time.perf_counter() - started:.1f} s): {exc}")
            if not isinstance(exc, SelfTestError):
                traceback.print_exc()
            results.append(False)
            return
        _say(f"ok    {name} ({time.perf_counter() - started:.1f} s){': ' + detail if detail else ''}")
        results.append(True)

    def build() -> str:
        from transformers.utils import logging as hf_logging

        from ..core.testing.tiny_models import build_tiny_model

        hf_logging.disable_progress_bar()  # one line per step, not progress bars
        state["model"] = build_tiny_model(work / "tiny-llama")
        return str(state["model"])

    def window() -> str:
        from .main_window import MainWindow

        settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
        win = MainWindow(settings)
        win.settings_panel.set_values({"device": "cpu", "dtype": "float32", "samples": 16, "seq_len": 64,
                                       "batch_size": 4, "metric": "bi"})
        win.calibration_panel.set_sources(["builtin"])
        win.resize(1280, 720)
        win.show()
        app.processEvents()
        state["window"], state["driver"] = win, _Driver(win)
        return "shown"

    def load() -> str:
        win, driver = state["window"], state["driver"]
        driver.run_job("open", lambda: win.open_model(str(state["model"])))
        info = win.engine.info
        if info is None or info.n_layers != 6:
            raise SelfTestError(f"expected 6 layers, got {info and info.n_layers}")
        return f"{info.architecture}, {info.n_layers} layers, {info.n_params:,} parameters"

    def score() -> str:
        win, driver = state["window"], state["driver"]
        driver.run_job("score", win.start_scoring)
        scores = win.engine.scores.scores if win.engine.scores else []
        if len(scores) != 6 or not all(s is not None and math.isfinite(s) for s in scores):
            raise SelfTestError(f"bad scores: {scores}")
        return "BI " + " ".join(f"{s:.3f}" for s in scores)

    def slide() -> str:
        win = state["window"]
        win.plan_panel.set_count(2, emit=True)
        plan = win.plan
        if plan is None or len(plan.removed) != 2 or win.chart.removed != set(plan.removed):
            raise SelfTestError(f"the slider did not give a plan of 2 layers: {plan}")
        return f"removes layers {plan.removed}"

    def save() -> str:
        win, driver = state["window"], state["driver"]
        out = work / "pruned"
        driver.run_job("save", lambda: win.save_to(out))
        if not (out / "config.json").is_file() or not list(out.glob("*.safetensors")):
            raise SelfTestError(f"{out} is incomplete")
        state["out"] = out
        return str(out)

    def reload() -> str:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out = state["out"]
        model = AutoModelForCausalLM.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        if model.config.num_hidden_layers != 4 or len(model.model.layers) != 4:
            raise SelfTestError(f"the saved model has {model.config.num_hidden_layers} layers, expected 4")
        ids = tokenizer("The history of science", return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(**ids, max_new_tokens=5, do_sample=False, use_cache=True,
                                       pad_token_id=tokenizer.pad_token_id)
        if generated.shape[1] <= ids["input_ids"].shape[1]:
            raise SelfTestError("the reloaded model generated nothing")
        return "4 layers, generates with the cache on"

    def perplexity() -> str:
        win, driver = state["window"], state["driver"]
        driver.run_job("check", win.check)
        checked = win.engine.checked
        if checked is None or not (math.isfinite(checked.ppl_before) and math.isfinite(checked.ppl_after)):
            raise SelfTestError("no perplexity")
        return f"original {checked.ppl_before:.1f}, pruned {checked.ppl_after:.1f}"

    started = time.perf_counter()
    try:
        for name, fn in (("build tiny model", build), ("open window", window), ("open model", load),
                         ("load and score", score), ("slide", slide), ("save", save), ("reload", reload),
                         ("perplexity", perplexity)):
            step(name, fn)
    finally:
        win = state.get("window")
        if win is not None:
            for dialog in win.dialogs:
                dialog.close()
            win.stop_and_close()
            app.processEvents()
        wait_all(60_000)
        shutil.rmtree(work, ignore_errors=True)
    ok = bool(results) and all(results)
    _say(f"self-test {'passed' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1
