"""Room on a disk: the nearest existing folder is asked, and a download that does not fit is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortgpt_desktop.core import free_space
from shortgpt_desktop.core.errors import HubError
from shortgpt_desktop.core.model import sources


def test_a_folder_not_made_yet_is_asked_through_its_nearest_existing_parent(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert free_space.nearest_existing(tmp_path / "a" / "b") == tmp_path.resolve()
    assert free_space.nearest_existing(tmp_path) == tmp_path.resolve()
    asked: list[Path] = []
    monkeypatch.setattr(free_space.shutil, "disk_usage",
                        lambda path: asked.append(path) or type("Usage", (), {"free": 123_456})())
    assert free_space.free_bytes(tmp_path / "a") == 123_456 and asked == [tmp_path.resolve()]


def test_a_disk_that_does_not_say_gives_no_free_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> None:
        raise PermissionError(path)

    monkeypatch.setattr(free_space.shutil, "disk_usage", refuse)
    assert free_space.free_bytes(tmp_path) is None


def test_a_hub_download_the_disk_cannot_hold_is_refused_before_it_starts(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1_200_000_000})())
    sources.check_free_space(tmp_path / "hub", 1_100_000_000, "org/model")
    with pytest.raises(HubError, match=r"^org/model needs 3\.1 GB but only 1\.2 GB is free on the disk of .*hub; "
                                       r"free some space or set HF_HOME to a bigger disk\.$"):
        sources.check_free_space(tmp_path / "hub", 3_100_000_000, "org/model")


def test_a_relative_path_is_asked_through_its_absolute_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out pruned`` said the disk of "." had no room: the sentence names the folder itself."""
    monkeypatch.chdir(tmp_path)
    assert free_space.nearest_existing(Path("a") / "b") == tmp_path.resolve()
