"""Numbers as people read them: bytes, parameter counts, durations, rates. No Qt here."""

from __future__ import annotations

from collections.abc import Sequence

#: The one unit convention for sizes, in both front ends and the README: decimal (SI) units, as disks, the
#: Hugging Face Hub and the GNOME and macOS file managers count: 1 MB = 1,000,000 bytes, 1 GB = 10^9 bytes.
BYTE_UNITS = "kB = 1,000 bytes, MB = 10^6 bytes, GB = 10^9 bytes"


def human_bytes(n: float | None) -> str:
    """``1536`` → ``1.5 kB``; ``435_049_376`` → ``435.0 MB`` (decimal units: :data:`BYTE_UNITS`)."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def unit_of(size: str) -> str:
    """What the unit of a :func:`human_bytes` figure is (``411.6 kB`` → ``kB = 1,000 bytes``): said beside a size
    given in bytes too, the legend names the unit shown (it said "MB = 10^6 bytes" beside a size in kB)."""
    legends = {"kB": "kB = 1,000 bytes", "MB": "MB = 10^6 bytes", "GB": "GB = 10^9 bytes", "TB": "TB = 10^12 bytes"}
    return legends.get(size.rsplit(" ", 1)[-1], "")


def in_number(n: int, word: str, plural: str | None = None) -> str:
    """``word`` in the number of ``n``: ``layer``/``layers``, ``is``/``are`` (``plural`` where it is not word + s)."""
    return word if n == 1 else plural or word + "s"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 layer``, ``3 layers``: a count with its noun in the right number."""
    return f"{n} {in_number(n, noun, plural)}"


