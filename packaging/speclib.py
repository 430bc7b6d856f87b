"""Read the plain constants of packaging/shortgpt-desktop.spec without running PyInstaller.

The spec keeps its names, entry points and exclude list as literals at the top; the build scripts, the exclude
check and tests/packaging read them from here so that nothing is written down twice.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

PACKAGING = Path(__file__).resolve().parent
REPO = PACKAGING.parent
SPEC = PACKAGING / "shortgpt-desktop.spec"


def spec_constants(spec: Path = SPEC) -> dict[str, Any]:
    """Every top-level ``NAME = <literal>`` of the spec."""
    tree = ast.parse(spec.read_text(encoding="utf-8"), filename=str(spec))
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal (a call, a path): not a constant
    return constants


def project_version(repo: Path = REPO) -> str:
    """``shortgpt_desktop.__version__``, read from the source (importing the package is not needed)."""
    text = (repo / "shortgpt_desktop" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not match:
        raise ValueError("no __version__ in shortgpt_desktop/__init__.py")
    return match.group(1)


def excluded(name: str, excludes: list[str]) -> bool:
    """Whether module ``name`` is left out by ``excludes`` (a module excludes its submodules too)."""
    return any(name == e or name.startswith(e + ".") for e in excludes)


if __name__ == "__main__":  # `python packaging/speclib.py NAME`: print one constant (for shell scripts)
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: speclib.py NAME|version")
    key = sys.argv[1]
    print(project_version() if key == "version" else spec_constants()[key])
