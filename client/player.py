"""Play an asset: fetch, decode, routed per-patch SR, display or write, measure.

``fps`` counts frames upscaled per wall-clock second including decode, routing,
stitching and colour conversion (DESIGN §6): decode and the lanczos base run in a feed
thread beside the models, so a frame costs the slower of the two threads' work on it.
Network fetches, the optional PSNR measurement against a reference and the waits of a
paced player (``target_fps``: it renders at most a queue of frames ahead of the screen)
are outside the timed span.

A planned asset (``fitcast/2``) plays its plan: each frame's routes per patch, detail
reused from the last frame where the encoder decided so; an unplanned one routes every
patch by its group.  Both are the core's upscalers, which the encoder measured with.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from client.realtime import DegradePolicy, Pacing, PresentationClock, WorkShedder
from client.report import PlaybackStats
from client.viewer import Viewer
from fitcast.asset import Asset, Fetcher, open_asset
from fitcast.errors import InvalidInputError, MediaError
from fitcast.machine import Choice
from fitcast.manifest import LANCZOS, REUSE, Manifest, Segment
from fitcast.media import VideoWriter, has_audio, iter_frames, mux_audio, upscale
from fitcast.metrics import psnr_y
from fitcast.runtime import Session, open_session, precision_choice, runtime_choice, time_runtimes
from fitcast.upscale import PlannedUpscaler, RoutedUpscaler, routes_by_model


@dataclass(frozen=True)
class PlayOptions:
    reference: Path | None = None
    headless: bool = True
    out: Path | None = None
    runtime: str = "auto"  # auto: as measured on this machine (fitcast doctor)
    precision: str = "auto"  # auto: int8 where the asset ships it and it is exact here
    report: Path | None = None
    max_frames: int | None = None
    threads: int = 0
    # A real-time target (frames per second): frames are due at this rate, the player renders at
    # most ``queue`` frames ahead of the screen and degrades (easy models skipped first) rather
    # than fall behind.  None: play as fast as possible.
    target_fps: float | None = None
    queue: int = 8
    # False: lanczos only (no model is fetched or run): the baseline player.
    sr: bool = True
    # False: a planned asset plays without its plan (every patch routed by its group, no reuse).
    plan: bool = True
    # Seek: start at this segment (segments decode alone, so the frames are those of playing through).
    start_segment: int = 0
    # x264 CRF of ``out`` (0: lossless in YUV 4:2:0, what a VMAF measurement of the output needs).
    out_crf: int = 18


class Frame(NamedTuple):
    """One decoded frame and what the feed prepared for it."""

    segment: Segment
    position: int  # within the segment
    lr: np.ndarray
    base: np.ndarray  # the lanczos upscale
    labels: np.ndarray  # uint8 [gh, gw]
    codes: np.ndarray | None  # the plan's route codes, uint8 [gh, gw] (planned assets)
    motion: np.ndarray | None  # the plan's motion vectors, int8 [gh, gw, 2]
    order: np.ndarray | None  # the plan's ranks of model patches, uint16 [gh, gw] (None: an older plan)
    feed_seconds: float  # the feed thread's work on it: decode and the lanczos base


class FrameFeed:
    """Fetches segments, label and plan maps and decodes frames in a background thread.

    Frames wait in a bounded queue (``depth`` frames), so decoding, the lanczos base of
    each frame and the next segment's download overlap with the models' work on the other
    core, and memory stays bounded.  Iterating yields :class:`Frame`.  With ``keep_segments``
    the segment bytes it read stay in ``segments`` (for the audio of ``--out``).
    """

    _END = object()

    def __init__(self, asset: Asset, init: bytes, *, limit: int, planned: bool, base: str, start_segment: int = 0,
                 depth: int = 8, keep_segments: bool = False) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.segments: list[bytes] = []
        self._keep = keep_segments
        self._thread = threading.Thread(target=self._run, args=(asset, init, limit, planned, base, start_segment),
                                        name="fitcast-feed", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, asset: Asset, init: bytes, limit: int, planned: bool, base_kind: str, start_segment: int) -> None:
        try:
            m, sent = asset.manifest, 0
            for seg in m.segments[start_segment:]:
                if sent >= limit:
                    break
                data = asset.segment(seg)
                if self._keep:
                    self.segments.append(data)
                labels = asset.labels(seg)
                codes = motion = order = None
                if planned:
                    codes, motion, order = asset.plan(seg)
                frames = iter_frames(io.BytesIO(init + data), fmt="mp4", max_frames=seg.frames,
                                     max_pixels=m.lr[0] * m.lr[1])
                for j in range(seg.frames):
                    if sent >= limit:
                        break
                    t0 = time.perf_counter()
                    lr = next(frames, None)
                    if lr is None:
                        break
                    if lr.shape[:2] != (m.lr[1], m.lr[0]):
                        raise MediaError(f"segment {seg.index} decodes to {lr.shape[1]}x{lr.shape[0]}, the manifest "
                                         f"says {m.lr[0]}x{m.lr[1]}")
                    base = upscale(lr, m.scale, base_kind)
                    frame = Frame(seg, j, lr, base, labels[j], None if codes is None else codes[j],
                                  None if motion is None else motion[j], None if order is None else order[j],
                                  time.perf_counter() - t0)
                    if not self._put(frame):
                        return
                    sent += 1
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def models_to_run(m: Manifest, options: PlayOptions) -> list[str]:
    """The models this playback runs: the plan's, or those the groups route to (none without SR)."""
    if not options.sr:
        return []
    if m.plan is not None and options.plan:
        return [r for r in m.plan.routes if r not in (LANCZOS, REUSE)]
    return sorted({mid for seg in m.segments for mid in routes_by_model(seg.routes)})


