"""How long a whole job will take, from the measured speed of its first scoring batch.

Every step of the recipe runs decoder layers over tokens, and most end with the LM head; the scoring pass
measures the seconds one token spends in one decoder layer, and the head costs about as much as
``vocabulary × hidden / parameters per layer`` layers. The steps then cost what they run:

- scoring: every calibration token through every layer;
- bi+'s measured choice (:mod:`.cut.selection`): each layer's removal alone, then each greedy step's candidates and
  the finalists, on the first calibration samples, each from the layer where it differs (about half the stack),
  and for a job that repairs, each finalist's quick fit and repaired measurement;
- for a chat model, the original's own answers the repair is fitted on too (:mod:`.cut.own_answers`): each
  new token a short step for all prompts with the KV cache in memory, or a pass over every prompt's tokens so far
  when streamed;
- the repair (:mod:`.cut.repair`): the original's and the pruned model's streams over every token it fits on (the
  samples and a chat model's own answers), as deep as the last removed layer where the layers are known, and for
  each run of removed layers whose MLP output projection it refits whole, float64 sums of that
  projection's ``k``-wide inputs squared over every token (about :data:`PROJECTION_SUMS_COST` × ``k²`` /
  parameters per layer layer runs a token), and as much again for the kept layer after the run, refitted too;
- the MLP refit (:mod:`.cut.mlp_refit`, ``--repair refit``): both streams again, then per run of removed layers
  (about one per two layers removed) the training steps of one MLP over the kept tokens, forward, backward and
  update (:data:`.cut.mlp_refit.REFIT_STEP_COST` forward passes' worth a row); for a chat model its guard
  (:mod:`.cut.chat_guard`) adds the original's answers to the check prompts and one pass of them per variant it
  scores;
- the check: the original once and the pruned model once over the held-out windows, two heads for the latter,
  then both models' continuations of the prompt and the quiz's answers;
- greedy generation with the KV cache (the answers, the quiz, the continuation): the prompts' pass, then each new
  token a step that costs at least what the scoring job timed for one (:class:`StepProbe`): such a step reads every
  weight whatever its rows, so its tokens' share of a long pass said a half to a 26th of its time.

The figures are an estimate said as such, and they are measured against the real job in the benchmarks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import defaults

#: What the float64 sums of a whole projection's fit cost per token, in layer runs, per ``k²`` / parameters per
#: layer: SmolLM2-135M (k = 1,536) 381.6 ms for the sums of 2,048 tokens against 409.6 ms for a decoder layer over
#: them, where ``k²`` / parameters per layer is 0.59.
PROJECTION_SUMS_COST = 1.6

#: What one ridge of a fit costs, a float64 solve of the ``k × k`` system and its residual on the held-out sums
#: (about ⅔k³ + 4k²·hidden operations), in layer runs of one token per that count / parameters per layer: a
#: 2,816-wide projection of a 1,024-wide Llama layer solved in 0.65 s against 179 µs for the layer over a token
#: (1.5 times the count), a 1,536-wide one of a 576-wide layer in 0.10 s against 62.5 µs (1.2), one thread. Every
#: fit tries each of ``RIDGE_CHOICES`` where there are samples to hold out, then solves once more: a reviewer's
#: random 1.3 GB Llama repaired in 168 s where 48.8 s was said, these solves left out.
RIDGE_SOLVE_COST = 1.4


@dataclass
class ModelShape:
    n_layers: int
    layer_params: float  # mean parameters per decoder layer
    head_params: float  # vocabulary × hidden
    mlp_params: float = 0.0  # parameters of a layer's MLP (0: not known; two thirds of the layer is assumed)
    hidden: int = 0  # the residual stream's width
    projection_inputs: int = 0  # the input width of the MLP output projection the repair refits whole (0: a map)
    #: Whether the repair solves a linear system (False where a norm follows the MLP output, Gemma 2/3 and OLMo 2:
    #: fitted by gradient steps instead).
    solves: bool = True

    @property
    def head_layers(self) -> float:
        """The head's cost in decoder layers."""
        return self.head_params / max(self.layer_params, 1.0)


@dataclass
class JobEstimate:
    """Seconds per step (in the order they run) and in all, and the speed they come from (``the second
    scoring batch``)."""

    steps: dict[str, float] = field(default_factory=dict)
    basis: str = "the scoring pass"

    @property
    def total(self) -> float:
        return sum(self.steps.values())


