#!/usr/bin/env bash
# Build the Linux installers of ShortGPT Desktop in one go:
#   dist/<flavour>/shortgpt-desktop/                                  the onedir bundle (PyInstaller)
#   dist/installers/shortgpt-desktop-<version>-linux-x86_64-<flavour>.tar.gz
#   dist/installers/shortgpt-desktop[-cuda]_<version>_amd64.deb      (dpkg-deb; /opt, /usr/bin, menu entry, icon)
#
# Usage:  packaging/build_linux.sh [--reuse-venv] [--package-only] [--skip-smoke]
#   --reuse-venv     keep build/venv-<flavour> if it is there (default: make it anew)
#   --package-only   skip the venv and PyInstaller; package the existing dist/<flavour>/shortgpt-desktop
#   --skip-smoke     do not run packaging/smoke_test.py on the bundle
#
# Environment:
#   FLAVOUR=cpu|cuda   which torch goes into the build venv (default cpu: small, runs everywhere)
#   TORCH_VERSION      default 2.13.0
#   TORCH_INDEX_URL    where torch comes from. Default: the PyTorch CPU index for cpu, PyPI for cuda (PyPI's Linux
#                      torch is the CUDA build). Set it empty to use pip's configured index (e.g. a local wheel).
#   PYTHON             the Python that makes the build venv (default python3; it needs a shared libpython)
#   DEB_COMPRESSION    dpkg-deb compressor: xz (default: the smallest .deb, but about 10 minutes on 2 cores),
#                      zstd (far faster, a larger .deb; dpkg >= 1.21.18 or Ubuntu >= 21.10), gzip
#
# An AppImage is not built: that needs appimagetool and the AppImage runtime, which come from GitHub releases, not
# from PyPI or Debian (see README, "Installers").
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

REUSE_VENV=0
PACKAGE_ONLY=0
SKIP_SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --reuse-venv) REUSE_VENV=1 ;;
        --package-only) PACKAGE_ONLY=1 ;;
        --skip-smoke) SKIP_SMOKE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

FLAVOUR="${FLAVOUR:-cpu}"
case "$FLAVOUR" in
    cpu) DEFAULT_INDEX="https://download.pytorch.org/whl/cpu" ;;
    cuda) DEFAULT_INDEX="" ;;
    *) echo "FLAVOUR must be cpu or cuda, not '$FLAVOUR'" >&2; exit 2 ;;
esac
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-$DEFAULT_INDEX}"
PYTHON="${PYTHON:-python3}"
DEB_COMPRESSION="${DEB_COMPRESSION:-xz}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
unset PYTHONPATH PYTHONHOME

APP=shortgpt-desktop                       # = APP_NAME in the spec: the bundle folder and the .deb's /opt folder
SPEC=packaging/shortgpt-desktop.spec
VENV="build/venv-$FLAVOUR"
DISTDIR="dist/$FLAVOUR"
BUNDLE="$DISTDIR/$APP"
OUT=dist/installers
VERSION="$("$PYTHON" packaging/speclib.py version)"
GUI_EXE="$("$PYTHON" packaging/speclib.py GUI_EXE)"
CLI_EXE="$("$PYTHON" packaging/speclib.py CLI_EXE)"
ARCH="$(uname -m)"                                             # x86_64
DEB_ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
if [ "$FLAVOUR" = cpu ]; then DEB_NAME="$APP"; OTHER_DEB="$APP-cuda"; else DEB_NAME="$APP-cuda"; OTHER_DEB="$APP"; fi
TARBALL="$OUT/$APP-$VERSION-linux-$ARCH-$FLAVOUR.tar.gz"
DEB="$OUT/${DEB_NAME}_${VERSION}_${DEB_ARCH}.deb"

START=$SECONDS
stage() { echo; echo "=== [$((SECONDS - START)) s] $*"; }

# The venv: the chosen torch first (a plain `pip install torch` on Linux is the CUDA build), then the project
# itself, not editable, with PyInstaller (the `build` extra).
if [ "$PACKAGE_ONLY" = 0 ]; then
    if [ "$REUSE_VENV" = 1 ] && [ -x "$VENV/bin/python" ]; then
        stage "reusing $VENV"
    else
        stage "build venv $VENV ($FLAVOUR, torch $TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL})"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        if [ -n "$TORCH_INDEX_URL" ]; then
            "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
        else
            "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
        fi
    fi
    # setuptools builds the wheel in the checkout's build/lib and never empties it: a module deleted since the last
    # build would be installed, and bundled, again
    rm -rf build/lib build/bdist.*
    "$VENV/bin/python" -m pip install --quiet ".[build]"
    "$VENV/bin/python" packaging/check_torch_flavour.py "$FLAVOUR"

    stage "self-test with the spec's excludes blocked (before the long build)"
    QT_QPA_PLATFORM=offscreen "$VENV/bin/python" packaging/check_excludes.py

    stage "PyInstaller: $SPEC -> $BUNDLE"
    rm -rf "$BUNDLE"
    "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
        --distpath "$DISTDIR" --workpath "build/pyinstaller-$FLAVOUR" "$SPEC"
