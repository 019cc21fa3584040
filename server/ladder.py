"""The ladder encode: several rungs of one title in one HLS master (``fitcast/ladder``).

:func:`encode_ladder` reads as its stages.  The rates come from measurements on the clip: every
rung's resolution is encoded over a CRF range on evenly spread segments of the source
(:func:`measured_frames`), its frames lanczos-upscaled to the display size and measured, and
:func:`fitcast.ladder.choose_rungs` takes each rung's point nearest the per-title hull in its
bitrate band.  Every SR rung is then a whole fitcast asset
(:func:`server.pipeline.encode`, the crop shared so every rung covers the same pixels, trained
within what the ladder's one encode budget leaves it: :class:`LadderBudget`); the
full-resolution rung is the same transcode at scale 1.  ``ladder.json`` and the master playlist
are published last, each by atomic rename: until then no ladder is visible.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import m3u8
import numpy as np

from fitcast.errors import InvalidInputError
from fitcast.ladder import (
    LADDER_DATA_ID,
    Ladder,
    RatePoint,
    Rung,
    RungBits,
    RungSegment,
    RungSpec,
    choose_rungs,
    crop_multiple,
    parse_rungs,
    per_title_hull,
)
from fitcast.manifest import Manifest
from fitcast.media import HlsEncoder, Limits, center_crop, downscale, iter_frames, probe, upscale
from fitcast.metrics import psnr_y
from fitcast.options import EncodeOptions
from fitcast.rendition import (
    INIT,
    SESSION_DATA_ID,
    Variant,
    measured_bandwidth,
    paired_frames,
    segment_frames,
    segments_of,
    write_master,
)
from fitcast.storage import (
    AssetLayout,
    atomic_dir,
    atomic_write_text,
    claim_asset_dir,
    clear_leftovers,
    sha256_file,
    validate_asset_id,
)
from server.compute import Executor
from server.pipeline import (
    TRAIN_SHARE,
    ProgressFn,
    Source,
    StageRunner,
    asset_slug,
    encode,
    encode_seconds,
    probe_source,
    transcode,
)

# The CRFs each resolution is measured at (the per-title hull); the top rung's own CRF is added.
PROBE_CRFS = (19, 23, 27, 31, 35, 39)
MEASURED_FRAMES = 48  # frames per candidate encode measured against the source (evenly spaced)
MEASURED_SEGMENT_STRIDE = 3  # the measure stage encodes every third segment of a long source
MIN_MEASURED_SEGMENTS = 4  # ... and never fewer than four (all of a shorter one)

LADDER_STAGES: dict[str, float] = {"probe": 0.01, "measure": 0.12, "rungs": 0.7, "lift": 0.02, "rerate": 0.12,
                                   "publish": 0.03}


@dataclass(frozen=True)
class LadderPaths(AssetLayout):
    """A ladder asset's paths: an asset's, with ``sr/ladder.json`` and the rungs' folders."""

    @property
    def ladder(self) -> Path:
        return self.sr / "ladder.json"

    def rung(self, name: str) -> Path:
        return self.root / "rungs" / name


