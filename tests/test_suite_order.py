"""The slow suite is handed to its two workers longest first (tests/conftest.py): the order a run collects."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

MODULES = {
    "test_a": """
import pytest
def test_quick_a(): pass
@pytest.mark.slow(seconds=10)
def test_short(): pass
""",
    "test_b": """
import pytest
pytestmark = pytest.mark.slow
def test_first(): pass
@pytest.mark.slow(seconds=500)
def test_long(): pass
""",
    "test_c": """
import pytest
@pytest.mark.slow
def test_unmarked(): pass
def test_quick_c(): pass
@pytest.mark.slow(seconds=50)
def test_middle(): pass
""",
}


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", *args)
    return [line for line in result.outlines if "::" in line]


def test_the_slow_suite_goes_longest_module_first_and_a_quick_run_keeps_the_files_order(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    slow: real-model tests\n")
    pytester.makepyfile(**MODULES)
    # By each module's longest test (its own order kept within it: module fixtures are built once).
    assert collected(pytester, "-m", "slow") == [
        "test_b.py::test_first", "test_b.py::test_long",
        "test_c.py::test_unmarked", "test_c.py::test_middle",
        "test_a.py::test_short",
    ]
    # The quick suite is sorted after ``-m`` has deselected the slow tests: nothing moves.
    assert collected(pytester, "-m", "not slow") == ["test_a.py::test_quick_a", "test_c.py::test_quick_c"]
    # Everything at once: modules by their longest test, quick tests stay in their module.
    assert collected(pytester)[:2] == ["test_b.py::test_first", "test_b.py::test_long"]
