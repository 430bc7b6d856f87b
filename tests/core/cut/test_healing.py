"""LoRA healing of a pruned tiny model: the loss goes down, the adapters merge away, the saved folder reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.healing import estimate_heal_seconds, heal, original_names
from shortgpt_desktop.core.cut.surgery import prune_in_memory
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve

PROMPT = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])


@pytest.fixture(scope="module")
def tokens(tiny_model: Path, valid_text: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return build_token_set(tokenizer, [valid_text.read_text(encoding="utf-8")[:20_000]], None, samples=8,
                           seq_len=32, max_eval_windows=2)


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_heal_lowers_the_loss_merges_and_reloads(tiny_model: Path, tokens, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    removed = [2, 3]
    kept = [i for i in range(loaded.n_layers) if i not in removed]
    prune_in_memory(model, family, removed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}

    assert estimate_heal_seconds(model, family, tokens, steps=10, batch_size=4) > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "estimating changed the model"
    with pytest.raises(Cancelled):
        heal(model, family, tokens, steps=5, batch_size=4, cancel=lambda: True)
    assert shapes(model) == {k: tuple(v.shape) for k, v in before.items()}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "cancelling changed the model"

    kept_model = heal(model, family, tokens, steps=2, batch_size=8, learning_rate=3e-3, keep_original=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "keep_original changed it"
    assert any(not torch.equal(v, before[k]) for k, v in kept_model.changed.items())

    steps = []
    result = heal(model, family, tokens, steps=12, batch_size=8, learning_rate=3e-3,
                  progress=lambda stage, done, total, _: steps.append((stage, done, total)))
    assert steps[0] == ("heal", 0, 12) and steps[-1] == ("heal", 12, 12)
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses  # one batch of 8: the same batch each step
    assert not any("lora" in name for name, _ in model.named_modules()), "adapters left in the model"
    assert shapes(model) == {k: tuple(v.shape) for k, v in before.items()}
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(result.changed) and "model.layers.2.mlp.down_proj.weight" in changed
    assert "lm_head.weight" not in changed and "model.embed_tokens.weight" not in changed
    with torch.no_grad():
        healed_logits = model(input_ids=PROMPT).logits

    # Saved from the ORIGINAL checkpoint with the healed tensors replacing the source bytes.
    replaced = original_names(result.changed, family, kept)
    assert "model.layers.4.mlp.down_proj.weight" in replaced  # pruned index 2 is original layer 4
    save_pruned(source=loaded.source, family=family, original_config=loaded.config, removed=removed,
                out=tmp_path / "healed", model=None, tokenizer=loaded.tokenizer, replaced=replaced)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=PROMPT).logits, healed_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])  # nn.Linear, and Conv1D (fan_in_fan_out)
def test_keeping_the_original_gives_the_merge_to_the_last_bit_without_a_copy_of_the_model(
        model_type: str, tiny_family, tokens) -> None:
    """``keep_original`` merges each adapter into a copy of one weight at a time: the same values as peft's merge
    in place, bit for bit, the model as it was, and no copy of the targeted weights alive while training (healing
    had cloned them all before its first step, to copy them back after merging in place)."""
    import gc

    from shortgpt_desktop.core.cut import healing

    copies_at_first_step: list[int] = []
    step = healing._step
    watched: dict[str, object] = {}

    def first_step(*args, **kwargs):
        if not copies_at_first_step:  # tensors shaped as an adapted weight that are neither it nor a test copy
            shapes, ours = watched["shapes"], watched["ours"]
            weights = {p.untyped_storage().data_ptr() for p in watched["model"].parameters()}
            copies_at_first_step.append(sum(
                1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and not isinstance(o, torch.nn.Parameter)
                and tuple(o.shape) in shapes and id(o) not in ours and o.untyped_storage().data_ptr() not in weights))
        return step(*args, **kwargs)

    results = []
    for keep in (True, False):
        loaded = load_model(resolve(str(tiny_family(model_type))), "cpu", "float32")
        prune_in_memory(loaded.model, loaded.family, [1])
        before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        targets = healing.target_modules(loaded.model, loaded.family)
        ours = [*before.values(), *(t for result in results for t in result.changed.values())]
        watched.update(model=loaded.model, ours={id(v) for v in ours},
                       shapes={tuple(loaded.model.get_submodule(t).weight.shape) for t in targets})
        copies_at_first_step.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(healing, "_step", first_step)
            results.append(heal(loaded.model, loaded.family, tokens, steps=3, batch_size=4, learning_rate=3e-3,
                                keep_original=keep))
        assert all(torch.equal(v, before[k]) for k, v in loaded.model.state_dict().items()) == keep
        assert copies_at_first_step == [0], f"{copies_at_first_step[0]} copies of adapted weights while training"
    kept, merged = results
    assert kept.losses == merged.losses and kept.changed.keys() == merged.changed.keys()
    assert all(torch.equal(kept.changed[k], merged.changed[k]) for k in kept.changed)
    assert any(not torch.equal(kept.changed[k], before[k]) for k in kept.changed)


def test_distillation_pulls_the_pruned_model_back_toward_the_original(tiny_model: Path, tokens) -> None:
    """Healing from the original's distributions lowers the KL divergence the check reports; only the layers
    beside the cut are adapted."""
    from shortgpt_desktop.core.backends import ops
    from shortgpt_desktop.core.backends.layerwise import Batch, InMemoryStack
    from shortgpt_desktop.core.cut.healing import layers_beside
    from shortgpt_desktop.core.cut.surgery import pruned_view

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    removed = [2, 3]
    assert layers_beside(removed, 6) == [1, 2]  # original layers 1 and 4, pruned indices 1 and 2
    stack = InMemoryStack(model, family)
    teacher_ref = ops.reference(stack, tokens.samples, tokens.pad_id, 4)
    windows = tokens.samples  # the fit's own text: the healing must bring the student closer there
    before_ref = ops.reference(stack, windows, tokens.pad_id, 4)
    _, before = ops.compare(stack, windows, tokens.pad_id, before_ref, removed)
    with pruned_view(model, family, removed):
        head = InMemoryStack(model, family)

        def teacher(number, ids, mask):
            with head.head() as logits_of:
                out = logits_of(Batch(ids, mask, None), teacher_ref.final_states[number])
            return out.clone()

        result = heal(model, family, tokens, steps=16, batch_size=4, learning_rate=3e-3, keep_original=True,
                      teacher=teacher, layers=layers_beside(removed, 6))
    assert all(".1." in k or ".2." in k for k in result.changed), sorted(result.changed)
    from shortgpt_desktop.core.cut.healing import original_names

    weights = original_names(result.changed, family, [0, 1, 4, 5])
    _, after = ops.compare(stack, windows, tokens.pad_id, before_ref, removed, weights)
    assert after.mean_kl < 0.8 * before.mean_kl, (before.mean_kl, after.mean_kl)


def test_the_estimate_times_one_step_after_a_short_warm_up(tiny_model: Path, tokens,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate costs one step of the first batch (and a warm-up on a slice of it), not two real steps: a
    short healing's budget goes to healing. The teacher is asked once, for the first batch. The estimate is that
    step's time (2.5 s on a clock of the test's) times the steps."""
    import itertools
    from types import SimpleNamespace

    from shortgpt_desktop.core.cut import healing

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    prune_in_memory(loaded.model, loaded.family, [2, 3])
    monkeypatch.setattr(healing, "time", SimpleNamespace(perf_counter=itertools.count(0.0, 2.5).__next__))
    shapes_seen: list[tuple[int, ...]] = []
    step = healing._step
    monkeypatch.setattr(healing, "_step", lambda model, optimizer, ids, mask, target=None, compute=None:
                        shapes_seen.append((tuple(ids.shape), None if target is None else tuple(target.shape)))
                        or step(model, optimizer, ids, mask, target, compute))
    asked: list[int] = []

    def teacher(number, ids, mask):
        asked.append(number)
        with torch.no_grad():
            return loaded.model(input_ids=ids, attention_mask=mask).logits

    seconds = estimate_heal_seconds(loaded.model, loaded.family, tokens, steps=10, batch_size=4, teacher=teacher)
    vocab = loaded.model.config.vocab_size
    assert seconds == 25.0 and asked == [0]
    assert shapes_seen == [((1, healing.WARM_UP_TOKENS), (1, healing.WARM_UP_TOKENS, vocab)),
                           ((4, 32), (4, 32, vocab))]
    assert healing.batches_used(8, 4, 1) == 1 and healing.batches_used(8, 4, 3) == 2
    assert healing.batches_used(9, 4, 100) == 3


