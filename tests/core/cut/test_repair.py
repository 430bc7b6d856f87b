"""Training-free repair (ReplaceMe-style linear map folded into the MLP output projection).

Tiny random models of every family: the fit lowers the calibration residual, the residual it reports is the one
the repaired model really has, and the saved folder reloads with stock transformers to the same logits, with the
same tensor names and shapes as a plain prune. Families that cannot be repaired say why. A synthetic case checks
the closed-form fit against a known answer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shortgpt_desktop.core.cut.repair import (
    NOTE_FIRST_LAYER,
    NOTE_POST_LN,
    RIDGE,
    RunRepair,
    _PatchedLayer,
    _statistics,
    _Stats,
    _Tokens,
    apply_repair,
    choose_ridge,
    contiguous_runs,
    fit_linear_repair,
    repaired_pruned_view,
)
from shortgpt_desktop.core.cut.surgery import pruned_view
from shortgpt_desktop.core.formats.safetensors_writer import save_pruned
from shortgpt_desktop.core.measure.calibration import build_token_set
from shortgpt_desktop.core.model.families import FAMILIES, get_submodule
from shortgpt_desktop.core.model.loading import load_model
from shortgpt_desktop.core.model.sources import resolve
from shortgpt_desktop.core.testing.tiny_models import TINY_FAMILIES, build_tiny_model

PROMPT = torch.tensor([[1, 45, 88, 120, 7, 300, 42, 11, 250, 99, 31, 64]])
#: SmolLM2-135M, 8 BI layers removed, shipped WikiText-2 slices: plain BI 127.4, repaired (independent) 74.9.
REPAIRED_PPL_BOUND = 90.0
#: Families whose layers have no plain MLP output projection to fold a map into.
NOT_REPAIRED = {"mixtral": "mixture-of-experts"}
#: Families that normalise the MLP output before the residual add: the map is fitted through that norm.
THROUGH_NORM = ("gemma2", "gemma3", "olmo2")


def headers(folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
        out.update({k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"})
    return out


def state_of(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


@pytest.fixture(scope="module")
def tiny_tokens(tiny_model: Path, valid_text: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = valid_text.read_text(encoding="utf-8")[:30_000]
    return build_token_set(tokenizer, [text], None, samples=8, seq_len=32, max_eval_windows=2)


# ----------------------------------------------------------------------------------------------- the fit


def test_closed_form_recovers_a_known_map_and_ignores_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, seq, dim = 3, 40, 16
    m = torch.randn(batch, seq, dim, generator=gen)
    r = torch.randn(batch, seq, dim, generator=gen)
    a = torch.randn(dim, dim, generator=gen) * 0.3 + torch.eye(dim)
    y = r + m @ a
    keep = torch.ones(batch, seq, dtype=torch.bool)
    keep[1, 25:] = False  # padding: garbage there must not count
    y[1, 25:] = 1e6
    stats = _Stats()
    stats.add(m, r, y, keep)
    t = stats.solve(ridge=1e-12)
    torch.testing.assert_close(t, a.double(), rtol=1e-6, atol=1e-6)
    assert stats.relative_residual(t) < 1e-5
    assert stats.tokens == int(keep.sum())
    d = y[keep].double() - r[keep].double()
    direct_before = float((m[keep].double() - d).norm() / d.norm())
    assert stats.relative_residual() == pytest.approx(direct_before, rel=1e-7)
    # With a real ridge the map is pulled toward I, and the residual formula still matches a direct evaluation.
    t_ridge = stats.solve(ridge=0.5)
    direct_after = float((m[keep].double() @ t_ridge - d).norm() / d.norm())
    assert stats.relative_residual(t_ridge) == pytest.approx(direct_after, rel=1e-7)
    assert 0 < direct_after < direct_before
    assert float((t_ridge - torch.eye(dim, dtype=torch.float64)).norm()) < float((a.double() - torch.eye(dim)).norm())
    # A ridge far above the data pulls the map all the way to the identity (plain pruning), not to zero.
    torch.testing.assert_close(stats.solve(ridge=1e9), torch.eye(dim, dtype=torch.float64), rtol=0, atol=1e-6)


def test_a_fit_through_the_norm_keeps_its_best_step_and_reports_that_one() -> None:
    """Gemma's repair is fitted through the MLP output's norm by Adam steps; the map kept is the step best on the
    held-out rows, and the error reported is that map's. Steps too long to converge (here) end far from the best:
    saving the last step would save a map worse than the one the card reports."""
    gen = torch.Generator().manual_seed(3)
    tokens = _Tokens()
    z, r = torch.randn(1, 400, 16, generator=gen), torch.zeros(1, 400, 16)
    norm = torch.nn.RMSNorm(16)
    with torch.no_grad():
        y = norm(z @ (torch.eye(16) + 0.3 * torch.randn(16, 16, generator=gen)))
    tokens.add(z, r, y, torch.ones(1, 400, dtype=torch.bool))
    for lr, improves in ((0.5, True), (50.0, False)):  # steps that converge, and steps that only diverge
        t, before, after = tokens.fit(norm, steps=30, lr=lr)
        with torch.no_grad():
            d = y[0].double()
            direct = float((norm(z[0] @ t.float()).double() - d).norm() / d.norm())
        assert direct == pytest.approx(after, rel=1e-4), lr
        assert (after < 0.5 * before) if improves else (after == before), (lr, before, after)
        assert all(p.requires_grad for p in norm.parameters())  # the model's norm is left as the fit found it


def test_a_fit_through_the_norm_keeps_the_rows_of_its_first_tokens_up_to_its_limit() -> None:
    """The rows are kept in memory (two float32 rows a token, MAX_NORM_TOKENS at most): past the limit, later
    batches' tokens are left out, and padding is never kept."""
    z = torch.arange(2 * 20 * 3, dtype=torch.float32).reshape(2, 20, 3)
    r = torch.ones(2, 20, 3)
    keep = torch.ones(2, 20, dtype=torch.bool)
    keep[1, 12:] = False  # 32 real tokens a batch
    tokens = _Tokens(limit=70)
    for _ in range(3):
        tokens.add(z, r, 3 * z, keep)
    first = torch.cat([z[keep]] * 3)[:70]
    assert tokens.tokens == 70
    torch.testing.assert_close(torch.cat(tokens.z), first, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(tokens.d), 3 * first - 1, rtol=0, atol=0)


