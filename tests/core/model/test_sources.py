"""Model sources: folders, GGUF files and Hub ids, and every way they can be wrong."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from shortgpt_desktop.core.errors import HubError, ModelSourceError
from shortgpt_desktop.core.model import sources


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_folder_resolves_with_its_weights(tiny_model: Path) -> None:
    source = sources.resolve(str(tiny_model))
    assert source.kind == "folder"
    assert (source.display_name, source.location) == ("tiny-llama", tiny_model)  # the folder's name, not its path
    assert [w.path.name for w in source.weight_files] == ["model.safetensors"]
    assert source.bytes_on_disk == (tiny_model / "model.safetensors").stat().st_size
    assert sources.resolve(f" {tiny_model}\n").folder == tiny_model  # pasted with the spaces around it


def test_missing_path_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        sources.resolve(str(tmp_path / "nowhere"))
    # A Hub id copied with its slash is read as a folder, as before; the sentence now says how to give the id (it
    # said only "does not exist": a command-line walkthrough)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError) as raised:
        sources.resolve("walkb/linked/")
    assert str(raised.value) == "walkb/linked/ does not exist as a folder; as a Hub id, give it without the slash: " \
                                "walkb/linked."


def test_a_gguf_without_its_ending_and_a_device_are_named_for_what_they_are(tmp_path: Path) -> None:
    """An Ollama blob (a GGUF named ``sha256-…``) was "a file but not a .gguf model", and a pipe or ``/dev/zero``
    "does not exist"."""
    blob = tmp_path / "sha256-6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
    blob.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    with pytest.raises(ModelSourceError, match=r"is a GGUF model without the \.gguf ending \(as Ollama stores them\); "
                                               r"give it one, for example with a link named model\.gguf"):
        sources.resolve(str(blob))
    (tmp_path / "notes.bin").write_bytes(b"not a model")
    with pytest.raises(ModelSourceError, match=r"is a file but not a \.gguf model"):
        sources.resolve(str(tmp_path / "notes.bin"))
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ModelSourceError, match=rf"^{path} is not a file or a folder; choose the model's folder"):
            sources.resolve(str(path))


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match=r"no config\.json"):
        sources.resolve(str(tmp_path))


def test_a_folder_of_one_gguf_opens_it_and_one_of_several_names_them(tmp_path: Path) -> None:
    """What this tool saves as GGUF is a folder holding the file and its card: the folder opens as that file (it
    was "choose that file instead", though the prune had just said "saved to" the folder). A folder of several
    quantizations names each."""
    _tiny_gguf(tmp_path / "m.gguf")
    (tmp_path / "README.md").write_text("the card", encoding="utf-8")
    source = sources.resolve(str(tmp_path))
    assert (source.kind, source.gguf_file, source.folder, source.spec) == ("gguf", "m.gguf", tmp_path, str(tmp_path))
    (tmp_path / "images").mkdir()  # a folder that holds no model is no other model
    assert sources.resolve(str(tmp_path)).gguf_file == "m.gguf"
    # a folder of models with one stray .gguf: the file was pruned, unnamed, as "the folder" (a walkthrough)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelSourceError, match=r"holds other models beside m\.gguf \(tiny/\): choose the one you "
                                               r"mean, the file or a folder\.$"):
        sources.resolve(str(tmp_path))
    shutil.rmtree(tmp_path / "tiny")
    (tmp_path / "m-Q8_0.gguf").write_bytes(b"GGUF....")  # several quantizations: each named, not the first alone
    with pytest.raises(ModelSourceError, match=r"It holds m-Q8_0\.gguf, m\.gguf: choose one of those files instead\.$"):
        sources.resolve(str(tmp_path))


def test_truncated_safetensors(tiny_model: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match="truncated"):
        sources.resolve(str(folder))


def test_corrupt_safetensors_header(tiny_model: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelSourceError, match="not a valid safetensors"):
        sources.resolve(str(folder))


def test_sharded_index_with_missing_shard(tiny_model: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match="incomplete"):
        sources.resolve(str(folder))


def test_a_sharded_checkpoint_counts_each_shard_once_and_names_how_many_are_missing(tiny_model: Path,
                                                                                   tmp_path: Path) -> None:
    """An index names a shard once per tensor in it: the shards were each one weight file, and the size on disk their
    sum, whatever the number of tensors in each."""
    from safetensors.torch import load_file, save_file

    folder = copy_model(tiny_model, tmp_path / "m")
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for part, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2:]), start=1):
        shard = f"model-{part:05d}-of-00002.safetensors"
        save_file({name: tensors[name] for name in chunk}, folder / shard)
        weight_map.update(dict.fromkeys(chunk, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    source = sources.resolve(str(folder))
    shards = [folder / "model-00001-of-00002.safetensors", folder / "model-00002-of-00002.safetensors"]
    assert [w.path for w in source.weight_files] == shards
    assert source.bytes_on_disk == sum(path.stat().st_size for path in shards)
    shards[1].unlink()
    with pytest.raises(ModelSourceError, match=r"m is incomplete: 1 weight file listed in "
                                               r"model\.safetensors\.index\.json is missing, starting with "
                                               r"model-00002-of-00002\.safetensors\.$"):
        sources.resolve(str(folder))


def test_an_index_naming_a_file_outside_the_folder_is_said_so(tiny_model: Path, tmp_path: Path) -> None:
    """An index pointing at ``../../../../etc/passwd`` was read, then called "not a valid safetensors file… download
    it again"."""
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    for name in ("../elsewhere.safetensors", str(tmp_path / "elsewhere.safetensors")):
        index = {"metadata": {}, "weight_map": {"a": name}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(ModelSourceError, match=r"names a weight file outside the model's folder \("
                                                   + re.escape(name) + r"\); the index is broken"):
            sources.resolve(str(folder))


@pytest.mark.parametrize("name", ["\\x\\m.safetensors", "C:m.safetensors", "D:/models/m.safetensors",
                                  "..\\m.safetensors", "//server/share/m.safetensors"])
def test_an_index_naming_a_file_outside_the_folder_as_windows_reads_it_is_said_so(name: str, tiny_model: Path,
                                                                                 tmp_path: Path) -> None:
    """On Windows ``folder / "\\x\\m.safetensors"`` is ``D:\\x\\m.safetensors`` and ``folder / "C:m.safetensors"``
    another drive's folder: weights from elsewhere would have been read without a word. Refused on every system, so
    that a model folder means the same on each."""
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {"a": name}}))
    with pytest.raises(ModelSourceError, match="names a weight file outside the model's folder"):
        sources.resolve(str(folder))


