"""Error paths: each mistake is one sentence with a hint each front end words its own way; a bug stays a bug."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from shortgpt_desktop import cli
from shortgpt_desktop.core.errors import Hint, ModelSourceError, OutputError, ResourceError, UnsupportedModelError
from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.measure.scoring import measure_layers
from shortgpt_desktop.core.model import loading
from shortgpt_desktop.core.model.devices import resolve_device, resolve_dtype
from shortgpt_desktop.core.model.loading import inspect_model, load_model
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.gui.messages import user_message


def _with_config(tiny_model: Path, folder: Path, **changes: object) -> Path:
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_is_refused_until_allowed_and_each_face_says_how(tiny_model: Path, tmp_path: Path) -> None:
    folder = _with_config(tiny_model, tmp_path / "custom", model_type="my_custom_lm",
                          architectures=["MyCustomLM"], auto_map={"AutoModelForCausalLM": "modeling.MyCustomLM"})
    with pytest.raises(UnsupportedModelError) as refused:
        inspect_model(resolve(str(folder)), "cpu", "float32")  # inspection does not wave it through either
    assert refused.value.hint is Hint.TRUST_REMOTE_CODE
    assert "--" not in str(refused.value)  # the engine names no flag
    assert "--trust-remote-code" in cli.error_line(refused.value)
    assert "Run the model's own code" in user_message(refused.value)
    # Allowed, the gate opens (inspection reads headers only: no code runs).
    assert inspect_model(resolve(str(folder)), "cpu", "float32", trust_remote_code=True).n_layers == 6


def test_an_encoder_model_is_refused_before_loading(tiny_model: Path, tmp_path: Path) -> None:
    folder = _with_config(tiny_model, tmp_path / "bert", model_type="bert", architectures=["BertModel"])
    with pytest.raises(UnsupportedModelError, match="is an encoder model"):
        inspect_model(resolve(str(folder)), "cpu", "float32")
    # T5 and the like were "an encoder model" too, where the README's Limits say encoder-decoder
    folder = _with_config(tiny_model, tmp_path / "t5", model_type="t5", architectures=["T5ForConditionalGeneration"],
                          is_encoder_decoder=True)
    with pytest.raises(UnsupportedModelError, match=r"^T5ForConditionalGeneration \(t5\) is an encoder-decoder model: "
                                                    "only decoder-only"):
        inspect_model(resolve(str(folder)), "cpu", "float32")
    folder = _with_config(tiny_model, tmp_path / "bart", model_type="bart", architectures=["BartModel"])
    with pytest.raises(UnsupportedModelError, match=r"^BartModel \(bart\) is an encoder-decoder model"):  # by its type
        inspect_model(resolve(str(folder)), "cpu", "float32")


def test_a_config_that_is_not_an_object_is_refused_before_loading(tiny_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "listed")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelSourceError, match=r"config\.json is not a JSON object, so it is not a model config\.$"):
        inspect_model(resolve(str(folder)), "cpu", "float32")


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == "cpu" and resolve_device("CPU") == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto") in ("cpu", "mps")
        with pytest.raises(ResourceError) as no_cuda:
            resolve_device("cuda:0")
        assert no_cuda.value.hint is Hint.USE_CPU and "--device cpu" in cli.error_line(no_cuda.value)
    with pytest.raises(ResourceError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bf16", "cpu") == "bfloat16" and resolve_dtype("fp16", "cpu") == "float16"
    with pytest.raises(ResourceError, match="Unknown dtype 'int4'"):
        resolve_dtype("int4", "cpu")


def test_out_of_memory_is_a_sentence(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    tokens = build_token_set(loaded.tokenizer, ["some text to score " * 50], samples=2, seq_len=16)

    def oom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loaded.model.model.layers[2], "forward", oom)
    with pytest.raises(ResourceError) as caught:
        measure_layers(loaded.model, loaded.family, tokens, batch_size=2)
    assert "Out of memory on cpu with batch size 2" in str(caught.value)
    assert caught.value.hint is Hint.SMALLER_BATCH and "--batch-size" in cli.error_line(caught.value)


def test_weights_that_do_not_fit_the_config_are_a_sentence(tiny_model: Path, tmp_path: Path) -> None:
    folder = _with_config(tiny_model, tmp_path / "mismatch", hidden_size=128, intermediate_size=256)
    with pytest.raises(ModelSourceError, match="could not be loaded"):
        load_model(resolve(str(folder)), "cpu", "float32")


def test_a_model_missing_its_own_code_is_named_and_told_what_to_do(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers ends "…has no file named configuration_x.py" with "Checkout 'https://huggingface.co/<folder>/
    tree/main' for available files", a page built from the folder it loads: a Hub page for a folder on this
    computer, and for a downloaded model one named after its cache folder (huggingface.co//home/…/snapshots/…)."""
    from tests.core.model.test_sources import fill_hub_cache

    folder = _with_config(tiny_model, tmp_path / "custom", model_type="xcustom",
                          auto_map={"AutoConfig": "configuration_x.XConfig",
                                    "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    with pytest.raises(ModelSourceError) as caught:
        load_model(resolve(str(folder)), "cpu", "float32", trust_remote_code=True)
    assert str(caught.value) == (f"The model in {folder} could not be loaded: {folder} does not appear to have a file "
                                 "named configuration_x.py; put the model's own code (configuration_x.py) in its "
                                 "folder."), caught.value
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/custom", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    source = resolve("someone/custom")
    assert source.kind == "hub"
    with pytest.raises(ModelSourceError) as caught:
        load_model(source, "cpu", "float32", trust_remote_code=True)
    assert str(caught.value) == ("The model in someone/custom could not be loaded: someone/custom does not appear to "
                                 "have a file named configuration_x.py; the model's page, https://huggingface.co/"
                                 "someone/custom/tree/main, lists the files it has."), caught.value
    assert str(snapshot) not in str(caught.value)
    with pytest.raises(ModelSourceError) as caught:  # the page is the id's, not the text typed (a review)
        load_model(resolve("someone/custom@main"), "cpu", "float32", trust_remote_code=True)
    assert "the model's page, https://huggingface.co/someone/custom/tree/main, lists" in str(caught.value)


def test_a_config_field_of_the_wrong_type_is_named_in_the_sentence(tiny_model: Path, tmp_path: Path) -> None:
    """huggingface_hub's config validation puts its reason on a second line, under "Validation error for field"."""
    folder = _with_config(tiny_model, tmp_path / "typo", rms_norm_eps="tiny")
    with pytest.raises(ModelSourceError, match=r"could not be loaded: Field 'rms_norm_eps' expected float, got str "
                                               r"\(value: 'tiny'\)\.$"):
        load_model(resolve(str(folder)), "cpu", "float32")


def test_a_checkpoint_missing_some_weights_is_refused_naming_them(tiny_model: Path, tmp_path: Path) -> None:
    """transformers fills what a checkpoint lacks with random values and says so only in a log line."""
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_model, tmp_path / "gaps")
    tensors = load_file(folder / "model.safetensors")
    for name in ("model.norm.weight", "model.layers.3.mlp.down_proj.weight"):
        del tensors[name]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelSourceError, match=r"^The checkpoint in .*gaps has no weights for "
                                               r"model\.layers\.3\.mlp\.down_proj\.weight and 1 other parameter, "
                                               r"so the model would run with random values there\.$"):
        load_model(resolve(str(folder)), "cpu", "float32")