def test_a_whole_projection_is_fitted_in_closed_form_and_pulled_toward_its_own_weight() -> None:
    """Rows are the projection's inputs (wider than its output): a tiny ridge recovers the true weight, an
    infinite one gives the projection back as it was (plain pruning), and the residuals from the sums are those
    of a direct evaluation."""
    gen = torch.Generator().manual_seed(1)
    batch, seq, inputs, dim = 4, 50, 24, 8
    h = torch.randn(batch, seq, inputs, generator=gen)
    r = torch.randn(batch, seq, dim, generator=gen)
    own = torch.randn(inputs, dim, generator=gen)  # the projection's weight as [inputs, outputs]
    true = own + 0.5 * torch.randn(inputs, dim, generator=gen)
    y = r + h @ true
    keep = torch.ones(batch, seq, dtype=torch.bool)
    stats = _Stats()
    stats.add(h, r, y, keep)
    stats.anchor = own.double()
    torch.testing.assert_close(stats.solve(ridge=1e-12), true.double(), rtol=1e-6, atol=1e-6)
    assert torch.equal(stats.solve(ridge=float("inf")), own.double())
    torch.testing.assert_close(stats.solve(ridge=1e9), own.double(), rtol=0, atol=1e-5)  # toward it, not zero
    d = (y - r).double()[keep]
    direct_before = float((h[keep].double() @ own.double() - d).norm() / d.norm())
    assert stats.relative_residual() == pytest.approx(direct_before, rel=1e-7)
    fitted = stats.solve(ridge=0.5)
    direct_after = float((h[keep].double() @ fitted - d).norm() / d.norm())
    assert stats.relative_residual(fitted) == pytest.approx(direct_after, rel=1e-7)
    assert direct_after < direct_before


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_the_projection_fit_reaches_what_the_map_reaches_and_more(tiny_family, name: str, tiny_tokens,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every map folded into the projection is one of its refits (its bias fitted with it), so at the same (tiny)
    ridge the whole projection's calibration residual is at most the map's, and lower on these models. At an
    infinite ridge it leaves the projection unchanged and writes nothing. A projection wider than the limit gets the
    map, and so does a fit that would choose its ridge on too few samples."""
    from shortgpt_desktop.core import defaults

    loaded = load_model(resolve(str(tiny_family(name))), "cpu", "float32")
    model, family = loaded.model, loaded.family
    fits = {fit: fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=1e-6, fit=fit)
            for fit in ("map", "projection")}
    (mapped,), (whole,) = fits["map"].runs, fits["projection"].runs
    assert (mapped.fit, whole.fit) == ("map", "projection")
    assert whole.inputs == mapped.inputs == 128  # the MLP's intermediate width, not its output's 64 (Conv1D: first)
    assert whole.residual_after < 0.95 * mapped.residual_after, (whole, mapped)
    # the same error, summed as d × d and as k × k quadratic forms: float64 sums of float32 rows differ in the 9th digit
    assert whole.residual_before == pytest.approx(mapped.residual_before, rel=1e-7)
    # The kept layer after the run is refitted too (its projection whole, as the run's is; the map gets none).
    assert [(c.patched_layer, c.fit) for c in fits["projection"].corrections] == [(4, "projection")]
    assert not fits["map"].corrections
    after = {name.replace(".1.", ".4.") for name in fits["map"].tensors}
    assert fits["projection"].tensors.keys() == fits["map"].tensors.keys() | after  # GPT-2's bias is fitted too
    # An infinite ridge leaves each projection as it is, so there is nothing new to write (a GGUF would re-quantize
    # an unchanged tensor); the runs still say what their error is.
    untouched = fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=float("inf"))
    assert untouched.runs[0].fit == "projection" and untouched.runs[0].repaired and len(untouched.corrections) == 1
    assert untouched.tensors == {}
    assert untouched.runs[0].residual_after == pytest.approx(untouched.runs[0].residual_before, rel=1e-9)
    assert fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=RIDGE).runs[0].fit == "projection"
    # Too few samples to choose its ridge (8 of the 20 it takes): the map, at the fixed ridge.
    assert fit_linear_repair(model, family, tiny_tokens, [2, 3]).runs[0].fit == "map"
    monkeypatch.setattr(defaults, "MAX_PROJECTION_INPUTS", whole.inputs - 1)
    assert fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=RIDGE).runs[0].fit == "map"


def test_contiguous_runs() -> None:
    assert contiguous_runs([7, 3, 4]) == [(3, 5), (7, 8)]
    assert contiguous_runs([]) == []


def test_every_family_says_what_to_patch_or_why_not() -> None:
    for family in FAMILIES:
        assert (family.mlp_out is None) == bool(family.repair_note), family.name


# -------------------------------------------------------------------------------------- tiny families


def actual_relative_residual(model, family, tokens, result, run) -> float:
    """‖h − Y‖ / ‖Y − R‖ measured on the repaired, pruned model itself (no use of the fit's sums)."""
    layers = get_submodule(model, family.layers_path)
    grab: dict[str, list[torch.Tensor]] = {"y": [], "out": [], "m": []}
    ids = torch.tensor(tokens.samples)  # all samples have seq_len tokens: no padding
    hooks = [layers[run.end - 1].register_forward_hook(lambda m, a, o: grab["y"].append(o[0] if isinstance(
        o, tuple) else o))]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    layer = layers[run.patched_layer]
    # What the layer adds to the residual stream: the projection's output, or the norm's after it.
    adds = get_submodule(layer, family.mlp_out_norm or family.mlp_out)
    hooks = [layer.register_forward_hook(lambda m, a, o: grab["out"].append(o[0] if isinstance(o, tuple) else o)),
             adds.register_forward_hook(lambda m, a, o: grab["m"].append(o.clone()))]
    with torch.no_grad(), repaired_pruned_view(model, family, result):
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    y, out = grab["y"][0].double(), grab["out"][0].double()
    m = grab["m"][0].double().reshape(out.shape)  # OPT runs its MLP on [tokens, hidden]
    r = out - m
    return float((out - y).norm() / (y - r).norm())


@pytest.mark.parametrize("fit", ["map", "projection"])
def test_a_projections_bias_is_folded_and_anchored_as_its_weight_is(tiny_family, tiny_tokens, fit: str) -> None:
    """Every tiny model's biases are zero, which hid what a fit does with them. With random biases on GPT-2 (whose
    MLP output projection has one): the saved tensors give the residual the fit reports (a map T folds the bias as
    Tᵀb), and a fit pulled hard toward "as it was" leaves the bias as it was, not zero."""
    loaded = load_model(resolve(str(tiny_family("gpt2"))), "cpu", "float32")
    model, family = loaded.model, loaded.family
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    result = fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=0.05, fit=fit)
    run = result.runs[0]
    assert run.fit == fit and run.patched_layer == 1
    assert actual_relative_residual(model, family, tiny_tokens, result, run) == pytest.approx(run.residual_after,
                                                                                                rel=1e-3)
    held = fit_linear_repair(model, family, tiny_tokens, [2, 3], ridge=1e9, fit=fit)
    bias = f"{family.layers_path}.1.{family.mlp_out}.bias"
    torch.testing.assert_close(held.tensors[bias], model.get_parameter(bias), rtol=0, atol=1e-4)


def test_a_post_layer_norm_opt_is_not_repaired_and_says_why(tiny_model: Path, tiny_tokens, tmp_path: Path) -> None:
    """OPT-350m normalises after the residual add, so a map folded into the MLP's projection would be undone by the
    norm: the repair leaves it as it is (the fit would be on meaningless states) and the note says why."""
    model_type, kwargs = TINY_FAMILIES["opt"]
    folder = build_tiny_model(tmp_path / "opt-post-ln", model_type, tokenizer_from=tiny_model,
                              config_overrides={**kwargs, "do_layer_norm_before": False})
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    result = fit_linear_repair(loaded.model, loaded.family, tiny_tokens, [2, 3], ridge=RIDGE)
    assert result.tensors == {} and [r.note for r in result.runs] == [NOTE_POST_LN]


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_family_repair_saves_and_reloads(tiny_family, name: str, tiny_model: Path, tiny_tokens, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder = tiny_family(name)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    n = loaded.n_layers
    removed = [2, 3, n - 1]
    with torch.no_grad():
        before = model(input_ids=PROMPT).logits
    # The fixed ridge given: the whole projection is fitted even on these 8 samples (too few to choose a ridge).
    result = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, ridge=RIDGE)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=PROMPT).logits, before, rtol=0, atol=0)  # model untouched

    assert [(r.start, r.end) for r in result.runs] == contiguous_runs(removed)
    if name in NOT_REPAIRED:
        assert not result.tensors
        assert all(NOT_REPAIRED[name] in r.note for r in result.runs), result.notes
        return
    repaired = [r for r in result.runs if r.repaired]
    if name == "qwen2_moe":  # layer 1 is sparse (MoE), layer n-2 = 4 is dense
        assert [r.patched_layer for r in repaired] == [n - 2]
        assert "mixture of experts" in result.runs[0].note
    elif name == "qwen3_moe":  # only layers 0 and 3 are dense
        assert not repaired and all("mixture of experts" in r.note for r in result.runs)
        return
    else:
        assert [r.patched_layer for r in repaired] == [1, n - 2]
    for run in repaired:
        assert run.residual_after < run.residual_before, run
        assert run.parameter in result.tensors
        assert (run.norm is not None) == (name in THROUGH_NORM), run
        assert run.fit == ("map" if name in THROUGH_NORM else "projection"), run
    last = repaired[-1]
    assert actual_relative_residual(model, family, tiny_tokens, result, last) == pytest.approx(
        last.residual_after, rel=1e-3)

    save_pruned(source=loaded.source, family=family, original_config=loaded.config, removed=removed,
                out=tmp_path / "plain", model=model, tokenizer=loaded.tokenizer)
    save_pruned(source=loaded.source, family=family, original_config=loaded.config, removed=removed,
                out=tmp_path / "repaired", model=model, tokenizer=loaded.tokenizer, replaced=result.tensors)
    assert headers(tmp_path / "repaired") == headers(tmp_path / "plain")
    plain_state, repaired_state = state_of(tmp_path / "plain"), state_of(tmp_path / "repaired")
    changed = {k for k in plain_state if not torch.equal(plain_state[k], repaired_state[k])}
    really_new = [k for k, v in result.tensors.items() if not torch.equal(v, model.get_parameter(k))]
    assert len(changed) == len(really_new) >= len(repaired)  # zero biases stay zero
    assert all(family.mlp_out.rsplit(".", 1)[-1] in k for k in changed), changed

    with torch.no_grad(), repaired_pruned_view(model, family, result):
        in_memory = model(input_ids=PROMPT).logits
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "repaired", dtype=torch.float32).eval()
    with torch.no_grad():
        saved = reloaded(input_ids=PROMPT).logits
    torch.testing.assert_close(saved, in_memory, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(in_memory[0, -1], before[0, -1])
    with torch.no_grad(), pruned_view(model, family, removed):
        plain = model(input_ids=PROMPT).logits
    assert not torch.allclose(in_memory, plain, atol=1e-4), "the repair changed nothing"


def test_first_layer_run_is_noted_and_apply_then_prune_matches_the_view(tiny_model: Path, tiny_tokens) -> None:
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    removed = [0, 1, 4]
    result = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, order="independent")
    assert result.runs[0].note == NOTE_FIRST_LAYER and result.runs[0].patched_layer is None
    assert result.runs[1].repaired and result.runs[1].patched_layer == 3
    assert list(result.tensors) == ["model.layers.3.mlp.down_proj.weight"]
    with torch.no_grad(), repaired_pruned_view(model, family, result):
        viewed = model(input_ids=PROMPT).logits
    from shortgpt_desktop.core.cut.surgery import prune_in_memory

    apply_repair(model, result, family)
    prune_in_memory(model, family, removed)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=PROMPT).logits, viewed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unpruned"):
        apply_repair(model, result, family)