fi

[ -x "$BUNDLE/$GUI_EXE" ] && [ -x "$BUNDLE/$CLI_EXE" ] || { echo "no bundle at $BUNDLE" >&2; exit 1; }

if [ "$SKIP_SMOKE" = 0 ]; then
    stage "smoke test of the frozen programs"
    SMOKE_PY="$VENV/bin/python"
    [ -x "$SMOKE_PY" ] || SMOKE_PY="$PYTHON"
    QT_QPA_PLATFORM=offscreen "$SMOKE_PY" packaging/smoke_test.py "$BUNDLE"
fi

stage "libraries the bundle needs from the system"
"$PYTHON" packaging/check_bundle_libs.py "$BUNDLE"

mkdir -p "$OUT"

stage "tarball $TARBALL"
if command -v pigz >/dev/null; then GZ="pigz -6"; else GZ="gzip -6"; fi
tar -C "$DISTDIR" --sort=name --owner=0 --group=0 --numeric-owner -cf - "$APP" | $GZ > "$TARBALL.part"
mv "$TARBALL.part" "$TARBALL"

stage "Debian package $DEB"
STAGE="build/deb-$FLAVOUR"
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/doc/$DEB_NAME"
cp -a "$BUNDLE" "$STAGE/opt/$APP"
# Relative links: they work once installed and in a folder the package is unpacked into (dpkg -x).
ln -s "../../opt/$APP/$GUI_EXE" "$STAGE/usr/bin/$GUI_EXE"
ln -s "../../opt/$APP/$CLI_EXE" "$STAGE/usr/bin/$CLI_EXE"
if [ -f resources/shortgpt-desktop.desktop ]; then
    install -m 0644 resources/shortgpt-desktop.desktop "$STAGE/usr/share/applications/$APP.desktop"
else
    echo "WARNING: resources/shortgpt-desktop.desktop is missing: no menu entry" >&2
fi
if [ -f resources/icon.png ]; then
    SIZE="$("$PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]))' resources/icon.png)"
    mkdir -p "$STAGE/usr/share/icons/hicolor/$SIZE/apps"
    install -m 0644 resources/icon.png "$STAGE/usr/share/icons/hicolor/$SIZE/apps/$APP.png"
fi
if [ -f resources/icon.svg ]; then
    mkdir -p "$STAGE/usr/share/icons/hicolor/scalable/apps"
    install -m 0644 resources/icon.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/$APP.svg"
fi
cat > "$STAGE/usr/share/doc/$DEB_NAME/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ShortGPT Desktop
Comment: /opt/$APP bundles Python, PyTorch, transformers, Qt (PySide6) and their dependencies, each under its own
 licence (their licence texts are in /opt/$APP/_internal/LICENSES: ShortGPT Desktop's, Qt's LGPL-3.0 and
 GPL-3.0, Python's, and each Python distribution's own).

Files: *
Copyright: ShortGPT Desktop contributors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
# What the bundle takes from the system (glibc, OpenGL/EGL, X11/xcb, Wayland, the C++ runtime, fonts), read from
# the bundle's own files: an unknown system library stops the build here rather than on the user's machine.
DEB_DEPENDS="$("$PYTHON" packaging/check_bundle_libs.py --depends "$BUNDLE")"
if [ "$FLAVOUR" = cpu ]; then
    DESCRIPTION_FLAVOUR="CPU build: runs on any x86-64 machine, no GPU needed."
else
    DESCRIPTION_FLAVOUR="CUDA build: uses an NVIDIA GPU (needs the NVIDIA driver), falls back to the CPU."
fi
cat > "$STAGE/DEBIAN/control" <<EOF
Package: $DEB_NAME
Version: $VERSION
Architecture: $DEB_ARCH
Maintainer: ShortGPT Desktop contributors <noreply@shortgpt-desktop.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $DEB_DEPENDS
Conflicts: $OTHER_DEB
Replaces: $OTHER_DEB
Section: science
Priority: optional
Description: shrink a language model by deleting its most redundant layers
 ShortGPT Desktop scores each decoder layer of a causal language model by Block
 Influence (ShortGPT) on your own text, removes the least important ones and
 saves a normal Hugging Face model. A desktop window (shortgpt-desktop) and a
 command line (shortgpt).
 .
 $DESCRIPTION_FLAVOUR
EOF
chmod 0755 "$STAGE/DEBIAN"
chmod 0644 "$STAGE/DEBIAN/control"
dpkg-deb --root-owner-group -Z"$DEB_COMPRESSION" --build "$STAGE" "$DEB.part" >/dev/null
mv "$DEB.part" "$DEB"
dpkg-deb --info "$DEB" | sed -n '1,12p'

stage "done in $((SECONDS - START)) s"
du -sh "$BUNDLE"
ls -l "$TARBALL" "$DEB"