def test_bfloat16_steps_learn_as_float32_steps_do(tiny_model: Path, tokens) -> None:
    """Distilled from the original, under autocast to bfloat16 every step sees the adapters as the last step left
    them (a cached region around all the steps would repeat the first loss), the losses follow float32's, and the
    weights the merge writes stay float32."""
    from shortgpt_desktop.core.cut.healing import _batches

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model = loaded.model
    batches = _batches(tokens, 8, "cpu")
    with torch.no_grad():
        originals = [model(input_ids=ids, attention_mask=mask).logits for ids, mask in batches]
    prune_in_memory(model, loaded.family, [2, 3])
    runs = {}
    for compute in (None, torch.bfloat16):
        runs[compute] = heal(model, loaded.family, tokens, steps=8, batch_size=8, learning_rate=3e-3,
                             compute=compute, keep_original=True,
                             teacher=lambda number, ids, mask: originals[number])
    floats, halves = runs[None], runs[torch.bfloat16]
    assert (floats.compute_dtype, halves.compute_dtype) == ("float32", "bfloat16")
    assert halves.losses[-1] < 0.8 * halves.losses[0], (halves.losses, floats.losses)  # the same batch each step
    torch.testing.assert_close(torch.tensor(halves.losses), torch.tensor(floats.losses), rtol=0.05, atol=0)
    assert all(v.dtype == torch.float32 for v in halves.changed.values())
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="compute must be"):
        heal(model, loaded.family, tokens, steps=1, compute="bfloat16")