def test_the_kept_layer_after_each_run_is_refitted_where_the_runs_projection_is(tiny_model: Path, small_calib: Path,
                                                                                tiny_family, tiny_tokens) -> None:
    """By default the kept layer after each run is refitted too where the run's projection is refitted whole: its
    ridge chosen on held-out samples like the run's, its calibration error no higher than before, the run's own fit
    unchanged (it comes first in the stream). A layer already patched for the next run is not patched twice. Where
    the run gets the map (fewer than 20 samples; through a norm) the layer after is left alone, as it is with
    ``both_sides=False``."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    tokens = build_token_set(loaded.tokenizer, [small_calib.read_text(encoding="utf-8")], samples=20, seq_len=32,
                             seed=0)
    both = fit_linear_repair(model, family, tokens, [2, 3])
    (after,) = both.corrections
    assert (after.patched_layer, after.fit, both.runs[0].fit) == (4, "projection", "projection")
    assert after.ridge is not None and after.held_out_residual is not None
    assert after.residual_after <= after.residual_before
    one = fit_linear_repair(model, family, tokens, [2, 3], both_sides=False)
    assert not one.corrections and sorted(both.tensors) == sorted([*one.tensors, after.parameter])
    assert torch.equal(both.tensors[one.runs[0].parameter], one.tensors[one.runs[0].parameter])
    assert [c.patched_layer for c in fit_linear_repair(model, family, tokens, [1, 3]).corrections] == [4]
    assert not fit_linear_repair(model, family, tiny_tokens, [2, 3]).corrections  # 8 samples: the map
    gemma = load_model(resolve(str(tiny_family("gemma3"))), "cpu", "float32")
    assert not fit_linear_repair(gemma.model, gemma.family, tiny_tokens, [2, 3], ridge=RIDGE).corrections


def test_both_sides_patches_the_kept_layer_after_each_run(tiny_model: Path, tiny_tokens) -> None:
    """``both_sides=True`` patches the layer after each run whatever the run's fit: a map here (8 samples, too few
    to judge a whole projection's ridge), which brings the pruned model's state leaving that layer closer to the
    original's on the calibration tokens. By default a map gets none (see :mod:`shortgpt_desktop.core.cut.repair`:
    a second map no held-out sample judged lost on held-out code on Gemma 3)."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    removed = [2, 3]
    one = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4)
    both = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, both_sides=True)
    assert [c.patched_layer for c in both.corrections] == [4]
    assert sorted(both.tensors) == ["model.layers.1.mlp.down_proj.weight", "model.layers.4.mlp.down_proj.weight"]
    assert list(one.tensors) == ["model.layers.1.mlp.down_proj.weight"]
    torch.testing.assert_close(both.tensors["model.layers.1.mlp.down_proj.weight"],
                               one.tensors["model.layers.1.mlp.down_proj.weight"])  # the run's own map first
    correction = both.corrections[0]
    assert correction.residual_after < 0.95 * correction.residual_before
    # Each fit's reported error is what the saved tensors give, measured on the repaired model itself: the layer
    # after a run is fitted toward the state leaving it, and a later run (here after a kept layer, 3, between the
    # first run's correction and the second run) is fitted on the stream through every kept layer before it.
    for removed, fits in (([2, 3], 2), ([1, 5], 3)):  # a run and its correction; two runs, one correction
        both = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, both_sides=True)
        # The target, given here rather than read from the fit: a run's original state is the one leaving its last
        # removed layer; a correction's, the one leaving the layer it patches.
        targets = [(run, run.end) for run in both.runs] + [(c, c.patched_layer + 1) for c in both.corrections]
        assert len(targets) == fits and all(run.repaired for run, _ in targets), removed  # none passed over
        for run, end in targets:
            where = SimpleNamespace(end=end, patched_layer=run.patched_layer)
            assert actual_relative_residual(model, family, tiny_tokens, both, where) == pytest.approx(
                run.residual_after, rel=1e-3), (removed, run)


