"""Layer-by-layer scoring and perplexity: the same numbers as the model in memory, in less memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.streamed import (
    LayerObserver,
    StreamedModel,
    streamed_measure_layers,
    streamed_perplexity,
)
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure.calibration import TokenSet, build_token_set
from shortgpt_desktop.core.measure.evaluation import perplexity_of
from shortgpt_desktop.core.measure.scoring import HookStats, _identity_hook, measure_layers
from shortgpt_desktop.core.model.loading import load_model, load_tokenizer
from shortgpt_desktop.core.model.memory import estimate_memory
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES

REPO = Path(__file__).resolve().parents[3]


def token_set_with_padding(tokenizer, text: str, samples: int = 5, seq_len: int = 24) -> TokenSet:
    tokens = build_token_set(tokenizer, [text], samples=samples, seq_len=seq_len, seed=0)
    tokens.samples[1] = tokens.samples[1][: seq_len // 2]  # a short sample: padding must not count
    return tokens


def assert_same_stats(streamed: HookStats, reference: HookStats) -> None:
    assert streamed.tokens == reference.tokens
    assert streamed.bi == pytest.approx(reference.bi, abs=1e-5)
    assert streamed.relative_magnitude == pytest.approx(reference.relative_magnitude, abs=1e-5)
    torch.testing.assert_close(streamed.last_token_states, reference.last_token_states, rtol=1e-5, atol=1e-5)


def pruned_perplexity(loaded, windows, pad_id: int, removed: list[int]) -> float:
    """In-memory reference: the removed layers made no-ops by hooks, no streaming code involved."""
    layers = loaded.model.get_submodule(loaded.family.layers_path)
    handles = [layers[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in removed]
    try:
        return perplexity_of(loaded.model, windows, pad_id, batch_size=2).perplexity
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def calib_text(small_calib: Path) -> str:
    return small_calib.read_text(encoding="utf-8")[:20_000]


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_streamed_equals_in_memory_for_every_family(tiny_family, name: str, tiny_model: Path, tmp_path: Path,
                                                    calib_text: str) -> None:
    folder = tiny_family(name)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    tokens = token_set_with_padding(loaded.tokenizer, calib_text)
    reference = measure_layers(loaded.model, loaded.family, tokens, batch_size=2)
    windows = [*tokens.eval_windows[:2], tokens.eval_windows[2][:9]]
    removed = [1, loaded.n_layers - 1]
    with StreamedModel(resolve(str(folder)), "cpu", "float32") as streamed:
        assert streamed.family is loaded.family
        assert_same_stats(streamed_measure_layers(streamed.source, tokens, batch_size=2, model=streamed), reference)
        original = streamed_perplexity(streamed.source, windows, tokens.pad_id, batch_size=2, model=streamed)
        pruned = streamed_perplexity(streamed.source, windows, tokens.pad_id, removed, batch_size=2, model=streamed)
    expected = perplexity_of(loaded.model, windows, tokens.pad_id, batch_size=2)
    assert original.perplexity == pytest.approx(expected.perplexity, rel=1e-5)
    assert original.tokens == expected.tokens
    assert pruned.perplexity == pytest.approx(pruned_perplexity(loaded, windows, tokens.pad_id, removed), rel=1e-5)
    assert abs(pruned.perplexity - original.perplexity) > 1e-3  # the removed layers were really skipped


def test_progress_fills_layer_by_layer_and_cancel_stops(tiny_model: Path, calib_text: str) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    tokens = token_set_with_padding(loaded.tokenizer, calib_text)
    seen: list[tuple[str, int, int, list]] = []
    streamed_measure_layers(resolve(str(tiny_model)), tokens, batch_size=2,
                            progress=lambda stage, done, total, partial: seen.append((stage, done, total, partial)))
    n = loaded.n_layers
    assert [s[1] for s in seen] == list(range(n + 1)) and {s[2] for s in seen} == {n}
    for _, done, _, partial in seen:
        assert all(v is not None for v in partial[:done]) and all(v is None for v in partial[done:])

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 6  # after the capture and some batches of the first layers

    with pytest.raises(Cancelled):
        streamed_measure_layers(resolve(str(tiny_model)), tokens, batch_size=2, cancel=cancel)


def test_observers_see_every_layer_and_batch(tiny_model: Path, calib_text: str) -> None:
    """An observer folds its own sums in the same pass (here: each layer's MLP output norm, via a hook)."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    tokens = token_set_with_padding(loaded.tokenizer, calib_text)

    class MlpNorms(LayerObserver):
        def __init__(self) -> None:
            self.sums: dict[int, float] = {}
            self.batches: dict[int, int] = {}

        def enter_layer(self, index, layer) -> None:
            self.handle = layer.mlp.register_forward_hook(
                lambda m, a, out: self.sums.__setitem__(index, self.sums.get(index, 0.0) + float(out.norm())))

        def batch(self, index, layer, inputs, outputs, kwargs, mask) -> None:
            assert inputs.shape == outputs.shape and mask.shape == inputs.shape[:2]
            self.batches[index] = self.batches.get(index, 0) + 1

        def exit_layer(self, index, layer) -> None:
            self.handle.remove()

    observer = MlpNorms()
    streamed_measure_layers(resolve(str(tiny_model)), tokens, batch_size=2, observers=[observer])
    expected: dict[int, float] = {}
    layers = loaded.model.get_submodule(loaded.family.layers_path)
    handles = [layer.mlp.register_forward_hook(
        lambda m, a, out, i=i: expected.__setitem__(i, expected.get(i, 0.0) + float(out.norm())))
        for i, layer in enumerate(layers)]
    measure_layers(loaded.model, loaded.family, tokens, batch_size=2)
    for handle in handles:
        handle.remove()
    assert observer.batches == {i: 3 for i in range(loaded.n_layers)}
    assert observer.sums == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------ SmolLM2


@pytest.mark.slow
def test_smollm2_gguf_and_safetensors_stream_like_in_memory(smollm2, smollm2_gguf: Path, smollm2_safetensors: Path,
                                                            calib_text: str) -> None:
    tokens = token_set_with_padding(smollm2.tokenizer, calib_text, samples=3, seq_len=24)
    reference = measure_layers(smollm2.model, smollm2.family, tokens, batch_size=3)
    assert_same_stats(streamed_measure_layers(resolve(str(smollm2_gguf)), tokens, batch_size=3), reference)
    windows = tokens.eval_windows[:2]
    removed = [3, 17, 29]
    with StreamedModel(resolve(str(smollm2_safetensors)), "cpu", "float32") as streamed:
        assert_same_stats(streamed_measure_layers(streamed.source, tokens, batch_size=3, model=streamed), reference)
        pruned = streamed_perplexity(streamed.source, windows, tokens.pad_id, removed, batch_size=2, model=streamed)
    assert pruned.perplexity == pytest.approx(pruned_perplexity(smollm2, windows, tokens.pad_id, removed), rel=1e-5)


# ------------------------------------------------------------------------------------------- memory limit

CHILD = textwrap.dedent("""
    import json, resource, sys
    mode, folder, weights_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import torch
    torch.set_num_threads(1)
    from shortgpt_desktop.core.measure.calibration import TokenSet
    from shortgpt_desktop.core.model.loading import load_model
    from shortgpt_desktop.core.measure.scoring import measure_layers
    from shortgpt_desktop.core.model.sources import resolve
    from shortgpt_desktop.core.backends.streamed import streamed_measure_layers

    def data_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024

    limit = data_bytes() + int(1.1 * weights_bytes)  # the program as it is now + the weights + 10%
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    tokens = TokenSet(samples=[[1, *range(5, 40)]] * 4, eval_windows=[], seq_len=36, bos_id=1, pad_id=0)
    try:
        if mode == "memory":
            loaded = load_model(resolve(folder), "cpu", "float32")
            stats = measure_layers(loaded.model, loaded.family, tokens, batch_size=2)
        else:
            stats = streamed_measure_layers(resolve(folder), tokens, batch_size=2)
        print(json.dumps({"bi": stats.bi}))
    except (MemoryError, RuntimeError, OSError, Exception) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc are Linux's")
@pytest.mark.slow  # two child processes and a 220 MB model on disk: run with the real-model tests
def test_streaming_runs_under_a_memory_limit_the_loaded_model_cannot_meet(tiny_model: Path, tmp_path: Path) -> None:
    """A child process may use the weights' size (+10%) beyond what it holds after importing torch.

    The whole model cannot load in that (it needs every weight plus the loader's and transformers' own
    allocations); one layer at a time fits. The limit is RLIMIT_DATA, not RLIMIT_AS: a torch process reserves
    hundreds of MB of address space it never uses (thread stacks, allocator arenas, mapped libraries), which
    RLIMIT_AS counts and RLIMIT_DATA (private writable memory: heap and anonymous maps, where tensors live) does
    not. ``MALLOC_MMAP_THRESHOLD_`` makes glibc give every freed tensor back at once in both children, so the
    limit meets what the code holds rather than what the allocator caches in a fragmented heap.
    """
    from shortgpt_desktop.core.testing.large_models import write_random_model

    folder = write_random_model(tmp_path / "model", dict(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=8, max_position_embeddings=256, tie_word_embeddings=False,
    ), tokenizer_from=tiny_model, shard_bytes=64_000_000)
    weights = estimate_memory(resolve(str(folder)), "cpu", "float32").weights_bytes
    assert weights > 200_000_000
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1"}
    results = {}
    for mode in ("memory", "streamed"):
        run = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(weights)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    # The loader's out-of-memory error is a sentence that says what to do, not "the model could not be read".
    assert results["memory"].get("error", "").startswith("ResourceError: Not enough memory"), results["memory"]
    assert "bi" in results["streamed"], results["streamed"]
    assert len(results["streamed"]["bi"]) == 8


@pytest.fixture(scope="module")
def setup(tiny_model: Path, small_calib: Path):
    """The tiny model and a few calibration samples and held-out windows of its tokens."""
    source = resolve(str(tiny_model))
    tokens = build_token_set(load_tokenizer(source), [small_calib.read_text(encoding="utf-8")[:20_000]], samples=4,
                             seq_len=24, seed=0, max_eval_windows=3)
    return source, None, tokens


def test_one_decoder_layer_is_resident_at_a_time_and_none_after(setup) -> None:
    source, _, tokens = setup
    with StreamedModel(source) as model:
        real_open = StreamedModel.open_layer
        resident: list[list[int]] = []
        heads: set[str] = set()

        def open_layer(self, index):
            resident.append([i for i, layer in enumerate(self.layers)
                             if any(p.device.type != "meta" for p in layer.parameters())])
            heads.add(self.model.get_output_embeddings().weight.device.type)
            return real_open(self, index)

        model.open_layer = open_layer.__get__(model)  # type: ignore[method-assign]
        ops.perplexity(model, tokens.eval_windows, tokens.pad_id, [1], batch_size=2)
        assert resident and all(r == [] for r in resident), resident
        assert heads == {"meta"}, "the untied head is loaded for the head step only, not beside the layers"
        assert all(p.device.type == "meta" for p in model.layers.parameters())


def test_a_tied_head_step_drops_the_embeddings_with_the_head(tiny_family, setup) -> None:
    _, _, tokens = setup
    source = resolve(str(tiny_family("gemma")))
    with StreamedModel(source) as model:
        assert model.model.get_input_embeddings().weight.device.type != "meta"
        first = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, batch_size=2)
        assert model.model.get_output_embeddings().weight.device.type == "meta"
        assert model.model.get_input_embeddings().weight.device.type == "meta", "the tied embedding is held"
        again = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, batch_size=2)
    assert again.perplexity == first.perplexity


def test_a_cancelled_pass_scores_exactly_the_layers_it_finished(setup) -> None:
    """Cancelled inside a layer: that layer and the ones after it have no score (a half-measured layer's BI would
    be a number the chart and the choice could take)."""
    from shortgpt_desktop.core.backends.streamed import streamed_measure_layers
    from shortgpt_desktop.core.errors import Cancelled

    source, _, tokens = setup
    done: list[int] = []
    checks = [0]

    def cancel() -> bool:
        checks[0] += 1
        return len(done) > 3 and done[-1] >= 2  # two layers finished, then some batches of the third

    with pytest.raises(Cancelled) as raised:
        streamed_measure_layers(source, tokens, batch_size=1, cancel=cancel,
                                progress=lambda stage, d, total, partial: done.append(d))
    stats = raised.value.partial
    finished = done[-1]
    assert 0 < finished < len(stats.bi)
    assert [v is not None for v in stats.bi] == [i < finished for i in range(len(stats.bi))]
    assert [v is not None for v in stats.relative_magnitude] == [i < finished for i in range(len(stats.bi))]
