"""The command line's jobs check what the paths and the text can tell before the model is inspected or loaded,
and say which calibration files they leave out before anything slow starts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.errors import CalibrationError, ModelSourceError, OutputError, UnsupportedModelError
from shortgpt_desktop.core.formats.writers import WeightChanges
from shortgpt_desktop.core.pipeline import JobSpec
from shortgpt_desktop.format import human_bytes
from shortgpt_desktop.jobs import run_eval, run_prune, run_score, run_sweep

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


@pytest.fixture
def slow_inspection(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Inspection (and loading) that fails loudly: a job that reaches it checked too late."""
    calls: list[str] = []

    def too_late(*_args, **_kwargs):
        calls.append("inspect")
        raise AssertionError("the model was inspected before the cheap checks")

    monkeypatch.setattr("shortgpt_desktop.core.engine.inspect_model", too_late)
    monkeypatch.setattr("shortgpt_desktop.core.model.loading.inspect_model", too_late)
    monkeypatch.setattr("shortgpt_desktop.core.engine.open_backend", too_late)
    return calls


@pytest.fixture
def pdf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "papers"
    folder.mkdir()
    for name in ("a.pdf", "b.pdf"):
        (folder / name).write_bytes(PDF)
    return folder


def spec(model: Path, calib: Path, **kwargs) -> JobSpec:
    return JobSpec(model=str(model), calib=[str(calib)], samples=4, seq_len=32, device="cpu", dtype="float32",
                   **kwargs)


@pytest.mark.parametrize("job", ["score", "prune", "sweep", "eval"])
def test_unusable_text_is_refused_before_inspection(tiny_model: Path, pdf_folder: Path, tmp_path: Path,
                                                    slow_inspection: list[str], job: str) -> None:
    s = spec(tiny_model, pdf_folder)
    with pytest.raises(CalibrationError, match=r"No usable calibration text: skipped .*a\.pdf: it is a PDF document"):
        if job == "score":
            run_score(Engine(), s)
        elif job == "prune":
            s.count, s.out = 1, str(tmp_path / "out")
            run_prune(Engine(), s)
        elif job == "sweep":
            run_sweep(Engine(), s)
        else:
            run_eval(Engine(), s)
    assert slow_inspection == []


def test_output_folder_refusals_come_before_inspection(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                       slow_inspection: list[str]) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds no model but other files \(keep.txt\)"):
        run_prune(Engine(), spec(tiny_model, small_calib, count=1, out=str(full)))
    with pytest.raises(OutputError, match="source model's folder or inside it"):
        run_prune(Engine(), spec(tiny_model, small_calib, count=1, out=str(tiny_model / "pruned")))
    assert slow_inspection == []


def code_folder(root: Path, text: Path) -> Path:
    """Python, Rust, HTML and a file without an ending (enough text for a few samples), a PDF and a PNG."""
    root.mkdir()
    prose = text.read_text(encoding="utf-8")[:6000]
    (root / "main.py").write_text('"""' + prose[:1500] + '"""\n\ndef add(a, b):\n    return a + b\n')
    (root / "lib.rs").write_text("// " + prose[1500:3000].replace("\n", "\n// ") + "\npub fn f() {}\n")
    (root / "page.html").write_text(f"<html><body><p>{prose[3000:4500]}</p></body></html>\n")
    (root / "NOTES").write_text(prose[4500:6000])
    (root / "paper.pdf").write_bytes(PDF)
    (root / "figure.png").write_bytes(PNG)
    return root


def test_code_folder_is_used_in_full_and_binaries_are_said_before_scoring(
        tiny_model: Path, small_calib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = code_folder(tmp_path / "code", small_calib)
    events: list[str] = []
    report = run_score(Engine(), spec(tiny_model, folder, metric="bi"),
                       progress=lambda stage, done, total, partial=None: events.append(stage),
                       on_info=lambda info: events.append("model"), on_note=lambda s: events.append("note: " + s))
    assert sorted(Path(p).name for p in report.calibration) == ["NOTES", "lib.rs", "main.py", "page.html"]
    notes = [e for e in events if e.startswith("note: ")]
    assert len(notes) == 2
    assert "figure.png: it is a PNG image, not text" in notes[0]
    assert "paper.pdf: it is a PDF document, not text" in notes[1]
    assert events.index(notes[-1]) < min(events.index(e) for e in ("model", "load", "scoring"))
    # On the command line: a line on stderr before the model's first line.
    assert cli.main(["score", str(tiny_model), "--calib", str(folder), "--samples", "2", "--seq-len", "32",
                     "--metric", "bi"]) == 0
    err = capsys.readouterr().err.splitlines()
    first_model = next(i for i, line in enumerate(err) if line.startswith("model:"))
    skipped = [i for i, line in enumerate(err) if line.startswith("note: Skipped")]
    assert len(skipped) == 2 and max(skipped) < first_model


def test_a_job_that_needs_no_text_never_reads_it(tiny_model: Path, pdf_folder: Path, tmp_path: Path) -> None:
    """Removing given layers without a check or a repair reads no text: a folder of PDFs is no obstacle."""
    s = spec(tiny_model, pdf_folder, layers=[1], out=str(tmp_path / "out"), repair="none", check_perplexity=False)
    report = run_prune(Engine(), s)
    assert report.removed_layers == [1]
    shutil.rmtree(tmp_path / "out")


def test_a_licensed_sources_pruned_copy_carries_its_licence_and_text(tiny_model: Path, small_calib: Path,
                                                                     tmp_path: Path) -> None:
    """The whole job, not only the card's writer: the source's card declares a licence and its folder holds the text,
    and the pruned copy's card and folder carry both (the licence line never reaching the card went unnoticed)."""
    import yaml

    source = tmp_path / "licensed"
    shutil.copytree(tiny_model, source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A model\n", encoding="utf-8")
    (source / "LICENSE").write_text("Apache License\n", encoding="utf-8")
    out = tmp_path / "out"
    report = run_prune(Engine(), spec(source, small_calib, layers=[1], out=str(out), repair="none",
                                      check_perplexity=False, prompt=""))
    front = yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert report.license == {"license": "apache-2.0"} and front["license"] == "apache-2.0"
    assert (out / "LICENSE").read_text(encoding="utf-8") == "Apache License\n"


def test_the_card_and_json_name_the_text_a_job_of_given_layers_read_and_none_where_it_read_none(
        tiny_model: Path, small_calib: Path, test_text: Path, tmp_path: Path) -> None:
    """Layers given by hand are not scored, so the text is read after, for the repair and the check: the card said
    "Calibration: built-in corpus" and the JSON no calibration, though the repair was fitted on the user's file. A
    check on separate text named no text (the JSON's null reads "the calibration's end"). Where nothing read text,
    the card said the built-in corpus and sizes that nothing used."""
    repaired = tmp_path / "repaired"
    report = run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(repaired), prompt=""))
    card = (repaired / "README.md").read_text(encoding="utf-8")
    assert report.calibration == [str(small_calib)] and report.repair == "linear" and report.eval_text is None
    assert "- Calibration: calib.txt; 4 samples × 32 tokens, seed 0" in card
    assert "tokens held out at the end of the calibration text, the same tokens" in card

    measured = tmp_path / "measured"
    report = run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(measured), prompt="",
                                      eval_text=str(test_text)))
    assert report.eval_text == str(test_text) and report.ppl_after is not None
    assert f"tokens of `{test_text.name}`, the same tokens" in (measured / "README.md").read_text(encoding="utf-8")

    bare = tmp_path / "bare"
    report = run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(bare), repair="none",
                                      check_perplexity=False))
    assert (report.calibration, report.samples, report.seq_len, report.eval_text) == ([], 0, 0, None)
    card = (bare / "README.md").read_text(encoding="utf-8")
    assert "- Calibration: none (the layers were given by hand, and nothing was fitted or measured on text)" in card


