"""One error hierarchy whose messages are sentences a person can act on.

Every error the user can cause (a wrong path, an empty text set, a ratio that removes everything) is a
:class:`UserError`. The command line prints its message on one line and exits 2; the window shows it in a
dialog. Anything else is a bug and keeps its traceback.

The engine's messages never name a command-line flag or a widget: what the user can do about an error
depends on the front end, so an error carries a :class:`Hint` as data and each front end words it
(``cli.HINTS``, ``gui.messages.HINTS``).
"""

from __future__ import annotations

from enum import Enum


class Hint(str, Enum):
    """An action the user could take that only a front end can name (a flag, a checkbox)."""

    REPLACE_OUTPUT = "replace_output"  # the output folder is not empty: allow replacing it
    TRUST_REMOTE_CODE = "trust_remote_code"  # the model needs its own Python code
    USE_CPU = "use_cpu"  # the device asked for is not here
    SMALLER_BATCH = "smaller_batch"  # out of memory: fewer samples per batch, shorter samples
    LOW_MEMORY = "low_memory"  # the model does not fit: score it layer by layer
    LOW_MEMORY_METRIC = "low_memory_metric"  # a metric that needs the whole model: turn low memory off
    WIDER_DTYPE = "wider_dtype"  # float16 overflows: compute in float32 or bfloat16


class UserError(Exception):
    """Bad input: the message says what is wrong; ``hint`` names a front-end action that may fix it."""

    def __init__(self, message: str = "", hint: Hint | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self)


def worded(exc: UserError, hints: dict[Hint, str]) -> str:
    """The error's sentence with a front end's words for its hint ("…is not empty; add --force to replace it.")."""
    message = str(exc).rstrip()
    hint = hints.get(exc.hint) if exc.hint is not None else None
    return f"{message.rstrip('.')}; {hint}." if hint else message


class ModelSourceError(UserError):
    """The model path, file or Hub id cannot be used."""


class HubError(ModelSourceError):
    """A Hugging Face Hub download failed for a reason the user can fix."""


class HubModelNotFound(HubError):
    """A Hub id could not be found: not on the Hub, or not in the local cache while the Hub cannot be reached."""


class UnsupportedModelError(UserError):
    """The model's architecture is not one this tool can prune safely."""


class CalibrationError(UserError):
    """The calibration or evaluation text cannot be used."""


class PlanError(UserError):
    """The requested ratio, count or layer list is not possible for this model."""


class OutputError(UserError):
    """The output folder cannot be written."""


class ResourceError(UserError):
    """The device ran out of memory or another resource."""


class Cancelled(Exception):
    """The user cancelled; nothing was written.

    A step that had measured something useful before it stopped hands it over as ``partial`` (the scores of
    the samples or layers done so far), so the front end can keep it, marked partial.
    """

    def __init__(self, partial: object = None) -> None:
        super().__init__("cancelled")
        self.partial = partial
