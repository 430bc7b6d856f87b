"""Saving: the folder reloads with stock transformers and behaves exactly like the model pruned in memory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.surgery import prune_in_memory
from shortgpt_desktop.core.engine import Engine, JobSpec
from shortgpt_desktop.core.errors import Cancelled, OutputError
from shortgpt_desktop.core.formats.safetensors_io import TensorEntry, model_entries, plan_shards, write_shard
from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
from shortgpt_desktop.core.model.loading import LoadedModel, load_model
from shortgpt_desktop.core.model.sources import ModelSource, WeightFile, resolve
from shortgpt_desktop.jobs import run_prune

REMOVED = [1, 5]  # two non-adjacent layers, one of them the last
PROMPT_IDS = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])


def load(folder: Path) -> LoadedModel:
    return load_model(resolve(str(folder)), "cpu", "float32")


def save(loaded: LoadedModel, out: Path, **kwargs: object):
    return save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config,
                       removed=REMOVED, out=out, model=loaded.model, tokenizer=loaded.tokenizer, **kwargs)


def logits(model, ids: torch.Tensor = PROMPT_IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def reference_pruned(folder: Path) -> torch.nn.Module:
    loaded = load(folder)
    prune_in_memory(loaded.model, loaded.family, REMOVED)
    return loaded.model


def stock_reload(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_saved_model_matches_in_memory_pruning(tiny_model: Path, tmp_path: Path) -> None:
    before = digest(tiny_model)
    loaded = load(tiny_model)
    result = save(loaded, tmp_path / "out", card_text="# card\n")
    assert digest(tiny_model) == before  # the source is never modified
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json"} <= set(result.files)
    assert all((tmp_path / "out" / name).is_file() for name in result.files)
    reloaded = stock_reload(tmp_path / "out")
    assert reloaded.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in reloaded.model.layers] == [0, 1, 2, 3]
    torch.testing.assert_close(logits(reloaded), logits(reference_pruned(tiny_model)), rtol=1e-5, atol=1e-5)
    for name in ("tokenizer.json", "tokenizer_config.json", "README.md", "config.json"):
        assert (tmp_path / "out" / name).is_file()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_side_files_of_a_read_only_source_are_written_as_new_files(tiny_model: Path, tmp_path: Path) -> None:
    """A model on a read-only store (a Nix store, a shared cache, files marked read-only on Windows): copied with
    their modes, the saved tokenizer files were read-only too, so the user could not edit the output's tokenizer
    config, and on Windows a replaced or failed output could not be deleted. They are written as the save's own."""
    import stat

    from shortgpt_desktop.core.formats.output_folder import current_umask

    source = tmp_path / "store" / "model"
    shutil.copytree(tiny_model, source)
    for path in source.iterdir():
        path.chmod(0o444)
    out = tmp_path / "out"
    result = save(load(source), out)
    copied = [name for name in ("tokenizer.json", "tokenizer_config.json") if name in result.files]
    assert copied
    expected = 0o666 & ~current_umask(tmp_path)
    for name in copied:
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name
        assert (out / name).read_bytes() == (source / name).read_bytes()