def test_a_stale_index_beside_a_whole_checkpoint_is_not_read(tiny_model: Path, tmp_path: Path) -> None:
    """transformers loads ``model.safetensors`` where there is one and never reads an index beside it; a stale
    index left from an earlier sharded download was refused for the shards it names."""
    from transformers import AutoModelForCausalLM

    folder = copy_model(tiny_model, tmp_path / "m")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    source = sources.resolve(str(folder))
    assert [w.path.name for w in source.weight_files] == ["model.safetensors"]
    assert AutoModelForCausalLM.from_pretrained(folder) is not None  # as transformers reads the folder


def test_json_nested_too_deeply_is_one_sentence(tiny_model: Path, tmp_path: Path) -> None:
    """Python's JSON parser raises RecursionError, not a decode error, on nesting this deep: a traceback."""
    deep = "[" * 100_000 + "]" * 100_000
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(deep)
    with pytest.raises(ModelSourceError, match="is not a valid checkpoint index"):
        sources.resolve(str(folder))
    (folder / "config.json").write_text(deep)
    with pytest.raises(ModelSourceError, match=r"config.json is not a model config \(it nests too deeply\)"):
        sources.resolve(str(folder))


def test_config_without_weights(tiny_model: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no weights"):
        sources.resolve(str(folder))
    # What a training run leaves beside its weights is not a checkpoint: it was taken for one (5 bytes, 1
    # parameter), and the load then failed with transformers' own words.
    (folder / "training_args.bin").write_bytes(b"abcde")
    shutil.copy(tiny_model / "model.safetensors", folder / "adapter_model.safetensors")
    with pytest.raises(ModelSourceError, match=r"has a config.json but no weights \(no model.safetensors, "
                                               r"pytorch_model.bin or shards of either\)"):
        sources.resolve(str(folder))
    # Shards without their index are still the weights (one layer at a time reads them).
    shutil.copy(tiny_model / "model.safetensors", folder / "model-00001-of-00001.safetensors")
    assert [w.path.name for w in sources.resolve(str(folder)).weight_files] == ["model-00001-of-00001.safetensors"]


def test_only_the_files_transformers_loads_weights_from_are_checkpoint_files() -> None:
    names = ["model.safetensors", "pytorch_model.bin", "model-00002-of-00004.safetensors",
             "pytorch_model-00001-of-00002.bin", "training_args.bin", "optimizer.bin", "adapter_model.safetensors",
             "model.safetensors.index.json", "model-00001-of-00002.gguf", "scheduler.pt"]
    assert [sources.is_checkpoint_file(name) for name in names] == [True] * 4 + [False] * 6


def test_non_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"abc")
    with pytest.raises(ModelSourceError, match=r"not a \.gguf"):
        sources.resolve(str(path))


def test_gguf_with_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"NOPE" + b"\x00" * 32)
    with pytest.raises(ModelSourceError, match="not a GGUF"):
        sources.resolve(str(path))


# ------------------------------------------------------------------------------------------------------ Hub