def shape_of(loaded: Any) -> ModelShape:
    """The decoder's per-layer size and the head's, from the loaded model (or the streamed skeleton)."""
    from .cut.mlp_refit import mlp_path
    from .model.families import get_submodule

    layers = get_submodule(loaded.model, loaded.family.layers_path)
    per_layer = sum(p.numel() for p in layers[0].parameters())
    embed = loaded.model.get_input_embeddings()
    head = float(embed.weight.numel()) if embed is not None else 0.0
    mlp = 0.0
    module = mlp_path(loaded.family)
    if module is not None:
        with contextlib.suppress(AttributeError):  # no such module: the share is assumed
            mlp = float(sum(p.numel() for p in get_submodule(layers[0], module).parameters()))
    hidden = int(embed.weight.shape[1]) if embed is not None else 0
    return ModelShape(len(layers), float(per_layer), head, mlp, hidden, projection_inputs(loaded.family, layers),
                      solves=loaded.family.mlp_out_norm is None)


def projection_inputs(family: Any, layers: Any) -> int:
    """The input width of the MLP output projection the repair refits whole (:mod:`.cut.repair`), 0 where it fits
    a map: a norm after the projection, none known, or wider than :data:`.defaults.MAX_PROJECTION_INPUTS`."""
    from .cut.repair import input_width
    from .model.families import get_submodule, refits_whole

    if family.mlp_out is None:
        return 0
    for layer in layers:
        with contextlib.suppress(AttributeError):  # a mixture-of-experts layer has no single projection
            width = input_width(get_submodule(layer, family.mlp_out))
            return width if refits_whole(family, width) else 0
    return 0


#: Rows of the larger step the probe times (:class:`StepProbe`): the repair's own answers run 24 prompts at once.
PROBE_ROWS = 24
#: How often each step is timed; the median is kept. Timed once, one step slowed by another program on the machine
#: stood for all: a 24-row step of SmolLM2 took 0.6-6.9 s from one try to the next under load, and the answers of a
#: job of 21 s were said at 4 min 21 s. Each try costs one step of each size more before the job.
PROBE_TRIES = 3


@dataclass
class StepProbe:
    """Seconds of one step of greedy generation with the KV cache, timed on the loaded model: one new token through
    every layer and the head for 1 row and for :data:`PROBE_ROWS` rows. Such a step costs what reading the weights
    and calling each layer costs, not its tokens' share of a long pass: counted at the scoring pass's speed, the
    repair's own answers were said at 4.5 s and took 26.4 s; a step of 24 rows took 2.1-2.9 times, and one of a
    single row 26-29 times, that share (SmolLM2-135M and Gemma 3 270M, 2 threads), and the probe 0.80-1.19 of the
    step (``benchmarks/bench_generation.py``)."""

    one: float
    many: float

    def at(self, rows: int) -> float:
        """Seconds of a step of ``rows`` rows (between the two timed, and on along the same line)."""
        return self.one + (self.many - self.one) * (rows - 1) / (PROBE_ROWS - 1)


