"""The joint passes that read each layer once for several models give what the separate passes give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.backends import ops
from shortgpt_desktop.core.backends.layerwise import LayerObserver
from shortgpt_desktop.core.backends.streamed import StreamedModel
from shortgpt_desktop.core.errors import Cancelled
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.model.loading import load_model, load_tokenizer
from shortgpt_desktop.core.model.sources import resolve


class CountingModel(StreamedModel):
    """A streamed model that counts how often each layer is read from the checkpoint."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[int] = []

    def open_layer(self, index: int):
        self.opened.append(index)
        return super().open_layer(index)


def _repair_like_weights(model: StreamedModel, layer: int) -> dict[str, torch.Tensor]:
    """A changed down projection of ``layer`` (names with original indices), as a repair hands them over."""
    name = f"{model.family.layers_path}.{layer}.mlp.down_proj.weight"
    with model.open_layer(layer) as opened:
        weight = opened.mlp.down_proj.weight.detach().clone()
    return {name: weight * 1.5}


@pytest.fixture(scope="module")
def setup(tiny_model: Path, small_calib: Path):
    source = resolve(str(tiny_model))
    tokenizer = load_tokenizer(source)
    tokens = build_token_set(tokenizer, [small_calib.read_text(encoding="utf-8")[:20_000]], samples=4, seq_len=24,
                             seed=0, max_eval_windows=3)
    return source, tokenizer, tokens


def test_reference_and_compare_in_one_sweep_equal_the_two_passes(setup) -> None:
    source, _, tokens = setup
    with CountingModel(source) as model:
        weights = _repair_like_weights(model, 1)
        removed = [2, 3]
        reference = ops.reference(model, tokens.eval_windows, tokens.pad_id, batch_size=2)
        after, fidelity = ops.compare(model, tokens.eval_windows, tokens.pad_id, reference, removed, weights)
        model.opened.clear()
        joint, (joint_after, joint_fidelity) = ops.reference_and_compare(
            model, tokens.eval_windows, tokens.pad_id, removed, batch_size=2, weights=weights)
        assert model.opened == list(range(model.n_layers)), "each layer read once"
    assert joint.result.perplexity == reference.result.perplexity
    assert joint.result.tokens == reference.result.tokens
    for a, b in zip(joint.final_states, reference.final_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert joint_after.perplexity == after.perplexity
    assert joint_fidelity.mean_kl == fidelity.mean_kl and joint_fidelity.same_top == fidelity.same_top


def test_generating_with_both_models_together_gives_each_ones_tokens(setup) -> None:
    source, tokenizer, _ = setup
    with CountingModel(source) as model:
        weights = _repair_like_weights(model, 1)
        alone = [ops.generate(model, tokenizer, "The history of", (), {}, 4),
                 ops.generate(model, tokenizer, "The history of", [2, 3], weights, 4)]
        model.opened.clear()
        both = ops.generate_variants(model, tokenizer, "The history of", [((), {}), ([2, 3], weights)], 4)
        assert len(model.opened) <= 4 * model.n_layers, "each layer read once per new token"
    assert both == alone


@pytest.mark.parametrize("name", ["llama", "gemma"])  # gemma: tied head and embeddings
def test_the_head_is_dropped_after_its_step_and_comes_back_for_the_next(tiny_family, name: str, tiny_model: Path,
                                                                        small_calib: Path) -> None:
    source = resolve(str(tiny_family(name)))
    tokens = build_token_set(load_tokenizer(source), [small_calib.read_text(encoding="utf-8")[:20_000]], samples=2,
                             seq_len=24, seed=0, max_eval_windows=3)
    with StreamedModel(source) as model:
        first = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, batch_size=2)
        assert model.model.get_output_embeddings().weight.device.type == "meta"
        again = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, [1], batch_size=2)
        third = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, batch_size=2)
    assert third.perplexity == first.perplexity and again.perplexity != first.perplexity


