"""``shortgpt-desktop``: open the window, or run the self-test, or render a screenshot.

Qt is imported inside :func:`main` and torch/transformers only inside worker jobs, so the window appears
before the heavy libraries load; ``--measure-startup`` prints how long that takes.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # first thing: the launch-to-shown clock starts here (plus interpreter start-up)

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from . import __version__  # noqa: E402
from .console import tolerant_console  # noqa: E402
from .gui.application import make_app  # noqa: E402


def _interpreter_age() -> float:
    """Seconds between process start and now, where the OS tells (Linux); else 0."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


_AGE_AT_T0 = _interpreter_age()


class _Parser(argparse.ArgumentParser):
    """argparse that says a bad argument in one line, exit code 2, as the command line does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


#: Each side of a ``--screenshot`` window, in pixels: the window's least size, and a picture of at most 256 MB.
SIZE_RANGE = (100, 8192)


def _window_size(text: str) -> tuple[int, int]:
    """``1280x720`` → (1280, 720); anything else is refused before the window is built."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", text)
    low, high = SIZE_RANGE
    if match is None or not all(low <= int(side) <= high for side in match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a window size like 1280x720 (each side {low} to {high} "
                                         "pixels)")
    return int(match[1]), int(match[2])


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a share of the layers from 0 to 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 1,000,000")
    return value


#: The groups the window keeps its settings in (``gui.settings_store``): an existing ``--settings-file`` holds one.
SETTINGS_GROUPS = ("calibration", "chart", "compare", "job", "models", "save", "window")


def _settings_file(text: str) -> str:
    if not text.strip():  # "" was taken as no file: the user's own settings, which a test run must not touch
        raise argparse.ArgumentTypeError("an empty name; give a file or leave the option out")
    why = not_a_settings_file(Path(text))
    if why is not None:
        raise argparse.ArgumentTypeError(f"{text} {why}; give a new file name or a settings file of this window")
    return text


def not_a_settings_file(path: Path) -> str | None:
    """Why the window may not keep its settings in ``path`` (None: it is new, empty, or settings the window wrote).
    Qt writes the settings file anew on closing: a model's ``tokenizer.json`` or a read-only file of notes given
    here was replaced without a word."""
    if not path.exists():
        return None
    if not path.is_file():
        return "is not a regular file"
    from .core.user_paths import os_reason, read_only

    if read_only(path):
        return "is read-only"
    try:
        with path.open("rb") as stream:
            head = stream.read(1 << 16).decode("utf-8", errors="replace")
    except OSError as exc:
        return f"cannot be read ({os_reason(exc)})"
    groups = re.findall(r"^\[([^\]\r\n]+)\]\s*$", head, flags=re.MULTILINE)
    if head.strip() and not set(groups) & set(SETTINGS_GROUPS):
        return "is not a settings file of this window, and the window would replace it"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        prog="shortgpt-desktop",
        description="Shrink a language model by deleting its most redundant layers, in a desktop window.",
    )
    parser.add_argument("model", nargs="?", help="a Hub id, a model folder or a .gguf file to open")
    parser.add_argument("--calib", nargs="+", metavar="PATH", help="calibration text files or folders "
                        "(default: the last ones used, or the built-in corpus)")
    parser.add_argument("--screenshot", metavar="OUT.png",
                        help="open MODEL with --calib, score, render the window to this PNG and exit")
    parser.add_argument("--check", action="store_true",
                        help="with --screenshot: also check perplexity before taking the picture")
    parser.add_argument("--ratio", type=_share, help="with --screenshot: the share of layers to remove")
    parser.add_argument("--samples", type=_count, help="calibration samples (overrides the saved setting)")
    parser.add_argument("--seq-len", type=_count, help="tokens per sample (overrides the saved setting)")
    parser.add_argument("--size", type=_window_size, default=(1280, 720),
                        help="with --screenshot: window size (default 1280x720)")
    parser.add_argument("--self-test", action="store_true",
                        help="run the whole flow offscreen on a tiny model built on the fly; "
                        "exit 0 if every step works")
    parser.add_argument("--settings-file", metavar="PATH", type=_settings_file,
                        help="keep settings in this INI file instead of the user's settings")
    parser.add_argument("--measure-startup", action="store_true",
                        help="print the time from launch to the window being shown, then exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _say(text: str) -> None:
    """Print where there is a console (a GUI-subsystem build on Windows has no stdout)."""
    if sys.stdout is not None:
        print(text, flush=True)


def _warn(text: str) -> None:
    """Print to stderr, or stdout where a windowed program has no stderr (None)."""
    print(text, file=sys.stderr if sys.stderr is not None else sys.stdout)


def _no_display() -> bool:
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or _wayland_socket()
    return sys.platform.startswith("linux") and not display


def _wayland_socket() -> bool:
    """A Wayland session's compositor socket in its runtime folder: where XDG_SESSION_TYPE is ``wayland`` Qt
    connects to ``wayland-0`` there though WAYLAND_DISPLAY is not set, so such a session has a display. Elsewhere
    (``tty`` over SSH, or unset) Qt opens X11 whatever the folder holds: an SSH login to a machine whose desktop
    session left its socket in the user's runtime folder has no display (seen with PySide6 6.11)."""
    # wayland-0 only: libwayland's default name, the one Qt tries; wayland-1 or a leftover wayland-0.lock are not it
    return os.environ.get("XDG_SESSION_TYPE") == "wayland" and _socket_there("wayland-0")


#: Said where the window has nowhere to open (an SSH session, a server): Qt aborted (exit 134) with a message that
#: blamed a missing libxcb-cursor0, which was installed.
NO_DISPLAY = ("There is no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set): start it in a "
              "desktop session, or over ssh -X; the command line, shortgpt, needs none.")


def _no_display_to_open() -> str | None:
    """:data:`NO_DISPLAY` where the window would open on X11 or Wayland and neither is there (a platform chosen with
    QT_QPA_PLATFORM, such as offscreen or vnc, is Qt's to open); the same where WAYLAND_DISPLAY names a socket that
    is not there and DISPLAY is not set (a variable left from another session: Qt aborted, exit 134)."""
    if os.environ.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return None
    if _no_display():
        return NO_DISPLAY
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland and not os.environ.get("DISPLAY") and not _wayland_socket() and not _socket_there(wayland):
        return (f"There is no display to open the window on: WAYLAND_DISPLAY names {wayland}, which is not there, "
                "and DISPLAY is not set. Start it in a desktop session, or over ssh -X; the command line, shortgpt, "
                "needs none.")
    return None


def _socket_there(wayland: str) -> bool:
    """Whether the Wayland socket ``wayland`` (a name in XDG_RUNTIME_DIR, or a path) is there."""
    if os.path.isabs(wayland):
        return Path(wayland).exists()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return bool(runtime) and (Path(runtime) / wayland).exists()


#: Seconds the X display's probe waits: a display on a host that drops packets hangs in connect() for minutes (Qt
#: would hang alike; past this the window is left to try).
DISPLAY_PROBE_SECONDS = 5.0


def unreachable_x_display() -> str | None:
    """The sentence for an X display that is set but cannot be connected to, where Qt would open X11 on it; else None.

    DISPLAY set with nothing answering (``ssh -X`` from a computer without an X server, stale forwarding, ``sudo``
    without the X authority) made Qt abort (exit 134) with a message that blamed libxcb-cursor0, installed or not (a
    walkthrough). The probe connects as Qt's xcb plugin does, through libxcb, and lets go at once; where libxcb is
    not there, :func:`missing_xcb_libraries` says so instead."""
    display = os.environ.get("DISPLAY")
    if not display or not _platform_is_xcb():
        return None
    import ctypes
    import threading

    xcb = None
    # the system's, else the frozen bundle's own copy (the installers carry the xcb libraries Qt links)
    bundled = getattr(sys, "_MEIPASS", None)
    for name in ["libxcb.so.1"] + ([os.path.join(bundled, "libxcb.so.1")] if bundled else []):
        try:
            xcb = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if xcb is None:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    error: list[int] = []

    def probe() -> None:  # ctypes lets the GIL go while libxcb connects
        connection = xcb.xcb_connect(None, None)
        error.append(int(xcb.xcb_connection_has_error(connection)))
        xcb.xcb_disconnect(connection)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(DISPLAY_PROBE_SECONDS)
    if not error or error[0] == 0:  # connected, or still trying: Qt's to open
        return None
    return (f"The window cannot connect to the X display {display} (DISPLAY): no X server answers there, or this "
            "user may not use it. Over ssh -X, run an X server on the computer you connect from; the command line, "
            "shortgpt, needs no display.")


#: What Qt's xcb platform plugin (PySide6/Qt/plugins/platforms/libqxcb.so and libQt6XcbQpa.so.6) links
#: against, by ``ldd``, with the Debian/Ubuntu package of each. Without one of them Qt aborts (rc 134) with a
#: message that names libxcb-cursor0 whatever is missing.
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


def _library_loads(soname: str) -> bool:
    """Whether the dynamic loader finds ``soname`` (as Qt's plugin will look for it)."""
    import ctypes

    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _platform_is_xcb() -> bool:
    """Whether Qt will try its xcb (X11) plugin first: on Linux, asked for, or by default outside Wayland."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = os.environ.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return chosen.split(";")[0].split(":")[0] == "xcb"
    return not (os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland")


def missing_xcb_libraries() -> str | None:
    """One sentence naming the X11 libraries Qt's xcb plugin needs but cannot find, with the apt line to
    install them; None when nothing is missing or xcb will not be used."""
    if not _platform_is_xcb():
        return None
    missing = [name for name in XCB_LIBRARIES if not _library_loads(name)]
    if not missing:
        return None
    from .format import in_number

    packages = " ".join(XCB_LIBRARIES[name] for name in missing)
    return (f"The window cannot open: Qt's X11 (xcb) plugin needs {', '.join(missing)}, which "
            f"{in_number(len(missing), 'is', 'are')} not installed; on Debian or Ubuntu run "
            f"`sudo apt install {packages}` and start again.")


def _missing_calibration(paths: list[str]) -> str | None:
    """The sentence for a ``--calib`` path that is not there (the window's list would leave it out unsaid)."""
    from .core.measure.calibration import BUILTIN_CORPUS
    from .core.user_paths import exists, not_there

    missing = [p for p in paths if p != BUILTIN_CORPUS and not exists(p)]
    if not missing:
        return None
    return f"The calibration path {missing[0]} {not_there(missing[0])}."


def _unwritable_picture(out: Path) -> str | None:
    """Why the ``--screenshot`` picture could not be written, said before the model is opened and scored (it was
    found after the whole run, or the run waited for its 30-minute time-out)."""
    from PySide6.QtGui import QImageWriter

    from .core.user_paths import os_reason

    formats = {bytes(f).decode().lower() for f in QImageWriter.supportedImageFormats()}
    if out.suffix.lower().lstrip(".") not in formats:
        return f"--screenshot cannot write a {out.suffix or 'nameless'} picture; name it .png."
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        return f"--screenshot cannot write {out} ({blocking} is a file, not a folder)."
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--screenshot cannot write {out} ({os_reason(exc)})."
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        return f"--screenshot cannot write {out} ({'a folder' if out.is_dir() else 'permission denied'})."
    return None


def settings_for(args: argparse.Namespace) -> tuple[object, tempfile.TemporaryDirectory | None]:
    """The QSettings the window keeps its state in, and the scratch folder to delete on exit (if any).

    ``--settings-file`` names an INI file. A screenshot run (which resizes the window, overrides samples and
    calibration) gets a throwaway INI in a temporary folder, so it never touches the user's saved settings.
    None means the user's own store.
    """
    from PySide6.QtCore import QSettings

    if args.settings_file:
        return QSettings(args.settings_file, QSettings.Format.IniFormat), None
    if args.screenshot or args.measure_startup:
        scratch = tempfile.TemporaryDirectory(prefix="shortgpt-desktop-settings-")
        return QSettings(str(Path(scratch.name) / "settings.ini"), QSettings.Format.IniFormat), scratch
    return None, None


@contextmanager
def closed_by_signals(window: Any) -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGBREAK close ``window`` as its close button does, without the question
    (``stop_and_close``): a running save was killed where it stood and left its partial folder. Python runs a handler
    only between bytecodes and Qt's idle event loop runs none, so a timer wakes the interpreter; the handlers that were
    there come back after."""
    from PySide6.QtCore import QTimer

    from .stop_signals import on_stop_signals

    waker = QTimer()
    waker.timeout.connect(lambda: None)
    waker.start(250)
    try:
        with on_stop_signals(lambda *_: window.stop_and_close()):
            yield
    finally:
        waker.stop()


def main(argv: list[str] | None = None) -> int:
    tolerant_console()  # paths and messages in any script, on a console or a file in a legacy encoding
    args = parse_args(argv)
    from .core.model.loading import quiet_library_progress

    quiet_library_progress()  # the window shows progress; stderr stays readable
    if args.self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from .gui.selftest import run_self_test

        return run_self_test()
    if (args.screenshot or args.measure_startup) and (_no_display() or unreachable_x_display()):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a picture needs no screen (nor one that answers)
    if args.screenshot and not args.model:
        _say("--screenshot needs a MODEL to open.")
        return 2
    problem = (_missing_calibration(args.calib or []) or _no_display_to_open() or missing_xcb_libraries()
               or unreachable_x_display())
    if problem:
        _warn(problem)
        return 2

    app = make_app()
    if args.screenshot:
        problem = _unwritable_picture(Path(os.path.abspath(args.screenshot)))
        if problem:
            _say(problem)
            return 2
    from PySide6.QtCore import QTimer

    from .core.measure.calibration import BUILTIN_CORPUS
    from .core.user_paths import expand_home
    from .gui.main_window import MainWindow
    from .gui.workers import wait_all

    settings, scratch = settings_for(args)
    window = MainWindow(settings)
    overrides = {k: v for k, v in (("samples", args.samples), ("seq_len", args.seq_len)) if v}
    if overrides:
        window.settings_panel.set_values({**window.settings_panel.values(), **overrides, "sizes_chosen": True})
        if window.settings_panel.out_of_range:  # --seq-len 99999 became 32,768 without a word
            _warn("note: the window's sizes do not go so far: " + ", ".join(window.settings_panel.out_of_range) + ".")
    if args.calib:
        window.calibration_panel.set_sources(
            [p if p == BUILTIN_CORPUS else os.path.abspath(expand_home(p)) for p in args.calib])

    rc = {"code": 0}
    #: Whether torch was in by the time the window was shown, read as show() returns: read in the first event-loop
    #: turn, the device probe's thread (started in that turn) had begun importing it on a loaded machine (CI).
    torch_at_show = {"in": False}
    if args.measure_startup:
        def shown() -> None:
            since_main = time.perf_counter() - _T0
            _say(f"window shown {since_main + _AGE_AT_T0:.3f} s after process start "
                 f"({since_main:.3f} s after the first import of shortgpt_desktop.app); "
                 f"torch imported: {torch_at_show['in']}")
            window.close()

        QTimer.singleShot(0, shown)
    elif args.screenshot:
        from .gui.screenshot import ScreenshotRun

        runner = ScreenshotRun(window, args.model, Path(args.screenshot), ratio=args.ratio, check=args.check,
                               size=args.size)
        runner.done.connect(lambda code: rc.update(code=code))
        QTimer.singleShot(0, runner.start)
    elif args.model:
        QTimer.singleShot(0, lambda: window.open_model(args.model))
    else:
        QTimer.singleShot(0, window.reopen_last_model)
    window.show()
    torch_at_show["in"] = "torch" in sys.modules
    with closed_by_signals(window):
        code = app.exec()
    wait_all()
    if scratch is not None:
        scratch.cleanup()
    return rc["code"] or code


if __name__ == "__main__":
    raise SystemExit(main())