@dataclass
class AnswerWork:
    """Greedy answers still to write: how many prompts at once, their mean length, how many new tokens, and how;
    ``runs``: generations one after the other (the quiz's: the original's, then the pruned model's); ``probe``:
    the timed step (:class:`StepProbe`), where the model runs in memory."""

    prompts: int
    prompt_tokens: float
    new_tokens: int
    kv_cache: bool
    runs: int = 1
    probe: StepProbe | None = None
    #: Without the KV cache (one layer at a time): seconds one decoder layer takes to read from the checkpoint,
    #: where reads were timed. Each new token is one sweep over the layers, each read once for every prompt and
    #: every model of the sweep, which a pass over many tokens bears once: counted at the pass's speed, the check
    #: of SmolLM2 one layer at a time was said at 3.8 s and took 11 s, 9.6 s of it its 8 tokens.
    layer_read: float = 0.0

    def token_layers(self, n_layers: int, head_layers: float) -> float:
        """Tokens × layers the answers run (the head only at each prompt's last position)."""
        steps = self.prompts * self.new_tokens
        if self.kv_cache:
            return self.runs * (self.prompts * self.prompt_tokens * n_layers + steps * (n_layers + head_layers))
        return self.runs * steps * ((self.prompt_tokens + self.new_tokens / 2) * n_layers + head_layers)

    def seconds(self, n_layers: int, head_layers: float, rate: float, pass_tokens: float = 0.0) -> float:
        """Seconds the answers take: their token-layers at ``rate``, each step with the KV cache at least what the
        probe timed. Without it, each step's reads of every layer (:attr:`layer_read`) and its token-layers at the
        rate less the read's share of it: ``rate`` was timed on a pass of ``pass_tokens`` tokens a layer read (the
        scoring pass's samples), which bears each read once for all of them (SmolLM2's own answers one layer at a
        time, reads counted at that rate and again each step, were said at 4.2 times their time)."""
        if not self.kv_cache:
            compute = max(rate - self.layer_read / pass_tokens, 0.0) if pass_tokens > 0 else rate
            return self.token_layers(n_layers, head_layers) * compute + self.new_tokens * n_layers * self.layer_read
        if self.probe is None:
            return self.token_layers(n_layers, head_layers) * rate
        prompts = self.runs * self.prompts * self.prompt_tokens * n_layers * rate
        step = max(self.prompts * (n_layers + head_layers) * rate, self.probe.at(self.prompts))
        return prompts + self.runs * self.new_tokens * step


@dataclass(frozen=True)
class JobWork:
    """What the engine knows, before a job runs, of the work :func:`estimate_job` counts beyond the job's sizes; each
    left out is guessed or counted whole.

    ``answers``: the own answers the repair still needs; ``guard``: the answers the refit's chat guard asks for (a
    chat model's refit); ``quiz``: the check's quiz answers still to write (both models', or the pruned one's);
    ``prompt``: the check's continuation of its prompt by both models. ``heal_cost``: what a token-layer of healing
    costs against one of the measured (float32) speed (:data:`BFLOAT16_HEAL_COST` where healing computes in
    bfloat16). ``runs``: the runs of removed layers the repair fits (default: :func:`run_count` of ``removed`` where
    given, else about one per two layers removed). ``fit_samples`` and ``fit_tokens``: the samples and tokens the
    repair fits on, a chat model's own answers included (default: the spec's samples and the sample tokens).
    ``search_left``: what
    bi+'s search still has to measure where earlier searches measured part of it (the single removals or not, the
    greedy steps: :meth:`.cut.selection.SearchMemo.still_to_run`), else the whole search. ``bi_scores``: the scores
    bi+ chooses from, where known (:func:`choosing_seconds`). ``removed``: the layers the repair fits for, where known
    (not for a choice still to make): its streams run only as deep as the last of them (:func:`stream_layers`)."""

    answers: AnswerWork | None = None
    guard: AnswerWork | None = None
    quiz: AnswerWork | None = None
    prompt: AnswerWork | None = None
    heal_cost: float = 1.0
    runs: int | None = None
    fit_samples: int | None = None
    fit_tokens: int | None = None
    search_left: tuple[bool, int] | None = None
    bi_scores: Sequence[float | None] | None = None
    removed: Sequence[int] | None = None