def test_a_remote_code_models_output_carries_its_code_and_loads(tiny_model: Path, tmp_path: Path) -> None:
    """A model with its own code (``auto_map``, ``--trust-remote-code``): the output kept the config's auto_map but
    not the modules it names, so ``from_pretrained(..., trust_remote_code=True)`` failed on the saved folder. The
    modules travel now, and a save over that output with ``force`` counts them as the model's, not the user's."""
    from transformers import AutoModelForCausalLM

    from shortgpt_desktop.core.formats.output_folder import not_an_earlier_output

    source = tmp_path / "remote"
    shutil.copytree(tiny_model, source)
    (source / "configuration_tiny.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass TinyConfig(LlamaConfig):\n    model_type = 'tinyremote'\n",
        encoding="utf-8")
    (source / "modeling_tiny.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
        "class TinyForCausalLM(LlamaForCausalLM):\n    config_class = TinyConfig\n", encoding="utf-8")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig",
                          "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
    (source / "config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = load_model(resolve(str(source)), "cpu", "float32", trust_remote_code=True)
    out = tmp_path / "out"
    result = save(loaded, out)
    assert {"configuration_tiny.py", "modeling_tiny.py"} <= set(result.files)
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "TinyForCausalLM" and reloaded.config.num_hidden_layers == 4
    torch.testing.assert_close(logits(reloaded), logits(reference_pruned(tiny_model)), rtol=1e-5, atol=1e-5)
    (out / "README.md").write_text("---\ntags:\n- shortgpt\n---\n", encoding="utf-8")  # the card a job writes
    assert not_an_earlier_output(out) is None
    (out / "my_script.py").write_text("print('mine')\n", encoding="utf-8")  # the user's, beside a model without code
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    del config["auto_map"]
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert "my_script.py" in (not_an_earlier_output(out) or "")


@pytest.mark.parametrize("name_or_path, kept", [("/home/alice/runs/final", False), ("C:\\Users\\bob\\m", False),
                                                 ("runs/final/checkpoint-500", False), ("HuggingFaceTB/SmolLM2", True)])
def test_the_config_names_no_folder_of_the_users(tiny_model: Path, tmp_path: Path, name_or_path: str,
                                                 kept: bool) -> None:
    """A fine-tune's config.json names the folder it was saved from: the pruned copy, shared on the Hub, carried the
    user's home folder. A Hub id stays."""
    source = tmp_path / "model"
    shutil.copytree(tiny_model, source)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (source / "config.json").write_text(json.dumps({**config, "_name_or_path": name_or_path}), encoding="utf-8")
    save(load(source), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text(encoding="utf-8"))
    assert ("_name_or_path" in saved) == kept and saved.get("_name_or_path", name_or_path) == name_or_path


def test_the_licence_texts_travel_with_the_model(tiny_model: Path, tmp_path: Path) -> None:
    """A licence may require its text with any copy (Gemma's terms, Llama's use policy), and the card's
    ``license_link: LICENSE`` points to it: the output had neither file."""
    from shortgpt_desktop.core.formats.output_folder import not_an_earlier_output

    source = tmp_path / "model"
    shutil.copytree(tiny_model, source)
    (source / "LICENSE").write_text("the terms\n", encoding="utf-8")
    (source / "USE_POLICY.md").write_text("the policy\n", encoding="utf-8")
    (source / "NOTICE").write_text("the attributions\n", encoding="utf-8")  # Apache-2.0 asks it of any copy
    (source / "cl100k_base.tiktoken").write_text("IQ== 0\n", encoding="utf-8")  # a tiktoken model's vocabulary
    (source / "notes.md").write_text("the user's own\n", encoding="utf-8")
    out = tmp_path / "out"
    result = save(load(source), out)
    travels = {"LICENSE", "USE_POLICY.md", "NOTICE", "cl100k_base.tiktoken"}
    assert travels <= set(result.files) and "notes.md" not in result.files
    assert all((out / name).read_bytes() == (source / name).read_bytes() for name in travels)
    (out / "README.md").write_text("---\ntags:\n- shortgpt\n---\n", encoding="utf-8")  # the card a job writes
    assert not_an_earlier_output(out) is None  # --force may replace it: all of it is the model's


def test_generation_matches_the_skip_reference(tiny_model: Path, tmp_path: Path) -> None:
    """The reloaded model, generating with its cache, writes what the original model writes with the removed
    layers turned into no-ops (no surgery, no cache): the saved model and its KV cache indices are right."""
    from shortgpt_desktop.core.measure.scoring import _identity_hook

    save(load(tiny_model), tmp_path / "out")
    model = stock_reload(tmp_path / "out")
    original = load(tiny_model).model
    handles = [original.model.layers[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in REMOVED]
    try:
        with torch.no_grad():
            expected = original.generate(PROMPT_IDS, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                                         use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        cached = model.generate(PROMPT_IDS, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=True)
        unpruned = original.generate(PROMPT_IDS, max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert cached.shape[1] == PROMPT_IDS.shape[1] + 20
    assert torch.equal(cached, expected)
    assert not torch.equal(cached, unpruned), "the two removed layers must change the text, or this proves nothing"


def test_sharded_output_with_index(tiny_model: Path, tmp_path: Path) -> None:
    result = save(load(tiny_model), tmp_path / "out", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "out" / s).is_file() for s in shards)
    assert index["metadata"]["total_size"] == result.bytes_written
    assert not any(".layers.5." in k for k in index["weight_map"])  # 6 layers became 4: indices 0..3
    torch.testing.assert_close(logits(stock_reload(tmp_path / "out")), logits(reference_pruned(tiny_model)))


def test_sharded_source_streams_too(tiny_model: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    save_pruned(source=resolve(str(tiny_model)), family=load(tiny_model).family,
                original_config=load(tiny_model).config, removed=[], out=sharded, max_shard_bytes=300_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    loaded = load(sharded)
    assert len(loaded.source.weight_files) > 1
    save(loaded, tmp_path / "out")
    torch.testing.assert_close(logits(stock_reload(tmp_path / "out")), logits(reference_pruned(tiny_model)))


def test_tied_embeddings_stay_tied(tmp_path: Path, tiny_model: Path) -> None:
    from safetensors import safe_open

    from shortgpt_desktop.core.testing.tiny_models import TINY_LLAMA, build_tiny_model

    folder = build_tiny_model(tmp_path / "tied", config_overrides={**TINY_LLAMA, "tie_word_embeddings": True},
                              tokenizer_from=tiny_model)
    source = load(folder)
    assert source.model.lm_head.weight.data_ptr() == source.model.model.embed_tokens.weight.data_ptr()
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys()), "the source itself must be tied, or this proves nothing"
    save(source, tmp_path / "out")

    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    reloaded = stock_reload(tmp_path / "out")
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(logits(reloaded), logits(reference_pruned(folder)))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "before torch 1.6"])
def test_legacy_bin_source(tiny_model: Path, tmp_path: Path, zipped: bool) -> None:
    """Both formats of ``pytorch_model.bin``: the one before torch's zip format cannot be memory-mapped, and the
    save failed on it after the whole job."""
    from safetensors.torch import load_file

    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin",
               _use_new_zipfile_serialization=zipped)
    (folder / "model.safetensors").unlink()
    loaded = load(folder)
    assert loaded.source.weight_format == "bin"
    save(loaded, tmp_path / "out")
    torch.testing.assert_close(logits(stock_reload(tmp_path / "out")), logits(reference_pruned(tiny_model)))


def test_from_memory_as_for_gguf(tiny_model: Path, tmp_path: Path) -> None:
    """A GGUF source is saved from the dequantised model in memory (transformers cannot save_pretrained it)."""
    loaded = load(tiny_model)
    as_gguf = ModelSource(spec="x.gguf", kind="gguf", folder=tmp_path, gguf_file="x.gguf",
                          weight_files=[WeightFile(tmp_path / "x.gguf", "gguf", 0)])
    config = dict(loaded.config, quantization_config={"quant_method": "gguf"})
    save_pruned(source=as_gguf, family=loaded.family, original_config=config, removed=REMOVED,
                out=tmp_path / "out", model=loaded.model, tokenizer=loaded.tokenizer)
    saved_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in saved_config and saved_config["architectures"] == ["LlamaForCausalLM"]
    torch.testing.assert_close(logits(stock_reload(tmp_path / "out")), logits(reference_pruned(tiny_model)))


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_refuses_output_at_or_around_the_source(tiny_model: Path, tmp_path: Path, where: str) -> None:
    folder = tmp_path / "models" / "m"
    shutil.copytree(tiny_model, folder)
    out = {"same": folder, "inside": folder / "pruned", "parent": tmp_path / "models"}[where]
    with pytest.raises(OutputError):
        save(load(folder), out, force=True)
    assert digest(folder) == digest(tiny_model)


def test_non_empty_output_needs_force(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    loaded = load(tiny_model)
    with pytest.raises(OutputError, match=r"holds no model but other files \(keep.txt\)"):  # forced or not
        save(loaded, out)
    assert (out / "keep.txt").read_text() == "precious"
    # Even forced, a folder holding more than a model is not replaced: `--out . --force` in a folder of notes
    # deleted the notes.
    (out / "notes").mkdir()
    with pytest.raises(OutputError, match=r"holds no model but other files \(keep.txt, notes/\)"):
        save(loaded, out, force=True)
    assert (out / "keep.txt").read_text() == "precious"
    shutil.rmtree(out)
    save(loaded, out)
    (out / "model.safetensors").write_bytes(b"an earlier output")
    (out / "README.md").write_text("---\ntags:\n- shortgpt\n---\n")  # its card, which the front ends' saves write
    save(loaded, out, force=True)  # a model folder (an earlier output) is replaced
    assert (out / "model.safetensors").stat().st_size > 100
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def test_an_output_that_cannot_be_created_is_refused_before_anything_runs(tiny_model: Path, tmp_path: Path) -> None:
    from shortgpt_desktop.core.formats.output_folder import check_output_folder

    source = load(tiny_model).source
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(OutputError, match="a-file is a file, not a folder"):
        check_output_folder(blocker / "sub" / "out", source, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    if Path("/proc/self").is_dir():  # a folder no one can create in, even root (Linux)
        with pytest.raises(OutputError, match="Cannot create /proc/shortgpt-out: no such file or directory"):
            check_output_folder(Path("/proc/shortgpt-out"), source, force=False)


def test_output_that_is_a_file(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        save(load(tiny_model), tmp_path / "file")


def test_cancel_leaves_nothing(tiny_model: Path, tmp_path: Path) -> None:
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(Cancelled):
        save(load(tiny_model), tmp_path / "out", cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_full_job_writes_card_and_report(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=64, count=2,
                   out=str(tmp_path / "out"), prompt="Once upon a time", max_new_tokens=8, metric="bi")
    report = run_prune(Engine(), spec)
    assert len(report.removed_layers) == 2 and report.ppl_before and report.ppl_after
    assert report.removed_layers == sorted(
        sorted(range(6), key=lambda i: (report.scores[i], -i))[:2])
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(tmp_path) not in card and str(tiny_model.parent) not in card  # no local paths in a shared card
    assert f"`{tiny_model.name}`" in card and small_calib.name in card
    assert "Removed layers (0-based, original numbering): " + ", ".join(map(str, report.removed_layers)) in card
    assert f"{report.ppl_before:.3f}" in card and f"{report.ppl_after:.3f}" in card
    assert "deleting the lowest-ranked ones" in card and "## Layer scores" in card  # plain BI: they are
    report.write_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["removed_layers"] == report.removed_layers and data["scores"] == pytest.approx(report.scores)
    assert data["ppl_after"] == pytest.approx(report.ppl_after) and data["tokens"] == 8 * 64
    assert report.generation_before is not None and report.generation_after is not None


def test_a_replacement_for_a_tensor_stored_as_integers_is_a_sentence(tmp_path: Path) -> None:
    """An int8-quantized checkpoint cannot take a repaired float weight: a sentence, never a silent cast."""
    from shortgpt_desktop.core.errors import UnsupportedModelError
    from shortgpt_desktop.core.formats.safetensors_io import replacement_entry, tensor_entry

    stored = TensorEntry("model.layers.0.mlp.down_proj.weight", "I8", [4, 4], 16, lambda out: None)
    with pytest.raises(UnsupportedModelError, match=r"stores model\.layers\.0\.mlp\.down_proj\.weight as I8.*\.$"):
        replacement_entry(stored, torch.ones(4, 4))
    with pytest.raises(UnsupportedModelError, match=r"complex64, which a safetensors file cannot store"):
        tensor_entry("x", torch.ones(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="shape"):  # a bug (the engine's shapes always match): keeps its traceback
        replacement_entry(TensorEntry("w", "F32", [4, 4], 64, lambda out: None), torch.ones(2, 2))


def test_the_card_says_how_the_layers_were_chosen(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """bi+ measures its choice, so its removed layers need not be the lowest-scored (the card said they were);
    layers listed by hand were 'ranked with manual', with an empty score table and '0 tokens scored'."""
    from shortgpt_desktop.core.report import model_card

    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, count=2,
                   check_perplexity=False, repair="none")
    engine = Engine()
    engine.score(spec)
    plan = engine.refine(spec, 2)
    measured = model_card(engine.report(plan, spec), str(tiny_model))
    assert "then the set chosen by measuring candidates" in measured and "lowest-ranked" not in measured
    assert "## Layer scores" in measured
    # bi+'s column is plain BI (the command line's table says so), and its choice a sentence of its own ("bi+;
    # Removed 2 layers chosen by …")
    assert "| layer | bi+ (BI) |" in measured and "- Metric: bi+. Removed 2 layers chosen by " in measured, measured
    by_hand = run_prune(Engine(), dataclasses.replace(spec, layers=[1, 2], count=None, out=str(tmp_path / "out")))
    card = (tmp_path / "out" / "README.md").read_text()
    assert by_hand.metric == "manual" and "as listed by hand (no scoring)" in card
    assert "## Layer scores" not in card and "tokens scored" not in card and "**manual**" not in card
    # Picked by hand in the window from scores on screen: the card said "no scoring" and left out the scores' table.
    picked = model_card(engine.report(engine.plan(layers=[1, 4]), spec), str(tiny_model))
    assert "picked by hand, after scoring the layers with **bi+** (the scores are below)" in picked, picked
    assert "- Metric: manual (layers picked from bi+ scores)" in picked
    assert "## Layer scores" in picked and "| layer | bi+ (BI) |" in picked and "no scoring" not in picked
    report = engine.report(engine.plan(layers=[1, 4]), spec)
    assert report.picked_after == "bi+" and report.scores == engine.scores.scores and report.calibration


def tensor_bytes(files: list[Path]) -> int:
    from shortgpt_desktop.core.formats.safetensors_reader import read_safetensors_header

    return sum(e["data_offsets"][1] - e["data_offsets"][0] for f in files
               for k, e in read_safetensors_header(f).items() if not k.startswith("__"))


@pytest.mark.parametrize("name", ["llama", "gpt2", "opt", "qwen2_moe", "gemma3", "llama sharded"])
def test_the_size_told_before_loading_is_what_the_save_writes(tiny_family, name: str, tmp_path: Path) -> None:
    """A safetensors checkpoint's size before and after a cut is read from its headers before anything loads (the
    disk is asked for it before scoring): exactly the tensor bytes the source holds and the save writes. Stored in
    bfloat16 and loaded in float32, with a repaired weight (float32) written back: it is cast to what the file
    stores, so it changes nothing. Sharded: over every file."""
    from safetensors.torch import load_file, save_file

    from shortgpt_desktop.core.formats.writers import SafetensorsWriter
    from shortgpt_desktop.core.model.config import read_config
    from shortgpt_desktop.core.model.families import family_for_model_type, layer_count

    family, sharded = name.split()[0], name.endswith("sharded")
    folder = tmp_path / "bf16"
    shutil.copytree(tiny_family(family), folder)
    state = load_file(folder / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
              folder / "model.safetensors", metadata={"format": "pt"})
    if sharded:
        source = resolve(str(folder))
        config = read_config(source)
        save_pruned(source=source, family=family_for_model_type(config["model_type"]), original_config=config,
                    removed=[], out=tmp_path / "sharded", max_shard_bytes=150_000)
        folder = tmp_path / "sharded"

    source = resolve(str(folder))
    assert (len(source.weight_files) > 1) == sharded
    config = read_config(source)
    n = layer_count(config, family_for_model_type(config["model_type"]))
    writer = SafetensorsWriter()
    before, after = writer.sizes(source, REMOVED, n)  # type: ignore[misc]
    assert before == tensor_bytes([w.path for w in source.weight_files])
    assert after < before and writer.sizes(source, [], n) == (before, before)

    loaded = load(folder)
    kept = next(i for i in range(n) if i not in REMOVED)
    weight = f"{loaded.family.layers_path}.{kept}.{loaded.family.mlp_out}.weight"
    replaced = {weight: loaded.model.get_parameter(weight).detach().float() * 2}
    result = save(loaded, tmp_path / "out", replaced=replaced)
    written = [result.folder / f for f in result.files if f.endswith(".safetensors")]
    assert after == tensor_bytes(written)


def test_no_size_from_headers_where_the_layers_cannot_be_told(tiny_model: Path, tmp_path: Path) -> None:
    """A ``.bin`` checkpoint (no headers), and a family the headers' names do not match: the engine's count of
    parameters × stored bytes stands in (None here)."""
    from safetensors.torch import load_file

    from shortgpt_desktop.core.formats.writers import SafetensorsWriter

    legacy = tmp_path / "bin-model"
    shutil.copytree(tiny_model, legacy)
    torch.save(load_file(legacy / "model.safetensors"), legacy / "pytorch_model.bin")
    (legacy / "model.safetensors").unlink()
    assert SafetensorsWriter().sizes(resolve(str(legacy)), REMOVED, 6) is None
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_model, renamed)
    config = json.loads((renamed / "config.json").read_text(encoding="utf-8"))
    (renamed / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}), encoding="utf-8")
    assert SafetensorsWriter().sizes(resolve(str(renamed)), REMOVED, 6) is None  # no "h.N." tensor in a Llama
    assert SafetensorsWriter().sizes(resolve(str(tiny_model)), REMOVED, 6) is not None
    # the file holds a layer the config does not count (the save would drop it too, so no "after" is exact)
    assert SafetensorsWriter().sizes(resolve(str(tiny_model)), REMOVED, 5) is None


def test_a_checkpoint_written_again_is_sized_again(tiny_model: Path, tmp_path: Path) -> None:
    """The window stays open: a folder converted again in place (here to bfloat16) is read again, not sized from
    what the writer read before; a file gone since is left to the engine's count."""
    from safetensors.torch import load_file, save_file

    from shortgpt_desktop.core.formats.writers import SafetensorsWriter

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    writer = SafetensorsWriter()
    before = writer.sizes(resolve(str(folder)), REMOVED, 6)
    assert before is not None and before[0] == tensor_bytes([folder / "model.safetensors"])
    state = load_file(folder / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    again = writer.sizes(resolve(str(folder)), REMOVED, 6)
    assert again is not None and again[0] == tensor_bytes([folder / "model.safetensors"]) < before[0]
    source = resolve(str(folder))
    (folder / "model.safetensors").unlink()
    assert writer.sizes(source, REMOVED, 6) is None


@pytest.mark.parametrize("failing", ["_copy_side_files", "card"])
def test_a_disk_error_after_the_weights_leaves_nothing_in_place_and_no_partial_folder(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """The tokenizer, side files and card go into the temporary folder before it moves into place: a disk that fills
    while they are written leaves no folder that looks finished (weights and card, no tokenizer), and no hidden
    partial folder as big as the model (a full disk stays full)."""
    import errno

    from shortgpt_desktop.core.formats import safetensors_writer

    def full(*args: object, **kwargs: object) -> list[str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "card":
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full() if self.name == "README.md" else
                            Path.write_bytes(self, str(a[0]).encode("utf-8")))
    else:
        monkeypatch.setattr(safetensors_writer, failing, full)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="failed: no space left on device; nothing was written"):
        save(load(tiny_model), out, card_text="# card\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _entry(name: str, nbytes: int) -> TensorEntry:
    return TensorEntry(name, "U8", [nbytes], nbytes, lambda out: out.write(bytes(nbytes)))


def test_shards_fill_up_to_the_limit_exactly_and_each_starts_empty() -> None:
    entries = [_entry(name, n) for name, n in zip("abcd", [8, 8, 4, 4], strict=True)]
    assert [[e.name for e in shard] for shard in plan_shards(entries, 8)] == [["a"], ["b"], ["c", "d"]]


def test_a_shard_keeps_its_data_8_byte_aligned_and_refuses_a_tensor_of_the_wrong_size(tmp_path: Path) -> None:
    for name in ("a", "ab", "abc", "abcd"):  # headers of every length modulo 8
        path = tmp_path / f"{name}.safetensors"
        assert write_shard(path, [_entry(name, 3)]) == 3
        assert int.from_bytes(path.read_bytes()[:8], "little") % 8 == 0
    short = TensorEntry("w", "U8", [4], 4, lambda out: out.write(bytes(3)))
    with pytest.raises(OSError, match="tensor w wrote 3 bytes, 4 expected"):
        write_shard(tmp_path / "short.safetensors", [short])


def test_a_tied_head_is_left_out_of_a_model_saved_from_memory() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2)
    tied = LlamaForCausalLM(LlamaConfig(**sizes, tie_word_embeddings=True))
    untied = LlamaForCausalLM(LlamaConfig(**sizes, tie_word_embeddings=False))
    assert "lm_head.weight" not in {e.name for e in model_entries(tied)}
    assert "lm_head.weight" in {e.name for e in model_entries(untied)}
