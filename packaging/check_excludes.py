"""Run the app's self-test with every module of the spec's EXCLUDES made unimportable.

A module left out of the bundle looks, to the frozen app, exactly like a module that is not installed. Blocking
the same names here shows in seconds, before a long PyInstaller build, whether an exclude breaks the app:

    QT_QPA_PLATFORM=offscreen python packaging/check_excludes.py          # exit status of the self-test

It also lists, on a line of its own, every data file of an installed package that the self-test opens (not
modules, not dist-info metadata): the frozen app has such a file only where a PyInstaller hook or the spec's
DATA_PACKAGES collects it. The build scripts run it in the build venv; tests/packaging runs it in the test venv.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speclib import excluded, spec_constants

sys.path.pop(0)


class Hider:
    """Wraps one import finder so that it finds no excluded module, as in the frozen app: ``import x`` raises
    ModuleNotFoundError and ``importlib.util.find_spec("x")`` returns None (libraries probe optional
    dependencies that way). Remembers what was asked for."""

    def __init__(self, finder: object, excludes: list[str], refused: set[str]) -> None:
        self.finder, self.excludes, self.refused = finder, excludes, refused

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if excluded(fullname, self.excludes):
            self.refused.add(fullname)
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(fullname, path, target) if find_spec else None

    def __getattr__(self, name: str) -> object:  # invalidate_caches, find_distributions...
        return getattr(self.finder, name)


#: The line that lists the package data files the self-test opened (JSON: paths relative to site-packages).
DATA_FILES_LINE = "package data files read: "
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".dll", ".dylib")


def record_package_data(read: set[str]) -> None:
    """Add to ``read`` every data file under site-packages that is opened from now on (an audit hook)."""
    roots = {os.path.normcase(str(Path(sysconfig.get_paths()[key]).resolve())) + os.sep
             for key in ("purelib", "platlib")}

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes)):
            return
        path = os.path.normcase(os.path.abspath(os.fsdecode(args[0])))
        for root in roots:
            if path.startswith(root):
                inside = path[len(root):].replace(os.sep, "/")
                first = inside.split("/", 1)[0]
                if not first.endswith((".dist-info", ".egg-info")) and not inside.endswith(_MODULE_SUFFIXES):
                    read.add(inside)

    sys.addaudithook(hook)


def main() -> int:
    excludes = spec_constants()["EXCLUDES"]
    already = sorted(name for name in sys.modules if excluded(name, excludes))
    if already:
        print(f"already imported before the check: {already}", file=sys.stderr)
        return 1
    refused: set[str] = set()
    sys.meta_path[:] = [Hider(finder, excludes, refused) for finder in sys.meta_path]
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    read: set[str] = set()
    record_package_data(read)
    from shortgpt_desktop.app import main as app_main

    code = app_main(["--self-test"])
    print(DATA_FILES_LINE + json.dumps(sorted(read)))
    if refused:
        print(f"excluded modules asked for (the self-test did without them): {sorted(refused)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