@pytest.mark.parametrize("removed", [[2, 3], [2], [1, 4], [0, 3], [1, 2, 4]])
@pytest.mark.parametrize("both_sides", [False, True])
def test_the_repair_bar_counts_to_its_total(tiny_model: Path, tiny_tokens, removed: list[int],
                                            both_sides: bool) -> None:
    """The bar counted the layers before the streams split twice: it stopped at 5 of 7 (and a one-layer cut,
    never counted past 0 on a pipe, showed '0/6' to the end)."""
    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    seen: list[tuple[int, int]] = []
    fit_linear_repair(loaded.model, loaded.family, tiny_tokens, removed, batch_size=4, both_sides=both_sides,
                      progress=lambda stage, done, total, partial=None: seen.append((done, total)))
    if removed[0] == 0 and len(removed) == 1:
        return
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and len(seen) == seen[-1][1] + 1


# ------------------------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def smollm2_bi(smollm2, valid_text: Path, test_text: Path):
    """SmolLM2-135M scored once with BI on the shipped WikiText-2 slices; 8 of 30 layers planned away."""
    from shortgpt_desktop.core.cut.plan import make_plan
    from shortgpt_desktop.core.measure.metrics import score_model

    loaded = smollm2
    tokens = build_token_set(loaded.tokenizer, [valid_text.read_text(encoding="utf-8")],
                             [test_text.read_text(encoding="utf-8")], samples=32, seq_len=256, max_eval_windows=32)
    scores = score_model(loaded.model, loaded.family, tokens, "bi", batch_size=8)
    return loaded, tokens, make_plan(loaded.n_layers, scores.scores, count=8).removed


