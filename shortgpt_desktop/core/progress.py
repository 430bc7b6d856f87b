"""The one shape of progress reporting and cancelling that every long step of the engine takes.

``progress(stage, done, total, partial)``: ``stage`` names the step ("scoring", "saving"…), ``partial`` is
step-specific plain data (the scores measured so far while scoring) or None. ``cancel()`` is polled between
batches; when it returns True the step raises :class:`~.errors.Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Cancelled

Progress = Callable[[str, int, int, Any], None]
CancelCheck = Callable[[], bool]


def no_progress(stage: str, done: int, total: int, partial: Any = None) -> None:
    """A progress callback that ignores everything."""


def never_cancel() -> bool:
    return False


def raise_if_cancelled(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()
