#!/usr/bin/env bash
# Install a built .deb where nothing else of the project is, and run the frozen app's self-test from there.
#
# Usage:  packaging/test_deb.sh DEB [--chroot DIR]
#
#   (default)      dpkg -x into an empty folder; run <folder>/usr/bin/shortgpt-desktop --self-test and
#                  <folder>/usr/bin/shortgpt --version (libraries of this machine, nothing of any venv).
#   --chroot DIR   a minimal Debian made with `debootstrap --variant=minbase bookworm DIR` (root, network to
#                  the Debian archive): `apt-get install ./the.deb` inside it pulls exactly the package's Depends,
#                  then the self-test runs there. This is what proves the Depends line.
set -euo pipefail

DEB="${1:?usage: test_deb.sh DEB [--chroot DIR]}"
DEB="$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")"
MODE=extract
if [ "${2:-}" = --chroot ]; then MODE=chroot; ROOT="${3:?--chroot needs a folder}"; fi

unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1

if [ "$MODE" = extract ]; then
    ROOT="$(mktemp -d)"
    trap 'rm -rf "$ROOT"' EXIT
    dpkg -x "$DEB" "$ROOT"
    echo "unpacked into $ROOT: $(du -sh "$ROOT" | cut -f1)"
    ls -l "$ROOT/usr/bin"
    # the links are relative, so they lead into $ROOT/opt, not to an /opt of this machine
    env -i PATH=/usr/bin:/bin HOME="$ROOT/home" LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 \
        "$ROOT/usr/bin/shortgpt-desktop" --self-test
    env -i PATH=/usr/bin:/bin HOME="$ROOT/home" "$ROOT/usr/bin/shortgpt" --version
    echo "self-test passed from the unpacked .deb"
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "--chroot needs root" >&2; exit 1; }
[ -x "$ROOT/usr/bin/apt-get" ] || { echo "$ROOT is not a Debian root (debootstrap it first)" >&2; exit 1; }
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$DEB" "$ROOT/tmp/"
mounted=0
if mount -t proc proc "$ROOT/proc" 2>/dev/null; then mounted=1; fi
cleanup() {
    if [ "$mounted" = 1 ]; then umount "$ROOT/proc"; fi
    rm -f "$ROOT/tmp/$(basename "$DEB")"
}
trap cleanup EXIT
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$DEB")"
in_root dpkg -L "$(dpkg-deb -f "$DEB" Package)" | grep -v '^/opt/' || true
in_root shortgpt-desktop --self-test
in_root shortgpt --version
echo "self-test passed in the chroot $ROOT"
