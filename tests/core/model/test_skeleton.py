"""The config-against-weights check: counted on the meta device, once per config."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core.errors import ModelSourceError
from shortgpt_desktop.core.model import skeleton
from shortgpt_desktop.core.model.config import read_config
from shortgpt_desktop.core.model.sources import resolve


def _config(**overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, **overrides})


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from transformers import AutoModelForCausalLM

    built: list[str] = []
    real = AutoModelForCausalLM.from_config

    def counted(config, **kwargs):
        built.append(config.model_type)
        return real(config, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", counted)
    monkeypatch.setattr(skeleton, "_described", {})
    return built


def test_a_config_is_built_once_and_a_changed_one_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job loads one model several times; the count is the same each time, so the model is built once. One
    more layer is another config: built again, and counted as a fresh build counts it."""
    built = _count_builds(monkeypatch)
    first = skeleton.described_parameters(_config())
    assert skeleton.described_parameters(_config()) == first and len(built) == 1
    deeper = skeleton.described_parameters(_config(num_hidden_layers=4))
    assert len(built) == 2
    layer = 4 * 64 * 64 - 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64  # q, o and k, v at 2 of 4 heads; the MLP; two norms
    assert deeper - first == layer


def test_remote_code_is_built_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code behind a remote-code config may change between two loads: its count is never remembered."""
    built = _count_builds(monkeypatch)
    for _ in range(2):
        skeleton.described_parameters(_config(), trust_remote_code=True)
    assert len(built) == 2 and not skeleton._described


def test_a_config_far_bigger_than_its_weights_is_refused(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted before anything allocates, whether or not the config was counted before."""
    from transformers import AutoConfig

    _count_builds(monkeypatch)
    source = resolve(str(tiny_model))
    config = AutoConfig.from_pretrained(tiny_model)
    skeleton.check_config_fits_weights(source, config, read_config(source))  # its own weights: fine
    config.intermediate_size *= 1000
    for _ in range(2):
        with pytest.raises(ModelSourceError, match="do not belong together"):
            skeleton.check_config_fits_weights(source, config, read_config(source))


def test_loading_refuses_a_config_far_bigger_than_its_weights_before_building_it(tiny_model: Path,
                                                                                  tmp_path: Path) -> None:
    """Without the check, transformers built the config's 590 MB model before it found the sizes wrong."""
    import json
    import shutil

    from shortgpt_desktop.core.model.loading import load_model

    folder = shutil.copytree(tiny_model, tmp_path / "inflated")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(dict(config, intermediate_size=128_000)), encoding="utf-8")
    with pytest.raises(ModelSourceError, match="do not belong together"):
        load_model(resolve(str(folder)), "cpu", "float32")