def test_saved_size_is_the_bytes_written_and_said_in_one_unit(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    s = spec(tiny_model, small_calib, layers=[1, 3], out=str(tmp_path / "out"), repair="none",
             check_perplexity=False)
    report = run_prune(Engine(), s)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.safetensors"))
    assert report.bytes_after == on_disk and report.output_files == ["model.safetensors"]
    cli.print_summary(report)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("saved to"))
    # the legend names the unit shown: it said "MB = 10^6 bytes" beside this size in kB
    assert line.endswith(f"{human_bytes(on_disk)} = {on_disk:,} bytes; kB = 1,000 bytes)") and on_disk < 1e6, line
    report.bytes_after = 98_400_000
    cli.print_summary(report)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("saved to"))
    assert line.endswith("98.4 MB = 98,400,000 bytes; MB = 10^6 bytes)"), line


def test_requantized_tensors_are_named_by_their_original_layer(capsys: pytest.CaptureFixture[str]) -> None:
    from shortgpt_desktop.core.report import Report, model_card

    report = Report(model="m.gguf", architecture="LlamaForCausalLM", n_layers=24, metric="bi+",
                    removed_layers=[3, 12, 13, 14], kept_layers=[i for i in range(24) if i not in (3, 12, 13, 14)],
                    output="out", output_format="gguf", quantization="Q4_K_M",
                    changed_types={"blk.13.ffn_down.weight": ["Q4_K", "Q8_0"]})
    cli.print_summary(report)
    out = capsys.readouterr().out
    assert "re-quantized layer 17 ffn_down.weight (blk.13 in the pruned file): Q4_K -> Q8_0" in out
    assert "(gguf Q4_K_M;" in out
    assert "layer 17 ffn_down.weight (blk.13 in the pruned file): Q4_K → Q8_0" in model_card(report, "m.gguf")
    assert "measured before the changed weights were re-quantized" not in model_card(report, "m.gguf")  # no check
    report.ppl_before, report.ppl_after, report.eval_tokens = 36.1, 50.4, 4080
    card = model_card(report, "m.gguf")
    assert "These figures were measured before the changed weights were re-quantized for this file" in card
    # with the text to give it: eval's own default text is the built-in corpus (it read twice as bad; a walkthrough)
    assert "(`shortgpt eval` measures it, given the same text as `--calib` or `--eval-text`)" in card
    assert "quiz" not in card  # none was asked
    report.quiz = {"asked": 26, "known": 17, "kept": 5}
    assert "may differ, by a quiz answer or two where it is close" in model_card(report, "m.gguf")


def test_a_healings_requantized_tensors_are_summed_up_per_change_of_type(capsys: pytest.CaptureFixture[str]) -> None:
    """Healing re-quantizes every kept layer's projections: one line per change of type, not one per tensor."""
    from shortgpt_desktop.core.report import Report, model_card

    kept = [i for i in range(10) if i not in (3, 4, 7)]
    changed = {f"blk.{new}.{part}.weight": ["Q4_1", "Q8_0"] for new in range(len(kept))
               for part in ("attn_q", "ffn_down")}
    changed["blk.2.attn_v.weight"] = ["Q6_K", "Q8_0"]
    report = Report(model="m.gguf", architecture="LlamaForCausalLM", n_layers=10, metric="bi+",
                    removed_layers=[3, 4, 7], kept_layers=kept, output="out", output_format="gguf",
                    quantization="Q4_1", changed_types=changed, heal_steps=20, heal_losses=[0.3, 0.2])
    report.bytes_before, report.bytes_after = 98_362_432, 141_045_888  # SmolLM2's Q4_1 file, healed
    cli.print_summary(report)
    out = capsys.readouterr().out.splitlines()
    lines = [x for x in out if x.startswith("re-quantized")]
    assert lines == ["re-quantized 14 weights Q4_1 -> Q8_0: attn_q.weight, ffn_down.weight of layers 0–2, 5, 6, 8, 9",
                     "re-quantized 1 weight Q6_K -> Q8_0: attn_v.weight of layer 2"]
    # A file larger than its source says so (141 MB from 98 MB read as a failed cut), and why.
    assert out[out.index(lines[-1]) + 1] == ("note: the saved model is 43% larger than the original in this format "
                                             "(98.4 MB): the weights re-quantized above take more bytes than they "
                                             "did.")
    assert "healed: 20 LoRA steps," in "\n".join(out)
    report.bytes_after = 98_400_000  # under 1% more
    cli.print_summary(report)
    assert "note: the saved model is slightly larger than the original in this format" in capsys.readouterr().out
    report.bytes_after, report.heal_steps, report.heal_losses = 90_000_000, 1, [0.3]
    cli.print_summary(report)
    out = capsys.readouterr().out
    assert "larger than its source" not in out and "healed: 1 LoRA step," in out  # it said "1 LoRA steps"
    assert "healed with 1 LoRA step on the calibration text" in model_card(report, "m.gguf")
    assert ("re-quantized after healing: 14 weights Q4_1 → Q8_0: attn_q.weight, ffn_down.weight of layers 0–2, 5, 6, "
            "8, 9; 1 weight Q6_K → Q8_0: attn_v.weight of layer 2") in model_card(report, "m.gguf")
    report.repair = "linear"
    assert "re-quantized after repair and healing: 14 weights" in model_card(report, "m.gguf")


