"""Thin click front ends for ``skelmod`` and ``ikemtrain``.

In a checkout this folder is the package ``cli`` (``python -m cli.skelmod_cli``); installed,
it is ``ikem_toolkit_cli`` (``pyproject.toml``), so its modules import each other relatively.
"""
