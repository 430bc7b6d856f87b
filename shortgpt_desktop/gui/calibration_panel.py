"""Calibration text: a drop zone for files and folders with sizes and token estimates; the built-in corpus."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeyEvent,
    QPainter,
    QPaintEvent,
    QPalette,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import CalibrationError
from ..core.measure.calibration import (
    BUILTIN_CORPUS,
    BUILTIN_TOKENS_ESTIMATE,
    CHARS_PER_TOKEN,
    SAMPLES_SHORT,
    TEXT_SUFFIXES,
    collect_files,
    format_note,
    read_texts,
    size_of,
    sniff,
    text_files,
)
from ..core.user_paths import expand_home, name_not_utf8, not_there
from ..format import human_bytes, human_count
from .elided_label import ElidedLabel

#: Sources up to this size are read when added, so that what the engine would leave out (binary or empty
#: files, JSON lines without text) shows at once; bigger ones have only their files' first bytes read (binary
#: files are still said at once), and what else a scoring leaves out is reported after it.
CHECK_BYTES = 16 * 1024 * 1024


def describe_path(path: str) -> tuple[int, int, int]:
    """(bytes, text files, token estimate) of a file or folder; only files whose content may be text count."""
    files = text_files(path)
    size = sum(f.stat().st_size for f in files)
    return size, len(files), int(size / CHARS_PER_TOKEN)


def _why_no_text(folder: Path) -> str | None:
    """Why a folder gives no text files: the models this app saved in it, left out as the job leaves them out (it
    said "every file in it is binary or unreadable" of a folder of saved models, whose cards and configs are
    text), else its files' kinds; None where it holds no file at all."""
    left_out: list[str] = []
    try:
        collect_files([folder], left_out)
    except (OSError, CalibrationError):
        left_out = []
    saved = [s for s in left_out if s.startswith("Left out ")]
    if saved:
        return "; ".join(s.removeprefix("Left out ").rstrip(".") for s in saved).replace(": it holds", " holds")
    try:
        if not any(p.is_file() for p in folder.rglob("*")):  # it said "every file in it is binary" of no file at all
            return None
    except OSError:
        pass
    return "every file in it is binary, hidden or unreadable"


def binary_files(path: str | Path) -> list[str]:
    """One sentence per file of ``path`` that is not text, from its first bytes only (cheap on big folders)."""
    sentences: list[str] = []
    files = collect_files([path], sentences)  # what it leaves out, as the job says it (read_texts)
    for file in files:
        try:
            kind = sniff(file)
        except OSError as exc:
            sentences.append(f"Skipped {file}: {exc.strerror or exc}.")
            continue
        if kind is not None:
            sentences.append(f"Skipped {file}: it is {kind}, not text.")
    return sentences


