"""Where the benchmarks find their models and text, in one place.

The models are the GGUF files the real-model tests cache (``SHORTGPT_TEST_CACHE``, else
``~/.cache/shortgpt-desktop-tests``; the tests download them from PyPI); the text is WikiText-2 in
``../shared/data`` beside the checkout, which a clone of the project alone does not have: pass ``--calib`` (and
``--eval``) where a benchmark takes them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

#: The folder ``tests/conftest.py``'s ``model_cache_dir`` downloads to (not imported: that would tie the benchmarks to
#: pytest).
CACHE = Path(os.environ.get("SHORTGPT_TEST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "shortgpt-desktop-tests")
SMOLLM2 = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = CACHE / "gemma-3-270m-q4_k_m.gguf"
#: ``SHORTGPT_BENCH_DATA`` moves it (the project's own test of the benchmarks points it at a folder that is not there,
#: so that it reads nothing beside the checkout).
DATA = Path(os.environ.get("SHORTGPT_BENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
VALID = DATA / "wikitext2-valid.txt"
TEST = DATA / "wikitext2-test.txt"


def cached(models: Iterable[Path]) -> list[Path]:
    """The default models that are cached; each missing one is said on stderr and left out."""
    found = []
    for model in models:
        if Path(model).is_file():
            found.append(Path(model))
        else:
            print(f"note: {model} is not cached (the slow tests download it); left out", file=sys.stderr)
    return found


def require(*paths: str | Path, instead: str = "give another with --model, --calib or --eval") -> None:
    """Exit with one line where a file the benchmark reads is not there ("stdlib" and "builtin" name no file);
    ``instead``: what to do, in the benchmark's own options (the default names --model, --calib and --eval; one
    that lacks any of them, or takes its models as arguments, says its own)."""
    for path in paths:
        if str(path) not in ("stdlib", "builtin") and not Path(path).exists():
            sys.exit(f"{path} does not exist: {instead}.")