def fill_hub_cache(cache: Path, repo_id: str, model_dir: Path, revision: str = "main") -> Path:
    """Lay out a Hub cache entry the way huggingface_hub does (blobs + snapshot + ref)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    for item in model_dir.iterdir():
        shutil.copy2(item, snapshot / item.name)
    return snapshot


def offline_gguf_repo(tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """``gguf`` as ``tiny-Q4_0.gguf`` of a repo of GGUF files alone in a Hub cache under ``tmp_path``, the cache in
    use and HF_HUB_OFFLINE set: (its snapshot folder, the file's address on the Hub)."""
    quants = tmp_path / "quants"
    quants.mkdir()
    shutil.copy2(gguf, quants / "tiny-Q4_0.gguf")
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-GGUF", quants)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot, "https://huggingface.co/someone/tiny-GGUF/blob/main/tiny-Q4_0.gguf"


def test_cached_hub_model_loads_offline(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = sources.hub_download("someone/tiny-llama", cache_dir=cache)
    assert folder == snapshot
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    source = sources.resolve("someone/tiny-llama")
    assert source.kind == "hub" and source.folder == snapshot
    assert source.display_name == "someone/tiny-llama"  # the id, not the snapshot's folder or the id's last part

    from shortgpt_desktop.core.model.loading import load_model

    loaded = load_model(source, "cpu", "float32")
    assert loaded.n_layers == 6


def test_a_cached_model_opens_whatever_the_case_its_id_is_typed_in(tiny_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub finds a repo whatever the case of its id, its cache keeps the spelling it was downloaded under: typed
    in lower case, a cached model was 'not in the local Hub cache' offline."""
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "SomeOne/Tiny-Llama", tiny_model)
    fill_hub_cache(cache, "someone/tiny-llama-2", tiny_model)  # another model, whose name only begins alike
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.hub_download("someone/tiny-llama", cache_dir=cache) == snapshot
    assert sources.hub_download("SOMEONE/TINY-LLAMA", cache_dir=cache) == snapshot
    with pytest.raises(HubError, match="not in the local Hub cache"):
        sources.hub_download("someone/tiny-llam", cache_dir=cache)
    assert sources.cached_spelling("someone/tiny-llama", cache) == "SomeOne/Tiny-Llama"
    assert sources.cached_spelling("SomeOne/Tiny-Llama", cache) is None  # as typed: nothing to respell
    # the report and the card name it as the Hub spells it, not as typed
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    source = sources.resolve("someone/tiny-llama")
    assert source.cached_id == "SomeOne/Tiny-Llama"
    assert source.as_cached("someone/tiny-llama") == "SomeOne/Tiny-Llama"
    assert source.as_cached("other/model") == "other/model"
    assert sources.resolve(str(tiny_model)).cached_id is None
    # and the card (its base_model line, "removed from", the eval hint) by the same name
    from shortgpt_desktop.core.report import Report, model_card

    assert source.card_name == "SomeOne/Tiny-Llama" and sources.resolve(str(tiny_model)).card_name == str(tiny_model)
    assert "\nbase_model: SomeOne/Tiny-Llama\n" in model_card(Report(model="SomeOne/Tiny-Llama"), source.card_name)


def test_hub_offline_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the local Hub cache"):
        sources.hub_download("someone/never-downloaded", cache_dir=tmp_path)


def _raise(exc: BaseException):
    def fake(*args: object, **kwargs: object) -> None:
        raise exc

    return fake


def _http_error(cls: type, message: str) -> BaseException:
    """A Hub error without a live HTTP response (its constructor's response type differs across versions)."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc


@pytest.mark.parametrize(
    ("error_name", "expected"),
    [
        ("GatedRepoError", "accept its licence"),
        ("RepositoryNotFoundError", "not found on the Hub"),
        ("RevisionNotFoundError", "no revision"),
    ],
)
def test_hub_errors_become_sentences(
    error_name: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    exc = _http_error(getattr(errors, error_name), "boom")
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(exc))
    with pytest.raises(HubError, match=expected):
        sources.hub_download("someone/model", revision="v1", cache_dir=tmp_path)


def test_a_short_commit_hash_opens_the_cached_commit_it_begins(tiny_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit's short hash, as the Hub's pages show it (``--revision 0123456``), was "not in the local Hub cache"
    offline beside that very commit: the cache is a folder per whole hash (the Hub itself resolves a short one)."""
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-llama", tiny_model)  # at 0123456789abcdef…
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for short in ("0123456", "0123456789ab"):
        assert sources.hub_download("someone/tiny-llama", revision=short, cache_dir=cache) == snapshot
    with pytest.raises(HubError, match="holds it at main, not at 0123457"):  # no commit begins so
        sources.hub_download("someone/tiny-llama", revision="0123457", cache_dir=cache)
    # two cached commits that begin alike: neither is taken for the other
    other = cache / "models--someone--tiny-llama" / "snapshots" / ("0123456" + "f" * 33)
    shutil.copytree(snapshot, other)
    with pytest.raises(HubError, match="not in the local Hub cache"):
        sources.hub_download("someone/tiny-llama", revision="0123456", cache_dir=cache)
    assert sources.hub_download("someone/tiny-llama", revision="0123456f", cache_dir=cache) == other


def test_hub_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What huggingface_hub's HTTP client raises when DNS or the connection fails.
    client = pytest.importorskip("httpx2") if importlib.util.find_spec("httpx2") else pytest.importorskip("httpx")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(client.ConnectError("Name or service not known")))
    logging.getLogger("huggingface_hub").setLevel(logging.WARNING)  # as importing huggingface_hub leaves it
    with pytest.raises(HubError, match="cannot be reached"):
        sources.hub_download("someone/model", cache_dir=tmp_path)
    # Its five retries each logged a warning, twice, before our sentence: only errors are said now.
    assert logging.getLogger("huggingface_hub").getEffectiveLevel() >= logging.ERROR


@pytest.mark.real_hub_probe
def test_a_hub_that_cannot_be_reached_is_said_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, huggingface_hub retried five times with back-off, 24 s in silence before the sentence; a probe of
    its host says it at once. Behind a proxy a direct connection says nothing, so the probe stands aside."""
    import time

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    asked: list[str] = []
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda repo_id, **kw: asked.append(repo_id) or [])
    started = time.perf_counter()
    with pytest.raises(HubError, match=r"cannot be reached .*hub\.invalid cannot be looked up"):
        sources.hub_download("someone/model", cache_dir=tmp_path)
    assert time.perf_counter() - started < sources.PROBE_TIMEOUT and not asked
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(RuntimeError("asked the Hub")))
    with pytest.raises(RuntimeError, match="asked the Hub"):
        sources.hub_download("someone/model", cache_dir=tmp_path)
    for name in ("NO_PROXY", "no_proxy"):  # the Hub is reached directly: the probe stands in again
        monkeypatch.setenv(name, "hub.invalid")
    with pytest.raises(HubError, match=r"hub\.invalid cannot be looked up"):
        sources.hub_download("someone/model", cache_dir=tmp_path)


@pytest.mark.real_hub_probe
def test_a_name_lookup_that_hangs_is_given_up_within_the_probes_time(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A name server that never answers: the system's lookup cannot be interrupted, and the probe's time-out only
    covered the connection, so the job waited for the resolver's own time-outs (tens of seconds) in silence."""
    import socket
    import threading
    import time

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")
    monkeypatch.setattr(sources, "PROBE_TIMEOUT", 0.3)
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **kw: release.wait(30) and [])
    asked: list[str] = []
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda repo_id, **kw: asked.append(repo_id) or [])
    started = time.perf_counter()
    try:
        with pytest.raises(HubError, match=r"cannot be reached .*hub\.example could not be looked up in 0\.3 s"):
            sources.hub_download("someone/model", cache_dir=tmp_path)
        assert time.perf_counter() - started < 3 and not asked
    finally:
        release.set()  # the lookup's thread ends


@pytest.mark.real_hub_probe
def test_the_probe_connects_to_the_address_the_lookup_gave(monkeypatch: pytest.MonkeyPatch) -> None:
    """Looked up on its own thread, the host is then connected to by address, the first that answers, on the
    endpoint's port (https's own where it names none)."""
    import socket

    from huggingface_hub import constants

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example:8443")
    ips = ["192.0.2.1", "192.0.2.2"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips] if host == "hub.example" else 1 / 0)
    tried: list[tuple[str, int]] = []
    silent: set[str] = set()

    class Connection:
        def close(self) -> None:
            pass

    def connect(address: tuple[str, int], timeout: float) -> Connection:
        tried.append(address)
        assert 0 < timeout <= sources.PROBE_TIMEOUT
        if address[0] in silent:
            raise TimeoutError("timed out")
        if address[0] == "192.0.2.1":
            raise ConnectionRefusedError(111, "Connection refused")
        return Connection()

    monkeypatch.setattr(socket, "create_connection", connect)
    sources.check_hub_reachable("someone/model")
    assert tried == [("192.0.2.1", 8443), ("192.0.2.2", 8443)]
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")
    tried.clear()
    sources.check_hub_reachable("someone/model")
    assert tried == [("192.0.2.1", 443), ("192.0.2.2", 443)]
    silent.update(ips)
    with pytest.raises(HubError, match=r"\(no answer from hub\.example in 5 s\)"):
        sources.check_hub_reachable("someone/model")
    silent.clear()
    ips.pop()
    with pytest.raises(HubError, match=r"hub\.example: Connection refused"):
        sources.check_hub_reachable("someone/model")


def test_hub_http_error_and_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(_http_error(errors.HfHubHTTPError, "503")))
    with pytest.raises(HubError, match="refused the download"):
        sources.hub_download("someone/model", cache_dir=tmp_path)
    for words in ("No space left on device", "There is not enough space on the disk"):  # Linux, Windows
        monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(OSError(errno.ENOSPC, words)))
        with pytest.raises(HubError, match="disk is full"):
            sources.hub_download("someone/model", cache_dir=tmp_path)