def open_sessions(asset: Asset, used: list[str], options: PlayOptions) -> tuple[dict[str, Session], Choice, Choice]:
    """Sessions of the ``used`` models in the precision and runtime chosen for this machine
    (as asked, or by capability and a cached measurement), each run once before timing."""
    m = asset.manifest
    if not used:
        none = Choice("none", "default", "no model runs")
        return {}, none, none
    shipped: dict[str, int | None] = {}  # precision -> the widest int8 weights of the used models
    for e in m.models:
        if e.id in used:
            bits = (e.weight_bits or 8) if e.precision == "int8" else None
            shipped[e.precision] = max(bits or 0, shipped.get(e.precision) or 0) or None
    precision = precision_choice(options.precision, shipped)
    grid = m.grid()
    models = {mid: asset.read_model(m.model(mid, precision.value)) for mid in used}
    heaviest = max(used, key=lambda mid: m.model(mid, precision.value).macs_per_lr_px)
    runtime = runtime_choice(options.runtime, precision=precision.value,
                             probe=lambda rts: time_runtimes(models[heaviest], grid.window, grid.patches, runtimes=rts))
    sessions = {mid: open_session(data, runtime.value, threads=options.threads, window=grid.window)
                for mid, data in models.items()}
    for session in sessions.values():  # first runs allocate and plan: keep them out of the timed frames
        session.run(np.zeros((1, 3, grid.window, grid.window), np.float32))
    return sessions, runtime, precision


class Renderer:
    """One frame at a time, the way the asset says: its plan (planned assets) or its groups' routes."""

    def __init__(self, m: Manifest, sessions: dict[str, Session], options: PlayOptions) -> None:
        self.planned = m.plan is not None and options.plan and options.sr
        self.sr = options.sr
        self.base, self.scale = (m.base if options.sr else LANCZOS), m.scale  # the baseline player is lanczos
        if self.planned:
            assert m.plan is not None
            self.upscaler: Any = PlannedUpscaler(m.grid(), sessions, m.plan.routes)
            self.models = [r for r in m.plan.routes if r not in (LANCZOS, REUSE)]
        else:
            self.upscaler = RoutedUpscaler.for_manifest(m, sessions)
        self.route_counts: dict[str, int] = {}

    def render(self, frame: Frame, policy: DegradePolicy | None, shedder: WorkShedder | None = None,
               allowed_ms: float | None = None) -> np.ndarray:
        """Frame ``frame`` upscaled: a planned asset's plan (less what ``shedder`` sheds to fit
        ``allowed_ms``), else its groups' routes (at the level of ``policy``)."""
        if self.planned:
            assert frame.codes is not None and frame.motion is not None
            if frame.position == 0:
                self.upscaler.reset()
            shed = shedder.shed(frame.codes, frame.order, allowed_ms) if shedder is not None else None
            for code, count in zip(*np.unique(frame.codes, return_counts=True), strict=False):
                route = self.upscaler.routes[int(code)]
                self.route_counts[route] = self.route_counts.get(route, 0) + int(count)
            return self.upscaler.upscale(frame.lr, frame.base, frame.codes, frame.motion, shed=shed)
        routes = frame.segment.routes if self.sr else {label: LANCZOS for label in frame.segment.routes}
        if policy is not None:
            routes = policy.routes(routes)
        return self.upscaler.upscale(frame.lr, frame.labels, routes, frame.base)

    def shedder(self) -> WorkShedder | None:
        """The safety net of a planned asset (None for an unplanned one)."""
        if not self.planned:
            return None
        return WorkShedder({code: r for code, r in enumerate(self.upscaler.routes) if r in self.models})

    def shares(self) -> dict[str, float]:
        total = sum(self.route_counts.values())
        return {route: n / total for route, n in sorted(self.route_counts.items())} if total else {}


