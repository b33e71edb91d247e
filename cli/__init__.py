"""Thin click front ends for ``skelmod`` and ``ikemtrain``."""
