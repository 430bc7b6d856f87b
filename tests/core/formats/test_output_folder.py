"""The atomic output folder: never touches the process umask, never leaves a ``.name.old-*`` folder behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def _earlier_output(out: Path) -> None:
    """What an earlier save leaves: a model and the card this app writes (without it the folder is the user's)."""
    (out / "config.json").write_text("an earlier output")
    (out / "README.md").write_text(_card())


def _own_gguf(path: Path, written_here: bool = True) -> Path:
    """A small GGUF file, whose header records the layers removed as this app's GGUF output does (``written_here``),
    or not, as a conversion by llama.cpp's script does not."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    if written_here:
        writer.add_array("shortgpt.removed_layers", [1, 2])
    writer.add_tensor("x", np.zeros((4,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _linked_into_an_earlier_output(parent: Path, name: str) -> tuple[Path, Path]:
    """A folder holding an earlier output with the weight file ``name`` (which ``force`` may replace), and a model
    folder whose ``name`` is a link to that file: (the earlier output, the linking folder)."""
    stem = Path(name).suffix.lstrip(".")
    store, linking = parent / f"store-{stem}", parent / f"linked-{stem}"
    for folder in (store, linking):
        folder.mkdir()
    (store / name).write_bytes(b"GGUF")
    _earlier_output(store)
    (linking / name).symlink_to(store / name)
    return store, linking


@contextmanager
def _finished_through_the_interrupts() -> Iterator[None]:
    """A Ctrl-C that escapes a save a test expects to finish: a failure (let through, it stopped pytest itself,
    "!!! KeyboardInterrupt !!!", and the rest of the file went unrun)."""
    try:
        yield
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped the save, which should have finished")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replacing_an_output_leaves_no_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    of.forget_outputs_in_place()
    with of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
        assert not of.an_output_is_in_place()
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert _leftovers(tmp_path) == []
    assert of.an_output_is_in_place()  # the command line's Ctrl-C no longer cancels: the earlier output is gone


def test_a_move_refused_for_good_restores_the_output_and_keeps_the_finished_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses to move a folder that a program holds open (a terminal in it, llama.cpp mapping the old
    model), for good: the finished model, hours of a job, was deleted with the temporary folder. The old output is
    put back, and the finished model is kept complete beside it under a name one sees, which the message gives."""
    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    real_replace = os.replace
    tries: list[str] = []

    def refused_into_out(src: object, dst: object) -> None:
        if Path(dst) == out and ".partial-" in Path(src).name:  # the finished folder cannot be moved into place
            tries.append(str(src))
            raise PermissionError(13, "Access is denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", refused_into_out)
    monkeypatch.setattr(of.time, "sleep", lambda seconds: None)
    kept = tmp_path / "out.finished"
    said = (r"could not be moved into .*out \(access is denied: another program may have it open\); it is kept "
            rf"complete in {kept}\.$")
    with pytest.raises(OutputError, match=said), of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
    assert len(tries) == len(of.MOVE_RETRY_DELAYS) + 1, "tried again before giving up"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"]
    assert (kept / "model.safetensors").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_move_refused_for_a_moment_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A virus scanner holds the files it has just seen for a moment: the move is tried again, not given up."""
    out = tmp_path / "out"
    real_replace = os.replace
    refused: list[str] = []

    def refused_twice(src: object, dst: object) -> None:
        if len(refused) < 2:
            refused.append(str(src))
            raise PermissionError(13, "Access is denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    waited: list[float] = []
    monkeypatch.setattr(os, "replace", refused_twice)
    monkeypatch.setattr(of.time, "sleep", waited.append)
    with of.output_folder(out) as temp:
        (temp / "model.safetensors").write_text("new")
    assert (out / "model.safetensors").read_text() == "new" and waited == list(of.MOVE_RETRY_DELAYS[:2])
    assert _leftovers(tmp_path) == []


def test_the_folder_the_program_runs_in_is_refused_as_the_output(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shortgpt prune … --out .`` in an empty folder passed every check, and on Windows the move at the end of
    the job failed: a process's current folder cannot be renamed there. Elsewhere the move succeeded and the shell
    was left in the deleted folder: "saved to …", then ``ls`` showed nothing. Refused before the job on both, and a
    folder that holds the current folder as well (replaced with ``--force`` as an earlier output)."""
    from shortgpt_desktop.core.model.sources import resolve

    out = tmp_path / "here"
    out.mkdir()
    source = resolve(str(tiny_model))
    monkeypatch.chdir(out)
    monkeypatch.setattr(of, "CURRENT_FOLDER_IS_LOCKED", False)
    with pytest.raises(OutputError, match="is the folder this program runs in, which the finished model replaces: a "
                                          "terminal there would be left in a deleted folder"):
        of.check_output_folder(Path("."), source, force=False)
    _earlier_output(out)  # an earlier output, from inside it: "not empty, add --force", which --force refused
    for force in (False, True):
        with pytest.raises(OutputError, match="is the folder this program runs in") as refused:
            of.check_output_folder(Path("."), source, force=force)
        assert refused.value.hint is None
    # a folder of the user's files that holds the current one is refused for what it holds, not for a terminal
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds") as refused:
        of.check_output_folder(tmp_path, source, force=True)
    assert "runs in" not in str(refused.value)
    for name in ("config.json", "README.md"):
        (out / name).unlink()
    monkeypatch.setattr(of, "CURRENT_FOLDER_IS_LOCKED", True)
    with pytest.raises(OutputError, match="is the folder this program runs in, which Windows does not let it replace"):
        of.check_output_folder(Path("."), source, force=False)
    assert of.check_output_folder(tmp_path / "new", source, force=False) == (tmp_path / "new").resolve()


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


# --------------------------------------------------------------------------- what --force may replace, and where


def _source(tiny_model: Path):
    from shortgpt_desktop.core.model.sources import resolve

    return resolve(str(tiny_model))


def _card() -> str:
    from shortgpt_desktop.core.report import Report, model_card

    return model_card(Report(model="m", metric="bi", scores=[0.1, 0.2], removed_layers=[1]), "m")


@pytest.mark.parametrize("files", [
    {"results_2024.json": "{}", "README.md": "# my results"},  # a folder of the user's own results
    {"a.gguf": "GGUF", "b.gguf": "GGUF"},  # a collection of models
    {"config.json": "{}", "model.safetensors": "w", "README.md": "---\nlicense: mit\n---\n# Someone's model"},
    {"mymodel.gguf": "GGUF"},  # the user's own GGUF, no card: --force deleted it
    {"config.json": "{}", "model.safetensors": "w", "tokenizer.json": "{}"},  # a save_pretrained folder, no card
])
def test_force_replaces_only_an_earlier_output(tiny_model: Path, tmp_path: Path, files: dict[str, str]) -> None:
    """``--force`` deleted any folder of ``*.json``, ``*.gguf`` and ``README.md``: a folder of results, a folder of
    GGUF models, a downloaded model with its card, and a model without a card (a GGUF downloaded there, a
    ``save_pretrained`` folder). It replaces one model this app wrote: every output of it has its card."""
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(OutputError, match="choose an empty folder or an earlier output"):
        of.check_output_folder(out, _source(tiny_model), force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    for name in [n for n in files if n != "README.md"][1:]:
        (out / name).unlink()  # what is left: one model
    for name in [n for n in files if n.endswith(".gguf")][:1]:
        _own_gguf(out / name)  # a GGUF this app wrote (its header says so)
    (out / "README.md").write_text(_card())  # the card this app writes
    (out / ".DS_Store").write_text("")  # and what a file browser leaves
    if "results_2024.json" in files:
        (out / "results_2024.json").rename(out / "config.json")
    assert of.check_output_folder(out, _source(tiny_model), force=True) == out.resolve()


def test_a_second_path_to_the_source_is_the_source(tiny_model: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A bind mount (or another case of the name on a case-insensitive disk) reaches the source under another path:
    compared as strings the two differed, and ``--force`` replaced the source model."""
    import shutil

    source_dir = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_model, source_dir)
    alias = tmp_path / "alias"
    alias.mkdir()
    real_samefile = os.path.samefile

    def same(a: object, b: object) -> bool:  # what the kernel says of a bind mount of ``models`` at ``alias``
        a, b = (Path(x).resolve() for x in (a, b))  # type: ignore[arg-type]
        a, b = (Path(str(x).replace(str(alias), str(tmp_path / "models"))) for x in (a, b))
        return real_samefile(a, b)

    monkeypatch.setattr(os.path, "samefile", same)
    (alias / "tiny").mkdir()
    for out, word in ((alias / "tiny", "is the source"), (alias / "tiny" / "pruned", "is the source"),
                      (alias, "contains the source")):
        with pytest.raises(OutputError, match=word):
            of.check_output_folder(out, _source(source_dir), force=True)


def test_a_folder_filled_while_the_model_is_written_is_not_replaced(tmp_path: Path) -> None:
    """Checked at the start and again at the move: a second job's output, or the user's notes put there meanwhile,
    stay; the finished folder is not moved over them."""
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="no longer empty"), of.output_folder(out) as temp:
        (temp / "model.safetensors").write_text("new")
        out.mkdir()
        (out / "my_notes.txt").write_text("precious")
    assert [p.name for p in out.iterdir()] == ["my_notes.txt"] and _leftovers(tmp_path) == []
    (out / "my_notes.txt").unlink()
    _earlier_output(out)
    with pytest.raises(OutputError, match="holds more than a model"), of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
        (out / "my_notes.txt").write_text("precious")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "my_notes.txt"]
    # A file made at the output's very name meanwhile (a download, another program's log) stays as it was.
    made = tmp_path / "made"
    with pytest.raises(OutputError, match="is now a file"), of.output_folder(made) as temp:
        (temp / "model.safetensors").write_text("new")
        made.write_text("precious")
    assert made.read_text() == "precious" and _leftovers(tmp_path) == []


def test_a_bind_mount_is_refused_as_a_mount_point_before_the_job(tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.path.ismount`` sees no bind mount on the same disk: a save into one ran its whole job, then failed with
    "device or resource busy", a read-only one leaving its finished model beside it (a walkthrough). Linux's list of
    mounts names it (a space in its path written as ``\\040``); a folder inside it is taken."""
    source = _source(tiny_model)
    mounted = tmp_path / "bind point"
    mounted.mkdir()
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
                    f"98 22 8:1 /srv/data {str(mounted.resolve()).replace(' ', chr(92) + '040')} rw,relatime shared:1 "
                    "- ext4 /dev/sda1 rw\n")
    monkeypatch.setattr(of, "MOUNTINFO", info)
    with pytest.raises(OutputError, match=r"is a mount point \(the top of a drive, or a bind mount\)"):
        of.check_output_folder(mounted, source, force=False)
    of.check_output_folder(mounted / "pruned", source, force=False)
    of.check_output_folder(tmp_path / "bind", source, force=False)
    monkeypatch.setattr(of, "MOUNTINFO", tmp_path / "no-proc-here")  # another system: what ismount says
    of.check_output_folder(mounted, source, force=False)


def test_odd_output_paths_are_one_sentence(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drive's top folder (its mount point cannot be moved aside: the save failed after the whole job), a link
    loop, ``~nosuchuser``, a folder one may not read, a name too long for the save's temporary folder."""
    source = _source(tiny_model)
    drive = tmp_path / "usb"
    drive.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == drive.resolve())
    with pytest.raises(OutputError, match=r"is a mount point \(the top of a drive, or a bind mount\)"):
        of.check_output_folder(drive, source, force=False)
    of.check_output_folder(drive / "pruned", source, force=False)
    loop_a, loop_b = tmp_path / "loop-a", tmp_path / "loop-b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    for out in (loop_a / "out", Path("~no-such-user-here/out")):
        with pytest.raises(OutputError, match="Cannot use"):
            of.check_output_folder(out, source, force=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x").write_text("x")
    real_iterdir = Path.iterdir

    def refused(self: Path):
        if self == locked.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(OutputError, match="permission denied"):
        of.check_output_folder(locked, source, force=True)
    with pytest.raises(OutputError, match=r"Cannot create .*: file name too long"):
        of.check_output_folder(tmp_path / ("m" * 240), source, force=False)


def test_an_empty_output_in_a_read_only_parent_names_the_parent(tiny_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing, writable, empty output folder in a read-only parent was refused as "Cannot create OUT: operation
    not permitted", which read as the folder's fault: the model is written beside it first."""
    import tempfile

    source = _source(tiny_model)
    parent = tmp_path / "read-only"
    out = parent / "emptyout"
    out.mkdir(parents=True)

    def refused(*args, **kwargs):  # as a read-only parent refuses (chattr +i here, as root ignores modes)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(OutputError) as said:
        of.check_output_folder(out, source, force=False)
    assert str(said.value) == (f"Cannot create {out}: operation not permitted in {parent}, where the model is written "
                               "first, in a hidden folder beside emptyout, and moved into place once complete.")
    with pytest.raises(OutputError, match=r"Cannot create .*new: operation not permitted\.$"):  # not there yet
        of.check_output_folder(parent / "new", source, force=False)


def test_a_report_is_never_written_over_or_into_the_model(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model, folder)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for path, model in ((folder / "config.json", folder), (folder / "report.json", folder), (gguf, gguf)):
        with pytest.raises(OutputError, match="choose another place"):
            of.check_report_path(path, [model])
    assert of.check_report_path(tmp_path / "report.json", [folder, gguf, "org/hub-id"]) == tmp_path / "report.json"
    with pytest.raises(OutputError, match="inside the folder of the model"):  # a folder the report would make there
        of.check_report_path(folder / "reports" / "r.json", [folder])
    assert not (folder / "reports").exists()
    (tmp_path / "reports").symlink_to(tmp_path / "gone")  # said not to exist, though ls lists it
    with pytest.raises(OutputError) as raised:
        of.check_report_path(tmp_path / "reports" / "r.json", [model])
    assert str(raised.value) == (f"Cannot write {tmp_path / 'reports' / 'r.json'}: the folder {tmp_path / 'reports'} "
                                 f"is a link to {tmp_path / 'gone'}, which does not exist.")


def test_a_report_is_never_written_over_the_text_the_job_reads_nor_into_the_output(tmp_path: Path) -> None:
    """``--json notes.txt`` replaced the user's calibration text with the report (exit 0); ``--json OUT/config.json``
    with ``--force`` replaced the pruned model's config; ``--json OUT`` failed after the whole job."""
    notes, folder, out = tmp_path / "notes.txt", tmp_path / "texts", tmp_path / "out"
    notes.write_text("my text")
    folder.mkdir()
    (folder / "a.txt").write_text("more text")
    out.mkdir()
    (out / "config.json").write_text("{}")
    cases = {notes: "it is the text the job reads", folder / "a.txt": "inside the folder of text the job reads",
             folder / "report.json": "inside the folder of text the job reads",
             out: "it is the output folder", out / "config.json": "it is in the output folder",
             tmp_path / "new" / "report.json": "in the output folder"}
    for path, said in cases.items():
        with pytest.raises(OutputError, match=said):
            of.check_report_path(path, texts=[notes, folder], out=tmp_path / ("new" if "new" in str(path) else "out"))
    assert notes.read_text() == "my text"
    assert of.check_report_path(tmp_path / "report.json", texts=[notes, folder], out=out) == tmp_path / "report.json"


def test_a_report_is_never_written_into_an_output_folder_not_made_yet_however_the_two_are_spelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a report's missing folders were made, ``--out /abs/new --json new/config.json`` (one absolute, one
    relative) passed the check, and the report replaced the saved model's config after the save."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    cases = [(Path("new/config.json"), tmp_path / "new"), (tmp_path / "new" / "sub" / "r.json", Path("new")),
             (tmp_path / "link" / "new" / "r.json", tmp_path / "new"), (Path("new"), tmp_path / "new")]
    for path, out in cases:
        with pytest.raises(OutputError, match="output folder"):
            of.check_report_path(path, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_a_report_never_replaces_a_device_or_a_pipe_and_writes_through_a_link(tmp_path: Path) -> None:
    """``--json /dev/null`` (run as root, as in Docker) replaced the machine's /dev/null with the report, a regular
    file: ``os.replace`` swaps whatever is at the path. A pipe was replaced the same way, and a link to an earlier
    report was replaced by a file while the report it points to stayed as it was."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (Path("/dev/null"), fifo, tmp_path / "to-null.json"):
        if path.name == "to-null.json":
            path.symlink_to("/dev/null")
        with pytest.raises(OutputError, match=r"it is not a regular file \(a device, a pipe or a socket\)"):
            of.check_report_path(path)
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    earlier, link = tmp_path / "earlier.json", tmp_path / "link.json"
    earlier.write_text("{}")
    link.symlink_to(earlier.name)
    assert of.write_file_atomically(link, lambda stream: stream.write('{"new": 1}')) == earlier
    assert link.is_symlink() and earlier.read_text() == '{"new": 1}'


@pytest.mark.parametrize("name", ["out", "my.old-model"])
def test_ctrl_c_while_the_old_output_is_removed_finishes_the_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   name: str) -> None:
    """The new output is in place once it is moved in: a Ctrl-C (or several) while the old one is deleted left both
    (the old one in a hidden folder) and the command line said that nothing was written. The folder being removed is
    named as a later save finds it (``.NAME.done-``), whatever the output's own name holds."""
    import shutil

    out = tmp_path / name
    out.mkdir()
    _earlier_output(out)
    real_rmtree = shutil.rmtree
    interrupted: list[str] = []

    def interrupted_once(path: object, *args: object, **kwargs: object) -> None:
        if ".done-" in str(path) and len(interrupted) < 3:  # three Ctrl-Cs (the second one was not waited through)
            interrupted.append(str(path))
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(of.shutil, "rmtree", interrupted_once)
    with _finished_through_the_interrupts(), of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
    assert interrupted and sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert _leftovers(tmp_path) == []
    assert all(Path(path).name.startswith(f".{name}.done-{of._host_tag()}-{os.getpid()}-") for path in interrupted)


def test_the_folder_holding_a_linked_gguf_holds_the_source(tmp_path: Path) -> None:
    """A GGUF in a Hub cache's snapshot is a link to a blob elsewhere: resolved, the source was the blob, and the
    snapshot folder holding the link could be replaced with --force."""
    from shortgpt_desktop.core.model.sources import ModelSource

    blob = tmp_path / "blobs" / "abc123"
    blob.parent.mkdir()
    blob.write_bytes(b"GGUF")
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model.gguf").symlink_to(blob)
    source = ModelSource(spec=str(snap / "model.gguf"), kind="gguf", folder=snap, gguf_file="model.gguf")
    with pytest.raises(OutputError, match="contains the source model"):
        of.check_output_folder(snap, source, force=True)
    assert of.check_output_folder(tmp_path / "out", source, force=False) == (tmp_path / "out").resolve()


def test_the_source_gguf_given_as_the_output_is_called_a_file(tmp_path: Path) -> None:
    """``--out model.gguf`` (the source file itself) was refused as "The output folder …/model.gguf is the source
    model's folder or inside it", words for a folder (a walkthrough)."""
    from shortgpt_desktop.core.model.sources import ModelSource

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    source = ModelSource(spec=str(tmp_path / "model.gguf"), kind="gguf", folder=tmp_path, gguf_file="model.gguf")
    for force in (False, True):
        with pytest.raises(OutputError) as raised:
            of.check_output_folder(tmp_path / "model.gguf", source, force=force)
        assert str(raised.value) == (f"The output {(tmp_path / 'model.gguf').resolve()} is the source model's own "
                                     "file; --out takes a new folder, where the pruned .gguf is written.")


def test_a_save_removes_what_a_killed_save_left_and_nothing_else(tmp_path: Path) -> None:
    """A save killed outright (SIGKILL, a power cut) left its hidden ``.out.partial-*`` folder, a model's size, for
    good. The next save to the same output removes it, but not a folder another process is still writing, one
    from another machine (a shared disk), nor one of another output's."""
    import subprocess
    import sys

    out = tmp_path / "out"
    with of.output_folder(out) as temp:  # as a save names it: this machine and this process
        ours = temp.name
    assert ours.startswith(f".out.partial-{of._host_tag()}-{os.getpid()}-")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = of._host_tag()
        killed = tmp_path / f".out.partial-{host}-{dead}-abc123"
        (killed / "sub").mkdir(parents=True)
        (killed / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
        kept = [tmp_path / f".out.partial-{host}-{running.pid}-def456",  # still being written
                tmp_path / f".out.partial-{'0' * 6 if host != '0' * 6 else '1' * 6}-{dead}-ghi789",  # another machine
                tmp_path / f".other.partial-{host}-{dead}-jkl012"]  # another output's
        for folder in kept:
            folder.mkdir()
        with of.output_folder(out, force=True) as temp:
            (temp / "model.safetensors").write_text("new")
        assert not killed.exists() and all(folder.is_dir() for folder in kept)
        assert (out / "model.safetensors").read_text() == "new"
    finally:
        running.kill()
        running.wait()


def test_a_save_killed_between_its_two_moves_gets_the_old_output_back_before_the_next_job(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the old output was moved aside and before the new one was moved in, a save left no ``out`` at all
    and the old output hidden in ``.out.old-*`` for good; the next save deleted the new one's folder as abandoned and
    took the empty name. The old output is put back when the next job checks its folder (so it is asked about as any
    earlier output), and a half-removed ``.old-`` folder beside a finished swap goes."""
    import psutil

    host, dead = of._host_tag(), 999_999
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid != dead)
    out = tmp_path / "out"
    with of.output_folder(out) as temp:
        _earlier_output(temp)
    aside = tmp_path / f".out.old-{host}-{dead}-abc123"
    aside.mkdir()
    out.rename(aside / "out")  # moved aside, then the process was killed
    new = tmp_path / f".out.partial-{host}-{dead}-def456"
    new.mkdir()
    (new / "config.json").write_text("the new model")
    with pytest.raises(OutputError, match=r"is not empty \(it holds the earlier output that a killed save had moved "
                                          r"aside, put back now\); choose an empty folder"):
        of.check_output_folder(out, _source(tiny_model), force=False)
    assert (out / "config.json").read_text() == "an earlier output"
    assert _leftovers(tmp_path) == []
    # killed while removing the old output after the swap: the new one in place, the rest of the old one goes; an
    # ".old-" folder beside an output that exists again may hold the only copy of an earlier output: left alone
    left = tmp_path / f".out.done-{host}-{dead}-ghi789"
    (left / "out").mkdir(parents=True)
    (left / "out" / "model.safetensors").write_text("half removed")
    only_copy = tmp_path / f".out.old-{host}-{dead}-jkl012"
    (only_copy / "out").mkdir(parents=True)
    assert of.remove_abandoned(out) == [left] and _leftovers(tmp_path) == [only_copy.name]
    assert (out / "config.json").read_text() == "an earlier output"
    only_copy.rename(tmp_path / "elsewhere")
    # a save's own aside folder names this machine and this process, as its partial folder does
    names: list[str] = []
    replace = of._replace
    monkeypatch.setattr(of, "_replace", lambda a, b: names.append(Path(b).parent.name) or replace(a, b))
    with of.output_folder(out, force=True) as temp:
        _earlier_output(temp)
    assert names[0].startswith(f".out.old-{host}-{os.getpid()}-")


def test_a_save_killed_mid_swap_while_this_one_ran_gets_its_old_output_back_before_the_move(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another save to the same folder, killed between its two moves while this one wrote its files, left ``out``
    missing and the earlier output only in ``.out.old-*``: this save then took the empty name, and that folder was
    left for good. The earlier output is put back just before the move, and judged as any earlier output is."""
    import psutil

    host, dead = of._host_tag(), 999_999
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid != dead)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="is no longer empty"), of.output_folder(out, force=False) as temp:
        (temp / "config.json").write_text("this save's")
        hidden = tmp_path / f".out.old-{host}-{dead}-abc123" / "out"  # the other save, killed mid-swap
        hidden.mkdir(parents=True)
        _earlier_output(hidden)
    assert (out / "config.json").read_text() == "an earlier output" and _leftovers(tmp_path) == []


def test_an_output_another_save_finished_while_this_one_synced_its_files_is_not_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two saves to one new folder: both checked it before either moved in, and both said saved, one model lost. What
    is at the output is checked after the files are synced (seconds for a large model), just before the move."""
    out = tmp_path / "out"
    sync = of._sync_files

    def the_other_save_ends(folder: Path) -> None:
        sync(folder)
        out.mkdir()
        _earlier_output(out)

    monkeypatch.setattr(of, "_sync_files", the_other_save_ends)
    with pytest.raises(OutputError, match="is no longer empty"), of.output_folder(out) as temp:
        (temp / "config.json").write_text("this save's")
    assert (out / "config.json").read_text() == "an earlier output" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("made", [False, True], ids=["missing", "empty"])
def test_an_output_filled_between_the_last_check_and_the_move_is_not_moved_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: bool) -> None:
    """A folder missing or empty at the last check was moved aside like an earlier output and deleted when another
    save had moved its model in meanwhile: both said saved, one model lost. The move is refused instead, the other
    model stays, and this one is kept beside it."""
    out = tmp_path / "out"
    if made:
        out.mkdir()
    check = of._check_still_replaceable

    def the_other_save_moves_in(folder: Path, force: bool) -> None:
        check(folder, force)
        out.mkdir(exist_ok=True)
        _earlier_output(out)

    monkeypatch.setattr(of, "_check_still_replaceable", the_other_save_moves_in)
    with pytest.raises(OutputError, match=r"was filled while the model was moved in .* the finished model is kept "
                                          r"complete in .*out\.finished"), of.output_folder(out) as temp:
        (temp / "config.json").write_text("this save's")
    assert (out / "config.json").read_text() == "an earlier output"
    assert (tmp_path / "out.finished" / "config.json").read_text() == "this save's" and _leftovers(tmp_path) == []


def test_what_a_later_save_finds_beside_the_output_is_judged_by_its_whole_name(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second review: a finished model said kept in its partial folder (its rename failed too) was deleted by the
    next folder check once its process had ended; a save to an output named "m.done-…-x" had its partial folder
    taken for one of "m"'s; an empty ".old-" folder (killed before its move) stayed for good; of two ".old-"
    folders the one the listing gave first was put back, not the newest."""
    import time

    import psutil

    host, dead = of._host_tag(), 999_999
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid != dead)
    out = tmp_path / "m"
    kept = tmp_path / f".m.partial-{host}-{dead}-kept0001"
    kept.mkdir()
    (kept / "model.safetensors").write_text("finished")
    (tmp_path / (kept.name + of.KEPT_MARK)).touch()
    other = tmp_path / f".m.done-{host}-{dead}-x.partial-{host}-{dead}-abcd1234"  # a save to "m.done-…-x"
    other.mkdir()
    empty = tmp_path / f".m.old-{host}-{dead}-empty001"
    empty.mkdir()
    older, newer = tmp_path / f".m.old-{host}-{dead}-older001", tmp_path / f".m.old-{host}-{dead}-newer001"
    for folder, text in ((older, "older"), (newer, "newer")):
        (folder / "m").mkdir(parents=True)
        (folder / "m" / "config.json").write_text(text)
    os.utime(older, (time.time() - 60, time.time() - 60))
    removed = of.remove_abandoned(out)
    assert (out / "config.json").read_text() == "newer" and newer in removed and empty in removed
    assert kept.is_dir() and other.is_dir() and older.is_dir()  # older: beside an output that exists again


def test_a_read_only_earlier_output_a_fifo_and_a_gguf_linked_into_the_hub_cache_are_refused_before_the_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second review: a read-only earlier output passed the check and failed after the job ("another program may
    have it open"); a pipe named x.gguf held the check for good; a GGUF opened through a link to a Hub snapshot's
    file let the output into the cache."""
    import threading

    from shortgpt_desktop.core.model.sources import ModelSource

    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    source = ModelSource(spec=str(tmp_path / "a.gguf"), kind="gguf", folder=tmp_path, gguf_file="a.gguf")
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == out.resolve() and
                        mode == os.W_OK else real_access(path, mode, **kw))
    with pytest.raises(OutputError, match="is read-only, and replacing it needs permission to write in it"):
        of.check_output_folder(out, source, force=True)
    monkeypatch.setattr(os, "access", real_access)
    if hasattr(os, "mkfifo"):
        os.mkfifo(out / "x.gguf")
        done = threading.Event()
        threading.Thread(target=lambda: (of.not_an_earlier_output(out), done.set()), daemon=True).start()
        assert done.wait(10), "the check waited on the pipe"
        (out / "x.gguf").unlink()
    repo = tmp_path / "hub" / "models--org--m-GGUF"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "blobs" / "sha").write_bytes(b"GGUF")
    (repo / "snapshots" / "abc" / "m.gguf").symlink_to(repo / "blobs" / "sha")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "m.gguf").symlink_to(repo / "snapshots" / "abc" / "m.gguf")
    linked = ModelSource(spec=str(tmp_path / "mine" / "m.gguf"), kind="gguf", folder=tmp_path / "mine",
                         gguf_file="m.gguf")
    with pytest.raises(OutputError, match="inside the Hugging Face cache's folder of the source model"):
        of.check_output_folder(repo / "pruned", linked, force=False)


def test_whether_a_saving_process_runs_is_asked_without_a_signal(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows ``os.kill(pid, 0)`` ends the process it asks about, so the check was skipped there, and a killed
    save's folder (a model's size, hidden only by a dot Windows does not hide) stayed for good. psutil asks on
    every system: here it answers for a process of this machine that the signal would have found running."""
    import psutil

    host = of._host_tag()
    parent_pid = os.getppid()
    left = tmp_path / f".out.partial-{host}-{parent_pid}-abc123"
    left.mkdir()
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid != parent_pid)
    assert of.remove_abandoned(tmp_path / "out") == [left] and not left.exists()


def _card() -> str:
    from shortgpt_desktop.core.report import Report, model_card

    return model_card(Report(model="m", metric="bi", scores=[0.1, 0.2], removed_layers=[1]), "m")


def test_force_never_takes_a_collection_or_a_card_only_mentioning_the_app_for_an_earlier_output(
        tmp_path: Path) -> None:
    """Two GGUF files beside this app's card are a collection, not one output; a card that names "- shortgpt" in its
    text, not in its front matter's tags, or that has no front matter, is someone else's: --force would delete their
    model. (The parametrized cases had no card, so the card rule refused them first and hid these.)"""
    collection = tmp_path / "collection"
    collection.mkdir()
    for name in ("a.gguf", "b.gguf"):
        _own_gguf(collection / name)
    (collection / "README.md").write_text(_card(), encoding="utf-8")
    assert "holds 2 GGUF files" in (of.not_an_earlier_output(collection) or "")
    (collection / "b.gguf").unlink()
    _own_gguf(collection / "a.gguf")
    assert of.not_an_earlier_output(collection) is None, "one GGUF and this app's card: an earlier output"
    for text in ("---\nlicense: mit\n---\n# My model\nTools I tried:\n- shortgpt\n", "# My model\n- shortgpt\n"):
        (collection / "README.md").write_text(text, encoding="utf-8")
        assert "model card this app did not write" in (of.not_an_earlier_output(collection) or ""), text


@pytest.mark.parametrize("mine", ["results_2024.json", "runs/"])
def test_force_never_takes_an_earlier_output_holding_a_file_or_folder_of_the_users(tmp_path: Path, mine: str) -> None:
    """An earlier output with its card, and beside it a file of the user's results or a folder of their runs: --force
    would delete them with it. (The other cases had no card, so the card rule refused them first and hid this.)"""
    out = tmp_path / "out"
    out.mkdir()
    for name, text in {"config.json": "{}", "model.safetensors": "w", "README.md": _card()}.items():
        (out / name).write_text(text, encoding="utf-8")
    assert of.not_an_earlier_output(out) is None
    if mine.endswith("/"):
        (out / mine).mkdir()
        (out / mine / "notes.txt").write_text("mine", encoding="utf-8")
    else:
        (out / mine).write_text("{}", encoding="utf-8")
    assert mine in (of.not_an_earlier_output(out) or "")


@pytest.mark.parametrize("mine", ["model-F16.gguf", "model-finetuned.safetensors", "pytorch_model.bin", "ckpt.pt",
                                  "lora.pth", "pytorch_model.bin+model-F16.gguf"])
def test_force_never_takes_weights_this_app_did_not_write_beside_an_earlier_output(tmp_path: Path, mine: str) -> None:
    """llama.cpp's converter writes its GGUF into the folder it converts, and a user may keep other weights beside an
    earlier output: ``*.gguf`` and ``model*.safetensors`` counted as the output's own, and ``--force`` deleted them. A
    GGUF is this app's where its header says so; weights by the names this app writes."""
    out = tmp_path / "out"
    out.mkdir()
    for name, text in {"config.json": "{}", "model.safetensors": "w", "README.md": _card()}.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / "model-00001-of-00002.safetensors").write_text("w", encoding="utf-8")  # the shards this app writes
    assert of.not_an_earlier_output(out) is None
    names = mine.split("+")
    for name in names:
        if name.endswith(".gguf"):
            _own_gguf(out / name, written_here=False)
        else:
            (out / name).write_text("w", encoding="utf-8")
    what = "a model" if len(names) == 1 else "weights"  # two files are no one model
    assert f"holds {what} this app did not write ({', '.join(sorted(names))})" in (of.not_an_earlier_output(out) or "")
    if len(names) > 1:
        return
    if mine.endswith(".gguf"):  # the same file as this app writes it: an earlier GGUF output
        (out / "model.safetensors").unlink()
        _own_gguf(out / mine)
        assert of.not_an_earlier_output(out) is None


# --------------------------------------------------------------------------- refusals, names and cleanup in detail


def test_force_takes_a_folder_of_a_file_browsers_leftovers_and_an_earlier_card_with_indented_tags(
        tiny_model: Path, tmp_path: Path) -> None:
    """A folder holding only what a file browser leaves holds nothing of the user's; a card whose tags an editor
    indented ("  - shortgpt") is still this app's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".DS_Store").write_text("")
    with pytest.raises(OutputError, match="is not empty; choose an empty folder"):
        of.check_output_folder(out, _source(tiny_model), force=False)
    assert of.check_output_folder(out, _source(tiny_model), force=True) == out.resolve()
    indented = _card().replace("\n- shortgpt\n", "\n  - shortgpt\n")
    assert "\n  - shortgpt\n" in indented
    _own_gguf(out / "model.gguf")
    (out / "README.md").write_text(indented)
    assert of.not_an_earlier_output(out) is None


def test_a_folder_force_would_not_replace_is_refused_without_offering_force(tiny_model: Path, tmp_path: Path) -> None:
    """``--out notes`` said "not empty; add --force to replace it", and --force then refused the folder of notes:
    the hint is given only where --force (the window's Replace) can replace the folder."""
    from shortgpt_desktop.core.errors import Hint

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds no model but other files \(todo.txt\)") as refused:
        of.check_output_folder(notes, _source(tiny_model), force=False)
    assert refused.value.hint is None
    (notes / "README.md").write_text("# my project")  # a project's own readme and licence are no model either
    (notes / "LICENSE").write_text("MIT")
    with pytest.raises(OutputError, match=r"holds no model but other files \(todo.txt\)"):
        of.check_output_folder(notes, _source(tiny_model), force=True)
    (notes / "README.md").unlink()
    (notes / "LICENSE").unlink()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    _own_gguf(earlier / "model.gguf")
    (earlier / "README.md").write_text(_card())
    with pytest.raises(OutputError, match="is not empty; choose an empty folder") as refused:
        of.check_output_folder(earlier, _source(tiny_model), force=False)
    assert refused.value.hint is Hint.REPLACE_OUTPUT


def test_a_collection_names_its_first_three_files_and_an_ellipsis_only_for_more(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf", "c.gguf"):
        _own_gguf(tmp_path / name)
    assert of.not_an_earlier_output(tmp_path) == "holds 3 GGUF files (a.gguf, b.gguf, c.gguf), not one output"
    _own_gguf(tmp_path / "d.gguf")
    assert of.not_an_earlier_output(tmp_path) == "holds 4 GGUF files (a.gguf, b.gguf, c.gguf…), not one output"


def test_a_file_in_the_way_is_refused_before_the_job_and_the_check_leaves_nothing_behind(
        tiny_model: Path, tmp_path: Path) -> None:
    """A file at the output's name (or above it) passed the check and failed the save after the whole job; a name
    ending in .GGUF is a file's name whatever its case; the probe folder the check makes beside the output is
    removed (the window checks at every change: hidden folders piled up)."""
    source = _source(tiny_model)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt exists and is a file; choose a folder\.$"):
        of.check_output_folder(notes, source, force=True)
    if Path("/dev/null").exists():  # not on Windows
        with pytest.raises(OutputError, match=r"^/dev/null exists and is not a folder \(a device, a pipe or a socket"):
            of.check_output_folder(Path("/dev/null"), source, force=True)  # it said "is a file"
    with pytest.raises(OutputError, match=r"^Cannot create .*pruned: .*notes\.txt is a file, not a folder\.$"):
        of.check_output_folder(notes / "pruned", source, force=False)
    with pytest.raises(OutputError, match=r"Small\.GGUF names a file, but the output is a folder"):
        of.check_output_folder(tmp_path / "Small.GGUF", source, force=False)
    assert of.check_output_folder(tmp_path / "pruned", source, force=False) == (tmp_path / "pruned").resolve()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and notes.read_text() == "mine"


def test_the_room_sentence_says_the_least_size_the_margin_and_the_disk_asked(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the layers are chosen the size is the least the output can weigh; weights that fit byte for byte are
    refused for the margin alone; the folder named is the one whose disk was asked, not the output not made yet."""
    from shortgpt_desktop.core import free_space

    monkeypatch.setattr(free_space.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 2_000_000_000})())
    with pytest.raises(OutputError) as refused:
        of.check_room(tmp_path / "not" / "yet", 1_980_000_000, at_least=True)
    assert str(refused.value) == (f"The pruned model needs at least 2.0 GB (2.0 GB with its other files and a margin) "
                                  f"but only 2.0 GB is free on the disk of {tmp_path.resolve()}; free some space or "
                                  "choose a folder on another disk.")
    of.check_room(tmp_path / "not" / "yet", 1_950_000_000, at_least=True)


def test_ctrl_c_during_the_move_leaves_the_old_output_and_no_partial_folder(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    real_replace = os.replace

    def interrupted(src: object, dst: object) -> None:
        if Path(dst) == out and ".partial-" in Path(src).name:
            raise KeyboardInterrupt
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"] and _leftovers(tmp_path) == []


def test_an_output_that_cannot_be_moved_aside_stays_and_the_finished_model_takes_a_free_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An earlier failure's ``out.finished`` is the user's to keep: the new finished model goes to ``out.finished-2``
    (not left in a hidden folder a later save removes as abandoned), and the folder made to move the old output
    aside is removed."""
    import re

    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    earlier = tmp_path / "out.finished"
    earlier.mkdir()
    (earlier / "model.safetensors").write_text("earlier")
    real_replace = os.replace

    def refused_aside(src: object, dst: object) -> None:
        if Path(src) == out:
            raise PermissionError(13, "Access is denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", refused_aside)
    monkeypatch.setattr(of.time, "sleep", lambda seconds: None)
    kept = tmp_path / "out.finished-2"
    with pytest.raises(OutputError, match=rf"it is kept complete in {re.escape(str(kept))}\.$"), \
            of.output_folder(out, force=True) as temp:
        (temp / "model.safetensors").write_text("new")
    assert (kept / "model.safetensors").read_text() == "new"
    assert (earlier / "model.safetensors").read_text() == "earlier"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"] and _leftovers(tmp_path) == []


def test_a_finished_model_no_move_could_take_stays_in_its_partial_folder_and_no_later_save_removes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where neither the output nor any ``out.finished`` name can take the finished model, it is kept where it was
    written, and marked so: the next folder check, once this process had ended, deleted the model said kept."""
    import psutil

    out = tmp_path / "out"
    real_replace = os.replace

    def refused(src: object, dst: object) -> None:
        if Path(src).name.startswith(".out.partial-"):
            raise PermissionError(13, "Access is denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", refused)
    monkeypatch.setattr(of.time, "sleep", lambda seconds: None)
    with pytest.raises(OutputError, match=r"it is kept complete in .*\.out\.partial-") as said, \
            of.output_folder(out) as temp:
        (temp / "model.safetensors").write_text("finished")
    assert str(temp) in str(said.value) and (temp / "model.safetensors").read_text() == "finished"
    assert (tmp_path / (temp.name + of.KEPT_MARK)).exists()
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: False)  # its process has ended
    of.remove_abandoned(out)
    assert (temp / "model.safetensors").read_text() == "finished"


def test_the_output_and_a_report_are_group_writable_where_the_umask_says_so(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        with of.output_folder(tmp_path / "out") as temp:
            (temp / "a.txt").write_text("x")
        assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o775
        report = of.write_file_atomically(tmp_path / "report.json", lambda stream: stream.write("{}"))
        assert stat.S_IMODE(report.stat().st_mode) == 0o664
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name == "nt", reason="no POSIX modes or groups")
def test_a_replaced_output_keeps_the_mode_and_group_of_the_folder_it_replaces(tmp_path: Path) -> None:
    """A private (0700) or a group's (2770) folder chosen as the output, or replaced with --force, became a 0755
    folder of the user's own group: readable by everyone."""
    out = tmp_path / "out"
    out.mkdir()
    groups = [g for g in os.getgroups() if g != out.stat().st_gid]
    group = 54321 if os.geteuid() == 0 else groups[0] if groups else None  # root may give any group
    if group is not None:
        os.chown(out, -1, group)
    os.chmod(out, 0o2750)
    with of.output_folder(out, force=True) as temp:
        _earlier_output(temp)
    assert stat.S_IMODE(out.stat().st_mode) == 0o2750 and (out / "config.json").is_file()
    os.chmod(out, 0o555)
    if os.access(out, os.W_OK):
        # One the owner may not write into, which only root may move aside (its ".." entry is written): written
        # all the same, the owner's write given back. Anyone else is refused before the job (the read-only test).
        with of.output_folder(out, force=True) as temp:
            _earlier_output(temp)
        assert stat.S_IMODE(out.stat().st_mode) == 0o755 and (out / "config.json").is_file()
    else:
        os.chmod(out, 0o755)  # (pytest removes it)
    if group is None:
        pytest.skip("no second group to give the folder: its group is not checked here")
    assert out.stat().st_gid == group


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_report_whose_writing_fails_leaves_the_earlier_one_and_no_partial_file(tmp_path: Path,
                                                                                  failure: BaseException) -> None:
    report = tmp_path / "report.json"
    report.write_text('{"earlier": 1}')

    def write(stream: object) -> None:
        stream.write("{")  # type: ignore[attr-defined]
        raise failure

    if isinstance(failure, OSError):
        with pytest.raises(OutputError, match=r"^Cannot write .*report\.json: no space left on device\.$"):
            of.write_file_atomically(report, write)
    else:
        with pytest.raises(KeyboardInterrupt):
            of.write_file_atomically(report, write)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and report.read_text() == '{"earlier": 1}'


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_report_makes_its_missing_folders_and_removes_them_where_its_writing_fails(
        tmp_path: Path, failure: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--json reports/june/r.json`` was refused ("the folder … does not exist") where ``--out`` in the same place
    made its folders: a report makes them too, and a writing that fails leaves none behind. A folder that could not
    be made is said before the job."""
    import tempfile

    report = tmp_path / "reports" / "june" / "r.json"
    assert of.write_file_atomically(report, lambda stream: stream.write("{}")) == report and report.read_text() == "{}"

    def write(stream: object) -> None:
        stream.write("{")  # type: ignore[attr-defined]
        raise failure

    with pytest.raises((OutputError, KeyboardInterrupt)):
        of.write_file_atomically(tmp_path / "more" / "new" / "r.json", write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]

    def refused(*args, **kwargs):  # as a read-only parent refuses (root ignores modes)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(OutputError) as said:
        of.check_report_path(tmp_path / "new" / "r.json")
    assert str(said.value) == (f"Cannot write {tmp_path / 'new' / 'r.json'}: the folder {tmp_path / 'new'} cannot be "
                               f"made in {tmp_path} (operation not permitted).")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_does_not_finish_removes_the_folders_it_made_for_the_output(tmp_path: Path,
                                                                                failure: BaseException) -> None:
    """A failed or cancelled save to ``new/models/out`` left ``new/models`` behind, empty, though nothing was
    saved; folders that were there before stay, and so does one that something else was put into meanwhile."""
    (tmp_path / "kept").mkdir()
    with pytest.raises((OutputError, KeyboardInterrupt)), of.output_folder(tmp_path / "new" / "models" / "out"):
        raise failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with pytest.raises((OutputError, KeyboardInterrupt)), of.output_folder(tmp_path / "kept" / "a" / "out"):
        (tmp_path / "kept" / "a" / "notes.txt").write_text("mine")
        raise failure
    assert sorted(p.name for p in (tmp_path / "kept" / "a").iterdir()) == ["notes.txt"]


def test_a_cancelled_save_removes_its_partial_folder_through_further_ctrl_cs(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C pressed a few times in a row left the hidden partial folder (a model's size) behind until a later save to
    that name: the second one stopped its removal."""
    import shutil

    real_rmtree, interrupted = shutil.rmtree, []

    def interrupted_twice(path: object, *args: object, **kwargs: object) -> None:
        if ".partial-" in str(path) and len(interrupted) < 2:
            interrupted.append(path)
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(of.shutil, "rmtree", interrupted_twice)
    with pytest.raises(KeyboardInterrupt), of.output_folder(tmp_path / "out") as temp:
        (temp / "model.safetensors").write_text("half written")
        raise KeyboardInterrupt
    assert len(interrupted) == 2 and list(tmp_path.iterdir()) == []


def _ctrl_c_just_after(monkeypatch: pytest.MonkeyPatch, picked: Callable[[Path, Path], bool]) -> None:
    """A Ctrl-C that comes once the save's move ``picked(src, dst)`` is done, before that move returned."""
    replace = of._replace

    def interrupted_after(src: Path, dst: Path) -> None:
        replace(src, dst)
        if picked(Path(src), Path(dst)):
            raise KeyboardInterrupt

    monkeypatch.setattr(of, "_replace", interrupted_after)


@pytest.mark.parametrize("earlier", [False, True], ids=["new", "replaced"])
def test_a_ctrl_c_just_after_the_new_output_moved_in_finishes_the_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       earlier: bool) -> None:
    """A Ctrl-C that came once the finished folder was moved in, before the move returned: the command line said
    "cancelled; nothing was written" with the new model in place, or (replacing an earlier output) the rollback failed
    on it and the finished model was said kept in a folder that no longer held it."""
    out = tmp_path / "out"
    if earlier:
        out.mkdir()
        _earlier_output(out)
    _ctrl_c_just_after(monkeypatch, lambda src, dst: dst == out)
    of.forget_outputs_in_place()
    with _finished_through_the_interrupts(), of.output_folder(out, force=earlier) as temp:
        (temp / "config.json").write_text("the new model")
    assert (out / "config.json").read_text() == "the new model" and _leftovers(tmp_path) == []
    assert of.an_output_is_in_place()  # the command line's Ctrl-C no longer cancels


def test_a_ctrl_c_just_after_the_earlier_output_moved_aside_puts_it_back_and_cancels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that came once the earlier output was moved aside, before that move returned: removing the folder it
    was moved into failed on it, that "directory not empty" was said as a move refused by "another program", and the
    earlier output stayed hidden beside the output until a later save (a walkthrough, 1 in about 80 tries)."""
    out = tmp_path / "out"
    out.mkdir()
    _earlier_output(out)
    _ctrl_c_just_after(monkeypatch, lambda src, dst: src == out)
    of.forget_outputs_in_place()  # (the saves of the tests before)
    with pytest.raises(KeyboardInterrupt), of.output_folder(out, force=True) as temp:
        (temp / "config.json").write_text("the new model")
    assert (out / "config.json").read_text() == "an earlier output" and _leftovers(tmp_path) == []
    assert not of.an_output_is_in_place()


def test_a_readme_that_cannot_be_read_is_not_taken_for_this_apps_card(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a calibration folder looks for this app's cards: a README.md it may not read stopped the whole job."""
    card = tmp_path / "README.md"
    card.write_text(f"---\ntags:\n{of.CARD_TAG}\n---\n")
    assert of.card_written_here(card)

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refused)
    assert not of.card_written_here(card)


def test_a_report_with_a_long_name_is_written_and_one_too_long_refused_before_the_job(tmp_path: Path) -> None:
    """A name of 250 of the 255 characters a name may hold passed the check before the job, then failed after it:
    the temporary file beside it is named after it, and was too long (a review)."""
    long = tmp_path / ("r" * 245 + ".json")
    assert of.check_report_path(long) == long
    of.write_file_atomically(long, lambda stream: stream.write("{}"))
    assert long.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [long.name]
    with pytest.raises(OutputError, match="file name too long"):
        of.check_report_path(tmp_path / ("r" * 300 + ".json"))


def test_no_output_goes_into_the_hub_cache_folder_of_the_source(tiny_model: Path, tmp_path: Path) -> None:
    """``--out …/models--org--name/blobs/sub`` was taken (only the snapshot itself was refused): the snapshot's files
    are links into blobs/, and deleting the model from the cache would delete the pruned model with it (a
    command-line walkthrough). Beside the cache, or in another model's cache folder, is fine."""
    import shutil

    from shortgpt_desktop.core.model.sources import resolve

    repo = tmp_path / "hub" / "models--walkb--linked"
    snapshot = repo / "snapshots" / ("ab" * 20)
    shutil.copytree(tiny_model, snapshot)
    (repo / "blobs").mkdir()
    source = resolve(str(snapshot))
    assert source.hub_cache_folder == repo
    for out in (repo / "blobs" / "sub", repo / "pruned", repo / "snapshots" / "other"):
        with pytest.raises(OutputError, match=r"is inside the Hugging Face cache's folder of the source model \("):
            of.check_output_folder(out, source, force=False)
    for out in (tmp_path / "hub" / "pruned", tmp_path / "hub" / "models--other--model" / "x"):
        assert of.check_output_folder(out, source, force=False) == out.resolve()
    assert _source(tiny_model).hub_cache_folder is None
    # opened through a link to the snapshot: the cache was not seen, and the output went into it
    link = tmp_path / "snaplink"
    link.symlink_to(snapshot)
    through = resolve(str(link))
    # named as the user's link names it (not offered a folder in the home), kept out of the cache all the same
    assert through.hub_cache_folder is None and through.in_hub_cache is None and through.hub_cache_behind_links == repo
    with pytest.raises(OutputError, match="inside the Hugging Face cache's folder of the source model"):
        of.check_output_folder(repo / "mine", through, force=False)


def test_the_folder_a_gguf_was_given_by_is_the_source(tmp_path: Path) -> None:
    """A GGUF named by the folder holding it (``shortgpt prune models/smol``): an output inside that folder was taken,
    where a model folder's is refused; a GGUF named by its file still takes a new folder beside it."""
    from shortgpt_desktop.core.model.sources import ModelSource, WeightFile

    folder = tmp_path / "smol"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    by_folder = ModelSource(spec=str(folder), kind="gguf", folder=folder, gguf_file="model.gguf")
    for out in (folder, folder / "inner", folder / "a" / "b"):
        with pytest.raises(OutputError, match="is the source model's folder or inside it"):
            of.check_output_folder(out, by_folder, force=True)
    by_file = ModelSource(spec=str(folder / "model.gguf"), kind="gguf", folder=folder, gguf_file="model.gguf")
    assert of.check_output_folder(folder / "inner", by_file, force=False) == (folder / "inner").resolve()
    assert of.check_output_folder(tmp_path / "out", by_folder, force=False) == (tmp_path / "out").resolve()

    # The GGUF in that folder a link to a file elsewhere, in a folder this app wrote (its card): named by its folder,
    # the file's own folder was no longer checked, and --force (the window's Replace) replaced it, the source with it
    store, linked = _linked_into_an_earlier_output(tmp_path, "model.gguf")
    for spec in (linked, linked / "model.gguf"):
        source = ModelSource(spec=str(spec), kind="gguf", folder=linked, gguf_file="model.gguf",
                             weight_files=[WeightFile(linked / "model.gguf", "gguf", 4)])
        with pytest.raises(OutputError, match="contains the source model"):
            of.check_output_folder(store, source, force=True)
    # so are a model folder's weights that link elsewhere
    weights, model = _linked_into_an_earlier_output(tmp_path, "model.safetensors")
    source = ModelSource(spec=str(model), kind="folder", folder=model,
                         weight_files=[WeightFile(model / "model.safetensors", "safetensors", 1)])
    with pytest.raises(OutputError, match="contains the source model"):
        of.check_output_folder(weights, source, force=True)
    # and so are its other files, its config and tokenizer, linked to an earlier output's: replacing that output
    # rewrote them, and the source no longer loaded (its config said the pruned model's layers)
    earlier, model = tmp_path / "earlier", tmp_path / "config-linked"
    for folder in (earlier, model):
        folder.mkdir()
    _earlier_output(earlier)
    (earlier / "config.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"w")
    (model / "config.json").symlink_to(earlier / "config.json")
    source = ModelSource(spec=str(model), kind="folder", folder=model,
                         weight_files=[WeightFile(model / "model.safetensors", "safetensors", 1)])
    with pytest.raises(OutputError, match=rf"contains the source model \(config.json, which {model} links to\)"):
        of.check_output_folder(earlier, source, force=True)
    # a link in the model folder that leads nowhere (a loop, a target gone) is no part of it: every save was refused
    (model / "stale").symlink_to(model / "stale")
    (model / "gone").symlink_to(tmp_path / "no-such-file")
    assert of.check_output_folder(tmp_path / "new", source, force=False) == (tmp_path / "new").resolve()