# ------------------------------------------------------------ GGUF output and healing (issue 19)

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
    # a healing whose loss did not fall is said (it was "loss 0.201 -> 0.208" and nothing more)
    first, last = data["heal_losses"]
    assert (last >= first) == any(w.startswith("healing did not lower its loss") for w in data["warnings"])
    from shortgpt_desktop.core.cut.healing import healing_did_not_help

    assert healing_did_not_help([0.3, 0.2]) == "" and healing_did_not_help([0.3]) == ""
    assert healing_did_not_help([0.201, 0.25, 0.208]).startswith(
        "healing did not lower its loss (0.201 -> 0.208 in 3 steps")
    assert healing_did_not_help([0.00368, 0.00441]).startswith(  # it said "0.004 -> 0.004"
        "healing did not lower its loss (0.00368 -> 0.00441 in 2 steps")
    from shortgpt_desktop.core.model.devices import fast_training_dtype

    assert data["heal_compute_dtype"] == str(fast_training_dtype("cpu", torch.float32) or torch.float32).split(".")[-1]
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
    engine.check_output_job(spec)
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


def test_what_low_memory_mode_cannot_run_is_refused_before_the_model_loads(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Healing needs the whole model: in low-memory mode the job says so before loading and scoring, not after."""
    from shortgpt_desktop.core.errors import UserError

    loads: list[str] = []
    monkeypatch.setattr("shortgpt_desktop.core.engine.open_backend", lambda *a, **k: loads.append("load"))
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=16, eval_windows=2,
                   out=str(tmp_path / "out"), device="cpu", dtype="float32", low_memory=True, heal_steps=1, ratio=0.25)
    with pytest.raises(UserError, match="Healing trains the whole model") as raised:
        run_prune(Engine(), spec)
    assert loads == [] and not (tmp_path / "out").exists()
    # in either front end's words: it said "set the heal steps to 0", the window's spin box, on the command line too
    assert cli.error_line(raised.value) == (
        "Healing trains the whole model at once, which low-memory mode cannot hold; turn healing off (the repair still "
        "runs); or leave out --low-memory.")


def test_a_healing_job_that_would_not_fit_in_memory_is_refused_before_it_loads_in_a_sentence_about_memory(
        small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the free memory between what the job needs without healing and with it, the automatic choice would run
    it one layer at a time, where healing cannot run: the job is refused before anything loads, with the figures,
    not with low-memory mode's sentence about a mode the user never chose."""
    from shortgpt_desktop.core.errors import ResourceError
    from shortgpt_desktop.core.model import memory
    from shortgpt_desktop.core.testing.tiny_models import HEALING_HEAVY_LLAMA, build_tiny_model

    folder = build_tiny_model(tmp_path / "deep", "llama", HEALING_HEAVY_LLAMA)
    spec = JobSpec(model=str(folder), calib=[str(small_calib)], samples=4, seq_len=256, batch_size=4,
                   eval_windows=2, out=str(tmp_path / "out"), device="cpu", dtype="float32", metric="bi",
                   repair="none", heal_steps=1, count=2)
    engine = Engine()
    engine.open(spec)
    plain = engine.memory_estimate(dataclasses.replace(spec, heal_steps=0)).in_memory_total
    healing = engine.memory_estimate(spec).in_memory_total
    assert healing > 1.5 * plain
    free = int((plain + healing) / 2 / memory.SAFETY)
    monkeypatch.setattr(memory, "available_memory", lambda device: (free, free))
    loads: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("shortgpt_desktop.core.engine.open_backend", lambda *a, **k: loads.append("load"))
        with pytest.raises(ResourceError, match=r"With healing this job needs about .* of memory but .* is "
                                                r"free") as raised:
            run_prune(Engine(), spec)
    assert "low-memory" not in str(raised.value) and "turn healing off (the repair still runs)" in str(raised.value)
    small = SimpleNamespace(on_cpu=True, in_memory_total=30_000_000, available_ram_bytes=20_000_000)
    assert "needs about 30.0 MB of memory but 20.0 MB is free" in memory.healing_does_not_fit(small)  # not "0.0 GB"
    assert loads == [] and not (tmp_path / "out").exists()
    assert engine.mode_for(dataclasses.replace(spec, heal_steps=0)) == "memory"  # the same job unhealed fits
    # The window's way: the model already loaded one layer at a time for these settings (scored), then a check or a
    # save asks; the same sentence, not low-memory mode's.
    streamed = Engine()
    streamed.load(spec)
    assert streamed.is_streamed
    with pytest.raises(ResourceError, match="With healing this job needs about"):
        streamed.refusal(spec)
    streamed.refusal(dataclasses.replace(spec, heal_steps=0))  # nothing else refused


def test_the_estimate_after_the_first_batch_counts_a_chat_models_own_answers(tiny_chat_model: Path,
                                                                             small_calib: Path, tmp_path: Path) -> None:
    """What the job prints after its first scoring batch includes writing the answers its repair fits on."""
    from shortgpt_desktop.core.estimate import JobEstimate

    chat = tiny_chat_model
    said: list[JobEstimate] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "estimate":
            said.append(partial)

    spec = JobSpec(model=str(chat), calib=[str(small_calib)], samples=8, seq_len=64, eval_windows=4, batch_size=4,
                   device="cpu", dtype="float32", count=2, out=str(tmp_path / "out"), prompt="",
                   check_perplexity=False)
    run_prune(Engine(), spec, progress)
    assert len(said) == 1 and said[0].steps.get("answering", 0) > 0
    # With the check and a prompt, the check's quiz (both models' answers) is counted too: its share of the
    # whole, in units of the scoring pass (whose measured speed both use), is larger than without a prompt.
    for prompt, out in (("", "out-no-quiz"), ("The history of", "out-quiz")):
        run_prune(Engine(), dataclasses.replace(spec, prompt=prompt, check_perplexity=True, max_new_tokens=2,
                                                out=str(tmp_path / out)), progress)
    without, with_quiz = (e.steps["checking"] / e.steps["scoring"] for e in said[1:])
    assert with_quiz > without * 1.2, (without, with_quiz)


def test_a_cut_given_by_hand_says_the_whole_jobs_time_from_a_timed_layer(tiny_chat_model: Path, small_calib: Path,
                                                                          tmp_path: Path) -> None:
    """A cut given by hand runs no scoring pass, whose speed the estimate came from: it said nothing, then took 460 s
    one layer at a time (the chat answers its repair fits on) where the same job took 93 s in memory."""
    from shortgpt_desktop.core.backends.layerwise import LayerStack

    said: list[Any] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "estimate":
            said.append(partial)

    spec = JobSpec(model=str(tiny_chat_model), calib=[str(small_calib)], samples=8, seq_len=64, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", layers=[2, 3], out=str(tmp_path / "out"), prompt="")
    timed: list[tuple[int, list[int]]] = []
    run_layers = LayerStack.run_layers

    def counted(self: Any, batches: Any, indices: Any, *args: Any, **kwargs: Any) -> Any:
        timed.append((sum(int(b.ids.shape[0]) for b in batches), list(indices)))
        return run_layers(self, batches, indices, *args, **kwargs)

    for low_memory in (False, True):
        timed.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LayerStack, "run_layers", counted)
            run_prune(Engine(), dataclasses.replace(spec, low_memory=low_memory, out=str(tmp_path / f"o{low_memory}")),
                      progress)
        estimate = said[-1]
        assert estimate.basis == "a timed layer" and "scoring" not in estimate.steps  # no scoring pass runs
        assert {"answering", "repairing", "checking"} <= estimate.steps.keys() and estimate.total > 0
        # timed on layer 1 after an untimed layer 0: a batch in memory, every sample one layer at a time
        assert timed[:2] == ([(4, [0]), (4, [1])] if not low_memory else [(8, [0]), (8, [1])]), timed[:2]
    assert len(said) == 2
    # a cut that only saves has nothing to time
    run_prune(Engine(), dataclasses.replace(spec, repair="none", check_perplexity=False, out=str(tmp_path / "bare")),
              progress)
    assert len(said) == 2


def test_the_estimate_counts_the_samples_the_text_gave_not_those_asked_for(tiny_model: Path, small_calib: Path,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for more samples than the text gives changes nothing the job runs, so nothing it is said to take:
    with 100 asked of a text that gave 24, bi+'s choice was estimated at a quarter of what it ran."""
    from shortgpt_desktop import jobs
    from shortgpt_desktop.core.errors import Cancelled

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(jobs, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    calib = tmp_path / "short.txt"
    calib.write_text(small_calib.read_text(encoding="utf-8")[:8_000], encoding="utf-8")
    said: list[Any] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "estimate":
            said.append(partial)
        elif stage == "scoring" and done:
            clock.now += 5.0

    engine = Engine()
    spec = JobSpec(model=str(tiny_model), calib=[str(calib)], samples=100, seq_len=128, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", count=2, out=str(tmp_path / "out"), prompt="",
                   heal_steps=2, check_perplexity=False)
    with pytest.raises(Cancelled):
        run_prune(engine, spec, progress, cancel=lambda: bool(said))
    given = len(engine.tokens.samples)
    assert 8 < given < 100  # the premise: more than bi+ searches on, fewer than asked
    with pytest.raises(Cancelled):
        run_prune(Engine(), dataclasses.replace(spec, samples=given), progress, cancel=lambda: len(said) > 1)
    assert said[0].steps == said[1].steps
    assert said[0].steps["choosing"] > 0 and said[0].steps["healing"] > 0


def test_eval_counts_neither_bi_plus_nor_the_repair_in_its_memory(tiny_model: Path, small_calib: Path) -> None:
    """``shortgpt eval`` scores, chooses and repairs nothing: with the command line's default metric and repair
    in its spec it said SmolLM2 needs 2.5 GB (the default prune's figure) where 1.6 GB is what it runs in, and
    the way a model runs is decided from that figure."""
    from dataclasses import replace

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2,
                   prompt="")
    assert spec.metric == "bi+" and spec.repair == "linear", "the defaults this test is about"
    seen: list[Any] = []
    run_eval(Engine(), spec, on_info=seen.append)
    plain = Engine().open(replace(spec, metric="bi", repair="none", samples=1)).memory_needed_bytes
    assert seen[0].memory_needed_bytes == plain < Engine().open(spec).memory_needed_bytes


def test_eval_does_not_warn_of_calibration_samples_it_never_takes(tiny_model: Path, small_calib: Path) -> None:
    """eval measures held-out windows only: it said the text gave "only 79 samples (128 asked for)"."""
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=100_000, seq_len=32, eval_windows=2,
                   prompt="")
    report = run_eval(Engine(), spec)
    assert report.ppl_before > 1 and not any("samples" in w for w in report.warnings), report.warnings
    # nor does its JSON say of the models what the job did not do to them ("repair": "none" of a repaired model)
    assert report.repair == "" and report.metric == "" and report.samples == 0


@pytest.mark.parametrize(("repair", "heal_steps"), [("none", 0), ("linear", 0), ("linear", 1)])
def test_the_size_expected_before_saving_is_the_size_written(tiny_q4_gguf: Path, small_calib: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, repair: str,
                                                             heal_steps: int) -> None:
    """A 4-bit GGUF writes each weight the repair or healing changes as Q8_0. The plan counts them: before the fit
    at most (the MLP output projection after a run is refitted only where that does better on held-out samples),
    and once the job has fitted them, exactly what the file comes to, to the header's few hundred bytes (the
    removed layers' tensor entries). Healing re-encodes every kept layer's projections: its file is a fifth bigger
    than the plain cut's here."""
    expected: list[int] = []
    save = Engine.save

    def spy(self: Engine, plan: Any, *args: Any, **kwargs: Any) -> Any:
        expected.append(plan.bytes_after)
        return save(self, plan, *args, **kwargs)

    monkeypatch.setattr(Engine, "save", spy)
    removed = [2, 4]
    spec = JobSpec(model=str(tiny_q4_gguf), calib=[str(small_calib)], samples=24, seq_len=32, layers=removed,
                   repair=repair, heal_steps=heal_steps, out=str(tmp_path / "out"), device="cpu", dtype="float32",
                   low_memory=False, check_perplexity=False)
    engine = Engine()
    written = run_prune(engine, spec).bytes_after
    plain = engine.writer.sizes(engine.source, removed, 6)[1]  # type: ignore[index]
    bound = engine.writer.sizes(engine.source, removed, 6, WeightChanges.of(spec))[1]  # type: ignore[index]
    assert abs(expected[0] - written) <= 1024, (expected, written, plain, bound)
    assert expected[0] <= bound
    down_growth = 64 * 128 // 32 * (34 - 18)  # one MLP output projection, Q4_0 → Q8_0
    if heal_steps:
        assert bound == expected[0] and written > 1.15 * plain
    elif repair != "none":
        assert written >= plain + down_growth
    # The card written beside the file names what was re-quantized (it was made before the writer knew, and
    # named nothing): the job's summary and JSON said it, the saved card did not.
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    cause = {("none", 0): None, ("linear", 0): "repair", ("linear", 1): "repair and healing"}[(repair, heal_steps)]
    assert (f"re-quantized after {cause}: " in card) if cause else "re-quantized" not in card, card




def test_a_disk_too_full_for_the_healed_output_is_said_before_the_repair_and_healing(
        tiny_q4_gguf: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for the plain cut but not for the healed file (its kept layers re-encoded as Q8_0): refused once the
    layers are chosen, before any repair or healing step, and nothing is written. The same disk takes the job
    without healing."""
    from shortgpt_desktop.core import free_space
    from shortgpt_desktop.core.errors import OutputError
    from shortgpt_desktop.core.formats import output_folder

    removed = [2, 4]
    spec = JobSpec(model=str(tiny_q4_gguf), calib=[str(small_calib)], samples=8, seq_len=32, layers=removed,
                   repair="linear", heal_steps=1, out=str(tmp_path / "out"), device="cpu", dtype="float32",
                   low_memory=False, check_perplexity=False)
    probe = Engine()
    probe.open(spec)
    plain = probe.writer.sizes(probe.source, removed, 6)[1]  # type: ignore[index]
    healed = probe.writer.sizes(probe.source, removed, 6, WeightChanges.of(spec))[1]  # type: ignore[index]
    free = int((plain + healed) / 2 * output_folder.ROOM_MARGIN)  # a GGUF: no side files but the card
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free})())

    def no_fit(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the repair or healing ran before the disk was asked")

    adjust = Engine.adjust
    monkeypatch.setattr(Engine, "adjust", no_fit)
    with pytest.raises(OutputError, match=r"^The pruned model needs about \d+\.\d kB \(\d+\.\d kB with its other "
                                          r"files and a margin\) but only \d+\.\d kB is free"):
        run_prune(Engine(), spec)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(Engine, "adjust", adjust)
    report = run_prune(Engine(), dataclasses.replace(spec, heal_steps=0))
    assert report.bytes_after < free


def test_the_disk_is_asked_again_for_the_layers_chosen_before_the_fits(tiny_q4_gguf: Path, small_calib: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """bi+ may choose other layers than the plan it was given, of another size: prepare asks the disk for the
    chosen ones before the repair and healing run."""
    from shortgpt_desktop.core import free_space
    from shortgpt_desktop.core.errors import OutputError

    spec = JobSpec(model=str(tiny_q4_gguf), calib=[str(small_calib)], samples=8, seq_len=32, ratio=0.34,
                   repair="linear", heal_steps=1, out=str(tmp_path / "out"), device="cpu", dtype="float32",
                   low_memory=False, check_perplexity=False)
    assert spec.metric == "bi+"  # the default, which measures its choice
    engine = Engine()
    engine.score(spec)
    plan = engine.plan_for_spec(spec)
    assert engine.needs_refining(plan)
    refined: list[list[int]] = []
    refine = Engine.refine

    def counting_refine(self: Engine, *args: Any, **kwargs: Any) -> Any:
        chosen = refine(self, *args, **kwargs)
        refined.append(list(chosen.removed))
        return chosen

    monkeypatch.setattr(Engine, "refine", counting_refine)
    asked: list[list[list[int]]] = []
    monkeypatch.setattr(free_space.shutil, "disk_usage",
                        lambda path: asked.append(list(refined)) or type("Usage", (), {"free": 1000})())
    monkeypatch.setattr(Engine, "adjust", lambda *args, **kwargs: pytest.fail("fitted before the disk was asked"))
    with pytest.raises(OutputError, match="is free on the disk of"):
        engine.prepare(spec, plan, out=spec.out)
    assert len(refined) == 1 and asked == [refined], "asked once, for the layers bi+ chose"


@pytest.mark.parametrize("source", ["gguf", "safetensors"])
def test_a_disk_too_small_for_any_cut_is_said_before_scoring(source: str, tiny_q4_gguf: Path, tiny_model: Path,
                                                             small_calib: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the scoring pass (hours for a big streamed model) the disk is asked for the least any choice of the
    layers can weigh: the smallest of every plain cut of that many layers, from the GGUF's or the safetensors
    files' headers. Less room is refused before scoring; exactly that room lets the job score."""
    import itertools

    from shortgpt_desktop.core import free_space
    from shortgpt_desktop.core.errors import OutputError
    from shortgpt_desktop.core.formats import output_folder

    model = tiny_q4_gguf if source == "gguf" else tiny_model
    spec = JobSpec(model=str(model), calib=[str(small_calib)], samples=8, seq_len=32, count=2,
                   out=str(tmp_path / "out"), device="cpu", dtype="float32", low_memory=False,
                   check_perplexity=False)
    probe = Engine()
    probe.open(spec)
    n = probe.n_layers
    least = min(probe.writer.sizes(probe.source, list(cut), n)[1]  # type: ignore[index]
                for cut in itertools.combinations(range(n), 2))
    room = int(least * output_folder.ROOM_MARGIN) + probe.writer.side_files_bytes

    class Scored(Exception):
        pass

    def scored(*args: Any, **kwargs: Any) -> None:
        raise Scored

    monkeypatch.setattr(Engine, "score", scored)
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": room - 1})())
    with pytest.raises(OutputError, match=r"^The pruned model needs at least \d+\.\d kB"):
        run_prune(Engine(), spec)
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": room})())
    with pytest.raises(Scored):
        run_prune(Engine(), spec)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["falcon", "qwen3_moe"])
def test_healing_runs_for_families_the_others_did_not_cover(tiny_family, family: str, small_calib: Path,
                                                           tmp_path: Path) -> None:
    """Falcon's head was handed a bare tensor by the teacher's fresh stack (IndexError); Qwen3-MoE's dense layers
    (mlp_only_layers) are left unwrapped by peft, and the merge asked them for a base layer (AttributeError)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    spec = JobSpec(model=str(tiny_family(family)), calib=[str(small_calib)], samples=4, seq_len=32, layers=[1, 2],
                   heal_steps=2, out=str(out), device="cpu", dtype="float32", low_memory=False,
                   check_perplexity=False, prompt="")
    report = run_prune(Engine(), spec)
    assert report.heal_steps == 2 and len(report.heal_losses) == 2
    assert load_file(out / "model.safetensors")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=torch.tensor([[1, 5, 9, 12]])).logits).all()


def test_eval_one_layer_at_a_time_measures_fidelity_for_a_tied_model(tiny_family, small_calib: Path,
                                                                     tmp_path: Path) -> None:
    """GPT-2 ties its head to its embeddings: streamed, a fresh model's head was left on the embedding's old copy,
    so the first model and a copy of it had "other embeddings or another head", and no KL was measured."""
    gpt2 = tiny_family("gpt2")
    spec = JobSpec(model=str(gpt2), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2, prompt="")
    whole = run_eval(Engine(), spec, other=str(gpt2))
    streamed = run_eval(Engine(), dataclasses.replace(spec, low_memory=True), other=str(gpt2))
    assert whole.fidelity and streamed.fidelity, streamed.warnings
    assert streamed.fidelity["mean_kl"] == pytest.approx(whole.fidelity["mean_kl"], abs=1e-6)
    assert streamed.ppl_after == pytest.approx(whole.ppl_after, rel=1e-5)


def test_the_estimate_leaves_out_the_first_batchs_warm_up_and_is_said_again_at_the_end_of_the_pass(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real SmolLM2 job the first scoring batch took 11.5 s and the others 5.9 s: the whole job, estimated at
    the first batch's speed, was said to take 33 min and took 11. On a clock the test moves (10 s for the first
    batch, 5 s for each other), the scoring step is said at 5 s a batch, after the second batch and again at the
    end of the pass."""
    from shortgpt_desktop import jobs

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(jobs, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    said: list[Any] = []

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        if stage == "estimate":
            said.append(partial)
        elif stage == "scoring" and done:
            clock.now += 10.0 if done == 4 else 5.0  # samples done, 4 a batch

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=16, seq_len=32, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", count=2, out=str(tmp_path / "out"), prompt="",
                   metric="bi", repair="none", check_perplexity=False)
    run_prune(Engine(), spec, progress)
    assert [e.basis for e in said] == ["the second scoring batch", "the scoring pass"]
    assert [e.steps["scoring"] for e in said] == pytest.approx([20.0, 20.0], rel=1e-6)  # 4 batches at 5 s
    assert "at the second scoring batch's speed" in cli.estimate_text(said[0])


def test_eval_against_frees_the_first_model_before_the_second_loads(tiny_model: Path, small_calib: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The job kept its own reference to the first model, so forgetting it freed nothing: on SmolLM2 the process
    held 1.30 GB when the second began to load and peaked at 2.16 GB against 1.5 GB said; with it freed, 1.10 GB
    and 1.66 GB."""
    import gc
    import weakref

    first: list[Any] = []
    alive: list[bool] = []
    forget, load = Engine.forget, Engine.load

    def forgetting(self: Engine) -> None:
        if self.loaded is not None and not first:
            first.append(weakref.ref(self.loaded.model))
        forget(self)

    def loading(self: Engine, *args: Any, **kwargs: Any) -> Any:
        if first:
            gc.collect()
            alive.append(first[0]() is not None)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "forget", forgetting)
    monkeypatch.setattr(Engine, "load", loading)
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2,
                   prompt="The history of", max_new_tokens=2)
    report = run_eval(Engine(), spec, str(tiny_model))
    assert alive == [False] and report.ppl_after == pytest.approx(report.ppl_before, rel=1e-5)
    assert report.quiz["asked"] > 0  # the second model's answers, with the first's tokenizer


def test_low_memory_asked_for_is_refused_where_one_layer_at_a_time_would_not_fit_either(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--low-memory skipped every memory check: with too little memory a job said it needed several GB and started
    scoring anyway (to be killed for memory), where the same job without the flag was refused in one sentence."""
    from shortgpt_desktop.core.errors import ResourceError
    from shortgpt_desktop.core.model import memory

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=64, batch_size=4,
                   device="cpu", dtype="float32", metric="bi", repair="none", scores_only=True, low_memory=True)
    engine = Engine()
    engine.open(spec)
    need = engine.memory_estimate(spec)
    free = int(need.streamed_total / 2)
    monkeypatch.setattr(memory, "available_memory", lambda device: (free, free))
    loads: list[str] = []
    monkeypatch.setattr("shortgpt_desktop.core.engine.open_backend", lambda *a, **k: loads.append("load"))
    for low_memory in (True, None):  # asked for, and chosen: the same sentence
        with pytest.raises(ResourceError, match="Even one layer at a time this model needs"):
            run_score(Engine(), dataclasses.replace(spec, low_memory=low_memory))
    said: list[Any] = []
    with pytest.raises(ResourceError):
        run_score(Engine(), spec, on_info=said.append)
    assert said[0].mode == "streamed"  # the model line said the whole model's figure before the refusal
    little = int(need.hidden_states_bytes / 2)
    monkeypatch.setattr(memory, "available_memory", lambda device: (little, little))
    with pytest.raises(ResourceError, match="hidden states alone need"):
        run_score(Engine(), spec)
    assert loads == []


def test_the_estimate_printed_after_the_pass_counts_the_runs_of_the_layers_removed(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain BI's layers are known once its pass has ended, and the repair's estimate is per run of them (a
    random 1.3 GB Llama's five scattered layers repaired in 85 s where 43 s was said, two runs guessed) and as deep
    as the last of them."""
    asked: list[Any] = []
    estimate_at = Engine.estimate_at

    def recorded(self: Engine, *args: Any) -> Any:
        asked.append(args[6] if len(args) > 6 else None)
        return estimate_at(self, *args)

    monkeypatch.setattr(Engine, "estimate_at", recorded)
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=12, seq_len=32, eval_windows=2,
                   batch_size=4, device="cpu", dtype="float32", metric="bi", check_perplexity=False, count=3,
                   out=str(tmp_path / "out"))
    report = run_prune(Engine(), spec)
    assert asked[0] is None  # after the second batch, the layers are not known yet
    assert asked[-1] == report.removed_layers, (asked, report.removed_layers)


def test_low_memory_ticked_after_a_whole_load_counts_the_memory_the_whole_model_frees(
        tiny_model: Path, small_calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window: scored whole, then Low memory ticked and scored again. The check of the one-layer load read the
    free memory with the whole model still held, and refused a job a fresh engine runs ('needs 1.3 MB but only
    1.0 MB is free'): the whole copy is let go first, as the automatic choice does."""
    from shortgpt_desktop.core.model import memory

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=64, batch_size=4,
                   device="cpu", dtype="float32", metric="bi", repair="none", scores_only=True)
    engine = Engine()
    engine.open(spec)
    need = engine.memory_estimate(spec)

    def held() -> int:  # the free memory drops by the weights while a whole model is loaded
        backend = engine.backend
        return need.weights_bytes if backend is not None and backend.mode == "memory" else 0

    total = int(need.in_memory_total / memory.SAFETY) + 1
    assert need.streamed_total + need.weights_bytes > memory.SAFETY * total  # not both at once
    monkeypatch.setattr(memory, "available_memory", lambda device: (total - held(), total - held()))
    engine.score(spec)
    assert engine.backend.mode == "memory"
    engine.score(dataclasses.replace(spec, low_memory=True))
    assert engine.is_streamed


@pytest.mark.parametrize(("how", "said"), [
    ({}, "Say how much to remove"),
    ({"count": 0}, "at least 1"),
    ({"count": 1, "out": None}, "Give an output folder"),
    ({"count": 1, "out": ""}, "Give an output folder"),
])
def test_a_prune_request_the_command_line_would_refuse_is_refused_before_inspection(
        tiny_model: Path, small_calib: Path, slow_inspection: list[str], how: dict, said: str) -> None:
    """The jobs are shared with other callers than argparse: a request without an amount, of no layers or without an
    output is a sentence before anything is opened (no amount reached ``float(None)``, a TypeError traceback)."""
    from shortgpt_desktop.core.errors import UserError

    with pytest.raises(UserError, match=said):
        run_prune(Engine(), spec(tiny_model, small_calib, **how))
    assert slow_inspection == []


@pytest.mark.parametrize("needs", [{"check_perplexity": True, "repair": "none"},
                                   {"check_perplexity": False, "repair": "linear"},
                                   {"check_perplexity": False, "repair": "none", "heal_steps": 1}])
def test_given_layers_with_a_check_repair_or_healing_read_the_text_before_inspection(
        tiny_model: Path, pdf_folder: Path, tmp_path: Path, slow_inspection: list[str], needs: dict) -> None:
    """Named layers need no scores, but the check, the repair and healing read the text: a folder of PDFs is said
    before the model is opened, not after it has loaded."""
    s = spec(tiny_model, pdf_folder, layers=[1], out=str(tmp_path / "out"), **needs)
    with pytest.raises(CalibrationError, match="No usable calibration text"):
        run_prune(Engine(), s)
    assert slow_inspection == []


@pytest.mark.parametrize("job", ["score", "prune"])
def test_a_cancel_asked_for_mid_job_reaches_each_step(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                      job: str) -> None:
    """``cancel`` goes to every step, the scoring pass and the save too: asked for once the pass (or the save) has
    begun, the job stops there and writes nothing."""
    from shortgpt_desktop.core.errors import Cancelled

    stage = "scoring" if job == "score" else "saving"
    seen: list[str] = []
    progress = lambda s, done, total, partial=None: seen.append(s)  # noqa: E731
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        if job == "score":
            run_score(Engine(), spec(tiny_model, small_calib, metric="bi"), progress, cancel=lambda: stage in seen)
        else:
            run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(out), repair="none",
                                     check_perplexity=False), progress, cancel=lambda: stage in seen)
    assert stage in seen and not out.exists()


