"""Guard against PySide6 reference-count bugs that abort long sessions.

With PySide6 6.12.0 on CPython 3.11, ``SignalInstance.emit()`` returns its ``bool`` without taking a new
reference, and void methods (``setText``, ``QTimer.stop``, ``processEvents``, slots called from Qt, ...)
return ``None`` the same way: every such call steals one reference from ``True`` or ``None``. After a few
hundred signal emits, or some thousands of widget updates, CPython aborts with ``Fatal Python error:
bool_dealloc`` / ``none_dealloc`` — in a test run, or after a minute of moving the mouse over the chart. On
CPython 3.12 and later these singletons are immortal and the bugs are harmless.

:func:`apply` measures whether this PySide6 has the bugs and, only then and only on CPython before 3.12, gives
``None``, ``True`` and ``False`` a reference count so large that it can never reach zero — what CPython 3.12
does to them by design. Objects that are never freed lose nothing by it. Remove this module once the project
requires a PySide6 without the bugs.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

_applied = False
#: Added to the reference counts of None, True and False: 2**40 lost references would take years.
_MARGIN = 1 << 40


class _Probe(QObject):
    ping = Signal()


def steals_singletons(trials: int = 16) -> bool:
    """True when this PySide6 loses references to ``True`` on ``emit()`` or to ``None`` on void calls."""
    probe = _Probe()
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(trials):
        probe.ping.emit()
        probe.setObjectName("probe")
    lost_true = true_before - sys.getrefcount(True)
    lost_none = none_before - sys.getrefcount(None)
    return max(lost_true, lost_none) >= trials // 2


def apply() -> bool:
    """Make ``None``/``True``/``False`` immortal if this PySide6 needs it; returns whether it did."""
    global _applied
    if _applied:
        return True
    if not steals_singletons():
        return False
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12) or hasattr(sys, "_is_gil_enabled"):
        log.warning("this PySide6 loses references to None/True; no workaround for this interpreter")
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every object in a regular (non-debug, GIL) CPython build.
        ctypes.c_ssize_t.from_address(id(obj)).value += _MARGIN
    _applied = True
    log.info("applied the workaround for PySide6's reference-count bug on None/True/False")
    return True
