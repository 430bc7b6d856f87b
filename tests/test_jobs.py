"""The command line's jobs refuse what they cannot finish before any slow step, and heal from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.engine import Engine, JobSpec
from shortgpt_desktop.core.errors import UnsupportedModelError
from shortgpt_desktop.jobs import run_prune

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_llama_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 6-layer random llama as GGUF (convert_hf_to_gguf's layout) with key/value caches shared between layers,
    and a plain F32 one."""
    from shortgpt_desktop.core.testing.fuzz import write_gguf
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    base = tmp_path_factory.mktemp("tiny-llama-gguf")
    folder = build_tiny_model(base / "hf", "llama", config_overrides=dict(TINY_FAMILIES["llama"][1]))
    write_gguf(folder, base / "tiny.gguf", extra={"llama.attention.shared_kv_layers": (2, gguf.GGUFValueType.UINT32)})
    return base / "tiny.gguf", write_gguf(folder, base / "plain.gguf", q8_down=False)


def test_a_gguf_layout_llama_cpp_fixes_by_position_is_refused_before_scoring(
        tiny_llama_gguf: tuple[Path, Path], small_calib: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The output format left to its default (a GGUF source stays GGUF): refused right after open, not after
    scoring, selection and repair (key/value caches shared between layers by position)."""
    shared_kv, _ = tiny_llama_gguf

    def no_slow_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the job loaded or scored before refusing the output")

    monkeypatch.setattr(Engine, "load", no_slow_work)
    monkeypatch.setattr(Engine, "score", no_slow_work)
    spec = JobSpec(model=str(shared_kv), calib=[str(small_calib)], samples=4, seq_len=32, ratio=0.3,
                   out=str(tmp_path / "out"), device="cpu", dtype="float32")
    with pytest.raises(UnsupportedModelError, match=r"share key/value caches.*save as safetensors instead\.$"):
        run_prune(Engine(), spec)
    assert not (tmp_path / "out").exists()


def test_heal_from_the_command_line(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    assert cli.main(["prune", str(tiny_model), "--remove", "2", "--heal", "2", "--calib", str(small_calib),
                     "--samples", "4", "--seq-len", "32", "--no-eval", "-q", "--out", str(out),
                     "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["heal_steps"] == 2 and len(data["heal_losses"]) == 2
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 5


def test_healing_with_gguf_output_reloads_as_the_healed_model(tiny_llama_gguf: tuple[Path, Path],
                                                               small_calib: Path, tmp_path: Path) -> None:
    """Repair and heal a GGUF-loaded llama, write GGUF (F32: no rounding), reload it with transformers: the logits
    are those of the healed model in memory (llama's Q/K rows permuted back the way llama.cpp stores them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shortgpt_desktop.core import pipeline
    from shortgpt_desktop.core.model.families import resolve_family
    from shortgpt_desktop.core.model.loading import LoadedModel
    from shortgpt_desktop.core.model.sources import resolve

    _, path = tiny_llama_gguf
    spec = JobSpec(model=str(path), calib=[str(small_calib)], samples=4, seq_len=32, layers=[2], repair="linear",
                   heal_steps=1, out=str(tmp_path / "out"), device="cpu", dtype="float32", low_memory=False,
                   check_perplexity=False)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent / "hf")
    config = model.config.to_dict()
    loaded = LoadedModel(model, tokenizer, resolve_family(model, config), config, resolve(str(path)), "cpu",
                         "float32")
    engine = Engine()
    engine.adopt(loaded, spec)
    engine.check_gguf_job(spec)
    engine.scored_spec = spec
    from shortgpt_desktop.core.cut.surgery import layer_sizes

    engine.sizes = layer_sizes(model, loaded.family)
    plan = engine.prepare(spec, engine.plan_for_spec(spec))
    adjusted = engine.adjusted
    assert adjusted is not None and adjusted.heal is not None and adjusted.repair is not None
    assert any(".q_proj." in name for name in adjusted.weights)  # the permuted rows are among the healed
    engine.save(plan, spec.out)
    written = next(Path(spec.out).glob("*.gguf"))
    reloaded = AutoModelForCausalLM.from_pretrained(written.parent, gguf_file=written.name,
                                                    dtype=torch.float32).eval()
    ids = torch.tensor([list(range(5, 37))])
    with torch.no_grad(), pipeline.modified(loaded, plan.removed, adjusted.weights):
        expected = model(ids).logits
    with torch.no_grad():
        got = reloaded(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_removal_that_shifts_a_position_locked_gguf_layout_is_refused_before_repair(
        tiny_llama_gguf: tuple[Path, Path], small_calib: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp derives which layers use full attention from ``il % full_attention_interval``: an explicit
    layer list is refused before loading, a chosen one before the repair and healing run."""
    from shortgpt_desktop.core.testing.fuzz import write_gguf

    _, plain = tiny_llama_gguf
    path = write_gguf(plain.parent / "hf", tmp_path / "periodic.gguf", q8_down=False,
                      extra={"llama.full_attention_interval": (2, gguf.GGUFValueType.UINT32)})

    def no_slow_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("slow work ran before the refusal")

    common = dict(model=str(path), calib=[str(small_calib)], samples=4, seq_len=32, out=str(tmp_path / "out"),
                  device="cpu", dtype="float32", low_memory=False, heal_steps=1)
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "load", no_slow_work)
        with pytest.raises(UnsupportedModelError, match=r"period of 2.*shift layer 3"):
            run_prune(Engine(), JobSpec(layers=[2], **common))
    monkeypatch.setattr(Engine, "adjust", no_slow_work)
    with pytest.raises(UnsupportedModelError, match="period of 2"):
        run_prune(Engine(), JobSpec(count=1, metric="bi", **common))
    assert not (tmp_path / "out").exists()
