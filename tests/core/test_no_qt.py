"""The engine never imports Qt: the command line, the window and the tests share it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "shortgpt_desktop" / "core"
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shortgpt_desktop.gui", "qtpy")


def test_no_qt_import_in_core_sources() -> None:
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level and node.module and node.module.startswith("gui"):
                    names.append("shortgpt_desktop.gui")
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)]
    assert offenders == []


def test_importing_core_and_cli_loads_no_qt() -> None:
    modules = ["shortgpt_desktop.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
               for p in CORE.rglob("*.py") if p.stem != "__init__"]
    modules.append("shortgpt_desktop.jobs")
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in [*modules, "shortgpt_desktop.cli"])
        + f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]\n"
        + "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_windows_controller_loads_no_qt() -> None:
    """gui/session.py decides what the window does; tests drive it without a display or Qt."""
    code = ("import sys\nimport shortgpt_desktop.gui.session\n"
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'shiboken6'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
