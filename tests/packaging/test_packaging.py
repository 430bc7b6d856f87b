"""The installers' spec, scripts and workflow agree with each other and with the project, checked without building.

A full PyInstaller build takes many minutes and gigabytes, too slow for every CI run; packaging/build_linux.sh and
the installers workflow do that. These tests catch what usually breaks a build or an installed app: a renamed
entry point, a moved resource, a version bumped in one place only, an exclude that the app turns out to need.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SPEC = PACKAGING / "shortgpt-desktop.spec"
LINUX = PACKAGING / "build_linux.sh"
WINDOWS = PACKAGING / "build_windows.ps1"
ISS = PACKAGING / "windows" / "shortgpt-desktop.iss"
WORKFLOW = REPO / ".github" / "workflows" / "installers.yml"
RESOURCES = REPO / "resources"
DESKTOP_FILE = RESOURCES / "shortgpt-desktop.desktop"

sys.path.insert(0, str(PACKAGING))
import check_excludes  # noqa: E402
import speclib  # noqa: E402

sys.path.remove(str(PACKAGING))

CONSTANTS = speclib.spec_constants()
VERSION = speclib.project_version()


def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def iss_defines() -> dict[str, str]:
    """The ``#define NAME "value"`` lines of the Inno Setup script (the defaults, for #ifndef ones)."""
    return dict(re.findall(r'^\s*#define\s+(\w+)\s+"([^"]*)"\s*$', ISS.read_text(encoding="utf-8"), re.M))


def iss_setup() -> dict[str, str]:
    """The [Setup] section's directives."""
    text = ISS.read_text(encoding="utf-8")
    section = text.split("[Setup]", 1)[1].split("\n[", 1)[0]
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in section.splitlines())
        if value and not key.lstrip().startswith(";")
    )


def from_iss(path: str) -> Path:
    """An .iss path (relative to the script's folder, with backslashes) as a path in this checkout."""
    return (ISS.parent / path.replace("\\", "/")).resolve()


# -- the spec ------------------------------------------------------------------------------------------------


def test_spec_names_the_entry_points_of_pyproject():
    project = pyproject()["project"]
    assert project["gui-scripts"][CONSTANTS["GUI_EXE"]] == CONSTANTS["GUI_ENTRY"]
    assert project["scripts"][CONSTANTS["CLI_EXE"]] == CONSTANTS["CLI_ENTRY"]
    assert CONSTANTS["APP_NAME"] == project["name"]


@pytest.mark.parametrize("key", ["GUI_ENTRY", "CLI_ENTRY"])
def test_entry_point_functions_exist(key):
    module, _, function = CONSTANTS[key].partition(":")
    source = REPO.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{source} has no {function}()"


def test_versions_agree():
    assert pyproject()["project"]["version"] == VERSION
    assert iss_defines()["AppVersion"] == VERSION


def test_build_extra_brings_pyinstaller():
    build = pyproject()["project"]["optional-dependencies"]["build"]
    assert any(re.match(r"pyinstaller\b", req, re.I) for req in build)


def test_resources_the_installers_use_exist():
    for name in ("icon.png", "icon.svg", "icon.ico", "shortgpt-desktop.desktop"):
        assert (RESOURCES / name).is_file(), f"resources/{name} is missing"
    linux = LINUX.read_text(encoding="utf-8")
    for name in re.findall(r"resources/([\w.-]+)", linux):
        assert (RESOURCES / name).is_file(), f"build_linux.sh uses resources/{name}, which is missing"
    assert from_iss(iss_setup()["SetupIconFile"]).is_file()


def test_excludes_are_not_imported_by_the_project():
    excludes = CONSTANTS["EXCLUDES"]
    for path in (REPO / "shortgpt_desktop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert not speclib.excluded(name, excludes), f"{path} imports {name}, which the spec excludes"


def test_excludes_hide_modules_like_the_bundle():
    """check_excludes' finder makes an excluded module look absent, as in the frozen app."""
    code = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(PACKAGING)!r})\n"
        "import check_excludes as c\n"
        "refused = set()\n"
        "sys.meta_path[:] = [c.Hider(f, ['colorsys', 'xml.dom'], refused) for f in sys.meta_path]\n"
        "assert importlib.util.find_spec('colorsys') is None\n"
        "try:\n    import xml.dom.minidom\nexcept ModuleNotFoundError:\n    pass\nelse:\n    raise SystemExit(1)\n"
        "import xml.sax, json\n"
        "print(sorted(refused))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "colorsys" in done.stdout and "xml.dom" in done.stdout


