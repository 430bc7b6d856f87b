"""Seconds from launch to the window shown: ``shortgpt-desktop --measure-startup`` against an empty Qt window
(the same PySide6 import, QApplication and a shown QMainWindow, nothing of this app), measured in the same run.

    python benchmarks/bench_startup.py [--repeats 5]

Each launch is a fresh process; the two alternate, and the median of each is compared. The window must show
before torch loads (torch and transformers take seconds to import): each launch of the app also says whether
torch was imported, and the benchmark fails if it was. With no display, Qt's offscreen platform is used. The
target is the one a test held before (a timed test fails on a busy machine): the window within 5 s of launch. The
ratio says what this app adds to Qt's own start: pyqtgraph and the window's modules, about 0.4 s of imports here.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

#: An empty window, timed as the app times itself (interpreter start-up included, read from /proc on Linux).
EMPTY_WINDOW = r"""
import os, time
t0 = time.perf_counter()
def age():
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            return max(0.0, float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
age0 = age()
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
window = QMainWindow()
def shown():
    print(f"window shown {time.perf_counter() - t0 + age0:.3f} s after process start", flush=True)
    window.close()
QTimer.singleShot(0, shown)
window.show()
app.exec()
"""

SHOWN = re.compile(r"window shown ([\d.]+) s after process start")


def launch(command: list[str]) -> tuple[float, str]:
    """One fresh process: (seconds from its start to its window shown, its output)."""
    env = dict(os.environ)
    if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env["QT_QPA_PLATFORM"] = "offscreen"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=True)
    match = SHOWN.search(result.stdout)
    if match is None:
        raise SystemExit(f"no start-up time in the output of {command[:3]}: {result.stdout!r} {result.stderr!r}")
    return float(match.group(1)), result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    app = [sys.executable, "-m", "shortgpt_desktop", "--measure-startup"]
    empty = [sys.executable, "-c", EMPTY_WINDOW]
    launch(app), launch(empty)  # warm the file cache: the first launch after a boot reads every library
    app_s: list[float] = []
    empty_s: list[float] = []
    for _ in range(args.repeats):
        seconds, out = launch(app)
        if "torch imported: False" not in out:
            raise SystemExit(f"torch was imported before the window showed: {out.strip()}")
        app_s.append(seconds)
        empty_s.append(launch(empty)[0])
    app_median, empty_median = statistics.median(app_s), statistics.median(empty_s)
    print(f"{args.repeats} launches each, medians (all runs: app {', '.join(f'{s:.2f}' for s in app_s)}; "
          f"empty {', '.join(f'{s:.2f}' for s in empty_s)})")
    print(f"| window shown after launch | this app | empty Qt window | ratio |\n|---|---|---|---|\n"
          f"| seconds | {app_median:.2f} | {empty_median:.2f} | {app_median / empty_median:.2f}× |")


if __name__ == "__main__":
    main()
