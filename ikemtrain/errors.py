"""The errors ikemtrain reports to a user as one line: bad input or environment, never a bug.

Anything else that escapes a command is a bug and keeps its traceback. This module imports
neither torch nor the engine, so the command line can name these errors before it loads them.
Messages name the library's parameters (``resume``, ``teacher``), never a command-line flag;
an error about one parameter says which in ``param`` (as :class:`skelmod.errors.SkelmodError`
does), and a front end maps it to its own spelling.
"""

from __future__ import annotations

from skelmod.cache import CacheError
from skelmod.errors import SkelmodError

from .config import ConfigError

__all__ = [
    "USER_ERRORS",
    "CacheError",
    "CheckpointError",
    "CheckpointExistsError",
    "ConfigError",
    "NonFiniteLossError",
    "OutputError",
    "OutputExistsError",
    "ReportError",
    "SkelmodError",
]


class CheckpointError(ValueError):
    """A file that is not a usable ikemtrain checkpoint, or a run that cannot use it.

    ``param``, when set, is the library parameter the error is about (``"resume"``).
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param


class CheckpointExistsError(CheckpointError, FileExistsError):
    """A new run would overwrite an existing checkpoint."""


class NonFiniteLossError(FloatingPointError):
    """A training loss turned NaN or infinite; the message names the batch and what to check."""


class OutputError(OSError):
    """An output folder that cannot be created or written.

    ``param``, when set, is the library parameter the error is about (``"overwrite"``).
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param


class OutputExistsError(OutputError, FileExistsError):
    """An output folder that must be new already holds files."""


class ReportError(ValueError):
    """A run or result folder that ``ikemtrain report`` cannot read."""


#: What a command shows as ``Error: <message>`` with exit code 1 (skelmod's own errors, e.g. a
#: bad cache, included).
USER_ERRORS = (
    SkelmodError,
    ConfigError,
    CheckpointError,
    NonFiniteLossError,
    OutputError,
    ReportError,
)
