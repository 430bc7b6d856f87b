"""The benchmarks start: each says its options, and a file it reads that is not there is one line, not a traceback.

One child process runs them all (``runpy``, as ``python benchmarks/x.py`` would): they set environment variables
and ``sys.path`` at import, which must not leak into the other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

_DRIVER = """
import contextlib, io, json, runpy, sys
results = {}
sys.path.insert(0, sys.argv[1])
for script, *argv in json.loads(sys.argv[2]):
    sys.argv = [script, *argv]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
        code = None
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        code = f"raised {type(exc).__name__}: {exc}"
    results[" ".join([script.rsplit("/", 1)[-1], *argv])] = [code, out.getvalue()]
print(json.dumps(results))
"""


def run_benchmarks(runs: list[list[str]]) -> dict[str, list]:
    result = subprocess.run([sys.executable, "-c", _DRIVER, str(BENCHMARKS), json.dumps(runs)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_each_benchmark_says_its_options_and_a_missing_file_in_one_line(tmp_path: Path) -> None:
    scripts = sorted(str(p) for p in BENCHMARKS.glob("bench_*.py") if p.name != "bench_paths.py")
    missing = str(tmp_path / "not-there.txt")
    runs = [[s, "--help"] for s in scripts] + [
        [str(BENCHMARKS / "bench_quality.py"), "--calib", missing],
        [str(BENCHMARKS / "bench_recipe.py"), "--calib", missing],
        [str(BENCHMARKS / "bench_heal_memory.py"), "--calib", missing],
        [str(BENCHMARKS / "bench_candidate_precision.py"), str(tmp_path / "model.gguf")],
    ]
    results = run_benchmarks(runs)
    helps = {name: value for name, value in results.items() if name.endswith("--help")}
    assert len(helps) == len(scripts) >= 19
    for name, (code, out) in helps.items():
        assert code in (0, None) and "usage:" in out, (name, code)
    for name, (code, _) in results.items():
        if not name.endswith("--help"):
            assert isinstance(code, str) and code.endswith("does not exist: give another with --model, --calib or "
                                                           "--eval.") and "\n" not in code, (name, code)