def test_an_unknown_error_is_a_bug_not_a_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        sources.hub_download("someone/model", cache_dir=tmp_path)


def test_hub_download_skips_bin_when_safetensors_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_snapshot(repo_id: str, **kwargs: object) -> str:
        if kwargs.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        if kwargs.get("dry_run"):  # a huge file cached already asks for no room
            return [SimpleNamespace(file_size=1000, will_download=True),
                    SimpleNamespace(file_size=10**15, will_download=False)]
        seen.update(kwargs)
        return str(tmp_path)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.list_repo_files",
                        lambda *a, **k: ["config.json", "model.safetensors", "pytorch_model.bin"])
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    progress: list[tuple[int, int]] = []
    sources.hub_download("someone/model", progress=lambda d, t: progress.append((d, t)), cache_dir=tmp_path)
    patterns = seen["allow_patterns"]
    assert "model.safetensors" in patterns and "pytorch_model.bin" not in patterns and "*.py" in patterns
    # The card carries the licence over, and the files a copy needs travel with it: a tiktoken vocabulary, and the
    # licence texts by each name the writer copies (output_folder.LICENCE_FILES).
    from fnmatch import fnmatchcase

    from shortgpt_desktop.core.formats.output_folder import LICENCE_FILES

    travelling = ["README.md", "cl100k_base.tiktoken", "LICENSE", "LICENSE.md", "LICENCE", "LICENCE.txt", "NOTICE",
                  "NOTICE.txt", "USE_POLICY.md"]
    assert all(any(fnmatchcase(name, pattern) for pattern in patterns) for name in travelling)
    assert all(any(fnmatchcase(name, pattern) for name in travelling) for pattern in LICENCE_FILES)
    tqdm_class = seen["tqdm_class"]
    network_bar = tqdm_class(total=0, unit="B", desc="Downloading bytes")
    files_bar = tqdm_class(total=3, desc="Fetching 3 files")  # counts files, not bytes
    bar = tqdm_class(total=0, unit="B", desc="Reconstructing")
    bar.total = 100  # huggingface_hub grows the total as each file starts
    bar.update(40)
    network_bar.update(40)  # not counted twice
    files_bar.update(1)
    bar.update(60)
    bar.update(20)  # past the total it was given: the total grows with it
    assert progress == [(40, 100), (100, 100), (120, 120)]


def test_hub_download_refuses_what_the_disk_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_snapshot(repo_id: str, **kwargs: object) -> object:
        if kwargs.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        assert kwargs.get("dry_run"), "the real download must not start"
        return [SimpleNamespace(file_size=10**15, will_download=True)]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda *a, **k: ["config.json", "model.safetensors"])
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    with pytest.raises(HubError, match=r"needs 1000\.0 TB but only .* is free"):
        sources.hub_download("someone/huge", cache_dir=tmp_path)


def test_hub_download_cancel(tmp_path: Path) -> None:
    from shortgpt_desktop.core.errors import Cancelled

    bar = sources._progress_tqdm(None, lambda: True)(total=10, unit="B")
    with pytest.raises(Cancelled):
        bar.update(1)


def test_looks_like_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sources.looks_like_hub_id("HuggingFaceTB/SmolLM2-135M")
    assert not sources.looks_like_hub_id("./local/folder")
    assert not sources.looks_like_hub_id("just-a-name")
    assert not sources.looks_like_hub_id("models/Nope.GGUF")  # a file ending in any case is a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert not sources.looks_like_hub_id("models/nope")  # a mistyped name in a local folder, not a Hub id


def _tiny_gguf(path: Path) -> Path:
    import numpy as np

    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((64, 16), np.float32))
    for i in range(2):  # every block the block count declares has its tensors
        writer.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((16, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_truncated_gguf_is_one_sentence(tmp_path: Path) -> None:
    path = _tiny_gguf(tmp_path / "m.gguf")
    assert sources.resolve(str(path)).kind == "gguf"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelSourceError, match=r"^m\.gguf is incomplete or corrupt \([\d,]+ bytes, [\d,]+ expected\)"):
        sources.resolve(str(path))
    path.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ModelSourceError, match="ends inside its header"):
        sources.resolve(str(path))


def test_split_gguf_names_the_missing_part_or_asks_for_a_merge(tmp_path: Path) -> None:
    first = _tiny_gguf(tmp_path / "m-00001-of-00003.gguf")
    _tiny_gguf(tmp_path / "m-00003-of-00003.gguf")
    with pytest.raises(ModelSourceError, match=r"part 1 of 3 .* 1 part is missing, starting with m-00002"):
        sources.resolve(str(first))
    _tiny_gguf(tmp_path / "m-00002-of-00003.gguf")
    with pytest.raises(ModelSourceError, match="merge the parts into one file"):
        sources.resolve(str(first))
    # Their folder is refused in the same words: it was "It holds m-00001-of-00003.gguf: choose that file instead",
    # and that file was then refused.
    (tmp_path / "m-00002-of-00003.gguf").unlink()
    with pytest.raises(ModelSourceError, match=r"^m-00001-of-00003\.gguf is part 1 of 3 .* 1 part is missing"):
        sources.resolve(str(tmp_path))
    _tiny_gguf(tmp_path / "m-00002-of-00003.gguf")
    with pytest.raises(ModelSourceError, match=r"^m-00001-of-00003\.gguf is part 1 of 3 .*merge the parts"):
        sources.resolve(str(tmp_path))
    _tiny_gguf(tmp_path / "other.gguf")  # another model beside them: each file named
    with pytest.raises(ModelSourceError, match=r"It holds m-00001-of-00003\.gguf, .*other\.gguf: choose one of"):
        sources.resolve(str(tmp_path))
    (tmp_path / "other.gguf").unlink()
    # Parts named .GGUF, all there: "2 parts are missing" (the parts were looked for as .gguf).
    for path in tmp_path.glob("m-*.gguf"):
        path.rename(path.with_suffix(".GGUF"))
    with pytest.raises(ModelSourceError, match=r"merge .*llama-gguf-split --merge m-00001-of-00003\.GGUF"):
        sources.resolve(str(first.with_suffix(".GGUF")))