def encode_ladder(
    source: str | Path,
    out_dir: str | Path,
    options: EncodeOptions,
    *,
    asset_id: str | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    limits: Limits | None = None,
) -> Ladder:
    """Encode ``source`` as the ladder ``options.ladder`` asks for (``auto``: x4, x2 and full
    resolution, rates per title) into ``out_dir``; return the published ladder."""
    if not options.ladder:
        raise InvalidInputError("a ladder encode needs rungs (--ladder auto, or x4:32,x2:27,x1:23)")
    specs = parse_rungs(options.ladder)
    paths, limits = LadderPaths(Path(out_dir)), limits or Limits()
    asset_id = validate_asset_id(asset_id or asset_slug(paths.root.name))
    run = StageRunner(progress, LADDER_STAGES)

    # 1. probe: the source, and the crop every rung divides
    src = run("probe", probe_ladder_source, Path(source), options, specs, limits=limits)
    claim_asset_dir(paths.root)
    clear_leftovers(paths.root)
    # 2. measure: every rung's resolution over a CRF range, upscaled by lanczos to the display size
    points = run("measure", measure_points, src, specs, options, work=paths.work)
    # 3. choose: each rung's rate on the per-title hull of lanczos-upscaled quality (or as fixed by hand)
    first = choose_rungs(points, specs, top_crf=options.crf)
    # 4. rungs: an SR rung is a whole fitcast asset (its trained models kept), training within what the
    #    ladder's budget leaves it; the full-resolution rung a transcode
    budget = LadderBudget(None if options.iterations else encode_seconds(src.source, options.encode_budget),
                          spent=run.seconds["total"], reserve=run.seconds.get("measure", 0.0))  # as encode()'s
    rungs = run("rungs", encode_rungs, src, specs, first, options, paths, budget, asset_id=asset_id,
                executor=executor, limits=limits)
    # 5. lift: each SR rung's models on its resolution's measured encodes (its quality as delivered, its
    #    models and labels counted in its rate)
    lifted = run("lift", lift_points, src, specs, rungs, points, paths)
    # 6. choose again on the hull of delivered quality; an SR rung whose rate moves is encoded again at
    #    its new rate with the models it trained
    #    (where the budget still affords it: else the rung keeps its first rate)
    crfs = choose_rungs(delivered_points(points, lifted), specs, top_crf=options.crf)
    budget.reserve = 0.0  # what it was kept for is done
    rungs = run("rerate", rerate_rungs, src, specs, rungs, first, crfs, options, paths, budget, asset_id=asset_id,
                executor=executor, limits=limits)
    # 7. publish: ladder.json, the master playlist over every rung, the report
    ladder = run("publish", publish_ladder, paths, asset_id, src, rungs)
    measured = measured_frames(src.source.info.frames, src.source.segment_frames) if points else None
    write_ladder_report(paths.report, ladder_report(ladder, points, lifted, first, crfs, run.seconds, measured))
    shutil.rmtree(paths.work, ignore_errors=True)
    return ladder


@dataclass(frozen=True)
class LadderSource:
    """The probed source and the display crop every rung shares."""

    source: Source  # at scale 1: the display size

    @property
    def path(self) -> Path:
        return self.source.path


def probe_ladder_source(path: Path, options: EncodeOptions, specs: list[RungSpec], *, limits: Limits,
                        progress: Any) -> LadderSource:
    info = probe(path, limits)
    crop = center_crop(info.width, info.height, crop_multiple([s.scale for s in specs]))
    one = options.model_copy(update={"scale": 2, "ladder": None})  # any scale: probe_source checks the crop
    src = probe_source(path, one, patch=8, limits=limits, crop=crop, progress=progress)
    return LadderSource(Source(src.path, src.info, crop, 1, src.segment_frames))


def measure_points(src: LadderSource, specs: list[RungSpec], options: EncodeOptions, *, work: Path,
                   progress: Any) -> list[RatePoint]:
    """Every rung whose rate is not fixed, encoded at ``PROBE_CRFS`` (and the top CRF) as the
    rung will be (same x264 preset and GOPs) on the :func:`measured_frames`' segments: video
    kbit/s and PSNR-Y of the lanczos upscale against the source on the compared frames (the
    encodes stay in ``work`` for :func:`lift_points`)."""
    todo = [s for s in specs if s.crf is None]
    if not todo:
        return []
    crfs = sorted(set(PROBE_CRFS) | {options.crf})
    s = src.source
    frames = measured_frames(s.info.frames, s.segment_frames)
    references: dict[int, np.ndarray] = {}
    points = []
    for n, spec in enumerate(todo):
        w, h = s.crop[2] // spec.scale, s.crop[3] // spec.scale
        dirs = {crf: measured_dir(work, spec.scale, crf) for crf in crfs}
        with ExitStack() as stack:
            encoders = [stack.enter_context(HlsEncoder(d, w, h, s.fps, s.segment_frames, crf=crf,
                                                       x264_preset=options.x264_preset)) for crf, d in dirs.items()]
            for i, hr in enumerate(iter_frames(s.path, crop=s.crop)):
                if not frames.encodes(i):
                    continue
                if n == 0 and i in frames.compared:
                    references[i] = hr
                lr = downscale(hr, spec.scale) if spec.scale > 1 else hr
                for enc in encoders:
                    enc.write(lr)
        for crf, d in dirs.items():
            _, average = measured_bandwidth(d)
            scores = [psnr_y(upscale(lr, spec.scale, "lanczos") if spec.scale > 1 else lr, references[i])
                      for i, lr in frames.decoded_compared(d)]
            points.append(RatePoint(spec.scale, crf, average / 1000, float(np.mean(scores))))
        progress((n + 1) / len(todo))
    return points


