"""Hostile files: seeded mutations of a small GGUF and a small safetensors folder, inspected and loaded.

Each mutant goes through what opening a model does (``sources.resolve``, ``Engine().open``) and, when that
accepts it, through loading (``load_model``) and one forward pass. It must end in a clean refusal (a
:class:`UserError` with a one-line sentence, never a :class:`ResourceError`: a model of a few hundred kB has no
reason to run out of memory) or a valid model, never another exception, within :data:`SECONDS` each and with
its peak resident memory at most :data:`PEAK_BYTES` above what the process held before (``VmHWM``, reset per
mutant through ``/proc/self/clear_refs``). A soft ``RLIMIT_DATA`` turns a memory bomb into a quick failure
instead of a swapping machine. The quick suite runs :data:`QUICK` seeds, the slow one :data:`SLOW`.
"""

from __future__ import annotations

import resource
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shortgpt_desktop.core.errors import ResourceError, UserError
from shortgpt_desktop.core.testing import fuzz

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc memory figures are Linux's")

SECONDS = 10.0
PEAK_BYTES = 512 * 1024**2
LIMIT_BYTES = 2 * 1024**3  # beyond what the process holds: a guard, far above PEAK_BYTES
QUICK = range(0, 40)
SLOW = range(0, 1500)  # 1,500 seeded mutants, about a minute


class _TimedOut(Exception):
    pass


@dataclass
class Outcome:
    base: str
    seed: int
    mutation: str
    result: str  # "valid", "refused", or "LEAK"/"TIMEOUT"/"BAD SENTENCE"
    detail: str
    seconds: float
    peak_bytes: int


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _attempt(model: Path) -> str:
    """Open, inspect, load and run the model; returns "valid" (a refusal raises its UserError)."""
    import torch

    from shortgpt_desktop.core.engine import Engine, JobSpec
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(model))
    Engine().open(JobSpec(model=str(model), device="cpu", dtype="float32", samples=2, seq_len=16, batch_size=1))
    loaded = load_model(source, "cpu", "float32")
    ids = loaded.tokenizer("The tiny cat sat.", return_tensors="pt").input_ids[:, :8]
    if ids.numel() == 0:
        ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        loaded.model(ids.clamp(max=loaded.model.config.vocab_size - 1))
    return "valid"


