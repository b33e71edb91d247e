"""How both command lines show a library error: its message, then the option it is about.

Library errors name their parameters (``resume``, ``per_class``) and say which one in
``param``; each command line maps those names to its own options.
"""

from __future__ import annotations

from collections.abc import Mapping


def with_option(e: Exception, options: Mapping[str, str]) -> str:
    """``str(e)``, followed by ``(--option)`` when ``e.param`` names one of ``options``."""
    option = options.get(getattr(e, "param", None) or "")
    return f"{e} ({option})" if option else str(e)