class LadderBudget:
    """The one encode budget of a ladder (seconds; None: no limit) as its SR rungs take from it.

    Each SR rung trains within what is left (less ``reserve``, kept for the stages after the SR
    rungs: the lift and the full-resolution rung, which cost about what the measure stage did):
    the first within ``TRAIN_SHARE`` of an even share, as a single encode does; each later one
    within its even share less what the costliest rung so far took outside training (its plan
    and evaluate stages, bound by the display size, which every rung shares).  The SR rungs are
    encoded costliest first (the largest LR), so that guess errs on the safe side.  On a slow CPU
    the later rungs train less (never under their share of the preset's floor); on a fast one no
    rung is held back."""

    def __init__(self, seconds: float | None, *, spent: float = 0.0, reserve: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds, self.reserve, self.clock = seconds, reserve, clock
        self.started = clock() - spent
        self.others: dict[str, float] = {}  # each SR rung's seconds outside training, as encoded

    def left(self) -> float:
        """Seconds left (less the reserve); infinite without a limit."""
        if self.seconds is None:
            return math.inf
        return max(0.0, self.seconds - (self.clock() - self.started) - self.reserve)

    def training_seconds(self, rungs_left: int) -> float | None:
        """The seconds the next SR rung may train, ``rungs_left`` SR rungs (it among them) still to encode."""
        if self.seconds is None:
            return None
        left = self.left() / max(1, rungs_left)
        share = TRAIN_SHARE * left if not self.others else left - max(self.others.values())
        return max(1.0, share)  # (0 would mean no limit to the encode)

    def affords_again(self, rung: str) -> bool:
        """Whether what is left affords encoding ``rung`` again without training (the rerate stage)."""
        return self.left() >= self.others.get(rung, 0.0)

    def rung_done(self, rung: str, report: dict[str, Any]) -> None:
        """Count a finished SR rung's seconds outside training (its ``quality.json``)."""
        seconds = report.get("seconds", {})
        self.others[rung] = float(seconds.get("total", 0.0)) - float(seconds.get("train", 0.0))


def encode_rungs(src: LadderSource, specs: list[RungSpec], crfs: dict[int, int], options: EncodeOptions,
                 paths: LadderPaths, budget: LadderBudget, *, asset_id: str, executor: Executor | None,
                 limits: Limits, progress: Any) -> list[Rung]:
    """Every rung: SR rungs through the whole encode, the largest LR first (:class:`LadderBudget`),
    then the full-resolution rung as a transcode and a measurement of its decoded frames."""
    rungs: list[Rung] = []
    order = sorted(specs, key=lambda sp: (sp.scale == 1, sp.scale))
    weights = [0.1 if sp.scale == 1 else 1.0 for sp in order]
    n_sr, done = sr_count(specs), 0.0
    for spec, weight in zip(order, weights, strict=True):
        def sub(stage: str, fraction: float, done: float = done, weight: float = weight) -> None:
            progress((done + weight * fraction) / sum(weights))

        folder = paths.rung(spec.name)
        crf = crfs[spec.scale]
        if spec.scale == 1:
            rungs.append(full_resolution_rung(src, folder, options.model_copy(update={"crf": crf}), paths))
        else:
            mine = rung_options(options, spec, crf, sr_rungs=n_sr,
                                training_seconds=budget.training_seconds(n_sr - len(budget.others)),
                                ladder_seconds=budget.seconds)
            key = rung_key(mine, src.source.crop)
            kept = finished_rung(folder, key)  # a rung an earlier run of this ladder encode finished: kept
            if kept is None:
                manifest = encode(src.path, folder, mine,
                                  asset_id=f"{asset_id}-{spec.name}"[-64:], progress=sub, executor=executor,
                                  limits=limits, crop=src.source.crop, trained_in=training_dir(paths, spec))
                kept = manifest, crf
                write_rung_key(folder, key, crf)
            budget.rung_done(spec.name, json.loads((AssetLayout(folder).report / "quality.json").read_text()))
            rungs.append(sr_rung(spec, kept[1], kept[0], folder, paths))
        done += weight
        progress(done / sum(weights))
    return rungs


def measured_dir(work: Path, scale: int, crf: int) -> Path:
    return work / "measured" / f"x{scale}-crf{crf}"


@dataclass(frozen=True)
class MeasuredFrames:
    """What the measure and lift stages look at (:func:`measured_frames`): whole segments of the
    source, encoded one after another as the rungs encode them, and some of their frames compared
    against the source (the same frames for every point of every curve)."""

    segment_length: int  # frames
    segments: tuple[int, ...]  # the source's segments encoded, in order
    compared: frozenset[int]  # source frame indices compared against the source

    def encodes(self, frame: int) -> bool:
        return frame // self.segment_length in self.segments

    def decoded_compared(self, hls_dir: Path) -> Iterator[tuple[int, np.ndarray]]:
        """The compared frames of a measured encode in ``hls_dir``, decoded: (source index, frame)."""
        decoded = (lr for seg in segments_of(hls_dir) for lr in segment_frames(hls_dir, seg))
        for j, lr in enumerate(decoded):
            n = self.segment_length
            i = self.segments[j // n] * n + j % n
            if i in self.compared:
                yield i, lr


def measured_frames(frames: int, segment_length: int) -> MeasuredFrames:
    """The segments the measure stage encodes and the frames it compares, for a source of
    ``frames`` in segments of ``segment_length`` frames.

    Segments: every ``MEASURED_SEGMENT_STRIDE``-th, centred in its stride, where that leaves at
    least ``MIN_MEASURED_SEGMENTS`` (all of them in a shorter source): x264 at every CRF of every
    resolution was the stage's cost, and a title's rate-quality curves are its content's, which
    evenly spread segments sample.  Frames: up to ``MEASURED_FRAMES`` of the encoded ones, evenly
    spaced and never in step with the segments.  A stride sharing a factor with the segment length
    samples a few positions of every GOP, its key frame among them, coded finer than the rest: on
    the whole leaf clip (60-frame segments) every 30th frame (half of them key frames, 4.7 dB above
    the mean) put full resolution at CRF 23 2.35 dB above its all-frame PSNR-Y; every 15th or every
    17th, 1.05 dB (a 48-frame sample's own error)."""
    count = max(1, math.ceil(max(frames, 1) / segment_length))
    seg_stride = max(1, min(MEASURED_SEGMENT_STRIDE, count // MIN_MEASURED_SEGMENTS))
    segments = tuple(range(min(seg_stride // 2, count - 1), count, seg_stride))
    encoded = [i for g in segments for i in range(g * segment_length, min((g + 1) * segment_length, frames))]
    stride = max(1, math.ceil(len(encoded) / MEASURED_FRAMES))
    while stride > 1 and math.gcd(stride, segment_length) > 1:
        stride += 1
    return MeasuredFrames(segment_length, segments, frozenset(encoded[::stride]))


def training_dir(paths: LadderPaths, spec: RungSpec) -> Path:
    """Where an SR rung's encode keeps the models it trained (for an encode again at another rate)."""
    return paths.work / "training" / spec.name


def lift_points(src: LadderSource, specs: list[RungSpec], rungs: list[Rung], points: list[RatePoint],
                paths: LadderPaths, *, progress: Any) -> list[RatePoint]:
    """Each SR rung's quality as delivered at every CRF its resolution was measured at: its models
    (as shipped, routed by difficulty groups of those frames, each group kept only where it beats
    lanczos on them: the encoder's gate) on the measured frames, the rate counting its models and
    its labels (as its own encode has them).  Unplanned quality: a planned rung delivers a little less."""
    from chunking.groups import assign_groups
    from chunking.score import lanczos_psnr_y
    from fitcast.asset import open_asset
    from fitcast.manifest import LANCZOS
    from fitcast.options import EncodeOptions
    from fitcast.runtime import open_session
    from fitcast.upscale import RoutedUpscaler, select_patches
    from server.pipeline import gate, shipped_models
    from sr_models.recipes import recipe_for

    s = src.source
    encoded = {r.name for r in rungs}
    lift = [spec for spec in specs if spec.scale > 1 and spec.crf is None and spec.name in encoded]
    if not lift:
        return []
    frames = measured_frames(s.info.frames, s.segment_frames)  # the measure stage's: every curve on the same frames
    references = {i: hr for i, hr in enumerate(iter_frames(s.path, crop=s.crop)) if i in frames.compared}
    lifted = []
    for n, spec in enumerate(lift):
        asset = open_asset(str(paths.rung(spec.name)))
        m = asset.manifest
        models, int8 = shipped_models(asset)
        grid, k = m.grid(), m.k
        # the fastest runtime here (an estimate to choose rates by: the rung's own encode measures it exactly)
        upscaler = RoutedUpscaler(grid, {x.id: open_session(x.shipped_bytes(int8), window=grid.window)
                                         for x in models}, m.base)
        groups = recipe_for(EncodeOptions(method=m.method, k=k)).group_models(k)
        # a group whose model the rung does not ship (its gate found it no better than lanczos) stays lanczos
        all_sr = {str(g): groups[g] if groups[g] in upscaler.sessions else LANCZOS for g in range(k)}
        side_kbps = (m.bits.models + m.bits.labels) / max(sum(seg.duration for seg in m.segments), 1e-9) / 1000
        for point in (p for p in points if p.scale == spec.scale):
            compared = list(frames.decoded_compared(measured_dir(paths.work, spec.scale, point.crf)))
            lrs, hrs = [lr for _, lr in compared], [references[i] for i, _ in compared]
            labels, _ = assign_groups(np.stack([lanczos_psnr_y(lr, hr, grid) for lr, hr in zip(lrs, hrs, strict=True)]),
                                      k)
            bases = [upscale(lr, spec.scale, m.base) for lr in lrs]
            srs = [upscaler.upscale(lr, lab, all_sr, b).copy() for lr, lab, b in zip(lrs, labels, bases, strict=True)]
            routes = gate(srs, bases, hrs, labels, grid, all_sr)
            finals = [select_patches(b, sr, lab, routes, grid) for b, sr, lab in zip(bases, srs, labels, strict=True)]
            lifted.append(RatePoint(spec.scale, point.crf, point.kbps + side_kbps,
                                    float(np.mean([psnr_y(f, hr) for f, hr in zip(finals, hrs, strict=True)]))))
        progress((n + 1) / len(lift))
    return lifted


def delivered_points(points: list[RatePoint], lifted: list[RatePoint]) -> list[RatePoint]:
    """What the ladder can deliver at each measured encode: an SR rung's lifted points in place of its
    resolution's lanczos ones, the full-resolution rung's as measured."""
    sr_scales = {p.scale for p in lifted}
    return [p for p in points if p.scale not in sr_scales] + lifted


def rerate_rungs(src: LadderSource, specs: list[RungSpec], rungs: list[Rung], first: dict[int, int],
                 crfs: dict[int, int], options: EncodeOptions, paths: LadderPaths, budget: LadderBudget, *,
                 asset_id: str, executor: Executor | None, limits: Limits, progress: Any) -> list[Rung]:
    """The rungs, each SR rung whose CRF the second choice moved encoded again at its new CRF with
    the models its first encode trained (no training), where the ladder's budget affords as long
    again as its first encode took outside training; the others as they are."""
    published = {r.name: r.crf for r in rungs}
    moved = [spec for spec in specs if spec.scale > 1 and crfs[spec.scale] != published[spec.name]
             and budget.affords_again(spec.name)]
    out = [r for r in rungs if r.name not in {spec.name for spec in moved}]
    n_sr = sr_count(specs)
    for n, spec in enumerate(moved):
        folder = paths.rung(spec.name)
        (folder / RUNG_KEY).unlink(missing_ok=True)
        manifest = encode(src.path, folder, rung_options(options, spec, crfs[spec.scale], sr_rungs=n_sr),
                          asset_id=f"{asset_id}-{spec.name}"[-64:], executor=executor, limits=limits,
                          crop=src.source.crop, trained_in=training_dir(paths, spec),
                          progress=lambda _stage, f, n=n: progress((n + f) / len(moved)))
        # kept under the options it was first chosen with: a run again finds it and keeps it
        write_rung_key(folder, rung_key(rung_options(options, spec, first[spec.scale], sr_rungs=n_sr),
                                        src.source.crop), crfs[spec.scale])
        out.append(sr_rung(spec, crfs[spec.scale], manifest, folder, paths))
    progress(1.0)
    return out


# In an SR rung's folder once its encode finished: the options it was first chosen with (its key)
# and the CRF it is published at (the lift may have moved it).
RUNG_KEY = "rung-options.json"


def sr_count(specs: list[RungSpec]) -> int:
    return sum(1 for s in specs if s.scale > 1)


def rung_options(options: EncodeOptions, spec: RungSpec, crf: int, *, sr_rungs: int = 1,
                 training_seconds: float | None = None, ladder_seconds: float | None = None) -> EncodeOptions:
    """An SR rung's encode options: the ladder's, at the rung's scale and CRF, with its share of the
    ladder's encode budget: an even share (the ``sr_rungs`` SR rungs share the time one encode gets),
    or the encode budget under which it trains ``training_seconds`` (:class:`LadderBudget`) of a
    ladder allowed ``ladder_seconds`` in all; and its share of the preset's training floor (on the
    whole leaf clip, on an AVX2 CPU, the x4 rung's own floor of 3,000 iterations took 606 s against
    its 360 s share)."""
    n = max(1, sr_rungs)
    budget = options.encode_budget / n
    if training_seconds is not None and ladder_seconds:
        budget = options.encode_budget * training_seconds / (TRAIN_SHARE * ladder_seconds)
    return options.model_copy(update={"scale": spec.scale, "crf": crf, "ladder": None, "encode_budget": budget,
                                      "training_floor": options.training_floor / n})


def rung_key(options: EncodeOptions, crop: tuple[int, int, int, int]) -> str:
    """What an SR rung's encode depends on: its options and the shared crop (not the time it was
    given to train: that depends on how long the run before it took)."""
    return json.dumps({"options": options.model_dump(mode="json", exclude={"encode_budget"}), "crop": list(crop)},
                      sort_keys=True)


def write_rung_key(folder: Path, key: str, crf: int) -> None:
    atomic_write_text(folder / RUNG_KEY, json.dumps({"key": key, "crf": crf}))


def finished_rung(folder: Path, key: str) -> tuple[Manifest, int] | None:
    """The manifest of the rung in ``folder`` and the CRF it is published at, if its encode
    finished for the same ``key``."""
    from fitcast.manifest import parse

    try:
        kept = json.loads((folder / RUNG_KEY).read_text())
        if kept["key"] == key:
            return parse((folder / "sr" / "manifest.json").read_bytes()), int(kept["crf"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def full_resolution_rung(src: LadderSource, folder: Path, options: EncodeOptions, paths: LadderPaths) -> Rung:
    """The display-size rung: the HR crop through the same transcode (scale 1), each segment's
    decoded frames measured against the source."""
    layout = AssetLayout(folder)
    claim_asset_dir(folder)
    rendition = transcode(src.source, layout.hls, options, manifest=False, progress=lambda _: None)
    segments = []
    for seg, decoded, reference in paired_frames(src.path, src.source.crop, rendition.hls, rendition.segments):
        psnr = float(np.mean([psnr_y(a, b) for a, b in zip(decoded, reference, strict=True)]))
        segments.append(_rung_segment(paths, layout.hls / seg.uri, seg.index, seg.start, seg.duration, len(decoded),
                                      psnr, sr_bytes=0))
    peak, average = measured_bandwidth(layout.hls)
    return Rung(name="x1", scale=1, width=src.source.crop[2], height=src.source.crop[3], crf=options.crf,
                playlist_uri=_rel(paths, layout.hls / "lr.m3u8"), init_uri=_rel(paths, layout.hls / INIT),
                init_sha256=sha256_file(layout.hls / INIT), codecs=rendition.codec, bandwidth=peak,
                average_bandwidth=average, bits=RungBits(video=rendition.video_bytes * 8,
                                                         audio=rendition.audio_bytes * 8, models=0, labels=0, plans=0),
                psnr_y=_frame_mean(segments), segments=segments)


def sr_rung(spec: RungSpec, crf: int, m: Manifest, folder: Path, paths: LadderPaths) -> Rung:
    """An SR rung from its published asset: bits as a default player fetches them (the models
    it runs, labels, plans) and quality as it plays (the plan's where planned)."""
    layout = AssetLayout(folder)
    segments = []
    for seg in m.segments:
        quality = seg.psnr_y_planned if seg.psnr_y_planned is not None else \
            (seg.quality.psnr_y_sr if seg.quality else float("nan"))
        sr_bytes = _size(layout.sr / seg.labels_uri) + (_size(layout.sr / seg.plan_uri) if seg.plan_uri else 0)
        segments.append(_rung_segment(paths, layout.sr / seg.uri, seg.index, seg.start, seg.duration, seg.frames,
                                      quality, sr_bytes=sr_bytes))
    codecs = m3u8.load(str(layout.hls / "master.m3u8")).playlists[0].stream_info.codecs
    peak, average = measured_bandwidth(layout.hls)
    lanczos = [(s.quality.psnr_y_lanczos, s.frames) for s in m.segments if s.quality]
    return Rung(name=spec.name, scale=spec.scale, width=m.lr[0], height=m.lr[1], crf=crf,
                playlist_uri=_rel(paths, layout.hls / "lr.m3u8"), init_uri=_rel(paths, layout.hls / INIT),
                init_sha256=sha256_file(layout.hls / INIT), manifest_uri=_rel(paths, layout.sr / "manifest.json"),
                codecs=codecs, bandwidth=peak, average_bandwidth=average,
                bits=RungBits(video=m.bits.video, audio=m.bits.audio, models=m.bits.models, labels=m.bits.labels,
                              plans=m.bits.plans),
                psnr_y=_frame_mean(segments),
                psnr_y_lanczos=float(np.average([q for q, _ in lanczos], weights=[f for _, f in lanczos]))
                if lanczos else None,
                segments=segments)


def publish_ladder(paths: LadderPaths, asset_id: str, src: LadderSource, rungs: list[Rung], *,
                   progress: Any) -> Ladder:
    """ladder.json, then the master playlist: every rung, lowest rate first; its session data
    points at the ladder and at the best SR rung's manifest (a player that knows no ladder
    plays that rung as an ordinary asset)."""
    rungs = sorted(rungs, key=lambda r: r.bits.total)
    s = src.source
    ladder = Ladder(asset_id=asset_id, hr=s.hr, fps=float(s.fps), crop=s.crop, rungs=rungs)
    paths.ladder.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.ladder, ladder.to_json())
    paths.hls.mkdir(parents=True, exist_ok=True)
    variants = [Variant(r.playlist_uri, r.bandwidth, r.average_bandwidth, r.width, r.height, float(s.fps),
                        r.codecs) for r in rungs]
    session = {LADDER_DATA_ID: "../sr/ladder.json"}
    sr = [r for r in rungs if r.manifest_uri is not None]
    if sr:
        session[SESSION_DATA_ID] = str(max(sr, key=lambda r: r.psnr_y).manifest_uri)
    write_master(paths.hls / "master.m3u8", variants, session_data=session)
    return ladder


def ladder_report(ladder: Ladder, points: list[RatePoint], lifted: list[RatePoint], first: dict[int, int],
                  crfs: dict[int, int], seconds: dict[str, float], measured: MeasuredFrames | None = None
                  ) -> dict[str, Any]:
    hull = per_title_hull(points) if points else []
    delivered = per_title_hull(delivered_points(points, lifted)) if points else []
    return {
        "rungs": [{"name": r.name, "scale": r.scale, "size": [r.width, r.height], "crf": r.crf,
                   "kbps_total": r.kbps, "kbps_video": r.average_bandwidth / 1000, "psnr_y": r.psnr_y,
                   "psnr_y_lanczos": r.psnr_y_lanczos, "model_kbits": r.bits.models / 1000} for r in ladder.rungs],
        "chosen_crf": {r.name: r.crf for r in ladder.rungs},  # as published
        "first_crf": {f"x{k}": v for k, v in first.items()},  # chosen on the lanczos hull, before the lift
        # chosen on the delivered hull, after the lift (a rung the budget could not encode again kept its first)
        "second_crf": {f"x{k}": v for k, v in crfs.items()},
        "measured": [p.__dict__ for p in points],
        # the source's segments the measured and lifted points are on (of every one the rungs have)
        "measured_segments": list(measured.segments) if measured else [],
        "segments": len(ladder.rungs[0].segments) if ladder.rungs else 0,
        "lifted": [p.__dict__ for p in lifted],
        "hull": [p.__dict__ for p in hull],
        "delivered_hull": [p.__dict__ for p in delivered],
        "seconds": dict(seconds),
    }


# --------------------------------------------------------------------------- helpers


def _rung_segment(paths: LadderPaths, media: Path, index: int, start: float, duration: float, frames: int,
                  psnr: float, *, sr_bytes: int) -> RungSegment:
    return RungSegment(index=index, uri=_rel(paths, media.resolve()), sha256=sha256_file(media),
                       bytes=media.stat().st_size, sr_bytes=sr_bytes, start=start, duration=duration, frames=frames,
                       psnr_y=psnr)


def _rel(paths: LadderPaths, path: Path) -> str:
    """``path`` as ladder.json names it (relative to sr/)."""
    return "../" + path.resolve().relative_to(paths.root.resolve()).as_posix()


def _size(path: Path) -> int:
    return path.stat().st_size


def _frame_mean(segments: list[RungSegment]) -> float:
    return float(np.average([s.psnr_y for s in segments], weights=[s.frames for s in segments]))


def write_ladder_report(report_dir: Path, report: dict[str, Any]) -> None:
    """``report/ladder.json`` and ``report/rd.png`` (the measured points, the per-title hull and
    the rungs as delivered) as one atomic rename."""
    with atomic_dir(report_dir) as tmp:
        atomic_write_text(tmp / "ladder.json", json.dumps(report, indent=2))
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # the JSON is what matters
            return
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for scale in sorted({p["scale"] for p in report["measured"]}):
            pts = sorted((p for p in report["measured"] if p["scale"] == scale), key=lambda p: p["kbps"])
            ax.plot([p["kbps"] for p in pts], [p["psnr_y"] for p in pts], "o-", ms=3, lw=1, alpha=0.7,
                    label=f"x{scale} + lanczos" if scale > 1 else "full resolution")
        for scale in sorted({p["scale"] for p in report.get("lifted", [])}):
            pts = sorted((p for p in report["lifted"] if p["scale"] == scale), key=lambda p: p["kbps"])
            ax.plot([p["kbps"] for p in pts], [p["psnr_y"] for p in pts], "s-", ms=3, lw=1.5,
                    label=f"x{scale} + its SR (models counted)")
        if report["hull"]:
            ax.plot([p["kbps"] for p in report["hull"]], [p["psnr_y"] for p in report["hull"]], "k--", lw=1,
                    label="per-title hull (x264 + lanczos)")
        for r in report["rungs"]:
            ax.plot(r["kbps_total"], r["psnr_y"], "*", ms=12, label=f"rung {r['name']} (CRF {r['crf']})")
        ax.set_xscale("log")
        if report.get("measured_segments"):
            ax.set_title(f"curves: the {len(report['measured_segments'])} measured segments of "
                         f"{report['segments']}; stars: the rungs over every segment", fontsize=8)
        ax.set_xlabel("total kbit/s (video, audio, models, labels)")
        ax.set_ylabel("PSNR-Y at display size (dB)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(tmp / "rd.png", dpi=110)
        plt.close(fig)