def estimate_job(spec: Any, shape: ModelShape, seconds_per_token_layer: float, sample_tokens: int,
                 eval_tokens: int, count: int | None, refines: bool, work: JobWork | None = None) -> JobEstimate:
    """The job ``spec`` describes (its metric, count, repair, healing, check), at the measured speed, with what
    ``work`` says is left of it (:class:`JobWork`)."""

    n, head = shape.n_layers, shape.head_layers
    rate = seconds_per_token_layer
    work = work or JobWork()
    removed = work.removed
    out = JobEstimate()
    out.steps["scoring"] = sample_tokens * n * rate
    fit_tokens = work.fit_tokens or sample_tokens
    fit_samples = work.fit_samples or spec.samples
    if count and refines:
        out.steps["choosing"] = choosing_seconds(spec, shape, rate, sample_tokens, [count], work.search_left,
                                                 fit_tokens, fit_samples, work.bi_scores)
    if count and spec.repair != "none" and work.answers is not None:
        out.steps["answering"] = work.answers.seconds(n, head, rate, sample_tokens)
    from .cut.selection import judged_with_the_saved_fit

    runs = work.runs or (run_count(removed) if removed else likely_runs(count, work.bi_scores))
    # where bi+ judges its finalists with the fit the job saves, the repair is made while choosing and its step
    # costs nothing more (8 × 128 tokens with --heal 2: said 8 min 58 s, took 5 min 28 s, the repair counted twice)
    fitted_while_choosing = refines and judged_with_the_saved_fit(spec.samples)
    if count and spec.repair != "none" and not fitted_while_choosing:
        original = stream_layers(n, count, removed)[0]
        out.steps["repairing"] = (fit_tokens * original
                                  + fit_token_layers(shape, fit_tokens, count, runs, fit_samples, removed)) * rate
    if count and spec.repair == "refit":
        # on what the repair fits on: the samples and a chat model's own answers
        out.steps["refitting"] = refit_token_layers(shape, fit_tokens, count, runs, removed) * rate
        if work.guard is not None:
            out.steps["refitting"] += guard_seconds(work.guard, shape, count, rate, runs, sample_tokens)
    if count and spec.heal_steps > 0:
        out.steps["healing"] = heal_token_layers(spec, shape, count) * rate * work.heal_cost
    if count and spec.check_perplexity:
        out.steps["checking"] = eval_tokens * ((n + head) + (n - count + 2 * head)) * rate
        for generation in (work.quiz, work.prompt):
            if generation is not None:
                out.steps["checking"] += generation.seconds(n, head, rate, sample_tokens)
    return out


def stream_layers(n_layers: int, count: int, removed: Sequence[int] | None = None) -> tuple[float, float]:
    """Layer runs per token of a repair's two streams, the original's and the pruned model's: the original's up to
    the kept layer after the last run, the pruned model's kept layers from the one before the first run (where the
    streams split) to there (:func:`.cut.repair.sequential_layer_runs`). Counted whole, a cut of layers 12-14 of 30
    was said at 38.0 s of repair and took 20.3 s. Where the layers are not known yet, as far as ``count`` layers
    spread at random reach, on average: the first and the last of them lie about ``n / (count + 1)`` from each end
    (counted as every layer of both, the fits of a sweep to 2 of SmolLM2's 30 were said at 101 s and took 49 s: a
    single layer's fit runs two or three layers of the pruned model)."""
    if not removed:
        first = (n_layers + 1) / (count + 1) - 1  # the expected lowest and highest of count distinct layers
        last = count * (n_layers + 1) / (count + 1) - 1
        end = min(float(n_layers), last + 2)
        return end, max(end - max(first - 1, 0.0) - count, 0.0)
    gone = set(removed)
    end = min(n_layers, max(gone) + 2)
    return float(end), float(sum(1 for i in range(max(min(gone) - 1, 0), end) if i not in gone))


def norm_fit_token_layers(shape: ModelShape, runs: int, rows: int) -> float:
    """The Adam steps of a fit through a norm (Gemma 2/3, OLMo 2: :class:`.cut.repair` fits ``T`` by
    :data:`.cut.repair.NORM_FIT_STEPS` steps on batches of up to 2,048 of the ``rows`` kept), in token-layers: each
    step a ``d × d`` product over the batch forward and twice that backward, per run; nothing where the repair
    solves. On Gemma 3 270M (d = 640) about 90,000 a run, where a judging took about 13 candidate passes' time."""
    from .cut.repair import MAX_NORM_TOKENS, NORM_FIT_STEPS

    if shape.solves or not shape.hidden:
        return 0.0
    batch = min(2048, max(min(rows, MAX_NORM_TOKENS), 1))
    return runs * NORM_FIT_STEPS * batch * 3 * shape.hidden**2 / max(shape.layer_params, 1.0)


def judging_token_layers(shape: ModelShape, subset: float, counts: Sequence[int],
                         bi_scores: Sequence[float | None] | None, fit_tokens: float,
                         fit: Callable[[int], float]) -> float:
    """bi+'s judging of its finalists repaired (:func:`.cut.selection._judge_repaired`), in token-layers: each
    distinct finalist of each count (:func:`.cut.selection.finalists_to_judge`) a fit (``fit(count)``: its
    token-layers beside the original's stream) and a measurement on the search's ``subset`` of tokens with the head
    at every position; and the original's stream over the fit's ``fit_tokens`` once for them all (the fits share it:
    :class:`.cut.repair.OriginalStates`). Counted as four finalists each with the original's whole stream, a sweep to
    2 of SmolLM2's 30 judged in 37 s where 147 s were said."""
    from .cut.selection import finalists_to_judge

    n, head = shape.n_layers, shape.head_layers
    fits = sum(finalists_to_judge(bi_scores, k) * (fit(k) + subset * (n - k + head)) for k in counts)
    return fits + fit_tokens * stream_layers(n, max(counts))[0]