def run_mutant(base: str, seed: int, mutation: str, model: Path) -> Outcome:
    """One mutant, timed and measured; any exception that is not a clean refusal is recorded as a leak."""
    import traceback

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM) to the current one
    before = _status("VmRSS")

    def timeout(signum: int, frame: Any) -> None:
        raise _TimedOut()

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    started = time.perf_counter()
    try:
        result, detail = _attempt(model), ""
    except ResourceError as exc:
        result, detail = "LEAK", f"ResourceError (a memory bomb?): {exc}"
    except UserError as exc:
        message = str(exc)
        ok = message and "\n" not in message and message.rstrip().endswith((".", ")", "?"))
        result, detail = ("refused" if ok else "BAD SENTENCE"), f"{type(exc).__name__}: {message}"
    except _TimedOut:
        result, detail = "TIMEOUT", f"over {SECONDS} s"
    except Exception as exc:  # what the test is looking for
        result, detail = "LEAK", "".join(traceback.format_exception(exc)[-3:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - started
    return Outcome(base, seed, mutation, result, detail, seconds, max(0, _status("VmHWM") - before))


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fuzz.build_bases(tmp_path_factory.mktemp("fuzz-bases"))


def _mutants(bases: tuple[Path, Path], seeds: range, folder: Path) -> list[tuple[str, int, str, Path]]:
    gguf_path, st_folder = bases
    data = gguf_path.read_bytes()
    out = []
    for seed in seeds:
        if seed % 2 == 0:
            mutation, mutant = fuzz.mutate_gguf(data, seed)
            path = folder / f"gguf-{seed}" / "model.gguf"
            path.parent.mkdir()
            path.write_bytes(mutant)
            out.append(("gguf", seed, mutation, path))
        else:
            mutation = fuzz.mutate_safetensors(st_folder, folder / f"safetensors-{seed}", seed)
            out.append(("safetensors", seed, mutation, folder / f"safetensors-{seed}"))
    return out


def run_fuzz(bases: tuple[Path, Path], seeds: range, folder: Path) -> list[Outcome]:
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = _status("VmData") + LIMIT_BYTES
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        return [run_mutant(*m) for m in _mutants(bases, seeds, folder)]
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def check(outcomes: list[Outcome]) -> None:
    counts = Counter((o.base, o.result) for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds)
    hungriest = max(outcomes, key=lambda o: o.peak_bytes)
    print(f"\nfuzz: {len(outcomes)} mutants, {dict(sorted(counts.items()))}; slowest {slowest.seconds:.2f} s "
          f"({slowest.base} seed {slowest.seed}: {slowest.mutation}), largest peak "
          f"{hungriest.peak_bytes / 2**20:.0f} MiB ({hungriest.base} seed {hungriest.seed}: {hungriest.mutation})")
    bad = [o for o in outcomes if o.result not in ("valid", "refused") or o.peak_bytes > PEAK_BYTES]
    assert not bad, "\n".join(f"{o.base} seed {o.seed} ({o.mutation}): {o.result} {o.detail} "
                              f"[{o.seconds:.1f} s, {o.peak_bytes / 2**20:.0f} MiB]" for o in bad[:10])
    assert counts[("gguf", "refused")] and counts[("safetensors", "refused")], "the mutations must bite"


def test_the_bases_are_valid_models(bases: tuple[Path, Path]) -> None:
    gguf_path, st_folder = bases
    for model in (gguf_path, st_folder):
        outcome = run_mutant("base", 0, "none", model)
        assert outcome.result == "valid", outcome


def test_the_bounds_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The peak measure sees a 256 MiB allocation, the time bound stops a hang, and a stray exception is a leak."""
    this = sys.modules[__name__]

    def hungry(model: Path) -> str:
        block = bytearray(256 * 1024**2)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        return "valid"

    monkeypatch.setattr(this, "_attempt", hungry)
    assert run_mutant("test", 0, "allocates", tmp_path).peak_bytes >= 250 * 1024**2
    monkeypatch.setattr(this, "_attempt", lambda model: time.sleep(5))
    monkeypatch.setattr(this, "SECONDS", 0.2)
    assert run_mutant("test", 0, "hangs", tmp_path).result == "TIMEOUT"
    monkeypatch.setattr(this, "_attempt", lambda model: [][1])
    assert run_mutant("test", 0, "raises", tmp_path).result == "LEAK"


def test_the_mutations_are_seeded(bases: tuple[Path, Path], tmp_path: Path) -> None:
    data = bases[0].read_bytes()
    assert fuzz.mutate_gguf(data, 7) == fuzz.mutate_gguf(data, 7)
    first = fuzz.mutate_safetensors(bases[1], tmp_path / "a", 9)
    assert first == fuzz.mutate_safetensors(bases[1], tmp_path / "b", 9)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_hostile_files_are_refused_cleanly_or_load(bases: tuple[Path, Path], tmp_path: Path) -> None:
    check(run_fuzz(bases, QUICK, tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hostile_files_are_refused_cleanly_or_load_many(bases: tuple[Path, Path], tmp_path: Path) -> None:
    check(run_fuzz(bases, SLOW, tmp_path))


def test_a_hostile_file_from_the_command_line_is_one_line_and_writes_nothing(
        bases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shortgpt_desktop import cli

    gguf_path, st_folder = bases
    bad_gguf = tmp_path / "bad.gguf"
    data = bytearray(gguf_path.read_bytes())
    data[8:16] = (1 << 40).to_bytes(8, "little")  # a tensor count no file of this size can hold
    bad_gguf.write_bytes(bytes(data))
    bad_folder = tmp_path / "bad-folder"
    shutil.copytree(st_folder, bad_folder)
    (bad_folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 1e9}', encoding="utf-8")
    for model in (bad_gguf, bad_folder):
        out = tmp_path / f"out-{model.name}"
        code = cli.main(["prune", str(model), "--layers", "1", "--out", str(out), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("shortgpt: error: ") and "Traceback" not in err[0]
        assert model.name in err[0] or "config.json" in err[0]
        assert not out.exists()
