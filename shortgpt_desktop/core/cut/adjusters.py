"""What mends a pruned model, as a registry: each adjuster takes the plan and the weights its predecessors gave,
and returns new values for a few existing weights (the pruned model keeps its stock architecture).

The engine runs every adjuster the job's settings ask for, in registry order, and never names one: adding a
way to mend is one class and one :func:`register` call. Shipped: the training-free linear repair
(:mod:`.repair`), the refit of the kept MLPs beside the cuts on cached activations (:mod:`.mlp_refit`), then
healing (:mod:`.healing`, LoRA on the kept layers, distilled from the original).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..defaults import REPAIRS
from ..errors import UserError
from ..progress import CancelCheck, Progress

log = logging.getLogger(__name__)


@dataclass
class AdjustContext:
    """What an adjuster may use: the model (through its backend), the calibration tokens and the job settings."""

    loaded: Any  # model.loading.LoadedModel
    stack: Any  # backends.layerwise.LayerStack
    tokens: Any  # measure.calibration.TokenSet
    spec: Any  # pipeline.JobSpec
    progress: Progress
    cancel: CancelCheck | None
    #: The original's distributions on the calibration batches, built on demand (healing distils from them).
    teacher: Callable[[], Any]
    #: The model pruned as planned with the given weights in, for the block (pipeline.modified).
    modified: Callable[[Sequence[int], dict[str, Any]], Any]
    #: ``repair_for(removed, progress)``: the linear repair of ``removed`` on these tokens, fitted once per job
    #: (bi+ may have fitted it already to ask the set whether it still answers).
    repair_for: Callable[[Sequence[int], Progress | None], Any]
    #: The tokens the repair is fitted on (the calibration samples, and a chat model's own answers).
    fit_tokens: Callable[[], Any]


class Adjuster:
    """One way to mend a pruned model. ``apply`` returns (its result, new weights with ORIGINAL indices)."""

    name: ClassVar[str]

    def wanted(self, spec: Any) -> bool:
        raise NotImplementedError

    def check(self, spec: Any) -> None:
        """Refuse settings this adjuster cannot take, before any work."""

    def apply(self, ctx: AdjustContext, removed: Sequence[int], weights: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


class LinearRepair(Adjuster):
    name = "repair"

    def wanted(self, spec: Any) -> bool:
        return spec.repair != "none"

    def check(self, spec: Any) -> None:
        if spec.repair not in REPAIRS:
            raise UserError(f"Unknown repair {spec.repair!r}: choose {', '.join(REPAIRS[:-1])} or {REPAIRS[-1]}.")

    def apply(self, ctx: AdjustContext, removed: Sequence[int], weights: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        result = ctx.repair_for(removed, ctx.progress)
        return result, dict(result.tensors)


class MlpRefit(Adjuster):
    """The kept MLP before each cut refitted on cached activations, from the linear repair's weights."""

    name = "refit"

    def wanted(self, spec: Any) -> bool:
        return spec.repair == "refit"

    def apply(self, ctx: AdjustContext, removed: Sequence[int], weights: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from .chat_guard import guard_refit
        from .mlp_refit import fit_mlp_refit

        repair = ctx.repair_for(removed, None)  # fitted already: the linear repair runs first
        result = fit_mlp_refit(ctx.stack, ctx.loaded.family, ctx.fit_tokens(), repair, ctx.spec.batch_size,
                               seed=ctx.spec.seed, progress=ctx.progress, cancel=ctx.cancel)
        guard_refit(result, repair, ctx.loaded.family, ctx.stack, ctx.loaded.tokenizer, ctx.loaded.model, removed,
                    ctx.progress, ctx.cancel)
        return result, dict(result.tensors)


class Healing(Adjuster):
    name = "heal"

    def wanted(self, spec: Any) -> bool:
        return spec.heal_steps > 0

    def apply(self, ctx: AdjustContext, removed: Sequence[int], weights: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from .healing import estimate_heal_seconds, heal, original_names

        loaded, spec = ctx.loaded, ctx.spec
        kept = [i for i in range(loaded.n_layers) if i not in set(removed)]
        teacher = ctx.teacher()
        # Every kept layer is adapted: on SmolLM2 (8 of 30 removed, 16 distilled steps) adapting only the layers
        # beside the cuts moved perplexity 67.0 → 66.4; adapting them all with next-token loss had given 58.3 in
        # 10 steps (a different loss, so not a like-for-like comparison: see benchmarks/bench_quality.py).
        beside = None
        with ctx.modified(removed, weights):
            logits_of = teacher.bind()
            estimate = estimate_heal_seconds(loaded.model, loaded.family, ctx.tokens, spec.heal_steps,
                                             spec.batch_size, teacher=logits_of, layers=beside)
            log.info("healing %d steps: about %.0f s", spec.heal_steps, estimate)
            ctx.progress("heal", 0, spec.heal_steps, estimate)  # the estimate, before the first step
            result = heal(loaded.model, loaded.family, ctx.tokens, steps=spec.heal_steps,
                          batch_size=spec.batch_size, seed=spec.seed, progress=ctx.progress, cancel=ctx.cancel,
                          keep_original=True, teacher=logits_of, layers=beside)
        return result, original_names(result.changed, loaded.family, kept)


ADJUSTERS: list[Adjuster] = []


def register(adjuster: Adjuster) -> Adjuster:
    ADJUSTERS.append(adjuster)
    return adjuster


for _adjuster in (LinearRepair(), MlpRefit(), Healing()):
    register(_adjuster)
