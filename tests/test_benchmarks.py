"""The benchmarks start: each says its options, and a file it reads that is not there is one line, not a traceback.

One child process runs them all (``runpy``, as ``python benchmarks/x.py`` would): they set environment variables
and ``sys.path`` at import, which must not leak into the other tests.
"""

from __future__ import annotations

import json
import os
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


def run_benchmarks(runs: list[list[str]], data: Path) -> dict[str, list]:
    """``data``: where the benchmarks look for their default text (``SHORTGPT_BENCH_DATA``), a folder that is not
    there: the tests read nothing beside the checkout (a user's clone has no ``../shared``)."""
    env = {**os.environ, "SHORTGPT_BENCH_DATA": str(data)}
    result = subprocess.run([sys.executable, "-c", _DRIVER, str(BENCHMARKS), json.dumps(runs)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_each_benchmark_says_its_options_and_a_missing_file_in_one_line(tmp_path: Path) -> None:
    scripts = sorted(str(p) for p in BENCHMARKS.glob("bench_*.py") if p.name != "bench_paths.py")
    missing = str(tmp_path / "not-there.txt")
    there = tmp_path / "there.txt"  # every other file the run names exists: the line must name the missing one
    there.write_text("text", encoding="utf-8")
    bench = {name: str(BENCHMARKS / f"{name}.py") for name in (
        "bench_quality", "bench_recipe", "bench_heal_memory", "bench_candidate_precision", "bench_heal_variants",
        "bench_selection", "bench_open", "bench_dequant", "bench_load", "bench_generation", "bench_finalist_fits",
        "bench_ridge", "bench_quant_scale")}
    runs = [[s, "--help"] for s in scripts] + [
        [bench["bench_quality"], "--model", str(there), "--calib", missing, "--eval", str(there)],
        [bench["bench_recipe"], str(there), "--calib", missing],
        [bench["bench_heal_memory"], "--calib", missing],
        [bench["bench_candidate_precision"], missing, "--calib", str(there)],
        [bench["bench_heal_variants"], "--model", str(there), "--calib", str(there), "--eval", missing],
        [bench["bench_selection"], str(there), "--calib", str(there), "--eval", missing],
        [bench["bench_open"], "--model", missing],
        [bench["bench_dequant"], "--model", missing],
        [bench["bench_load"], str(there), missing],
        [bench["bench_generation"], str(there), "--calib", missing],
        [bench["bench_finalist_fits"], "--model", str(there), "--calib", missing],
        [bench["bench_ridge"], "--model", str(there), "--remove", "1", "--calib", str(there), "--prose", missing],
        [bench["bench_quant_scale"], str(there), "--remove", "1", "--calib", str(there), "--eval", missing],
    ]
    results = run_benchmarks(runs, tmp_path / "no-data-here")
    helps = {name: value for name, value in results.items() if name.endswith("--help")}
    assert len(helps) == len(scripts) >= 19
    for name, (code, out) in helps.items():
        assert code in (0, None) and "usage:" in out, (name, code)
    refused = {name.split()[0]: code for name, (code, _) in results.items() if not name.endswith("--help")}
    assert len(refused) == 13
    # Each names the options it has: bench_recipe's "give another with --model, --calib or --eval" named two it
    # does not take (its models are arguments), where its default text is not there.
    instead = dict.fromkeys(("bench_quality.py", "bench_heal_variants.py"),
                            "give another with --model, --calib or --eval")
    instead.update(dict.fromkeys(("bench_recipe.py", "bench_candidate_precision.py", "bench_generation.py"),
                                 "give another model path or --calib"))
    instead.update(dict.fromkeys(("bench_selection.py", "bench_quant_scale.py"),
                                 "give another model path, --calib or --eval"))
    instead.update(dict.fromkeys(("bench_open.py", "bench_dequant.py"), "give another with --model"))
    instead.update({"bench_load.py": "give the path of a GGUF file",
                    "bench_heal_memory.py": "give another with --calib",
                    "bench_finalist_fits.py": "give another with --model or --calib",
                    "bench_ridge.py": "give another with --model, --calib or --prose"})
    for name, code in refused.items():
        assert code == f"{missing} does not exist: {instead[name]}.", (name, code)


def test_the_default_text_is_looked_for_where_shortgpt_bench_data_says(tmp_path: Path) -> None:
    """The benchmarks' default text moves with ``SHORTGPT_BENCH_DATA`` (which keeps the test above from reading
    ``../shared`` beside the checkout): a benchmark given no ``--calib`` looks there."""
    there = tmp_path / "there.txt"
    there.write_text("text", encoding="utf-8")
    data = tmp_path / "elsewhere"
    results = run_benchmarks([[str(BENCHMARKS / "bench_recipe.py"), str(there)]], data)
    [(code, _)] = results.values()
    assert code == f"{data / 'wikitext2-valid.txt'} does not exist: give another model path or --calib.", code