def test_a_file_stamp_follows_links_and_changes_when_the_file_is_rewritten(tmp_path: Path) -> None:
    """What the readers' and writers' caches are keyed on: one stamp for a file and a link to it, another once the
    file is written again (same size, later time), and OSError once it is gone."""
    import os

    path, link = tmp_path / "model.gguf", tmp_path / "link.gguf"
    path.write_bytes(b"GGUF" * 4)
    link.symlink_to(path)
    first = sources.file_stamp(path)
    assert sources.file_stamp(link) == first == (str(path.resolve()), 16, path.stat().st_mtime_ns)
    path.write_bytes(b"FUGG" * 4)
    os.utime(path, ns=(first[2] + 10**9, first[2] + 10**9))
    assert sources.file_stamp(path) != first
    path.unlink()
    with pytest.raises(OSError):
        sources.file_stamp(link)


def test_hub_patterns_fetch_one_copy_of_the_weights_and_the_models_code() -> None:
    """``*.safetensors`` also matched Mistral's consolidated copy and the ``original/`` folder's (twice the
    download and the room asked), and ``*.py`` was left out, so a remote-code model could not load."""
    mistral = ["config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "original/consolidated.safetensors",
               "original/params.json", "tokenizer.json", "modeling_custom.py"]
    patterns = sources.hub_patterns(mistral)
    assert "*.py" in patterns and "model-00001-of-00002.safetensors" in patterns
    weights = [f for f in mistral if f.endswith((".safetensors", ".bin"))]
    import fnmatch

    fetched = [f for f in weights if any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert fetched == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sources.hub_patterns(["config.json", "consolidated.safetensors"])[-1] == "consolidated.safetensors"
    assert sources.hub_patterns(["config.json", "pytorch_model.bin"])[-1] == "pytorch_model.bin"


def test_a_broken_download_or_index_is_one_sentence(tiny_model: Path, tmp_path: Path) -> None:
    """A Hub cache snapshot whose blob is gone (a link to nothing), and indexes that are JSON but not an index,
    gave tracebacks."""
    folder = copy_model(tiny_model, tmp_path / "snap")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "blobs" / "gone")
    with pytest.raises(ModelSourceError, match=r"is missing .*download the model again"):
        sources.resolve(str(folder))
    (folder / "model.safetensors").unlink()
    for index in ("[]", '{"weight_map": null}', '{"weight_map": {"a": 1}}'):
        (folder / "model.safetensors.index.json").write_text(index)
        with pytest.raises(ModelSourceError, match="is not a valid checkpoint index"):
            sources.resolve(str(folder))


def test_a_lora_adapter_beside_the_model_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """transformers applied it while loading the whole model, not one layer at a time, and the save copied the
    base checkpoint: the scores and the saved model disagreed, without a word."""
    folder = copy_model(tiny_model, tmp_path / "with-adapter")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(ModelSourceError, match="holds a LoRA adapter"):
        sources.resolve(str(folder))


