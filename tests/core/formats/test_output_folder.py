"""The atomic output folder: never touches the process umask, never leaves a ``.name.old-*`` folder behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shortgpt_desktop.core.errors import OutputError
from shortgpt_desktop.core.formats import output_folder as of


def test_the_umask_is_read_without_being_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread writing while the mask is briefly 0 would make world-writable files: never call umask."""
    old = os.umask(0o027)
    try:
        calls: list[int] = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real(mask))
        with of.output_folder(tmp_path / "out") as temp:
            (temp / "a.txt").write_text("x")
        assert calls == []
        assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
        assert of.current_umask(tmp_path) == 0o027
    finally:
        os.umask(old)


def test_the_probe_reads_the_umask_where_proc_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o022)
    try:
        real_read = Path.read_text

        def no_proc(self: Path, *args: object, **kwargs: object) -> str:
            if str(self) == "/proc/self/status":
                raise FileNotFoundError(self)
            return real_read(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "read_text", no_proc)
        assert of.current_umask(tmp_path) == 0o022
        assert list(tmp_path.iterdir()) == []  # the probe is gone
    finally:
        os.umask(old)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replacing_an_output_leaves_no_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with of.output_folder(out) as temp:
        (temp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_a_rolled_back_replace_restores_the_output_and_leaves_no_old_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real_replace = os.replace
    moves: list[str] = []

    def failing_second_move(src: object, dst: object) -> None:
        moves.append(str(src))
        if len(moves) == 2:  # the finished folder cannot be moved into place
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing_second_move)
    with pytest.raises(OutputError, match="nothing was written"), of.output_folder(out) as temp:
        (temp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_an_output_the_disk_cannot_hold_is_refused_in_a_sentence(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The room is asked of the disk the folder will be written on (its nearest existing parent), for the size
    expected with a margin and what the format writes beside the weights."""
    from shortgpt_desktop.core import free_space

    asked: list[Path] = []

    def usage(path: Path) -> object:
        asked.append(Path(path))
        return type("Usage", (), {"free": 2_000_000_000})()

    monkeypatch.setattr(free_space.shutil, "disk_usage", usage)
    out = tmp_path / "not" / "yet" / "there"
    of.check_room(out, 1_800_000_000, 64_000_000)  # 1.836 GB with the margin, 1.9 GB with the side files: fits
    assert asked == [tmp_path]
    with pytest.raises(OutputError, match=r"^The pruned model needs about 2\.0 GB \(2\.1 GB with its other files "
                                          r"and a margin\) but only 2\.0 GB is free on the disk of .*; free some "
                                          r"space or choose a folder on another disk\.$"):
        of.check_room(out, 1_990_000_000, 64_000_000)  # the weights fit byte for byte, not with the rest
    of.check_room(out, 1_900_000_000)  # a GGUF: no side files but the card, within the margin
    with pytest.raises(OutputError, match=r"needs about 1\.4 TB \(1\.4 TB .*\) but only 2\.0 GB"):
        of.check_room(out, 1_400_000_000_000)
    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: (_ for _ in ()).throw(OSError("no")))
    of.check_room(out, 1_400_000_000_000)  # the system does not say: left to the save
