"""The standard streams as both front ends write to them. No Qt, no torch: the window imports it at start."""

from __future__ import annotations

import sys


def tolerant_console() -> None:
    """Let stdout and stderr write any character: a Windows console or a file in cp1252 raised UnicodeEncodeError on
    generated text, CJK paths, the help's '−'. Where one is missing (a windowed program on Windows), nothing."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
