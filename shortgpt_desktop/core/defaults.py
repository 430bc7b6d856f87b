"""Default job settings, in one place for the command line, the window and the engine."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLES = 128
SEQ_LEN = 512
#: Fewest tokens per sample a job takes (the command line refuses fewer before the model loads).
MIN_SEQ_LEN = 8
BATCH_SIZE = 4
METRIC = "bi+"
REPAIR = "linear"
#: ``--repair``: the linear repair alone, the map then the MLP refit beside the cuts (:mod:`.cut.mlp_refit`), or none.
REPAIRS = ("linear", "refit", "none")
EVAL_WINDOWS = 64
MAX_NEW_TOKENS = 24
PROMPT = "The most important thing to know about the history of science is"
#: bi+'s measured choice (:mod:`.cut.selection`): calibration samples each candidate is measured on, and the
#: lowest-BI layers (and as many of the single-removal order) each greedy step measures.
SELECTION_SAMPLES = 8
SELECTION_WINDOW = 3
#: Bytes bi+'s state cache may hold (:mod:`.cut.candidates`), and the original's states the repair's fits keep
#: for each other (:class:`.cut.repair.OriginalStates`); the memory estimate counts both (:mod:`.model.memory`).
CANDIDATE_CACHE_BUDGET = 2 * 1024**3
ORIGINAL_STATES_BUDGET = 1024**3
#: The widest MLP output projection (its input, the MLP's intermediate size) the linear repair refits whole
#: (:mod:`.cut.repair`): while its ridge is chosen, about five float64 sums of that width squared are held at once
#: (4.8 GB at Llama-2-7B's 11,008; the memory estimate counts them); a wider one gets a map folded into it instead.
MAX_PROJECTION_INPUTS = 11_008
#: Share of layers the window's slider starts at after the first scoring (the ShortGPT paper's usual cut).
RATIO = 0.25


@dataclass(frozen=True)
class Preset:
    """A named set of sizes for scoring and the perplexity check, with what it trades."""

    name: str
    label: str
    samples: int
    seq_len: int
    eval_windows: int
    trade_off: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("quick", "Quick (CPU)", 32, 256, 16,
               "8k calibration tokens: scoring a 135M model takes about half a minute on 2 CPU cores, the whole "
               "default prune about 6 min (about 22 min for a 0.5B model); the ranking of the middle layers is "
               "noisier"),
        Preset("standard", "Standard", SAMPLES, SEQ_LEN, EVAL_WINDOWS,
               "65k calibration tokens, the paper's scale: best on a GPU, about 16 min for 135M on a CPU"),
    )
}

#: Held-out tokens under which a perplexity is said to be rough (the summary, the card and the sweep say so). Measured
#: with SmolLM2 on WikiText-2 test text, the mean loss of a 256-token window spreads by 0.35 nats from window to window
#: (16 windows), so over four windows the mean has a standard error near 0.17 nats: the perplexity can move by a
#: fifth with another text of the same length, more with fewer tokens.
FEW_EVAL_TOKENS = 1024
_ROUGH = "few for a steady figure: another text of this length can move it by a fifth or more"


def rough_figure(tokens: int, text_ran_out: bool, eval_text: bool = False, window: bool = False) -> str | None:
    """The caveat for a perplexity measured on fewer than :data:`FEW_EVAL_TOKENS` tokens (None for more), with the
    advice that gives more: more text where the text gave fewer windows than asked (``text_ran_out``: asking for
    more windows measures no more; the window said "more check windows give a steadier one" of a 6 kB text), else
    more windows. ``eval_text``: the figure was measured on an evaluation text of its own; ``window``: said in the
    window, which has no evaluation text, and whose held-out windows are a setting (Advanced)."""
    if not 0 < tokens < FEW_EVAL_TOKENS:
        return None
    if text_ran_out and window:
        advice = "more calibration text gives a steadier one (its held-out end is measured)"
    elif text_ran_out:
        advice = ("give a longer evaluation text" if eval_text else
                  "give more calibration text (its held-out end is measured) or an evaluation text (--eval-text)")
    else:
        advice = ("more check windows (Advanced) give a steadier one" if window else
                  "a larger --eval-windows gives a steadier one")
    return f"{_ROUGH}; {advice}"
