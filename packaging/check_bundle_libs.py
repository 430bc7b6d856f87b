"""What a Linux bundle needs from the system, as a Debian Depends line; fails on anything unaccounted for.

    python packaging/check_bundle_libs.py dist/cpu/shortgpt-desktop            # report
    python packaging/check_bundle_libs.py dist/cpu/shortgpt-desktop --depends  # just the Depends value

Every ELF file of the bundle is read with `readelf`: each library it links to (DT_NEEDED) must either be in the
bundle or be a system library listed in SYSTEM_LIBRARIES with the Debian package that provides it. The glibc
version is the highest GLIBC_x.y symbol version any file asks for. An unknown system library stops the build: the
.deb would install but the app would not start on a machine without it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: System libraries the bundle may link to → the Debian/Ubuntu package (alternatives for the t64 renames).
SYSTEM_LIBRARIES = {
    # glibc: never bundled
    "libc.so.6": "libc6", "libm.so.6": "libc6", "libdl.so.2": "libc6", "libpthread.so.0": "libc6",
    "librt.so.1": "libc6", "libresolv.so.2": "libc6", "libutil.so.1": "libc6", "ld-linux-x86-64.so.2": "libc6",
    "libcrypt.so.1": "libcrypt1",
    # the compiler runtime: the system's (at least as new as the build machine's) rather than a bundled copy that
    # would be older than what the system's OpenGL drivers were built against
    "libstdc++.so.6": "libstdc++6", "libgcc_s.so.1": "libgcc-s1",
    # OpenGL/EGL and the display servers: always the system's, they talk to its drivers
    "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1", "libOpenGL.so.0": "libopengl0", "libGLX.so.0": "libglx0",
    "libdrm.so.2": "libdrm2", "libgbm.so.1": "libgbm1",
    "libwayland-client.so.0": "libwayland-client0", "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
    "libxcb.so.1": "libxcb1", "libX11.so.6": "libx11-6", "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    # usually bundled, listed in case a build machine lacks them (PyInstaller then leaves them to the system)
    "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0t64 | libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0t64 | libglib2.0-0",
    "libz.so.1": "zlib1g",
}
#: Libraries of the NVIDIA driver (CUDA flavour): present wherever the driver is installed, packaged differently by
#: every distribution, so they are reported but not made a dependency.
DRIVER_LIBRARIES = {"libcuda.so.1", "libnvidia-ml.so.1"}
#: libxcb-<name>.so.<n> → libxcb-<name><n> (libxcb-icccm.so.4 → libxcb-icccm4), the Debian naming rule.
XCB = re.compile(r"^libxcb-([a-z0-9-]+)\.so\.(\d+)$")
#: Always required, whatever the files say: fonts (the bundled fontconfig reads the system's configuration).
EXTRA = ["libfontconfig1"]


def elf_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def readelf(path: Path, *options: str) -> str:
    return subprocess.run(["readelf", "--wide", *options, str(path)], capture_output=True, text=True,
                          check=False).stdout


def debian_package(soname: str) -> str | None:
    if soname in SYSTEM_LIBRARIES:
        return SYSTEM_LIBRARIES[soname]
    match = XCB.match(soname)
    return f"libxcb-{match.group(1)}{match.group(2)}" if match else None


def analyse(folder: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    """(system library → files needing it, unknown library → files, highest GLIBC version)."""
    files = elf_files(folder)
    in_bundle = {p.name for p in folder.rglob("*")}
    system: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    driver: dict[str, list[str]] = {}
    glibc = (0, 0)
    for path in files:
        dynamic = readelf(path, "--dynamic")
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
            if soname in in_bundle:
                continue
            if soname in DRIVER_LIBRARIES:
                driver.setdefault(soname, []).append(str(path.relative_to(folder)))
                continue
            target = system if debian_package(soname) else unknown
            target.setdefault(soname, []).append(str(path.relative_to(folder)))
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", readelf(path, "--version-info")):
            glibc = max(glibc, (int(major), int(minor)))
    for soname, users in sorted(driver.items()):
        print(f"{soname} comes with the NVIDIA driver (needed by {len(users)} files, e.g. {users[0]})",
              file=sys.stderr)
    return system, unknown, f"{glibc[0]}.{glibc[1]}"


def depends(system: dict[str, list[str]], glibc: str) -> str:
    packages = sorted({debian_package(soname) for soname in system} | set(EXTRA) | {"libc6"})
    return ", ".join(f"libc6 (>= {glibc})" if p == "libc6" else p for p in packages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--depends", action="store_true", help="print only the Depends value")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        parser.error("Linux bundles only")
    if shutil.which("readelf") is None:
        parser.error("readelf (binutils) is needed")
    system, unknown, glibc = analyse(args.bundle)
    if unknown:
        for soname, users in sorted(unknown.items()):
            print(f"unknown system library {soname}, needed by {', '.join(users[:3])}", file=sys.stderr)
        print("add it to SYSTEM_LIBRARIES in packaging/check_bundle_libs.py (with its Debian package), "
              "or make sure the build bundles it", file=sys.stderr)
        return 1
    if args.depends:
        print(depends(system, glibc))
        return 0
    for soname, users in sorted(system.items()):
        print(f"{soname:28} {debian_package(soname):34} {len(users):3} files, e.g. {users[0]}")
    print(f"glibc >= {glibc}")
    print(f"Depends: {depends(system, glibc)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")  # readelf's wording
    raise SystemExit(main())
