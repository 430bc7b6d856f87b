"""The quality curve (the paper's Figure 5) as data: perplexity and fidelity with k layers removed, k = 0, 1, ….

:meth:`..engine.Engine.quality_curve` measures it (each count's choice and repair as Save would make them, plain
BI's beside it) on the check's held-out windows; this module holds its points, writes them as CSV and JSON, and
gives the removal order that follows from scores exactly as :func:`..cut.plan.lowest` picks layers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..formats.report_files import CSV_FIELDS

STAGE = "sweep"


@dataclass
class CurvePoint:
    k: int  # layers removed
    layer: int | None  # the layer this step added (None for k = 0)
    removed: list[int]  # ascending
    perplexity: float
    nll: float
    tokens: int
    same_top: float | None = None  # share of tokens where the pruned model's top token is the original's
    mean_kl: float | None = None  # mean KL(original || pruned) per token, nats
    #: The check's quiz (:mod:`.quiz`) at this point: questions the original answers right (``quiz_known``) and,
    #: of those, the ones this model answers right too; None where it was not asked.
    quiz_kept: int | None = None
    quiz_known: int | None = None
    #: Why part of this point's cut got no repair although the curve repairs (a run starting at layer 0 has no
    #: kept layer before it to refit), as the repair says it; empty where every run was repaired. The label's
    #: "+ repair" read as true of a sequential curve whose every point removes layer 0 (a walkthrough).
    not_repaired: list[str] = field(default_factory=list)


@dataclass
class QualityCurve:
    label: str  # e.g. "bi" or "bi+"
    #: Removal order: point k removes order[:k]. The recipe's choices are not always nested (bi+ chooses each
    #: count's set as a whole): the order then stops before the first point that is not its predecessor plus one
    #: layer, and is shorter than the points; each point's own ``removed`` is what it removes.
    order: list[int]
    points: list[CurvePoint] = field(default_factory=list)
    windows: int = 0  # held-out windows used per point (a subset of the token set's)
    tokens: int = 0  # predicted tokens per point
    data: str = "held-out windows (subset)"
    #: The whole curve job's seconds; None for its baseline, whose passes ran between the curve's (their time is
    #: in the curve's: its JSON block said 0.0 seconds, as if measuring it had cost nothing).
    seconds: float | None = None
    baseline: QualityCurve | None = None  # another order's curve on the same windows, for reference (plain BI)
    #: What the curve was measured on (``sweep --json`` names it, as ``prune --json`` does): the model, the
    #: calibration text read, the evaluation text (None: the calibration text's end), the sizes and the seed.
    model: str = ""
    calibration: list[str] = field(default_factory=list)
    eval_text: str | None = None
    samples: int = 0
    seq_len: int = 0
    seed: int = 0
    #: What the text gave short of what was asked (fewer samples or windows), as a prune's report says it.
    warnings: list[str] = field(default_factory=list)
    #: The text gave fewer held-out windows than asked for: asking for more would measure no more (one of
    #: ``warnings`` says so in words).
    text_ran_out: bool = False
    #: Where it was measured, as ``prune --json`` and ``score --json`` say it (the sweep's JSON did not): the
    #: program's version, the device and the dtype the model ran in.
    version: str = ""
    device: str = ""
    dtype: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityCurve:
        values = dict(data)
        values["points"] = [CurvePoint(**p) for p in values.get("points", [])]
        if values.get("baseline"):
            values["baseline"] = cls.from_json(values["baseline"])
        return cls(**values)

    def write_csv(self, path: str | Path) -> Path:
        """One row per point; written beside ``path`` and moved into place when complete."""
        def write(stream: Any) -> None:
            writer = csv.writer(stream)
            extra = (("baseline_removed", "baseline_perplexity", "baseline_same_top", "baseline_mean_kl")
                     if self.baseline else ())
            writer.writerow(CSV_FIELDS + extra)
            base = {p.k: p for p in self.baseline.points} if self.baseline else {}
            for p in self.points:
                row = [p.k, "" if p.layer is None else p.layer, " ".join(map(str, p.removed)), repr(p.perplexity),
                       repr(p.nll), p.tokens, _cell(p.same_top), _cell(p.mean_kl), _cell(p.quiz_kept),
                       _cell(p.quiz_known), "; ".join(p.not_repaired)]  # as the table's "*" (a review)
                if self.baseline:
                    b = base.get(p.k)
                    row += ["", "", "", ""] if b is None else [" ".join(map(str, b.removed)), repr(b.perplexity),
                                                               _cell(b.same_top), _cell(b.mean_kl)]
                writer.writerow(row)

        return _write_atomically(Path(path), write)

    def write_json(self, path: str | Path) -> Path:
        return _write_atomically(Path(path), lambda stream: json.dump(self.to_json(), stream, indent=1))


def _write_atomically(path: Path, write: Callable[[Any], None]) -> Path:
    """``write(stream)`` into a temporary file beside ``path``, moved into place only when complete.

    A path that cannot be written (no such folder, no permission, a folder in the way, a full disk) is an
    :class:`OutputError` sentence; nothing is left behind.
    """
    from ..formats.output_folder import write_file_atomically

    return write_file_atomically(path, write)


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def curve_point(k: int, layer: int | None, removed: list[int], result: Any, fidelity: Any) -> CurvePoint:
    """A point from a perplexity result and (for a pruned model) its fidelity to the original."""
    return CurvePoint(k, layer, list(removed), result.perplexity, result.nll, result.tokens,
                      1.0 if fidelity is None else fidelity.same_top, 0.0 if fidelity is None else fidelity.mean_kl)