def fit_token_layers(shape: ModelShape, fit_tokens: int, count: int, runs: int, fit_samples: int,
                     removed: Sequence[int] | None = None) -> float:
    """Tokens × layers of one repair fit beside the original's stream (which fits share): the pruned model's stream
    over the fit's tokens (:func:`stream_layers`), the float64 sums of each projection refitted whole (the kept
    layers before and after each run; the one after only where refitted whole, as these sums are; a run at layer 0
    or right after another has none: a small overestimate there), and the ridge solves, or where the fit goes
    through a norm its Adam steps (:func:`norm_fit_token_layers`)."""
    sums = 2 * runs * PROJECTION_SUMS_COST * shape.projection_inputs**2 / max(shape.layer_params, 1.0)
    pruned = stream_layers(shape.n_layers, count, removed)[1]
    return (fit_tokens * (pruned + sums) + ridge_token_layers(shape, runs, fit_samples)
            + norm_fit_token_layers(shape, runs, fit_tokens))


def choosing_seconds(spec: Any, shape: ModelShape, rate: float, sample_tokens: int, counts: Sequence[int],
                     search_left: tuple[bool, int] | None = None, fit_tokens: int | None = None,
                     fit_samples: int | None = None, bi_scores: Sequence[float | None] | None = None) -> float:
    """bi+'s one nested search for ``counts`` (:func:`.cut.selection.choose_for_counts`): the single removals, a
    greedy step per layer up to the most, and each count's four finalists, measured and (where the job repairs)
    judged repaired; ``search_left``: as :func:`estimate_job`'s. Where the finalists are judged with the fit the job
    saves (:func:`.cut.selection.judged_with_the_saved_fit`), each is that whole fit, on ``fit_tokens`` (the samples
    and a chat model's own answers) and ``fit_samples``, the original's stream over them run once: counted as the
    quick fit of the search's samples, the choice of 8 × 128 tokens on SmolLM2 was said at 0.8 of its time. The
    distinct finalists fitted so are told by ``bi_scores`` where known
    (:func:`.cut.selection.finalists_to_judge`): the fits are kept, so a set two finalists share is fitted once."""
    import math

    from .cut.selection import candidate_layers, judged_with_the_saved_fit, protected_layers

    n, head = shape.n_layers, shape.head_layers
    subset = sample_tokens * min(defaults.SELECTION_SAMPLES, spec.samples) / max(spec.samples, 1)
    stride = min(8, max(1, math.ceil(head / 4)))  # as cut.candidates.head_stride scores the search
    singles, steps = search_left if search_left is not None else (True, max(counts))
    most = max(counts)
    # Each candidate runs from where it differs (about half the layers the step keeps) and a strided head; each
    # greedy step refreshes the cache from the layer it chose (about half of them again); a job that repairs judges
    # the four finalists repaired (on Gemma 3 270M as long as the candidate passes: left out, the choice was
    # estimated at 0.60 of its time).
    def width(s: int) -> int:  # a step's candidates: two windows, fewer where fewer layers are left to try
        return max(1, min(2 * defaults.SELECTION_WINDOW, n - len(protected_layers(n)) - s))

    search = ((n if singles else 0) * candidate_layers(n, head, stride)
              + sum(width(s) * candidate_layers(n, head, stride, s) + (n - s) / 2 for s in range(most - steps, most))
              + sum(4 * candidate_layers(n, head, stride, k) for k in counts))
    judged = 0.0
    if spec.repair != "none" and judged_with_the_saved_fit(spec.samples):  # each finalist the whole saved fit
        fit_tokens, fit_samples = fit_tokens or sample_tokens, fit_samples or spec.samples
        judged = judging_token_layers(shape, subset, counts, bi_scores, fit_tokens, lambda k: fit_token_layers(
            shape, fit_tokens, k, likely_runs(k, bi_scores), fit_samples))
    elif spec.repair != "none":  # a quick fit of the map on twice the search's samples (and a norm's Adam steps)
        quick = 2 * subset
        judged = judging_token_layers(shape, subset, counts, bi_scores, quick, lambda k: (
            quick * stream_layers(n, k)[1] + norm_fit_token_layers(shape, likely_runs(k, bi_scores), int(quick))))
    return (subset * search + judged) * rate


