"""The files the command line writes beside a job (``--json``, ``--csv``) and how an earlier one is known again: the
command line replaces an earlier report of this tool, never another file (see ``output_folder.check_report_path``).
The fields named here are each file's signature; :mod:`..report` and :mod:`..measure.sweep` write them."""

from __future__ import annotations

import json
from pathlib import Path

#: What a report path may replace on the command line (``check_report_path``'s ``replaces``), one kind a command:
#: score's JSON (the scores), eval's (its measurements: no metric), prune's (a save recorded), a quality curve's
#: JSON or CSV (sweep). ``prune --json eval.json`` replaced an evaluation with a prune's report without a word.
SCORE_REPORT, EVAL_REPORT, SAVED_REPORT, CURVE, CURVE_CSV = "score report", "eval report", "saved report", "curve", \
    "curve csv"
#: Fields every job's JSON report holds, by which a file is known as one.
REPORT_KEYS = ("model", "n_layers", "removed_layers")
#: Fields every quality curve's JSON holds.
CURVE_KEYS = ("label", "order", "points")
#: A quality curve's CSV columns (``sweep --csv``), the first three of which make its header known.
CSV_FIELDS = ("k", "layer", "removed", "perplexity", "nll", "tokens", "same_top", "mean_kl", "quiz_kept", "quiz_known",
              "not_repaired")

REPORT_NAMES = {SCORE_REPORT: "the scores of a score job", EVAL_REPORT: "the report of an evaluation",
                SAVED_REPORT: "the report of a saved model", CURVE: "a quality curve's JSON report",
                CURVE_CSV: "a quality curve's table"}


def earlier_report(path: Path) -> str | None:
    """Which report of this tool ``path`` holds (:data:`SCORE_REPORT`…; "" where it is empty, None where it holds
    none): a job's JSON (``--json``: one that names a saved model is :data:`SAVED_REPORT`, one with a perplexity
    and no save, or no metric, :data:`EVAL_REPORT`), a quality curve's JSON or CSV (``sweep --json/--csv``). Read
    from its first MiB: a report is a few kB to a few hundred."""
    try:
        with path.open("rb") as stream:
            head = stream.read(1 << 20)
            whole = not stream.read(1)
    except OSError:
        return None
    if not head.strip():
        return ""
    text = head.decode("utf-8", errors="replace")
    if text.startswith(",".join(CSV_FIELDS[:3]) + ","):
        return CURVE_CSV
    if not whole:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if set(REPORT_KEYS) <= data.keys():
        if data.get("output"):
            return SAVED_REPORT
        # eval measures perplexity and scores nothing; a score job measures no perplexity (an eval's report written
        # before eval left its metric empty named one, and was taken for a score's)
        return EVAL_REPORT if data.get("ppl_before") is not None or not data.get("metric") else SCORE_REPORT
    return CURVE if set(CURVE_KEYS) <= data.keys() else None