def test_self_test_passes_without_the_excluded_modules():
    """Every exclude of the spec is safe: the whole self-test runs with all of them unimportable, and every one of
    its eight steps passes (this is also the app's own self-test, run once for both checks)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(PACKAGING / "check_excludes.py")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL", "skip"))]
    assert [s.split()[0] for s in steps] == ["ok"] * 8, done.stdout
    assert "self-test passed" in done.stdout
    # A library's data file that nothing collects is missing from the bundle: transformers 5.25 reads kernels'
    # python_depends.json on every model load, and the frozen app could load no model.
    line = next(x for x in done.stdout.splitlines() if x.startswith(check_excludes.DATA_FILES_LINE))
    read = json.loads(line[len(check_excludes.DATA_FILES_LINE):])
    uncollected = [path for path in read if path.split("/")[0] not in CONSTANTS["DATA_PACKAGES"]]
    assert not uncollected, f"the self-test reads {uncollected}: add their packages to the spec's DATA_PACKAGES"


def test_the_licence_texts_ship_with_the_wheel_and_the_bundle(spec_run):
    """pyproject declared Apache-2.0 with no licence text in the repository, the wheel or the bundle, and the .deb's
    copyright file sent the reader to bundled licence files that were not there (none for Qt or Python)."""
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    # the verbatim text, which the bundle also ships for Apache-2.0 distributions that carry none
    assert "END OF TERMS AND CONDITIONS" in licence and len(licence.split()) > 1500
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    dest = CONSTANTS["LICENSES_DEST"]
    shipped = {(Path(src).name, folder) for src, folder in spec_run["Analysis"].kwargs["datas"]
               if folder.startswith(dest + "/")}
    assert ("LICENSE", f"{dest}/shortgpt-desktop") in shipped
    assert {("LGPL-3.0.txt", f"{dest}/Qt"), ("GPL-3.0.txt", f"{dest}/Qt")} <= shipped
    assert ("LICENSE.txt", f"{dest}/Python") in shipped
    assert {folder for _, folder in shipped} >= {f"{dest}/torch", f"{dest}/transformers"}
    # one file at each place: torch's 74 files named LICENSE (its own, each third party's) all landed on
    # LICENSES/torch/LICENSE, and one of them was left
    places = [(folder, Path(src).name) for src, folder in spec_run["Analysis"].kwargs["datas"]
              if folder.startswith(dest + "/")]
    assert len(places) == len(set(places)), sorted({p for p in places if places.count(p) > 1})[:5]
    import importlib.metadata

    torch_own = [f for f in importlib.metadata.distribution("torch").files or [] if ".dist-info/" in f.as_posix()
                 and f.name.startswith("LICENSE") and "third_party" not in f.as_posix()]
    assert torch_own and all(any(folder.startswith(f"{dest}/torch") and src.endswith(f.name)
                                 and "third_party" not in folder for src, folder in
                                 spec_run["Analysis"].kwargs["datas"]) for f in torch_own)
    # an Apache-2.0 distribution whose wheel carries no licence file (tokenizers, sentencepiece, kernels) gets the
    # licence's text, the project's own LICENSE: none was shipped for them (a walkthrough)
    for name in ("tokenizers", "sentencepiece", "kernels"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            if not [f for f in importlib.metadata.distribution(name).files or [] if "licen" in f.name.lower()]:
                assert ("LICENSE", f"{dest}/{name}") in shipped, name
    for name in ("LGPL-3.0.txt", "GPL-3.0.txt"):
        assert "GNU" in (PACKAGING / "licenses" / name).read_text(encoding="utf-8")[:200]
    assert f"/opt/$APP/_internal/{dest}" in LINUX.read_text(encoding="utf-8")
    assert from_iss(iss_setup()["LicenseFile"]) == REPO / "LICENSE"


def test_spec_collects_the_data_files_of_the_data_packages(spec_run):
    """kernels' python_depends.json, which no PyInstaller hook collects, lands where kernels reads it."""
    datas = {(Path(src).name, dest) for src, dest in spec_run["Analysis"].kwargs["datas"]}
    assert ("python_depends.json", str(Path("kernels") / "_internals")) in datas


