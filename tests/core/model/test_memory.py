"""One memory estimate for the whole tool: what the model panel and the command line say, and the mode choice."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.errors import ResourceError
from shortgpt_desktop.core.model import memory
from shortgpt_desktop.core.model.loading import inspect_model, load_model
from shortgpt_desktop.core.model.memory import RUNTIME_BYTES, SAFETY, MemoryEstimate, choose_mode, estimate_memory
from shortgpt_desktop.core.model.sources import resolve

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bin_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights in the legacy ``pytorch_model.bin`` format."""
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("bin") / "bin-model"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_memory_estimate_and_choice(tiny_model: Path) -> None:
    estimate = estimate_memory(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64)
    params = sum(p.numel() for p in load_model(resolve(str(tiny_model)), "cpu", "float32").model.parameters())
    assert estimate.n_params == params and estimate.weights_bytes == 4 * params
    assert estimate.n_layers == 6
    assert estimate.largest_layer_bytes * 6 + estimate.outside_layers_bytes == estimate.weights_bytes
    assert estimate.hidden_states_bytes == 8 * 64 * 64 * 4
    assert estimate.streamed_device_bytes < estimate.in_memory_device_bytes
    assert choose_mode(estimate) == "memory"
    estimate.available_ram_bytes = estimate.available_device_bytes = int(estimate.streamed_total / 0.85)
    assert not estimate.in_memory_fits
    assert choose_mode(estimate) == "streamed"
    estimate.available_ram_bytes = estimate.available_device_bytes = estimate.hidden_states_bytes // 2
    with pytest.raises(ResourceError, match=r"^The calibration samples' hidden states .* use fewer samples or"):
        choose_mode(estimate)
    # One layer at a time a check holds its windows' states, two a window (the original's and the pruned model's):
    # where they outnumber the samples they are counted, and named when they cannot fit
    checked = estimate_memory(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64, check_windows=100)
    assert checked.hidden_states_bytes == 200 * 64 * 64 * 4 and checked.states_of_windows
    few = estimate_memory(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64, check_windows=4)
    assert few.hidden_states_bytes == estimate.hidden_states_bytes and not few.states_of_windows
    checked.available_ram_bytes = checked.available_device_bytes = checked.hidden_states_bytes // 2
    with pytest.raises(ResourceError, match=r"^The check's held-out windows' hidden states .* fewer held-out windows"):
        choose_mode(checked)
    checked.available_ram_bytes = checked.available_device_bytes = 2 * checked.hidden_states_bytes
    assert checked.streamed_total > checked.available_ram_bytes
    with pytest.raises(ResourceError, match=r"^Even one layer at a time .* a smaller dtype, fewer held-out windows or"):
        memory.check_streamed_fits(checked)


def test_the_model_panel_and_the_command_line_read_the_same_estimate(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "needs" figure is the mode choice's estimate plus the program itself, for the job's own settings."""
    source = resolve(str(tiny_model))
    info = inspect_model(source, "cpu", "float32", samples=8, seq_len=64, batch_size=2)
    estimate = estimate_memory(source, "cpu", "float32", samples=8, seq_len=64, batch_size=2)
    assert info.n_params == estimate.n_params
    assert estimate.peak_bytes == RUNTIME_BYTES + estimate.in_memory_total
    assert estimate.in_memory_total == estimate.weights_bytes + estimate.batch_working_bytes  # safetensors: no copy
    longer = inspect_model(source, "cpu", "float32", samples=8, seq_len=128, batch_size=2)
    assert longer.memory_needed_bytes > info.memory_needed_bytes
    cli.print_model_info(info)
    assert f"needs about {cli.human_bytes(estimate.peak_bytes)}" in capsys.readouterr().err
    # One layer at a time, the figure is that way's own peak, not the whole model's.
    streamed = dataclasses.replace(info, mode="streamed")
    assert streamed.memory_needed_bytes == RUNTIME_BYTES + estimate.streamed_total < estimate.peak_bytes


#: A command-line job in a child process, reporting its own peak resident size when it ends. ``VmHWM`` (the
#: high-water mark of the process's address space), not ``ru_maxrss``: Linux carries the parent's peak into a child
#: across fork and exec (``exec_mmap`` keeps the larger of the two in ``signal->maxrss``), so a child started by a
#: pytest worker that had earlier loaded a model read that worker's peak. This made the SmolLM2 job below "peak"
#: at 3.17-3.18 GB in CI, after the Gemma 3 and SmolLM2 tests had grown the worker, and 2.05-2.11 GB alone.
_MEASURED_JOB = textwrap.dedent("""
    import json, re, sys
    from pathlib import Path
    from shortgpt_desktop import cli
    code = cli.main(sys.argv[1:])
    high_water_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({"code": code, "peak": high_water_kb * 1024}))
