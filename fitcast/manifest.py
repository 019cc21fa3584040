"""The fitcast manifest (``format: "fitcast/1"``), shared by server and client.

Readers ignore unknown fields and refuse a format major version they do not
know.  URIs are relative to the manifest's own location.
"""

from __future__ import annotations

import json
import lzma
import re
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from fitcast.errors import ManifestError, UnsupportedFormatError
from fitcast.grid import Grid
from fitcast.options import Base, Method

FORMAT = "fitcast/1"  # an asset without a plan: every frame routed by its patches' groups
FORMAT_PLANNED = "fitcast/2"  # a planned asset: routes per patch and frame, reuse (readers of /1 refuse it)
SUPPORTED_MAJORS = (1, 2)
LANCZOS: Final = "lanczos"  # the route of a patch that no model touches: the base alone
REUSE = "reuse"  # a patch keeps the last frame's detail, moved by its motion vector



class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


# A shipped model is a few hundred kB at most; a file that inflates past this is refused.
MAX_MODEL_BYTES = 64 << 20

# Bounds on every number a manifest gives (a player allocates and loops by them, and a manifest
# comes from whatever server the player is pointed at).  fitcast itself writes far less.
MAX_SIDE = 8192  # pixels, either side of the HR frame
MAX_SEGMENTS = 100_000  # 55 hours of 2 s segments
MAX_SEGMENT_FRAMES = 3600
MAX_MODELS = 256
MAX_URI = 1024
MAX_SEGMENT_BYTES = 256 << 20  # a segment file (a 2 s LR segment is well under 10 MB)
MAX_MANIFEST_BYTES = 16 << 20
MAX_MAP_BYTES = 64 << 20  # a label or plan map file
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Uri = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URI)]


class PatchSpec(_Model):
    """The LR patch grid.

    ``size`` is P (LR pixels), ``grid`` is [gw, gh] patches, ``overlap`` the
    context (halo) in LR pixels read on every side of a patch when it is
    upscaled; outputs never overlap.  The frame is padded by edge replication.
    """

    size: int = Field(ge=4, le=512)
    grid: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    overlap: int = Field(ge=0, le=64)


class ModelEntry(_Model):
    id: str = Field(min_length=1, max_length=128)
    uri: Uri
    sha256: Sha256
    bytes: int = Field(ge=1, le=MAX_MODEL_BYTES)
    arch: dict[str, Any]
    params: int = Field(ge=0, le=1 << 26)
    macs_per_lr_px: int = Field(ge=0, le=1 << 30)
    precision: Literal["fp32", "int8", "bf16", "fp16"] = "fp32"
    runtime_hint: str = "onnxruntime"
    # What the network's output is added to: "lanczos" means the model predicts
    # the residual over the lanczos upscale of the same LR frame.
    residual: str = LANCZOS
    group: int | None = Field(default=None, ge=0, le=255)
    # How the stored file is coded: "xz" (LZMA2 entropy coding of the ONNX bytes; ``bytes`` and
    # ``sha256`` are of the stored, compressed file) or "identity".
    encoding: Literal["identity", "xz"] = "identity"
    # int8 models: bits of the quantised weights.  7 (what fitcast writes) is exact in every CPU's
    # int8 kernels; an int8 model without the field has 8-bit weights, which saturate in x86
    # kernels without VNNI (u8 x s8 pairs summed into 16 bits).
    weight_bits: int | None = Field(default=None, ge=2, le=8)



_M = TypeVar("_M", bound=BaseModel)


def compress_model(data: bytes) -> bytes:
    """The "xz" encoding of a model file (what the encoder stores and counts in ``bits.models``)."""
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def decompress_model(data: bytes, encoding: str) -> bytes:
    """Undo a model file's ``encoding``; refuses corrupt data and decompression bombs."""
    if encoding == "identity":
        return data
    if encoding != "xz":
        raise ManifestError(f"unknown model encoding {encoding!r}")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = dec.decompress(data, max_length=MAX_MODEL_BYTES)
    except lzma.LZMAError as exc:
        raise ManifestError(f"corrupt xz model file: {exc}") from None
    if not dec.eof:
        raise ManifestError(f"an xz model file is truncated or inflates past {MAX_MODEL_BYTES} bytes")
    return out


class SegmentQuality(_Model):
    psnr_y_lanczos: float
    psnr_y_sr: float


class Segment(_Model):
    index: int = Field(ge=0, lt=MAX_SEGMENTS)
    uri: Uri
    start: float = Field(ge=0)
    duration: float = Field(gt=0, le=120)
    frames: int = Field(ge=1, le=MAX_SEGMENT_FRAMES)
    labels_uri: Uri
    labels_sha256: Sha256
    routes: dict[str, str] = Field(max_length=256)
    # The segment file's sha256 and size (fitcast writes both since the player stopped trusting
    # its server; older manifests lack them and their segments are read with a size cap only).
    sha256: Sha256 | None = None
    bytes: int | None = Field(default=None, ge=1, le=MAX_SEGMENT_BYTES)
    quality: SegmentQuality | None = None
    # fitcast/2, a planned asset: every frame's route per patch (codes into ``Plan.routes``) and
    # motion vectors (``save_plan``), and the segment's planned PSNR-Y.
    plan_uri: Uri | None = None
    plan_sha256: Sha256 | None = None
    psnr_y_planned: float | None = None