@pytest.mark.slow(seconds=171)
def test_repair_lowers_smollm2_perplexity(smollm2_bi) -> None:
    from shortgpt_desktop.core.measure.evaluation import perplexity_of

    loaded, tokens, removed = smollm2_bi
    model, family = loaded.model, loaded.family

    def ppl() -> float:
        return perplexity_of(model, tokens.eval_windows, tokens.pad_id, 8).perplexity

    with pruned_view(model, family, removed):
        plain = ppl()
    # One pass ("independent"), the cheaper order; the default ("sequential", each run fitted on the output of the
    # runs repaired before it) is what the default-recipe test in tests/core/test_real_model.py measures. No
    # benchmark compares the two orders.
    result = fit_linear_repair(model, family, tokens, removed, batch_size=8, order="independent")
    with repaired_pruned_view(model, family, result):
        repaired = ppl()
    print(f"SmolLM2-135M, removed {removed}: plain BI ppl {plain:.2f}, BI + repair {repaired:.2f}; "
          + "; ".join(f"{r.start}-{r.end - 1}: {r.residual_before:.3f}→{r.residual_after:.3f}"
                      for r in result.runs if r.repaired))
    assert all(r.repaired for r in result.runs if r.start > 0)
    assert repaired < REPAIRED_PPL_BOUND < plain


