"""SIGTERM and SIGHUP (``timeout``, ``kill``, a closed terminal, logging out), and Ctrl-Break on Windows (SIGBREAK),
for both front ends. No Qt here.

Left to Python's defaults they kill the process where it stands, and a running save leaves its hidden partial
folder beside the output; each front end stops its job its own way instead (the command line unwinds as Ctrl-C
does, the window closes as its close button does).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

#: Ctrl-Break in a Windows console is SIGBREAK, whose default ends the process where it stands (the hidden partial
#: folder of a running save stayed); Ctrl-C is KeyboardInterrupt everywhere.
STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGBREAK")


@contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler(signum, frame)`` for :data:`STOP_SIGNALS` that this system has (no SIGHUP on Windows, SIGBREAK
    only there) while the block runs; the handlers that were there come back after. Outside the main thread (a
    front end's worker) nothing is installed."""
    kept = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            with suppress(ValueError):
                kept[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, previous in kept.items():
            signal.signal(number, previous)