def test_a_model_one_may_not_read_is_one_sentence(tiny_model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """pathlib raises PermissionError for a path under a folder one may not enter (root here may enter all)."""
    locked = tmp_path / "locked" / "m"
    real_is_file = Path.is_file

    def refused(self: Path) -> bool:
        if str(self).startswith(str(locked.parent)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", refused)
    with pytest.raises(ModelSourceError, match="cannot be read \\(permission denied\\)"):
        sources.resolve(str(locked))


# ------------------------------------------------------------ what a hobbyist types as a Hub model, and its cache


def test_an_incomplete_cached_snapshot_is_downloaded_again_or_said_offline(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's ``from_pretrained`` caches config and weights but no tokenizer, and an interrupted download of
    shards leaves some of them before their index: both were taken as a whole model (then "no usable tokenizer",
    or "the model files do not belong together"), and the Hub was never asked for the rest."""
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/no-tokenizer", tiny_model)
    for item in snapshot.iterdir():
        if item.name in sources.TOKENIZER_FILES:
            item.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"^someone/no-tokenizer is in the local Hub cache but incomplete \(no "
                                       r"tokenizer\), and HF_HUB_OFFLINE is set, so the Hub is not asked; unset"):
        sources.hub_download("someone/no-tokenizer", cache_dir=cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    downloads: list[str] = []
    real = __import__("huggingface_hub").snapshot_download

    def snapshot_download(repo_id: str, **kwargs: object):
        if kwargs.get("local_files_only"):
            return real(repo_id, **kwargs)
        if kwargs.get("dry_run"):
            return []
        downloads.append(repo_id)  # the rest fetched: here, the tokenizer put back
        for item in tiny_model.iterdir():
            if item.name in sources.TOKENIZER_FILES:
                shutil.copy2(item, snapshot / item.name)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda *a, **k: [p.name for p in tiny_model.iterdir()])
    assert sources.hub_download("someone/no-tokenizer", cache_dir=cache) == snapshot and downloads


def test_a_cached_model_whose_tokenizer_is_a_tiktoken_file_opens_offline(tiny_model: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiktoken-model", tiny_model)
    for item in snapshot.iterdir():
        if item.name in sources.TOKENIZER_FILES:
            item.unlink()
    (snapshot / "cl100k_base.tiktoken").write_text("IQ== 0\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.hub_download("someone/tiktoken-model", cache_dir=cache) == snapshot


def test_a_hub_revision_asked_for_is_the_one_every_later_read_asks_for(tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from shortgpt_desktop.core.model.config import from_pretrained_kwargs

    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-llama", tiny_model, revision="v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    source = sources.resolve("someone/tiny-llama", revision="v2")
    assert (source.kind, source.folder, source.revision) == ("hub", snapshot, "v2")
    assert from_pretrained_kwargs(source) == {"trust_remote_code": False, "revision": "v2"}


def test_shards_without_their_index_name_the_missing_one(tiny_model: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_model(tiny_model, tmp_path / "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00003.safetensors")
    shutil.copy2(folder / "model-00001-of-00003.safetensors", folder / "model-00002-of-00003.safetensors")
    with pytest.raises(ModelSourceError, match=r"sharded is incomplete: model-00003-of-00003\.safetensors is missing "
                                               r"\(1 weight file of the set\)"):
        sources.resolve(str(folder))
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/sharded", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"in the local Hub cache but incomplete \(.*model-00003-of-00003"):
        sources.hub_download("someone/sharded", cache_dir=cache)


def test_a_repo_of_gguf_files_alone_says_which_file_to_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual ``*-GGUF`` repos: offline, "not in the local Hub cache" though they were; online, a download of
    the tokenizer patterns and then "…/snapshots/0123… has no config.json", a folder the user never typed."""
    quants = tmp_path / "quants"
    quants.mkdir()
    for name in ("tiny-Q8_0.gguf", "tiny-F32.gguf"):
        _tiny_gguf(quants / name)
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-GGUF", quants)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"^someone/tiny-GGUF holds GGUF files only \(tiny-F32\.gguf, tiny-Q8_0\.gguf\);"
                                       r" open the file itself, e\.g\. ") as raised:
        sources.hub_download("someone/tiny-GGUF", cache_dir=cache)
    assert str(snapshot / "tiny-F32.gguf") in str(raised.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.list_repo_files",
                        lambda *a, **k: ["README.md", ".gitattributes", "tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"])

    def snapshot_download(repo_id: str, **kwargs: object):
        from huggingface_hub.errors import LocalEntryNotFoundError

        assert kwargs.get("local_files_only"), "nothing is downloaded"
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(HubError, match=r"^someone/other-GGUF holds GGUF files only \(tiny-Q4_K_M\.gguf, "
                                       r"tiny-Q8_0\.gguf\); open the one you want by its address on the Hub, which "
                                       r"downloads that file alone, e\.g\. https://huggingface\.co/someone/other-GGUF/"
                                       r"blob/main/tiny-Q4_K_M\.gguf\.$"):
        sources.hub_download("someone/other-GGUF", cache_dir=tmp_path / "empty")
    # Safetensors in a subfolder only (the download fetches the top folder's weights): still GGUF files only.
    monkeypatch.setattr("huggingface_hub.list_repo_files",
                        lambda *a, **k: ["config.json", "tiny-Q8_0.gguf", "original/model.safetensors"])
    with pytest.raises(HubError, match=r"^someone/other-GGUF holds GGUF files only \(tiny-Q8_0\.gguf\)"):
        sources.hub_download("someone/other-GGUF", cache_dir=tmp_path / "empty")
    # A training run's arguments beside the GGUF files are not weights to download either.
    monkeypatch.setattr("huggingface_hub.list_repo_files",
                        lambda *a, **k: ["config.json", "tiny-Q8_0.gguf", "training_args.bin"])
    with pytest.raises(HubError, match=r"^someone/other-GGUF holds GGUF files only \(tiny-Q8_0\.gguf\)"):
        sources.hub_download("someone/other-GGUF", cache_dir=tmp_path / "empty")


@pytest.mark.parametrize(("address", "expected"), [
    ("https://huggingface.co/someone/tiny-GGUF/blob/main/tiny-Q8_0.gguf",
     ("someone/tiny-GGUF", None, "tiny-Q8_0.gguf")),
    ("https://huggingface.co/someone/tiny-GGUF/resolve/main/tiny-Q8_0.gguf?download=true",
     ("someone/tiny-GGUF", None, "tiny-Q8_0.gguf")),
    ("hf.co/someone/tiny-GGUF/blob/v2/quants/tiny%20Q8.GGUF", ("someone/tiny-GGUF", "v2", "quants/tiny Q8.GGUF")),
    ("https://huggingface.co/someone/tiny/blob/main/config.json", None),  # not a model file
    ("https://huggingface.co/someone/tiny-GGUF", None),  # the repo's page: the repo (hub_id_of)
    ("someone/tiny-GGUF", None),
])
def test_a_gguf_files_address_on_the_hub_names_the_repo_the_revision_and_the_file(
        address: str, expected: tuple | None) -> None:
    assert sources.hub_file_of(address, None) == expected
    if expected is not None:  # a revision given on its own goes with a copied link's main, or with its own
        same = expected[1] or "dev"
        assert sources.hub_file_of(address, same)[1] == same


def test_a_revision_given_beside_an_address_that_names_another_is_refused() -> None:
    """``--revision v1`` beside an address pinned at another revision opened v1 without a word (a review)."""
    for address in ("https://huggingface.co/org/name-GGUF/blob/abc123/x.gguf",
                    "https://huggingface.co/org/name/tree/dev", "org/name@dev"):
        with pytest.raises(ModelSourceError, match=r"names revision (abc123|dev) and --revision says v1: give one"):
            (sources.hub_file_of if address.endswith(".gguf") else sources.hub_id_of)(address, "v1")
    # a link copied from the file list carries main: a revision given beside it is the one asked for
    assert sources.hub_file_of("https://huggingface.co/org/name-GGUF/blob/main/x.gguf", "v1")[1] == "v1"
    assert sources.hub_id_of("https://huggingface.co/org/name/tree/main", "v1") == ("org/name", "v1")


def test_a_gguf_files_address_opens_that_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo of GGUF files alone (the usual ``*-GGUF``) was refused by its id, and the address of one of its files,
    pasted from the Files page, opened the repo and was refused the same way: the file is opened, from the cache
    (offline too), else downloaded alone (the room for it checked first)."""
    from huggingface_hub import errors

    quants = tmp_path / "quants"
    quants.mkdir()
    _tiny_gguf(quants / "tiny-Q8_0.gguf")
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-GGUF", quants)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    address = "https://huggingface.co/someone/tiny-GGUF/blob/main/tiny-Q8_0.gguf"
    source = sources.resolve(address)
    assert source.kind == "gguf" and source.folder == snapshot and source.gguf_file == "tiny-Q8_0.gguf"
    assert source.repo_id == "someone/tiny-GGUF" and source.display_name == "tiny-Q8_0.gguf"
    with pytest.raises(HubError, match=r"^tiny-Q4_K_M\.gguf of someone/tiny-GGUF is not in the local Hub cache, and "
                                       r"HF_HUB_OFFLINE is set, so the Hub is not asked; the local Hub cache holds "
                                       r"tiny-Q8_0\.gguf of someone/tiny-GGUF; unset"):
        sources.resolve(address.replace("Q8_0", "Q4_K_M"))
    with pytest.raises(HubError, match=r"^tiny-Q8_0\.gguf of someone/tiny-GGUF \(revision v2\) is not in the local "
                                       r"Hub cache, .* holds it at another revision; unset"):
        sources.resolve(address.replace("/main/", "/v2/"))
    # online: that one file, the room for it checked before the download
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(sources, "check_hub_reachable", lambda repo_id: None)
    asked: list[tuple] = []
    downloaded = tmp_path / "downloaded" / "tiny-Q4_K_M.gguf"
    downloaded.parent.mkdir()
    shutil.copy2(quants / "tiny-Q8_0.gguf", downloaded)

    def hf_hub_download(repo_id: str, filename: str, **kwargs: object):
        asked.append((repo_id, filename, kwargs.get("revision"), bool(kwargs.get("dry_run"))))
        return SimpleNamespace(file_size=downloaded.stat().st_size) if kwargs.get("dry_run") else str(downloaded)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
    source = sources.resolve(address.replace("Q8_0", "Q4_K_M").replace("/main/", "/v2/"))
    assert source.gguf_file == "tiny-Q4_K_M.gguf" and source.revision == "v2"
    assert asked == [("someone/tiny-GGUF", "tiny-Q4_K_M.gguf", "v2", True),
                     ("someone/tiny-GGUF", "tiny-Q4_K_M.gguf", "v2", False)]
    # one part of a split model: refused before a download of tens of GB that could not open (a review)
    with pytest.raises(ModelSourceError, match=r"^big-Q8_0-00001-of-00003\.gguf is part 1 of 3 of a split GGUF model, "
                                               "which opens only merged into one file"):
        sources.resolve("https://huggingface.co/someone/big-GGUF/blob/main/Q8_0/big-Q8_0-00001-of-00003.gguf")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _raise(_http_error(errors.RemoteEntryNotFoundError, "404")))
    with pytest.raises(HubError, match=r"^someone/tiny-GGUF has no file tiny-Q2\.gguf at main; copy the file's "
                                       r"address from its Files page again\.$"):
        sources.resolve(address.replace("Q8_0", "Q2"))


def test_offline_sentences_name_the_revision_and_an_invalid_id(tiny_model: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"^someone/tiny-llama \(revision v2\) is not in the local Hub cache"):
        sources.hub_download("someone/tiny-llama", revision="v2", cache_dir=cache)
    with pytest.raises(HubError, match=r"^someone/tiny--llama is not a valid Hub id"):
        sources.hub_download("someone/tiny--llama", cache_dir=cache)


def test_offline_is_read_as_huggingface_hub_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE=ON`` (which huggingface_hub honours) probed the network and said the Hub could not be
    reached; its refusal to go online was passed on as its own text, an API address and two full stops."""
    monkeypatch.setattr(sources, "check_hub_reachable", _raise(AssertionError("no probe offline")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "ON")
    with pytest.raises(HubError, match=r"^someone/not-cached is not in the local Hub cache"):
        sources.hub_download("someone/not-cached", cache_dir=tmp_path)
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(sources, "check_hub_reachable", lambda repo_id: None)
    monkeypatch.setattr("huggingface_hub.list_repo_files", _raise(OfflineModeIsEnabled("offline mode is enabled.")))
    with pytest.raises(HubError, match=r"^someone/not-cached is not in the local Hub cache"):
        sources.hub_download("someone/not-cached", cache_dir=tmp_path)


def test_a_path_typed_wrong_and_taken_for_a_hub_id_says_there_is_no_such_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``models/llama`` typed for a folder that is not there reads as a Hub id: the user was told only that the Hub
    could not be reached. An incomplete cached download is a Hub model, and says nothing of folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HubError, match=r"^models/llama is not in the local Hub cache, and HF_HUB_OFFLINE is set, so "
                                       r"the Hub is not asked; unset HF_HUB_OFFLINE to download it, or choose a model "
                                       r"folder or \.gguf file on this computer \(models/llama is not a folder or file "
                                       r"on this computer either\)\.$"):
        sources.resolve("models/llama")
    monkeypatch.setattr(sources, "hub_download", _raise(HubError("someone/x is in the local Hub cache but "
                                                                 "incomplete (no weights)")))
    with pytest.raises(HubError, match=r"incomplete \(no weights\)$"):
        sources.resolve("someone/x")


@pytest.mark.parametrize("typed", ["https://huggingface.co/someone/tiny-llama", "huggingface.co/someone/tiny-llama/",
                                   "https://hf.co/someone/tiny-llama/tree/main",
                                   "https://huggingface.co/someone/tiny-llama/blob/main/config.json",
                                   "someone/tiny-llama@main"])
def test_a_pasted_hub_page_opens_the_model(typed: str, tiny_model: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The way most people copy a Hub model is its page's address: it was "does not exist"."""
    cache = tmp_path / "hub"
    snapshot = fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    assert sources.hub_id_of(typed, None) == ("someone/tiny-llama", "main" if "main" in typed else None)
    source = sources.resolve(typed)
    assert source.kind == "hub" and source.folder == snapshot


def test_a_hub_page_names_its_revision_and_a_dataset_is_not_a_model() -> None:
    assert sources.hub_id_of("https://huggingface.co/org/name/tree/dev", None) == ("org/name", "dev")
    assert sources.hub_id_of("https://huggingface.co/org/name/tree/dev", "dev") == ("org/name", "dev")
    assert sources.hub_id_of("./some/folder/", None) == ("./some/folder/", None)
    # org/name@dev, as pip and other tools write a revision, was "does not exist"
    assert sources.hub_id_of("org/name@dev", None) == ("org/name", "dev")
    assert sources.hub_id_of("org/name", "v1") == ("org/name", "v1")
    assert sources.hub_id_of("org/name@", None) == ("org/name@", None)
    with pytest.raises(ModelSourceError, match=r"^org/name/ does not exist"):  # a folder typed wrong, not a Hub id
        sources.resolve("org/name/")
    with pytest.raises(ModelSourceError, match="is a Hub dataset, not a model"):
        sources.hub_id_of("https://huggingface.co/datasets/org/texts", None)
    with pytest.raises(ModelSourceError, match="is a Hub space, not a model"):
        sources.hub_id_of("https://huggingface.co/spaces/org/demo", None)


def test_a_model_without_tokenizer_files_says_so_in_a_whole_sentence(tiny_model: Path, tmp_path: Path) -> None:
    """transformers lists three ways it could not build the tokenizer over several lines; the first line alone read
    "(Couldn't instantiate the backend tokenizer from one of)"."""
    from shortgpt_desktop.core.model.loading import load_tokenizer

    folder = copy_model(tiny_model, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelSourceError, match=r"has no usable tokenizer \(none of tokenizer\.json, tokenizer\.model, "
                                               r"or vocab\.json with merges\.txt is there to build it from\)\.$"):
        load_tokenizer(sources.resolve(str(folder)))


def test_merges_the_tokenizers_library_cannot_parse_are_a_sentence(tiny_model: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizers binding raises TypeError, not one of the loaders' errors, for merges it cannot read."""
    import transformers

    from shortgpt_desktop.core.model.loading import load_tokenizer

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        _raise(TypeError("argument 'merges': failed to extract enum PyMerges.\nmore")))
    with pytest.raises(ModelSourceError, match=r"has no usable tokenizer \(argument 'merges': failed to extract enum "
                                               r"PyMerges\)\.$"):
        load_tokenizer(sources.resolve(str(tiny_model)))


def test_a_model_path_that_is_a_link_to_nothing_is_said_and_not_looked_up_on_the_hub(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    """A dangling link named like an id (``models/llama``) was looked up on the Hub; one named otherwise said it
    did not exist, though ``ls`` lists it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "llama").symlink_to(tmp_path / "gone")
    monkeypatch.setattr(sources, "hub_download", lambda *a, **k: pytest.fail("looked up on the Hub"))
    with pytest.raises(ModelSourceError) as raised:
        sources.resolve("models/llama")
    assert str(raised.value) == (f"models/llama is a link to {tmp_path / 'gone'}, which does not exist; choose the "
                                 "model's folder or a .gguf file.")


def test_with_hf_hub_offline_set_a_missing_model_names_the_variable_and_what_the_cache_holds(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With HF_HUB_OFFLINE set, a model not in the cache said "connect to the internet" (which does not help while
    the variable is set) and left out what the cache holds instead, which the same case without it says."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    cases = {
        ("someone/tinny-llama", None): "someone/tinny-llama is not in the local Hub cache, and HF_HUB_OFFLINE is set, "
                                       "so the Hub is not asked; the local Hub cache holds someone/tiny-llama, "
                                       "spelled otherwise; unset HF_HUB_OFFLINE to download it",
        ("someone/tiny-llama", "dev"): "someone/tiny-llama (revision dev) is not in the local Hub cache, and "
                                       "HF_HUB_OFFLINE is set, so the Hub is not asked; the local Hub cache holds it "
                                       "at main, not at dev; unset HF_HUB_OFFLINE",
        ("someone/else", None): "someone/else is not in the local Hub cache, and HF_HUB_OFFLINE is set, so the Hub is "
                                "not asked; unset HF_HUB_OFFLINE to download it, or choose a model folder",
    }
    for (repo_id, revision), said in cases.items():
        with pytest.raises(HubError) as raised:
            sources.hub_download(repo_id, revision=revision, cache_dir=cache)
        assert str(raised.value).startswith(said), str(raised.value)
        assert "connect to the internet" not in str(raised.value)


def test_an_unreachable_hub_says_what_the_local_cache_holds_of_the_model(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE every case read "The Hugging Face Hub cannot be reached to download someorg/tiny":
    the revision asked for unnamed, the copy at another revision, an incomplete copy and a copy spelled nearly the
    same all unmentioned (with HF_HUB_OFFLINE=1 each was exact)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline = "huggingface.co cannot be looked up: is this computer offline?"

    def unreachable(repo_id: str) -> None:
        raise sources.HubUnreachable(repo_id, offline)

    monkeypatch.setattr(sources, "check_hub_reachable", unreachable)
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "someone/tiny-llama", tiny_model)
    partial = fill_hub_cache(cache, "someone/no-tokenizer", tiny_model)
    for item in partial.iterdir():
        if item.name in sources.TOKENIZER_FILES:
            item.unlink()
    cases = {
        ("someone/tiny-llama", "dev"): "someone/tiny-llama (revision dev) ({offline}); the local Hub cache holds it "
                                       "at main, not at dev; check the connection",
        ("someone/no-tokenizer", None): "someone/no-tokenizer ({offline}); the local Hub cache holds it, but "
                                        "incomplete (no tokenizer); check the connection",
        ("someone/tinny-llama", None): "someone/tinny-llama ({offline}); the local Hub cache holds someone/tiny-llama, "
                                       "spelled otherwise; check the connection",
        ("someone/else", None): "someone/else ({offline}); check the connection",
    }
    fill_hub_cache(cache, "someone/dev-only", tiny_model, revision="dev")  # the main revision asked, not cached
    cases[("someone/dev-only", None)] = ("someone/dev-only ({offline}); the local Hub cache holds it at dev, not at "
                                         "main; check the connection")
    for (repo_id, revision), said in cases.items():
        with pytest.raises(HubError) as raised:
            sources.hub_download(repo_id, revision=revision, cache_dir=cache)
        expected = "The Hugging Face Hub cannot be reached to download " + said.format(offline=offline)
        assert str(raised.value).startswith(expected), str(raised.value)