def test_repair_through_the_norm_lowers_held_out_loss_on_a_tiny_gemma3(tiny_model: Path, valid_text: Path,
                                                                        test_text: Path, tmp_path: Path) -> None:
    """Gemma 3 normalises the MLP output; the map fitted through that norm still helps on text it never saw."""
    from transformers import AutoTokenizer

    from shortgpt_desktop.core.measure.evaluation import perplexity_of

    model_type, kwargs = TINY_FAMILIES["gemma3"]
    folder = build_tiny_model(tmp_path / "gemma3", model_type, config_overrides=kwargs, tokenizer_from=tiny_model)
    loaded = load_model(resolve(str(folder)), "cpu", "float32")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = build_token_set(tokenizer, [valid_text.read_text(encoding="utf-8")[:60_000]],
                             [test_text.read_text(encoding="utf-8")[:20_000]], samples=32, seq_len=64,
                             max_eval_windows=16)
    model, family = loaded.model, loaded.family
    removed = [2, 3]
    result = fit_linear_repair(model, family, tokens, removed, batch_size=8)
    assert result.runs[0].repaired and result.runs[0].norm is not None
    with pruned_view(model, family, removed):
        plain = perplexity_of(model, tokens.eval_windows, tokens.pad_id, 8)
    with repaired_pruned_view(model, family, result):
        repaired = perplexity_of(model, tokens.eval_windows, tokens.pad_id, 8)
    assert repaired.nll < plain.nll, (plain.nll, repaired.nll)


