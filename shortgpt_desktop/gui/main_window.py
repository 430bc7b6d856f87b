"""The main window: model, calibration text and settings on the left; chart, slider, actions and results on
the right. All long work goes through :class:`~.workers.JobRunner`; this module only wires widgets to it."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QRect, QSettings, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QGuiApplication,
    QKeySequence,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..core import defaults
from ..core.cut.plan import PrunePlan, is_known
from ..core.engine import STREAMED_CURVE_NOTE, JobSpec, Scored
from ..core.errors import Hint, PlanError, UserError
from ..core.formats.provenance import earlier_removed
from ..core.measure.calibration import BUILTIN_CORPUS
from ..core.measure.metrics import METRICS
from ..core.model.loading import ModelInfo
from ..core.report import model_bytes
from ..format import counted, human_bytes, human_seconds, in_number, layer_list, listed
from . import dialogs
from .calibration_panel import CalibrationPanel
from .chart import ScoreChart
from .compare_panel import ComparePanel
from .elided_label import ElidedLabel
from .icons import app_icon
from .log_panel import LogPanel
from .messages import user_message
from .model_panel import ModelPanel, model_key, names_one_model, pruned_before, typed_model
from .plan_panel import BY_HAND, FROM_FILE, PlanPanel
from .scores_file import (
    ImportedScores,
    PlanOnlyFile,
    another_model_of_the_same_name,
    read_scores,
    same_model,
    write_scores,
)
from .session import (
    STREAMED_MODE,
    JobProgress,
    MemoryView,
    Session,
    ended_line,
    job_title,
    model_file_name,
    suggested_output,
)
from .settings_panel import SettingsPanel
from .settings_store import Store
from .system import gpu_memory, probe_devices, process_memory, total_memory
from .workers import Failure, JobRunner

log = logging.getLogger(__name__)


def frame_on_screen(room: QRect, frame: QRect, client: QRect, minimum: QSize,
                    desktop: QRect | None = None) -> QRect | None:
    """The window's own geometry (``client``, inside its ``frame``) moved, and shrunk to no less than ``minimum``,
    so that its frame lies in ``room``; None where it does already, where the window alone is larger than the
    room (a size someone chose: the window's own start size fits the room), or where it lies across two screens
    of the ``desktop`` as placed (not pulled onto one at every start)."""
    if room.contains(frame) or client.width() > room.width() or client.height() > room.height():
        return None
    if desktop is not None and desktop.contains(frame) and not room.contains(client):
        return None
    left, top = client.x() - frame.x(), client.y() - frame.y()  # the frame's edges beside the window's own
    extra_w, extra_h = frame.width() - client.width(), frame.height() - client.height()
    width = max(minimum.width(), min(client.width(), room.width() - extra_w))
    height = max(minimum.height(), min(client.height(), room.height() - extra_h))
    x = max(room.x(), min(frame.x(), room.x() + room.width() - width - extra_w))
    y = max(room.y(), min(frame.y(), room.y() + room.height() - height - extra_h))
    return QRect(x + left, y + top, width, height)


def _say_why_off(widget: QWidget, why: str) -> None:
    """``widget``'s own tooltip, and where it is off, ``why`` (its own kept in a property the first time)."""
    own = widget.property("ownToolTip")
    if own is None:
        own = widget.toolTip()
        widget.setProperty("ownToolTip", own)
    widget.setToolTip(own if widget.isEnabled() else f"{own}\n\nOff now: {why}.")


def _measured_on(imported: dict[str, Any]) -> str:
    """``, measured there on 16 × 128 tokens of wiki.txt; Check, Save and the repair read the text listed here``:
    an import said only where the scores came from, and the next Check used other text and chose other layers."""
    texts = ", ".join(Path(str(c)).name for c in imported.get("calibration") or [])
    sizes = (f"{imported['samples']} × {imported['seq_len']} tokens" if imported.get("samples")
             and imported.get("seq_len") else "")
    what = " of ".join(part for part in (sizes, texts) if part)
    return (f", measured there on {what}" if what else "") + "; Check, Save and the repair read the text listed here"


def _curve_words(label: str) -> str:
    """A curve's label ("bi + repair", as its JSON and the command line give it) in the metric's own words, as the
    Metric box names it: "bi + repair (solid)" read as the Block Influence+ metric under plain Block Influence."""
    name, plus, rest = label.partition(" + ")
    metric = METRICS.get(name)
    return (metric.label if metric is not None else name) + (f" + {rest}" if plus else "")


def _chosen_otherwise(before: PrunePlan | None, after: PrunePlan | None) -> str:
    """The sentence for bi+ removing other layers than the lowest scores shown (``before``, not yet measured), once
    a job measured them (``after``); "" otherwise. The layers changed under the user's eyes and nothing said so:
    Save wrote 3, 5, 7, 12, 13, 17, 25 where 12–15, 17, 25, 26 were shown."""
    if before is None or after is None or not before.chosen_later or before.removed == after.removed \
            or len(before.removed) != len(after.removed):
        return ""
    return (f"bi+ measured its candidates and removed {in_number(len(after.removed), 'layer')} "
            f"{layer_list(after.removed)}, not the lowest scores "
            f"shown before ({layer_list(before.removed)})")


#: The jobs whose results are lost with the open model (scores, the check's figures, the quality curve).
MEASURING_JOBS = ("score", "check", "curve")
#: The jobs whose time the Log says when they end (a scoring says its own, "Scored 18 layers in 21.3 s").
TIMED_IN_THE_LOG = ("check", "save", "curve")
#: Opening another model or quitting asks first where that much measuring would go unsaved.
ASK_BEFORE_DROPPING_SECONDS = 60.0
#: A quality curve said to take longer is asked about before it starts: its time was said only once it ran (34 min
#: for a 135M model's default "to 15" at the smallest sizes, a walkthrough), and a cancelled curve draws nothing.
ASK_BEFORE_A_LONG_CURVE_SECONDS = 300.0
#: Why safetensors is greyed out for a GGUF model that runs one layer at a time.
GGUF_STAYS_GGUF = ("Not one layer at a time: a GGUF model is then saved as GGUF (its float copy would need the whole "
                   "model in memory).")


class MainWindow(QMainWindow):
    """The whole desktop product in one window.

    Signals for tests and the self-test: :attr:`jobFinished` ``(job, outcome)`` after each job's thread has
    stopped (outcome ``ok``, ``cancelled`` or ``failed``), :attr:`errorShown` with a dialog's message.
    """

    jobFinished = Signal(str, str)
    errorShown = Signal(str)
    devicesProbed = Signal()

    def __init__(self, settings: QSettings | None = None, probe: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("ShortGPT Desktop")
        self.setWindowIcon(app_icon())
        self.store = Store(settings)
        self.session = Session()  # the controller: what is asked of the engine, and how it is said
        self.engine = self.session.engine
        self.memory_view: MemoryView | None = None  # the last memory estimate, for the current settings
        self.jobs = JobRunner(self)  # model work, one job at a time
        self.background = JobRunner(self, exclusive=False)  # device probe and memory estimates
        self.plan: PrunePlan | None = None
        self.manual = False
        #: Who chose a plan that no count of the scores gives: "by hand" (bars clicked) or an imported file.
        self.manual_by = BY_HAND
        self._listed_in = ""  # the scores file a plan FROM_FILE came from
        self.dialogs: list[QMessageBox] = []
        #: The quality curves drawn for the scores shown, by (metric, repairs): switched away and back, drawn again.
        self._curves: dict[tuple[str, bool], Any] = {}
        self.last_saved: Path | None = None
        self._saved_line = ""  # what the last Save wrote, kept under the buttons until the next job
        self._closing = False
        self._stop_without_asking = False  # stop_and_close: a signal, not the user, closes the window
        self.probe_error: str | None = None  # why the device list could not be probed, if it could not
        self._probed_later: list | None = None  # devices the probe found while a job ran, listed when it ends
        self._after_open: str | None = None  # "score" when Score was pressed before the model was opened
        self._cancel_asked = False  # Cancel pressed during the running job
        self._stage = ""  # the running job's last progress stage ("load": its model is loading)
        self._scoring_metric = "bi"  # the metric of the scoring job in progress
        self._focus_before_job: QWidget | None = None  # the control that had the focus when a job began
        self._focus_landed: QWidget | None = None  # where Qt passed the focus as that control was disabled
        self._scores_before: Any = None  # scores shown before that job, restored if it fails
        #: The plan/figures split as it was before a check made room for its figures (None: the user's own, or no
        #: check grew it): remembered at close, where the check's room made every later start's plan scroll.
        self._right_sizes_given: list[int] | None = None
        #: The open job under way is the reopening at start (:meth:`reopen_last_model`): a failure is said quietly.
        self._quiet_open = False
        #: A memory estimate ended while a job ran, so the format box did not follow it: it runs again after the job.
        self._estimate_after_job = False
        #: Seconds of measuring on the open model by job (score, check, curve) that no Save or import has kept since
        #: it opened (an export keeps the scores alone): opening another model or quitting asks before dropping them.
        self.unkept: dict[str, float] = {}
        self._job_started = 0.0
        self.job_progress = JobProgress()  # the progress line's words, from the session layer

        self._build()
        # An explicit minimum: otherwise the layouts' minimum grows with word-wrapped text (a long model name
        # made it 1034 px wide) and the window could not be narrowed again.
        self.setMinimumSize(860, 600)
        self._frame_fitted = False
        self._size_shown: QSize | None = None  # the size at the first show, kept until someone resizes it
        self._fit_to_screen()
        # before the settings are restored: what they could not use was said in the status bar only, where the
        # next message replaced it within a second
        self.log_panel.attach("shortgpt_desktop", logging.INFO)
        for name in ("transformers", "huggingface_hub"):
            self.log_panel.attach(name)
        self._restore()
        self.jobs.started.connect(self._on_job_started)
        self.jobs.finished.connect(self._on_job_finished)
        self.jobs.progressed.connect(self._on_progress)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(2000)
        self._status_timer.timeout.connect(self._update_status)
        self._status_timer.start()
        self._memory_timer = QTimer(self)
        self._memory_timer.setSingleShot(True)
        self._memory_timer.setInterval(300)
        self._memory_timer.timeout.connect(self._update_memory_estimate)
        self._update_buttons()
        self._update_status()
        if probe:
            QTimer.singleShot(0, self._start_probe)

    # ============================================================================================== layout

    def _build(self) -> None:
        self.model_panel = ModelPanel(self)
        self.model_panel.modelChosen.connect(self.open_model)
        self.model_panel.scoresDropped.connect(self.import_scores)
        self.model_panel.problem.connect(lambda message: self.show_error("Model", message))
        self.model_panel.cancelRequested.connect(self.cancel)
        self.calibration_panel = CalibrationPanel(self)
        self.calibration_panel.problem.connect(self._on_calibration_problem)
        self.calibration_panel.changed.connect(lambda: self._note_scored_text_kept("text"))
        self.settings_panel = SettingsPanel(self)
        self.settings_panel.changed.connect(self._on_setting_changed)

        # A scroll bar sideways too where a large font makes the column wider than its pane (13 pt: labels were cut,
        # out of reach).
        scroll = self._scrolled((self.model_panel, 0), (self.calibration_panel, 1), (self.settings_panel, 0),
                                margins=(0, 0, 4, 0), sideways=True)
        scroll.setMinimumWidth(330)
        self.left_scroll = scroll

        self.chart = ScoreChart(self)
        self.chart.layerClicked.connect(self.toggle_layer)
        self.chart.optionsChanged.connect(lambda options: self.store.set_chart_options(options))
        self.plan_panel = PlanPanel(self)
        self.plan_panel.countChanged.connect(self.set_count)
        self.plan_panel.formatChanged.connect(self.set_output_format)
        self.plan_panel.curveRequested.connect(self.quality_curve)

        self.score_button = QPushButton("Score", self)
        self.score_button.setToolTip("Load the model and score every layer on the calibration text (Ctrl+R)")
        self.score_button.clicked.connect(self.start_scoring)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the running job (Esc); nothing is written")
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save pruned model…", self)
        self.save_button.setToolTip("Write the pruned model to a new folder (Ctrl+S)")
        self.save_button.clicked.connect(self.save)
        self.check_button = QPushButton("Check perplexity", self)
        self.check_button.setToolTip("Perplexity and a short generation of the original and the pruned "
                                     "model, on the same held-out tokens (Ctrl+P)")
        self.check_button.clicked.connect(self.check)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(False)
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.progress_label = ElidedLabel(self)  # one line, elided; the whole text in its tooltip
        # The progress on a row of its own, the pane's width: beside the four buttons it was cut before its time left
        # at 1280 × 720 ("…20 of 89 passes, ab…"), and at 860 × 600 it squeezed the label to nothing and "Save
        # pruned model…" to "ive pruned model".
        buttons = QHBoxLayout()
        for button in (self.score_button, self.cancel_button, self.save_button, self.check_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        status = QHBoxLayout()
        status.addWidget(self.progress)
        status.addWidget(self.progress_label, 1)
        buttons.setSpacing(6)
        status.setSpacing(6)  # a nested row takes its parent's spacing otherwise: the buttons touched
        actions = QVBoxLayout()
        actions.setSpacing(2)
        actions.addLayout(buttons)
        actions.addLayout(status)

        self.compare_panel = ComparePanel(self)
        self.log_panel = LogPanel(self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.compare_panel, "Before / after")
        self.tabs.addTab(self.log_panel, "Log")
        self.tabs.setDocumentMode(True)

        # The chart and the plan scroll where the window is smaller than they need (a 1024 × 600 screen, a scaled or
        # large font: the curve and its axis were cut off, out of reach); the buttons below them stay in view.
        top_scroll = self._scrolled((self.chart, 1), (self.plan_panel, 0), margins=(0, 0, 0, 0), sideways=False)
        self.top_scroll = top_scroll
        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(4, 0, 0, 0)
        top_layout.addWidget(top_scroll, 1)
        top_layout.addLayout(actions)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.right_splitter.addWidget(top)
        self.right_splitter.addWidget(self.tabs)
        self.right_splitter.setStretchFactor(0, 3)
        self.right_splitter.setStretchFactor(1, 1)
        self.right_splitter.setChildrenCollapsible(False)
        self.right_splitter.splitterMoved.connect(self._right_split_by_user)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(scroll)
        self.splitter.addWidget(self.right_splitter)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([380, 900])
        self.splitter.setChildrenCollapsible(False)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.addWidget(self.splitter)
        self.setCentralWidget(central)

        self.device_label = QLabel(self)
        self.memory_label = QLabel(self)
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().addPermanentWidget(self.memory_label)
        # a long line is cut by the labels at the right ("…the text listed here. The file's plan"): the whole of it
        # while it shows, where the pointer rests (it is in the Log too)
        # (through a slot of Python's: connected to the bar's own, PySide printed "Cannot add dynamic method
        # setToolTip(QString)" at every start)
        self.statusBar().messageChanged.connect(lambda text: self.statusBar().setToolTip(text))
        # Enter presses the focused button, as Space does: it did nothing outside a dialog, where a button is not
        # auto-default (on 7 of 11 buttons after the four job buttons were set so: Open, Add files…, Quality curve…)
        for button in self.findChildren(QPushButton):
            button.setAutoDefault(True)
        self._build_menu()

    def _build_menu(self) -> None:
        def action(text: str, slot: Any, shortcut: QKeySequence | str | None = None) -> QAction:
            act = QAction(text, self)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            # triggered(bool) would pass its checked flag as the slot's first argument: Export scores… took False
            # for the path to write and raised instead of asking for one.
            act.triggered.connect(lambda _checked=False: slot())
            return act

        file_menu = self.menuBar().addMenu("&File")
        # Off while a job runs, as the Model panel's own buttons are: a model picked then would fill the Model
        # field while the window still shows, and the engine still holds, the other one.
        # Each with a shortcut: a keyboard user reached "Open .gguf file…" through the menu only (Ctrl+O's folder
        # dialog cannot pick a file), and the calibration text after a dozen Tabs.
        self.open_actions = (action("Open model &folder…", self.model_panel.browse_folder, "Ctrl+O"),
                             action("Open .&gguf file…", self.model_panel.browse_gguf, "Ctrl+Shift+O"),
                             action("Add calibration &text files…", self.calibration_panel.browse_files, "Ctrl+T"),
                             action("Add calibration text fol&der…", self.calibration_panel.browse_folder,
                                    "Ctrl+Shift+T"))
        for act in self.open_actions[:2]:
            file_menu.addAction(act)
        file_menu.addSeparator()
        for act in self.open_actions[2:]:
            file_menu.addAction(act)
        file_menu.addSeparator()
        # keys too: the README's "every job and file to open has a key" left these two out (a walkthrough)
        # (not Ctrl+E: on X11 a text box takes it for the end of the line, so it did nothing with the focus in one)
        self.export_action = action("&Export scores…", self.export_scores, "Ctrl+Shift+E")
        self.import_action = action("&Import scores…", self.import_scores, "Ctrl+Shift+I")
        file_menu.addAction(self.export_action)
        file_menu.addAction(self.import_action)
        file_menu.addSeparator()
        self.save_action = action("&Save pruned model…", self.save, QKeySequence.StandardKey.Save)
        file_menu.addAction(self.save_action)
        self.open_saved_action = action("Open the saved f&older", self.open_saved_folder)
        self.open_saved_action.setEnabled(False)
        file_menu.addAction(self.open_saved_action)
        file_menu.addSeparator()
        quit_action = action("&Quit", self.close)
        # Windows and some Linux desktops bind no standard Quit key (the menu showed none): Ctrl+Q there
        quit_action.setShortcuts(QKeySequence.keyBindings(QKeySequence.StandardKey.Quit) or [QKeySequence("Ctrl+Q")])
        file_menu.addAction(quit_action)
        run_menu = self.menuBar().addMenu("&Run")
        self.score_action = action("&Score layers", self.start_scoring, "Ctrl+R")
        self.cancel_action = action("&Cancel", self.cancel, "Esc")
        self.check_action = action("Check &perplexity", self.check, "Ctrl+P")
        # the button sits below the chart, two dozen Tabs from the prompt; it had no menu entry nor shortcut
        self.curve_action = action("&Quality curve", self.plan_panel.curve_button.click, "Ctrl+Shift+P")
        for act in (self.score_action, self.cancel_action, self.check_action, self.curve_action):
            run_menu.addAction(act)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(action("&About ShortGPT Desktop", self._about))

    def _about(self) -> None:
        QMessageBox.about(
            self, "About ShortGPT Desktop",
            f"<b>ShortGPT Desktop {__version__}</b><p>Shrinks a language model by deleting its most "
            "redundant layers, ranked by Block Influence (Men et al., 2024, <i>ShortGPT: Layers in Large "
            "Language Models are More Redundant Than You Expect</i>).</p><p>Apache-2.0.</p>",
        )

    def _scrolled(self, *parts: tuple[QWidget, int], margins: tuple[int, int, int, int],
                  sideways: bool) -> QScrollArea:
        """``parts`` (a widget and its stretch) one above the other, in a frameless scroll area that scrolls up and
        down where needed, and sideways only where ``sideways``."""
        inner = QWidget(self)
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(*margins)
        for widget, stretch in parts:
            layout.addWidget(widget, stretch)
        scroll = QScrollArea(self)
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Tab stopped on it, with nothing to show it had the focus
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if sideways
                                            else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    def _available(self) -> QSize:
        """The room the screen gives a window (without the task bar), or the default size where none is known."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        return screen.availableGeometry().size() if screen is not None else QSize(1280, 720)

    def _fit_to_screen(self) -> None:
        """A minimum no larger than the screen: on a 1024 × 600 netbook, or 1366 × 768 at 150 % (911 × 512 pixels
        of room), the window started larger than the screen and could not be made to fit."""
        room = self._available()
        self.setMinimumSize(min(self.minimumWidth(), room.width()), min(self.minimumHeight(), room.height()))

    # ========================================================================================= persistence

    def _restore(self) -> None:
        store = self.store
        geometry = store.bytes("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            room = self._available()
            self.resize(min(1280, room.width()), min(720, room.height()))
        for key, splitter in (("window/splitter", self.splitter), ("window/right", self.right_splitter)):
            state = store.bytes(key)
            if state is not None:
                splitter.restoreState(state)
        unusable = self.settings_panel.set_values(store.settings())
        self.model_panel.set_recent(store.recent_models())
        self.model_panel.set_text(store.last_model())
        sources = store.calibration()
        self.calibration_panel.set_sources(sources if sources is not None else ["builtin"])
        self.chart.set_options(store.chart_options())
        prompt = store.prompt()
        if prompt is not None:
            self.compare_panel.set_prompt(prompt)
        notes = []
        if unusable or store.unreadable:
            notes.append("Saved settings this version cannot use were set to their defaults: "
                         + ", ".join([*unusable, *store.unreadable]) + ".")
        if self.settings_panel.out_of_range:
            notes.append("Saved settings out of range were brought within it: "
                         + ", ".join(self.settings_panel.out_of_range) + ".")
        if not store.writable():
            notes.append(f"Settings cannot be saved: {store.qs.fileName()} cannot be written.")
        for note in notes:
            log.warning(note)
        if notes:
            self.statusBar().showMessage(" ".join(notes), 20000)

    def save_state(self) -> None:
        store = self.store
        store.set_bytes("window/geometry", self.saveGeometry())
        store.set_bytes("window/splitter", self.splitter.saveState())
        given = self._right_sizes_given
        if given is not None:  # the figures' room was the check's, not the user's: the next start is as before it
            self.right_splitter.setSizes(given)
        store.set_bytes("window/right", self.right_splitter.saveState())
        store.set_settings(self.settings_panel.values())
        store.set_recent_models(self.model_panel.recent())
        # the model open, where one is: a path typed and never opened (a typo) was opened at the next start
        source = self.engine.source
        store.set_last_model(model_key(source.spec if source is not None else self.model_panel.text))
        store.set_calibration(self.calibration_panel.stored_sources())
        store.set_prompt(self.compare_panel.prompt_text())
        if not store.sync():
            log.warning("The settings could not be saved to %s.", store.qs.fileName())

    # ============================================================================================ helpers

    @property
    def busy(self) -> bool:
        return self.jobs.busy

    def job_spec(self, model: str | None = None) -> JobSpec:
        """The settings as the engine's job description (the model is the opened one unless given)."""
        if model is None:
            model = self.engine.source.spec if self.engine.source is not None else self.model_panel.text
        return self.session.job_spec(self.settings_panel.values(), self.calibration_panel.sources(),
                                     self.compare_panel.prompt_text(), model)

    def show_error(self, title: str, failure: Failure | str) -> QMessageBox:
        if isinstance(failure, str):
            failure = Failure(failure)
        box = dialogs.error_dialog(self, title, failure)
        self.statusBar().clearMessage()  # "Saved the pruned model … to …" stayed beside each failed save after it
        self.dialogs = [d for d in self.dialogs if d.isVisible()] + [box]
        self.log_panel.note(f"{title}: {failure.message}")
        self.errorShown.emit(failure.message)
        return box

    @property
    def last_dialog(self) -> QMessageBox | None:
        return self.dialogs[-1] if self.dialogs else None

    def _set_busy(self, busy: bool) -> None:
        # Disabling the focused control (Enter in the Model box, the slider before Ctrl+P) makes Qt pass the focus
        # on, and the left pane scrolled to wherever it landed, taking the field out of view: the pane keeps its
        # place, and the control gets the focus back when the job ends, unless the user moved it meanwhile. After a
        # check started from the slider the focus stayed in the prompt, its text selected: the next arrow key moved
        # the text cursor and a typed letter replaced the prompt.
        scroll = self.left_scroll.verticalScrollBar()
        position = scroll.value()
        focused = QApplication.focusWidget()
        if busy and (focused is None or not self.isAncestorOf(focused)):
            # a job started as its file dialog closed (Save, Ctrl+O then Score): the window is not active again yet,
            # and its own focus child is the control the user was on; the focus went to the chart or the prompt
            # after the job, and a Space there removed a layer (a walkthrough)
            focused = self.focusWidget()
        if busy and focused is not None and self.isAncestorOf(focused):
            self._focus_before_job = focused
        self.model_panel.set_busy(busy)
        self.calibration_panel.set_busy(busy)
        self.settings_panel.set_busy(busy)
        self.plan_panel.set_busy(busy)
        # The check generates from the prompt it started with: an edit meanwhile showed that continuation under
        # another prompt. Read-only, not disabled, so that Esc there still cancels.
        self.compare_panel.prompt.setReadOnly(busy)
        # before the focus comes back: Check and Save were still off then, and their focus went nowhere (or to the
        # prompt) after a check or a save started from the keyboard (a window walkthrough)
        self._update_buttons()
        scroll.setValue(position)
        if not busy and self._focus_before_job is not None:
            widget, self._focus_before_job = self._focus_before_job, None
            now, landed, self._focus_landed = QApplication.focusWidget(), self._focus_landed, None
            # where Qt leaves the focus of a disabled control in a window not yet active again (its next control:
            # the chart, or the prompt) is none of the user's doing
            passed_on = now is not None and (now is self.compare_panel.prompt or self.chart.isAncestorOf(now))
            moved_by_hand = now is not None and now is not widget and now is not landed and not passed_on
            if widget.isEnabled() and widget.isVisible() and now is not widget and not moved_by_hand:
                # as a keyboard move, so that the style draws where it is (given back "otherwise", the slider had the
                # focus and showed none; a walkthrough)
                widget.setFocus(Qt.FocusReason.TabFocusReason)
            if self.left_scroll.isAncestorOf(widget):
                self.left_scroll.ensureWidgetVisible(widget, 0, 0)
        self.chart.clickable = not busy and self.engine.sizes is not None
        self.progress.setVisible(busy)
        if busy:  # where Qt passed the focus once the control that had it was disabled
            self._focus_landed = self._unless_in_prompt(QApplication.focusWidget())

    def _update_buttons(self) -> None:
        busy = self.busy
        has_plan = self.plan_is_usable
        self.score_button.setEnabled(not busy)
        self.score_action.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.cancel_action.setEnabled(busy)
        self.save_button.setEnabled(not busy and has_plan)
        self.save_action.setEnabled(not busy and has_plan)
        self.check_button.setEnabled(not busy and has_plan)
        self.check_action.setEnabled(not busy and has_plan)
        for act in getattr(self, "open_actions", ()):
            act.setEnabled(not busy)
        if hasattr(self, "curve_action"):  # as its button (the plan panel's rule: scores and a slider to move)
            self.curve_action.setEnabled(self.plan_panel.curve_button.isEnabled())
        if hasattr(self, "export_action"):
            self.export_action.setEnabled(not busy and self.engine.scores is not None
                                          and self.engine.loaded is not None)
            self.import_action.setEnabled(not busy and self.engine.source is not None)
        why = self._why_off()
        for button in (self.save_button, self.check_button, self.plan_panel.curve_button):
            _say_why_off(button, why)

    def _why_off(self) -> str:
        """Why Save, Check and the quality curve are off, for their tooltips (they said what they do, not what they
        waited for; a walkthrough)."""
        if self.busy:
            return "a job is running (Esc or Cancel stops it)"
        if self.engine.source is None:
            return "open a model, then Score its layers"
        if self.plan is None or not self._scores_behind_plan:
            return "Score the layers first"
        return "move the slider to remove at least one layer"

    @property
    def plan_is_usable(self) -> bool:
        """A plan on screen that Check and Save can act on: layers to remove, and the engine's scores behind it (a
        rescore that loaded the model again, in another mode, and then failed leaves none)."""
        return self.plan is not None and bool(self.plan.removed) and self._scores_behind_plan

    @property
    def _scores_behind_plan(self) -> bool:
        """The engine holds the model and the scores a plan on screen comes from."""
        engine = self.engine
        return engine.loaded is not None and engine.scored_spec is not None and engine.sizes is not None

    def _update_status(self) -> None:
        loaded = self.engine.loaded if not self.busy else None
        info = self.memory_view.info if self.memory_view is not None else self.engine.info
        if loaded is not None:
            device = f"Device: {loaded.device}, {loaded.dtype}"
        elif info is not None:
            device = f"Device: {info.device}, {info.dtype}"
        else:
            device = f"Device: {self.settings_panel.device_label()}"
        self.device_label.setText(device)
        rss, total = process_memory(), total_memory()
        text = f"Memory: {human_bytes(rss)}" if rss else "Memory: —"
        if total:
            text += f" of {human_bytes(total)}"
        current_device = loaded.device if loaded is not None else (info.device if info else "")
        gpu = gpu_memory(current_device)
        if gpu is not None:
            text += f" · GPU {human_bytes(gpu[0])} of {human_bytes(gpu[1])}"
        self.memory_label.setText(text)

    # ============================================================================================== jobs

    def _on_job_started(self, name: str) -> None:
        self._cancel_asked, self._stage = False, ""
        self._job_started = time.monotonic()
        # each job's start in the Log: a Score pressed again right after one ended, then cancelled, read as a cancel
        # of the scoring that had just finished ("scoring finished", then "cancel requested for score")
        log.info("%s started", job_title(name))
        if name != "open":  # why a model could not be opened stayed under the open model's facts from then on
            self.model_panel.set_message("")
        # The last job's word is not this one's: three failed saves ran under "Saved the pruned model … to …". The
        # model reopened at start is no one's job: the notes on the settings read at start stay
        if not self._quiet_open:
            self.statusBar().clearMessage()
        self._set_busy(True)
        self.progress.setRange(0, 0)
        self.progress_label.setText(self.job_progress.started(name))
        self.progress_label.set_note("")

    def _on_job_finished(self, name: str, outcome: str) -> None:
        self._set_busy(False)
        # a cancelled scoring keeps what it measured (partial scores, which can be exported)
        measured = outcome == "ok" or (name == "score" and outcome == "cancelled")
        if measured and name in MEASURING_JOBS and self.engine.scores is not None:
            seconds = time.monotonic() - self._job_started
            if name != "score":
                self.unkept[name] = self.unkept.get(name, 0.0) + seconds
            elif self.engine.scores is not self._scores_before:  # new scores replace the old
                self.unkept["score"] = seconds
        elif outcome == "ok" and name == "import":
            self.unkept.clear()  # the scores came from a file, and a check or a curve went with the scores before
        elif outcome == "ok" and name == "save":
            for kept in ("score", "check"):  # in the saved card; a quality curve is in no file
                self.unkept.pop(kept, None)
        if self._probed_later is not None:
            choices, self._probed_later = self._probed_later, None
            self._on_probed(choices)
        if outcome == "ok" and name in TIMED_IN_THE_LOG:
            log.info(self.job_progress.took(name, time.monotonic() - self._job_started))
        self.model_panel.hide_download()
        self.progress_label.setText(self.job_progress.finished(outcome, name))
        self.progress_label.set_note("")
        if name == "save" and outcome == "ok" and self._saved_line:
            # a status-bar line for 15 s was all a save left, and nothing opened the folder
            self.progress_label.setText(self._saved_line)
        self._update_status()
        follow = self._after_open
        self._after_open = None
        self.jobFinished.emit(name, outcome)
        if self._closing:
            return
        if self._estimate_after_job:  # the format box left as it was while the job ran follows the settings now
            self._estimate_after_job = False
            self._memory_timer.start()
        if name == "open" and outcome == "ok" and follow == "score":
            self.start_scoring()

    def _on_progress(self, name: str, stage: str, done: int, total: int, partial: Any) -> None:
        self._stage = stage
        if self._closing:
            return
        view = self.job_progress.update(stage, done, total, partial, streamed=self.engine.is_streamed,
                                        metric=self._scoring_metric or "")
        if view.download is not None:
            self.model_panel.show_download(*view.download)
        if view.bar is not None:
            self.progress.setRange(0, view.bar[1])
            self.progress.setValue(view.bar[0])
        else:
            self.progress.setRange(0, 0)
        self.progress_label.setText(view.text)
        if view.scores is not None:
            self.chart.set_scores(view.scores)

    def cancel(self) -> None:
        if self.jobs.busy:
            self._after_open = None  # Score pressed before the model was opened: not started after a Cancel
            self.jobs.cancel()
            self._cancel_asked = True  # a job that ends anyway says so (a Cancel near the end went unsaid)
            self._disable_cancel_button()  # asked: a second click did nothing more
            self.progress_label.setText(self.job_progress.cancelling())
            log.info("cancel requested for %s", self.jobs.current)

    def _disable_cancel_button(self) -> None:
        """Cancel off, its focus (it was clicked, or pressed from the keyboard) passed on as at a job's start: not left
        in the read-only prompt, its text selected, where the next key typed replaced the prompt once the job ended;
        the control the job was started from gets it back then (a window walkthrough)."""
        had_focus = self.cancel_button.hasFocus()
        self.cancel_button.setEnabled(False)
        if had_focus:
            self._focus_landed = self._unless_in_prompt(QApplication.focusWidget())

    def _unless_in_prompt(self, landed: QWidget | None) -> QWidget | None:
        """Where Qt passed the focus from a control that was disabled: not the read-only prompt, its text selected
        (keys went nowhere visible while the job ran; Esc and the window's shortcuts work without a focused
        control)."""
        if landed is self.compare_panel.prompt and self._focus_before_job is not landed:
            landed.clearFocus()
            return None
        return landed

    # ---------------------------------------------------------------------------------------------- probe

    def _start_probe(self) -> None:
        if self._closing:
            return
        self.background.start("probe", lambda progress, cancel: probe_devices(),
                              on_success=self._on_probed, on_failure=self._on_probe_failed)

    def _on_probed(self, choices: list) -> None:
        if self.busy:  # the sizes follow the device: not under a job that read them as it started (said after it)
            self._probed_later = choices
            return
        self.probe_error = None
        missing = self.settings_panel.set_devices(choices, probed=True)
        if missing is not None:
            self.statusBar().showMessage(f"The device chosen last time ({missing}) is not here; jobs use "
                                         f"{self.settings_panel.device_label()}.", 15000)
        self._update_status()
        self.devicesProbed.emit()

    def _on_probe_failed(self, failure: Failure) -> None:
        self.probe_error = failure.message
        log.warning("could not list devices: %s", failure.message)
        self.devicesProbed.emit()

    # ----------------------------------------------------------------------------------------------- open

    def open_model(self, text: str, then: str | None = None) -> None:
        """Resolve and inspect a model (downloading a Hub model first); ``then="score"`` scores after.

        What is on screen stays until the new model has been found: a mistyped path costs nothing.
        """
        text = typed_model(text)  # as the box reads it: a Hub page's address opened as its id, as Score opens it
        if self.busy or not text:
            return
        source = self.engine.source
        if source is not None and self.engine.scores is not None and names_one_model(text, source.spec):
            # Enter in the field, Open, or the same recent entry: reopening would throw the scores away (hours of
            # a big model's scoring), the plan and the check with them, for the model that is open already.
            self.model_panel.set_text(source.spec)
            self.model_panel.set_message("")  # why a path typed before could not be opened stayed under it
            if self.progress_label.text() == ended_line("failed", "open"):  # and that it failed, under the buttons
                self.progress_label.setText("")
            self.statusBar().showMessage(f"{source.display_name} is open already; its scores are kept.", 10000)
            return
        if not self._may_drop_measured(f"Open {text}?", f"Opening {text}", f"Open {text} anyway?"):
            self._show_open_model()
            return
        self.model_panel.set_text(text)
        self._after_open = then
        spec = self.job_spec(model=text)
        self.model_panel.set_message("")
        self.jobs.start(
            "open", self.session.open_job(spec),
            on_success=self._on_opened, on_failure=self._on_open_failed, on_cancel=self._on_open_cancelled,
        )

    def reopen_last_model(self) -> None:
        """At start: the model named last time is opened again (its description only: no weights are read) where it
        is a file or folder on this machine; its fields showed "—" until Score, though the box named it. A Hub id is
        not: opening it may download."""
        text = self.model_panel.text
        if not text or self.busy or self.engine.source is not None:
            return
        try:
            absolute = Path(text).is_absolute()
            local = absolute and Path(text).exists()
        except OSError:  # a folder one may not enter: Score says so
            absolute = local = False
        if absolute and not local:  # moved or deleted since: said at start, not first by Score's dialog
            said = f"The model opened last, {text}, is no longer there; open another."
            self.model_panel.set_message(said)
            log.warning("%s", said)
            return
        if local:
            self._quiet_open = True  # a model that no longer opens is said under the box, not in a dialog each start
            self.open_model(text)

    def _may_drop_measured(self, title: str, doing: str, question: str) -> bool:
        """Whether what was measured on the open model may go (asked where it took a minute or more and was not
        saved or exported): a model dropped on the window by mistake, or a close, threw away an hour's scoring of a big
        model without a word."""
        source = self.engine.source
        if source is None or not self._unkept_worth_asking():
            return True
        kept = (" (File → Export scores… keeps the scores and the plan to import later, not a check or a curve)"
                if "score" in self.unkept else "")
        return dialogs.ask_yes_no(
            self, title,
            f"{doing} drops what was measured on {source.display_name} and neither saved nor exported: "
            f"{self._unkept_parts()}{kept}. {question}")

    def _unkept_parts(self) -> str:
        """What :attr:`unkept` holds, in words: "its layer scores (6 min 2 s) and its quality curve (3 min 43 s)"; the
        question said "layer scores, plan and check" after a curve alone."""
        words = {"score": "layer scores", "check": "check", "curve": "quality curve"}
        parts = [f"its {words[name]} ({human_seconds(seconds)})" for name, seconds in self.unkept.items()]
        return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]

    @property
    def unkept_seconds(self) -> float:
        return sum(self.unkept.values())

    def _unkept_worth_asking(self) -> bool:
        """A minute or more of measuring on the open model, scores still held, neither saved nor exported."""
        return self.engine.scores is not None and self.unkept_seconds >= ASK_BEFORE_DROPPING_SECONDS

    def _unkept_note(self) -> str:
        """What closing drops beside the running job, for its "Stop it and close?" question (the unsaved-measuring
        question is not asked then: its Yes stood for both)."""
        source = self.engine.source
        if source is None or not self._unkept_worth_asking():
            return ""
        return f" What was measured on {source.display_name} before it, neither saved nor exported, goes too: " \
               f"{self._unkept_parts()}."

    def _reset_view(self, message: str) -> None:
        """A new model: nothing measured on the old one stays on screen."""
        self._forget_plan()
        self.plan_panel.forget_curve_range()
        self.unkept.clear()
        self.last_saved, self._saved_line = None, ""
        if hasattr(self, "open_saved_action"):  # it stayed on, and did nothing, after another model was opened
            self.open_saved_action.setEnabled(False)
        self.chart.clear(message)
        self.compare_panel.clear()
        self.progress_label.setText("")
        self._chart_back_in_view()

    def _chart_back_in_view(self) -> None:
        """The chart in view again once the check it made room for is gone (a new model, or the layers scored again):
        at 1024 × 600 only the bars' bottom edge showed, the pane scrolled to the check's Quality curve button and the
        check's room kept (a walkthrough). The split the user had before the check comes back."""
        given, self._right_sizes_given = self._right_sizes_given, None
        sizes = self.right_splitter.sizes()
        if given is not None and len(given) == len(sizes) == 2 and sum(given) and sum(sizes):
            bottom = round(sum(sizes) * given[1] / sum(given))
            self.right_splitter.setSizes([sum(sizes) - bottom, bottom])
        self.top_scroll.verticalScrollBar().setValue(0)

    def _forget_plan(self) -> None:
        """No plan, no slider range and no curve: the scores they came from are gone."""
        self.plan = None
        self.manual = False
        self.plan_panel.set_maximum(0)
        self.plan_panel.show_plan(None)
        self.plan_panel.clear_curve()
        self._curves.clear()

    def _on_opened(self, info: ModelInfo) -> None:
        self._quiet_open = False
        source = self.engine.source
        assert source is not None
        earlier = earlier_removed(source)
        said = f" {pruned_before(info.n_layers, earlier)}" if earlier else ""
        self._reset_view(f"{info.n_layers} layers.{said} Press Score to measure each one's importance.")
        self.plan_panel.set_formats(self.engine.formats(), self.engine.resolved_format)
        self.model_panel.set_info(info, earlier)
        self._memory_timer.start()  # which way it runs, and what each way needs
        self.model_panel.remember(source.spec)
        self.setWindowTitle(f"{source.display_name} — ShortGPT Desktop")
        self.store.set_recent_models(self.model_panel.recent())
        self.store.set_last_model(model_key(source.spec))
        # a Hub model's files: where they lie (downloaded there now, or found there), which nothing said
        where = f" (from the Hub cache, {source.folder})" if source.repo_id else ""
        log.info("opened %s%s: %s, %d layers, %s parameters%s", source.display_name, where, info.architecture,
                 info.n_layers, f"{info.n_params:,}", f". {said.strip()}" if said else "")

    def _on_open_failed(self, failure: Failure) -> None:
        quiet, self._quiet_open = self._quiet_open, False
        self._show_open_model()
        self.model_panel.set_message(failure.message)
        if quiet:  # the reopening at start: nobody asked for it now
            log.warning("The model open last could not be opened again: %s", failure.message)
            return
        self.show_error("The model cannot be opened", failure)

    def _on_open_cancelled(self) -> None:
        self._quiet_open = False
        self._show_open_model()
        self.model_panel.set_message("Opening was cancelled.")

    def _acts_on_open_model(self, action: str) -> bool:
        """Whether ``action`` (Check, Save, the quality curve) may go on. A model typed into the box without Enter or
        Open is not open: the action would act on the open model, whose scores the plan holds, while the box names
        the other. The user is asked; on Yes the box names the open model again."""
        typed, source = self.model_panel.text, self.engine.source
        if source is None or not typed or names_one_model(typed, source.spec):
            return True
        name = source.display_name
        if not dialogs.ask_yes_no(
                self, f"{action}: {name}?",
                f"The Model box names {typed}, which is not open (press Enter or Open to open it). {action} acts on "
                f"the open model, {name}, whose layers were scored. Go on with {name}?"):
            return False
        self.model_panel.set_text(source.spec)
        return True

    def _show_open_model(self) -> None:
        """After an open that did not happen, the field names the model the window still holds: Save and Check
        act on it, and the field naming the other model made its plan look like that one's."""
        if self.engine.source is not None:
            self.model_panel.set_text(self.engine.source.spec)

    # ---------------------------------------------------------------------------------------------- score

    def start_scoring(self) -> None:
        if self.busy:
            return
        self.plan_panel.flush()  # a slider move still pending is planned now, not on this thread during the job
        text = self.model_panel.text
        if not text and self.engine.source is None:
            self.show_error("No model", "Choose a model first: a Hub id, a model folder or a .gguf file.")
            return
        if not self.calibration_panel.sources():
            self.show_error("No calibration text",
                            "The calibration set is empty: add text files or folders, or tick the "
                            "built-in corpus.")
            return
        if self.engine.source is None or (text and not names_one_model(text, self.engine.source.spec)):
            self.open_model(text, then="score")
            return
        # the scores shown, and a check or a curve measured for them, go: a stray Ctrl+R threw away ten minutes of
        # them without a word, and scoring with another metric half an hour's scores
        spec = self.job_spec()
        try:  # a metric one layer at a time cannot run: said at the click, not as "Scoring failed" after the load
            self.engine.refusal(spec, spec.metric, scoring_only=True)
        except UserError as exc:
            self.show_error("Cannot score", user_message(exc))
            return
        if not self._may_drop_measured("Score again?", "Scoring again", "Score again?"):
            return
        metric = METRICS[spec.metric]
        self._scoring_metric = spec.metric
        n = self.engine.n_layers
        self._scores_before = self.engine.scores
        self.chart.clickable = False
        self.chart.set_extra({})
        self.chart.set_metric(metric.live_label or metric.label, metric.refines and not metric.live_label)
        if metric.needs_text:
            self.chart.set_scores([None] * n, removed=[])
        # the check goes with the scores it was made for (asked above): it said "the plan or its settings changed since
        # the last check" where neither had (a walkthrough)
        self.compare_panel.mark_stale("The layers were scored again since the last check")
        self._chart_back_in_view()  # the bars grow as they are measured
        self.jobs.start(
            "score", self.session.score_job(spec),
            on_success=self._on_scored, on_failure=self._on_score_failed, on_cancel=self._on_score_cancelled,
        )

    def _on_scored(self, scored: Scored, keep_picked: bool = True, cancelled: bool = False) -> str:
        """``keep_picked``: a plan picked by hand (or listed by an imported file) stays where the new scores allow
        it: Score again, with more samples or another metric, replaced the layers the user had clicked with the
        slider's without a word (False: an imported file's own plan follows). Returns what was said of that plan
        ("": nothing picked), for a cancelled scoring's own status line (``cancelled``: that line replaces the
        scored one; imported partial scores keep theirs)."""
        first = self.plan is None
        picked = (list(self.plan.removed), self.manual_by, self._listed_in) \
            if keep_picked and self.manual and self.plan is not None and self.plan.removed else None
        self.plan_panel.clear_curve()  # it was for the previous scores
        self._curves.clear()
        for gone in ("check", "curve"):  # closing listed them as still to lose
            self.unkept.pop(gone, None)
        n = scored.n_layers
        # A scoring cancelled one layer at a time leaves the later layers unscored, and a pass whose states overflowed
        # leaves NaN: the plan can take only the others
        most = min(self.engine.max_removable, scored.scores.known_layers)
        self.plan_panel.set_maximum(most)
        count = min(most, self.plan_panel.count if not first and self.plan_panel.count else
                    max(1, int(defaults.RATIO * n)))
        self._show_metric(scored.scores.metric, scored.partial)
        self.plan_panel.set_count(count)
        self.set_count(count)
        kept = self._keep_picked(picked, scored) if picked is not None else ""
        for warning in scored.warnings:
            log.warning(warning)
        self.calibration_panel.set_scored_skips(scored.warnings)
        self._say_scored(scored)
        if kept:
            log.info("%s", kept)
            said = self.statusBar().currentMessage() if not cancelled else ""  # a cancel says its own
            self.statusBar().showMessage(f"{said} {kept}".strip(), 15000)
        self._memory_timer.start()  # the Runs line: the way it was scored is the way the settings ask now
        return kept

    def _keep_picked(self, picked: tuple[list[int], str, str], scored: Scored) -> str:
        """The plan picked by hand before a new scoring shown again where the new scores allow it (the words that say
        so), else what replaced it and why."""
        removed, by, listed_in = picked
        scores = scored.scores.scores
        unscored = [i for i in removed if i >= len(scores) or not is_known(scores[i])]  # NaN: no score either
        # the file named: after a second import (of a file listing no plan) "the imported file" read as that one
        whose = "picked by hand" if by == BY_HAND else f"{Path(listed_in).name or 'the imported file'} listed"
        layers = "layer" if len(removed) == 1 else "layers"
        if unscored or len(removed) > self.plan_panel.slider.maximum():
            why = (f"the new scores do not cover {'layer' if len(unscored) == 1 else 'layers'} {layer_list(unscored)}"
                   if unscored else f"at most {self.plan_panel.slider.maximum()} layers can go")
            return f"The plan {whose}, {layers} {layer_list(removed)}, gave way to the slider's: {why}."
        if self.plan is not None and self.plan.removed == removed:
            return ""  # the new scores' own plan for that count: nothing picked to keep
        self._show_given_plan(removed, by, listed_in)
        return f"The plan {whose} stays: {layers} {layer_list(removed)} (move the slider for the new scores' own)."

    def _show_metric(self, metric: str, partial: bool = False) -> None:
        """Name the metric of the scores on the chart, and whether its plan measures its choice (bi+)."""
        self.chart.set_metric(METRICS[metric].label + (" (partial)" if partial else ""), METRICS[metric].refines)

    def _say_scored(self, scored: Scored) -> None:
        """What came in, in the log and the status bar: an import said "Scored 6 layers in 1 ms", and a cancelled
        pass "scoring finished … (128 samples, 1,536 tokens)", the samples asked beside the tokens measured."""
        n, seconds = scored.n_layers, human_seconds(scored.seconds)
        if scored.imported:
            name = Path(str(scored.imported.get("file") or "")).name or "the file"
            said = f"Imported the scores of {n} layers from {name}{_measured_on(scored.imported)}."
            log.info("%s", said)
            self.statusBar().showMessage(said, 15000)
            return
        where = f"on {scored.device}, {scored.dtype}"
        if scored.partial:  # the status bar says what the scores come from (_on_score_cancelled)
            log.info("scoring cancelled after %s: the scores come from %s tokens, part of the %d samples asked (%s)",
                     seconds, f"{scored.sample_tokens:,}", scored.sample_count, where)
            return
        tokens = f"{counted(scored.sample_count, 'sample')}, {scored.sample_tokens:,} tokens, " \
            if scored.sample_count else ""
        log.info("scoring finished in %s (%s%s)", seconds, tokens, where)
        late = "Scoring ended before it could be cancelled: s" if self._cancel_asked else "S"
        self.statusBar().showMessage(f"{late}cored {n} layers in {seconds}.", 8000)

    def _restore_chart(self) -> bool:
        """After a scoring (or import) job that failed or was cancelled: the scores shown before it, where the
        engine still holds them (True). Where it holds none (the job loaded the model again, in another mode,
        before it stopped) the plan, the curve and the check's figures go too: nothing is left to act on."""
        previous = self._scores_before
        kept = self.engine.scores
        if previous is not None and kept is not None and self.engine.sizes is not None and self.plan is not None:
            # The bars, the other metrics' lines and the check's figures as they were: the job cleared the lines and
            # called the check stale, though nothing it measured had changed.
            self._show_metric(kept.metric)
            self._show_plan(self.plan)  # the check's figures too, where they stand (the prompt's own included)
            return True
        self.chart.clear("Press Score to measure each layer's importance.")
        # the empty chart kept the pass's "Block Influence (live)" beside the Metric box's "Block Influence+"
        self._show_metric(self.job_spec().metric)
        if kept is None or self.engine.sizes is None:
            self._forget_plan()
            self.compare_panel.mark_stale()
            self._update_buttons()
        return False

    def _on_score_failed(self, failure: Failure) -> None:
        self._restore_chart()
        self.show_error("Scoring failed", failure)

    def _on_score_cancelled(self) -> None:
        scored = self.engine.scored
        if scored is not None and scored.partial:
            kept = self._on_scored(scored, cancelled=True)
            known = scored.scores.scored_layers
            if known < len(scored.scores.scores):  # one layer at a time: every token, for the first layers
                message = (f"Scoring cancelled: {known} of {scored.n_layers} layers were scored (partial); the plan "
                           "can remove only those.")
            else:
                message = (f"Scoring cancelled: the scores shown come from the {scored.sample_tokens:,} tokens "
                           "measured so far (partial).")
            # what became of a plan picked by hand: "gave way" is mostly this case (layers left unscored)
            self.statusBar().showMessage(f"{message} {kept}".strip(), 15000)
            return
        self._say_cancelled("Scoring")

    def _say_cancelled(self, job: str) -> None:
        """After a scoring or import job was cancelled: the scores before it back, and whether anything changed."""
        restored = self._restore_chart()
        self.statusBar().showMessage(f"{job} cancelled; " + ("nothing changed." if restored
                                                               else "press Score to measure the layers."), 8000)

    # ----------------------------------------------------------------------------------------------- plan

    def set_count(self, count: int) -> None:
        """The slider moved: remove the ``count`` lowest-scored layers. Not while a job uses the engine from its
        thread (a move delivered late, after the job began): the plan is made again when the job ends."""
        if self.engine.sizes is None or self.engine.scores is None or self.busy:
            return
        try:
            plan = self.engine.plan(count=count)
        except PlanError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            if self.plan is not None:  # the slider shows the plan that stands
                self.plan_panel.set_count(len(self.plan.removed))
            return
        self.manual = False
        self._show_plan(plan)

    def set_output_format(self, fmt: str) -> None:
        """The "Save as" box changed: sizes follow the format that will be written."""
        try:
            self.engine.set_output_format(fmt or None)
        except UserError as exc:
            self.show_error("This format cannot be written", user_message(exc))
            self.plan_panel.set_formats(self.engine.formats(), self.engine.resolved_format)
            return
        self._replan()

    def _replan(self) -> None:
        """The plan on screen again, with the sizes for the current format and settings (none while there are no
        scores: a rescore that failed or was cancelled leaves the last plan on screen)."""
        if self.plan is not None and self.engine.sizes is not None:
            plan = self.engine.plan(layers=self.plan.removed) if self.manual else self.engine.plan(
                count=len(self.plan.removed))
            self._show_plan(plan)

    def toggle_layer(self, index: int) -> None:
        """A click on bar ``index``: keep it if the plan removes it, remove it otherwise."""
        if self.busy or self.engine.sizes is None or self.plan is None:
            return
        removed = set(self.plan.removed) ^ {index}
        if len(removed) > self.engine.max_removable:
            self.statusBar().showMessage("At least one layer must stay.", 6000)
            return
        count_plan = self._count_plan(len(removed))
        if (count_plan is not None and not count_plan.chosen_later
                and sorted(count_plan.removed) == sorted(removed)):
            # a click that gives back the count's own plan (bi+'s measured one) is that plan again: clicked off and
            # on, it read "chosen by hand", and Save's card said "picked by hand", metric "manual" (a walkthrough).
            # Not a plan bi+ will still measure: the layers clicked are the ones the user chose to cut.
            self.plan_panel.set_count(len(removed))
            self.manual = False
            self._show_plan(count_plan)
        else:
            self._show_given_plan(sorted(removed), BY_HAND)
        end = {0: "first", self.engine.n_layers - 1: "last"}.get(index)
        if end and index in removed:  # said before the check's gibberish (121.7 -> 279,892.6 with both ends removed)
            said = (f"Layer {index} is the {end} layer: removing it usually breaks the model (the paper found that "
                    "removing the first or the last layers destroys it).")
            self.statusBar().showMessage(said, 12000)
            log.warning(said)  # cut at 1024 pixels by the device and memory labels, and gone after 12 s

    def _count_plan(self, count: int) -> PrunePlan | None:
        """The plan the slider would show for ``count`` (None where there is none: no layer removed, or more than
        may go)."""
        if count < 1:
            return None
        try:
            return self.engine.plan(count=count)
        except PlanError:
            return None

    def _show_given_plan(self, removed: list[int], by: str, listed_in: str = "") -> None:
        """A plan no count of the scores chose: ``removed`` as given ``by`` (:data:`BY_HAND`, or :data:`FROM_FILE`:
        the scores file ``listed_in``)."""
        plan = self.engine.plan(layers=removed)
        self.manual, self.manual_by, self._listed_in = True, by, listed_in
        self.plan_panel.set_count(len(plan.removed))
        self._show_plan(plan)

    def _show_listed_plan(self, removed: list[int], file: str, left_out: Sequence[str] = (),
                          repeated: Sequence[int] = (), whose: str = "the file's") -> str:
        """The plan an imported scores file lists, shown as it was exported (the slider's plan for its count was
        shown instead, and a plan chosen by hand or measured by bi+ was lost); the words that say so, and what of
        it is left out (``left_out``: what it lists that is not a layer; ``repeated``: layers it lists more than
        once; a plan these scores cannot show), '' where the file lists no plan."""
        scores, removed = self.engine.scores, sorted(set(removed))
        dropped = (f" The file's plan lists {listed(list(left_out))}, not "
                   f"{'a layer' if len(left_out) == 1 else 'layers'} of this model: left out." if left_out else "")
        if repeated:
            dropped += (f" It lists {'layer' if len(repeated) == 1 else 'layers'} {layer_list(sorted(repeated))} more "
                        "than once: once is kept.")
        if not removed or scores is None or self.engine.sizes is None:
            return dropped
        unscored = [i for i in removed if scores.scores[i] is None]
        if len(removed) > self.plan_panel.slider.maximum() or unscored:  # not a plan these scores allow
            why = (f"it removes layer{'s' if len(unscored) > 1 else ''} {layer_list(unscored)}, which {whose} "
                   "scores do not cover" if unscored else
                   f"it removes {'all' if len(removed) == self.engine.n_layers else len(removed)} of the "
                   f"{self.engine.n_layers} layers, and at most {self.plan_panel.slider.maximum()} can go")
            return (f" The file's plan, {'layer' if len(removed) == 1 else 'layers'} {layer_list(removed)}, is not "
                    f"shown: {why}; the slider's plan is.{dropped}")
        self.plan_panel.set_count(len(removed))
        self.set_count(len(removed))
        if self.plan is not None and self.plan.removed == removed:
            return dropped  # the count's own plan: nothing more to say
        self._show_given_plan(removed, FROM_FILE, file)
        return (f" The plan shown is the file's, {'layer' if len(removed) == 1 else 'layers'} {layer_list(removed)}; "
                f"Check and Save remove {'it' if len(removed) == 1 else 'those'} (move the slider for the scores' "
                f"own).{dropped}")

    def _standing_check(self, plan: PrunePlan) -> Any:
        """The check whose figures stand for ``plan`` with the settings on screen (None: none). Another prompt leaves
        them standing: perplexity, fidelity and the quiz's questions do not read it (only whether it is empty, which
        the panel says), Save wrote them to the card, and a slider moved away and back threw a 4-minute check away for
        an edited prompt; the panel marks its texts as the earlier prompt's
        (:meth:`.compare_panel.ComparePanel.show_checked`)."""
        return self.engine.checked_for(self.job_spec(), plan.removed) if self.engine.checked else None

    def _show_plan(self, plan: PrunePlan) -> None:
        if self.manual and self.manual_by == FROM_FILE and plan.metric == "manual":
            plan = dataclasses.replace(plan, listed_in=self._listed_in)  # said so in the card, not "picked by hand"
        self.plan = plan
        scores = self.engine.scores
        if scores is not None:
            self.chart.set_scores(scores.scores, removed=plan.removed)
            self.chart.set_extra({METRICS[name].label if name in METRICS else name: values
                                  for name, values in scores.extra.items()})
        else:
            self.chart.set_removed(plan.removed)
        self.plan_panel.show_plan(plan, manual=self.manual, by=self.manual_by)
        # Back at the plan checked last (the slider moved away and back), its figures again: the panel kept "press
        # Check again", and a 9-minute check was run again for the same numbers.
        checked = self._standing_check(plan)
        if checked is None:
            self.compare_panel.mark_stale()
        elif not self.compare_panel.shows(checked):
            self.compare_panel.show_checked(checked)
        self._update_buttons()

    # --------------------------------------------------------------------------------------------- settings

    def _on_setting_changed(self, name: str) -> None:
        self.store.set_settings(self.settings_panel.values())
        # What the estimate reads: the sizes, the way it runs, and the recipe (bi+'s caches, the repair, healing).
        if name in ("device", "dtype", "batch_size", "seq_len", "samples", "preset", "low_memory", "metric", "repair",
                    "heal_steps") and self.engine.source is not None:
            self._memory_timer.start()
        if name in ("repair", "refit", "heal_steps"):  # a GGUF writes the weights they change as Q8_0
            self.engine.set_weight_changes(self.job_spec())
            self._replan()  # the check's figures stay only where they are this recipe's (set back as it was)
            if self.plan is None:
                self.compare_panel.mark_stale()
            if name == "repair":
                self.plan_panel.clear_curve()  # drawn with (or without) the repair at each count
            self._restore_curve()  # its note says what of the recipe it leaves out (healing, the refit)
        if name in ("samples", "seq_len", "eval_windows", "preset"):
            self._note_scored_text_kept("sizes")
        way = self._scored_way() if name in ("low_memory", "device", "dtype") and not self.busy else None
        if way is not None:
            message = (f"Check, Save and the quality curve keep running the model as it was scored ({way}); press "
                       "Score to use the new settings.")
            self.statusBar().showMessage(message, 15000)
            log.info(message)
        if name == "metric":
            self._switch_metric(self.settings_panel.values()["metric"])
        if name == "device":
            self._update_status()

    def _switch_metric(self, metric: str) -> None:
        """Show another metric from the same pass when possible; otherwise say that it needs Score."""
        if self.engine.scores is None:
            return
        block = len(self.plan.removed) if self.plan is not None and self.plan.removed else 1
        scores = self.engine.rescore(metric, block)
        if scores is None:
            # Said until another metric is shown: the chart (and Check and Save) keep the scores on screen
            shown = METRICS[self.engine.scores.metric].label
            self.statusBar().showMessage(f"The chart still shows {shown}, which Check and Save use; press Score to "
                                         f"measure {METRICS[metric].label}.")
            return
        self.engine.use_scores(scores)
        self.plan_panel.clear_curve()  # it followed the other metric's order
        self._restore_curve()
        self._show_metric(metric)
        self.statusBar().showMessage(f"Showing {METRICS[metric].label}.", 8000)
        if self.manual and self.plan is not None:
            self._show_plan(self.plan)
        else:
            self.set_count(self.plan_panel.count)

    def _update_memory_estimate(self) -> None:
        source = self.engine.source
        if source is None or self._closing:
            return
        if self.background.busy and self.background.current == "memory":
            self._memory_timer.start()  # one estimate at a time; try again shortly
            return

        spec = self.job_spec()

        def outdated() -> bool:
            """Made for settings changed since (Low memory unticked while it ran showed "one layer at a time until
            the next Score, then one layer at a time (as asked)"): the estimate for these is started instead."""
            if self.job_spec() == spec:
                return False
            self._memory_timer.start()
            return True

        def done(view: MemoryView) -> None:  # on the window's thread; the engine is not touched
            if outdated():
                return
            if self.engine.source is source:
                self.memory_view = view
                scored = self._scored_mode()
                # the way Check and Save run until the next Score, where the settings now ask another
                streamed = view.streamed if scored is None else self.engine.is_streamed
                self.model_panel.set_memory(view.info, streamed)
                refused = self.session.format_refused("safetensors", streamed)
                # not under a job, whose format must not change: the estimate runs again when it ends
                self._estimate_after_job = self._estimate_after_job or self.busy
                if self.plan_panel.refuse_format("safetensors", GGUF_STAYS_GGUF if refused else "",
                                                 switch=not self.busy):
                    self.statusBar().showMessage(
                        "Saving as GGUF while the model runs one layer at a time: its safetensors copy would need the "
                        "whole model in memory." if refused else "Saving as safetensors again, as chosen: the model "
                        "runs whole.", 15000)
                mode = view.mode if scored is None else f"{scored} until the next Score, then {view.mode}"
                self.model_panel.set_mode(mode, view.details)
                self._update_status()

        def failed(failure: Failure) -> None:  # an error for the settings before (a device gone) as well
            if not outdated() and self.engine.source is source:
                self.model_panel.set_memory_error(failure.message)

        self.background.start("memory", self.session.memory_job(spec), on_success=done,
                              on_failure=failed)

    def _scored_mode(self) -> str | None:
        """How Check, Save and the curve run the model (``one layer at a time``) where Low memory, the device or the
        dtype now ask another way: they keep the way it was scored, on which the scores, the repair and the caches
        were made. None where the settings still ask that way."""
        scored = self.engine.scored_spec
        if scored is None or self.engine.loaded is None:
            return None
        now = self.job_spec()
        if (now.low_memory, now.device, now.dtype) == (scored.low_memory, scored.device, scored.dtype):
            return None
        return STREAMED_MODE if self.engine.is_streamed else "whole, in memory"

    def _scored_way(self) -> str | None:
        """:meth:`_scored_mode` with the device and dtype: ``one layer at a time, on cpu in float32``."""
        mode, loaded = self._scored_mode(), self.engine.loaded
        return None if mode is None or loaded is None else f"{mode}, on {loaded.device} in {loaded.dtype}"

    def _refusal(self, exc: UserError) -> str:
        """A refusal of Check or Save, with the way they run the model where the settings now ask another (a GGUF
        scored one layer at a time is saved as GGUF though Low memory is off now: Score loads it whole)."""
        way = self._scored_way()
        if way is None:
            return user_message(exc)
        # "…or untick 'Low memory' in Settings" was said with it unticked already: the scored way is what holds
        message = str(exc).rstrip() if exc.hint == Hint.LOW_MEMORY_METRIC else user_message(exc)
        return f"{message} Check and Save run the model as it was scored ({way}); press Score to use the new settings."

    def _note_scored_text_kept(self, what: str) -> None:
        """The calibration text or its sizes changed after scoring: Check, Save and the curve go on with the text
        and sizes the layers were scored on (the repair is fitted on them), which the user is told."""
        if self.engine.scored_spec is None or self.busy:
            return
        if what == "text":
            message = ("The calibration text changed: Check, Save and the quality curve keep using the text the layers "
                       "were scored on; press Score to use the new one.")
        else:
            # which size, and the one that holds: "the sample sizes changed" was said of the check windows, whose new
            # count the field showed while each Check measured the old one (the held-out windows are cut from the
            # same text as the samples, so they change together; a walkthrough)
            scored, now = self.engine.scored_spec, self.job_spec()
            sizes = [(name, getattr(scored, key), getattr(now, key)) for name, key in
                     (("samples", "samples"), ("tokens per sample", "seq_len"), ("check windows", "eval_windows"))]
            changed = [f"{name} {new}, where the layers were scored with {old}" for name, old, new in sizes
                       if old != new]
            if not changed:  # back as scored
                return
            message = (f"Changed after scoring: {'; '.join(changed)}. Check, Save and the quality curve keep the "
                       "scored sizes (the check's windows are cut with the samples); press Score to use the new ones.")
        self.statusBar().showMessage(message, 15000)
        log.info(message)

    def _on_calibration_problem(self, message: str) -> None:
        self.show_error("Calibration text", message)

    # ------------------------------------------------------------------------------------- scores as JSON

    def export_scores(self, path: str | Path | None = None) -> Path | None:
        """Write the current scores (the report's JSON, with ``partial``) to ``path`` or a chosen file."""
        scored = self.engine.scored
        if self.busy or scored is None or self.engine.scores is None:
            return None
        source = self.engine.source
        name = model_file_name(source)
        if path is None:
            folder = self.store.scores_dir() or str(Path.home())
            path = dialogs.ask_scores_save_path(self, str(Path(folder) / f"{name}-{self.engine.scores.metric}.json"))
            if not path:
                return None
        try:
            report = self.engine.report(self.engine.plan(0))  # the scores' own metric (a plan by hand has none)
            plan = self.plan or self.engine.plan(0)
            # The plan on screen whole: only its removed layers were set, beside plan(0)'s kept layers and sizes
            report.removed_layers, report.kept_layers = list(plan.removed), plan.kept
            report.params_after, report.bytes_after = plan.params_after, plan.bytes_after
            if plan.removed:  # what was fitted for those layers (plan(0)'s said "repair": "none" after a Check)
                shown = self.engine.report(plan)
                report.repair, report.repair_runs = shown.repair, shown.repair_runs
                report.heal_steps, report.heal_losses = shown.heal_steps, shown.heal_losses
                report.selection = shown.selection  # how bi+ chose them ("" was written after a Check chose them)
            spec = self.engine.scored_spec
            texts = [t for t in (*spec.calib, spec.eval_text) if t and t != BUILTIN_CORPUS] if spec else []
            written = write_scores(report, scored.partial, path, [spec.model] if spec else [], texts)
        except (UserError, OSError) as exc:
            self.show_error("Cannot export the scores", user_message(exc) if isinstance(exc, UserError)
                            else f"{path} cannot be written ({exc.strerror or exc}).")
            return None
        self.statusBar().showMessage(f"Exported the scores to {written}", 10000)
        self.store.set_scores_dir(str(Path(written).parent))
        self.unkept.pop("score", None)  # the file keeps the scores and the plan; a check's or a curve's figures not
        log.info("exported scores to %s", written)
        return written

    def import_scores(self, path: str | Path | None = None) -> None:
        """Show scores saved earlier for the opened model; the model loads (in a job) for its layer sizes.

        Only for the model that is open: the file's layer count and model name must match it.
        """
        source, info = self.engine.source, self.engine.info
        if self.busy:
            return
        if source is None or info is None:
            self.show_error("Cannot import the scores", "Open the model the scores are for first.")
            return
        if path is None:
            path = dialogs.ask_scores_open_path(self, self.store.scores_dir() or str(Path.home()))
            if not path:
                return
        try:
            imported = read_scores(path)
        except PlanOnlyFile as plan_only:
            self._import_listed_plan(plan_only, str(path))
            return
        except UserError as exc:
            self.show_error("Cannot import the scores", user_message(exc))
            return
        self.store.set_scores_dir(str(Path(path).resolve().parent))  # the next dialog opens there, matched or not
        if self._refused_as_another_models(imported, "scores"):
            return
        # the check and a quality curve go with the scores they were measured for (an 8-minute curve went unasked)
        if not self._may_drop_measured("Import the scores?", f"Importing {Path(path).name}", "Import them anyway?"):
            return
        spec = self.job_spec()
        self._scoring_metric = imported.scores.metric
        self._scores_before = self.engine.scores

        def imported_in(scored: Scored) -> None:  # the Metric box follows the scores shown, once they are in
            self.settings_panel.set_values({"metric": imported.scores.metric})
            self._on_scored(scored, keep_picked=not imported.removed)
            listed = self._show_listed_plan(imported.removed, str(path), imported.left_out, imported.repeated)
            if listed:
                self.statusBar().showMessage(self.statusBar().currentMessage() + listed, 20000)
                log.info("%s", listed.strip())

        def failed(failure: Failure) -> None:
            self._restore_chart()
            self.show_error("Cannot import the scores", failure)

        self.jobs.start(
            "import",
            lambda progress, cancel: self.engine.use_imported_scores(spec, imported.scores, imported.partial,
                                                                     progress, cancel, imported.origin),
            on_success=imported_in, on_failure=failed, on_cancel=lambda: self._say_cancelled("Import"),
        )

    def _refused_as_another_models(self, imported: ImportedScores | PlanOnlyFile, what: str) -> bool:
        """Whether the file's ``what`` ("scores", or a "plan" without scores) were measured on another model than the
        open one: refused, said, True."""
        source, info = self.engine.source, self.engine.info
        assert source is not None and info is not None
        revision = (source.revision or "main") if source.kind == "hub" else ""
        if same_model(imported, source.spec, source.display_name, info.n_layers, info.architecture, revision):
            return False
        title = f"Cannot import the {what}"
        these = "These scores are" if what == "scores" else "This plan is"
        at = (f" at revision {imported.revision}", f" at revision {revision}") \
            if imported.revision and revision and imported.revision != revision else ("", "")
        if another_model_of_the_same_name(imported, source.spec, info.n_layers):
            # "…are for /a/m.gguf (30 layers), not for the opened model m.gguf (30 layers)" read as a contradiction
            made, kept, them = (("These scores were measured on", "scores are kept for the very model they were "
                                 "measured on", "them") if what == "scores" else
                                ("This plan was made for", "a plan is kept for the very model it was made for", "it"))
            self.show_error(title, f"{made} {imported.model}, not {'on' if what == 'scores' else 'for'} the opened "
                            f"{source.spec}, though the two have the same name: {kept} (two runs' folders of one name "
                            f"are not one model); open that one to import {them}.")
            return True
        self.show_error(title, f"{these} for {imported.model or 'another model'}{at[0]} ({imported.n_layers} layers), "
                        f"not for the opened model {source.display_name}{at[1]} ({info.n_layers} layers).")
        return True

    def _import_listed_plan(self, listed: PlanOnlyFile, path: str) -> None:
        """A report that lists a cut's layers and no scores (``prune --remove … --json``): its plan shown on the open
        model's scores, as a scores file's plan is."""
        self.store.set_scores_dir(str(Path(path).resolve().parent))
        if self._refused_as_another_models(listed, "plan"):
            return
        if self.engine.scores is None or self.engine.sizes is None:
            self.show_error("Cannot import the plan", user_message(listed))
            return
        said = self._show_listed_plan(listed.removed, path, listed.left_out, listed.repeated, whose="these")
        if not listed.removed:
            said = f" It lists no layer of this model.{said}"
        self.statusBar().showMessage(f"Imported the plan of {Path(path).name}.{said}", 20000)
        log.info("imported the plan of %s.%s", path, said)

    # ----------------------------------------------------------------------------------------------- save

    def suggested_output(self) -> str:
        return suggested_output(self.engine, self.plan, self.store.save_dir())

    def save(self) -> None:
        """Ask for a folder (a new one named after the model and the plan is offered) and save the plan there."""
        self._save_asking(None)

    def _save_asking(self, suggestion: str | None) -> None:
        """:meth:`save`, the folder dialog offering ``suggestion`` (None: a new folder named after the plan)."""
        self.plan_panel.flush()
        if self.busy or self.plan is None or not self.plan.removed or not self._acts_on_open_model("Save"):
            return
        try:  # what no folder changes, before the folder is asked for (it was refused after the dialog)
            self.session.refuse_before_folder(self._final_spec())
        except UserError as exc:
            self.show_error("Cannot save", self._refusal(exc))
            return
        suggestion = suggestion or self.suggested_output()
        while out := dialogs.ask_output_folder(self, suggestion):
            outcome = self.save_to(out)
            if outcome == "folder refused" and self.last_dialog is not None:
                # The folder itself was refused (other files in it, no room on its disk): the dialog again once the
                # refusal is read, at that folder, where the user had to press Save and find the place again
                self.last_dialog.finished.connect(
                    lambda *_, again=out: QTimer.singleShot(0, lambda: self._ask_again(again)))
            if outcome != "declined":
                return
            suggestion = out  # No to "Replace folder?": the folder dialog again, not no save at all

    def _ask_again(self, refused: str) -> None:
        if not self._closing and self.isVisible():
            self._save_asking(refused)

    def save_to(self, out: str | Path, force: bool = False) -> str | None:
        """Save the current plan to ``out`` (asks before replacing a non-empty folder): "declined" where the user
        answered No to replacing it, "folder refused" where ``out`` itself was refused (another folder may do)."""
        if self.busy or self.plan is None:
            return None
        out = str(out)
        plan = self.plan
        try:  # what another folder would not change is said first, and the folder dialog is not asked again for it
            spec = self._final_spec()
            self.session.refuse_plan(plan, spec)
        except UserError as exc:
            self.show_error("Cannot save", self._refusal(exc))
            return None
        try:
            if not force and dialogs.folder_is_nonempty(out):
                # What replacing it would meet, before asking: a folder that cannot be replaced (the user's own
                # files, another model) is refused without a question whose Yes would be refused anyway.
                self.session.refuse_folder(plan, spec, out, True)
                if not dialogs.ask_yes_no(self, "Replace folder?",
                                          f"{out} holds an earlier output. Replace it with the pruned model?"):
                    return "declined"
                force = True
            self.session.refuse_folder(plan, spec, out, force)  # refused at once, not after a job has started
        except UserError as exc:
            self.show_error("Cannot save", self._refusal(exc))
            return "folder refused"
        cost = self._cost("save", spec, plan, check=False)
        self.jobs.start(
            "save", self.session.save_job(plan, spec, out, force), on_success=self._on_saved,
            on_failure=lambda f: self.show_error("Saving failed", f),
            on_cancel=lambda: self.statusBar().showMessage("Saving cancelled; nothing was written.", 8000),
        )
        self._announce(cost)

    def _cost(self, job: str, spec: JobSpec, plan: PrunePlan, check: bool) -> tuple[str, float | None]:
        """What the job about to start will cost, from the scoring pass's speed: worked out before it starts, as
        the job's thread changes what it reads (bi+'s measured choices, forgotten where the repair changed)."""
        by_hand = plan.removed if plan.metric == "manual" else None  # nothing chooses it (Engine.needs_refining)
        return self._worded(job, self.session.next_job_estimate(spec, len(plan.removed), check, by_hand))

    def _worded(self, job: str, estimate: Any) -> tuple[str, float | None]:
        text = self.job_progress.announced(job, estimate)
        if not text and estimate is None and self.engine.scored is not None:
            # Nothing timed this machine's speed: the job started without a word of its whole time (an import)
            why = ("the scores were imported, and no scoring here has timed this machine" if self.engine.scored.imported
                   else "the scoring was cancelled before it timed a whole pass" if self.engine.scored.partial
                   else "")
            if why:
                return (f"{job_title(job)}: no time said before it starts ({why}); each step says its own as it "
                        "goes…", None)
        return text, (estimate.total if text else None)

    def _announce(self, cost: tuple[str, float | None]) -> None:
        """Say the cost (:meth:`_cost`) under the buttons until the job's first progress, then beside each step's."""
        text, seconds = cost
        self.job_progress.keep_whole(seconds)
        if text:
            self.progress_label.setText(text)
            # The first progress replaces the line with its own step's time left: the whole job's stays in reach
            # (a Check said "about 87.9 s left" for its first step and took 9 minutes, nothing else in view).
            self.progress_label.set_note(f"Said as the job started: {text.rstrip('…')}")
            log.info("%s", text.rstrip("…"))

    def _final_spec(self) -> JobSpec:
        """The scoring's settings with the repair, healing and prompt chosen now."""
        return self.session.final_spec(self.job_spec())

    def _show_final(self, plan: PrunePlan) -> str:
        """A job refined the plan: show the layers that were really measured or written, and the size once the
        weights the repair and healing change are known. Returns a sentence where bi+ removed other layers than
        the lowest scores shown ("" otherwise), for the job's own message."""
        # 'up to' stayed when the fit came out exact, since only a changed size redrew the plan
        shown = ("removed", "notes", "bytes_after", "reencoded_at_most", "chosen_later", "measured")
        before = self.plan
        if before is None or any(getattr(plan, name) != getattr(before, name) for name in shown):
            self._show_plan(plan)
        return _chosen_otherwise(before, plan)

    def _on_saved(self, outcome: Any) -> None:
        plan, result, notes = outcome
        chosen = self._show_final(plan)
        self.last_saved = Path(result.folder)
        self.store.set_save_dir(str(self.last_saved.parent))
        removed = len(self.plan.removed) if self.plan else 0
        message = (f"Saved the pruned model ({removed} layer{'s' if removed != 1 else ''} removed, "
                   f"{human_bytes(model_bytes(result.folder, result.files))}) to {result.folder}")
        if chosen:
            message += f"; {chosen}"
        log.info(message)
        for note in notes:  # the figures beside it were measured before weights were re-quantized for the file
            log.warning(note)
        self.statusBar().showMessage(message, 15000)
        self._saved_line = f"{message} · File → Open the saved folder"
        self.open_saved_action.setEnabled(True)

    def open_saved_folder(self) -> None:
        """Show the folder the last Save wrote in the system's file manager."""
        folder = self.last_saved
        if folder is None:
            return
        if not folder.is_dir():
            self.show_error("Cannot open the saved folder", f"{folder} is no longer there.")
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.show_error("Cannot open the saved folder",
                            f"No file manager opened {folder}; the model is there to open by hand.")

    # ---------------------------------------------------------------------------------------------- check

    def check(self) -> None:
        self.plan_panel.flush()
        if self.busy or self.plan is None or not self.plan.removed or self.engine.scored_spec is None:
            return
        if not self._acts_on_open_model("Check"):
            return
        plan, spec = self.plan, self._final_spec()
        try:  # healing one layer at a time: said at the click, not after bi+'s measured choice has run
            self.engine.refusal(spec)
        except UserError as exc:
            self.show_error("Cannot check", self._refusal(exc))
            return
        self.compare_panel.show_measuring()

        cost = self._cost("check", spec, plan, check=True)
        self.jobs.start(
            "check", self.session.check_job(plan, spec),
            on_success=self._on_checked, on_failure=self._on_check_failed,
            on_cancel=self._on_check_cancelled,
        )
        self._announce(cost)

    def _make_room_for_check(self, scroll: bool = True) -> None:
        """Give the check's figures the height they need, from the chart and plan above (which scroll): at 1280 × 720
        the paragraph stopped at "remove fewer layers (the Quality curve shows" and each text showed two lines.
        Never less than the user gave them, nor so much that the buttons and a third of the pane go. ``scroll``: the
        plan above scrolls to its Quality curve button (after a check, not as the window is made smaller: the chart
        the user had scrolled to jumped back at every shrink)."""
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        sizes = self.right_splitter.sizes()
        if len(sizes) != 2 or not sum(sizes):
            return
        total = sum(sizes)
        needed = self._check_room_needed()
        bottom = min(max(sizes[1], needed), total - max(total // 3, self.top_minimum()))
        if bottom > sizes[1]:
            if self._right_sizes_given is None:
                self._right_sizes_given = sizes
            self.right_splitter.setSizes([total - bottom, bottom])
        if scroll:  # the Quality curve button, which the check's paragraph names, in view (it was half scrolled away)
            QTimer.singleShot(0, lambda: self._scroll_to(self.top_scroll, self.plan_panel.curve_button))

    def _check_room_needed(self) -> int:
        """The height the figures' pane needs for the check shown, at its width, with the tab bar."""
        chrome = self.tabs.height() - self.compare_panel.height()
        return self.compare_panel.needed_height(self.compare_panel.width()) + max(chrome, 0)

    def _give_back_check_room(self) -> None:
        """A window made larger after a check took room for its figures: the chart and plan get back what the figures
        no longer need, down to the share the user had given the figures (at 1280 × 720 the check took the chart's
        room, and maximising the window then grew both panes alike, the chart staying cramped)."""
        given = self._right_sizes_given
        sizes = self.right_splitter.sizes()
        if given is None or len(sizes) != 2 or not sum(given) or not sum(sizes):
            return
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        total = sum(sizes)
        needed = self._check_room_needed()
        bottom = max(needed, round(total * given[1] / sum(given)))
        if bottom < sizes[1]:
            self.right_splitter.setSizes([total - bottom, bottom])

    def _right_split_by_user(self, *_: Any) -> None:
        """The plan/figures split dragged: the user's, kept as it is at close."""
        self._right_sizes_given = None

    def top_minimum(self) -> int:
        """The least height the chart, plan and buttons keep when the check's figures take more."""
        return self.score_button.sizeHint().height() * 2 + self.progress_label.sizeHint().height() + 120

    def _on_check_cancelled(self) -> None:
        """A check cancelled; the figures of an earlier one that still stands stay (a second Check of the same plan,
        cancelled, left "Check cancelled." in place of a 95-second check's figures, which were kept all along)."""
        checked = self._standing_check(self.plan) if self.plan is not None else None
        if checked is None:
            self.compare_panel.show_message("Check cancelled.")
            return
        self.compare_panel.show_checked(checked)
        self.statusBar().showMessage("Check cancelled; the figures shown are the earlier check's, for the same plan.",
                                     10000)

    def _on_check_failed(self, failure: Failure) -> None:
        self.compare_panel.show_message("The check failed; nothing was measured.")
        self.show_error("Checking failed", failure)

    def _on_checked(self, outcome: Any) -> None:
        plan, checked = outcome
        chosen = self._show_final(plan)
        if chosen:
            log.info(chosen)
            self.statusBar().showMessage(f"Checked; {chosen}.", 15000)
        unhealed = self.session.healing_note()
        if unhealed:  # the command line warned, and the window said nothing
            log.warning(unhealed)
            self.statusBar().showMessage(f"Checked; {unhealed}", 20000)
        self.compare_panel.show_checked(checked)
        self.tabs.setCurrentWidget(self.compare_panel)
        self._make_room_for_check()
        log.info("perplexity %.3f → %.3f (× %.2f) with %s %s removed", checked.ppl_before, checked.ppl_after,
                 checked.ratio, "layer" if len(checked.removed) == 1 else "layers", layer_list(checked.removed))

    # ---------------------------------------------------------------------------------------------- curve

    def quality_curve(self) -> None:
        """Measure perplexity for 0, 1, 2… layers removed in the current order; draw it beside the slider."""
        if self.busy or self.engine.scores is None or self.engine.scored_spec is None:
            return
        self.plan_panel.flush()  # as Check and Save do: the curve's job uses the engine from its own thread
        if not self._acts_on_open_model("The quality curve"):
            return
        spec = self._final_spec()
        most = self.plan_panel.curve_max.value()
        cost = self._worded("curve", self.session.next_curve_estimate(spec, most))
        if cost[1] is not None and cost[1] >= ASK_BEFORE_A_LONG_CURVE_SECONDS and not dialogs.ask_yes_no(
                self, "Draw the quality curve?",
                f"The quality curve to {counted(most, 'layer')} removed will take about {human_seconds(cost[1])} "
                "here: at each count it measures the recipe Save uses. A lower count in the box beside the button "
                "takes less, and a cancelled curve draws nothing. Start it?"):
            return
        self.jobs.start(
            "curve", self.session.curve_job(spec, most),
            on_success=self._on_curve, on_failure=lambda f: self.show_error("The quality curve failed", f),
            # it said nothing: "Cancelled." beside the buttons and "Scored 6 layers" below
            on_cancel=lambda: self.statusBar().showMessage(
                "The quality curve was cancelled; " + ("the earlier curve stays." if self.plan_panel.curve_points
                                                       else "no curve was drawn."), 8000),
        )
        self._announce(cost)

    def _curve_key(self) -> tuple[str, bool] | None:
        """What a curve drawn now is for: the scores' metric and whether the recipe repairs."""
        scores = self.engine.scores
        return None if scores is None else (scores.metric, self._final_spec().repair != "none")

    def _restore_curve(self) -> None:
        """Draw again the curve made for the metric and repair setting shown now, if one was: switching the metric or
        the repair and back hid a curve of ten minutes' measuring without a word."""
        curve = self._curves.get(self._curve_key())
        if curve is not None:
            self._draw_curve(curve)

    def _on_curve(self, curve: Any) -> None:
        warnings = curve.warnings  # a QualityCurve's (the session's curve job hands one back)
        if STREAMED_CURVE_NOTE in warnings:  # the quiz gone, one layer at a time
            log.warning(STREAMED_CURVE_NOTE)
            # said where it is seen: in the Log's tab alone, nothing beside the curve said why it had no quiz
            self.statusBar().showMessage(STREAMED_CURVE_NOTE, 20000)
        key = self._curve_key()
        if key is not None:
            self._curves[key] = curve
        self._draw_curve(curve)
        # each count's figures were in tooltips only: out of reach of the keyboard, and of the Log
        log.info("Quality curve, %s, at each count:\n%s", _curve_words(curve.label),
                 self.plan_panel.curve_plot.toolTip())
        if not self.manual:  # bi+ has measured every count now: the slider's plan is its measured choice
            before = self.plan
            self._replan()
            chosen = _chosen_otherwise(before, self.plan)
            if chosen:  # the layers on screen changed without a word
                log.info(chosen)
                self.statusBar().showMessage(f"Quality curve drawn; {chosen}.", 15000)
        # at 1280 x 720 the curve was drawn below the fold, a strip of it in view and nothing said it was there
        QTimer.singleShot(0, lambda: self._scroll_to(self.top_scroll, self.plan_panel.curve_plot))

    def _draw_curve(self, curve: Any) -> None:
        baseline = [(p.k, p.perplexity) for p in curve.baseline.points] if curve.baseline is not None else None
        self.plan_panel.show_curve([(p.k, p.perplexity, p.same_top) for p in curve.points], _curve_words(curve.label),
                                   curve.windows, curve.tokens, baseline,
                                   {p.k: (p.quiz_kept, p.quiz_known) for p in curve.points if p.quiz_known},
                                   curve.baseline.label if curve.baseline is not None else "bi",
                                   curve.text_ran_out, {p.k: p.not_repaired for p in curve.points if p.not_repaired},
                                   self._curve_leaves_out())

    def _curve_leaves_out(self) -> str:
        """What of the recipe set now the curve leaves out (it would train once per count), in words, or "": with heal
        steps set, the curve read 524.93 and Check 525.34 at the same count, and nothing said why (a walkthrough)."""
        spec = self.job_spec()
        parts = (["the healing"] if spec.heal_steps > 0 else []) + (["the MLP refit"] if spec.repair == "refit" else [])
        return f"without {listed(parts)}, which Check and Save add" if parts else ""

    @staticmethod
    def _scroll_to(scroll: QScrollArea, widget: QWidget) -> None:
        """Scroll ``widget``, just shown, into view: once the layouts have made room for it (at once, the area scrolled
        to where it was before it showed)."""
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        MainWindow._show_whole(scroll, widget)

    @staticmethod
    def _show_whole(scroll: QScrollArea, widget: QWidget) -> None:
        """Scroll ``widget``'s whole rectangle into view: ensureWidgetVisible takes a plot's (a graphics view's) or a
        text box's own input cursor rectangle for it (a text box's top edge stayed cut)."""
        top = widget.mapTo(scroll.widget(), QPoint(0, 0))
        half_w, half_h = widget.width() // 2, widget.height() // 2
        scroll.ensureVisible(top.x() + half_w, top.y() + half_h, half_w, half_h)

    # ---------------------------------------------------------------------------------------------- close

    def stop_and_close(self) -> None:
        """Close as the close button does, without asking whether to stop a running job or to drop unsaved scores:
        on SIGTERM or SIGHUP (logging out, ``kill``), and at the end of a screenshot run or the self-test, nobody is
        there to answer. The job is cancelled, so a save leaves no partial folder behind (the process was killed where
        it stood)."""
        self._stop_without_asking = True
        self.close()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._frame_fitted:
            self._frame_fitted = True
            self._size_shown = self.size()
            # the first control a user needs, not the settings' Basic/Advanced tab bar (a walkthrough)
            self.model_panel.field.setFocus(Qt.FocusReason.OtherFocusReason)
            # a control reached by Tab from the other pane stayed out of view, its pane scrolled elsewhere
            app = QApplication.instance()
            if isinstance(app, QApplication):
                app.focusChanged.connect(self._show_focused)
            # the window manager adds its frame once the window is mapped; twice, as some add it late
            for delay in (0, 400):
                QTimer.singleShot(delay, self._keep_frame_on_screen)

    def _show_focused(self, old: QWidget | None, now: QWidget | None) -> None:
        """Scroll the pane that holds the control that has just got the focus to it (Tab from one pane into the other
        landed on the Model box with the left pane scrolled down: the focus was out of view)."""
        if now is None or not self.isAncestorOf(now):
            return
        for scroll in (self.left_scroll, self.top_scroll):
            if scroll.widget() is not None and scroll.widget().isAncestorOf(now) and now.height() < scroll.height():
                self._show_whole(scroll, now)

    def _keep_frame_on_screen(self) -> None:
        """The window with its frame inside the screen's room: sized to the room, the title bar pushed the bottom
        (the status bar's device, memory and messages) off a 1366 × 768 screen at 150 % (a window walkthrough)."""
        screen = self.screen()
        if screen is None or self.isFullScreen() or not self.isVisible():
            return
        room, frame, client = screen.availableGeometry(), self.frameGeometry(), self.geometry()
        if self.isMaximized():
            # restored maximized (closed so): held at its minimum height, the frame's title bar pushed the status bar
            # below a 1024 × 600 screen, and made normal it still could not fit (a window walkthrough)
            if self._fit_minimum_to_frame(room, frame, client):
                self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMaximized)
                self.setWindowState(self.windowState() | Qt.WindowState.WindowMaximized)
            return
        if self._size_shown is not None and self._size_shown != self.size():
            return  # resized since it was shown, by the user or a script: their size stands
        desktop = screen.availableVirtualGeometry()
        if frame_on_screen(room, frame, client, QSize(0, 0), desktop) is None:
            return
        self._fit_minimum_to_frame(room, frame, client)
        placed = frame_on_screen(room, frame, client, self.minimumSize(), desktop)
        if placed is not None:
            self.setGeometry(placed)
            self._size_shown = placed.size()

    def _fit_minimum_to_frame(self, room: QRect, frame: QRect, client: QRect) -> bool:
        """The minimum, fitted to the room before the frame was known (:meth:`_fit_to_screen`), leaves the frame room
        too; whether it was lowered."""
        before = self.minimumSize()
        self.setMinimumSize(min(self.minimumWidth(), room.width() - (frame.width() - client.width())),
                            min(self.minimumHeight(), room.height() - (frame.height() - client.height())))
        return self.minimumSize() != before

    def resizeEvent(self, event: QResizeEvent) -> None:
        """A window made smaller after a check gives the check's figures their height again, as the check did: at
        1024 × 600 the paragraph was cut mid-line ("It has lost most of what the"), with no scroll bar. One made
        larger gives the chart back the room the check took (:meth:`_give_back_check_room`)."""
        super().resizeEvent(event)
        if self.compare_panel.showing is None or event.oldSize().height() < 0:
            return
        if event.size().height() < event.oldSize().height():
            QTimer.singleShot(0, lambda: self._make_room_for_check(scroll=False))
        elif event.size().height() > event.oldSize().height():
            QTimer.singleShot(0, self._give_back_check_room)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Asked first, whatever runs beside (a memory estimate after each settings change skipped it); a running
        # job's own question ("Stop it and close?") stands for it.
        if not self._closing and not self._stop_without_asking and not self.jobs.busy and not self._may_drop_measured(
                "Quit?", "Closing the window", "Quit anyway?"):
            event.ignore()
            return
        if self.jobs.busy or self.background.busy:
            if not self._closing:
                job = job_title(self.jobs.current) if self.jobs.current else "A job"
                if self.jobs.busy and not self._stop_without_asking and not dialogs.ask_yes_no(
                    self, "Stop and quit?", f"{job} is still running. Stop it and close?{self._unkept_note()}"
                ):
                    event.ignore()
                    return
                if not (self.jobs.busy or self.background.busy):
                    # The job ended while the question was open: nothing is left to wait for.
                    self._finish_close(event)
                    return
                self._closing = True
                self._memory_timer.stop()
                self.jobs.cancel()
                self.background.cancel()
                # A model's load cannot be stopped part-way: on a GGUF the window waited minutes without a word
                self.progress_label.setText(
                    "Stopping before closing: a model that is loading cannot be interrupted, so the window closes "
                    "once it has loaded…" if self._stage == "load" else "Stopping before closing…")
                self._disable_cancel_button()  # the stop is asked already
                log.info("closing: waiting for running jobs to stop")
                self.jobs.finished.connect(self._close_when_idle)
                self.background.finished.connect(self._close_when_idle)
            event.ignore()  # closed again by _close_when_idle once every thread has stopped
            return
        self._finish_close(event)

    def _finish_close(self, event: QCloseEvent) -> None:
        self._closing = True  # no timer may start a job after this
        self._memory_timer.stop()
        self.save_state()
        self._status_timer.stop()
        self.log_panel.detach()
        event.accept()

    def _close_when_idle(self, *_: Any) -> None:
        if not self.jobs.busy and not self.background.busy:
            QTimer.singleShot(0, self.close)