class _Target:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


#: Stand-in binaries: destination in the bundle -> libraries it loads (as ldd would list them).
_BINARIES = {
    "torch/lib/libtorch_cpu.so": {"libgomp.so.1"},
    "libgomp.so.1": set(),
    "torch/lib/libtorchbind_test.so": set(),
    "torch/lib/torch_cpu.lib": set(),
    "torch/lib/aoti_custom_ops.dll": set(),
    "PySide6/Qt/plugins/platforms/libqoffscreen.so": {"libfontconfig.so.1"},
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so": {"libcairo.so.2", "libpixman-1.so.0", "libfontconfig.so.1"},
    "libcairo.so.2": {"libpixman-1.so.0", "libfontconfig.so.1"},
    "libpixman-1.so.0": set(),
    "libfontconfig.so.1": set(),
    "libpython3.11.so.1.0": set(),  # needed by no file (the bootloader loads it): must stay
    "libcudart.so": set(),
}
_DATAS = ["torch/include/ATen/ATen.h", "torch/bin/test_api", "torch/bin/torch_shm_manager",
          "torch/share/cmake/Torch/TorchConfig.cmake", "torch/test/basic", "transformers/__init__.py",
          "torch/_C/__init__.pyi"]


def _collect_data_files(package: str, **kwargs: Any) -> list[tuple[str, str]]:
    """PyInstaller's collect_data_files, for a plain installed package: every file that is not a module, as
    (source, folder in the bundle)."""
    root = Path(importlib.import_module(package).__file__).parent
    return [(str(p), str(Path(package) / p.parent.relative_to(root))) for p in root.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".so", ".pyd")]


def _run_spec(tmp_path: Path, platform: str) -> dict[str, Any]:
    """The spec executed as on ``platform``, with stand-ins for PyInstaller's classes and helpers."""
    made: dict[str, Any] = {"EXE": []}
    distpath = tmp_path / "dist"

    class Analysis(_Target):
        def __init__(self, scripts: list[str], **kwargs: Any) -> None:
            super().__init__(scripts, **kwargs)
            self.scripts = [("pyi_rth_inspect", "rthook.py", "PYSOURCE")]
            self.scripts += [(Path(s).stem, s, "PYSOURCE") for s in scripts]
            self.pure: list = []
            self.binaries = [(dest, f"/src/{dest}", "BINARY") for dest in _BINARIES]
            self.datas = [(dest, "src", "DATA") for dest in _DATAS]
            made["Analysis"] = self

    class EXE(_Target):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made["EXE"].append(self)

    class COLLECT(_Target):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            (distpath / kwargs["name"]).mkdir(parents=True)
            made["COLLECT"] = self

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda name, **kwargs: [name]
    hooks.copy_metadata = lambda name, **kwargs: []
    hooks.collect_data_files = _collect_data_files
    bindepend = types.ModuleType("PyInstaller.depend.bindepend")
    bindepend.get_imports = lambda src: {(name, f"/lib/{name}") for name in _BINARIES[src[len("/src/"):]]}
    stand_ins = {"PyInstaller": types.ModuleType("PyInstaller"),
                 "PyInstaller.utils": types.ModuleType("PyInstaller.utils"), "PyInstaller.utils.hooks": hooks,
                 "PyInstaller.depend": types.ModuleType("PyInstaller.depend"),
                 "PyInstaller.depend.bindepend": bindepend}
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    workpath = tmp_path / "work"
    namespace = {"SPECPATH": str(PACKAGING), "workpath": str(workpath), "DISTPATH": str(distpath),
                 "Analysis": Analysis, "PYZ": _Target, "EXE": EXE, "COLLECT": COLLECT, "__name__": "__main__",
                 "__file__": str(SPEC)}
    # What the spec imports, imported under the real platform first (torch and friends check it at import time).
    for module in ("shortgpt_desktop.core.model.families", "shortgpt_desktop.core.measure.calibration",
                   "transformers.models.auto.configuration_auto"):
        importlib.import_module(module)

    real_platform = sys.platform
    try:
        sys.platform = platform
        exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    finally:
        sys.platform = real_platform
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    made["workpath"], made["distpath"] = workpath, distpath
    return made


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_spec(tmp_path_factory.mktemp("spec-linux"), "linux")


