"""Hostile model files: what the tool says, and how long and how much memory each kind of damage costs.

    python benchmarks/bench_hostile_files.py [--first 0] [--count 1500]

Runs the fuzz test's seeded mutants (``tests/core/formats/test_fuzz.py``: a 2-layer llama as GGUF and as a
safetensors folder, each mutant opened, inspected, loaded and run) and prints a Markdown table per kind of
damage: how many were refused and how many still load as a valid model, one refusal as the user reads it, the
slowest mutant and the largest peak resident growth of one mutant (VmHWM reset per mutant, Linux only).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "core" / "formats")]

import test_fuzz as tf  # noqa: E402  (the fuzz test's runner)

from shortgpt_desktop.core.testing import fuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        base = Path(scratch)
        out = tf.run_fuzz(fuzz.build_bases(base / "bases"), range(args.first, args.first + args.count), base)
    table(out)


#: (pattern of a mutation's description, kind of damage), first match wins; GGUF and safetensors apart.
GGUF_KINDS = [
    (r"^version", "GGUF version"), (r"^tensor count", "GGUF tensor count"),
    (r"^metadata count", "GGUF metadata (KV) count"), (r"^key length", "GGUF key length"),
    (r"^item type of", "GGUF array item type"), (r"^length of", "GGUF array length"),
    (r"^type of (blk|token_embd|output)", "GGUF tensor type"), (r"^type of", "GGUF metadata value type"),
    (r"^bytes of the string", "GGUF string bytes (UTF-8)"), (r"^value of .* length", "GGUF string length"),
    (r"\[\d+\] length", "GGUF string length (token list)"), (r"^value of llama\.block_count", "GGUF block count"),
    (r"^value of", "GGUF metadata value (sizes, ids)"), (r"^tensor \d+ name length", "GGUF tensor name length"),
    (r"^dimensions of", "GGUF tensor n_dims"), (r"^dimension \d", "GGUF tensor dimension"),
    (r"^offset of", "GGUF tensor offset"), (r"bits flipped", "GGUF random bit flips"),
    (r"truncated", "GGUF truncated"), (r"zeroed", "GGUF bytes zeroed"), (r"appended", "GGUF bytes appended"),
]
SAFETENSORS_KINDS = [
    (r"^config\.json (num_hidden_layers|hidden_size|num_attention_heads|num_key_value_heads|intermediate_size|"
     r"vocab_size|max_position_embeddings|head_dim) ", "config.json sizes"),
    (r"^config\.json", "config.json other fields"), (r" dtype ->", "safetensors dtype"),
    (r" shape(-dim)? ->", "safetensors shape"), (r" (data_offsets|offset-item) ->", "safetensors data_offsets"),
    (r" entry ->", "safetensors entry not a table"), (r"header metadata", "safetensors __metadata__"),
    (r"header drop", "safetensors entry removed (gap)"), (r"header duplicate", "safetensors duplicate name"),
    (r"header (not-object|deep|utf8)", "safetensors header not a JSON object, too deep or not UTF-8"),
    (r"header length", "safetensors header length"), (r"flipped", "safetensors random bit flips"),
    (r"truncated", "safetensors truncated"), (r"zeroed", "safetensors bytes zeroed"),
    (r"appended", "safetensors bytes appended"),
]


def kind(outcome: tf.Outcome) -> str:
    for pattern, name in GGUF_KINDS if outcome.base == "gguf" else SAFETENSORS_KINDS:
        if re.search(pattern, outcome.mutation):
            return name
    return f"{outcome.base}: {outcome.mutation}"


def table(out: list[tf.Outcome]) -> None:
    groups: dict[str, list[tf.Outcome]] = collections.defaultdict(list)
    for outcome in out:
        groups[kind(outcome)].append(outcome)
    print("| hostile input | mutants | refused / valid | what the tool says (one example) | max time | max peak |")
    print("|---|---|---|---|---|---|")
    for name in sorted(groups):
        group = groups[name]
        refused = [o for o in group if o.result == "refused"]
        bad = [o for o in group if o.result not in ("refused", "valid")]
        example = refused[0].detail if refused else "(loads as a valid model)"
        example = re.sub(r"^\w+Error: ", "", re.sub(r"/\S+?/(gguf|safetensors)-\d+", "<folder>", example))[:230]
        counts = f"{len(refused)} / {sum(o.result == 'valid' for o in group)}" + (f" / BAD {len(bad)}" if bad else "")
        print(f"| {name} | {len(group)} | {counts} | {example} | {max(o.seconds for o in group):.2f} s | "
              f"{max(o.peak_bytes for o in group) / 2**20:.0f} MiB |")
    print(f"\n{len(out)} mutants: {dict(collections.Counter(o.result for o in out))}")


if __name__ == "__main__":
    main()