class DropList(QTreeWidget):
    """The list itself: accepts dropped files and folders, Delete removes the selection."""

    pathsDropped = Signal(list)
    deletePressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)
        self.setRootIsDecorated(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setHeaderLabels(["File or folder", "Size", "≈ Tokens"])
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.setMinimumHeight(90)

    @staticmethod
    def _local_paths(event: QDropEvent | QDragEnterEvent | QDragMoveEvent) -> list[str]:
        mime = event.mimeData()
        if not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._local_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if self._local_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = self._local_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.pathsDropped.emit(paths)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.deletePressed.emit()
            return
        super().keyPressEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.topLevelItemCount():
            return
        painter = QPainter(self.viewport())
        painter.setPen(self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
        painter.drawText(self.viewport().rect().adjusted(8, 8, -8, -8),
                         Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                         "Drop text files or folders here\n(prose, code, notebooks, JSON Lines…;\n"
                         "binary files are left out)")
        painter.end()


def looks_like_a_model(path: Path) -> bool:
    """A ``.gguf`` file, or a folder with a ``config.json`` and weights: a model dropped on the wrong list."""
    if path.is_file():
        return path.suffix.lower() == ".gguf"
    try:
        return (path / "config.json").is_file() and any(
            next(path.glob(pattern), None) is not None for pattern in ("*.safetensors", "*.bin", "*.gguf"))
    except OSError:
        return False


#: The item data role (column 0) that holds whether reading the entry found text in it.
GIVES_TEXT = Qt.ItemDataRole.UserRole + 1


def _gives_text(item: QTreeWidgetItem) -> bool:
    return bool(item.data(0, GIVES_TEXT))


def _resolved(path: Path) -> str:
    """``path`` with its links followed, or as given where they loop (resolve() raises RuntimeError there)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


class CalibrationPanel(QGroupBox):
    """Emits :attr:`changed` whenever the set of calibration sources changes."""

    changed = Signal()
    problem = Signal(str)  # a path that cannot be used, as a sentence

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Calibration text", parent)
        self.list = DropList(self)
        self.list.pathsDropped.connect(self.add_paths)
        self.list.deletePressed.connect(self.remove_selected)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.add_files_button = QPushButton("Add files…", self)
        self.add_files_button.setToolTip("Add text files (.txt, .md, .json, .jsonl…) to calibrate on; or drop them on "
                                         "the list (Ctrl+T)")
        self.add_files_button.clicked.connect(self.browse_files)
        self.add_folder_button = QPushButton("Add folder…", self)
        self.add_folder_button.setToolTip("Add every text file in a folder and the folders inside it (Ctrl+Shift+T)")
        self.add_folder_button.clicked.connect(self.browse_folder)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Take the selected files or folders off the list (Delete); nothing is deleted "
                                      "from the disk")
        self.remove_button.clicked.connect(self.remove_selected)
        self.builtin = QCheckBox(f"Built-in corpus (≈ {human_count(BUILTIN_TOKENS_ESTIMATE)} tokens)", self)
        self.builtin.setToolTip("English prose that ships with Python: the standard library's docstrings. "
                                "Works offline; your own text usually scores better for your own use.")
        self.builtin.toggled.connect(self._emit_changed)
        self.summary = ElidedLabel(self, max_lines=2)  # never wider than the column
        # What the engine leaves out of the listed sources, one sentence each (the whole list in the tooltip).
        self.skipped_label = ElidedLabel(self, max_lines=2)
        self.skipped_label.setVisible(False)
        self._skipped: dict[str, list[str]] = {}  # source path → sentences, from reading it when added
        self._scored_skips: list[str] = []  # sentences the last scoring reported
        self._missing: list[str] = []  # restored sources not found (see set_sources)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_files_button)
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.skipped_label)
        layout.addWidget(self.builtin)
        layout.addWidget(self.summary)
        self._update_buttons()
        self._update_summary()

    # ---------------------------------------------------------------------------------------------- data

    def paths(self) -> list[str]:
        return [self.list.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole)
                for i in range(self.list.topLevelItemCount())]

    def sources(self) -> list[str]:
        """What the core's ``calib`` takes: the paths, plus ``builtin`` when the corpus is ticked."""
        return [*self.paths(), *([BUILTIN_CORPUS] if self.builtin.isChecked() else [])]

    def set_sources(self, sources: list[str]) -> None:
        """Restore saved sources. One that is not there now (a drive not mounted) is left out of the list, said
        under it, and kept in :meth:`stored_sources` until the user changes the list: it was dropped without a
        word, and the list saved on closing lost it for good."""
        self.list.clear()
        self.builtin.blockSignals(True)
        self.builtin.setChecked(BUILTIN_CORPUS in sources)
        self.builtin.blockSignals(False)
        own = [s for s in sources if s != BUILTIN_CORPUS]
        self.add_paths([s for s in own if expand_home(s).exists()], quiet=True)
        self._emit_changed()
        self._missing = [s for s in own if not expand_home(s).exists()]
        self._update_skipped()

    def stored_sources(self) -> list[str]:
        """What to save for the next start: :meth:`sources` and the restored sources that were not found."""
        return [*self.paths(), *self._missing, *([BUILTIN_CORPUS] if self.builtin.isChecked() else [])]

    def estimated_tokens(self) -> int:
        total = sum(int(self.list.topLevelItem(i).data(2, Qt.ItemDataRole.UserRole) or 0)
                    for i in range(self.list.topLevelItemCount()))
        return total + (BUILTIN_TOKENS_ESTIMATE if self.builtin.isChecked() else 0)

    def add_paths(self, paths: list[str], quiet: bool = False) -> None:
        """Add files and folders; ones already listed are skipped, unusable ones are reported.

        The user's first own source unticks the built-in corpus (mixing the two is rarely wanted; it can be
        ticked again). ``quiet`` (restoring saved sources) changes neither that nor emits :attr:`changed`.
        """
        # No text of the user's own yet (a binary file listed gives none)
        first_own = not any(_gives_text(self.list.topLevelItem(i)) for i in range(self.list.topLevelItemCount()))
        known = {_resolved(Path(p)) for p in self.paths()}
        added = usable = 0
        problems: list[str] = []  # said once for the whole drop (one box each had to be dismissed)
        for raw in paths:
            path = expand_home(raw)
            key = _resolved(path)
            if key in known:  # said (it was ignored without a word), a link to a listed file too
                if not quiet:
                    problems.append(f"{path} is already in the list.")
                continue
            holder = next((k for k in known if Path(key).is_relative_to(k)), None)
            if holder is not None:  # listed twice, its tokens counted twice (the job reads each file once)
                problems.append(f"{path} is already in the list, in the folder {holder}.")
                continue
            if name_not_utf8(path):
                # a name of other bytes than UTF-8 (a Latin-1 disk's caf\xe9.txt) reaches the window with U+FFFD in
                # place of the byte, and "does not exist" was said of a file the user could see (a walkthrough)
                problems.append(f"{path}: its name is not UTF-8, which the window cannot keep; rename the file, or add "
                                "the folder that holds it.")
                continue
            if not path.exists():  # a link loop or a dangling link too, said as such
                problems.append(f"{path} {not_there(path)}.")
                continue
            if looks_like_a_model(path):  # its tokenizer.json was listed as millions of tokens of text
                problems.append(f"{path} is a model, not text: open it in the Model box instead.")
                continue
            try:
                size, files, tokens = describe_path(str(path))
            except (OSError, CalibrationError) as exc:
                problems.append(f"{path} cannot be read ({exc}).")
                continue
            if path.is_dir() and files == 0:
                why = _why_no_text(path)
                problems.append(f"The folder {path} is empty." if why is None
                                  else f"The folder {path} holds no text files ({why}).")
                continue
            if size <= CHECK_BYTES:
                read = read_texts([path])
                skipped, gives_text = read.skipped, bool(read.texts)
                files = len(read.files)  # "(4 text files)" counted an empty file and a JSON it said it skipped
                # and its size and tokens those the job skips too: a folder of seven JSON reports and a 3-byte note
                # read "≈ 3.2 k tokens", then Score said the text was too short (3 bytes)
                size = sum(size_of(f) for f in read.files)
                tokens = int(sum(len(t.encode("utf-8")) for t in read.texts) / CHARS_PER_TOKEN)
            else:  # sniffed only: a big file is text unless its first bytes say otherwise
                skipped = binary_files(path)
                gives_text = not path.is_file() or not skipped
            name = path.name + ("/" if path.is_dir() else "")
            if path.is_dir():
                name += f"  ({files} text file{'s' if files != 1 else ''})"
            if path.is_file() and not gives_text:  # a binary file read "0 B", a skipped config.json counted its tokens
                size = path.stat().st_size
            if not gives_text:  # a folder of JSON Lines without "text" fields counted its tokens too
                tokens = 0
            note = format_note(path) if path.is_file() else None
            item = QTreeWidgetItem([name, human_bytes(size), human_count(tokens) if tokens or not skipped else "—"])
            item.setData(0, Qt.ItemDataRole.UserRole, str(path))
            item.setData(2, Qt.ItemDataRole.UserRole, tokens)
            item.setData(0, GIVES_TEXT, gives_text)
            item.setToolTip(0, str(path) + (f"\n{note}" if note else ""))
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.list.addTopLevelItem(item)
            self._mark_skipped(item, skipped)
            if path.is_dir():  # the entries it holds are listed once, as part of it
                for held in [k for k in known if Path(k).is_relative_to(key)]:
                    self._take(held)
                    known.discard(held)
            known.add(key)
            added += 1
            usable += gives_text  # a JSON Lines file with one record without "text" gives text all the same
        # A file with no text in it (a binary one) is listed, marked skipped, but leaves the built-in corpus ticked:
        # unticked, the job had "≈ 0 tokens" and Score failed once pressed.
        if usable and first_own and not quiet and self.builtin.isChecked():
            self.builtin.blockSignals(True)
            self.builtin.setChecked(False)
            self.builtin.blockSignals(False)
        if added and not quiet:
            self._emit_changed()
        elif added:
            self._update_summary()
        if problems:
            self.problem.emit("\n".join(problems))

    def skipped(self) -> list[str]:
        """Every sentence about what the engine leaves out of the listed sources (added or scored)."""
        listed = set(self.paths())
        sentences = [f"{path} was not found; it is left out." for path in self._missing]
        sentences += [s for path, notes in self._skipped.items() if path in listed for s in notes]
        return sentences + [s for s in self._scored_skips if s not in sentences]

    def set_scored_skips(self, sentences: list[str]) -> None:
        """What a scoring pass reported leaving out (covers sources too big to read when added), and where the text
        gave fewer samples than asked: that sat in the Log tab alone, and the scores came from a third of them."""
        self._scored_skips = [s for s in sentences if s.startswith(("Skipped", "Left out", SAMPLES_SHORT))]
        self._update_skipped()

    def _mark_skipped(self, item: QTreeWidgetItem, sentences: list[str]) -> None:
        path = str(item.data(0, Qt.ItemDataRole.UserRole))
        self._skipped[path] = list(sentences)
        if sentences:
            item.setIcon(0, self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
            item.setToolTip(0, path + "\n\n" + "\n".join(sentences))
        self._update_skipped()

    def _update_skipped(self) -> None:
        sentences = self.skipped()
        self.skipped_label.setVisible(bool(sentences))
        if not sentences:
            return
        more = f" (and {len(sentences) - 1} more: point here)" if len(sentences) > 1 else ""
        self.skipped_label.setText(f"⚠ {sentences[0]}{more}")
        self.skipped_label.set_details("\n".join(sentences))

    def _take(self, key: str) -> None:
        """Drop the entry whose path resolves to ``key``."""
        for i in range(self.list.topLevelItemCount()):
            if _resolved(Path(self.list.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole))) == key:
                self.list.takeTopLevelItem(i)
                return

    def remove_selected(self) -> None:
        items = self.list.selectedItems()
        for item in items:
            self.list.takeTopLevelItem(self.list.indexOfTopLevelItem(item))
        if items:
            self._emit_changed()

    def set_busy(self, busy: bool) -> None:
        for w in (self.list, self.add_files_button, self.add_folder_button, self.builtin):
            w.setEnabled(not busy)
        self.remove_button.setEnabled(not busy and bool(self.list.selectedItems()))

    # ----------------------------------------------------------------------------------------- internals

    def _emit_changed(self) -> None:
        self._scored_skips = []  # about the sources of the last pass, which changed
        self._missing = []  # the user changed the list they saw
        self._update_summary()
        self._update_skipped()
        self.changed.emit()

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(bool(self.list.selectedItems()) and self.list.isEnabled())

    def _update_summary(self) -> None:
        n = self.list.topLevelItemCount()
        if not n and not self.builtin.isChecked():
            self.summary.setText("No calibration text yet: add some, or tick the built-in corpus.")
            return
        # Files that give no text are listed (marked skipped) but are no source: "3 sources" counted three skipped.
        # By what reading it found, not by its token estimate: a 3-byte text file read "0 sources (1 skipped)" and a
        # folder of records without "text" counted as a source.
        usable = sum(1 for i in range(n) if _gives_text(self.list.topLevelItem(i)))
        skipped = f" ({n - usable} skipped)" if usable < n else ""
        parts = [f"{usable} source{'s' if usable != 1 else ''}{skipped}"] if n else []
        if self.builtin.isChecked():
            parts.append("built-in corpus")
        self.summary.setText(f"{' + '.join(parts)} · ≈ {human_count(self.estimated_tokens())} tokens")

    def browse_files(self) -> None:
        patterns = " ".join(f"*{s}" for s in TEXT_SUFFIXES)
        paths, _ = QFileDialog.getOpenFileNames(self, "Add calibration text", str(Path.home()),
                                                f"All files (*);;Text ({patterns})")
        if paths:
            self.add_paths(paths)

    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of calibration text", str(Path.home()))
        if folder:
            self.add_paths([folder])