def test_auto_precision_follows_the_hardware(tiny_model: Path, tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compute="auto"`` (the engine's) runs in bfloat16 where the CPU multiplies it faster, in float32 elsewhere."""
    from shortgpt_desktop.core.cut.healing import compute_dtype_for

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    for fast, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda fast=fast: fast, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        assert compute_dtype_for(loaded.model) == expected
    assert compute_dtype_for(loaded.model, None) is None
    assert heal(loaded.model, loaded.family, tokens, steps=1, batch_size=4).compute_dtype == "float32"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1 << 11, 1 << 30])
def test_the_distillation_gradient_a_few_positions_at_a_time_is_autograds(
        monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, chunk: int) -> None:
    """The steps take the loss and its gradient span by span (no whole-batch float32 copy of the logits): the
    same loss, and the gradient autograd gives through the whole-batch loss, padding included."""
    from shortgpt_desktop.core.cut.healing import distillation_gradient, distillation_loss
    from shortgpt_desktop.core.measure import evaluation

    monkeypatch.setattr(evaluation, "CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(3)
    teacher = (torch.randn(3, 9, 500, generator=generator) * 2).to(dtype)
    student = (teacher.float() + torch.randn(3, 9, 500, generator=generator)).to(dtype)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, 5:] = 0
    leaf = student.clone().requires_grad_(True)
    expected = distillation_loss(leaf, teacher, mask)
    expected.backward()
    student[2, 6] = float("nan")  # what a padded position holds never reaches the gradient
    value, gradient = distillation_gradient(student, teacher, mask)
    assert gradient.dtype == dtype and gradient.shape == student.shape
    assert value == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(expected.detach()) > 0.1, "the two distributions differ: the gradient is not all zeros"
    assert torch.all(gradient[2, 5:] == 0) and torch.isfinite(gradient).all(), "padding gets no gradient"
    tolerance = dict(rtol=1e-4, atol=1e-7) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-5)
    torch.testing.assert_close(gradient, leaf.grad, **tolerance)


