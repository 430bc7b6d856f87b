"""Scores as a JSON file (File → Export scores… / Import scores…): the engine's report plus a partial flag.

The file is the command line's ``--json`` report (:class:`~..core.report.Report`), so either face reads the
other's; ``partial`` says the pass was cancelled part-way.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.formats.output_folder import write_file_atomically
from ..core.formats.report_files import SCORE_REPORT
from ..core.measure.metrics import METRICS
from ..core.measure.scoring import LayerScores
from ..core.model.sources import looks_like_hub_id
from ..core.report import Report


class ScoresFileError(UserError):
    """A scores file that cannot be read or is not for the opened model."""


class PlanOnlyFile(ScoresFileError):
    """A report that lists the layers a cut removed and no scores (``shortgpt prune --remove … --json``): its plan can
    be shown on the open model's own scores (it was refused as "holds no layer scores", which the file's own program
    had written)."""

    def __init__(self, message: str, model: str, n_layers: int, architecture: str, revision: str,
                 removed: list[int], left_out: list[str], repeated: list[int]) -> None:
        super().__init__(message)
        self.model, self.n_layers, self.architecture, self.revision = model, n_layers, architecture, revision
        self.removed, self.left_out, self.repeated = removed, left_out, repeated


@dataclass
class ImportedScores:
    model: str
    n_layers: int
    architecture: str
    scores: LayerScores
    partial: bool = False
    removed: list[int] = field(default_factory=list)
    #: The file and what the scores were measured on there (``Report.scores_imported``, for the card).
    origin: dict[str, Any] = field(default_factory=dict)
    #: The Hub revision the scores were measured on ("" for a local model, or a file that does not say).
    revision: str = ""
    #: What the file's plan listed that is not a layer of the model, as written there (``-1``, ``"x"``, ``99``):
    #: left out of :attr:`removed`, and said (a hand-edited file's were dropped without a word).
    left_out: list[str] = field(default_factory=list)
    #: The layers the file's plan listed more than once (each kept once).
    repeated: list[int] = field(default_factory=list)


def write_scores(report: Report, partial: bool, path: str | Path, sources: Sequence[str | Path] = (),
                 texts: Sequence[str | Path] = ()) -> Path:
    """Write ``report`` as JSON to ``path`` via a temporary file beside it (never a half-written file), refused as
    the command line's ``--json`` is over or inside the ``sources`` model, over the ``texts`` the job read, over a
    read-only file or a device, and over any file but scores exported before: the export replaced the open model's
    ``config.json``, read-only files, and (the save dialog's "Replace?" answered Yes, as for any file) a note
    ``todo.txt`` and another program's ``data.json``."""
    data = {**report.to_dict(), "partial": partial}
    return write_file_atomically(Path(path), lambda stream: stream.write(json.dumps(data, indent=2) + "\n"),
                                 sources, texts, replaces=SCORE_REPORT)


def _whole(value: Any) -> int | None:
    """``value`` where it is a whole number of 0 or more (JSON's true is not 1 layer), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _score_list(value: Any, n: int, what: str) -> list[float | None]:
    if not isinstance(value, list) or len(value) != n:
        raise ScoresFileError(f"The {what} in the file are not one number per layer.")
    out: list[float | None] = []
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
        else:
            raise ScoresFileError(f"The {what} in the file are not one number per layer.")
    return out


def read_scores(path: str | Path) -> ImportedScores:
    """Read a scores file written by Export scores… or the command line's ``--json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoresFileError(f"{path} cannot be read ({exc}).") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply for Python's parser
        raise ScoresFileError(f"{path} is not valid JSON ({exc}).") from None
    if isinstance(data, dict) and _whole(data.get("n_layers")) and not data.get("scores") \
            and isinstance(data.get("removed_layers"), list) and data["removed_layers"]:
        n = int(data["n_layers"])
        removed, left_out, repeated = _listed_layers(data["removed_layers"], n)
        layers = ", ".join(map(str, removed)) or "none of this model's"
        raise PlanOnlyFile(f"{path} lists the layers a cut removed ({layers}) but no scores: score the layers, then "
                           "import it again to show that plan on them.", str(data.get("model", "")), n,
                           str(data.get("architecture", "")),
                           str(data.get("model_revision") or ""), removed, left_out, repeated)
    if not isinstance(data, dict) or not _whole(data.get("n_layers")) or not data.get("scores"):
        raise ScoresFileError(f"{path} holds no layer scores: export them from ShortGPT Desktop first.")
    n = int(data["n_layers"])
    metric = str(data.get("metric", ""))
    if metric == "manual" and data.get("picked_after") in METRICS:  # a saved plan picked by hand from these scores
        metric = str(data["picked_after"])
    if metric not in METRICS:
        raise ScoresFileError(f"{path} uses a metric this version does not know ({metric or 'none'}).")
    scores = _within_range(_score_list(data["scores"], n, "scores"), metric, path)
    extra_raw = data.get("other_scores") or {}
    if not isinstance(extra_raw, dict):  # a list here raised AttributeError out of the window's slot, unsaid
        raise ScoresFileError("The other metrics' scores in the file are not one list per metric.")
    extra = {str(name): _within_range(_score_list(values, n, f"{name} scores"), str(name), path)
             for name, values in extra_raw.items()}
    block = data.get("block_size")
    tokens, timings = data.get("tokens"), data.get("timings")
    seconds = timings.get("scoring") if isinstance(timings, dict) else None
    layer_scores = LayerScores(metric, scores,
                               tokens=_whole(tokens) or 0,
                               seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
                               block_size=block if isinstance(block, int) else None, extra=extra)
    listed = data.get("removed_layers")  # a record of the file's plan, not scores: what is not a layer is left out
    removed, left_out, repeated = _listed_layers(listed if isinstance(listed, list) else [], n)
    return ImportedScores(str(data.get("model", "")), n, str(data.get("architecture", "")), layer_scores,
                          bool(data.get("partial", False)), removed, _origin(path, data, layer_scores.tokens),
                          str(data.get("model_revision") or ""), left_out, repeated)


#: Room beyond a metric's range for float rounding (a cosine of 1.0000001 gives a Block Influence just below 0).
RANGE_SLACK = 1e-3


def _within_range(scores: list[float | None], metric: str, path: Path) -> list[float | None]:
    """``scores`` where each lies within what ``metric`` can give (:attr:`..core.measure.metrics.Metric.value_range`;
    a metric this version does not know is not checked): a Block Influence of -5 and of 1e9, typed into an exported
    file, drew a broken chart, whose bars all went at the next move of the slider."""
    known = METRICS.get(metric)
    if known is None:
        return scores
    low, high = known.value_range
    for layer, value in enumerate(scores):
        if value is not None and not low - RANGE_SLACK <= value <= high + RANGE_SLACK:
            bounds = f"at least {low:g}" if math.isinf(high) else f"between {low:g} and {high:g}"
            raise ScoresFileError(f"{path} gives layer {layer} a {known.label} score of {value:g}, which cannot be: "
                                  f"such scores are {bounds}. The file was edited or damaged; export the scores "
                                  "again, or score the model.")
    return scores


def _listed_layers(listed: list[Any], n: int) -> tuple[list[int], list[str], list[int]]:
    """The layers of ``n`` a file's plan lists, in order, once each; what else it lists, as JSON writes it; and the
    layers it lists more than once."""
    removed: list[int] = []
    left_out: list[str] = []
    repeated: list[int] = []
    for entry in listed:
        if _whole(entry) is None or entry >= n:
            left_out.append(json.dumps(entry)[:20])
        elif entry in removed:
            if entry not in repeated:
                repeated.append(entry)
        else:
            removed.append(entry)
    return removed, left_out, repeated


def _origin(path: Path, data: dict[str, Any], tokens: int) -> dict[str, Any]:
    """What the file says its scores were measured on; a scores file imported again (its card said so) keeps the
    first file's record."""
    earlier = data.get("scores_imported")
    record, file = (earlier, earlier.get("file")) if isinstance(earlier, dict) and earlier.get("file") \
        else (data, str(path))

    def whole(key: str) -> int | None:
        return _whole(record.get(key))

    calibration = record.get("calibration")
    texts = [str(c) for c in calibration] if isinstance(calibration, list) else []
    return {"file": str(file), "calibration": texts, "samples": whole("samples"), "seq_len": whole("seq_len"),
            "seed": whole("seed"), "tokens": whole("tokens") if record is earlier else tokens}


def same_model(imported: ImportedScores | PlanOnlyFile, spec: str, display_name: str, n_layers: int,
               architecture: str = "", revision: str = "") -> bool:
    """Whether scores measured on ``imported.model`` fit the opened model: the same layer count, the same
    architecture where both are known, the same Hub revision where both are known (``revision``: the open model's;
    a Hub model is named by its id, whichever revision's page opened it), and the same model. Where the file names a
    model on this machine (an absolute path that is there) it must be the opened one: two runs' folders both named
    ``final`` passed on their name, and one's scores were shown and saved as the other's. A path that is not here
    (the folder moved, another machine) is matched by its last part."""
    def name(text: str) -> str:  # a name that is not UTF-8 is written to the file with U+FFFD (report._json_safe)
        text = re.sub("[\ud800-\udfff]", "\ufffd", text)
        return Path(text.rstrip("/\\")).name or text

    if imported.n_layers != n_layers:
        return False
    if imported.architecture and architecture and imported.architecture != architecture:
        return False
    if imported.revision and revision and imported.revision != revision:
        return False
    recorded = _recorded_here(imported, spec)
    if recorded is not None:
        try:
            return os.path.samefile(recorded, spec)
        except OSError:
            return False
    if looks_like_hub_id(imported.model) and any(looks_like_hub_id(n) and n.casefold() == imported.model.casefold()
                                                 for n in (spec, display_name)):
        return True  # the Hub finds an id whatever its capitals: the same model typed in lower case was refused
    return name(imported.model) in (name(spec), name(display_name))


def _recorded_here(imported: ImportedScores | PlanOnlyFile, spec: str) -> Path | None:
    """The model the file names where it is on this machine, as the opened one is (then matched as the very file
    or folder), else None."""
    recorded = Path(imported.model) if imported.model else None
    if recorded is not None and recorded.is_absolute() and recorded.exists() and Path(spec).exists():
        return recorded
    return None


def another_model_of_the_same_name(imported: ImportedScores | PlanOnlyFile, spec: str, n_layers: int) -> bool:
    """Whether the scores were refused (:func:`same_model`) only for naming another file or folder on this machine
    whose name is the opened model's (a copy, or another run's folder of the same name)."""
    try:
        recorded = _recorded_here(imported, spec)
        return (recorded is not None and imported.n_layers == n_layers and recorded.name == Path(spec).name
                and not os.path.samefile(recorded, spec))
    except OSError:
        return False
