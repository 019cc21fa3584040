"""What an encode is asked to do: one options model for the CLI, the upload and the job table.

:class:`UploadOptions` are the options an upload may set (they are the upload's query
model); :class:`EncodeOptions` adds what only the command line and the service's settings
set.  Both validate on construction and round-trip through JSON (the job table stores
them so).  The method and preset names exist here once; what each method and preset
*does* is in ``sr_models.recipes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fitcast.errors import InvalidInputError

Method = Literal["stdo", "jstdo", "dydca", "generic"]
METHODS: tuple[str, ...] = get_args(Method)
PresetName = Literal["fast", "realtime", "balanced", "best"]
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)
Base = Literal["lanczos", "bicubic"]  # what the models' residuals are added to
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]

METHOD_HELP = {
    "stdo": "one model per difficulty group (STDO)",
    "jstdo": "one joint model, hard groups sampled more (JSTDO)",
    "dydca": "one dynamic model, a branch per group (Dy-DCA; the default)",
    "generic": "the shipped generic model, not overfitted (the baseline)",
}


class UploadOptions(BaseModel):
    """The options of an upload (query parameters of ``POST /v1/assets``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: Annotated[int, Field(ge=2, le=4,
                                description="upscaling factor: the LR rendition is 1/scale of the source")] = 2
    # dydca by default: measured the best of the methods on every clip tried (README, quality table)
    method: Annotated[Method, Field(description="; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items()))] = "dydca"
    k: Annotated[int, Field(ge=1, le=16, description="number of difficulty groups")] = 2
    crf: Annotated[int, Field(ge=0, le=51, description="x264 CRF of the LR rendition")] = 23
    segment_seconds: Annotated[float, Field(ge=0.5, le=20, description="HLS segment length")] = 2.0
    preset: Annotated[PresetName, Field(description="model size and training budget")] = "balanced"
    target_fps: Annotated[float | None, Field(ge=0, le=240, description=(
        "plan every frame's routes to play at this rate on the target device (the shipped reference "
        "profile unless an encode names one); 0: no plan; default: the source's frame rate"))] = None
    ladder: Annotated[str | None, Field(pattern=r"^(auto|x[1-4](:\d{1,2})?(,x[1-4](:\d{1,2})?){0,5})$", description=(
        "an ABR ladder instead of one rendition: auto (x4, x2 and full resolution, rates chosen on the "
        "clip) or rungs like x4:32,x2:27,x1:23 (scale:CRF; a rung without a CRF is chosen on the clip)"))] = None


class EncodeOptions(UploadOptions):
    """Every option of an encode."""

    x264_preset: X264Preset = "medium"
    seed: int = 0
    # Override the preset's training iterations (tests use tiny budgets).
    iterations: Annotated[int | None, Field(ge=1)] = None
    # Encode seconds per second of source (per second of 1280x720 at 30 fps for larger sources):
    # without --iterations the training budget grows with the length (the preset's, times up to 4),
    # but that growth stops where training would take more than half of this on the machine that
    # encodes (never below the preset's own budget).  0: no limit.
    encode_budget: Annotated[float, Field(ge=0)] = 60.0
    # The share of the preset's own training budget an encode runs at least, whatever the time
    # budget allows: a ladder's SR rungs share one preset budget (1/n each), so a ladder's training
    # stays within its encode budget where one rung alone would not (x4 on an AVX2 CPU).
    training_floor: Annotated[float, Field(gt=0, le=1)] = 1.0
    # JSTDO's data-aware sampling: share of each group in a batch, hardest first
    # (default: falling linearly from 2 to 1).
    group_weights: tuple[float, ...] | None = None
    # Ship an int8 variant of every model (static quantisation calibrated on this asset's patches);
    # the quality report and the do-no-harm gate then measure the int8 models the player runs by default.
    int8: bool = True
    # Bits per shipped weight (3-7): None (auto) takes, per model, the fewest that keep its gain on
    # its own training windows within 2 % (sr_models.compact); 7 is the int8 export's own grid.
    weight_bits: Annotated[int | None, Field(ge=3, le=7)] = None
    # Where training runs: "auto" takes a GPU when torch sees one (the rest of the encode stays on the CPU).
    train_device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"
    # An architecture chosen by the compiler-aware search (`fitcast nas`), and its patch size;
    # they replace the preset's (stdo and jstdo: dydca builds its own branches).
    arch: dict[str, Any] | None = None
    patch: Annotated[int | None, Field(ge=8, le=256)] = None
    # stdo/jstdo: start training from the shipped generic model (sr_models/weights) instead of from
    # scratch.  None (auto): whenever the preset's network is the generic one (see sr_models.recipes).
    warm_start: bool | None = None
    # The device a plan is made for (a `fitcast profile-device` file; None: the shipped reference
    # profile), the frames its player may render ahead, and the share of each frame's interval the
    # plan leaves free for what predictions miss.
    device_profile: Path | None = None
    # The upscale every model's residual is added to: lanczos (the reference every gain is measured
    # against), or bicubic where the device cannot afford lanczos beside the models (auto: a planned
    # asset whose lanczos base would take over half the frame interval on the device; README, speed).
    base: Literal["auto", "lanczos", "bicubic"] = "auto"
    plan_queue: Annotated[int, Field(ge=1, le=120)] = 8
    plan_headroom: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.15

    @model_validator(mode="after")
    def _consistent(self) -> EncodeOptions:
        if self.group_weights is not None and (len(self.group_weights) != self.k or min(self.group_weights) <= 0):
            raise ValueError(f"group weights must be {self.k} positive numbers, not {list(self.group_weights)}")
        if self.arch is not None and self.method not in ("stdo", "jstdo"):
            raise ValueError(f"a searched architecture trains with method stdo or jstdo, not {self.method}")
        if self.warm_start and (self.method not in ("stdo", "jstdo") or self.arch is not None):
            raise ValueError("warm start applies to stdo and jstdo (the generic model's architecture)")
        return self

    @classmethod
    def parse(cls, **values: Any) -> EncodeOptions:
        """Construct, turning a validation failure into one line (:class:`InvalidInputError`)."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise InvalidInputError(one_line(exc)) from None


def one_line(exc: ValidationError) -> str:
    """The first problem of a pydantic validation error, as one line."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
