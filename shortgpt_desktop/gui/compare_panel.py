"""Before / after: perplexity of both models on the same held-out tokens and a greedy generation of each."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from ..core import defaults
from ..core.defaults import PROMPT as DEFAULT_PROMPT
from ..core.engine import LOST_ANSWER, Checked, Engine
from ..core.measure.quiz import QuizAnswer, lost_most
from ..format import in_number, layer_list

_INTRO = ("Press <b>Check perplexity</b> to compare the original and the pruned model on the same held-out "
          "tokens.")


class ComparePanel(QWidget):
    """The prompt the user can edit, the two perplexities and their ratio, and the two continuations."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._showing: Checked | None = None  # the check whose figures are on screen
        self._stale_prompt = False  # its texts are marked as an earlier prompt's
        self.prompt = QLineEdit(DEFAULT_PROMPT, self)
        self.prompt.setPlaceholderText("A prompt for both models to continue (empty: no generation)")
        self.prompt.setClearButtonEnabled(True)
        # the texts on screen answer the prompt checked: an edit left them under the new one, unmarked (a walkthrough)
        self.prompt.textChanged.connect(self._on_prompt_edited)
        self.result = QLabel(_INTRO, self)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.before = self._text_box()
        self.after = self._text_box()
        self.before_title = QLabel("<b>Original</b>", self)
        self.after_title = QLabel("<b>Pruned</b>", self)
        self.before.setAccessibleName("Original model's text")
        self.after.setAccessibleName("Pruned model's text")
        prompt_label = QLabel("&Prompt:", self)
        prompt_label.setBuddy(self.prompt)  # named by it for a screen reader, and Alt+P reaches it
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(prompt_label)
        prompt_row.addWidget(self.prompt, 1)
        grid = QGridLayout()
        grid.addWidget(self.before_title, 0, 0)
        grid.addWidget(self.after_title, 0, 1)
        grid.addWidget(self.before, 1, 0)
        grid.addWidget(self.after, 1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(prompt_row)
        layout.addWidget(self.result)
        layout.addLayout(grid, 1)

    @property
    def showing(self) -> Checked | None:
        """The check whose figures are on screen (None: none, or stale figures cleared)."""
        return self._showing

    def needed_height(self, width: int, lines: int = 5) -> int:
        """The height that shows the result whole at ``width`` and ``lines`` lines of each model's text."""
        layout = self.layout()
        margins = layout.contentsMargins()
        text = lines * self.before.fontMetrics().lineSpacing() + 2 * self.before.frameWidth() + 8
        parts = [self.prompt.sizeHint().height(), self.result.heightForWidth(width - margins.left() - margins.right()),
                 self.before_title.sizeHint().height(), text]
        return sum(parts) + layout.spacing() * (len(parts) - 1) + margins.top() + margins.bottom()

    def _text_box(self) -> QPlainTextEdit:
        box = QPlainTextEdit(self)
        box.setReadOnly(True)
        box.setPlaceholderText("The continuation appears here.")
        return box

    def show_checked(self, checked: Checked) -> None:
        self._showing = checked
        ratio = checked.ratio
        rough = defaults.rough_figure(checked.eval_tokens, checked.text_ran_out, window=True)
        rough = f" ({rough})" if rough else ""
        self.result.setText(
            f"Perplexity on {checked.eval_tokens:,} held-out tokens{rough}: "
            f"original <b>{checked.ppl_before:.2f}</b>, "
            f"pruned <b>{checked.ppl_after:.2f}</b> (× {ratio:.2f}); "
            f"removed {in_number(len(checked.removed), 'layer')} {layer_list(checked.removed)}"
            + (f", {checked.adjusted_as}." if checked.adjusted_as else ".")
            # in the Log and for 20 s in the status bar only, while Save wrote a file 12% larger for it
            + (f" <b>The {escape(checked.healing_note)}</b>" if checked.healing_note else "")
        )
        tip = ""
        fidelity = checked.fidelity
        if fidelity is not None:
            self.result.setText(
                self.result.text() + f" Against the original, as llama.cpp compares a quantization: same top token "
                f"<b>{fidelity.same_top:.1%}</b>, mean KL divergence <b>{fidelity.mean_kl:.3f}</b> "
                f"(99%: {fidelity.p99_kl:.2f})."
            )
            tip = ("Mean KLD and same top p are what llama-perplexity --kl-divergence prints for a quantized model: "
                   "0 and 100% mean no change.")
        quiz = checked.quiz
        if quiz is not None and quiz.known:
            self.result.setText(self.result.text() + f" Quiz: the pruned model answers <b>{quiz.kept} of the "
                                f"{quiz.known}</b> questions of fact the original answers right.")
            if lost_most(quiz.known, quiz.kept) is not None:
                self.result.setText(self.result.text() + " <b>It has lost most of what the original knows</b>: "
                                    "remove fewer layers (the Quality curve shows where it breaks).")
            tip += ("\n\nQuiz, the questions the original answers right (the pruned model's greedy answers):\n"
                    + "\n".join(_quiz_line(a) for a in quiz.answers if a.original_right))
        elif quiz is not None and quiz.answers:  # it said nothing at all, as if no quiz had been asked
            self.result.setText(self.result.text() + f" Quiz: the original answers none of the {len(quiz.answers)} "
                                "questions of fact right, so it says nothing of this cut.")
        self.result.setToolTip(tip.strip())
        self.before_title.setText(f"<b>Original</b> · perplexity {checked.ppl_before:.2f}")
        self.after_title.setText(f"<b>Pruned</b> · perplexity {checked.ppl_after:.2f}")
        self.before.setPlainText(_shown(checked, checked.generation_before))
        self.after.setPlainText(_shown(checked, checked.generation_after))
        if checked.lost_answer:
            self.after.setPlainText("(nothing: the pruned model ends its answer at once)")
            self.result.setText(self.result.text() + f" <b>{LOST_ANSWER}</b>")
        if checked.chat_template and checked.prompt:
            self.result.setText(self.result.text() + " The prompt went through the model's chat template.")
        if not checked.prompt:
            self.result.setText(self.result.text() + " No text was generated and no quiz asked: the prompt was empty.")
        self._stale_prompt = checked.prompt != _generating(self.prompt.text())  # the prompt edited since the check
        if self._stale_prompt:
            earlier = checked.prompt if len(checked.prompt) <= 80 else checked.prompt[:79] + "…"  # a line, not a page
            self.result.setText(self.result.text() + (
                f" <b>The texts below answer the earlier prompt</b> “{escape(earlier)}”" if checked.prompt
                else " <b>The prompt has been edited since</b>") + "; press <b>Check perplexity</b> for the new one.")
        if checked.streamed_note:  # the quiz gone and the text cut short, without a word
            self.result.setText(self.result.text() + f" {checked.streamed_note}")

    def _on_prompt_edited(self, text: str) -> None:
        """Mark the texts as the earlier prompt's, or unmark them, where that changes (drawn again at each keystroke,
        both text boxes went back to their top)."""
        shown = self._showing
        if shown is not None and (shown.prompt != _generating(text)) != self._stale_prompt:
            self.show_checked(shown)

    def shows(self, checked: Checked) -> bool:
        """Whether the panel shows ``checked``'s figures now (not a message in their place)."""
        return self._showing is checked

    def mark_stale(self, why: str = "The plan or its settings changed since the last check") -> None:
        """The plan or its recipe changed since the last check (or ``why`` its figures are not shown now): say so
        instead of showing numbers for another."""
        if self.before.toPlainText() or "pruned <b>" in self.result.text():
            self.show_message(f"{why}; press <b>Check perplexity</b> again.")

    def prompt_text(self) -> str:
        return self.prompt.text()

    def set_prompt(self, text: str) -> None:
        self.prompt.setText(text)

    def show_measuring(self) -> None:
        self._showing = None
        self.result.setText("Measuring…")

    def show_message(self, text: str) -> None:
        """``text`` in place of the figures: the titles' perplexities and the texts go with them (they would be
        another plan's, or a check's that did not finish)."""
        self._showing = None
        self.result.setText(text)
        self.result.setToolTip("")
        self.before_title.setText("<b>Original</b>")
        self.after_title.setText("<b>Pruned</b>")
        self.before.clear()
        self.after.clear()

    def clear(self) -> None:
        """Another model: nothing measured on the previous one stays."""
        self._showing = None
        self.result.setText(_INTRO)
        self.before_title.setText("<b>Original</b>")
        self.after_title.setText("<b>Pruned</b>")
        self.before.clear()
        self.after.clear()


def _generating(prompt: str) -> str:
    """The prompt as a check names it: one that generates nothing (the engine's rule) is named as none."""
    return prompt if Engine.generates(prompt) else ""


def _quiz_line(answer: QuizAnswer) -> str:
    """One question of the quiz's tooltip: the pruned model's whole answer (cut at 80 characters, answers marked
    right had lost the word that made them right: "… located in the Pacific Islands,"), and the original's
    beside a wrong one."""
    line = f"{'right' if answer.pruned_right else 'wrong'}: {answer.question} → {' '.join(answer.pruned.split())}"
    if not answer.pruned_right:
        line += f"\n        (the original: {' '.join(answer.original.split())})"
    return line


def _shown(checked: Checked, generation: str) -> str:
    """A raw prompt and its continuation read as one text; a chat model's answer alone (the question is in the
    prompt box above, and the two answers side by side are what the user compares)."""
    if not checked.prompt:
        return ""
    if checked.chat_template:
        return generation.strip()
    return checked.prompt + generation