def estimate_curve(spec: Any, shape: ModelShape, rate: float, sample_tokens: int, eval_tokens: int,
                   limit: int, searched: Sequence[int], answers: AnswerWork | None = None,
                   quiz: AnswerWork | None = None, original_quiz: bool = False,
                   search_left: tuple[bool, int] | None = None, fitted: Sequence[int] = (),
                   fit_tokens: int | None = None, fit_samples: int | None = None,
                   bi_scores: Sequence[float | None] | None = None) -> JobEstimate:
    """The quality curve up to ``limit`` layers removed (:meth:`.engine.Engine.quality_curve`; ``spec`` as it
    runs it: no healing, the linear repair): bi+'s search for the counts in ``searched`` (those not measured yet;
    empty for a metric that does not measure), then at each count the repair's fit, the recipe's point and plain
    BI's on the held-out windows (the original's pass once), and the quiz's answers (``quiz``: one model's;
    ``original_quiz``: the original's still to write; ``fitted``: the counts whose repair is kept from before;
    ``fit_tokens``, ``fit_samples``, ``bi_scores``: as :func:`estimate_job`'s). A sweep to 8 on SmolLM2 ran for
    minutes with each step's time left only."""
    n, head = shape.n_layers, shape.head_layers
    out = JobEstimate()
    out.steps["scoring"] = sample_tokens * n * rate
    if searched:
        out.steps["choosing"] = choosing_seconds(spec, shape, rate, sample_tokens, searched, search_left, fit_tokens,
                                                 fit_samples, bi_scores)
    if spec.repair != "none":
        if answers is not None:
            out.steps["answering"] = answers.seconds(n, head, rate, sample_tokens)
        from .cut.selection import judged_with_the_saved_fit

        # a searched count's fit is made while choosing where its finalists are judged with it (:func:`estimate_job`)
        while_choosing = judged_with_the_saved_fit(spec.samples)
        fit = JobWork(fit_samples=fit_samples, fit_tokens=fit_tokens)
        fits = [estimate_job(spec, shape, rate, sample_tokens, eval_tokens, k, False, fit)
                for k in range(1, limit + 1) if k not in fitted and not (while_choosing and k in searched)]
        if fits:
            out.steps["repairing"] = sum(e.steps.get("repairing", 0.0) for e in fits)
    measuring = eval_tokens * (n + head) + sum(2 * eval_tokens * (n - k + 2 * head) for k in range(1, limit + 1))
    out.steps["measuring"] = measuring * rate
    if quiz is not None:
        out.steps["measuring"] += quiz.seconds(n, head, rate) * (limit + (1 if original_quiz else 0))
    return out


def guessed_runs(count: int | None) -> int:
    """Runs of removed layers where the layers are not known yet: about one per two layers removed (one where no
    count is known)."""
    return max(1, round((count or 0) / 2))


def likely_runs(count: int, bi_scores: Sequence[float | None] | None = None) -> int:
    """Runs of removed layers where the layers are not chosen yet: those of BI's lowest ``count`` with the ends
    protected where the scores are known (bi+'s finalists lie among them and cluster as they do: SmolLM2's 18 of 30
    came in 4 runs where one per two layers, 9, was counted, and a fit's sums and solves are per run), else
    :func:`guessed_runs`."""
    from .cut.selection import ends_protected_lowest
    from .errors import PlanError

    if not bi_scores:
        return guessed_runs(count)
    try:
        return run_count(ends_protected_lowest(bi_scores, count))
    except PlanError:
        return guessed_runs(count)


def run_count(removed: Sequence[int]) -> int:
    """Runs of consecutive layers in ``removed`` (5, 10, 13, 15, 18: five, where two were guessed, and the
    repair, whose solves are per run, took twice the estimate)."""
    layers = sorted(set(removed))
    return sum(1 for i, layer in enumerate(layers) if i == 0 or layers[i - 1] != layer - 1)