def listed(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: items in a sentence ("--prompt and --eval-windows and --eval-text")."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}" if items else ""


def layer_span(first: int, last: int) -> str:
    """``layer 3`` or ``layers 3-5``: a run of layers (it said "layers 3-3" for one)."""
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def human_count(n: float | None) -> str:
    """``287552`` → ``287.6 k``; ``6.7e9`` → ``6.7 B`` (how model sizes are usually quoted)."""
    if n is None:
        return "—"
    value = float(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f}"


def human_seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 90:
        return f"{s:.1f} s"
    minutes, seconds = divmod(int(s), 60)
    if minutes < 90:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def human_rate(bytes_per_second: float) -> str:
    return f"{human_bytes(bytes_per_second)}/s"


def layer_list(indices: Sequence[int], limit: int = 24) -> str:
    """``[3, 4, 5, 9]`` → ``3–5, 9``: compact ranges, cut with an ellipsis past ``limit`` items."""
    if not indices:
        return "none"
    parts: list[str] = []
    ordered = sorted(indices)
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        if start == prev:
            parts.append(str(start))
        else:
            parts.append(f"{start}, {prev}" if prev == start + 1 else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    text = ", ".join(parts)
    if len(parts) > limit:
        text = ", ".join(parts[:limit]) + ", …"
    return text


def change(before: float, after: float) -> str:
    """``(100, 75)`` → ``−25 %``."""
    if not before:
        return ""
    pct = (after - before) / before * 100
    sign = "−" if pct < 0 else "+"
    return f"{sign}{abs(pct):.0f} %"


def time_left(done: int, total: int, elapsed: float, since: int = 0) -> float | None:
    """Seconds left at the pace so far: ``elapsed`` seconds that the stage ran from ``since`` done (bi+'s selection
    resumes at 74 of 92 after the chat answers it waited for: its pace counts the seconds it ran, not the answers'
    ones; :class:`StageClock`). None until one step has been measured, or once done."""
    if total <= 0 or done <= since or done >= total or elapsed <= 0:
        return None
    return elapsed / (done - since) * (total - done)


class StageClock:
    """The seconds a job's current stage has run and the count it started at, for its line and its pace.

    A stage that another one interrupts before it finishes (bi+'s choice waits for the chat answers its repair
    fits on) resumes with its own clock: it counts the seconds it ran, not the other stage's, and does not start
    again at 0 s (its line said "0.0s" and its time left came from the seconds since it resumed). A stage counting
    again from below where it stood, or after it finished, is a new run and starts afresh. Both front ends use it.
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.started = 0.0  # when the stage began, less the seconds it ran before an interruption
        self.since = 0  # the count it began at
        self.done = 0
        self.total = 0
        #: Stages interrupted before they finished: stage → (the seconds it ran, its ``since``, its count).
        self.paused: dict[str, tuple[float, int, int]] = {}

    def reset(self) -> None:
        """A new job: no stage runs, none is interrupted."""
        self.stage, self.done, self.total = None, 0, 0
        self.paused.clear()

    def update(self, stage: str, done: int, total: int, now: float) -> tuple[float, int]:
        """(seconds the stage has run, the count its pace counts from) at this report of ``stage``."""
        was_finished = self.total > 0 and self.done >= self.total
        if stage != self.stage:
            if self.stage is not None and not was_finished:
                self.paused[self.stage] = (now - self.started, self.since, self.done)
            ran, since, stood = self.paused.pop(stage, (0.0, done, 0))
            if done < stood:
                ran, since = 0.0, done
            self.stage, self.started, self.since = stage, now - ran, since
        elif done < self.done:
            self.started, self.since = now, done
        self.done, self.total = done, total
        return now - self.started, self.since


def some_of(names: Sequence[str], shown: int) -> str:
    """``a, b, c and 4 more``: the first ``shown`` names, and how many others."""
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


#: Sentences about files left out that are said one by one; past this many, the rest are counted.
NOTES_SAID = 5


def collapsed(sentences: list[str], keep: int = NOTES_SAID) -> list[str]:
    """``sentences`` with those about files left out ("Skipped …", "Left out …") said ``keep`` at most and the
    rest counted in one: a folder like ``~/Documents`` gave a line for each of its hundreds of binary files, twice.
    Every other sentence is kept."""
    out: list[str] = []
    dropped = 0
    for sentence in sentences:
        about_a_file = sentence.startswith(("Skipped ", "Left out "))
        if about_a_file and sum(s.startswith(("Skipped ", "Left out ")) for s in out) >= keep:
            dropped += 1
        else:
            out.append(sentence)
    if dropped:
        out.append(f"... and {dropped} more file{'s' if dropped != 1 else ''} left out (a --json report lists "
                   "each).")
    return out


def quoted(text: str) -> str:
    """A model's text on one line, in double quotes, its line breaks and quotes escaped as JSON writes them: Python's
    ``repr`` switched to single quotes, or back to double ones where the text held an apostrophe."""
    import json
    import unicodedata

    # JSON escapes only what is below U+0020; a line separator (U+2028), a right-to-left override or an 8-bit
    # control reached the terminal as they are, where repr escaped them. Spaces of other widths, joiners and soft
    # hyphens are text, and stay.
    def moves_the_terminal(ch: str) -> bool:
        return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS

    return "".join(ascii(ch)[1:-1] if moves_the_terminal(ch) else ch
                   for ch in json.dumps(text.strip(), ensure_ascii=False))


#: Characters that reorder the text around them on a terminal (marks, embeddings, overrides, isolates).
_BIDI_CONTROLS = frozenset("\u200e\u200f\u061c" + "".join(map(chr, range(0x202A, 0x202F)))
                           + "".join(map(chr, range(0x2066, 0x206A))))


def shell_word(text: str) -> str:
    """``text`` as one word of a command to paste into this system's shell: quoted where it holds spaces or other
    characters the shell reads (a suggested ``shortgpt eval modèles/smol lm2.gguf --against out/smol none`` ran as
    four paths)."""
    import os
    import shlex

    if os.name == "nt":  # a double-quoted word, as cmd reads it (PowerShell still reads $ and ` inside: said plainly)
        return f'"{text}"' if any(ch in text for ch in ' \t&|<>^()%!;,$`\'@{}#') else text
    return shlex.quote(text)