@pytest.mark.parametrize("name", ["llama", "gemma3", "gpt2"])
def test_fits_sharing_the_originals_states_give_what_each_fit_gives_alone(tiny_family, name: str, tiny_tokens,
                                                                         ) -> None:
    """bi+ fits a repair for each finalist on the same samples; the original's states one fit ran are kept for the
    next (:class:`OriginalStates`). Each fit must give bit for bit the tensors and residuals it gives alone, the
    progress bar must count the same layer runs, and the original must really not run again where a state was
    kept. Other samples clear the kept states."""
    import dataclasses

    from shortgpt_desktop.core.backends.layerwise import InMemoryStack
    from shortgpt_desktop.core.cut.repair import OriginalStates

    loaded = load_model(resolve(str(tiny_family(name))), "cpu", "float32")
    model, family = loaded.model, loaded.family
    stack = InMemoryStack(model, family)
    runs: list[int] = []
    run_layers = stack.run_layers

    def counting(batches, indices, *args, **kwargs):
        indices = list(indices)
        if kwargs.get("weights") is None and not args:  # the original's stream (the pruned one has weights)
            runs.append(len(indices))
        return run_layers(batches, indices, *args, **kwargs)

    stack.run_layers = counting  # type: ignore[method-assign]
    original = OriginalStates()
    sets = ([2, 3], [3, 5], [2, 3, 5], [1, 4])
    for removed in sets:
        said: list[tuple[int, int]] = []
        alone = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, stack=stack,
                                  progress=lambda stage, done, total, _, said=said: said.append((done, total)))
        runs.clear()
        heard: list[tuple[int, int]] = []
        shared = fit_linear_repair(model, family, tiny_tokens, removed, batch_size=4, stack=stack, original=original,
                                   progress=lambda stage, done, total, _, heard=heard: heard.append((done, total)))
        assert sorted(shared.tensors) == sorted(alone.tensors)
        for key, value in alone.tensors.items():
            assert torch.equal(shared.tensors[key], value), key
        assert [(r.residual_before, r.residual_after) for r in shared.runs] == [
            (r.residual_before, r.residual_after) for r in alone.runs]
        assert heard[-1] == said[-1]  # the bar ends where it ends alone
        if removed == [2, 3, 5]:  # [2, 3] and [3, 5] kept the states entering 1 and 2 (their splits), 4 and 6
            assert sum(runs) <= 1, runs
    assert original.layers_skipped > 0
    assert set(original.states) >= {1, 4, 6}
    other = dataclasses.replace(tiny_tokens, samples=[list(reversed(s)) for s in tiny_tokens.samples])
    alone = fit_linear_repair(model, family, other, [2, 3], batch_size=4, stack=stack)
    shared = fit_linear_repair(model, family, other, [2, 3], batch_size=4, stack=stack, original=original)
    assert all(torch.equal(shared.tensors[k], v) for k, v in alone.tensors.items())
    assert set(original.states) == {1, 4}  # the other samples' states only


