"""Room on a disk, asked before a long job writes to it (a Hub download, a pruned model): a job that would fill the
disk is refused in one sentence before it starts, not after it has run."""

from __future__ import annotations

import shutil
from pathlib import Path

from .user_paths import expand_home


def nearest_existing(path: str | Path) -> Path:
    """``path`` if it exists, else its nearest existing parent: where a folder not made yet will be made."""
    probe = expand_home(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: str | Path) -> int | None:
    """Bytes free on the disk that holds ``path`` (or would hold it); None where the system does not say."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None

