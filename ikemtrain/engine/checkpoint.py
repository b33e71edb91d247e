"""Atomic checkpoints that hold data, never code, with everything needed to resume exactly.

A training checkpoint (``OUT/checkpoint.pt``, rewritten after every epoch) holds:

* ``kind``: ``"pretrain"``, ``"distill"`` or ``"finetune"`` (linear evaluation writes
  ``"linear-eval"`` heads);
* ``model``: the model's state dict, including the queues and pointers (buffers);
* ``optimizer``: the SGD state (momentum buffers);
* ``epoch``: the last finished epoch (1-based);
* ``rng``: torch (CPU and every CUDA device), numpy (legacy global) and Python random states,
  as tensors and plain lists / numbers (:func:`capture_rng`);
* ``config``: the settings of the run (``PretrainConfig.to_dict()``, a plain dict, with the
  modality options ``bones`` / ``unit_axis`` resolved from the cache);
* ``layout``: the joint layout of the cache it was trained on (absent in older checkpoints,
  which read as ``ntu25``), and ``num_class``, the cache's class count;
* ``format`` / ``version``: what kind of file this is.

**Weights only.** A checkpoint holds only tensors and plain types (dict, list, tuple, str,
int, float, bool, None): :func:`save_checkpoint` refuses anything else, and
:func:`load_checkpoint` reads with ``torch.load(weights_only=True)``, whose unpickler builds
nothing but those, so a crafted file cannot run code. A file that needs more is refused with a
one-line :class:`CheckpointError` naming the file and what it asked for. Files of version 1
(before this rule) pickled numpy's RNG state as an ``ndarray``: they are still read, with only
numpy's array-building globals allowed (still no code), when they ask for nothing else.

Files are written to a temporary file in the same folder and moved into place with
:func:`os.replace`, so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, PretrainConfig
from ..errors import CheckpointError, CheckpointExistsError, OutputError

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "CheckpointError",
    "CheckpointExistsError",
    "capture_rng",
    "check_record",
    "check_layout",
    "checkpoint_layout",
    "find_checkpoint",
    "load_checkpoint",
    "load_run",
    "load_weights",
    "pretrain_config",
    "restore_rng",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "ikemtrain-pretrain"
#: 2: RNG states as plain data (weights-only); 1: numpy's state as an ndarray (read-only).
VERSION = 2
_LEGACY_VERSION = 1

#: The type each top-level key must have, where present, and how to name it.
_KEY_TYPES: dict[str, tuple[type, str]] = {
    "model": (Mapping, "a dict of tensors"),
    "config": (Mapping, "a dict"),
    "optimizer": (Mapping, "a dict"),
    "rng": (Mapping, "a dict"),
    "epoch": (int, "an integer"),
}

_PLAIN = (str, bytes, int, float, bool, type(None), torch.Tensor)

# What pickling an ndarray and its dtype refers to (``numpy.core`` before numpy 2 and
# ``numpy._core`` after): the only globals a version-1 checkpoint may ask for.
_reconstruct = np.zeros(1).__reduce__()[0]
_uint32 = type(np.dtype(np.uint32))  # numpy.dtypes.UInt32DType: the MT19937 key array's
_LEGACY_GLOBALS = {
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    f"{_uint32.__module__}.{_uint32.__qualname__}": _uint32,
    "numpy.core.multiarray._reconstruct": _reconstruct,
    "numpy._core.multiarray._reconstruct": _reconstruct,
}


def capture_rng() -> dict[str, Any]:
    """Snapshot of every global random state a run consumes, as tensors and plain data.

    ``{"torch": uint8 tensor, "numpy": {"keys": [624 ints], "pos", "has_gauss",
    "cached_gaussian"}, "python": {"version", "state": [625 ints], "gauss_next"}}`` plus
    ``"cuda": [uint8 tensor per device]`` where CUDA is available.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (legacy global)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where this machine has the devices).

    The states may have been loaded onto a GPU (``map_location``); torch takes CPU tensors.
    """
    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError naming the first value that is not a tensor or a plain type."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a str or int")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds "
            "only tensors and plain types (dict, list, tuple, str, int, float, bool, None)"
        )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``format`` and ``version``) to ``path`` atomically.

    Raises TypeError (before writing anything) if ``state`` holds anything but tensors and
    plain types, since :func:`load_checkpoint` would refuse it. Raises OutputError (one line
    naming the file and the reason, e.g. "No space left on device") when the file system
    refuses the write: the temporary file is removed and a previous file at ``path`` is kept
    byte for byte.
    """
    path = Path(path)
    _check_plain(state, "checkpoint state")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with _open_for_writing(fd) as f:
            writes = _WriteErrors(f)
            try:
                torch.save({"format": FORMAT, "version": VERSION, **state}, writes)
            except RuntimeError:
                # torch's zip writer, failing to end a file whose write failed, raises a
                # RuntimeError of its own in place of the OSError
                if writes.error is None:
                    raise
                raise writes.error from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise _write_error(path, e) from None
        raise
    return path


