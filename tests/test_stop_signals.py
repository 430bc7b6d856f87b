"""The SIGTERM and SIGHUP handlers both front ends install while they work (their own use: test_cli, gui)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from shortgpt_desktop.stop_signals import on_stop_signals


def test_the_handler_runs_while_the_block_runs_and_the_old_ones_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    got: list[int] = []
    with on_stop_signals(lambda signum, frame: got.append(signum)):
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
    assert got == [signal.SIGHUP, signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_ctrl_break_is_handled_where_the_system_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-Break in a Windows console (SIGBREAK) killed the command line where it stood, leaving a running save's
    partial folder. Here SIGUSR1 stands for it, as Linux has no SIGBREAK."""
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    unhandled: list[int] = []

    def before(signum: int, frame: object) -> None:
        unhandled.append(signum)

    previous = signal.signal(signal.SIGUSR1, before)
    try:
        got: list[int] = []
        with on_stop_signals(lambda signum, frame: got.append(signum)):
            os.kill(os.getpid(), signal.SIGUSR1)
        assert got == [signal.SIGUSR1] and not unhandled and signal.getsignal(signal.SIGUSR1) is before
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    failed: list[BaseException] = []

    def worker() -> None:
        try:
            with on_stop_signals(lambda *_: pytest.fail("not installed")):
                assert signal.getsignal(signal.SIGTERM) == before
        except BaseException as exc:  # handed to the main thread
            failed.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert failed == [] and signal.getsignal(signal.SIGTERM) == before
