"""skelmod: NTU RGB+D raw skeletons to an HDF5 cache of six modalities.

Never imports torch. The most used names are available at the top level (imported lazily,
so ``import skelmod`` stays cheap)::

    from skelmod import compute_modalities, read_skeleton, open_cache
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "compute_modalities": "skelmod.modalities",
    "MODALITIES": "skelmod.modalities",
    "read_skeleton": "skelmod.ntu",
    "parse_skeleton": "skelmod.ntu",
    "SkeletonFormatError": "skelmod.ntu",
    "open_cache": "skelmod.cache",
    "CacheError": "skelmod.cache",
    "SkelmodError": "skelmod.errors",
    "cache_report": "skelmod.cache",
    "convert": "skelmod.convert",
    "ConvertOptions": "skelmod.options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skelmod' has no attribute {name!r}")
