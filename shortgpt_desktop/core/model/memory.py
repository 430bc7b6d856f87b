"""Before anything loads: how much memory a job needs in memory and layer by layer, and which way to run it.

The one estimate of memory in the tool: the model panel's "needs", the command line's "needs about" and the
choice of mode all read it. Figures come from checkpoint headers (safetensors), the GGUF tensor table or the
size of legacy ``.bin`` files, and the config; no weight is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...format import human_bytes
from .. import defaults
from ..errors import Hint, ModelSourceError, ResourceError, UnsupportedModelError
from ..formats.safetensors_reader import stored_values_and_bytes
from .dtypes import bytes_per_element, stored_bytes_per_element
from .layer_set import first_layer_gap
from .sources import ModelSource

if TYPE_CHECKING:
    from ..measure.calibration import TokenSet

#: Share of the free memory a plan may use; the rest is left to the program and the system.
SAFETY = 0.9

#: Resident memory of the engine itself before any model: Python, torch, transformers, tokenizers (measured
#: with transformers 5.24, VmHWM: 0.40 GB peak for a whole command-line prune job on a 0.3 M-parameter model,
#: 0.25 GB after the imports alone; tests/core/model/test_memory.py compares the estimate with such a run).
#: Part of the peak a user is told about, but not of what must still fit: the program is already running
#: when the free memory is read.
RUNTIME_BYTES = 400 * 1024**2


@dataclass
class MemoryEstimate:
    """Bytes each way of scoring needs, on the device and in RAM (equal places when the device is the CPU)."""

    device: str
    dtype: str
    n_layers: int
    n_params: int
    largest_layer_bytes: int
    outside_layers_bytes: int  # embeddings, final norm, output head
    weights_bytes: int  # the whole model in ``dtype``
    loading_bytes: int  # held only while loading (a GGUF is dequantised into a second full copy)
    hidden_states_bytes: int  # the samples' (or the check's windows') hidden states between two layers (RAM)
    batch_working_bytes: int  # activations of one batch inside one layer, and the perplexity pass's logits
    in_memory_device_bytes: int
    in_memory_ram_bytes: int
    streamed_device_bytes: int
    streamed_ram_bytes: int
    available_ram_bytes: int
    available_device_bytes: int  # the GPU's free memory, or the free RAM for the CPU
    not_streamable: str = ""  # why the layers cannot be read one at a time; empty when they can
    runtime_bytes: int = RUNTIME_BYTES
    recipe_bytes: int = 0  # bi+'s state cache and the repair's streams (:func:`recipe_bytes`), in both totals
    heal_step_bytes: int = 0  # a healing step at its fullest (:func:`healing_bytes`), in the in-memory total
    heal_held_bytes: int = 0  # the weights healing hands back, held until the save, in the in-memory total
    states_of_windows: bool = False  # hidden_states_bytes counts the check's windows, which outnumber the samples

    @property
    def on_cpu(self) -> bool:
        return not self.device.startswith("cuda")

    def _fits(self, device_bytes: int, ram_bytes: int) -> bool:
        if self.on_cpu:
            return device_bytes + ram_bytes <= SAFETY * self.available_ram_bytes
        return (device_bytes <= SAFETY * self.available_device_bytes
                and ram_bytes <= SAFETY * self.available_ram_bytes)

    @property
    def in_memory_fits(self) -> bool:
        return self._fits(self.in_memory_device_bytes, self.in_memory_ram_bytes)

    @property
    def streamed_fits(self) -> bool:
        return not self.not_streamable and self._fits(self.streamed_device_bytes, self.streamed_ram_bytes)

    @property
    def in_memory_total(self) -> int:
        return self.in_memory_device_bytes + self.in_memory_ram_bytes

    @property
    def streamed_total(self) -> int:
        return self.streamed_device_bytes + self.streamed_ram_bytes

    @property
    def peak_bytes(self) -> int:
        """The peak of a whole job with the model in memory, the program included (measured: SmolLM2-135M GGUF,
        fp32 CPU, quick preset, prune with bi and the check: 1.74 GB peak resident, 1.79 GB estimated; the default
        job, bi+ and the repair with the check and the quiz, ``shortgpt prune … --preset quick --ratio 0.25``:
        2.71 GB peak resident, 1.58 GB estimated before :attr:`recipe_bytes` was counted, 2.55 GB with it)."""
        return self.runtime_bytes + self.in_memory_total


def available_memory(device: str) -> tuple[int, int]:
    """(free RAM, free memory on ``device``) in bytes; for the CPU and Apple MPS both are the free RAM."""
    import psutil

    ram = int(psutil.virtual_memory().available)
    if device.startswith("cuda"):
        import torch

        from .devices import cuda_index

        index = cuda_index(device)
        if index is None:
            index = torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return ram, int(free)
    return ram, ram


def refuse_padded_batches(tokens: TokenSet, batch_size: int, config: Any, device: str) -> None:
    """Refuse a batch that holds a sample shorter than the others where padding it would not fit in ``device``'s free
    memory. Padded, a batch's attention builds a whole mask of length × length and runs without the memory-lean
    kernel: two samples of 100,000 tokens, one cut short where the text ran out, took 23 GB and the system killed the
    job, where the estimate (:func:`estimate_memory`, which assumes even samples) said 830 MB (a walkthrough). Batches
    of even samples need neither, and are not checked."""
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1)
    batch = max(1, batch_size)
    worst, length, short = 0, 0, 0
    for rows in (tokens.samples, tokens.eval_windows):
        for start in range(0, len(rows), batch):
            lengths = [len(r) for r in rows[start: start + batch]]
            if len(lengths) > 1 and min(lengths) < max(lengths):
                need = len(lengths) * max(lengths) ** 2 * (1 + 4 * heads)  # a boolean mask, float32 weights per head
                if need > worst:
                    worst, length, short = need, max(lengths), min(lengths)
    if not worst:
        return
    _ram, free = available_memory(device)
    if worst > free:
        raise ResourceError(
            f"The text gives a sample of {short:,} tokens beside samples of {length:,}: a batch that holds it is "
            f"padded, and its attention at this length needs about {human_bytes(worst)}, more than the "
            f"{human_bytes(free)} free.", hint=Hint.SMALLER_BATCH)


def _tensor_elements(source: ModelSource, config: dict[str, Any]) -> tuple[list[int], int, str]:
    """(elements of each decoder layer, elements outside them, why layers cannot be read one at a time).

    A checkpoint the layer reader cannot take (legacy ``.bin``, an unusual stored dtype) is still counted, as
    a whole: it runs in memory only.
    """
    from .layer_weights import open_reader

    if source.gguf_file:  # the header's tensor table (gguf-py's reader parses every metadata array: seconds)
        from ..formats.gguf_reader import check_gguf
        from .gguf_facts import block_elements

        blocks, other = block_elements(check_gguf(source.folder / source.gguf_file))
        return [blocks[i] for i in sorted(blocks)], other, ""
    try:
        index = open_reader(source, config.get("model_type")).index
    except UnsupportedModelError as refused:
        return [], _count_whole(source, config), str(refused)
    _check_layer_blocks(source, config, set(index.layer_keys))
    layers = [index.layer_numel(i) for i in sorted(index.layer_keys)]
    return layers, index.other_numel(), ""


def _check_layer_blocks(source: ModelSource, config: dict[str, Any], present: set[int]) -> None:
    """The checkpoint has weights for every layer the config declares and for no other (multi-token-prediction
    layers after the last excepted): a missing layer would be filled with random weights by the loader."""
    from .families import layer_count

    if not present or source.gguf_file:  # a GGUF's blocks are checked against its block count when it is opened
        return
    n = layer_count(config)
    extra_allowed = config.get("num_nextn_predict_layers") or 0
    allowed = n + (extra_allowed if isinstance(extra_allowed, int) else 0)
    gap = first_layer_gap(n, present, allowed)
    if gap is not None:
        what = f"no weights for layer {gap.layer}" if gap.missing else f"weights for a layer {gap.layer}"
        raise ModelSourceError(f"{source.folder / 'config.json'} declares {n} layers but the checkpoint has {what}, "
                               "so the model files do not belong together.")


def _count_whole(source: ModelSource, config: dict[str, Any]) -> int:
    """Elements of a checkpoint the layer reader refused (a GGUF it always takes): from the safetensors
    headers, or from the size of legacy ``.bin`` files in the config's dtype (the pickle adds a little)."""
    total = 0
    for weight in source.weight_files:
        if weight.format == "safetensors":
            total += stored_values_and_bytes(weight.path)[0]
        else:
            total += int(weight.size // stored_bytes_per_element(config))
    return total


#: k × k float64 sums a whole projection's fit holds at once while it chooses its ridge: all samples', the held-out
#: ones', the rest's, the system solved and the solver's factorisation (:mod:`..cut.repair`).
PROJECTION_SUMS = 5


def intermediate_size(config: dict[str, Any], hidden: int) -> int:
    """The MLP's intermediate size (0 when the config does not say): GPT-2's unset ``n_inner`` and Falcon's unset
    ``ffn_hidden_size`` are 4 × hidden; the largest where layers differ."""
    width = 4 * hidden if config.get("model_type") in ("gpt2", "falcon") else 0
    for key in ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"):
        value = config.get(key)
        if isinstance(value, list):
            value = max(value, default=0)
        if value:
            return int(value)
    return width


def ffn_width(config: dict[str, Any], hidden: int) -> int:
    """The input width of the MLP output projection the repair refits whole (:func:`intermediate_size`), 0 where it
    fits a map instead: a family that normalises the MLP output (Gemma 2/3, OLMo 2)."""
    from .families import family_for_model_type, refits_whole

    width = intermediate_size(config, hidden)
    family = family_for_model_type(config.get("model_type"))
    return width if family is None or refits_whole(family, width) else 0


#: What autograd keeps for healing's backward pass, per token and decoder layer: ``HEAL_SAVED_PER_WIDTH`` values of
#: the compute dtype per hidden, attention and intermediate channel (the projections' inputs, the attention's
#: and the activation function's operands) and ``HEAL_SAVED_FLOAT32_PER_HIDDEN`` float32 values per hidden channel
#: (the norms' inputs, upcast). Measured with ``torch.autograd.graph.saved_tensors_hooks`` on LoRA-adapted layers
#: under autocast to bfloat16, 4 × 512 tokens: Llama-shaped as SmolLM2 30.5 kB (this gives 33.8), with twice its
#: intermediate size 45.4 kB (49.2), Gemma 3 270M-shaped 50.9 kB (44.0); in float32 47.0, 76.9 and 74.5 kB (58.4,
#: 89.1 and 77.8); the tiny model of ``tests/core/model/test_memory.py``'s healing job 21.9 kB (23.6).
HEAL_SAVED_PER_WIDTH = {"hidden": 4, "attention": 4, "intermediate": 5}
HEAL_SAVED_FLOAT32_PER_HIDDEN = 4


@dataclass
class HealingBytes:
    """What healing holds (:func:`healing_bytes`), by where it lives."""

    step: int  # a step at its fullest, where the layers run
    teacher: int  # the original's final states on the batches the steps read (the engine keeps them on the CPU)
    held: int  # the healed weights' CPU copies, from the end of healing to the save


def healing_bytes(samples: int, seq_len: int, batch: int, heal_steps: int, shape: dict[str, int],
                  layers_bytes: int, per: int, compute_bytes: int) -> HealingBytes:
    """What healing holds, in bytes; ``shape``: the model's ``hidden``, ``attention`` (heads × head size),
    ``intermediate``, ``vocab`` and ``layers``.

    A step (:mod:`..cut.healing`): what autograd keeps for the backward pass through every layer
    (:data:`HEAL_SAVED_PER_WIDTH`; all the layers, as the count is not known yet) and the weights' casts it keeps
    under autocast, the pruned model's logits, the original's and their gradient in the compute dtype. Beside it
    the original's final states on the batches the steps read. Healing then hands back a copy of every weight it
    changed, nearly all of the decoder layers' (``layers_bytes``), which the job holds until it saves. A healing
    job on the tiny model of ``tests/core/model/test_memory.py`` peaks at 1.05-1.14 GB, where the estimate without
    this term says 0.52 GB. Not measured: a model already in 16 bits, where peft's float32 adapters upcast their
    inputs (about 10% more than this counts, by a count of what autograd keeps on SmolLM2-shaped layers)."""
    hidden, vocab = shape["hidden"], shape["vocab"]
    tokens = max(1, min(batch, samples)) * seq_len
    widths = HEAL_SAVED_PER_WIDTH
    per_token_layer = ((widths["hidden"] * hidden + widths["attention"] * shape["attention"]
                        + widths["intermediate"] * shape["intermediate"]) * compute_bytes
                       + HEAL_SAVED_FLOAT32_PER_HIDDEN * hidden * 4)
    # Under autocast each weight is cast for its product (the cache is off) and the cast is kept for the backward
    # pass: a compute-dtype copy of the layers and the head (0.27 GB on SmolLM2).
    casts = (layers_bytes // per + vocab * hidden) * compute_bytes if compute_bytes != per else 0
    step = tokens * shape["layers"] * per_token_layer + 3 * tokens * vocab * compute_bytes + casts
    teacher = min(samples, max(heal_steps, 1) * batch) * seq_len * hidden * per
    return HealingBytes(step, teacher, layers_bytes)


def recipe_bytes(samples: int, seq_len: int, hidden: int, n_layers: int, per: int, refines: bool,
                 repairs: bool, ffn: int = 0) -> int:
    """What the default recipe holds beside the model and a batch's work, in either mode (on the device in
    memory, in RAM one layer at a time):

    - ``refines`` (bi+'s measured choice, :mod:`..cut.candidates`): its samples' states entering every layer, and
      while a greedy step is measured its candidates' (six, through half the layers on average), at most
      :data:`..defaults.CANDIDATE_CACHE_BUDGET`;
    - ``repairs`` (:mod:`..cut.repair`): the original's and the pruned model's streams and the patched layer's
      copy over the calibration samples and the chat answers (about a quarter more), and the original's states
      the fits keep for each other at about a third of the layers (:class:`..cut.repair.OriginalStates`), for the
      saved repair's fits and for bi+'s quicker ones on twice its samples, each at most
      :data:`..defaults.ORIGINAL_STATES_BUDGET`; where the fit refits a whole MLP output projection ``ffn`` inputs
      wide (:data:`..defaults.MAX_PROJECTION_INPUTS`), that projection's inputs over the samples and the float64
      ``ffn²`` sums held while its ridge is chosen (:data:`PROJECTION_SUMS`).
    """
    one = seq_len * hidden * per  # one sample's states entering one layer
    total = 0
    if refines:
        variants = 2 * defaults.SELECTION_WINDOW
        total += min(defaults.CANDIDATE_CACHE_BUDGET,
                     defaults.SELECTION_SAMPLES * one * n_layers * (1 + variants // 2))
    if repairs:
        fitted = int(samples * 1.25)
        total += 3 * fitted * one
        total += min(defaults.ORIGINAL_STATES_BUDGET, fitted * one * math.ceil(n_layers / 3))
        if 0 < ffn <= defaults.MAX_PROJECTION_INPUTS:
            total += fitted * seq_len * ffn * per + PROJECTION_SUMS * ffn * ffn * 8
        if refines:
            total += min(defaults.ORIGINAL_STATES_BUDGET,
                         2 * defaults.SELECTION_SAMPLES * one * math.ceil(n_layers / 3))
    return total


def estimate_memory(
    source: ModelSource,
    device: str = "auto",
    dtype: str = "auto",
    samples: int = 128,
    seq_len: int = 512,
    batch_size: int = 4,
    config: dict[str, Any] | None = None,
    refines: bool = False,
    repairs: bool = False,
    heal_steps: int = 0,
    check_windows: int = 0,
    logits: bool = True,
) -> MemoryEstimate:
    """What a job on ``samples`` × ``seq_len`` tokens costs in memory and layer by layer (weights unread); with
    ``refines`` (bi+) and ``repairs`` (the repair) what the default recipe holds too (:func:`recipe_bytes`), with
    ``heal_steps`` what healing holds (:func:`healing_bytes`; the whole model in memory only). ``check_windows``:
    the held-out windows the job checks on, whose batches hold the logits as the samples' do (``eval`` draws one
    sample: its estimate counted one window's logits where its passes hold four, and Gemma 3's ``eval --against``
    said 2.6 GB for a peak of 4.7 GB). ``logits``: whether a pass runs the head over a batch (False for a scoring pass
    of the hooked metrics alone, which stops at the final norm: at 4 × 2048 tokens of a 49k vocabulary the three
    copies counted came to 4.8 GB that never existed, and a score that runs in 1.3 GB was refused)."""
    from .config import read_header_config
    from .devices import resolve_device, resolve_dtype
    from .families import layer_count

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    config = read_header_config(source) if config is None else config
    per = int(bytes_per_element(dtype))
    layer_elements, outside_elements, not_streamable = _tensor_elements(source, config)
    largest = max(layer_elements, default=0) * per
    outside = outside_elements * per
    n_params = sum(layer_elements) + outside_elements
    weights = n_params * per
    loading = weights if source.gguf_file else 0
    hidden = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    vocab = int(config.get("vocab_size") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    head_dim = int(config.get("head_dim") or (hidden // max(heads, 1)))
    batch = max(1, min(batch_size, max(samples, check_windows)))
    # A layer's activations (MLP intermediate, attention) are a few hidden-state copies. The check holds a batch
    # of the original's logits beside the pruned model's (their log-softmax is taken a few positions at a time:
    # evaluation.CHUNK_ELEMENTS), and a head that soft-caps its logits (Gemma 2) makes a passing copy of its own:
    # three fp32 copies at most.
    working = batch * seq_len * (8 * hidden * per + (3 * 4 * vocab if logits else 0))
    # One layer at a time, the states between two layers: the samples' (scoring, the recipe's passes), or the check's
    # held-out windows', the original's and the pruned model's, two a window, where those outnumber them (a repaired
    # job with --eval-windows 1000 was estimated below the same cut with nothing fitted, which counted them).
    held = max(samples, 2 * check_windows)
    states = held * seq_len * hidden * per
    # Captured call arguments kept between layers: rotary cos/sin per sample (masks are None without padding).
    call_args = held * seq_len * head_dim * 2 * 4
    # Reading one layer: the checkpoint's tensors on the CPU before they move (dequantized float32 for GGUF).
    read_buffer = max(layer_elements, default=0) * (8 if source.gguf_file else per)
    streamed_device = largest + outside + working
    recipe = recipe_bytes(samples, seq_len, hidden, len(layer_elements) or layer_count(config), per, refines,
                          repairs, ffn_width(config, hidden))
    healing = HealingBytes(0, 0, 0)
    if heal_steps > 0:
        from .devices import fast_training_dtype, torch_dtype

        compute = fast_training_dtype(device, torch_dtype(dtype))
        compute_bytes = int(bytes_per_element(str(compute))) if compute is not None else per
        shape = dict(hidden=hidden, attention=heads * head_dim, intermediate=intermediate_size(config, hidden),
                     vocab=vocab, layers=len(layer_elements) or layer_count(config))
        healing = healing_bytes(samples, seq_len, batch, heal_steps, shape, sum(layer_elements) * per, per,
                                compute_bytes)
    # The job's phases in memory, one after another: bi+'s choice and the repair's fits (their caches, ``recipe``,
    # beside a batch's work; a GGUF's load-time copy before them), healing's steps (the caches are freed by then),
    # and the check with what healing handed back, and a copy of it in the model while it generates
    # (``weights_view.weights_view``). Measured on SmolLM2, quick preset, default job with 2 healing steps, the most
    # resident memory while choosing and repairing 2.19 GB, while healing 2.82 GB, while checking 2.78 GB; this
    # says 2.57 GB while healing (0.91) and 2.70 GB for the job, its peak while choosing (0.96).
    if device.startswith("cuda"):
        in_memory_device = weights + max(working + recipe, healing.step, working + healing.held)
        # Loading reads the weights on the CPU before they move to the GPU; healing's states and copies come later.
        in_memory_ram = max(weights + loading, healing.teacher + healing.held)
        streamed_ram = states + call_args + read_buffer
    else:
        # The device is the RAM; loading's extra copy is gone before the first batch runs.
        in_memory_device, in_memory_ram = weights + max(max(loading, working) + recipe,
                                                        healing.step + healing.teacher,
                                                        working + 2 * healing.held), 0
        # The outputs of a batch replace its inputs, so one copy of all the states and a batch's are held.
        streamed_ram = states + batch * seq_len * hidden * per + call_args + read_buffer
    streamed_ram += recipe
    if not_streamable:
        streamed_device = streamed_ram = 0
    ram, free_device = available_memory(device)
    return MemoryEstimate(
        device=device, dtype=dtype, n_layers=len(layer_elements) or layer_count(config), n_params=n_params,
        largest_layer_bytes=largest, outside_layers_bytes=outside, weights_bytes=weights, loading_bytes=loading,
        hidden_states_bytes=states, batch_working_bytes=working, in_memory_device_bytes=in_memory_device,
        in_memory_ram_bytes=in_memory_ram, streamed_device_bytes=streamed_device, streamed_ram_bytes=streamed_ram,
        available_ram_bytes=ram, available_device_bytes=free_device, not_streamable=not_streamable,
        recipe_bytes=recipe, heal_step_bytes=healing.step + healing.teacher, heal_held_bytes=healing.held,
        states_of_windows=held > samples,
    )


def choose_mode(estimate: MemoryEstimate) -> str:
    """``"memory"`` when the whole model fits, else ``"streamed"``; a sentence when neither can run."""
    if estimate.in_memory_fits:
        return "memory"
    if estimate.not_streamable:
        raise ResourceError(
            f"The whole model needs {human_bytes(estimate.in_memory_total)} but only "
            f"{human_bytes(estimate.available_device_bytes)} is free, and it cannot run one layer at a time: "
            f"{estimate.not_streamable[0].lower()}{estimate.not_streamable[1:]}"
        )
    check_streamed_fits(estimate)
    return "streamed"


def check_streamed_fits(estimate: MemoryEstimate) -> None:
    """Refuse, in one sentence, a job that one layer at a time would not fit either (asked for with
    ``--low-memory`` or the window's Low memory, or chosen): a model whose layers cannot be read one at a time, its
    hidden states, or a layer's work beside them."""
    if estimate.not_streamable:  # a legacy .bin checkpoint was told "needs 0 B but only 23.0 GB is free"
        raise ResourceError(f"This model cannot run one layer at a time: {estimate.not_streamable[0].lower()}"
                            f"{estimate.not_streamable[1:].rstrip('.')}; run it whole (without low memory).")
    whose, fewer = (("The check's held-out windows'", "fewer held-out windows") if estimate.states_of_windows
                    else ("The calibration samples'", "fewer samples"))
    if estimate.hidden_states_bytes > SAFETY * estimate.available_ram_bytes:
        raise ResourceError(
            f"{whose} hidden states alone need {human_bytes(estimate.hidden_states_bytes)} of memory but only "
            f"{human_bytes(estimate.available_ram_bytes)} is free; use {fewer} or a shorter sequence length."
        )
    if estimate.streamed_fits:
        return
    where = "memory" if estimate.on_cpu else f"memory on {estimate.device}"
    raise ResourceError(
        f"Even one layer at a time this model needs {human_bytes(estimate.streamed_total)} but only "
        f"{human_bytes(estimate.available_device_bytes if not estimate.on_cpu else estimate.available_ram_bytes)} of "
        f"{where} is free; use a smaller dtype, {fewer} or a shorter sequence length."
    )


def healing_does_not_fit(estimate: MemoryEstimate) -> str:
    """Why a healing job that only one layer at a time would fit cannot run, with the figures the choice read:
    the in-memory total against the free memory on a CPU; the device or the RAM, whichever fails, on a GPU."""
    if estimate.on_cpu:
        need, free, where = estimate.in_memory_total, estimate.available_ram_bytes, "memory"
    elif estimate.in_memory_device_bytes > SAFETY * estimate.available_device_bytes:
        need, free, where = estimate.in_memory_device_bytes, estimate.available_device_bytes, \
            f"memory on {estimate.device}"
    else:
        need, free, where = estimate.in_memory_ram_bytes, estimate.available_ram_bytes, "RAM"
    return (f"With healing this job needs about {human_bytes(need)} of {where} but {human_bytes(free)} is free (of "
            f"which it may use {SAFETY:.0%}), and healing trains the whole model at once; turn healing off (the repair "
            "still runs), or heal on fewer tokens a step (a shorter sequence length or a smaller batch).")

