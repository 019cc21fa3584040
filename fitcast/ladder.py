"""The ABR ladder (``format: "fitcast-ladder/1"``): several renditions of one title, shared by
the encoder, the player and the benchmarks.

A ladder asset is a folder::

    hls/master.m3u8     every rung as an EXT-X-STREAM-INF (ordinary HLS players switch among them)
    sr/ladder.json      this format: every rung, its bits (models and labels counted), its
                        delivered quality per segment, and where its fitcast manifest is (URIs
                        relative to sr/, like a manifest's)
    rungs/<name>/       a rung: an SR rung is a whole fitcast asset (hls/, sr/, report/) that plays
                        alone as any asset does; the full-resolution rung has hls/ only
    report/ladder.json  the measurements the rungs were chosen from, and plots

Rungs share segment boundaries (the same frames per segment, each segment one closed GOP), so
a player may switch at any segment.  :func:`per_title_hull` and :func:`choose_rungs` are the
per-title rule: every resolution over a CRF range, upscaled to the display size, forms the hull
of quality against bits; each rung takes the point of its resolution nearest that hull within
its bitrate band.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Final

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from fitcast.errors import InvalidInputError, ManifestError, UnsupportedFormatError
from fitcast.manifest import MAX_SEGMENT_BYTES, MAX_SEGMENTS, MAX_SIDE, Sha256, Uri, json_object, validated

LADDER_FORMAT: Final = "fitcast-ladder/1"
LADDER_DATA_ID: Final = "com.fitcast.ladder"  # the master playlist's pointer to ladder.json
MAX_RUNGS = 8
RUNG_NAME = r"^x[1-4](?:-[a-z0-9]{1,8})?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RungSegment(_Model):
    """One segment of a rung: its media file and what it delivers."""

    index: int = Field(ge=0, lt=MAX_SEGMENTS)
    uri: Uri  # relative to ladder.json (sr/)
    sha256: Sha256
    bytes: int = Field(ge=1, le=MAX_SEGMENT_BYTES)
    sr_bytes: int = Field(ge=0)  # label and plan maps the player fetches beside it (0: full resolution)
    start: float = Field(ge=0)
    duration: float = Field(gt=0, le=120)
    frames: int = Field(ge=1)
    psnr_y: float  # delivered: the SR'd frames (what the rung's player shows), or the decoded ones


class RungBits(_Model):
    video: int = Field(ge=0)
    audio: int = Field(ge=0)
    models: int = Field(ge=0)  # fetched once, before the rung's first segment plays
    labels: int = Field(ge=0)
    plans: int = Field(ge=0)

    @property
    def total(self) -> int:
        return self.video + self.audio + self.models + self.labels + self.plans


class Rung(_Model):
    """One rendition of the ladder."""

    name: Annotated[str, StringConstraints(pattern=RUNG_NAME)]
    scale: int = Field(ge=1, le=4)  # 1: the full-resolution rung, no SR
    width: int = Field(ge=1, le=MAX_SIDE)  # the coded (LR) size
    height: int = Field(ge=1, le=MAX_SIDE)
    crf: int = Field(ge=0, le=51)
    playlist_uri: Uri
    init_uri: Uri
    init_sha256: Sha256
    manifest_uri: Uri | None = None  # the rung's fitcast manifest (SR rungs)
    codecs: str = Field(max_length=200)
    bandwidth: int = Field(ge=1)  # as the master playlist says: the peak segment rate, bits/s
    average_bandwidth: int = Field(ge=1)
    bits: RungBits
    psnr_y: float  # delivered, mean over frames
    psnr_y_lanczos: float | None = None  # the same LR frames upscaled by lanczos (SR rungs)
    segments: list[RungSegment] = Field(min_length=1, max_length=MAX_SEGMENTS)

    @property
    def kbps(self) -> float:
        """Total bits (video, audio, models, labels, plans) over the duration, kbit/s."""
        return self.bits.total / max(sum(s.duration for s in self.segments), 1e-9) / 1000


class Ladder(_Model):
    format: str = LADDER_FORMAT
    asset_id: str = Field(max_length=128)
    hr: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    fps: float = Field(gt=0, le=480)
    crop: tuple[int, int, int, int]
    rungs: list[Rung] = Field(min_length=1, max_length=MAX_RUNGS)  # ascending total bits

    @model_validator(mode="after")
    def _aligned(self) -> Ladder:
        """Every rung covers the display size and cuts its segments where the others do."""
        first = self.rungs[0]
        for rung in self.rungs:
            if (rung.width * rung.scale, rung.height * rung.scale) != tuple(self.hr):
                raise ValueError(f"rung {rung.name}: {rung.width}x{rung.height} times {rung.scale} is not the "
                                 f"display size {self.hr[0]}x{self.hr[1]}")
            if [(s.frames, round(s.start, 3)) for s in rung.segments] != \
                    [(s.frames, round(s.start, 3)) for s in first.segments]:
                raise ValueError(f"rung {rung.name}'s segments are not aligned with rung {first.name}'s")
            if rung.scale > 1 and rung.manifest_uri is None:
                raise ValueError(f"rung {rung.name} is upscaled x{rung.scale} but names no fitcast manifest")
        if len({r.name for r in self.rungs}) != len(self.rungs):
            raise ValueError("rung names repeat")
        return self

    def rung(self, name: str) -> Rung:
        for rung in self.rungs:
            if rung.name == name:
                return rung
        raise InvalidInputError(f"the ladder has no rung {name!r} (it has {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rungs]

    @property
    def segment_count(self) -> int:
        return len(self.rungs[0].segments)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def parse_ladder(text: str | bytes) -> Ladder:
    """A ladder from JSON, with one-line errors; refuses another major version."""
    data = json_object(text, "ladder")
    fmt = str(data.get("format", ""))
    if not re.match(r"^fitcast-ladder/\d+", fmt):
        raise ManifestError(f"not a fitcast ladder: format {fmt!r}")
    if not fmt.startswith("fitcast-ladder/1"):
        raise UnsupportedFormatError(f"ladder format {fmt!r} is not supported by this reader (knows {LADDER_FORMAT})")
    return validated(Ladder, data, "ladder")


# --------------------------------------------------------------------------- rung specs


@dataclass(frozen=True)
class RungSpec:
    """A rung asked for: a scale and, fixed by hand, its CRF (None: chosen per title)."""

    scale: int
    crf: int | None = None

    @property
    def name(self) -> str:
        return f"x{self.scale}"


LADDER_SPEC = r"^(auto|x[1-4](:\d{1,2})?(,x[1-4](:\d{1,2})?){0,5})$"


def parse_rungs(spec: str) -> list[RungSpec]:
    """``auto`` (x4, x2 and full resolution, CRFs per title) or ``x4:32,x2:27,x1:23`` (a CRF
    after a colon fixes that rung's rate; without one it is chosen per title)."""
    if not re.match(LADDER_SPEC, spec):
        raise InvalidInputError(f"ladder {spec!r}: say auto, or rungs like x4:32,x2:27,x1:23")
    if spec == "auto":
        return [RungSpec(4), RungSpec(2), RungSpec(1)]
    rungs = []
    for part in spec.split(","):
        name, _, crf = part.partition(":")
        if crf and not 0 <= int(crf) <= 51:
            raise InvalidInputError(f"ladder {spec!r}: a CRF is 0 to 51")
        rungs.append(RungSpec(int(name[1:]), int(crf) if crf else None))
    if len({r.scale for r in rungs}) != len(rungs):
        raise InvalidInputError(f"ladder {spec!r}: one rung per scale")
    return sorted(rungs, key=lambda r: -r.scale)


def crop_multiple(scales: list[int]) -> int:
    """The crop every rung can divide: sides a multiple of 2 * lcm(scales) (4:2:0 at every rung)."""
    return math.lcm(*scales)


# --------------------------------------------------------------------------- the per-title hull


@dataclass(frozen=True)
class RatePoint:
    """One encode measured: a resolution (``scale``), its CRF, its total rate and quality at the
    display size (lanczos-upscaled, or SR'd for a fitcast rung)."""

    scale: int
    crf: int
    kbps: float
    psnr_y: float
    vmaf: float | None = None


def per_title_hull(points: list[RatePoint]) -> list[RatePoint]:
    """The upper convex hull of quality against log rate over every point (any resolution),
    cheapest first: the best quality each rate can buy on this title, with ideal switching
    between neighbouring encodes."""
    pts = sorted(points, key=lambda p: (p.kbps, -p.psnr_y))
    best: list[RatePoint] = []
    for p in pts:  # drop points beaten by a cheaper one
        if not best or p.psnr_y > best[-1].psnr_y:
            best.append(p)
    hull: list[RatePoint] = []
    for p in best:  # Andrew's monotone chain, upper side, on (log rate, quality)
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(a: RatePoint, b: RatePoint, c: RatePoint) -> float:
    ax, bx, cx = math.log(a.kbps), math.log(b.kbps), math.log(c.kbps)
    return (bx - ax) * (c.psnr_y - a.psnr_y) - (b.psnr_y - a.psnr_y) * (cx - ax)


def hull_psnr(hull: list[RatePoint], kbps: float) -> float:
    """The hull's quality at ``kbps`` (linear in log rate between hull points, flat past its ends)."""
    xs = np.log([p.kbps for p in hull])
    return float(np.interp(math.log(max(kbps, 1e-9)), xs, [p.psnr_y for p in hull]))


def choose_rungs(points: list[RatePoint], specs: list[RungSpec], *, top_crf: int, spacing: float = 2.0
                 ) -> dict[int, int]:
    """The CRF of every rung (scale -> CRF), from the measured ``points``.

    The highest-resolution rung takes ``top_crf`` (or its fixed CRF).  Each lower rung aims at a
    rate ``spacing`` times below the rung above it and, among its own points within a factor
    of ``sqrt(spacing)`` of that rate, takes the one closest to the per-title hull (on it, where
    that resolution is the best choice there); with none in the band, the point nearest the aim.
    """
    chosen: dict[int, int] = {}
    hull = per_title_hull(points)
    above_kbps: float | None = None
    for spec in sorted(specs, key=lambda s: s.scale):
        own = sorted((p for p in points if p.scale == spec.scale), key=lambda p: p.kbps)
        if spec.crf is not None or (above_kbps is None and not own):
            crf = spec.crf if spec.crf is not None else top_crf
        elif above_kbps is None:
            crf = min(own, key=lambda p: abs(p.crf - top_crf)).crf
        else:
            if not own:
                raise InvalidInputError(f"no measurement of rung x{spec.scale} to choose its rate from")
            aim = above_kbps / spacing
            band = [p for p in own if aim / math.sqrt(spacing) <= p.kbps <= aim * math.sqrt(spacing)
                    and p.kbps < above_kbps]
            if band:
                crf = max(band, key=lambda p: (round(p.psnr_y - hull_psnr(hull, p.kbps), 2), -abs(
                    math.log(p.kbps / aim)))).crf
            else:
                crf = min(own, key=lambda p: abs(math.log(p.kbps / aim))).crf
        chosen[spec.scale] = crf
        at = [p for p in points if p.scale == spec.scale and p.crf == crf]
        above_kbps = at[0].kbps if at else above_kbps
    return chosen
