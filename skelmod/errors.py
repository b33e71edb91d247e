"""The base of skelmod's own errors.

Every error skelmod raises on purpose for bad input (a malformed file, a refused output, an
unknown option) derives from :class:`SkelmodError`; anything else escaping the library is a
bug. The CLI shows a ``SkelmodError`` as a one-line message and lets every other exception
keep its traceback. ``SkelmodError`` is a ``ValueError`` so that callers catching
``ValueError`` keep working.
"""

from __future__ import annotations


class SkelmodError(ValueError):
    """Bad input or a refused operation; the message names the file, field or parameter.

    ``param``, when set, is the library parameter the error is about (``"frames"``,
    ``"overwrite"``): a front end can map it to its own spelling (a CLI flag).
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param
