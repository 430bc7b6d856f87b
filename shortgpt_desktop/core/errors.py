"""One error hierarchy whose messages are sentences a person can act on.

Every error the user can cause (a wrong path, an empty text set, a ratio that removes everything) is a
:class:`UserError`. The command line prints its message on one line and exits 2; the window shows it in a
dialog. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do."""


class ModelSourceError(UserError):
    """The model path, file or Hub id cannot be used."""


class HubError(ModelSourceError):
    """A Hugging Face Hub download failed for a reason the user can fix."""


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
    """The user cancelled; nothing was written."""
