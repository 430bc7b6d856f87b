"""Smoke test of a frozen bundle: both programs start, and each runs a tiny job end to end.

    python packaging/smoke_test.py dist/cpu/shortgpt-desktop        # the onedir folder (or an installed copy)

1. ``shortgpt-desktop --self-test``: the window, offscreen, on a tiny model it builds itself (open, score, slide,
   save, reload, perplexity). On Windows the window program has no console, so only its exit status is seen.
2. ``shortgpt --version``.
3. ``shortgpt prune`` on a tiny model written by this Python (which needs the project importable, as in the
   build venv; skipped with a note otherwise, or with --no-cli-job), then the JSON report is checked.

Exit status 0 only if every step passed. Uses only the standard library besides that optional tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speclib import spec_constants

sys.path.pop(0)

STEP_TIMEOUT = 900


def exe(folder: Path, name: str) -> Path:
    path = folder / (name + (".exe" if os.name == "nt" else ""))
    if not path.is_file():
        raise SystemExit(f"{path} is missing")
    return path


def run(step: str, command: list[str], env: dict[str, str], cwd: Path, expect_output: str | None = None) -> bool:
    """Run one step; with ``expect_output``, its standard output must start with that text."""
    print(f"--- {step}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, cwd=cwd, timeout=STEP_TIMEOUT, check=False,
                              stdout=subprocess.PIPE if expect_output else None, text=True)
    except subprocess.TimeoutExpired:
        print(f"FAIL  {step}: no exit within {STEP_TIMEOUT} s", flush=True)
        return False
    ok = done.returncode == 0
    if expect_output is not None:
        print(done.stdout, end="", flush=True)
        if not done.stdout.startswith(expect_output):
            print(f"FAIL  {step}: the output does not start with {expect_output!r}", flush=True)
            ok = False
    print(f"{'ok  ' if ok else 'FAIL'}  {step}: exit {done.returncode} in {time.perf_counter() - started:.1f} s",
          flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the onedir folder holding both executables")
    parser.add_argument("--no-cli-job", action="store_true", help="skip the tiny `shortgpt prune` job")
    args = parser.parse_args(argv)

    spec = spec_constants()
    folder = args.bundle.resolve()
    gui, cli = exe(folder, spec["GUI_EXE"]), exe(folder, spec["CLI_EXE"])
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # the frozen programs must not see a source tree or a venv
    env.pop("PYTHONHOME", None)
    results = []
    with tempfile.TemporaryDirectory(prefix="shortgpt-smoke-") as tmp:
        work = Path(tmp)
        results.append(run("window self-test", [str(gui), "--self-test"], env, work))
        # `shortgpt` is a link to the same program on Linux: its answer shows that it runs as the command line.
        results.append(run("command line --version", [str(cli), "--version"], env, work,
                           expect_output=f"{spec['CLI_EXE']} "))
        if not args.no_cli_job:
            try:
                from shortgpt_desktop.core.testing.tiny_models import build_tiny_model
            except ImportError as exc:
                print(f"skip  command line prune job (no tiny model: {exc})")
            else:
                model = build_tiny_model(work / "tiny")
                report = work / "report.json"
                command = [str(cli), "prune", str(model), "--calib", "builtin", "--samples", "8", "--seq-len",
                           "32", "--layers", "2", "--out", str(work / "pruned"), "--json", str(report), "--quiet",
                           "--device", "cpu"]
                ok = run("command line prune job", command, env, work)
                if ok:
                    data = json.loads(report.read_text(encoding="utf-8"))
                    ok = len(data.get("removed_layers", [])) == 2 and (work / "pruned" / "config.json").is_file()
                    print(f"{'ok  ' if ok else 'FAIL'}  prune report: removed {data.get('removed_layers')}, "
                          f"perplexity {data.get('ppl_before')} -> {data.get('ppl_after')}")
                results.append(ok)
    passed = all(results)
    print(f"smoke test {'passed' if passed else 'FAILED'}: {sum(results)}/{len(results)} steps", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
