"""The adjusters run in registry order, each from the weights the ones before gave: healing trains the model as
repaired and refitted, and nothing after it overwrites what it merged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shortgpt_desktop.core.cut.adjusters import ADJUSTERS
from shortgpt_desktop.core.engine import Engine
from shortgpt_desktop.core.pipeline import JobSpec


def test_healing_starts_from_the_repaired_and_refitted_weights_and_comes_last(tiny_model: Path,
                                                                              small_calib: Path) -> None:
    assert [a.name for a in ADJUSTERS] == ["repair", "refit", "heal"]
    spec = JobSpec(model=str(tiny_model), calib=[str(small_calib)], samples=8, seq_len=32, batch_size=4,
                   device="cpu", dtype="float32", prompt="", metric="bi", repair="refit", heal_steps=1)
    engine = Engine()
    adjusted = engine.adjust(spec, [2, 3])
    before_healing = {**adjusted.repair.tensors, **adjusted.refit.tensors}
    assert before_healing and adjusted.heal is not None
    model = engine.loaded.model
    for name, mended in before_healing.items():
        if mended.dim() != 2:
            continue  # healing adapts the projections' weights only
        healed, original = adjusted.weights[name], model.get_parameter(name).detach()
        # One small step from the mended weights: it moved them (it ran last: nothing overwrote it), a little,
        # and they stay far nearer the mended values than the original's (it trained the mended model).
        assert not torch.equal(healed, mended), name
        assert float((healed - mended).norm()) < 0.2 * float((mended - original).norm()), name


def test_an_unknown_repair_is_refused_with_the_ones_there_are() -> None:
    """A JobSpec made in Python can name any repair; the command line and the window offer only these."""
    from types import SimpleNamespace

    from shortgpt_desktop.core.errors import UserError

    repair = next(a for a in ADJUSTERS if a.name == "repair")
    for known in ("linear", "refit", "none"):
        repair.check(SimpleNamespace(repair=known))
    with pytest.raises(UserError, match=r"^Unknown repair 'fancy': choose linear, refit or none\.$"):
        repair.check(SimpleNamespace(repair="fancy"))