""")


def measured_peak(argv: list[str]) -> int:
    """Peak resident bytes of ``shortgpt argv`` run start to end in a fresh process (Linux: ``/proc/self/status``)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, "-c", _MEASURED_JOB, *argv], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, run.stderr[-2000:]
    return int(result["peak"])


#: The tolerance: the estimate may be at most 30% below the measured peak and at most 50% above it. Measured
#: (2 CPU cores, fp32, VmHWM): see the figures printed by the two tests below and the README's limits.
UNDERSTATE, OVERSTATE = 0.3, 1.5


def within_tolerance(estimate: int, peak: int) -> bool:
    return (1 - UNDERSTATE) * peak <= estimate <= OVERSTATE * peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_grown_parent_does_not_inflate_the_childs_measured_peak() -> None:
    """The measure itself: 600 MB touched here must not show in the child's figure (it did with ru_maxrss)."""
    ballast = bytearray(600_000_000)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
    peak = measured_peak(["--help"])
    assert peak < 400_000_000, peak
    del ballast


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_estimate_bounds_the_measured_peak_of_a_job(tiny_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """The "needs about" figure against the peak resident memory of the very job, run in a child process."""
    info = inspect_model(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64, batch_size=4)
    peak = measured_peak(["prune", str(tiny_model), "--layers", "2", "--samples", "8", "--seq-len", "64",
                          "--batch-size", "4", "--calib", str(small_calib), "--device", "cpu", "--dtype", "float32",
                          "--out", str(tmp_path / "out"), "-q"])
    print(f"tiny prune job: measured peak {peak / 1e9:.2f} GB, estimated {info.memory_needed_bytes / 1e9:.2f} GB")
    assert within_tolerance(info.memory_needed_bytes, peak), (info.memory_needed_bytes, peak)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_estimate_bounds_the_measured_peak_of_a_healing_job(small_calib: Path, tmp_path: Path) -> None:
    """Healing keeps every layer's activations for its backward pass and hands back a copy of the weights it
    changed. On a model shaped so that this outweighs the rest (16 layers, a wide MLP, 4 × 256 tokens a step) the
    estimate without healing's term falls far short of the job's peak (0.52 GB against 1.05-1.14 GB, measured),
    so the case tells the term's presence."""
    from shortgpt_desktop.core.testing.tiny_models import HEALING_HEAVY_LLAMA, build_tiny_model

    folder = build_tiny_model(tmp_path / "deep", "llama", HEALING_HEAVY_LLAMA)
    sizes = dict(samples=4, seq_len=256, batch_size=4)
    healing = inspect_model(resolve(str(folder)), "cpu", "float32", **sizes, heal_steps=1)
    plain = inspect_model(resolve(str(folder)), "cpu", "float32", **sizes)
    peak = measured_peak(["prune", str(folder), "--layers", "2", "--metric", "bi", "--repair", "none", "--no-eval",
                          "--heal", "1", "--samples", "4", "--seq-len", "256", "--batch-size", "4", "--calib",
                          str(small_calib), "--device", "cpu", "--dtype", "float32", "--out", str(tmp_path / "out"),
                          "-q"])
    print(f"healing job: measured peak {peak / 1e9:.2f} GB, estimated {healing.memory_needed_bytes / 1e9:.2f} GB "
          f"({plain.memory_needed_bytes / 1e9:.2f} GB without healing's term)")
    assert healing.memory.heal_step_bytes > 0 and healing.memory.heal_held_bytes > 0
    assert within_tolerance(healing.memory_needed_bytes, peak), (healing.memory_needed_bytes, peak)
    assert not within_tolerance(plain.memory_needed_bytes, peak), (plain.memory_needed_bytes, peak)


@pytest.mark.slow(seconds=119)
@pytest.mark.timeout(1200)  # a whole job on SmolLM2 on 2 CPU cores: about 4 minutes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_estimate_bounds_a_real_models_measured_peak(smollm2_gguf: Path, tmp_path: Path) -> None:
    from shortgpt_desktop.core import defaults

    quick = defaults.PRESETS["quick"]
    info = inspect_model(resolve(str(smollm2_gguf)), "cpu", "float32", samples=quick.samples, seq_len=quick.seq_len,
                         batch_size=defaults.BATCH_SIZE)
    argv = ["prune", str(smollm2_gguf), "--layers", "8", "--metric", "bi", "--repair", "none", "--preset", "quick",
            "--device", "cpu", "--dtype", "float32", "-q"]
    peak = measured_peak([*argv, "--out", str(tmp_path / "out")])
    print(f"SmolLM2 prune --preset quick: measured peak {peak / 1e9:.2f} GB, estimated "
          f"{info.memory_needed_bytes / 1e9:.2f} GB")
    assert within_tolerance(info.memory_needed_bytes, peak), (info.memory_needed_bytes, peak)


def test_the_default_recipes_estimate_bounds_what_its_caches_really_hold(
        tiny_model: Path, small_calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bi+'s state cache and the repair's kept original states are what a default job holds beside a plain one
    (SmolLM2's default job peaked at 2.71 GB where the plain job's estimate said 1.58). The estimate counts them
    (``recipe_bytes``): it must not say less than a real default job's caches held at their fullest, nor
    several times more; a plain job's estimate counts none of it, and the engine asks for the spec's recipe."""
    from shortgpt_desktop.core.cut import candidates, repair
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.pipeline import JobSpec
    from shortgpt_desktop.jobs import run_prune

    held = {"candidates": 0, "kept": 0, "streams": 0, "rows": 0}
    live: list[repair.OriginalStates] = []
    measure, advance, fit = candidates.CandidateRunner.measure, repair.OriginalStates.advance, repair.fit_linear_repair
    statistics = repair._statistics

    def statistics_held(run, observer, *args, **kwargs):
        """The patched layer's rows at their fullest (the projection's inputs, when it is refitted whole) and the
        sums made of them."""
        rows = sum(int(t.numel()) * t.element_size() for batch in observer.rows for t in batch[:2])
        stats = statistics(run, observer, *args, **kwargs)
        sums = [x for x in (stats, stats.held) if x is not None]
        held["rows"] = max(held["rows"], rows + sum(8 * int(x.mtm.numel() + x.mtd.numel()) for x in sums))
        return stats

    def measure_held(self, sets, *args, **kwargs):
        results = measure(self, sets, *args, **kwargs)
        states = sum(len(v.states or {}) for v in self._measured.values())
        held["candidates"] = max(held["candidates"], self._per_layer * (len(self.cache) + 1 + states))
        return results

    def advance_held(self, *args, **kwargs):
        if self not in live:
            live.append(self)
        advance(self, *args, **kwargs)
        held["kept"] = max(held["kept"], sum(s.kept_bytes for s in live))

    def fit_held(model, family, token_set, *args, **kwargs):
        stack = kwargs.get("stack")
        if stack is not None:
            batches = stack.capture(token_set.samples, token_set.pad_id, args[1] if len(args) > 1 else 4)
            size = sum(int(b.hidden.numel()) * b.hidden.element_size() for b in batches)
            held["streams"] = max(held["streams"], 3 * size)
        return fit(model, family, token_set, *args, **kwargs)

    monkeypatch.setattr(candidates.CandidateRunner, "measure", measure_held)
    monkeypatch.setattr(repair.OriginalStates, "advance", advance_held)
    monkeypatch.setattr(repair, "fit_linear_repair", fit_held)  # the engine and bi+ import it when they fit
    monkeypatch.setattr(repair, "_statistics", statistics_held)
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=16, seq_len=64, eval_windows=4,
                   batch_size=4, device="cpu", dtype="float32", count=2, out=str(tmp_path / "out"), prompt="")
    engine = Engine()
    run_prune(engine, spec)
    assert held["candidates"] and held["kept"] and held["streams"] and held["rows"], held
    estimate = engine.memory_estimate(spec)
    really = held["candidates"] + held["kept"] + held["streams"] + held["rows"]
    assert really <= estimate.recipe_bytes <= 4 * really, (held, estimate.recipe_bytes)
    plain = dataclasses.replace(spec, metric="bi", repair="none")
    assert engine.memory_estimate(plain).recipe_bytes == 0
    assert estimate.in_memory_total - engine.memory_estimate(plain).in_memory_total == estimate.recipe_bytes
    assert estimate.peak_bytes - engine.memory_estimate(plain).peak_bytes == estimate.recipe_bytes
    healed = engine.memory_estimate(dataclasses.replace(spec, heal_steps=3))  # the engine asks with the steps
    assert healed.heal_step_bytes > 0 and healed.heal_held_bytes > 0 and healed.recipe_bytes == estimate.recipe_bytes
    assert healed.peak_bytes >= estimate.peak_bytes and estimate.heal_step_bytes == estimate.heal_held_bytes == 0


def test_the_recipes_caches_are_counted_at_their_budgets_at_most() -> None:
    from shortgpt_desktop.core import defaults
    from shortgpt_desktop.core.model.memory import recipe_bytes

    huge = recipe_bytes(samples=4096, seq_len=8192, hidden=8192, n_layers=80, per=4, refines=True, repairs=True)
    streams = 3 * int(4096 * 1.25) * 8192 * 8192 * 4
    assert huge == streams + defaults.CANDIDATE_CACHE_BUDGET + 2 * defaults.ORIGINAL_STATES_BUDGET
    assert recipe_bytes(16, 64, 32, 6, 4, refines=False, repairs=False) == 0
    assert 0 < recipe_bytes(16, 64, 32, 6, 4, refines=True, repairs=False) < recipe_bytes(16, 64, 32, 6, 4, True, True)


def test_a_whole_projection_refit_counts_its_inputs_and_sums_up_to_the_width_it_is_used_at() -> None:
    from shortgpt_desktop.core import defaults
    from shortgpt_desktop.core.model.memory import ffn_width, intermediate_size, recipe_bytes

    base = recipe_bytes(128, 512, 576, 30, 4, refines=True, repairs=True)
    wide = recipe_bytes(128, 512, 576, 30, 4, refines=True, repairs=True, ffn=1536)
    assert wide - base == 160 * 512 * 1536 * 4 + 5 * 1536**2 * 8  # the chat answers' quarter more samples
    past = defaults.MAX_PROJECTION_INPUTS + 1
    assert recipe_bytes(128, 512, 576, 30, 4, refines=True, repairs=True, ffn=past) == base  # the map instead
    assert ffn_width({"intermediate_size": 1536}, 576) == 1536
    assert ffn_width({"model_type": "gpt2", "n_inner": None}, 64) == 256
    assert ffn_width({"ffn_dim": 96}, 32) == 96
    assert ffn_width({"intermediate_size": [64, 128]}, 32) == 128
    assert ffn_width({"model_type": "falcon", "ffn_hidden_size": None}, 64) == 256
    assert ffn_width({"model_type": "gemma3_text", "intermediate_size": 2048}, 640) == 0  # a map through the norm
    assert intermediate_size({"model_type": "gemma3_text", "intermediate_size": 2048}, 640) == 2048  # its MLP


def test_one_layer_at_a_time_counts_the_layer_it_reads_beside_the_states(tmp_path: Path) -> None:
    """The streamed figure holds the samples' hidden states and, beside them, the layer being read from the file:
    a model whose layers are wider (the same hidden size and text, a wider MLP) needs that much more room one layer
    at a time. Left out, a job that then ran out of memory was accepted one layer at a time."""
    from shortgpt_desktop.core.testing.tiny_models import TINY_LLAMA, build_tiny_model

    narrow, wide = (estimate_memory(resolve(str(build_tiny_model(tmp_path / name, "llama", {**TINY_LLAMA, **extra}))),
                                    "cpu", "float32", samples=8, seq_len=64, batch_size=4)
                    for name, extra in (("narrow", {}), ("wide", {"intermediate_size": 512})))
    assert wide.largest_layer_bytes > narrow.largest_layer_bytes
    assert wide.streamed_ram_bytes - narrow.streamed_ram_bytes == wide.largest_layer_bytes - narrow.largest_layer_bytes
    assert narrow.streamed_ram_bytes >= narrow.hidden_states_bytes + narrow.largest_layer_bytes


def test_the_healing_teacher_holds_the_final_states_of_every_sample_it_reads() -> None:
    """The original's final states, one per token of every batch healing reads (two steps of four samples here),
    were counted once per step instead of once per sample."""
    from shortgpt_desktop.core.model.memory import healing_bytes

    shape = dict(hidden=64, attention=64, intermediate=128, vocab=100, layers=2)
    held = healing_bytes(samples=32, seq_len=128, batch=4, heal_steps=2, shape=shape, layers_bytes=0, per=4,
                         compute_bytes=4)
    assert held.teacher == 8 * 128 * 64 * 4


def _estimate(device: str, **sizes: int) -> MemoryEstimate:
    values = dict(device=device, dtype="float32", n_layers=4, n_params=0, largest_layer_bytes=0,
                  outside_layers_bytes=0, weights_bytes=0, loading_bytes=0, hidden_states_bytes=0,
                  batch_working_bytes=0, in_memory_device_bytes=0, in_memory_ram_bytes=0, streamed_device_bytes=0,
                  streamed_ram_bytes=0, available_ram_bytes=0, available_device_bytes=0)
    values.update(sizes)
    return MemoryEstimate(**values)


def test_on_a_cpu_one_layer_at_a_time_fits_only_with_its_ram_side_counted() -> None:
    """On a CPU the device is the RAM: the streamed figure's states and caches (its RAM side) and its layer's work
    (its device side) share the free memory. Counting the device side alone accepted a job that needs several times
    the free memory."""
    gb = 1024**3
    tight = _estimate("cpu", streamed_device_bytes=gb // 2, streamed_ram_bytes=3 * gb, hidden_states_bytes=gb,
                      available_ram_bytes=2 * gb, available_device_bytes=2 * gb, in_memory_device_bytes=8 * gb)
    assert not tight.streamed_fits
    with pytest.raises(memory.ResourceError, match=r"one layer at a time this model needs 3\.8 GB but only 2\.1 GB"):
        memory.choose_mode(tight)
    room = dataclasses.replace(tight, available_ram_bytes=int(3.5 * gb / SAFETY) + 1,
                               available_device_bytes=int(3.5 * gb / SAFETY) + 1)
    assert room.streamed_fits and memory.choose_mode(room) == "streamed"


@pytest.mark.parametrize(("device_need", "ram_need", "fits"), [(1, 1, True), (3, 1, False), (1, 3, False)])
def test_on_a_gpu_both_the_gpus_memory_and_the_ram_must_hold_their_share(device_need: int, ram_need: int,
                                                                        fits: bool) -> None:
    """A GPU job needs its device figure on the GPU and its RAM figure (the load's CPU copy, the streamed states) in
    RAM: either one short is out of memory, in either mode."""
    gb = 1024**3
    est = _estimate("cuda:0", in_memory_device_bytes=device_need * gb, in_memory_ram_bytes=ram_need * gb,
                    streamed_device_bytes=device_need * gb, streamed_ram_bytes=ram_need * gb,
                    available_ram_bytes=2 * gb, available_device_bytes=2 * gb)
    assert est.in_memory_fits is fits and est.streamed_fits is fits


def test_a_gpus_free_memory_is_read_from_the_gpu_not_the_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil
    import torch

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("V", (), {"available": 64 * 1024**3})())
    asked: list[int] = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: asked.append(index) or (6 * 1024**3, 80 * 1024**3))
    assert memory.available_memory("cuda:1") == (64 * 1024**3, 6 * 1024**3) and asked == [1]
    assert memory.available_memory("cpu") == (64 * 1024**3, 64 * 1024**3)


def test_a_model_that_cannot_run_one_layer_at_a_time_never_fits_that_way() -> None:
    """A legacy .bin checkpoint: its streamed figures are zero, which must not read as 'fits'."""
    est = _estimate("cpu", not_streamable="Layer-by-layer scoring needs safetensors or GGUF weights.",
                    in_memory_device_bytes=10 * 1024**3, available_ram_bytes=1024**3, available_device_bytes=1024**3)
    assert not est.streamed_fits
    with pytest.raises(memory.ResourceError, match="cannot run one layer at a time"):
        memory.choose_mode(est)


def test_one_layer_at_a_time_counts_the_recipes_caches_too(tiny_model) -> None:
    """bi+'s state cache and the repair's streams live in RAM one layer at a time as they do in memory: left out of
    the streamed figure, a default job that then ran out of memory was accepted one layer at a time."""
    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(tiny_model))
    plain = estimate_memory(source, "cpu", "float32", samples=16, seq_len=64, batch_size=4)
    default = estimate_memory(source, "cpu", "float32", samples=16, seq_len=64, batch_size=4, refines=True,
                              repairs=True)
    assert default.recipe_bytes > 0
    assert default.streamed_ram_bytes - plain.streamed_ram_bytes == default.recipe_bytes
    assert default.streamed_device_bytes == plain.streamed_device_bytes


def test_a_batchs_work_and_its_logits_are_counted_in_both_ways(tiny_model) -> None:
    """A batch's activations (about eight hidden-state copies) and, where a pass runs the head, three float32 copies
    of its logits; one layer at a time the layer, the weights outside the layers and that work are held at once,
    and beside the states a batch's outputs, the captured rotary arguments and the layer being read."""
    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(tiny_model))
    kwargs = dict(samples=8, seq_len=64, batch_size=4)
    est = estimate_memory(source, "cpu", "float32", **kwargs)
    hooked = estimate_memory(source, "cpu", "float32", **kwargs, logits=False)
    import json

    config = json.loads((tiny_model / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    assert hooked.batch_working_bytes == 4 * 64 * 8 * hidden * 4
    assert est.batch_working_bytes - hooked.batch_working_bytes == 4 * 64 * 3 * 4 * vocab
    assert est.streamed_device_bytes == est.largest_layer_bytes + est.outside_layers_bytes + est.batch_working_bytes
    assert est.streamed_ram_bytes == (est.hidden_states_bytes + 4 * 64 * hidden * 4 + 8 * 64 * head_dim * 2 * 4
                                      + est.largest_layer_bytes)
    # The check's windows: the batch is as large as the windows allow, though the samples are fewer.
    checked = estimate_memory(source, "cpu", "float32", samples=2, seq_len=64, batch_size=4, check_windows=8)
    few = estimate_memory(source, "cpu", "float32", samples=2, seq_len=64, batch_size=4)
    assert checked.batch_working_bytes == 2 * few.batch_working_bytes


def test_a_gguf_counts_its_dequantised_copy_while_loading_and_its_float32_read_buffer(tiny_q4_gguf) -> None:
    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    source = resolve(str(tiny_q4_gguf))
    est = {}
    for dtype in ("float32", "bfloat16"):
        est[dtype] = e = estimate_memory(source, "cpu", dtype, samples=8, seq_len=64, batch_size=4)
        assert e.loading_bytes == e.weights_bytes > 0
        assert e.in_memory_total == e.weights_bytes + max(e.loading_bytes, e.batch_working_bytes)
    small = estimate_memory(source, "cpu", "float32", samples=1, seq_len=8, batch_size=1, logits=False)
    assert small.loading_bytes > small.batch_working_bytes  # the load's copy is the larger: it sets the total
    assert small.in_memory_total == 2 * small.weights_bytes
    # The layer is read dequantised to float32 whatever the dtype: the streamed RAM differs between float32 and
    # bfloat16 by the states and a batch's outputs (half of the samples here) alone.
    f32, b16 = est["float32"], est["bfloat16"]
    states = f32.hidden_states_bytes - b16.hidden_states_bytes
    assert f32.streamed_ram_bytes - b16.streamed_ram_bytes == states + states // 2


def test_a_projection_exactly_as_wide_as_the_limit_is_refitted_whole_and_counted() -> None:
    """Llama 2 7B's MLP is 11,008 wide, the limit itself: its repair refits the projection whole (refits_whole
    takes the limit), so its inputs and 5 × 11,008² float64 sums (4.8 GB) must be counted."""
    from shortgpt_desktop.core import defaults
    from shortgpt_desktop.core.model.families import family_for_model_type, refits_whole
    from shortgpt_desktop.core.model.memory import recipe_bytes

    limit = defaults.MAX_PROJECTION_INPUTS
    assert refits_whole(family_for_model_type("llama"), limit)
    base = recipe_bytes(128, 512, 4096, 32, 2, refines=True, repairs=True)
    at = recipe_bytes(128, 512, 4096, 32, 2, refines=True, repairs=True, ffn=limit)
    assert at - base == 160 * 512 * limit * 2 + 5 * limit**2 * 8


def test_on_a_gpu_the_recipe_sits_on_the_gpu_and_a_ggufs_load_copies_in_ram(tiny_q4_gguf,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU needed: the estimate reads the headers only. On a GPU the whole model, a batch's work and the recipe's
    caches are on the GPU; the RAM holds the load (the weights, and a GGUF's dequantised copy beside them)."""
    import torch

    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(memory, "available_memory", lambda device: (8 * 1024**3, 4 * 1024**3))
    source = resolve(str(tiny_q4_gguf))
    est = estimate_memory(source, "cuda", "float32", samples=8, seq_len=64, batch_size=4, refines=True, repairs=True)
    assert est.recipe_bytes > 0 and not est.on_cpu
    assert est.in_memory_device_bytes == est.weights_bytes + est.batch_working_bytes + est.recipe_bytes
    assert est.in_memory_ram_bytes == 2 * est.weights_bytes
    assert est.available_device_bytes == 4 * 1024**3 and est.available_ram_bytes == 8 * 1024**3


@pytest.mark.parametrize("short", ["gpu", "ram"])
def test_a_gpu_healing_refusal_names_the_memory_that_is_short(short: str) -> None:
    gb = 1024**3
    est = _estimate("cuda:0", in_memory_device_bytes=(6 if short == "gpu" else 1) * gb,
                    in_memory_ram_bytes=(1 if short == "gpu" else 12) * gb,
                    available_device_bytes=4 * gb, available_ram_bytes=8 * gb)
    said = memory.healing_does_not_fit(est)
    if short == "gpu":
        assert "of memory on cuda:0 but 4.3 GB is free" in said and "RAM" not in said
    else:
        assert "of RAM but 8.6 GB is free" in said and "cuda:0" not in said


def test_one_layer_at_a_time_on_a_gpu_says_the_gpus_free_memory() -> None:
    gb = 1024**3
    est = _estimate("cuda:0", streamed_device_bytes=6 * gb, streamed_ram_bytes=gb, hidden_states_bytes=gb // 2,
                    in_memory_device_bytes=20 * gb, available_device_bytes=4 * gb, available_ram_bytes=64 * gb)
    with pytest.raises(memory.ResourceError, match=r"needs 7.5 GB but only 4.3 GB of memory on cuda:0 is free"):
        memory.choose_mode(est)


def test_a_healing_step_holds_what_was_measured_per_token_and_layer() -> None:
    """SmolLM2's shape under autocast to bfloat16: 33.8 kB per token and layer (30.5 kB measured), three copies of
    the logits in bfloat16, and a bfloat16 copy of the layers and the head; on 2 samples a batch of 4 holds 2."""
    from shortgpt_desktop.core.model.memory import healing_bytes

    shape = dict(hidden=576, attention=576, intermediate=1536, vocab=49152, layers=30)
    layers_bytes = 30 * 3_980_000 * 4
    held = healing_bytes(samples=2, seq_len=512, batch=4, heal_steps=3, shape=shape, layers_bytes=layers_bytes,
                         per=4, compute_bytes=2)
    tokens = 2 * 512
    casts = (30 * 3_980_000 + 49152 * 576) * 2
    assert held.step == tokens * 30 * 33_792 + 3 * tokens * 49152 * 2 + casts
    assert held.held == layers_bytes


def test_a_healing_job_in_memory_counts_its_step_with_its_teacher_and_two_copies_of_the_healed_weights(
        tiny_model) -> None:
    from shortgpt_desktop.core.model.memory import estimate_memory
    from shortgpt_desktop.core.model.sources import resolve

    est = estimate_memory(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64, batch_size=4,
                          heal_steps=2)
    assert est.heal_step_bytes > est.hidden_states_bytes > 0  # a step holds more than the samples' states
    assert est.in_memory_total == est.weights_bytes + max(est.batch_working_bytes, est.heal_step_bytes,
                                                          est.batch_working_bytes + 2 * est.heal_held_bytes)


def test_low_memory_asked_for_a_bin_checkpoint_says_it_cannot_run_one_layer_at_a_time(bin_model: Path) -> None:
    """A legacy .bin model with --low-memory (or the window's Low memory) was told "Even one layer at a time this
    model needs 0 B but only 23.0 GB of memory is free": its streamed figures are zero because it cannot stream."""
    from shortgpt_desktop.core.engine import Engine
    from shortgpt_desktop.core.pipeline import JobSpec

    spec = JobSpec(model=str(bin_model), calib=[], samples=8, seq_len=64, device="cpu", dtype="float32",
                   metric="bi", repair="none", low_memory=True)
    engine = Engine()
    engine.open(spec)
    with pytest.raises(ResourceError, match=r"^This model cannot run one layer at a time: .*\.bin format; run it "
                                            r"whole \(without low memory\)\.$"):
        engine.mode_for(spec)


def test_a_padded_batch_whose_attention_would_not_fit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two samples of 100,000 tokens, one cut short where the text ran out: padded, the batch's attention took 23 GB
    and the system killed the job, where the estimate said 830 MB (a walkthrough). Refused in one sentence; even
    samples, and a sample in a batch of its own, need no padding and pass."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.errors import ResourceError
    from shortgpt_desktop.core.measure.calibration import TokenSet
    from shortgpt_desktop.core.model import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: (10**9, 10**9))
    config = SimpleNamespace(num_attention_heads=4)

    def tokens(*lengths: int) -> TokenSet:
        return TokenSet([[1] * n for n in lengths], [[1] * 64], 100_000, None, 0)

    with pytest.raises(ResourceError, match=r"^The text gives a sample of 23,346 tokens beside samples of 100,000: a "
                                            r"batch that holds it is padded, and its attention at this length needs "
                                            r"about 340\.0 GB, more than the 1\.0 GB free"):
        memory.refuse_padded_batches(tokens(100_000, 23_346), 2, config, "cpu")
    memory.refuse_padded_batches(tokens(100_000, 100_000), 2, config, "cpu")  # even: no mask is built
    memory.refuse_padded_batches(tokens(100_000, 23_346), 1, config, "cpu")
    memory.refuse_padded_batches(tokens(256, 200), 2, config, "cpu")  # padded, and small: 1.3 MB