@pytest.fixture(scope="module")
def spec_run_windows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_spec(tmp_path_factory.mktemp("spec-windows"), "win32")


def test_spec_on_linux_builds_one_program_and_links_the_other(spec_run):
    (gui,) = spec_run["EXE"]
    assert gui.kwargs["name"] == CONSTANTS["GUI_EXE"] and gui.kwargs["exclude_binaries"] is True  # onedir
    assert spec_run["COLLECT"].kwargs["name"] == CONSTANTS["APP_NAME"]
    link = spec_run["distpath"] / CONSTANTS["APP_NAME"] / CONSTANTS["CLI_EXE"]
    assert link.is_symlink() and os.readlink(link) == CONSTANTS["GUI_EXE"]  # same folder, relative


def test_spec_on_windows_builds_a_window_and_a_console_program(spec_run_windows):
    gui, cli = spec_run_windows["EXE"]
    assert gui.kwargs["name"] == CONSTANTS["GUI_EXE"] and gui.kwargs["console"] is False
    assert cli.kwargs["name"] == CONSTANTS["CLI_EXE"] and cli.kwargs["console"] is True
    for exe in (gui, cli):
        assert exe.kwargs["exclude_binaries"] is True
        assert exe.kwargs["icon"] and Path(exe.kwargs["icon"]).name == "icon.ico"
    collect = spec_run_windows["COLLECT"]
    assert collect.kwargs["name"] == CONSTANTS["APP_NAME"] and gui in collect.args and cli in collect.args
    assert not (spec_run_windows["distpath"] / CONSTANTS["APP_NAME"] / CONSTANTS["CLI_EXE"]).exists()


_ARGV0 = [("/usr/bin/shortgpt", "cli"), ("shortgpt", "cli"), ("SHORTGPT.EXE", "cli"),
          ("/opt/shortgpt-desktop/shortgpt-desktop", "gui"), ("shortgpt-desktop.exe", "gui"), ("python", "gui")]
if os.name == "nt":
    _ARGV0 += [("C:\\Program Files\\ShortGPT Desktop\\shortgpt.exe", "cli"), ("C:\\x\\shortgpt-desktop.exe", "gui")]


@pytest.mark.parametrize(("argv0", "program"), _ARGV0)
def test_spec_launcher_runs_the_program_it_was_started_as(spec_run, monkeypatch, argv0, program):
    launcher = spec_run["workpath"] / "launchers" / f"{CONSTANTS['GUI_EXE']}.py"
    code = compile(launcher.read_text(encoding="utf-8"), str(launcher), "exec")
    for key, exit_code in (("GUI", 3), ("CLI", 4)):
        module, _, function = CONSTANTS[key + "_ENTRY"].partition(":")
        fake = types.ModuleType(module)
        setattr(fake, function, lambda code=exit_code: code)
        monkeypatch.setitem(sys.modules, module, fake)
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit) as stop:
        exec(code, {"__name__": "__main__"})
    assert stop.value.code == (4 if program == "cli" else 3)


def test_spec_collects_resources_and_model_code(spec_run):
    analysis = spec_run["Analysis"]
    datas = analysis.kwargs["datas"]
    shipped = {Path(src).name for src, dest in datas if dest == CONSTANTS["RESOURCE_DEST"]}
    assert {"icon.svg", "icon.png", "icon.ico", "shortgpt-desktop.desktop"} <= shipped
    assert CONSTANTS["RESOURCE_DEST"] == "shortgpt_desktop/resources"  # where shortgpt_desktop.resources loads from
    hidden = analysis.kwargs["hiddenimports"]
    assert "shortgpt_desktop.resources" in hidden
    from shortgpt_desktop.core.model.families import FAMILIES

    for family in FAMILIES:
        package = "gemma3" if family.name == "gemma3_text" else family.name
        assert f"transformers.models.{package}" in hidden, family.name
    assert any(dest.startswith("transformers/models/") for _, dest in datas)  # every architecture's source
    assert analysis.kwargs["module_collection_mode"] == {"torch": "pyz+py", "transformers": "pyz+py"}
    assert analysis.kwargs["excludes"] == CONSTANTS["EXCLUDES"]
    assert analysis.kwargs["optimize"] == 0