class Plan(_Model):
    """What a planned asset was planned for (fitcast/2): the device, the rate, the queue, and
    the frame times predicted there.  ``routes`` names the codes of the segments' plan maps."""

    target_fps: float = Field(gt=0, le=480)
    queue_frames: int = Field(ge=1, le=256)  # frames the player may render ahead of the screen
    prebuffer_frames: int = Field(ge=0, le=256)  # intervals the first frame waits before it is shown
    headroom: float = Field(ge=0, lt=1)
    device: str = Field(max_length=512)
    profile_sha256: str = Field(max_length=64)
    routes: list[str] = Field(max_length=256)
    predicted_ms: dict[str, float]  # median, p95, max over the asset's frames


class Bits(_Model):
    """Bits of what a player downloads; ``video`` excludes ``audio`` (0 when the source has none)."""

    video: int
    models: int
    labels: int
    audio: int = 0
    plans: int = 0  # a planned asset's plan maps (routes and motion per patch and frame)


class Manifest(_Model):
    format: str = FORMAT
    asset_id: str = Field(max_length=128)
    scale: int
    hr: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    lr: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    fps: float = Field(gt=0, le=480)
    # [x, y, w, h] of the HR crop taken from the source (display orientation).
    crop: tuple[int, int, int, int]
    init_uri: Uri
    init_sha256: Sha256 | None = None
    patch: PatchSpec
    method: Method
    k: int = Field(ge=1, le=256)
    scorer: str = Field(max_length=64)
    models: list[ModelEntry] = Field(max_length=MAX_MODELS)
    segments: list[Segment] = Field(min_length=1, max_length=MAX_SEGMENTS)
    bits: Bits
    plan: Plan | None = None
    # The upscale the models' residuals are added to (fitcast/2 may say bicubic; fitcast/1 is lanczos).
    base: Base = LANCZOS

    @field_validator("format")
    @classmethod
    def _known_major(cls, value: str) -> str:
        check_format(value)
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: int) -> int:
        if value not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, not {value}")
        return value

    @model_validator(mode="after")
    def _playable(self) -> Manifest:
        """Refuse what this reader cannot play correctly: a route it does not know, a plan missing
        from a planned asset (rather than show wrong pixels)."""
        if (self.lr[0] * self.scale, self.lr[1] * self.scale) != tuple(self.hr):
            raise ValueError(f"hr {list(self.hr)} is not lr {list(self.lr)} times {self.scale}")
        grid = self.grid()
        if tuple(self.patch.grid) != (grid.gw, grid.gh):
            raise ValueError(f"patch grid {list(self.patch.grid)} does not cover lr {list(self.lr)} in "
                             f"{self.patch.size}-pixel patches")
        known = {e.id for e in self.models} | {LANCZOS}
        for seg in self.segments:
            for label, route in seg.routes.items():
                if route not in known:
                    raise ValueError(f"segment {seg.index} routes group {label} to {route!r}, which this reader "
                                     "does not know")
        if self.base != LANCZOS and self.major < 2:
            raise ValueError(f"a {self.base} base needs fitcast/2 (readers of {self.format} add residuals to lanczos)")
        if self.major >= 2:
            if self.plan is None or any(seg.plan_uri is None or seg.plan_sha256 is None for seg in self.segments):
                raise ValueError(f"a {self.format} asset needs its plan and every segment's plan map")
            unknown = [r for r in self.plan.routes if r not in known | {REUSE}]
            if unknown:
                raise ValueError(f"the plan uses routes {unknown} that this reader does not know")
        return self

    @property
    def major(self) -> int:
        return int(_FORMAT_RE.match(self.format).group(1))  # type: ignore[union-attr]

    def model(self, model_id: str, precision: str = "auto") -> ModelEntry:
        """The entry of ``model_id`` in ``precision``; ``auto`` prefers int8, then fp32.

        A model id appears once per precision it is shipped in.
        """
        entries = [e for e in self.models if e.id == model_id]
        if not entries:
            raise ManifestError(f"manifest names no model {model_id!r}")
        order = ["int8", "fp32", "bf16", "fp16"] if precision == "auto" else [precision]
        for want in order:
            for entry in entries:
                if entry.precision == want:
                    return entry
        raise ManifestError(f"model {model_id!r} is not shipped in {precision}")

    def grid(self) -> Grid:
        """The asset's patch grid (LR size, patch, halo and scale)."""
        return Grid(self.lr[0], self.lr[1], self.patch.size, self.patch.overlap, self.scale)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return parse(text)


_FORMAT_RE = re.compile(r"^fitcast/(\d+)(?:\.(\d+))?$")


def check_format(value: str) -> None:
    """Raise unless ``value`` is ``fitcast/<major>[.<minor>]`` with a known major."""
    match = _FORMAT_RE.match(str(value))
    if not match:
        raise ManifestError(f"not a fitcast manifest: format {value!r}")
    major = int(match.group(1))
    if major not in SUPPORTED_MAJORS:
        known = ", ".join(f"fitcast/{m}" for m in SUPPORTED_MAJORS)
        raise UnsupportedFormatError(f"manifest format {value!r} is not supported by this reader (knows {known}): "
                                     "update fitcast to play it")


def parse(text: str | bytes) -> Manifest:
    """Parse a manifest from JSON, with clear errors."""
    data = json_object(text, "manifest")
    check_format(data.get("format", ""))
    return validated(Manifest, data, "manifest")


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``text`` as a JSON object, or a one-line :class:`ManifestError` naming ``what``."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} must be a JSON object")
    return data


def validated(model: type[_M], data: dict[str, Any], what: str) -> _M:
    """``data`` validated as ``model``; the first problem as a one-line :class:`ManifestError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"invalid {what} at {where}: {first['msg'].removeprefix('Value error, ')}") from None
