"""GGUF in, GGUF out: a pruned GGUF keeps its quantization and runs in llama.cpp like the identity reference.

References are independent of the writer: transformers runs the SOURCE model with the removed layers made
identity (forward hooks), and llama.cpp (PyPI ``xllamacpp``) runs the pruned file on the same token ids.
Tiny models are exported to GGUF here with gguf-py's own writer; "block count only" files (what
``llama-quantize --prune-layers`` does) show what goes wrong without the metadata fixes.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shortgpt_desktop.core.errors import Cancelled, PlanError, UnsupportedModelError, UserError
from shortgpt_desktop.core.formats import gguf_writer
from shortgpt_desktop.core.formats.gguf_reader import check_gguf, read_gguf_layout
from shortgpt_desktop.core.model.sources import ModelSourceError
from shortgpt_desktop.core.testing.gguf_export import export_gguf

gguf = pytest.importorskip("gguf")

SMOL_REMOVED = [3, 12, 13, 14, 15, 17, 25, 26]


# ------------------------------------------------------------------------------------------------ helpers


class LlamaCpp:
    """One llama.cpp model in this process (xllamacpp's embedded server), greedy decoding on token ids."""

    def __init__(self, path: Path, n_ctx: int = 256) -> None:
        xllamacpp = pytest.importorskip("xllamacpp")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        # One thread: ggml's worker threads spin at barriers, which crawls on a shared 2-core machine.
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.warmup = False
        params.cache_type_k = xllamacpp.ggml_type.GGML_TYPE_F32  # exact KV cache: compare with fp32 transformers
        params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
        # CPU flash attention rounds Q to f16; off, llama.cpp's F32 models match transformers to ~1e-5
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.server = xllamacpp.Server(params)  # RuntimeError when llama.cpp refuses the file

    def greedy(self, prompt: list[int], n: int, n_probs: int = 5) -> list[tuple[int, dict[int, float]]]:
        """``n`` greedy tokens after ``prompt``, each with llama.cpp's top ``n_probs`` log-probabilities."""
        reply = self.server.handle_completions({
            "prompt": prompt, "n_predict": n, "temperature": 0.0, "top_k": 1, "n_probs": n_probs,
            "cache_prompt": False, "return_tokens": True,
        })
        assert "choices" in reply, reply
        steps = reply["choices"][0]["logprobs"]["content"]
        # one entry per token only while every token is whole UTF-8 text (the tiny vocabularies here are ASCII)
        assert len(steps) == reply["usage"]["completion_tokens"], reply
        return [(s["id"], {t["id"]: t["logprob"] for t in s["top_logprobs"]}) for s in steps]


def hf_logprobs(model: Any, ids: list[int], removed: list[int] = ()) -> Any:
    """log-softmax of transformers' logits, with ``removed`` decoder layers made identity."""
    import torch

    from shortgpt_desktop.core.measure.scoring import _identity_hook

    layers = model.model.layers
    handles = [layers[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in removed]
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
    finally:
        for h in handles:
            h.remove()
    return torch.log_softmax(logits, dim=-1)


def agreement(steps: list[tuple[int, dict[int, float]]], reference: Any, prompt_len: int) -> tuple[float, float]:
    """(fraction of llama.cpp's greedy tokens that are the reference's argmax, max |Δ logprob| over its top-k)."""
    agree, worst = 0, 0.0
    for j, (token, top) in enumerate(steps):
        row = reference[prompt_len + j - 1]
        agree += int(row.argmax()) == token
        worst = max(worst, max(abs(float(row[t]) - lp) for t, lp in top.items()))
    return agree / len(steps), worst


def file_digest(path: Path, start: int, size: int) -> str:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return hashlib.sha1(view[start:start + size]).hexdigest()


def block_count_only(source: Path, removed: list[int], out: Path) -> Path:
    """What ``llama-quantize --prune-layers`` writes: tensors dropped and renamed, only block_count changed."""
    layout = read_gguf_layout(source)
    plan = replace(gguf_writer._plan(source, layout, removed), sliced_arrays=[], swa_pattern=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    gguf_writer._write_file(out, source, layout, plan, gguf_writer._NewData(), None, None)
    return out


def tiny_gguf(path: Path, arch: str = "llama", n_layer: int = 6, metadata: dict[str, Any] | None = None,
              tensors: dict[str, tuple[Any, Any]] | None = None) -> Path:
    """A metadata-only GGUF (no model behind it) for plan and bad-input tests."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(n_layer)
    for key, (value, vtype) in (metadata or {}).items():
        writer.add_key_value(key, value, vtype)
    for name, (data, raw_dtype) in (tensors or {
        "token_embd.weight": (np.zeros((8, 4), np.float32), None),
        **{f"blk.{i}.ffn_down.weight": (np.full((4, 4), i, np.float32), None) for i in range(n_layer)},
    }).items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


V = gguf.GGUFValueType


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names a descriptor's file through /proc")
def test_every_file_written_is_on_the_disk_before_the_folder_moves_into_place(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut after the move must not leave a finished-looking folder around a short file: every file of the
    output (the GGUF and its card; each safetensors shard, the index, config, tokenizer and card) is synced before the
    move, and the folder holding the output after it (only the weights were synced, and the GGUF not at first)."""
    import os

    from shortgpt_desktop.core.formats import output_folder
    from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    synced: list[str] = []
    real_fsync, real_move = os.fsync, output_folder._move_into_place
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    monkeypatch.setattr(output_folder, "_move_into_place", lambda temp, out, *rest: synced.append("moved") or
                        real_move(temp, out, *rest))

    def check(out: Path) -> None:
        files = sorted(p.name for p in out.iterdir())
        assert sorted(Path(s).name for s in synced[:synced.index("moved")]) == files
        assert synced[synced.index("moved") + 1:] == [str(tmp_path)]
        synced.clear()

    check(gguf_writer.write_pruned_gguf(tiny_gguf(tmp_path / "tiny.gguf"), [2], tmp_path / "gguf-out").folder)
    loaded = load_model(resolve(str(tiny_model)), device="cpu", dtype="float32")
    save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=[2],
                out=tmp_path / "st-out", model=loaded.model, tokenizer=loaded.tokenizer, max_shard_bytes=300_000)
    written = {p.name for p in (tmp_path / "st-out").iterdir()}
    assert len([n for n in written if n.startswith("model-")]) >= 2
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json"} <= written
    check(tmp_path / "st-out")


def test_the_size_label_counts_the_kept_weights_but_a_mixture_of_experts_keeps_its_own(tmp_path: Path) -> None:
    """``general.size_label`` is what Ollama and LM Studio show: a dense file's counts the kept tensors' elements,
    as llama.cpp's converter does; a mixture of experts' counts one expert's share (``8x7B``), which the tensors
    alone do not tell, so it stays the source's."""
    blocks = {f"blk.{i}.ffn_down.weight": (np.zeros((100, 1000), np.float32), None) for i in range(6)}
    tensors = {"token_embd.weight": (np.zeros((8, 4), np.float32), None), **blocks}
    dense = tiny_gguf(tmp_path / "dense.gguf", metadata={"general.size_label": ("600K", V.STRING)}, tensors=tensors)
    out = gguf_writer.write_pruned_gguf(dense, [1, 2], tmp_path / "dense-out")
    assert read_gguf_layout(out.gguf_path).metadata["general.size_label"] == "400K"
    moe = tiny_gguf(tmp_path / "moe.gguf", tensors=tensors, metadata={"general.size_label": ("8x7B", V.STRING),
                                                                       "llama.expert_count": (8, V.UINT32)})
    out = gguf_writer.write_pruned_gguf(moe, [1, 2], tmp_path / "moe-out")
    assert read_gguf_layout(out.gguf_path).metadata["general.size_label"] == "8x7B"


def test_the_tensors_a_job_rewrites_are_beside_each_run_or_every_kept_one_when_healing(tmp_path: Path) -> None:
    """The bound the size before Save counts: the repair's MLP output projections on both sides of each run (none
    for a run from layer 0, no layer after the last), the refit's MLP projections before each run, healing's
    every 2-D weight of every kept block (not the norms)."""
    tensors = {"token_embd.weight": (np.zeros((8, 4), np.float32), None)}
    for i in range(8):
        for part in ("attn_q.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"):
            tensors[f"blk.{i}.{part}"] = (np.zeros((4, 4), np.float32), None)
        tensors[f"blk.{i}.ffn_norm.weight"] = (np.ones(4, np.float32), None)
    layout = check_gguf(tiny_gguf(tmp_path / "t.gguf", n_layer=8, tensors=tensors))

    def names(removed: list[int], **changes: bool) -> list[str]:
        kinds = {"repair": False, "refit": False, "heal": False, **changes}
        return [t.name for t in gguf_writer.rewritten_tensors(layout, removed, **kinds)]

    assert names([0, 1, 3, 4, 7], repair=True) == ["blk.2.ffn_down.weight", "blk.5.ffn_down.weight",
                                                   "blk.6.ffn_down.weight"]
    assert names([2, 3, 6], repair=True, refit=True) == [
        "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight", "blk.1.ffn_down.weight", "blk.4.ffn_down.weight",
        "blk.5.ffn_gate.weight", "blk.5.ffn_up.weight", "blk.5.ffn_down.weight", "blk.7.ffn_down.weight"]
    healed = names([2, 3, 6], heal=True)
    assert len(healed) == 5 * 4 and not any(n.startswith(("blk.2.", "blk.3.", "blk.6.")) for n in healed)
    assert not any("norm" in n for n in healed)
    assert names([2, 3, 4], repair=True) == ["blk.1.ffn_down.weight", "blk.5.ffn_down.weight"]  # a run of three
    assert names([2, 3, 6]) == []
    assert names([], repair=True, refit=True, heal=True) == []  # nothing removed: nothing repaired or healed


# ------------------------------------------------------------------------------------------ SmolLM2 Q4_1


@pytest.fixture(scope="module")
def smol_pruned(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> gguf_writer.GGUFSaveResult:
    out = tmp_path_factory.mktemp("gguf") / "smol-pruned"
    return gguf_writer.write_pruned_gguf(smollm2_gguf, SMOL_REMOVED, out, card_text="# SmolLM2 pruned\n")


def test_plan_reports_size_and_dropped_tensors_before_writing(smollm2_gguf: Path,
                                                              smol_pruned: gguf_writer.GGUFSaveResult) -> None:
    plan = gguf_writer.plan_gguf_pruning(smollm2_gguf, SMOL_REMOVED)
    assert (plan.old_block_count, plan.new_block_count, plan.architecture) == (30, 22, "llama")
    assert len(plan.dropped_tensors) == 8 * 9
    assert {int(n.split(".")[1]) for n in plan.dropped_tensors} == set(SMOL_REMOVED)
    assert plan.output_bytes == smol_pruned.bytes_written == smol_pruned.gguf_path.stat().st_size
    assert plan.output_bytes <= 0.85 * smollm2_gguf.stat().st_size


def test_pruned_smollm2_keeps_every_tensor_byte_for_byte(smollm2_gguf: Path,
                                                        smol_pruned: gguf_writer.GGUFSaveResult) -> None:
    assert sorted(p.name for p in smol_pruned.folder.iterdir()) == ["README.md", "smol-pruned.gguf"]
    src, out = read_gguf_layout(smollm2_gguf), read_gguf_layout(smol_pruned.gguf_path)
    assert out.metadata["llama.block_count"] == 22
    assert out.metadata["general.name"] == src.metadata["general.name"] + " (pruned to 22 layers)"
    # As llama.cpp's converter labels a file: SmolLM2's 134.5 M parameters less 8 layers of 3.54 M each
    assert (src.metadata["general.size_label"], out.metadata["general.size_label"]) == ("135M", "106M")
    changed = ("llama.block_count", "general.name", "general.size_label")
    assert {k: v for k, v in out.metadata.items() if k not in (*changed, "shortgpt.removed_layers#len")} \
        == {k: v for k, v in src.metadata.items() if k not in changed}
    kept = [i for i in range(30) if i not in SMOL_REMOVED]
    by_name = {t.name: t for t in src.tensors}
    assert len(out.tensors) == len(src.tensors) - 72
    for tensor in out.tensors:
        parts = tensor.name.split(".")
        old_name = ".".join(["blk", str(kept[int(parts[1])]), *parts[2:]]) if parts[0] == "blk" else tensor.name
        old = by_name[old_name]
        assert (tensor.type_id, tensor.shape) == (old.type_id, old.shape), tensor.name
        if parts[0] != "blk" or parts[1] in ("0", "21"):  # spot-check bytes of a few blocks (hashing is not free)
            assert file_digest(smol_pruned.gguf_path, out.data_start + tensor.offset, tensor.n_bytes) == \
                file_digest(smollm2_gguf, src.data_start + old.offset, old.n_bytes), tensor.name


@pytest.fixture(scope="module")
def smol_reference(smollm2, smol_pruned: gguf_writer.GGUFSaveResult) -> dict[str, Any]:
    """transformers on the source with the removed layers made identity, and on the pruned file."""
    import torch
    from transformers import AutoModelForCausalLM

    prompt = [1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 4649, 282]
    with pytest.MonkeyPatch.context() as patch:
        # transformers rebuilds gguf-py's name map for every submodule (hundreds of times per load); it is a pure
        # function of (architecture, block count), so caching it only saves time
        patch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
        source = smollm2.model  # the session's load of the source GGUF, by the same transformers loader
        pruned = AutoModelForCausalLM.from_pretrained(smol_pruned.folder, gguf_file=smol_pruned.gguf_path.name,
                                                      dtype=torch.float32).eval()
    with torch.no_grad():
        greedy = pruned.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0].tolist()
    return {"source": source, "pruned": pruned, "prompt": prompt, "greedy": greedy}


@pytest.mark.slow  # two transformers GGUF loads of SmolLM2
def test_transformers_reads_the_pruned_gguf_as_the_identity_reference(smol_reference: dict[str, Any]) -> None:
    ids = smol_reference["greedy"]
    assert smol_reference["pruned"].config.num_hidden_layers == 22
    expected = hf_logprobs(smol_reference["source"], ids, SMOL_REMOVED)
    got = hf_logprobs(smol_reference["pruned"], ids)
    assert float((got - expected).abs().max()) < 1e-4
    assert float((hf_logprobs(smol_reference["source"], ids) - got).abs().max()) > 0.1  # the pruning shows


@pytest.mark.slow  # two transformers GGUF loads of SmolLM2
def test_llama_cpp_runs_the_pruned_gguf_like_transformers(smol_pruned: gguf_writer.GGUFSaveResult,
                                                          smol_reference: dict[str, Any]) -> None:
    """Same tokens, two runtimes: llama.cpp's greedy choices are transformers' (up to Q8 activation rounding)."""
    prompt = smol_reference["prompt"]
    steps = LlamaCpp(smol_pruned.gguf_path).greedy(prompt, 16)
    reference = hf_logprobs(smol_reference["pruned"], prompt + [t for t, _ in steps])
    agree, worst = agreement(steps, reference, len(prompt))
    # the token llama.cpp picks is transformers' best or within a near-tie of it
    gaps = [float(reference[len(prompt) + j - 1].max() - reference[len(prompt) + j - 1][t])
            for j, (t, _) in enumerate(steps)]
    print(f"llama.cpp vs transformers on the pruned SmolLM2: argmax agreement {agree:.2f}, max |dlogprob| "
          f"{worst:.3f}, max gap {max(gaps):.3f}")
    # measured: 15 of 16 argmax, worst 0.26 (0.23 between the unpruned file and transformers), max gap 0.18
    assert agree >= 0.8 and max(gaps) < 0.35 and worst < 0.6, (agree, worst, gaps)


def test_a_replaced_4_bit_weight_is_written_as_q8_0(smollm2_gguf: Path, tmp_path: Path) -> None:
    """A repaired weight of a Q4_1 file is written at 8 bits (Q8_0) and the type change reported: at 4 bits the
    default recipe's repaired down projections moved a token's log-probability by up to 6.4 nats."""
    from gguf.quants import dequantize

    rng = np.random.default_rng(0)
    new = rng.normal(0, 0.05, (576, 1536)).astype(np.float32)  # HF orientation [out, in]
    result = gguf_writer.write_pruned_gguf(smollm2_gguf, SMOL_REMOVED, tmp_path / "out",
                                           replaced={"model.layers.5.mlp.down_proj.weight": new})
    assert result.replaced == ["blk.4.ffn_down.weight"]  # layer 5 is now 4
    assert result.changed_types == {"blk.4.ffn_down.weight": ("Q4_1", "Q8_0")}
    layout = read_gguf_layout(result.gguf_path)
    tensor = next(t for t in layout.tensors if t.name == "blk.4.ffn_down.weight")
    assert gguf.GGMLQuantizationType(tensor.type_id).name == "Q8_0"
    raw = np.fromfile(result.gguf_path, np.uint8, tensor.n_bytes, offset=layout.data_start + tensor.offset)
    back = dequantize(raw, gguf.GGMLQuantizationType.Q8_0).reshape(576, 1536)
    blocks = new.reshape(576, -1, 32)
    step = np.abs(blocks).max(-1) / 127  # Q8_0: 255 levels, symmetric, per block of 32 (an fp16 scale)
    error = np.abs(back.reshape(576, -1, 32) - blocks).max(-1)
    assert np.all(error <= step * 0.6)
    other = next(t for t in layout.tensors if t.name == "blk.5.ffn_down.weight")
    assert gguf.GGMLQuantizationType(other.type_id).name == "Q4_1"  # the rest keeps its type, byte for byte
    q4_1, q8_0 = 576 * 1536 // 32 * 20, 576 * 1536 // 32 * 34  # bytes per block of 32: 20 and 34
    assert result.bytes_written == result.plan.output_bytes + q8_0 - q4_1


# ---------------------------------------------------------------------------------- tiny llama.cpp models


@pytest.fixture(scope="module")
def tiny_llama_arrays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A 6-layer llama whose feed-forward and head counts are per-layer ARRAYS in the GGUF metadata."""
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    base = tmp_path_factory.mktemp("tiny-llama")
    kwargs = dict(TINY_FAMILIES["llama"][1], initializer_range=0.2)
    folder = build_tiny_model(base / "hf", "llama", config_overrides=kwargs)
    model = export_gguf(folder, base / "tiny-llama.gguf", "llama", per_layer_arrays=True)
    return base / "tiny-llama.gguf", model


def test_per_layer_arrays_are_sliced_and_llama_cpp_matches_the_reference(
        tiny_llama_arrays: tuple[Path, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path, model = tiny_llama_arrays
    removed = [1, 4]
    result = gguf_writer.write_pruned_gguf(path, removed, tmp_path / "pruned")
    assert sorted(result.plan.sliced_arrays) == ["llama.attention.head_count", "llama.attention.head_count_kv",
                                                 "llama.feed_forward_length"]
    prompt = list(range(5, 37))
    steps = LlamaCpp(result.gguf_path).greedy(prompt, 8)
    agree, worst = agreement(steps, hf_logprobs(model, prompt + [t for t, _ in steps], removed), len(prompt))
    assert agree == 1.0 and worst < 1e-3, worst

    naive = block_count_only(path, removed, tmp_path / "naive" / "naive.gguf")
    capfd.readouterr()
    with pytest.raises(RuntimeError):
        LlamaCpp(naive)
    assert "wrong array length" in capfd.readouterr().err


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A 12-layer gemma3 with llama.cpp's default period: 5 sliding-window layers, then 1 full, twice."""
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    base = tmp_path_factory.mktemp("tiny-gemma3")
    kwargs = {k: v for k, v in TINY_FAMILIES["gemma3"][1].items() if k != "layer_types"}
    kwargs.update(num_hidden_layers=12, initializer_range=0.2,
                  layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(12)])
    folder = build_tiny_model(base / "hf", "gemma3_text", config_overrides=kwargs)
    model = export_gguf(folder, base / "tiny-gemma3.gguf", "gemma3",
                        extra={"gemma3.attention.sliding_window": (kwargs["sliding_window"], V.UINT32)})
    return base / "tiny-gemma3.gguf", model


def test_the_card_says_where_the_sliding_window_layout_is_written_and_who_reads_it(
        tiny_model: Path, tiny_q4_gguf: Path, tmp_path: Path) -> None:
    """transformers' own GGUF loader ignores the written layout (README, GGUF output): the file's card said nothing."""
    import json

    from shortgpt_desktop import cli
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    kwargs = {k: v for k, v in TINY_FAMILIES["gemma3"][1].items() if k != "layer_types"}
    kwargs.update(num_hidden_layers=12,
                  layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(12)])
    folder = build_tiny_model(tmp_path / "hf", "gemma3_text", config_overrides=kwargs, tokenizer_from=tiny_model)
    path = tmp_path / "gemma3.gguf"  # with its tokenizer: the job reads one
    export_gguf(folder, path, "gemma3", tokens="tokenizer",
                extra={"gemma3.attention.sliding_window": (kwargs["sliding_window"], V.UINT32)})
    out = tmp_path / "gemma"
    assert cli.main(["prune", str(path), "--remove", "1,7", "--repair", "none", "--no-eval", "--out", str(out),
                     "--json", str(tmp_path / "gemma.json"), "-q"]) == 0
    card = " ".join((out / "README.md").read_text(encoding="utf-8").split())
    assert ("the sliding-window layout written per layer (full attention in layers 4, 9 of the pruned model)" in card
            and "transformers' own GGUF loader does not" in card), card
    report = json.loads((tmp_path / "gemma.json").read_text(encoding="utf-8"))
    assert report["gguf_sliding_window"] == [True] * 4 + [False] + [True] * 4 + [False]
    # pruned again, the file's own per-layer array is sliced: still not llama.cpp's period, and said so again
    again = tmp_path / "again"
    assert cli.main(["prune", str(out / "gemma.gguf"), "--remove", "0", "--repair", "none", "--no-eval", "--out",
                     str(again), "--json", str(tmp_path / "again.json"), "-q"]) == 0
    assert "(full attention in layers 3, 8 of the pruned model)" in " ".join(
        (again / "README.md").read_text(encoding="utf-8").split())
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))["gguf_sliding_window"] == (
        [True] * 3 + [False] + [True] * 4 + [False])

    # no sliding window: nothing written, nothing said
    assert cli.main(["prune", str(tiny_q4_gguf), "--remove", "1", "--repair", "none", "--no-eval", "--out",
                     str(tmp_path / "llama"), "--json", str(tmp_path / "llama.json"), "-q"]) == 0
    assert "sliding-window" not in (tmp_path / "llama" / "README.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "llama.json").read_text(encoding="utf-8"))["gguf_sliding_window"] == []


def test_shifted_sliding_window_pattern_is_written_out(tiny_gemma3: tuple[Path, Any], tmp_path: Path) -> None:
    path, model = tiny_gemma3
    removed = [1, 7]  # every later layer moves up: llama.cpp's period-6 default no longer fits
    result = gguf_writer.write_pruned_gguf(path, removed, tmp_path / "pruned")
    assert result.plan.swa_pattern == [True] * 4 + [False] + [True] * 4 + [False]
    prompt = list(range(5, 37))  # longer than the window of 8
    steps = LlamaCpp(result.gguf_path).greedy(prompt, 8)
    reference = hf_logprobs(model, prompt + [t for t, _ in steps], removed)
    agree, worst = agreement(steps, reference, len(prompt))
    # llama.cpp's CPU GELU reads an f16 table: ~0.015 already between the unpruned file and transformers
    assert agree == 1.0 and worst < 0.1, worst
    # Read back here as llama.cpp reads it: transformers' GGUF config ignores the written pattern and derived the
    # period-6 one from the layer count, so the file's check (eval --against) measured another model.
    from shortgpt_desktop.core.model.config import read_config
    from shortgpt_desktop.core.model.skeleton import build_skeleton
    from shortgpt_desktop.core.model.sources import resolve

    expected = ["sliding_attention" if slides else "full_attention" for slides in result.plan.swa_pattern]
    source = resolve(str(result.gguf_path))
    assert read_config(source)["layer_types"] == expected
    assert build_skeleton(source, "float32").config.layer_types == expected

    naive = block_count_only(path, removed, tmp_path / "naive" / "naive.gguf")
    naive_steps = LlamaCpp(naive).greedy(prompt, 8)  # loads without a word...
    naive_reference = hf_logprobs(model, prompt + [t for t, _ in naive_steps], removed)
    naive_agree, naive_worst = agreement(naive_steps, naive_reference, len(prompt))
    assert naive_worst > 1.0 and naive_agree < 1.0  # ...and is wrong (measured: 7.9, 1 token of 8 right)


# ------------------------------------------------------------------------------------- metadata and plans


def test_per_layer_arrays_leading_dense_and_mtp_blocks(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "m.gguf", "deepseek2", 6, {
        "deepseek2.feed_forward_length": ([10, 11, 12, 13, 14, 15], V.ARRAY),
        "deepseek2.attention.head_count": (4, V.UINT32),
        "deepseek2.leading_dense_block_count": (3, V.UINT32),
        "deepseek2.nextn_predict_layers": (1, V.UINT32),
        "deepseek2.rope.dimension_sections": ([1, 2, 3, 4, 5, 6], V.ARRAY),
    })
    with pytest.raises(PlanError, match="multi-token-prediction"):
        gguf_writer.plan_gguf_pruning(path, [5])
    result = gguf_writer.write_pruned_gguf(path, [1, 3], tmp_path / "out")
    reader = gguf.GGUFReader(str(result.gguf_path))
    assert reader.fields["deepseek2.block_count"].contents() == 4
    assert reader.fields["deepseek2.feed_forward_length"].contents() == [10, 12, 14, 15]
    assert reader.fields["deepseek2.rope.dimension_sections"].contents() == [1, 2, 3, 4, 5, 6]
    assert reader.fields["deepseek2.leading_dense_block_count"].contents() == 2
    # layer 3, the first sparse one, is kept and stays sparse: only the kept layers below 3 count
    assert gguf_writer.plan_gguf_pruning(path, [1]).leading_dense == (3, 2)
    assert reader.fields["shortgpt.removed_layers"].contents() == [1, 3]
    downs = {t.name: float(t.data[0, 0]) for t in reader.tensors if t.name.endswith("ffn_down.weight")}
    assert downs == {"blk.0.ffn_down.weight": 0, "blk.1.ffn_down.weight": 2, "blk.2.ffn_down.weight": 4,
                     "blk.3.ffn_down.weight": 5}  # the MTP block (5) stays last
    again = gguf_writer.write_pruned_gguf(result.gguf_path, [1], tmp_path / "again")
    assert again.plan.removed_from_original == [1, 2, 3]  # layer 1 of the pruned file was layer 2
    reader = gguf.GGUFReader(str(again.gguf_path))
    assert reader.fields["shortgpt.removed_layers"].contents() == [1, 2, 3]
    assert reader.fields["deepseek2.feed_forward_length"].contents() == [10, 14, 15]


def test_positional_layouts_are_refused_unless_their_phase_is_kept(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "s.gguf", "smollm3", 8)
    with pytest.raises(UnsupportedModelError, match="period of 4"):
        gguf_writer.plan_gguf_pruning(path, [2])
    assert gguf_writer.plan_gguf_pruning(path, [2, 3, 4, 5]).new_block_count == 4
    stepped = tiny_gguf(tmp_path / "step.gguf", "llama", 6, {"llama.interleave_moe_layer_step": (2, V.UINT32)})
    with pytest.raises(UnsupportedModelError, match="period of 2"):
        gguf_writer.plan_gguf_pruning(stepped, [1])
    assert gguf_writer.plan_gguf_pruning(stepped, [2, 3]).new_block_count == 4
    for arch, meta in (("llama4", {}), ("gemma3n", {}),
                       ("gemma4", {"gemma4.attention.shared_kv_layers": (1, V.UINT32)})):  # one sharing layer is enough
        with pytest.raises(UnsupportedModelError, match=r"^[^\n]+\.$"):
            gguf_writer.plan_gguf_pruning(tiny_gguf(tmp_path / f"{arch}.gguf", arch, 6, meta), [1])


def test_a_tensor_sized_by_the_layer_count_outside_the_blocks_is_refused(tmp_path: Path) -> None:
    tensors = {"per_layer_token_embd.weight": (np.zeros((8, 4), np.float32), None),
               **{f"blk.{i}.ffn_down.weight": (np.zeros((4, 4), np.float32), None) for i in range(4)}}
    with pytest.raises(UnsupportedModelError, match=r"outside the blocks \(per_layer_token_embd\.weight\)"):
        gguf_writer.plan_gguf_pruning(tiny_gguf(tmp_path / "per-layer.gguf", n_layer=4, tensors=tensors), [1])


def test_a_periodic_sliding_window_layout_is_written_out_only_where_pruning_shifts_it(tmp_path: Path) -> None:
    """llama.cpp derives these layouts from the layer index (``set_swa_pattern``): smallthinker's dense layer comes
    first in each period of 4, a period stored as a scalar replaces the architecture's own, gemma3's applies only
    with a sliding window, and cuts in whole periods keep every kept layer's phase."""
    def pattern(arch: str, n_layer: int, metadata: dict[str, Any], removed: list[int]) -> list[bool] | None:
        path = tiny_gguf(tmp_path / f"{arch}-{len(metadata)}.gguf", arch, n_layer, metadata)
        return gguf_writer.plan_gguf_pruning(path, removed).swa_pattern

    window = (8, V.UINT32)
    t, f = True, False
    assert pattern("smallthinker", 8, {"smallthinker.attention.sliding_window": window}, [1]) == \
        [f, t, t, f, t, t, t]
    assert pattern("gemma2", 6, {"gemma2.attention.sliding_window_pattern": (3, V.UINT32)}, [1]) == [t, f, t, t, f]
    assert pattern("gemma2", 6, {}, [2, 3]) is None  # every kept layer keeps its phase of 2
    assert pattern("gemma3", 12, {}, [1]) is None  # no sliding window: llama.cpp applies no pattern
    assert pattern("gemma3", 12, {"gemma3.attention.sliding_window": window}, [1]) == [t] * 4 + [f] + [t] * 5 + [f]


def test_a_replaced_weight_in_a_type_it_keeps_is_written_as_given_and_no_change_reported(tmp_path: Path) -> None:
    new = np.arange(16, dtype=np.float32).reshape(4, 4) / 7
    result = gguf_writer.write_pruned_gguf(tiny_gguf(tmp_path / "f32.gguf"), [0], tmp_path / "out",
                                           replaced={"model.layers.2.mlp.down_proj.weight": new})
    assert (result.replaced, result.changed_types) == (["blk.1.ffn_down.weight"], {})
    reader = gguf.GGUFReader(str(result.gguf_path))
    tensor = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(np.asarray(tensor.data).reshape(4, 4), new)


def test_a_replacement_the_writer_cannot_write_back_is_refused_by_each_layers_metadata_and_names_the_step(
        tmp_path: Path) -> None:
    """A per-layer head count is read at the tensor's own layer (falcon's fused QKV can be written back only with
    one key/value head; here layer 1 has two), and the refusal names the step that would change the tensor."""
    qkv = {f"blk.{i}.attn_qkv.weight": (np.zeros((12, 4), np.float32), None) for i in range(4)}
    falcon = tiny_gguf(tmp_path / "falcon.gguf", "falcon", 4, {
        "falcon.attention.head_count": (2, V.UINT32), "falcon.attention.head_count_kv": ([1, 2, 1, 1], V.ARRAY),
    }, qkv)
    with pytest.raises(UnsupportedModelError, match=r"blk\.1\.attn_qkv.*the healing would change it"):
        gguf_writer.check_gguf_replacements(falcon, repair=False, heal=True)
    fused = {f"blk.{i}.ffn_gate_up_projs.weight": (np.zeros((8, 4), np.float32), None) for i in range(4)}
    moe = tiny_gguf(tmp_path / "moe.gguf", "qwen2moe", 4, tensors=fused)
    with pytest.raises(UnsupportedModelError, match=r"mixture-of-experts.*the MLP refit would change it"):
        gguf_writer.check_gguf_replacements(moe, repair=False, heal=False, refit=True)


def test_unquantizable_type_falls_back_to_q8_0(tmp_path: Path) -> None:
    from gguf.quants import dequantize

    q6k = gguf.GGMLQuantizationType.Q6_K
    rng = np.random.default_rng(1)
    raw = np.zeros((4, 210), np.uint8)  # 4 rows of one Q6_K block (256 values in 210 bytes)
    path = tiny_gguf(tmp_path / "k.gguf", "llama", 3, {"llama.attention.head_count": (2, V.UINT32)}, {
        "token_embd.weight": (np.zeros((8, 4), np.float32), None),
        **{f"blk.{i}.ffn_down.weight": (raw, q6k) for i in range(3)},
    })
    new = rng.normal(0, 1, (4, 256)).astype(np.float32)
    result = gguf_writer.write_pruned_gguf(path, [0], tmp_path / "out",
                                           replaced={"model.layers.2.mlp.down_proj.weight": new})
    assert result.changed_types == {"blk.1.ffn_down.weight": ("Q6_K", "Q8_0")}
    reader = gguf.GGUFReader(str(result.gguf_path))
    tensor = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    back = dequantize(tensor.data, gguf.GGMLQuantizationType.Q8_0)
    assert np.abs(back - new).max() <= np.abs(new).max() / 127 * 0.51 + 1e-6
    assert next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight").tensor_type == q6k


# ------------------------------------------------------------------------------------------------ bad input


def assert_nothing_written(parent: Path) -> None:
    assert not any(p.name.startswith(".out") or p.name == "out" for p in parent.iterdir())


def test_truncated_and_corrupt_files_are_one_sentence(smollm2_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "t.gguf"
    with open(smollm2_gguf, "rb") as f:
        truncated.write_bytes(f.read(3_000_000))
    corrupt = tmp_path / "c.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    for path in (truncated, corrupt):
        with pytest.raises(ModelSourceError, match=r"incomplete or corrupt .*\.$"):
            gguf_writer.write_pruned_gguf(path, [1], tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_split_gguf_is_refused_and_a_missing_part_named(tmp_path: Path) -> None:
    first = tiny_gguf(tmp_path / "m-00001-of-00002.gguf", "llama", 4)
    with pytest.raises(ModelSourceError, match=r"part 1 of 2 .*m-00002-of-00002\.gguf"):
        gguf_writer.plan_gguf_pruning(first, [1])
    shutil.copy(first, tmp_path / "m-00002-of-00002.gguf")
    with pytest.raises(UserError, match="merge the parts"):
        gguf_writer.write_pruned_gguf(first, [1], tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_bad_layer_lists_and_cancel_write_nothing(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "m.gguf", "llama", 4)
    with pytest.raises(PlanError, match="does not exist"):
        gguf_writer.write_pruned_gguf(path, [4], tmp_path / "out")
    with pytest.raises(PlanError, match="no decoder layer"):
        gguf_writer.write_pruned_gguf(path, [0, 1, 2, 3], tmp_path / "out")
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(Cancelled):
        gguf_writer.write_pruned_gguf(path, [1], tmp_path / "out", cancel=lambda: len(seen) >= 2,
                                      progress=lambda stage, done, total, _: seen.append((stage, done, total)))
    assert seen == [("writing GGUF", 0, 4), ("writing GGUF", 1, 4)]
    assert_nothing_written(tmp_path)
    # The card is written into the temporary folder too: a card that cannot be made leaves no output without one
    # (which --force would then take for the user's own model).
    def no_card(changed: object, plan: object) -> str:
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match="no space left on device; nothing was written"):
        gguf_writer.write_pruned_gguf(path, [1], tmp_path / "out", card_text=no_card)
    assert_nothing_written(tmp_path)


def _llama_cpp_against_transformers(smollm2: Any, path: Path, removed: list[int], weights: dict[str, Any]
                                    ) -> tuple[float, float, float]:
    """llama.cpp's greedy steps on ``path`` against transformers running the source with ``weights`` in and
    ``removed`` pruned: (agreement, max |Δ logprob| over llama.cpp's top 5, the worst gap below transformers'
    best of a token llama.cpp picked)."""
    import torch

    from shortgpt_desktop.core import pipeline

    prompt = [1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 4649, 282]
    steps = LlamaCpp(path).greedy(prompt, 12)
    with pipeline.modified(smollm2, removed, weights), torch.no_grad():
        logits = smollm2.model(torch.tensor([prompt + [t for t, _ in steps]])).logits[0].double()
    reference = torch.log_softmax(logits, -1)
    agree, worst = agreement(steps, reference, len(prompt))
    gaps = [float(reference[len(prompt) + j - 1].max() - reference[len(prompt) + j - 1][t])
            for j, (t, _) in enumerate(steps)]
    return agree, worst, max(gaps)


#: The layers the default job removes from SmolLM2 at the app's sizes (8 of 30; README's quality table).
DEFAULT_JOBS_CUT = [3, 4, 5, 7, 16, 17, 25, 26]


@pytest.mark.slow(seconds=190)
@pytest.mark.timeout(1200)  # the repair and a refit on a real model, on 2 CPU cores
def test_the_repaired_gguf_runs_in_llama_cpp_like_the_repaired_model(smollm2, smollm2_gguf: Path,
                                                                        valid_text: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default repair on a GGUF source, written as a Q4_1 GGUF (the repaired down projections at Q8_0) that
    llama.cpp runs like transformers runs the repaired model in memory, worst token included. Then ``--repair
    refit`` on the same cut: gate, up and down projections of the layers before the cuts replaced, the file still
    runs alike, and the refit brings the state after a cut closer to the original's on rows it held out.

    The cut is given: the one the default job chooses for SmolLM2 at the app's sizes (README, "How good is the
    pruned model"; four runs of removed layers). What is under test is the file and the runtime; bi+'s measured
    choice on a GGUF source is the slow streamed-vs-in-memory test's (tests/core/backends/test_base.py) and
    test_real_model's, and here it took 340 of this test's 475 seconds."""
    import dataclasses

    from shortgpt_desktop.core.cut import chat_guard, mlp_refit, repair
    from shortgpt_desktop.core.engine import Engine, JobSpec

    spec = JobSpec(model=str(smollm2_gguf), calib=[str(valid_text)], samples=8, seq_len=128, eval_windows=4,
                   batch_size=8, device="cpu", dtype="float32", low_memory=False, metric="bi")
    assert spec.repair == "linear"  # the default repair
    engine = Engine()
    engine.adopt(smollm2, spec)
    engine.score(spec)
    plan = engine.plan(layers=DEFAULT_JOBS_CUT)
    assert len(repair.contiguous_runs(plan.removed)) == 4
    adjusted = engine.adjust(spec, plan.removed)
    assert adjusted.repair is not None and adjusted.weights
    result = engine.save(plan, tmp_path / "out", engine.report(plan, spec))
    path = tmp_path / "out" / "out.gguf"
    assert engine.resolved_format == "gguf" and path.is_file() and result.bytes_written <= 0.85 * \
        smollm2_gguf.stat().st_size
    agree, worst, gap = _llama_cpp_against_transformers(smollm2, path, plan.removed, adjusted.weights)
    print(f"repaired SmolLM2 GGUF, llama.cpp vs transformers: agreement {agree:.2f}, max |dlogprob| {worst:.3f}, "
          f"max gap {gap:.3f}")
    # measured (Q4_1 source, the repaired down projections written as Q8_0, llama.cpp's Q8 activations): agreement
    # 1.00, max |dlogprob| over llama.cpp's top 5 at any step 0.28, max gap 0.00 (0.55 on bi+'s choice at these
    # sizes; re-quantized to Q4_1 they gave 0.58, 1.54 and 2.22); the bounds leave room for llama.cpp's rounding
    # on a near tie. Plain BI's cut at these sizes, a more damaged model, gave 0.92, 0.23 and a gap of 0.17: a
    # near tie taken the other way; so did this cut once both sides of each run were refitted (seven projections
    # at Q8_0): 0.92, 0.26 and a gap of 0.21. A token llama.cpp picks may trail transformers' best by as much as
    # the two runtimes' log-probabilities differ anywhere, no more.
    assert agree >= 0.9 and worst < 0.8 and gap < max(0.1, worst), (agree, worst, gap)
    linear = engine.check(spec, plan.removed)

    monkeypatch.setattr(mlp_refit, "MIN_STEPS", 60)  # a short refit: this test is about the file and the runtime
    monkeypatch.setattr(chat_guard, "chat_answers", lambda *args, **kwargs: None)  # every refit kept, to be written
    refit_spec = dataclasses.replace(spec, repair="refit")
    refitted = engine.adjust(refit_spec, plan.removed)
    assert refitted.refit is not None and len(refitted.refit.runs) == len([r for r in refitted.repair.runs
                                                                              if r.repaired])
    report = engine.report(plan, refit_spec)
    result = engine.save(plan, tmp_path / "refit", report)
    path = tmp_path / "refit" / "refit.gguf"
    changed = {name.split(".", 2)[2] for name in report.changed_types}  # Q4_1 → Q8_0, each replaced tensor
    assert changed == {"ffn_down.weight", "ffn_gate.weight", "ffn_up.weight"}, report.changed_types
    # 86.4 of 98.4 MB: the refitted gate and up projections of four layers at Q8_0 add about 3% of the source
    assert result.bytes_written <= 0.89 * smollm2_gguf.stat().st_size
    agree, worst, gap = _llama_cpp_against_transformers(smollm2, path, plan.removed, refitted.weights)
    checked = engine.check(refit_spec, plan.removed)
    print(f"refitted SmolLM2 GGUF, llama.cpp vs transformers: agreement {agree:.2f}, max |dlogprob| {worst:.3f}, "
          f"max gap {gap:.3f}; held-out KL linear {linear.fidelity.mean_kl:.3f} -> refit "
          f"{checked.fidelity.mean_kl:.3f}, perplexity {linear.ppl_after:.2f} -> {checked.ppl_after:.2f}")
    assert agree >= 0.9 and worst < 0.8 and gap < max(0.1, worst), (agree, worst, gap)
    # The refit's own measure: the error of the state after some cut lower on the calibration rows it held out. The
    # held-out text is not asserted at these sizes: from the refitted projection (the default repair), 60 steps on
    # 8 × 128 tokens gave mean KL 0.611 -> 0.623 on these 4 windows; at the app's sizes the refit lowers it (0.493 ->
    # 0.453 from both sides refitted, benchmarks/bench_quality.py).
    runs = refitted.refit.runs
    assert any(r.residual_after < r.residual_before for r in runs), runs


def test_an_mlp_refit_is_written_and_llama_cpp_runs_it_like_the_refitted_model(
        tiny_llama_arrays: tuple[Path, Any], tmp_path: Path) -> None:
    """``--repair refit`` replaces a kept layer's gate, up and down projections: the F32 file gets all three
    back in llama.cpp's layout, and llama.cpp runs it like transformers runs the refitted model."""
    import torch

    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.cut.mlp_refit import fit_mlp_refit
    from shortgpt_desktop.core.cut.repair import fit_linear_repair
    from shortgpt_desktop.core.measure.calibration import TokenSet
    from shortgpt_desktop.core.model.families import resolve_family
    from shortgpt_desktop.core.model.weights_view import weights_view

    path, model = tiny_llama_arrays
    family = resolve_family(model, model.config.to_dict())
    generator = torch.Generator().manual_seed(0)
    # Few ids, many rows: held-out rows a refit can do better on (over the whole vocabulary no step did, and a
    # refit no step improves is not written)
    samples = torch.randint(5, 25, (256, 32), generator=generator).tolist()
    tokens = TokenSet(samples, [], 32, None, 0)
    removed = [1, 4]
    repair = fit_linear_repair(model, family, tokens, removed, batch_size=8)
    refit = fit_mlp_refit(InMemoryStack(model, family), family, tokens, repair, batch_size=8)
    assert [r.layer for r in refit.runs] == [0, 3], refit.runs  # (random ids: what it gains is tested elsewhere)
    assert all(r.kept for r in refit.runs), refit.runs  # each did better on held-out rows, so each is written
    result = gguf_writer.write_pruned_gguf(path, removed, tmp_path / "refit", replaced=refit.tensors)
    # The refitted MLPs (original layers 0 and 3), and the down projections of the kept layers after each run
    # (original 2 and 5), which the linear repair under the refit refitted on these 256 samples.
    assert [c.patched_layer for c in repair.corrections] == [2, 5]
    assert sorted(result.replaced) == sorted([f"blk.{i}.ffn_{p}.weight" for i in (0, 2) for p in ("down", "gate", "up")]
                                             + ["blk.1.ffn_down.weight", "blk.3.ffn_down.weight"])
    prompt = list(range(5, 37))
    steps = LlamaCpp(result.gguf_path).greedy(prompt, 8)
    with weights_view(model, refit.tensors):
        reference = hf_logprobs(model, prompt + [t for t, _ in steps], removed)
    agree, worst = agreement(steps, reference, len(prompt))
    assert agree == 1.0 and worst < 1e-3, worst
    plain = hf_logprobs(model, prompt + [t for t, _ in steps], removed)
    assert float((plain - reference).abs().max()) > 1e-2, "the refit changed nothing llama.cpp could show"


def test_the_writing_bars_start_at_zero_and_end_at_their_totals(tiny_model: Path, tmp_path: Path) -> None:
    """Both writers report 0 before the first tensor (the bar and its clock start there; they started at 1) and
    end at the number of tensors written."""
    from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.model.sources import resolve

    seen: dict[str, list[tuple[int, int]]] = {}

    def progress(stage: str, done: int, total: int, partial: Any = None) -> None:
        seen.setdefault(stage, []).append((done, total))

    gguf_writer.write_pruned_gguf(tiny_gguf(tmp_path / "tiny.gguf"), [2], tmp_path / "gguf-out", progress=progress)
    loaded = load_model(resolve(str(tiny_model)), device="cpu", dtype="float32")
    save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=[2],
                out=tmp_path / "st-out", model=loaded.model, tokenizer=loaded.tokenizer, progress=progress)
    for stage in (gguf_writer.STAGE, "saving"):
        bar = seen[stage]
        assert bar[0][0] == 0 and bar[-1][0] == bar[-1][1] > 0 and len(bar) == bar[-1][1] + 1, (stage, bar)


def test_the_pruned_files_name_counts_its_layers_in_words() -> None:
    """"(pruned to 1 layers)" (a command-line walkthrough); a name pruned again keeps one suffix, either way."""
    assert gguf_writer.pruned_name("Tiny", 1) == "Tiny (pruned to 1 layer)"
    assert gguf_writer.pruned_name("Tiny (pruned to 1 layer)", 3) == "Tiny (pruned to 3 layers)"
    assert gguf_writer.pruned_name("Tiny (pruned to 4 layers)", 1) == "Tiny (pruned to 1 layer)"
