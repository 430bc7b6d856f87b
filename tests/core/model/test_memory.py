"""One memory estimate for the whole tool: what the model panel and the command line say, and the mode choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.errors import ResourceError
from shortgpt_desktop.core.model.loading import inspect_model, load_model
from shortgpt_desktop.core.model.memory import RUNTIME_BYTES, choose_mode, estimate_memory
from shortgpt_desktop.core.model.sources import resolve


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
    with pytest.raises(ResourceError, match="hidden states"):
        choose_mode(estimate)


def test_the_model_panel_and_the_command_line_read_the_same_estimate(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "needs" figure is the mode choice's estimate plus the program itself, for the job's own settings."""
    source = resolve(str(tiny_model))
    info = inspect_model(source, "cpu", "float32", samples=8, seq_len=64, batch_size=2)
    estimate = estimate_memory(source, "cpu", "float32", samples=8, seq_len=64, batch_size=2)
    assert info.n_params == estimate.n_params
    assert info.memory_needed_bytes == estimate.peak_bytes == RUNTIME_BYTES + estimate.in_memory_total
    assert estimate.in_memory_total == estimate.weights_bytes + estimate.batch_working_bytes  # safetensors: no copy
    longer = inspect_model(source, "cpu", "float32", samples=8, seq_len=128, batch_size=2)
    assert longer.memory_needed_bytes > info.memory_needed_bytes
    cli.print_model_info(info)
    assert f"needs about {cli.human_bytes(estimate.peak_bytes)}" in capsys.readouterr().err


def test_legacy_bin_weights_are_counted_and_run_in_memory_only(tiny_model: Path, bin_model: Path) -> None:
    safetensors = estimate_memory(resolve(str(tiny_model)), "cpu", "float32", samples=8, seq_len=64)
    legacy = estimate_memory(resolve(str(bin_model)), "cpu", "float32", samples=8, seq_len=64)
    # A .bin's size is its tensors plus the pickle's bookkeeping: counted from the size, within a few percent.
    assert legacy.n_params == pytest.approx(safetensors.n_params, rel=0.05)
    assert legacy.weights_bytes == 4 * legacy.n_params
    assert ".bin" in legacy.not_streamable and not legacy.streamed_fits
    assert choose_mode(legacy) == "memory"
    legacy.available_ram_bytes = legacy.available_device_bytes = int(legacy.in_memory_total / 0.95)
    with pytest.raises(ResourceError, match=r"cannot run one layer at a time: .*legacy \.bin"):
        choose_mode(legacy)


def test_a_legacy_bin_model_prunes_from_the_command_line(bin_model: Path, small_calib: Path, tmp_path: Path) -> None:
    """The engine's mode choice reads the estimate before loading; a checkpoint the layer reader cannot take
    must still run in memory (it used to stop with the streaming reader's refusal)."""
    out = tmp_path / "out"
    assert cli.main(["prune", str(bin_model), "--remove", "2", "--calib", str(small_calib), "--samples", "4",
                     "--seq-len", "32", "--no-eval", "-q", "--out", str(out)]) == 0
    reloaded = load_model(resolve(str(out)), "cpu", "float32")
    assert reloaded.n_layers == 5