def test_a_tensor_of_the_wrong_shape_is_said_plainly(tiny_model: Path, tmp_path: Path) -> None:
    """transformers' "You set `ignore_mismatched_sizes` to `False`... look at the above report" points at a report
    the user never sees."""
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_model, tmp_path / "transposed")
    tensors = load_file(folder / "model.safetensors")
    name = "model.layers.2.mlp.down_proj.weight"
    tensors[name] = tensors[name].t().contiguous()  # as many values, the wrong shape
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelSourceError, match=r"^The model in .*transposed could not be loaded: its weights do not "
                                               r"have the sizes its config gives\.$"):
        load_model(resolve(str(folder)), "cpu", "float32")


@pytest.mark.parametrize("failure", [
    MemoryError(),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
    RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 4194304 bytes."),
    OSError("Error while deserializing header: Cannot allocate memory (os error 12)"),
], ids=["MemoryError", "ENOMEM", "torch-cpu-allocator", "safetensors-mmap"])
def test_running_out_of_memory_while_loading_says_so_and_points_to_low_memory(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    import transformers

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", out_of_memory)
    with pytest.raises(ResourceError) as caught:
        loading.load_model(resolve(str(tiny_model)), "cpu", "float32")
    assert str(caught.value) == "Not enough memory on cpu to load the whole model in float32."
    assert caught.value.hint is Hint.LOW_MEMORY
    assert cli.error_line(caught.value).endswith("add --low-memory to score it one layer at a time.")
    assert "Low memory" in user_message(caught.value)


def test_an_unknown_failure_while_loading_keeps_its_traceback(tiny_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug, not the user's mistake")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(ZeroDivisionError):
        loading.load_model(resolve(str(tiny_model)), "cpu", "float32")


def _save(tiny_model: Path, out: Path) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=[1], out=out,
                model=loaded.model, tokenizer=loaded.tokenizer)


def test_output_under_a_file_is_a_sentence(tiny_model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "some_file"
    blocker.write_text("in the way")
    with pytest.raises(OutputError, match="Cannot create"):
        _save(tiny_model, blocker / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some_file"]


def test_a_full_disk_rolls_back(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shortgpt_desktop.core.formats import safetensors_writer as saving

    real = saving.write_sharded

    def fill_up(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # the weights are on disk, then the next write fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "write_sharded", fill_up)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("an earlier output")
    (out / "README.md").write_text("---\ntags:\n- shortgpt\n---\n")  # its card
    with pytest.raises(OutputError, match="no space left on device; nothing was written"):
        loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
        save_pruned(source=loaded.source, family=loaded.family, original_config=loaded.config, removed=[1],
                    out=out, model=loaded.model, tokenizer=loaded.tokenizer, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder left behind
    assert (out / "model.safetensors").read_text() == "an earlier output"


def test_cli_output_errors_exit_2(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "some_file"
    blocker.write_text("in the way")
    code = cli.main(["prune", str(tiny_model), "--remove", "1", "--no-eval", "-q", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "is a file" in err or "Cannot create" in err


@pytest.mark.parametrize("name", ["cuda:x", "cuda:", "cuda:-1", "cuda:0:1", "cudax", "cuda:²"])
def test_a_malformed_cuda_device_is_a_sentence_even_with_a_gpu(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device cuda:x`` used to reach ``int()`` (a ValueError traceback) on machines with CUDA; "²" is a digit to
    Python, not to int()."""
    from shortgpt_desktop.core.model.memory import available_memory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ResourceError, match=r"^Unknown device .*cuda:N.*\.$"):
        resolve_device(name)
    with pytest.raises(ResourceError, match=r"^Unknown device"):
        available_memory(name)
    with pytest.raises(ResourceError, match="no CUDA GPU number 3"):
        resolve_device("cuda:3")
