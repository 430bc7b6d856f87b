"""Rewrite README.md's table of supported families from the last run of tests/core/model/test_families.py.

    python -m pytest tests/core/model/test_families.py && python tools/family_table.py

The test records each family's outcome in pytest's cache; this script only formats it, so the README never
claims a family that did not pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shortgpt_desktop.core.model.families import FAMILIES  # noqa: E402

CACHE = ROOT / ".pytest_cache" / "v" / "shortgpt" / "family-results"
BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"


def table(results: dict[str, dict]) -> str:
    lines = [
        "| family | `model_type` | layers at | layer count field | per-layer attention types kept | "
        "save → reload → same logits → cached generation |",
        "|---|---|---|---|---|---|",
    ]
    by_type = {r["model_type"]: r for r in results.values()}
    for family in FAMILIES:
        result = by_type.get(family.name, {})
        passed = "✅ passed" if result.get("passed") else "❌ not passing"
        types = "yes (tested mixed)" if result.get("per_layer_types") else "—"
        lines.append(f"| {family.label} | `{family.name}` | `{family.layers_path}` | `{family.count_field}` | "
                     f"{types} | {passed} |")
    return "\n".join(lines)


def main() -> int:
    if not CACHE.is_file():
        print("no results: run `python -m pytest tests/core/model/test_families.py` first", file=sys.stderr)
        return 1
    results = json.loads(CACHE.read_text())
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + table(results) + "\n" + text[end:], encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