def test_eval_against_a_model_with_another_final_norm_measures_perplexity_only(tiny_model: Path, small_calib: Path,
                                                                                tmp_path: Path) -> None:
    """The KL divergence compares the second model's output with the first's hidden states put through the first's
    head: for a model whose final norm, embeddings or head differ, those figures would be made up."""
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    tensors = load_file(other / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 2
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    report = run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1), str(other))
    assert not report.fidelity and not report.quiz and report.ppl_after is not None
    assert any("other embeddings or another head" in w for w in report.warnings), report.warnings


def test_eval_against_a_folder_without_a_tokenizer_is_said_before_the_first_models_passes(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second model's tokenizer was read only when it loaded, after the first model's perplexity and quiz."""
    from shortgpt_desktop.core.errors import ModelSourceError

    other = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model, other, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    passes: list[str] = []
    monkeypatch.setattr(Engine, "reference_for", lambda *a, **k: passes.append("first model") or pytest.fail())
    with pytest.raises(ModelSourceError, match=r"^The model in .*no-tokenizer has no usable tokenizer"):
        run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1), str(other))
    assert passes == []


def test_eval_against_names_the_model_a_fault_is_in(tiny_model: Path, small_calib: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With two models, "model.safetensors is truncated (…)" did not say which of the two (a model folder named
    "model" is not named by it either)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, "model")
    shutil.copytree(tiny_model, "model-ok")
    weights = Path("model") / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    for first, second in (("model-ok", "model"), ("model", "model-ok")):
        with pytest.raises(ModelSourceError) as raised:
            run_eval(Engine(), spec(Path(first), small_calib, eval_windows=1), second)
        assert str(raised.value).startswith("model: model.safetensors is truncated ("), raised.value
    with pytest.raises(ModelSourceError) as raised:  # one model: its name would only repeat the command
        run_eval(Engine(), spec(Path("model"), small_calib, eval_windows=1))
    assert str(raised.value).startswith("model.safetensors is truncated ("), raised.value
    with pytest.raises(ModelSourceError) as raised:  # a sentence that names it already is left as it is
        run_eval(Engine(), spec(Path("model-ok"), small_calib, eval_windows=1), "missing")
    assert str(raised.value).startswith("missing does not exist"), raised.value


def test_eval_against_the_same_weight_files_says_so(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """``eval m --against m`` measured the model twice without a word (through a link too); a copy is another file
    and is not named."""
    notes: list[str] = []
    link = tmp_path / "link"
    link.symlink_to(tiny_model)
    run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1), str(link), on_note=notes.append)
    assert notes == [f"{link} and {tiny_model} are the same weight files: both are measured, and their figures will "
                     "be the same."]
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    notes.clear()
    run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1), str(copy), on_note=notes.append)
    assert not any("same weight files" in note for note in notes)


def test_eval_reports_each_models_size(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """``eval --json`` wrote 0 parameters and 0 bytes for both models, though the summary had printed their sizes:
    the first model's are the "before" figures, the second's the "after" ones."""
    from shortgpt_desktop.core.engine import inspect_model
    from shortgpt_desktop.core.model.sources import resolve

    pruned = tmp_path / "pruned"
    run_prune(Engine(), spec(tiny_model, small_calib, metric="bi", repair="none", count=2, check_perplexity=False,
                             out=str(pruned)))
    report = run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1), str(pruned))
    sizes = [inspect_model(resolve(str(m)), "cpu", "float32") for m in (tiny_model, pruned)]
    assert (report.params_before, report.params_after) == (sizes[0].n_params, sizes[1].n_params)
    assert (report.bytes_before, report.bytes_after) == (sizes[0].bytes_on_disk, sizes[1].bytes_on_disk)
    assert report.params_before > report.params_after > 0
    alone = run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=1))
    assert (alone.params_before, alone.params_after) == (sizes[0].n_params, 0)


def test_a_metric_low_memory_mode_cannot_run_is_refused_before_the_model_loads(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--metric ppl --low-memory: said before loading (minutes for a model too big for memory), not after."""
    from shortgpt_desktop.core.errors import UserError

    loads: list[str] = []
    monkeypatch.setattr("shortgpt_desktop.core.engine.open_backend", lambda *a, **k: loads.append("load"))
    s = spec(tiny_model, small_calib, metric="ppl", low_memory=True, count=1, out=str(tmp_path / "out"))
    with pytest.raises(UserError, match="needs the whole model in memory"):
        run_prune(Engine(), s)
    assert loads == [] and not (tmp_path / "out").exists()


def test_prune_asks_the_disk_again_for_the_layers_it_finally_chose(tiny_model: Path, small_calib: Path,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The job hands its output folder to ``prepare``, which asks the disk for the chosen layers before the repair
    and healing (bi+ may choose bigger layers than the plan the first room check saw)."""
    outs: list[Any] = []
    prepare = Engine.prepare

    def spying(self: Engine, *args: Any, **kwargs: Any) -> Any:
        outs.append(kwargs.get("out"))
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "prepare", spying)
    out = tmp_path / "out"
    run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(out), repair="none",
                             check_perplexity=False))
    assert outs == [str(out)]


def test_score_counts_only_the_scoring_in_its_memory(tiny_model: Path, small_calib: Path) -> None:
    """``shortgpt score`` neither repairs, heals nor checks: the model line's memory figure (and the way the model
    runs) must not count them, or a model that fits for scoring is run one layer at a time or refused."""
    infos: list[Any] = []
    run_score(Engine(), spec(tiny_model, small_calib, repair="refit", heal_steps=5, check_perplexity=True),
              on_info=infos.append)
    run_score(Engine(), spec(tiny_model, small_calib, repair="none", check_perplexity=False), on_info=infos.append)
    assert infos[0].memory_needed_bytes == infos[1].memory_needed_bytes


def test_eval_reports_the_tokens_its_perplexity_was_measured_on(tiny_model: Path, small_calib: Path) -> None:
    """``eval``'s line and JSON say how many held-out tokens the perplexity rests on (0 read as no measurement, and
    hid the "few for a steady figure" warning)."""
    report = run_eval(Engine(), spec(tiny_model, small_calib, eval_windows=2))
    assert report.ppl_before > 1 and 2 * 31 <= report.eval_tokens <= 2 * 32


def test_eval_keeps_the_texts_warnings_and_prune_says_its_model(tiny_model: Path, small_calib: Path,
                                                                 tmp_path: Path) -> None:
    """The files eval left out stay in its report (the summary's "warning:" lines and the JSON), and prune hands
    the model's line (its size and memory) to the front end before it loads."""
    report = run_eval(Engine(), spec(tiny_model, code_folder(tmp_path / "code", small_calib), eval_windows=1))
    assert any("paper.pdf" in w for w in report.warnings), report.warnings
    infos: list[Any] = []
    run_prune(Engine(), spec(tiny_model, small_calib, layers=[1], out=str(tmp_path / "out"), repair="none",
                             check_perplexity=False), on_info=infos.append)
    assert [info.n_layers for info in infos] == [6]


@pytest.mark.parametrize("metric", ["reverse", "sequential"])
def test_a_score_that_needs_no_text_never_reads_it(tiny_model: Path, pdf_folder: Path, metric: str) -> None:
    """The order metrics read no text: ``score --metric reverse`` with a folder of PDFs was refused for its text."""
    report = run_score(Engine(), spec(tiny_model, pdf_folder, metric=metric))
    assert len(report.scores) == 6


def test_a_cut_of_more_than_half_the_layers_is_said_before_the_model_loads(tiny_model: Path, small_calib: Path,
                                                                           tmp_path: Path) -> None:
    """``--ratio 0.99`` removed 17 of 18 layers of Gemma 3 270M without a word; --layers 18 is refused."""
    class Said(Exception):
        pass

    def stop(note: str) -> None:
        raise Said(note)

    for how in ({"ratio": 0.7}, {"count": 4}, {"layers": [0, 1, 2, 3]}):  # 6 layers: 4 is more than half
        with pytest.raises(Said, match=r"^removing 4 of 6 layers, more than half: past half its layers a model "):
            run_prune(Engine(), spec(tiny_model, small_calib, out=str(tmp_path / "out"), metric="bi", **how),
                      progress=lambda stage, *a: stage == "inspect" or pytest.fail(f"{stage} before the note"),
                      on_note=stop)
    notes: list[str] = []
    run_prune(Engine(), spec(tiny_model, small_calib, out=str(tmp_path / "half"), metric="bi", count=3,
                             repair="none", check_perplexity=False), on_note=notes.append)
    assert not [n for n in notes if "more than half" in n]
    assert not (tmp_path / "out").exists()


def test_eval_against_warns_as_prune_does_where_most_of_the_quiz_is_lost(tiny_model: Path, small_calib: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The card of a model saved without a check sends its reader to ``eval --against`` for the quiz; a pruned model
    that lost most of it was warned about by prune only."""
    from shortgpt_desktop import jobs
    from shortgpt_desktop.core.measure.quiz import QUESTIONS

    def answers(stack, tokenizer, prompts, stage, **kwargs):
        right = [words[0] for _, words in QUESTIONS[: len(prompts.ids)]]
        if stage == "quiz_before":
            return right[:4] + ["I do not know."] * (len(right) - 4)
        return [right[0]] + ["I do not know."] * (len(right) - 1)

    monkeypatch.setattr(jobs, "model_answers", answers)
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=4, seq_len=32, eval_windows=2)
    report = run_eval(Engine(), spec, str(tiny_model))
    assert (report.quiz["known"], report.quiz["kept"]) == (4, 1)
    # the models named as the quiz line names them (their full paths made the warning three lines long)
    name = tiny_model.name
    assert [w for w in report.warnings if "lost most" in w] == [
        f"{name} answers only 1 of the 4 quiz questions {name} answers right: it has lost most of what "
        f"{name} knows; remove fewer layers (the quality curve, shortgpt sweep, shows where it breaks)."]


def test_a_sweeps_seconds_are_the_whole_jobs(tiny_model: Path, small_calib: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's JSON said 3.8 s for an 8.5 s run: it left out the load, the tokenising and the scoring, where
    score's and prune's count them (a walkthrough)."""
    import time

    engine = Engine()
    scored = engine.score

    def slow_score(*args, **kwargs):
        time.sleep(0.5)
        return scored(*args, **kwargs)

    monkeypatch.setattr(engine, "score", slow_score)
    s = dataclasses.replace(spec(tiny_model, small_calib), repair="none")
    curve = run_sweep(engine, s, 1)
    assert curve.seconds >= 0.5