def test_next_tokens_of_padded_prompts_are_each_prompts_own_greedy_token(setup, tiny_model: Path) -> None:
    """Prompts of different lengths in one padded batch, pruned and repaired: each one's token is what the whole
    model in memory (transformers' own forward, one prompt at a time, no padding) gives."""
    from transformers import AutoModelForCausalLM

    from shortgpt_desktop.core.cut.surgery import pruned_view
    from shortgpt_desktop.core.model.families import family_for_model_type
    from shortgpt_desktop.core.model.weights_view import weights_view

    source, tokenizer, _ = setup
    prompts = [tokenizer(text)["input_ids"] for text in ("The history of", "A", "In the year 1900 the city of")]
    assert len({len(p) for p in prompts}) == 3
    removed = [2, 3]
    with StreamedModel(source) as model:
        weights = _repair_like_weights(model, 1)
        original = ops.next_tokens(model, prompts, tokenizer.pad_token_id or 0)
        pruned = ops.next_tokens(model, prompts, tokenizer.pad_token_id or 0, removed, weights)
    whole = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    family = family_for_model_type("llama")
    with torch.no_grad():
        expected = [int(whole(input_ids=torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
        with weights_view(whole, weights), pruned_view(whole, family, removed):
            expected_pruned = [int(whole(input_ids=torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
    assert original == expected
    assert pruned == expected_pruned
    assert pruned != original, "the pruned model must differ somewhere, or the comparison proves less"


def test_a_heavy_head_counts_on_the_bar_as_the_layers_it_weighs() -> None:
    """Gemma 3's 262k-token head costs about half a perplexity pass; counted as one step of 19, the bar's time
    left said seconds where minutes remained. Each pass counts it as the layers it weighs (twice where both
    models' logits are taken), and ends at its total."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.model.families import family_for_model_type
    from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **{**TINY_FAMILIES["llama"][1], "num_hidden_layers": 4,
                                              "vocab_size": 8192})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    stack = InMemoryStack(model, family_for_model_type("llama"))
    heavy = round(8192 * config.hidden_size / sum(p.numel() for p in model.model.layers[0].parameters()))
    assert heavy >= 4 and ops.head_steps(stack) == heavy
    windows = torch.randint(3, 8192, (3, 16), generator=torch.Generator().manual_seed(1)).tolist()
    removed = [1]

    def bar(run) -> list[tuple[int, int]]:
        seen: list[tuple[int, int]] = []
        run(lambda done, total: seen.append((done, total)))
        return seen

    reference = ops.reference(stack, windows, 0)
    passes = {
        "perplexity": (bar(lambda p: ops.perplexity(stack, windows, 0, removed, progress=p)), 3, 3 + heavy),
        "reference": (bar(lambda p: ops.reference(stack, windows, 0, progress=p)), 4, 4 + heavy),
        "compare": (bar(lambda p: ops.compare(stack, windows, 0, reference, removed, progress=p)), 3, 3 + 2 * heavy),
        # Layers run for both models (7 runs in 4 steps), the head for both: 2 × heavy × 4 / 7 steps.
        "joint": (bar(lambda p: ops.reference_and_compare(stack, windows, 0, removed, progress=p)), 4,
                  4 + round(2 * heavy * 4 / 7)),
    }
    for name, (seen, layers, total) in passes.items():
        assert {t for _, t in seen} == {total}, (name, seen)
        assert seen[-1] == (total, total) and seen[-2][0] == layers, (name, seen)

    # A batch a window: the head pass moves the bar batch by batch, and a cancel asked once the layers are done
    # stops it before the next batch (Gemma 3's head stood still for 30 of a check's 52 steps, and Cancel waited
    # about 30 s: a walkthrough)
    reference = ops.reference(stack, windows, 0, batch_size=1)
    joint = {
        "perplexity": (lambda p, c: ops.perplexity(stack, windows, 0, removed, batch_size=1, progress=p, cancel=c),
                       3),
        "reference": (lambda p, c: ops.reference(stack, windows, 0, batch_size=1, progress=p, cancel=c), 4),
        "compare": (lambda p, c: ops.compare(stack, windows, 0, reference, removed, progress=p, cancel=c), 3),
        "joint": (lambda p, c: ops.reference_and_compare(stack, windows, 0, removed, batch_size=1, progress=p,
                                                         cancel=c), 4),
    }
    for name, (run, layers) in joint.items():
        seen = bar(lambda p, run=run: run(p, None))
        head = [done for done, total in seen if layers < done < total]
        assert len(head) == 2 and head == sorted(head), (name, seen)  # after the first and the second of three
        reached: list[int] = []

        def cancel(reached=reached, layers=layers) -> bool:
            return bool(reached) and reached[-1] > layers  # once the head pass has moved

        with pytest.raises(Cancelled):
            run(lambda done, total, reached=reached: reached.append(done), cancel)
        assert reached[-1] < seen[-1][1], (name, reached)


def test_repair_weights_reach_the_perplexity_and_the_joint_pass(setup) -> None:
    """The pruned and repaired model's perplexity, one layer at a time, is the whole model's with the same
    weights put in (transformers' forward), not the unrepaired model's."""
    from shortgpt_desktop.core.cut.surgery import pruned_view
    from shortgpt_desktop.core.measure.evaluation import perplexity_of
    from shortgpt_desktop.core.model.weights_view import weights_view

    source, _, tokens = setup
    removed = [2, 3]
    with StreamedModel(source) as model:
        weights = _repair_like_weights(model, 1)
        plain = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, removed, batch_size=2)
        repaired = ops.perplexity(model, tokens.eval_windows, tokens.pad_id, removed, batch_size=2, weights=weights)
        _, (joint, _) = ops.reference_and_compare(model, tokens.eval_windows, tokens.pad_id, removed, batch_size=2,
                                                  weights=weights)
    loaded = load_model(source, "cpu", "float32")
    with weights_view(loaded.model, weights), pruned_view(loaded.model, loaded.family, removed):
        expected = perplexity_of(loaded.model, tokens.eval_windows, tokens.pad_id, batch_size=2)
    assert abs(repaired.perplexity - plain.perplexity) > 1e-3, "the weights must change something"
    assert repaired.perplexity == pytest.approx(expected.perplexity, rel=1e-5)
    assert joint.perplexity == pytest.approx(expected.perplexity, rel=1e-5)


def test_an_observer_sees_each_layers_own_inputs_and_outputs(setup) -> None:
    source, _, tokens = setup

    class Record(LayerObserver):
        def __init__(self) -> None:
            self.seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def batch(self, index, layer, inputs, outputs, kwargs, mask) -> None:
            self.seen.setdefault(index, []).append((inputs.clone(), outputs.clone()))

    record = Record()
    with StreamedModel(source) as model:
        batches = model.capture(tokens.samples, tokens.pad_id, 2)
        entering = [b.hidden.clone() for b in batches]
        model.run_layers(batches, range(model.n_layers), [record])
    for (x, _), h in zip(record.seen[0], entering, strict=True):
        torch.testing.assert_close(x, h, rtol=0, atol=0)
    for i in range(1, model.n_layers):
        for (x, _), (_, y) in zip(record.seen[i], record.seen[i - 1], strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    for (_, y), batch in zip(record.seen[model.n_layers - 1], batches, strict=True):
        torch.testing.assert_close(y, batch.hidden, rtol=0, atol=0)


def test_generation_one_layer_at_a_time_stops_at_the_end_token(setup) -> None:
    """The model's first greedy token made the end token: the continuation is that token alone, for each view
    generated together, not the tokens after it."""
    import copy

    source, _, _ = setup
    tokenizer = copy.deepcopy(load_tokenizer(source))
    with StreamedModel(source) as model:
        prompt_ids = tokenizer("The history of")["input_ids"]
        first = ops.next_tokens(model, [prompt_ids], tokenizer.pad_token_id or 0)[0]
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
        assert tokenizer.eos_token_id == first
        alone = ops.generate(model, tokenizer, "The history of", (), {}, 4)
        both = ops.generate_variants(model, tokenizer, "The history of", [((), {}), ([2, 3], {})], 4)
    assert alone == tokenizer.decode([first], skip_special_tokens=True)
    assert both[0] == alone


def test_each_view_generated_together_gets_only_its_own_weights(setup) -> None:
    """generate_both's original must not take the pruned view's repair (the check would show the original
    speaking like the repaired model)."""
    source, _, _ = setup
    tokenizer = load_tokenizer(source)
    with StreamedModel(source) as model:
        name = f"{model.family.layers_path}.1.mlp.down_proj.weight"
        with model.open_layer(1) as opened:
            weights = {name: opened.mlp.down_proj.weight.detach().clone() * -20.0}
        plain = ops.generate(model, tokenizer, "The history of", (), {}, 4)
        assert ops.generate(model, tokenizer, "The history of", (), weights, 4) != plain, "weights must tell"
        both = ops.generate_variants(model, tokenizer, "The history of", [((), {}), ([2, 3], weights)], 4)
        pruned = ops.generate(model, tokenizer, "The history of", [2, 3], weights, 4)
    assert both == [plain, pruned]