def _open_for_writing(fd: int) -> Any:
    return os.fdopen(fd, "wb")


class _WriteErrors:
    """``f`` for :func:`torch.save`, keeping the first OSError its writes raised (e.g. ENOSPC)."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _write_error(path: Path, e: OSError) -> OutputError:
    """One line for a failed checkpoint write (a full disk, an unwritable folder)."""
    why = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    kept = "the previous checkpoint is kept unchanged" if path.is_file() else "nothing was written"
    return OutputError(f"{path}: cannot write the checkpoint ({why}); {kept}")


def checkpoint_layout(state: dict[str, Any]) -> str:
    """The joint layout a checkpoint was trained on (``ntu25`` for older checkpoints)."""
    return str(state.get("layout", "ntu25"))


def check_layout(state: dict[str, Any], reader: Any, path: str | os.PathLike) -> None:
    """Refuse a cache (``CacheReader``) whose joint layout is not the checkpoint's."""
    trained = checkpoint_layout(state)
    if reader.layout.name != trained:
        raise CheckpointError(
            f"{reader.path}: joint layout {reader.layout.name}, but checkpoint {path} was "
            f"trained on {trained}; use a cache of layout {trained}"
        )


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (``RUN/checkpoint.pt``) or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def _unsafe_globals(path: Path) -> list[str]:
    """Globals the pickle in ``path`` refers to beyond the weights-only set (reads, never runs)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a file torch cannot even scan: reported by the caller's error
        return []


def _legacy_rng(rng: Any) -> Any:
    """Version-1 RNG states (numpy's as a tuple with an ndarray) -> the plain form."""
    if not isinstance(rng, Mapping):
        return rng
    rng = dict(rng)
    npy, py = rng.get("numpy"), rng.get("python")
    if isinstance(npy, tuple) and len(npy) == 5:
        _, keys, pos, has_gauss, cached = npy
        rng["numpy"] = {
            "keys": [int(k) for k in np.asarray(keys).ravel()],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if isinstance(py, tuple) and len(py) == 3:
        rng["python"] = {"version": py[0], "state": list(py[1]), "gauss_next": py[2]}
    return rng


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    with warnings.catch_warnings():
        # torch warns about the pickle protocol of foreign files: noise beside our error
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


#: Bytes per element of the storage types a raw-pickle (pre-zip) torch file names.
_ITEMSIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2}
_ITEMSIZE.update({"Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8})
#: Deflate's largest expansion: what a compressed zip member can hold per compressed byte.
_DEFLATE_RATIO = 1032


class _Opaque:
    """What :class:`_StorageScan` builds for every global: accepts anything, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __new__(cls, *args: Any, **kwargs: Any):
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageScan(pickle.Unpickler):
    """Reads a raw-pickle torch file's pickle without building anything it names, recording
    the storages it declares ``(type name, element count)``."""

    def __init__(self, f: Any):
        super().__init__(f)
        self.storages: list[tuple[str, Any]] = []

    def find_class(self, module: str, name: str) -> type:
        return type(name, (_Opaque,), {})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
            self.storages.append((getattr(pid[1], "__name__", ""), pid[4]))
        return _Opaque()


def _check_declared_sizes(path: Path, zipped: bool) -> None:
    """Refuse a file whose tensors claim more bytes than the file holds, before torch
    allocates them: a raw-pickle file's storages are allocated at their declared size before
    their bytes are read, and a zip member's declared size is what torch allocates for it.
    A file this scan cannot follow is left to torch (which then names the problem)."""
    size = path.stat().st_size
    if zipped:
        try:
            with zipfile.ZipFile(path) as z:
                members = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return
        for m in members:
            stored = m.compress_type == zipfile.ZIP_STORED
            limit = min(size, m.compress_size) if stored else _DEFLATE_RATIO * m.compress_size
            if m.file_size > limit:
                raise CheckpointError(
                    f"{path}: member {m.filename!r} declares {m.file_size} bytes, more than the "
                    f"{limit} this {size}-byte file can hold (refused before loading)"
                )
        return
    total = 0
    try:
        with path.open("rb") as f:
            scan = _StorageScan(f)
            if scan.load() != torch.serialization.MAGIC_NUMBER:
                return
            for _ in range(3):  # the protocol version, the system info, the objects
                scan.load()
    except Exception:  # not a file this scan follows
        return
    for type_name, numel in scan.storages:
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{path}: a tensor storage declares {numel!r} elements")
        total += numel * _ITEMSIZE.get(type_name.removesuffix("Storage"), 1)
        if total > size:
            raise CheckpointError(
                f"{path}: its tensors declare {total} bytes of storage, more than the file's "
                f"{size} bytes could hold (refused before loading)"
            )


def _read(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)``; version-1 files with numpy arrays as a fallback."""
    with path.open("rb") as f:
        head = f.read(2)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):  # torch's zip, or a pickle
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file)")
    _check_declared_sizes(path, zipped=head.startswith(b"PK"))
    try:
        return _torch_load(path, map_location)
    except pickle.UnpicklingError as e:
        # the zip format can be scanned for globals; torch's message names the first one of
        # the old raw-pickle format
        unsafe = _unsafe_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(e))[:1]
        if not unsafe:
            raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(e)})") from None
        if not set(unsafe) <= set(_LEGACY_GLOBALS):
            raise CheckpointError(
                f"{path}: refused: loading it would call {', '.join(unsafe[:4])}, which a "
                "checkpoint of tensors and plain data never needs (it could run code)"
            ) from None
    except Exception as e:  # torch raises many kinds for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(e)})") from e
    allowed = [(obj, name) for name, obj in _LEGACY_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            state = _torch_load(path, map_location)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(e)})") from e
    if not isinstance(state, dict) or state.get("version") != _LEGACY_VERSION:
        raise CheckpointError(
            f"{path}: refused: it holds numpy arrays, which only version-1 checkpoints may hold"
        )
    return {**state, "rng": _legacy_rng(state.get("rng"))}