def test_healing_prints_no_library_deprecation_warning(tiny_model: Path, tokens) -> None:
    """peft asked transformers for a deprecated property and the warning reached the command line's output."""
    import warnings

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning shown, as a first run in a fresh process shows it
        heal(loaded.model, loaded.family, tokens, steps=1, batch_size=2)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_each_step_reads_the_next_batch_and_cycles(tiny_model: Path, valid_text: Path) -> None:
    """Healing cycles over the calibration batches; a step that always read the first batch changed no test, and
    the rest of the text would never be read."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokens = build_token_set(tokenizer, [valid_text.read_text(encoding="utf-8")[:20_000]], None, samples=8,
                             seq_len=32, max_eval_windows=2)
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    asked: list[tuple[int, list[int]]] = []

    def teacher(number: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        asked.append((number, ids[:, 1].tolist()))
        with torch.no_grad():
            return loaded.model(input_ids=ids, attention_mask=mask).logits.clone()

    heal(loaded.model, loaded.family, tokens, steps=3, batch_size=4, teacher=teacher, keep_original=True)
    assert [number for number, _ in asked] == [0, 1, 0]
    assert asked[0][1] == [s[1] for s in tokens.samples[:4]] and asked[1][1] == [s[1] for s in tokens.samples[4:8]]


def test_healing_sees_the_model_without_dropout(tiny_model: Path, tokens, tmp_path: Path) -> None:
    """GPT-2 and OPT are trained with dropout, and a caller may leave a model in training mode: healing's steps must
    see the model as it will run (the merged weights should be what the loss saw), so its first loss is the
    model's own loss without dropout; and the model is left in the mode it was in."""
    from shortgpt_desktop.core.cut import healing
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

    model_type, kwargs = TINY_FAMILIES["gpt2"]
    folder = build_tiny_model(tmp_path / "gpt2-dropout", model_type, tokenizer_from=tiny_model,
                              config_overrides={**kwargs, "resid_pdrop": 0.5, "embd_pdrop": 0.5, "attn_pdrop": 0.5})
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    ids, mask = healing._batches(tokens, 4, "cpu")[0]
    with torch.no_grad():
        expected = float(loaded.model(input_ids=ids, attention_mask=mask,
                                      labels=ids.masked_fill(mask == 0, -100)).loss)
    loaded.model.train()
    result = heal(loaded.model, loaded.family, tokens, steps=1, batch_size=4, keep_original=True, compute=None)
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)
    assert loaded.model.training


def test_the_layers_beside_a_cut_at_either_end_of_the_model_are_its_one_kept_neighbour() -> None:
    from shortgpt_desktop.core.cut.healing import layers_beside

    assert layers_beside([0], 6) == [0]  # original layer 1
    assert layers_beside([1], 6) == [0, 1]  # original layers 0 and 2
    assert layers_beside([5], 6) == [4]
    assert layers_beside([4, 5], 6) == [3]


def test_healing_refuses_no_steps_and_trains_at_the_rate_and_adapter_scale_given(tiny_model: Path, tokens) -> None:
    """At a learning rate of 0 the adapters stay as made (B = 0) and the merge gives the weights back bit for bit;
    the adapters scale by alpha / rank = 2 unless an alpha is given (the default rate was measured so)."""
    from shortgpt_desktop.core.cut.healing import _lora_config

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    with pytest.raises(ValueError, match="steps must be at least 1"):
        heal(model, family, tokens, steps=0)
    assert _lora_config(model, family, 4, None)[0].lora_alpha == 8
    assert _lora_config(model, family, 4, 3.0)[0].lora_alpha == 3.0
    weights = dict(model.named_parameters())
    result = heal(model, family, tokens, steps=2, batch_size=8, learning_rate=0.0, keep_original=True, compute=None)
    assert result.learning_rate == 0.0 and len(result.changed) > 0
    assert all(torch.equal(value, weights[name]) for name, value in result.changed.items())


def test_each_step_updates_on_its_own_batchs_gradient_alone(tiny_model: Path, tokens,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A gradient left from the step before would be added to the next one's, as if the batches were one."""
    from shortgpt_desktop.core.cut import healing

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    left: list[int] = []
    step = healing._step

    def counted(peft_model, *args):
        left.append(sum(p.grad is not None for p in peft_model.parameters()))
        return step(peft_model, *args)

    monkeypatch.setattr(healing, "_step", counted)
    heal(loaded.model, loaded.family, tokens, steps=2, batch_size=4, keep_original=True, compute=None)
    assert left == [0, 0]
