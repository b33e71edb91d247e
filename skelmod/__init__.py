"""skelmod: NTU RGB+D raw skeletons to an HDF5 cache of six modalities.

Never imports torch. The most used names are available at the top level (imported lazily,
so ``import skelmod`` stays cheap)::

    import skelmod

    skelmod.generate("raw", classes=4, per_class=20, seed=0)  # synthetic NTU-format files
    skelmod.convert("raw", "data.h5")                        # or skelmod.import_arrays(...)
    cache = skelmod.open_cache("data.h5")
    bone = cache.read("bone", cache.split_indices("xview-train")[:32])

``__all__`` lists the public API; ``docs/api.md`` shows it in use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # raw files and arrays -> a cache
    "convert": "skelmod.convert",
    "ConvertOptions": "skelmod.options",
    "import_arrays": "skelmod.importer",
    "load_arrays": "skelmod.importer",
    "generate": "skelmod.synth",
    # reading
    "read_skeleton": "skelmod.ntu",
    "parse_skeleton": "skelmod.ntu",
    "read_nucla": "skelmod.nucla",
    "open_cache": "skelmod.cache",
    "CacheReader": "skelmod.cache",
    "cache_report": "skelmod.cache",
    # the modalities
    "compute_modalities": "skelmod.modalities",
    "MODALITIES": "skelmod.modalities",
    "MODALITY_NAMES": "skelmod.layout",
    "ModalityOptions": "skelmod.layout",
    "get_layout": "skelmod.layout",
    "LAYOUTS": "skelmod.layout",
    # errors
    "SkelmodError": "skelmod.errors",
    "SkeletonFormatError": "skelmod.ntu",
    "CacheError": "skelmod.cache",
    "ArrayImportError": "skelmod.importer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skelmod' has no attribute {name!r}")