def _reason(e: BaseException) -> str:
    """One line for an exception: the last line of torch's weights-only explanation (its
    detail; the rest is advice to load untrusted files unsafely), else the first sentence."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "WeightsUnpickler error" in str(e):
        lines = [line for line in lines if not line.startswith("Check the documentation")][-1:]
    first = lines[0].split(". ")[0] if lines else ""  # torch appends paragraphs of advice
    return f"{type(e).__name__}: {first}".rstrip(": ")


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (a run folder is accepted too).

    Reads with ``torch.load(weights_only=True)``: no code in the file runs. ``required``: the
    keys the caller needs (``model``, ``config``, ``optimizer``, ``rng`` and ``epoch`` are
    checked for their types wherever present).

    Raises CheckpointError (one line, naming the file) for a missing file, a file that is not
    a torch checkpoint, one that asks for code, one of another format or version, or one
    without a required key.
    """
    path = find_checkpoint(path)
    state = _read(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an {FORMAT} checkpoint (its format tag is {found!r})")
    if state.get("version") not in (VERSION, _LEGACY_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')!r}, this ikemtrain reads "
            f"{_LEGACY_VERSION} and {VERSION}"
        )
    for key in required:
        if key not in state:
            raise CheckpointError(
                f"{path}: checkpoint has no {key!r} (needs {', '.join(map(repr, required))})"
            )
    for key, (expected, name) in _KEY_TYPES.items():
        value = state.get(key)
        if key in state and not isinstance(value, expected):
            raise CheckpointError(
                f"{path}: checkpoint {key!r} is a {type(value).__name__}, expected {name}"
            )
    model = state.get("model", {})
    bad = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: checkpoint 'model' entry {bad[0]!r} is not a tensor")
    return state


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def load_weights(
    module: torch.nn.Module,
    weights: Mapping[str, Any],
    path: str | os.PathLike | None,
    file_key: Callable[[str], str] = str,
) -> None:
    """Load ``weights`` into ``module`` once they are checked to be exactly its tensors, with
    its shapes: the model the checkpoint's settings describe says what the file's tensors may
    be, and a mismatch is one :class:`CheckpointError` naming the file and the key.

    ``file_key`` maps a key of ``module`` to the key the file names it by (e.g. adding a
    ``branches.joint.encoder_q.`` prefix). Nothing is copied into ``module`` unless every
    tensor fits.
    """
    where = f"{path}: " if path is not None else ""
    expected = module.state_dict()
    for k, want in expected.items():
        found = weights.get(k)
        if found is None:
            raise CheckpointError(
                f"{where}checkpoint has no tensor {file_key(k)!r}, which the model its settings "
                f"describe needs ({len([j for j in expected if j not in weights])} missing)"
            )
        if not isinstance(found, torch.Tensor):
            raise CheckpointError(
                f"{where}checkpoint {file_key(k)!r} is a {type(found).__name__}, not a tensor"
            )
        if _shape(found) != _shape(want):
            raise CheckpointError(
                f"{where}checkpoint tensor {file_key(k)!r} has shape {_shape(found)}, but the "
                f"model its settings describe has {_shape(want)}"
            )
    extra = [k for k in weights if k not in expected]
    if extra:
        raise CheckpointError(
            f"{where}checkpoint tensor {file_key(extra[0])!r} is not part of the model its "
            f"settings describe ({len(extra)} such)"
        )
    module.load_state_dict(weights, strict=True)


#: What each kind of run's checkpoint must hold to be used.
_RUN_KEYS = {
    "pretrain": ("model", "config"),
    "distill": ("model", "config", "teacher", "student"),
    "finetune": ("model", "config", "finetune"),
    "linear-eval": ("heads",),
}


def _evaluation_kind(results: Path) -> str:
    """What wrote an evaluation folder's ``results.json``, in words."""
    try:
        protocol = json.loads(results.read_text()).get("protocol", "linear-eval")
    except (OSError, ValueError, AttributeError):  # unreadable: name the usual kind
        protocol = "linear-eval"
    return "kNN-evaluation" if protocol == "knn" else "linear-evaluation"


def load_run(run: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A training run folder (or checkpoint file) -> ``(checkpoint path, state)``.

    ``state["kind"]`` says what wrote it (``"pretrain"``, ``"distill"``, ``"finetune"``,
    ``"linear-eval"``;
    ``"pretrain"`` when absent). A linear-evaluation folder (``results.json``, no checkpoint)
    is named as such instead of "no checkpoint". Weights-only, and the keys its kind needs
    are checked (:func:`load_checkpoint`).
    """
    path = Path(run)
    results = path / "results.json"
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists() and results.exists():
        raise CheckpointError(
            f"{path} is a {_evaluation_kind(results)} run (results.json, no {CHECKPOINT_NAME}); "
            "give the training run it evaluated"
        )
    path = find_checkpoint(path)
    state = load_checkpoint(path)
    state.setdefault("kind", "pretrain")
    if not isinstance(state["kind"], str):
        raise CheckpointError(
            f"{path}: checkpoint 'kind' is a {type(state['kind']).__name__}, expected one of "
            f"{', '.join(map(repr, _RUN_KEYS))}"
        )
    required = _RUN_KEYS.get(state["kind"], ())
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: {state['kind']} checkpoint has no {missing[0]!r} "
            f"(needs {', '.join(map(repr, required))})"
        )
    return path, state


def check_record(
    state: Mapping[str, Any],
    key: str,
    path: str | os.PathLike,
    fields: Mapping[str, type | tuple[type, ...]],
) -> Mapping[str, Any]:
    """``state[key]`` (a run's record, e.g. a distill checkpoint's ``student``) once it is a
    dict whose ``fields`` have their types; else one CheckpointError naming the file, the
    checkpoint's kind and the field (a relabelled or damaged checkpoint)."""
    kind = state.get("kind", "pretrain")
    record = state.get(key)
    if not isinstance(record, Mapping):
        raise CheckpointError(
            f"{path}: {kind} checkpoint {key!r} is a {type(record).__name__}, expected a dict"
        )
    for field, types in fields.items():
        value = record.get(field)
        if not isinstance(value, types) or isinstance(value, bool):
            names = types if isinstance(types, tuple) else (types,)
            expected = " or ".join("a dict" if t is Mapping else f"a {t.__name__}" for t in names)
            found = "absent" if field not in record else f"a {type(value).__name__}"
            raise CheckpointError(
                f"{path}: {kind} checkpoint '{key}.{field}' is {found}, expected {expected}"
            )
    return record


def pretrain_config(state: Mapping[str, Any], path: str | os.PathLike) -> PretrainConfig:
    """The :class:`PretrainConfig` saved in a loaded pre-training checkpoint.

    Raises CheckpointError naming the file for unknown keys or bad values.
    """
    try:
        cfg = PretrainConfig(**state["config"])
    except TypeError as e:  # an unknown or non-string key
        raise CheckpointError(
            f"{path}: checkpoint 'config' does not fit this ikemtrain ({e})"
        ) from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: checkpoint 'config': {e}") from None
    return migrate_modality_options(cfg)


def migrate_modality_options(cfg: PretrainConfig) -> PretrainConfig:
    """A loaded pre-training config with its modality options resolved, once, on load:
    checkpoints made before the options were resolved from the cache recorded None for the
    reference's (``6v``, raw axis)."""
    options = cfg.modality_options
    return cfg.replace(bones=options.bones, unit_axis=options.unit_axis)
