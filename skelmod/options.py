"""What a conversion is asked to do: :class:`ConvertOptions` (everything that determines a
cache's content), the option vocabularies, the raw sources and :class:`ConvertError`.

Light on purpose (numpy and the layout tables only, no numba): the command line and the main
process of ``skelmod convert`` import this, and only the worker processes import the compiled
pipeline (:mod:`skelmod.pipeline`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import layout, limits
from .errors import SkelmodError

if TYPE_CHECKING:
    from .report import ConvertReport

#: Body-selection rules (:func:`skelmod.bodies.select_bodies`).
BODY_RULES = ("reference", "energy", "denoise")
#: Yaw alignment modes (:func:`skelmod.normalize.normalize_sample`).
YAW_MODES = ("sequence", "frame", "none")

SUFFIX = ".skeleton"
#: Raw file suffix, joint layout and bodies per sample M of each dataset.
SOURCES = {
    "ntu60": (SUFFIX, "ntu25", layout.M),
    "ntu120": (SUFFIX, "ntu25", layout.M),
    "nucla": (".json", "kinect-v1-20", 1),
}
#: Largest ``--frames``: the cache holds ``600 * T`` bytes per sample and modality.
MAX_TARGET_FRAMES = limits.MAX_TARGET_FRAMES


class ConvertError(SkelmodError):
    """The conversion as a whole cannot run (bad arguments, no input, nothing converted,
    a refused resume, a failed write). ``report``, when set, is what the run did before."""

    def __init__(
        self, message: str, report: ConvertReport | None = None, *, param: str | None = None
    ):
        super().__init__(message, param=param)
        self.report = report


def _check_choice(param: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConvertError(
            f"{param} must be one of {', '.join(choices)}, got {value!r}", param=param
        )


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines the cache's content; recorded in the file as JSON.

    Defaults reproduce the reference pipeline (docs/method.md, "Data and normalisation",
    "The six modalities"); each other value is a named departure ("Departures").
    """

    frames: int = layout.T_TARGET
    bodies: str = "reference"
    body_thresholds: dict[str, float] = field(default_factory=dict)
    centre: bool = True
    yaw: str = "sequence"
    modalities: tuple[str, ...] = ("joint",)
    unit_axis: bool = False
    bones: str = "6v"

    def __post_init__(self):
        if not 2 <= self.frames <= MAX_TARGET_FRAMES:
            raise ConvertError(
                f"frames must be between 2 and {MAX_TARGET_FRAMES}, got {self.frames}",
                param="frames",
            )
        _check_choice("bodies", self.bodies, BODY_RULES)
        _check_choice("yaw", self.yaw, YAW_MODES)
        try:
            self.modality_options  # noqa: B018 - validates bones and unit_axis
            # joint is always stored, and the order is canonical.
            mods = layout.check_modalities(list(dict.fromkeys(("joint", *self.modalities))))
        except layout.LayoutError as e:
            raise ConvertError(str(e), param="modalities") from None
        object.__setattr__(self, "modalities", mods)

    @property
    def modality_options(self) -> layout.ModalityOptions:
        return layout.ModalityOptions.resolve(bones=self.bones, unit_axis=self.unit_axis)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


def parse_modalities(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"all"`` or ``"joint,bone"`` (or an iterable of names) -> names in canonical order.

    Raises ConvertError for unknown or duplicate names (:func:`skelmod.layout.check_modalities`).
    """
    try:
        return layout.check_modalities(spec)
    except layout.LayoutError as e:
        raise ConvertError(str(e), param="modalities") from None