def test_spec_bundles_the_built_in_corpus_modules(spec_run):
    """The built-in calibration text is the docstrings of these modules, imported by name at run time."""
    from shortgpt_desktop.core.measure.calibration import _BUILTIN_MODULES

    hidden = set(spec_run["Analysis"].kwargs["hiddenimports"])
    for name in _BUILTIN_MODULES:
        assert name in hidden
        assert not speclib.excluded(name, CONSTANTS["EXCLUDES"]), f"{name} feeds the built-in corpus"


def test_spec_drops_headers_tests_test_libraries_and_orphans(spec_run):
    analysis = spec_run["Analysis"]
    kept = {dest for dest, _, _ in analysis.datas + analysis.binaries}
    assert kept == {
        "torch/lib/libtorch_cpu.so", "libgomp.so.1", "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "libfontconfig.so.1", "libpython3.11.so.1.0", "torch/bin/torch_shm_manager", "transformers/__init__.py",
    }


# -- Linux ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [LINUX, PACKAGING / "test_deb.sh"], ids=lambda p: p.name)
def test_linux_scripts_are_executable_and_parse(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_linux_script_agrees_with_the_spec():
    text = LINUX.read_text(encoding="utf-8")
    assert re.search(r"^APP=" + re.escape(CONSTANTS["APP_NAME"]) + r"\b", text, re.M)
    assert 'SPEC=packaging/shortgpt-desktop.spec' in text
    assert 'DISTDIR="dist/$FLAVOUR"' in text and 'BUNDLE="$DISTDIR/$APP"' in text
    assert "OUT=dist/installers" in text
    assert "cpu)" in text and "cuda)" in text and 'FLAVOUR="${FLAVOUR:-cpu}"' in text
    # both commands on the PATH, through /usr/bin links into /opt
    for key in ("GUI_EXE", "CLI_EXE"):
        assert f'ln -s "../../opt/$APP/${key}" "$STAGE/usr/bin/${key}"' in text
    assert "dpkg-deb" in text and "smoke_test.py" in text and "check_excludes.py" in text


def test_both_scripts_empty_setuptools_build_folder_before_installing_the_project():
    """setuptools builds the project's wheel in the checkout's build/lib and never empties it: a module deleted
    since an earlier build from the same checkout was installed, and bundled, again (the reviewer's stale_mod.py)."""
    for script, clear in ((LINUX, "rm -rf build/lib build/bdist.*"),
                          (WINDOWS, "Remove-Item -Recurse -Force build\\lib, build\\bdist.*")):
        text = script.read_text(encoding="utf-8")
        install = text.index('-m pip install --quiet ".[build]"')
        assert clear in text[:install], script.name


def test_bundle_library_check_maps_system_libraries_to_packages(tmp_path):
    sys.path.insert(0, str(PACKAGING))
    try:
        import check_bundle_libs as libs
    finally:
        sys.path.remove(str(PACKAGING))
    assert libs.debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert libs.debian_package("libxcb-render-util.so.0") == "libxcb-render-util0"
    assert libs.debian_package("libGL.so.1") == "libgl1"
    assert libs.debian_package("libfoo.so.3") is None
    depends = libs.depends({"libc.so.6": [], "libGL.so.1": []}, "2.35")
    assert depends == "libc6 (>= 2.35), libfontconfig1, libgl1"
    if not sys.platform.startswith("linux") or shutil.which("readelf") is None:
        pytest.skip("needs Linux and readelf")
    true = Path(shutil.which("true") or "/bin/true").resolve()
    (tmp_path / "bundle").mkdir()
    shutil.copy(true, tmp_path / "bundle" / "prog")
    system, unknown, glibc = libs.analyse(tmp_path / "bundle")
    assert "libc.so.6" in system and not unknown and tuple(map(int, glibc.split("."))) >= (2, 2)


def test_desktop_entry_runs_the_installed_command():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(DESKTOP_FILE, encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application"
    assert section["Exec"].split()[0] == CONSTANTS["GUI_EXE"]  # /usr/bin/shortgpt-desktop, made by the .deb
    assert section["Icon"] == CONSTANTS["APP_NAME"]  # installed as hicolor/*/apps/shortgpt-desktop.{png,svg}
    text = LINUX.read_text(encoding="utf-8")
    assert '/apps/$APP.png"' in text and '/apps/$APP.svg"' in text
    assert '"$STAGE/usr/share/applications/$APP.desktop"' in text
    # One main category of the freedesktop.org menu specification: with two (Development and Science) menus may
    # list the app twice, and desktop-file-validate warns.
    main = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics", "Network", "Office",
            "Science", "Settings", "System", "Utility"}
    assert len([c for c in section["Categories"].split(";") if c in main]) == 1, section["Categories"]
    if shutil.which("desktop-file-validate"):
        done = subprocess.run(["desktop-file-validate", str(DESKTOP_FILE)], capture_output=True, text=True)
        assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


# -- Windows -------------------------------------------------------------------------------------------------


def test_inno_setup_script_installs_the_bundle_the_scripts_build():
    defines = iss_defines()
    assert defines["AppExe"] == CONSTANTS["GUI_EXE"] + ".exe"
    assert defines["CliExe"] == CONSTANTS["CLI_EXE"] + ".exe"
    assert defines["Flavour"] == "cpu"
    # BundleDir = ..\..\dist\<Flavour>\shortgpt-desktop: the folder both build scripts give PyInstaller.
    text = ISS.read_text(encoding="utf-8")
    match = re.search(r'#define\s+BundleDir\s+"([^"]*)"\s*\+\s*Flavour\s*\+\s*"([^"]*)"', text)
    assert match, "BundleDir is not <dist>\\ + Flavour + \\<app>"
    assert from_iss(match.group(1)) == REPO / "dist"
    assert match.group(2).strip("\\") == CONSTANTS["APP_NAME"]
    assert 'Source: "{#BundleDir}\\*"' in text and "recursesubdirs" in text
    windows = WINDOWS.read_text(encoding="utf-8")
    assert '$DistDir = "dist\\$Flavour"' in windows and "$Bundle = Join-Path $DistDir $App" in windows
    assert re.search(r"^\$App = '" + re.escape(CONSTANTS["APP_NAME"]) + "'", windows, re.M)
    assert "packaging\\windows\\shortgpt-desktop.iss" in windows and '"/DAppVersion=$Version"' in windows


def test_inno_setup_script_has_spanning_menu_entry_icon_and_uninstaller():
    setup = iss_setup()
    assert setup["DiskSpanning"].lower() == "yes"
    assert from_iss(setup["OutputDir"]) == REPO / "dist" / "installers"
    assert setup["UninstallDisplayIcon"] == "{app}\\{#AppExe}"
    assert setup["OutputBaseFilename"] == "shortgpt-desktop-{#AppVersion}-windows-x64-{#Flavour}-setup"
    text = ISS.read_text(encoding="utf-8")
    icons = text.split("[Icons]", 1)[1].split("\n[", 1)[0]
    assert 'Name: "{group}\\{#AppName}"; Filename: "{app}\\{#AppExe}"' in icons
    assert "{uninstallexe}" in icons



def test_the_command_line_entry_opens_a_prompt_where_shortgpt_runs():
    """The Start-menu prompt must find ``shortgpt`` when the user types it: nothing else puts the program folder
    on PATH, so the entry did print the help and then answered "'shortgpt' is not recognized". Inno Setup doubles a
    quote inside a quoted value; cmd strips the outer quotes of ``/k "…"`` (more than two quotes in it)."""
    text = ISS.read_text(encoding="utf-8")
    entry = next(line for line in text.splitlines() if line.startswith('Name: "{group}\\{#AppName} command line"'))
    fields = dict(re.findall(r'(\w+): "((?:[^"]|"")*)"', entry))
    assert fields["Filename"] == "{cmd}" and fields["WorkingDir"] == "{userdocs}"
    arguments = fields["Parameters"].replace('""', '"')
    assert arguments.startswith('/k "') and arguments.endswith('"') and arguments.count('"') > 2
    command = arguments[len('/k "'):-1]
    assert command == 'set "PATH={app};%PATH%" && "{#CliExe}" --help', command


def test_windows_script_parses():
    text = WINDOWS.read_text(encoding="utf-8")
    assert "[ValidateSet('cpu', 'cuda')]" in text
    for key in ("check_torch_flavour.py", "check_excludes.py", "smoke_test.py", "shortgpt-desktop.spec"):
        assert key in text
    pwsh = shutil.which("pwsh") or shutil.which("powershell")
    if pwsh is None:
        pytest.skip("no PowerShell here to parse the script")
    command = ("$errors = $null; [System.Management.Automation.Language.Parser]::ParseFile("
               f"'{WINDOWS}', [ref]$null, [ref]$errors) | Out-Null; "
               "if ($errors) { $errors | ForEach-Object { $_.ToString() }; exit 1 }")
    done = subprocess.run([pwsh, "-NoProfile", "-Command", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- CI ------------------------------------------------------------------------------------------------------


def test_workflow_builds_both_systems_and_flavours_and_runs_the_self_test():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    matrix = job["strategy"]["matrix"]
    systems = matrix["os"]
    assert any(s.startswith("ubuntu") for s in systems) and any(s.startswith("windows") for s in systems)
    assert sorted(matrix["flavour"]) == ["cpu", "cuda"]
    steps = job["steps"]
    runs = "\n".join(str(step.get("run", "")) for step in steps)
    assert "packaging/build_linux.sh" in runs and "packaging/build_windows.ps1" in runs
    self_tests = [step for step in steps if "--self-test" in str(step.get("run", ""))]
    linux = [s for s in self_tests if "runner.os == 'Linux'" in str(s.get("if", ""))]
    windows = [s for s in self_tests if "runner.os == 'Windows'" in str(s.get("if", ""))]
    assert linux and windows, "no --self-test of the frozen app on each system"
    for step in linux:
        assert "QT_QPA_PLATFORM=offscreen" in step["run"] or step.get("env", {}).get("QT_QPA_PLATFORM") == "offscreen"
    uploads = [step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "dist/installers" in str(uploads[0]["with"]["path"])
    # the build runs before the self-tests, which run before the upload
    order = [i for i, step in enumerate(steps) if "build_" in str(step.get("run", ""))]
    assert max(order) < min(steps.index(s) for s in self_tests) < steps.index(uploads[0])
    # Built again each week and on a change of the app's code: a library's new release or a new import can break
    # the frozen app though nothing under packaging/ changed (PyYAML reads the key `on` as True).
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["schedule"] and "shortgpt_desktop/**" in triggers["pull_request"]["paths"]


def test_readme_explains_the_installers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "## Installers" in readme
    section = readme.split("## Installers", 1)[1]
    for phrase in ("packaging/build_linux.sh", "build_windows.ps1", "FLAVOUR=cuda", "AppImage", "CPU", "CUDA"):
        assert phrase in section


def test_an_install_over_another_empties_the_bundle_first() -> None:
    """Inno Setup adds and overwrites, never removes: an upgrade, or the CPU build installed over the CUDA build,
    kept the old bundle's files, and torch on Windows loads every DLL in torch\\lib (the CUDA ones too)."""
    text = ISS.read_text(encoding="utf-8")
    assert "\n[InstallDelete]\n" in text
    section = text.split("\n[InstallDelete]\n", 1)[1].split("\n[", 1)[0]
    entries = [line for line in section.splitlines() if line.strip() and not line.lstrip().startswith(";")]
    assert entries == ['Type: filesandordirs; Name: "{app}\\_internal"']
    assert text.index("\n[InstallDelete]\n") < text.index("\n[Files]\n")