def test_original_states_past_their_budget_are_not_kept_and_the_log_says_so(tiny_model: Path, tiny_tokens,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from shortgpt_desktop.core.cut.repair import OriginalStates

    loaded = load_model(resolve(str(tiny_model)), "cpu", "float32")
    model, family = loaded.model, loaded.family
    alone = fit_linear_repair(model, family, tiny_tokens, [2, 3], batch_size=4)
    one_layer = sum(len(s) for s in tiny_tokens.samples) * model.config.hidden_size * 4  # float32, no padding
    original = OriginalStates(budget=one_layer)  # room for the states entering one layer, not two
    with caplog.at_level("INFO", logger="shortgpt_desktop.core.cut.repair"):
        for _ in range(2):
            shared = fit_linear_repair(model, family, tiny_tokens, [2, 3], batch_size=4, original=original)
            assert all(torch.equal(shared.tensors[k], v) for k, v in alone.tensors.items())
    assert list(original.states) == [1] and original.kept_bytes <= one_layer
    assert original.layers_skipped == 1  # the second fit took layer 1's states, then ran the original on to 4
    assert sum("not kept for the next fit" in r.message for r in caplog.records) == 1  # said once


def _sums(m: torch.Tensor, d: torch.Tensor, rows_per_batch: int = 4, fit: str = "map"):
    """The fit's sums over samples ``m``, ``d`` ([samples, tokens, dim]) as the fit makes them, every 10th
    sample held apart (``m`` a projection's inputs where ``fit`` is "projection")."""
    observer = _PatchedLayer.__new__(_PatchedLayer)
    observer.rows = [(m[i:i + rows_per_batch], torch.zeros_like(d[i:i + rows_per_batch]),
                      torch.ones(m[i:i + rows_per_batch].shape[:2], dtype=torch.bool))
                     for i in range(0, m.shape[0], rows_per_batch)]
    targets = [d[i:i + rows_per_batch] for i in range(0, m.shape[0], rows_per_batch)]
    return _statistics(RunRepair(0, 1, fit=fit), observer, targets, choose=True)


def test_the_ridge_chosen_on_held_out_samples_follows_what_the_samples_can_tell() -> None:
    """Many samples of a real map: a small ridge; few samples of a map that is the identity plus noise: the
    identity (the run left as plain pruning: nothing written), where every ridge's fit does worse on the held-out
    samples than no fit."""
    generator = torch.Generator().manual_seed(0)
    dim = 32
    mix = torch.eye(dim) + 0.5 * torch.randn(dim, dim, generator=generator)

    many = torch.randn(200, 16, dim, generator=generator)
    stats = _sums(many, many @ mix + 0.01 * torch.randn(200, 16, dim, generator=generator))
    assert stats.held is not None and stats.held.tokens == 20 * 16  # samples 9, 19, ..., 199
    ridge, residual = choose_ridge(stats, stats.held)
    assert ridge <= 1e-2 and residual < 0.05

    few = torch.randn(20, 2, dim, generator=generator)  # 36 training rows for a 32 × 32 map
    stats = _sums(few, few + 2.0 * torch.randn(20, 2, dim, generator=generator))
    ridge, _ = choose_ridge(stats, stats.held)
    assert math.isinf(ridge)


def test_a_whole_projections_ridge_is_chosen_against_its_own_weight() -> None:
    """Choosing for a whole projection, the held-out samples' "no fit" is the projection's own weight, not an
    identity (which a k × d sum would not even be): targets its own weight already gives, plus noise, choose the
    weight back (no fit written), and the held-out residual of the weight is that of a direct evaluation."""
    generator = torch.Generator().manual_seed(2)
    inputs, dim = 48, 8
    own = torch.randn(inputs, dim, generator=generator)
    h = torch.randn(20, 3, inputs, generator=generator)  # 54 training rows for 48 × 8 unknowns
    y = h @ own + 2.0 * torch.randn(20, 3, dim, generator=generator)
    stats = _sums(h, y, fit="projection")
    assert stats.held is not None
    stats.set_anchor(own.double())  # as the fit does once it has the projection's weight
    ridge, _ = choose_ridge(stats, stats.held)
    assert math.isinf(ridge)
    held_rows = h[9::10].reshape(-1, inputs).double()
    d = y[9::10].reshape(-1, dim).double()
    direct = float((held_rows @ own.double() - d).norm() / d.norm())
    assert stats.held.relative_residual() == pytest.approx(direct, rel=1e-9)


def test_a_fit_that_chooses_its_ridge_is_the_fit_with_that_ridge_on_every_sample(tiny_model: Path,
                                                                                   small_calib: Path) -> None:
    """The choice holds samples out only to choose: the map saved is fitted on every sample, with the ridge
    chosen (which the run records, with its held-out residual); too few samples to hold two out: the fixed one."""
    source = resolve(str(tiny_model))
    loaded = load_model(source, device="cpu", dtype="float32")
    tokens = build_token_set(loaded.tokenizer, [small_calib.read_text(encoding="utf-8")], samples=20, seq_len=32,
                             seed=0)
    chosen = fit_linear_repair(loaded.model, loaded.family, tokens, [2, 3], ridge=None, both_sides=False)
    run = chosen.runs[0]
    assert run.ridge is not None and run.held_out_residual is not None and run.repaired
    if run.ridge != float("inf"):
        fixed = fit_linear_repair(loaded.model, loaded.family, tokens, [2, 3], ridge=run.ridge, both_sides=False)
        assert chosen.tensors.keys() == fixed.tensors.keys()
        for name in chosen.tensors:
            torch.testing.assert_close(chosen.tensors[name], fixed.tensors[name], rtol=0, atol=0)
    few = dataclasses.replace(tokens, samples=tokens.samples[:19])  # one held-out sample: too little to judge
    assert fit_linear_repair(loaded.model, loaded.family, few, [2, 3], ridge=None).runs[0].ridge == RIDGE