def play(
    location: str,
    options: PlayOptions = PlayOptions(),
    *,
    fetcher: Fetcher | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    sink: Callable[[Frame, np.ndarray], None] | None = None,
) -> dict:
    """Play the asset at ``location``; return the report dict (also written to ``options.report``).

    ``on_frame(played, total)`` follows progress; ``sink(frame, hr)`` receives every upscaled
    frame (a view of a reused buffer: copy what it keeps)."""
    # 1. open the asset: the manifest (its format checked) and its init section
    asset = open_asset(location, fetcher)
    m = asset.manifest
    init = asset.init()
    if not 0 <= options.start_segment < len(m.segments):
        raise InvalidInputError(f"no segment {options.start_segment} to start at (the asset has {len(m.segments)})")
    skipped = sum(seg.frames for seg in m.segments[: options.start_segment])
    total = min(sum(seg.frames for seg in m.segments) - skipped, options.max_frames or 1 << 62)
    # 2. sessions of the models to run, in the precision and on the runtime chosen for this machine
    sessions, runtime, precision = open_sessions(asset, models_to_run(m, options), options)
    renderer = Renderer(m, sessions, options)
    # 3. the outputs: reference frames for PSNR, the MP4 (with the rendition's audio), the window
    ref_iter = None
    if options.reference is not None:
        ref_iter = iter_frames(options.reference, crop=m.crop)
        for _ in range(skipped):  # the reference's frames before the start
            next(ref_iter, None)
    with_audio = options.out is not None and has_audio(init)
    video_out = options.out
    if with_audio and options.out is not None:  # the video first, then the audio muxed beside it
        video_out = options.out.with_name(options.out.name + ".video.tmp.mp4")
    writer = VideoWriter(video_out, m.hr[0], m.hr[1], m.fps, crf=options.out_crf) if video_out else None
    viewer = None if options.headless else Viewer(f"fitcast {m.asset_id}")
    # 4. real time: frames due at the target rate, a queue of frames ahead, degradation as the safety net
    pacing = None
    if options.target_fps:
        interval = 1.0 / options.target_fps
        pacing = Pacing(PresentationClock(interval, options.queue, options.queue // 2),
                        policy=None if renderer.planned else DegradePolicy(interval=interval, k=m.k),
                        shedder=renderer.shedder(), headroom=m.plan.headroom if m.plan is not None else 0.0)
    stats = PlaybackStats(runtime=runtime.value if sessions else "none", output_size=m.hr)
    # 5. the frames: decoded and based ahead in the feed thread, upscaled here
    feed = FrameFeed(asset, init, limit=total, planned=renderer.planned, base=renderer.base,
                     start_segment=options.start_segment,
                     keep_segments=with_audio)
    try:
        _play_frames(feed, renderer, stats, pacing, ref_iter, writer, viewer, on_frame, total, sink)
    finally:
        feed.close()
        if writer is not None:
            writer.close()
        if viewer is not None:
            viewer.close()
    # 6. the audio into --out, and the report
    if with_audio and video_out is not None and options.out is not None:
        try:  # the rendition's audio passed through, cut to the frames played
            mux_audio(video_out, io.BytesIO(init + b"".join(feed.segments)), options.out)
        finally:
            video_out.unlink(missing_ok=True)
    return _report(m, stats, pacing, renderer, runtime, precision, options)


def _play_frames(feed: FrameFeed, renderer: Renderer, stats: PlaybackStats, pacing: Pacing | None,
                 ref_iter: Iterator[np.ndarray] | None, writer: VideoWriter | None,
                 viewer: Viewer | None, on_frame: Callable[[int, int], None] | None, total: int,
                 sink: Callable[[Frame, np.ndarray], None] | None) -> None:
    current, seg_stats, played = None, None, 0
    base_is_lanczos = renderer.base == LANCZOS
    t_prev = time.perf_counter()
    for frame in feed:
        if frame.segment is not current:
            current, seg_stats = frame.segment, stats.segment(frame.segment.index)
        if pacing is not None:  # a queue slot must be free: waiting for the screen is not upscaling
            t_prev += pacing.clock.wait_for_slot(played)
        t_render = time.perf_counter()
        if pacing is None:
            hr = renderer.render(frame, None)
        else:  # the time this frame has, by the planner's rule (planned assets)
            hr = renderer.render(frame, pacing.policy, pacing.shedder,
                                 pacing.allowed_ms(played, t_render, first_of_segment=frame.position == 0))
        if writer is not None:
            writer.write(hr)
        if sink is not None:
            sink(frame, hr)
        t_now = time.perf_counter()
        assert seg_stats is not None
        # two threads on their own cores: the slower of the two is what a frame costs
        seg_stats.frame_seconds.append(max(t_now - t_prev, frame.feed_seconds))
        seg_stats.main_seconds.append(t_now - t_prev)
        seg_stats.feed_seconds.append(frame.feed_seconds)
        if pacing is not None:
            pacing.done(played, t_now, frame_seconds=t_now - t_prev, render_seconds=t_now - t_render,
                        model_seconds=renderer.upscaler.model_seconds if renderer.planned else ())
        if ref_iter is not None:
            t_ref = time.perf_counter()
            ref = next_reference(ref_iter, hr.shape, "asset")
            seg_stats.psnr_sr.append(psnr_y(hr, ref))
            lanczos = frame.base if base_is_lanczos else upscale(frame.lr, renderer.scale, "lanczos")
            seg_stats.psnr_lanczos.append(psnr_y(lanczos, ref))
            if pacing is not None:
                pacing.clock.pause(time.perf_counter() - t_ref)
        if viewer is not None:
            psnr = (seg_stats.psnr_sr[-1], seg_stats.psnr_lanczos[-1]) if seg_stats.psnr_sr else None
            if not viewer.show(hr, frame.base, t_now - t_prev, psnr):
                break
        played += 1
        if on_frame is not None:
            on_frame(played, total)
        t_prev = time.perf_counter()


def next_reference(ref_iter: Iterator[np.ndarray], shape: tuple[int, ...], what: str) -> np.ndarray:
    """The reference's next frame, which must be of ``shape`` (the played frame's)."""
    ref = next(ref_iter, None)
    if ref is None:
        raise InvalidInputError(f"the reference has fewer frames than the {what}")
    if ref.shape != shape:
        raise InvalidInputError(f"reference frames are {ref.shape[1]}x{ref.shape[0]} after cropping, "
                                f"the {what} is {shape[1]}x{shape[0]}")
    return ref


def _report(m: Manifest, stats: PlaybackStats, pacing: Pacing | None, renderer: Renderer, runtime: Choice,
            precision: Choice, options: PlayOptions) -> dict:
    if pacing is not None:
        stats.dropped_frames = pacing.clock.dropped
    report = stats.to_dict()
    report["precision"] = precision.value
    report["choices"] = {"runtime": runtime.to_dict(), "precision": precision.to_dict()}
    report["planned"] = renderer.planned
    if renderer.planned and m.plan is not None:
        report["plan"] = {"target_fps": m.plan.target_fps, "device": m.plan.device, "route_shares": renderer.shares(),
                          "predicted_ms": m.plan.predicted_ms,
                          "measured_ms": {"median": round(1000 / report["fps_median"], 3)} if report["fps_median"]
                          else None}
    if pacing is not None:
        report["target_fps"] = options.target_fps
        report |= pacing.report()
    if options.report is not None:
        from fitcast.storage import atomic_write_text

        atomic_write_text(options.report, json.dumps(report, indent=2))
    return report