def ridge_token_layers(shape: ModelShape, runs: int, samples: int) -> float:
    """The repair's solves, in token-layers: for the projection before each run and the one after (as the sums
    count them), each ridge tried on the held-out samples where there are enough (:func:`.cut.repair.can_choose_ridge`),
    then the fit itself; ``k`` is the projection's input width where it is refitted whole, else the hidden width.
    Nothing where the repair fits through a norm by gradient steps (:func:`norm_fit_token_layers`)."""
    from .cut.repair import RIDGE_CHOICES, can_choose_ridge

    if not shape.solves:
        return 0.0
    k, width = (shape.projection_inputs or shape.hidden), shape.hidden
    per_solve = RIDGE_SOLVE_COST * (2 / 3 * k**3 + 4 * k * k * width) / max(shape.layer_params, 1.0)
    solves = len(RIDGE_CHOICES) + 1 if can_choose_ridge(samples) else 1
    return 2 * runs * solves * per_solve


#: A healing step under autocast to bfloat16 against the same step in float32, on a CPU with AMX (SmolLM2-135M,
#: 8 of 30 removed, 4 × 512 tokens a step, 2 threads, one run: 7.87 s against 14.70 s a step; the teacher's states
#: 4.8 s against 11.5 s). Applied on a CPU only (where it was measured; a CPU with AVX-512 BF16 and no AMX may gain
#: less); a GPU's healing is counted at the measured speed.
BFLOAT16_HEAL_COST = 0.55


def heal_token_layers(spec: Any, shape: ModelShape, count: int) -> float:
    """Tokens × layers healing costs: the original over the batches it reads (its teacher), then each step, one
    more timed for its own estimate. A step is about three passes of the pruned model (forward and backward) and
    the original's head for the distillation target (SmolLM2-135M, 8 of 30 removed, 8 × 512 tokens a step:
    40.4 s measured; 40.1 s by this count at the speed a forward pass of the whole model had in the same run)."""
    from .cut.healing import batches_used

    n, head = shape.n_layers, shape.head_layers
    step_tokens = spec.batch_size * spec.seq_len
    teacher = batches_used(spec.samples, spec.batch_size, spec.heal_steps) * step_tokens * n
    return teacher + (spec.heal_steps + 1) * step_tokens * (3 * (n - count + head) + head)


def refit_token_layers(shape: ModelShape, sample_tokens: int, count: int, runs: int | None = None,
                       removed: Sequence[int] | None = None) -> float:
    """Tokens × layers the MLP refit costs for ``count`` removed layers (see the module's list; ``removed``: the
    layers, where known, for the streams' depth)."""
    from .cut.mlp_refit import REFIT_STEP_COST, token_cap, trained_rows

    runs = runs or guessed_runs(count)
    kept = min(sample_tokens, token_cap(shape.hidden)) if shape.hidden else sample_tokens
    mlp_share = shape.mlp_params / shape.layer_params if shape.mlp_params else 2 / 3
    streams = sum(stream_layers(shape.n_layers, count, removed))
    return sample_tokens * streams + runs * trained_rows(kept) * REFIT_STEP_COST * mlp_share


def guard_token_layers(guard: AnswerWork, shape: ModelShape, count: int, runs: int | None = None) -> float:
    """Tokens × layers the refit's chat guard costs: the original's answers to the check prompts, then one pass
    of them (head at every position) per variant it scores: the linear repair alone, every cut refitted, and each
    cut's refit dropped in turn."""
    runs = runs or guessed_runs(count)
    tokens = guard.prompts * (guard.prompt_tokens + guard.new_tokens)
    return (guard.token_layers(shape.n_layers, shape.head_layers)
            + (runs + 2) * tokens * (shape.n_layers - count + shape.head_layers))


def guard_seconds(guard: AnswerWork, shape: ModelShape, count: int, rate: float, runs: int | None = None,
                  pass_tokens: float = 0.0) -> float:
    """Seconds the refit's chat guard takes (:func:`guard_token_layers`), its answers' steps as the probe timed (or,
    one layer at a time, as :meth:`AnswerWork.seconds` counts them from ``pass_tokens``)."""
    answers = guard.token_layers(shape.n_layers, shape.head_layers)
    return (guard_token_layers(guard, shape, count, runs) - answers) * rate + guard.seconds(
        shape.n_layers, shape.head_layers, rate, pass_tokens)
