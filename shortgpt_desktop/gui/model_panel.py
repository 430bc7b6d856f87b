"""Choose a model (Hub id, folder or .gguf; typed, browsed, recent or dropped) and see what it costs."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.model.loading import ModelInfo
from ..core.user_paths import exists, expand_home, name_not_utf8
from ..format import human_bytes, human_count, human_rate
from .elided_label import ElidedLabel

MAX_RECENT = 12


def model_key(text: str) -> str:
    """How a model is remembered: a local path absolute, its folders resolved (so it works from any working directory
    and ``models/./m`` and ``models/m`` count once), a Hub id as typed. The model's own name is kept where it is a
    link, not followed: a GGUF file linked as ``model.gguf`` to a file without the ending (Ollama's blobs, the Hub
    cache's) was remembered by its target, which then could not be opened ("without the .gguf ending")."""
    text = text.strip()
    if not text:
        return text
    try:
        path = expand_home(text)
        if path.exists():
            path = path if path.is_absolute() else Path.cwd() / path
            if path.name in ("", ".", ".."):
                return str(path.resolve())
            # the folders above resolved, the last part kept: "models/current/../qwen", where models/current is a
            # link, is data/llms/qwen (normalised as text it named models/qwen, which is not there)
            return str(path.parent.resolve() / path.name)
    except (RuntimeError, OSError):  # a link loop, a folder one may not enter
        pass  # kept as typed: opening it says what is wrong
    return text


def names_one_model(first: str, second: str) -> bool:
    """Whether two names of a model name the same one: the same key, or two paths to the same file or folder
    (a link and its target)."""
    a, b = model_key(first), model_key(second)
    if a == b:
        return True
    try:
        return bool(a and b) and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def typed_model(text: str) -> str:
    """The model named in the field as it is meant: a path pasted with its quotes (Windows Explorer's "Copy as
    path" adds them) or as a ``file://`` URL (copied from a browser or a file manager) was "does not exist"."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if text.lower().startswith("file:"):
        local = QUrl(text).toLocalFile()
        if local:
            text = local
    if not exists(text):  # a Hub page's address (``https://huggingface.co/org/name``): its id
        from ..core.errors import UserError
        from ..core.model.sources import hub_file_of, hub_id_of

        if hub_file_of(text, None) is not None:  # a GGUF file's address: that file, not its repo (refused: GGUF only)
            return text
        try:
            repo_id, revision = hub_id_of(text, None)
        except UserError:
            return text  # a dataset's or a Space's page: opening it says why not
        if revision in (None, "main"):  # the window opens the main revision; another stays as typed, and opens
            text = repo_id
    return text


def droppable_model(path: str) -> bool:
    """A dropped path is a model when it is a folder or a ``.gguf`` file."""
    p = Path(path)
    return p.is_dir() or (p.is_file() and p.suffix.lower() == ".gguf")


def undecodable_name(path: str) -> bool:
    """A dropped name Qt could not decode (bytes that are not UTF-8, such as a Latin-1 disk's ``mod\xe8le.gguf``):
    Qt hands it over with U+FFFD in place of the byte, and no such path exists. The drop was ignored without a
    word, where the calibration list says why."""
    # a .gguf, or a name without an ending (a folder, as a file manager drags one): a picture or a text named so
    # is not a model, whatever its name
    suffix = Path(path).suffix.lower()
    return suffix in ("", ".gguf") and name_not_utf8(path)


NOT_UTF8 = "{path}: its name is not UTF-8, which the window cannot keep; rename it, then drop or open it again."


def droppable_scores(path: str) -> bool:
    """A dropped ``.json`` file: scores exported before, for Import scores (which says what else it is)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() == ".json"


def pruned_before(n_layers: int, earlier: Sequence[int]) -> str:
    """What a model this app pruned before lacks, for the window: its layers are numbered as its own."""
    return (f"This app pruned it before: its original had {n_layers + len(earlier)} layers, and it lacks "
            f"{'layer' if len(earlier) == 1 else 'layers'} {', '.join(map(str, earlier))} of them. The layers here "
            f"are numbered as this model's own {n_layers}; a saved model's card gives both numberings.")


class ModelPanel(QGroupBox):
    """Emits :attr:`modelChosen` with the text of the model the user committed to."""

    modelChosen = Signal(str)
    #: A ``.json`` file dropped on the panel: scores to import for the open model (it was refused without a word).
    scoresDropped = Signal(str)
    problem = Signal(str)  # a dropped path that cannot be used, as a sentence
    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.setAcceptDrops(True)
        self.field = QComboBox(self)
        self.field.setEditable(True)
        # not from the wheel: a wheel turn over it gave it the focus, and the pane was scrolled back to it, against the
        # user's scroll (the window's focused control is scrolled into view; the slider and boxes ignore it so too)
        self.field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.field.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # Recent entries offered in a list under the box, not typed in: Qt's inline completion filled in the rest of
        # the first recent entry the typed text began (in any case), and Enter opened that entry (a path to g1 opened
        # the g1-st beside it; "Qwen/Qwen2.5-0.5B" opened a recent "…-Instruct")
        self.field.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.field.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.field.setMinimumContentsLength(18)
        self.field.lineEdit().setPlaceholderText("Hub id (org/name), a model folder or a .gguf file")
        self.field.setToolTip("Type a Hugging Face Hub id or a path and press Enter, pick a recent model, "
                              "or drop a model folder or a .gguf file here.")
        self.field.lineEdit().returnPressed.connect(self._commit_text)
        # A file dropped on the text box: the box typed its file:// address in at the cursor (into the path shown)
        # and nothing opened; the drop now goes where a drop on the rest of the panel goes
        self._focus_leaving = False  # within the focus leaving the text box (see eventFilter)
        self._just_committed = ""  # the text emitted in this turn of the event loop (see _commit_text)
        self.field.installEventFilter(self)
        self.field.lineEdit().installEventFilter(self)
        self.field.activated.connect(self._on_recent_activated)
        self.open_button = QPushButton("Open", self)
        self.open_button.setToolTip("Read the model's description (downloads a Hub model first)")
        self.open_button.clicked.connect(self._commit_text)
        self.folder_button = QPushButton("Folder…", self)
        self.folder_button.clicked.connect(self.browse_folder)
        self.folder_button.setToolTip("Open a model folder (config.json and its weights) (Ctrl+O)")
        self.gguf_button = QPushButton(".gguf…", self)
        self.gguf_button.clicked.connect(self.browse_gguf)
        self.gguf_button.setToolTip("Open a model saved as one .gguf file (llama.cpp, Ollama, LM Studio) "
                                    "(Ctrl+Shift+O)")

        row = QHBoxLayout()
        row.addWidget(self.field, 1)
        row.addWidget(self.open_button)
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("Browse:", self))
        buttons.addWidget(self.folder_button)
        buttons.addWidget(self.gguf_button)
        buttons.addStretch(1)

        self.download_bar = QProgressBar(self)
        self.download_bar.setTextVisible(False)
        self.download_bar.setMaximumHeight(10)
        self.download_label = QLabel(self)
        self.download_cancel = QPushButton("Cancel download", self)
        self.download_cancel.clicked.connect(self.cancelRequested)
        self.download_cancel.setToolTip("Stop the download (Esc)")
        download_row = QHBoxLayout()
        download_row.addWidget(self.download_label, 1)
        download_row.addWidget(self.download_cancel)
        self.download_box = QWidget(self)
        box_layout = QVBoxLayout(self.download_box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.addWidget(self.download_bar)
        box_layout.addLayout(download_row)
        self.download_box.setVisible(False)

        self.values: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setContentsMargins(0, 4, 0, 0)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(2)
        for key, label in (("architecture", "Architecture"), ("layers", "Layers"), ("params", "Parameters"),
                           ("disk", "Size on disk"), ("memory", "Memory needed"),
                           ("mode", "Runs")):
            # "Runs" can say two things ("one layer at a time until the next Score, then whole, in memory"): two
            # lines at most, the rest in its tooltip (it was cut at the comma)
            # Memory needed ("3.0 GB on cpu, float32, one layer at a time") was cut mid-word, with no "…": elided
            value = ElidedLabel(self, max_lines=2 if key == "mode" else 1) if key in ("mode", "memory") \
                else QLabel(self)
            value.setText("—")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            # No word wrap (it would make the left column taller than a 720-px screen): a long value is cut,
            # and its tooltip shows it whole; the tiny minimum keeps it from widening the window.
            value.setMinimumWidth(1)
            self.values[key] = value
            form.addRow(label + ":", value)
        # An error can be a paragraph: at most three lines here (the left column must not grow and push the
        # settings away), the whole sentence in the tooltip and the dialog.
        self.message = ElidedLabel(self, max_lines=3)
        self.message.setVisible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.download_box)
        layout.addLayout(form)
        layout.addWidget(self.message)
        self._download_started = 0.0
        self._download_first = 0

    # --------------------------------------------------------------------------------------------- state

    @property
    def text(self) -> str:
        return typed_model(self.field.currentText())

    def set_text(self, text: str) -> None:
        self.field.setEditText(text)

    def choose(self, text: str) -> None:
        """Set the field and commit, as if the user had typed ``text`` and pressed Enter."""
        self.set_text(text)
        self._commit_text()

    def recent(self) -> list[str]:
        return [self.field.itemText(i) for i in range(self.field.count())]

    def set_recent(self, items: list[str]) -> None:
        """Replace the recent list (local paths made absolute, repeats dropped, newest first)."""
        unique: list[str] = []
        for item in items:
            key = model_key(item)
            if key and key not in unique:
                unique.append(key)
        current = self.field.currentText()
        self.field.blockSignals(True)
        self.field.clear()
        self.field.addItems(unique[:MAX_RECENT])
        for index, item in enumerate(unique[:MAX_RECENT]):
            self.field.setItemData(index, item, Qt.ItemDataRole.ToolTipRole)  # the whole path, where it is cut
        self.field.setEditText(current)
        self.field.blockSignals(False)
        self._fit_popup()

    def _fit_popup(self) -> None:
        """The recent list's popup as wide as its longest entry, up to most of the screen: it was the box's width,
        so paths deep in a home folder showed as "/home/me/models/…" without the model's own name. What is still
        too long is cut in the middle, keeping the file or folder name."""
        view = self.field.view()
        view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        metrics = view.fontMetrics()
        widest = max((metrics.horizontalAdvance(self.field.itemText(i)) for i in range(self.field.count())),
                     default=0)
        screen = self.screen()
        room = screen.availableGeometry().width() - 40 if screen is not None else widest + 40
        view.setMinimumWidth(max(0, min(widest + 40, room)))

    def remember(self, text: str) -> None:
        """Put ``text`` first in the recent list (see :func:`model_key`)."""
        self.set_recent([text, *self.recent()])

    def set_busy(self, busy: bool) -> None:
        for w in (self.field, self.open_button, self.folder_button, self.gguf_button):
            w.setEnabled(not busy)
        self.setAcceptDrops(not busy)

    def set_info(self, info: ModelInfo, earlier: Sequence[int] = ()) -> None:
        """The model's figures; ``earlier``: the layers of its first original it lacks, where this app pruned it
        before (the window never said so: only the card of its next prune did)."""
        self.values["architecture"].setText(f"{info.architecture} ({info.model_type})")
        self.values["architecture"].setToolTip(f"{info.architecture} ({info.model_type}) · {info.name}")
        if earlier:
            self.values["layers"].setText(f"{info.n_layers} (pruned before, of {info.n_layers + len(earlier)})")
            self.values["layers"].setToolTip(pruned_before(info.n_layers, earlier))
        else:
            self.values["layers"].setText(str(info.n_layers))
            self.values["layers"].setToolTip("")
        self.values["params"].setText(human_count(info.n_params))
        self.values["params"].setToolTip(f"{info.n_params:,} parameters")
        self.values["disk"].setText(f"{human_bytes(info.bytes_on_disk)} ({info.weight_format})")
        self.set_memory(info)
        self.message.setVisible(False)

    def set_memory(self, info: ModelInfo, streamed: bool = False) -> None:
        """What the job needs the way it runs: ``streamed``, one layer at a time (it showed the whole model's figure
        beside "Runs: one layer at a time", 2.0 GB where the job used 0.8 GB)."""
        memory = info.memory
        if streamed:
            self.values["memory"].setText(f"{human_bytes(memory.runtime_bytes + memory.streamed_total)} on "
                                          f"{info.device}, {info.dtype}, one layer at a time")
            self.memory_label.set_details(  # the text first: elided, its end was in no tooltip
                f"{self.memory_label.text()}\nthe program {human_bytes(memory.runtime_bytes)} + one layer at a time "
                f"{human_bytes(memory.streamed_total)} (the largest layer's weights, the weights outside the layers, "
                "the samples' hidden states, one batch's working memory and the recipe's caches)")
            return
        self.values["memory"].setText(f"{human_bytes(memory.peak_bytes)} on {info.device}, {info.dtype}")
        working = f"working memory {human_bytes(memory.batch_working_bytes)} (for the chosen batch size and sequence " \
                  "length)"
        extra, listed = working, memory.batch_working_bytes
        if memory.loading_bytes:
            extra = f"the larger of {working} and what loading holds for a moment {human_bytes(memory.loading_bytes)}"
            listed = max(memory.batch_working_bytes, memory.loading_bytes)
        if not memory.on_cpu:
            extra = (f"working memory {human_bytes(memory.batch_working_bytes)} on {info.device}, and in RAM while "
                     f"loading {human_bytes(memory.in_memory_ram_bytes)}")
            listed = memory.batch_working_bytes + memory.in_memory_ram_bytes
        # What the parts above leave out, so that they add up to the figure shown (12.4 TB shown, 10.2 TB listed)
        rest = memory.peak_bytes - memory.runtime_bytes - memory.weights_bytes - listed
        more = (f" + the samples' hidden states, the measured choice's caches, the repair and healing "
                f"{human_bytes(rest)}" if rest > 0 else "")
        self.memory_label.set_details(
            f"{self.memory_label.text()}\nthe program {human_bytes(memory.runtime_bytes)} + weights "
            f"{human_bytes(memory.weights_bytes)} + "
            f"{extra}{more}")

    def set_memory_error(self, message: str) -> None:
        self.memory_label.set_details("")  # the figure's parts were kept beside the error
        self.memory_label.setText(message)

    @property
    def memory_label(self) -> ElidedLabel:
        label = self.values["memory"]
        assert isinstance(label, ElidedLabel)
        return label

    def set_mode(self, text: str, details: str = "") -> None:
        """Whether the model runs whole or one layer at a time, and what each way needs."""
        mode = self.values["mode"]
        mode.setText(text)
        assert isinstance(mode, ElidedLabel)
        mode.set_details(f"{text}\n{details}" if details else "")

    def set_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # ------------------------------------------------------------------------------------------ download

    def show_download(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.download_box.isVisible():
            self.download_box.setVisible(True)
            self._download_started, self._download_first = now, done
        elapsed = max(now - self._download_started, 1e-6)
        speed = (done - self._download_first) / elapsed
        self.download_bar.setRange(0, 1000)
        self.download_bar.setValue(int(1000 * done / total) if total else 0)
        speed_text = f" · {human_rate(speed)}" if elapsed > 0.5 else ""
        self.download_label.setText(f"Downloading: {human_bytes(done)} of {human_bytes(total)}{speed_text}")

    def hide_download(self) -> None:
        self.download_box.setVisible(False)

    # ------------------------------------------------------------------------------------------- actions

    def _commit_text(self) -> None:
        """Emit :attr:`modelChosen` once for one choice: a recent entry picked from the list under the box with Enter
        comes as Enter in the box and as the entry's activation, and "Open …?" came back after its No."""
        if self.text and self.text != self._just_committed:
            self._just_committed = self.text
            QTimer.singleShot(0, self._forget_commit)
            self.modelChosen.emit(self.text)

    def _forget_commit(self) -> None:
        self._just_committed = ""

    def _on_recent_activated(self, index: int) -> None:
        if self._focus_leaving:
            # Qt's own: the box's text matching a recent entry when the focus leaves activates that entry (a path
            # typed, then a click elsewhere or Ctrl+Q, opened the model), where a typed path opens on Enter or Open
            return
        self.field.setEditText(self.field.itemText(index))
        self._commit_text()

    def browse_folder(self) -> None:
        # a .gguf open: its folder (the file's name in the dialog's box, Enter took a file for a folder)
        start = self.text if exists(self.text) else str(Path.home())
        start = str(Path(start).parent) if Path(start).is_file() else start
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", start)
        if folder:
            self.choose(folder)

    def browse_gguf(self) -> None:
        start = str(Path(self.text).parent) if exists(self.text) else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model file", start, "GGUF models (*.gguf)")
        if path:
            self.choose(path)

    # --------------------------------------------------------------------------------------- drag & drop

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasUrls() and any(droppable_model(u.toLocalFile()) or droppable_scores(u.toLocalFile())
                                  or undecodable_name(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragEnterEvent) -> None:
        self.dragEnterEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Files dragged over the text box are the panel's drop (:meth:`dropEvent`), never text to type in; the focus
        leaving it is no choice of a recent model (:meth:`_on_recent_activated`)."""
        if event.type() == QEvent.Type.FocusOut and watched in (self.field, self.field.lineEdit()):
            # the box handles the event after this filter, synchronously (the combo box passes its own focus-out to
            # its line edit directly, past the line edit's filters)
            self._focus_leaving = True
            QTimer.singleShot(0, self._focus_left)
        handlers = {QEvent.Type.DragEnter: self.dragEnterEvent, QEvent.Type.DragMove: self.dragMoveEvent,
                    QEvent.Type.Drop: self.dropEvent}
        handler = handlers.get(event.type())
        mime = getattr(event, "mimeData", lambda: None)()
        files = mime is not None and any(url.isLocalFile() for url in mime.urls())
        # files only: a Hub page's address dragged from a browser is text the box takes (typed_model reads it)
        if handler is not None and watched is self.field.lineEdit() and files:
            if self.acceptDrops():
                handler(event)
            else:  # busy: no drop, and no address typed in either
                event.ignore()
            return True
        return super().eventFilter(watched, event)

    def _focus_left(self) -> None:
        self._focus_leaving = False

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        models = [p for p in paths if droppable_model(p)]
        scores = [p for p in paths if droppable_scores(p)]
        if not models and not scores:
            lost = [p for p in paths if undecodable_name(p)]
            if lost:
                event.acceptProposedAction()
                self.problem.emit(NOT_UTF8.format(path=lost[0]))
            else:
                event.ignore()
            return
        event.acceptProposedAction()
        if models:
            self.choose(models[0])
        else:
            self.scoresDropped.emit(scores[0])
