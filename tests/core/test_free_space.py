"""Room on a disk: the nearest existing folder is asked, in the units the front ends use."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core import free_space
from shortgpt_desktop.core.errors import HubError
from shortgpt_desktop.core.model import sources


def test_a_folder_not_made_yet_is_asked_through_its_nearest_existing_parent(tmp_path: Path) -> None:
    assert free_space.nearest_existing(tmp_path / "a" / "b") == tmp_path.resolve()
    assert free_space.nearest_existing(tmp_path) == tmp_path.resolve()
    assert free_space.free_bytes(tmp_path / "a") == free_space.shutil.disk_usage(tmp_path).free


@pytest.mark.parametrize(("n", "words"), [(820_349_000, "820.3 MB"), (1_500_000_000, "1.5 GB"),
                                          (2_400_000_000_000, "2.4 TB"), (12_000, "0.0 MB")])
def test_sizes_in_decimal_units(n: int, words: str) -> None:
    assert free_space.size_words(n) == words


def test_a_hub_download_the_disk_cannot_hold_is_refused_before_it_starts(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1_200_000_000})())
    sources.check_free_space(tmp_path / "hub", 1_100_000_000, "org/model")
    with pytest.raises(HubError, match=r"^org/model needs 3\.1 GB but only 1\.2 GB is free on the disk of .*hub; "
                                       r"free some space or set HF_HOME to a bigger disk\.$"):
        sources.check_free_space(tmp_path / "hub", 3_100_000_000, "org/model")
