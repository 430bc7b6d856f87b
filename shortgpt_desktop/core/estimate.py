"""How long a whole job will take, from the measured speed of its first scoring batch.

Every step of the recipe runs decoder layers over tokens, and most end with the LM head; the scoring pass
measures the seconds one token spends in one decoder layer, and the head costs about as much as
``vocabulary × hidden / parameters per layer`` layers. The steps then cost what they run:

- scoring: every calibration token through every layer;
- bi+'s measured choice (:mod:`.cut.selection`): each layer's removal alone, then each greedy step's candidates and
  the finalists, on the first calibration samples, each from the layer where it differs (about half the stack);
- the repair (:mod:`.cut.repair`): the original's and the pruned model's streams over every calibration token;
- the check: the original once and the pruned model once over the held-out windows, two heads for the latter.

The figures are an estimate said as such, and they are measured against the real job in the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelShape:
    n_layers: int
    layer_params: float  # mean parameters per decoder layer
    head_params: float  # vocabulary × hidden

    @property
    def head_layers(self) -> float:
        """The head's cost in decoder layers."""
        return self.head_params / max(self.layer_params, 1.0)


@dataclass
class JobEstimate:
    """Seconds per step (in the order they run) and in all."""

    steps: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.steps.values())


def shape_of(loaded: Any) -> ModelShape:
    """The decoder's per-layer size and the head's, from the loaded model (or the streamed skeleton)."""
    from .model.families import get_submodule

    layers = get_submodule(loaded.model, loaded.family.layers_path)
    per_layer = sum(p.numel() for p in layers[0].parameters())
    embed = loaded.model.get_input_embeddings()
    head = float(embed.weight.numel()) if embed is not None else 0.0
    return ModelShape(len(layers), float(per_layer), head)


def estimate_job(spec: Any, shape: ModelShape, seconds_per_token_layer: float, sample_tokens: int,
                 eval_tokens: int, count: int | None, refines: bool) -> JobEstimate:
    """The job ``spec`` describes (its metric, count, repair, healing, check), at the measured speed."""
    from .cut.selection import DEFAULT_EVAL_SAMPLES, DEFAULT_WINDOW

    n, head = shape.n_layers, shape.head_layers
    rate = seconds_per_token_layer
    out = JobEstimate()
    out.steps["scoring"] = sample_tokens * n * rate
    if count and refines:
        import math

        subset = sample_tokens * min(DEFAULT_EVAL_SAMPLES, spec.samples) / max(spec.samples, 1)
        stride = min(8, max(1, math.ceil(head / 4)))  # as cut.candidates.head_stride scores the search
        candidates = n + count * 2 * DEFAULT_WINDOW + 4
        # Each candidate runs from where it differs (about half the stack) and a strided head; each greedy step
        # refreshes the cache from the layer it chose (about half the stack again).
        out.steps["choosing"] = subset * (candidates * (n / 2 + head / stride) + count * n / 2) * rate
    if count and spec.repair != "none":
        out.steps["repairing"] = sample_tokens * (2 * n - count) * rate
    if count and spec.heal_steps > 0:
        step_tokens = spec.batch_size * spec.seq_len
        out.steps["healing"] = spec.heal_steps * step_tokens * 3 * (n - count + head) * rate
    if count and spec.check_perplexity:
        out.steps["checking"] = eval_tokens * ((n + head) + (n - count + 2 * head)) * rate
    return out
