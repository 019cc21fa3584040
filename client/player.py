"""Play an asset: fetch, decode, routed per-patch SR, display or write, measure.

``fps`` counts frames upscaled per wall-clock second including decode, routing,
stitching and colour conversion (DESIGN §6); network fetches and the optional
PSNR measurement against a reference are outside the timed span.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from client.realtime import Clock, DegradePolicy
from client.report import PlaybackStats
from client.viewer import Viewer
from fitcast.asset import Asset, Fetcher, open_asset
from fitcast.errors import InvalidInputError
from fitcast.grid import load_labels
from fitcast.machine import Choice
from fitcast.manifest import LANCZOS, Manifest
from fitcast.media import VideoWriter, has_audio, iter_frames, mux_audio, upscale
from fitcast.metrics import psnr_y
from fitcast.runtime import Session, open_session, precision_choice, runtime_choice, time_runtimes
from fitcast.upscale import RoutedUpscaler, routes_by_model


@dataclass(frozen=True)
class PlayOptions:
    reference: Path | None = None
    headless: bool = True
    out: Path | None = None
    runtime: str = "auto"  # auto: the fastest installed (OpenVINO, then ONNX Runtime)
    precision: str = "auto"  # auto: int8 where the asset ships it
    report: Path | None = None
    max_frames: int | None = None
    threads: int = 0
    # A real-time target (frames per second): frames get deadlines and the player degrades
    # (easy groups to lanczos first) rather than fall behind.  None: play as fast as possible.
    target_fps: float | None = None
    # False: lanczos only (no model is fetched or run): the baseline player.
    sr: bool = True
    # x264 CRF of ``out`` (0: lossless in YUV 4:2:0, what a VMAF measurement of the output needs).
    out_crf: int = 18


class FrameFeed:
    """Fetches segments and label maps and decodes frames in a background thread.

    Frames wait in a bounded queue (``depth`` frames), so decoding, the lanczos base
    of each frame and the next segment's download overlap with the models' work on
    the other core, and memory stays bounded.
    Iterating yields ``(segment, index, lr_frame, lanczos_base, labels_of_frame)``.
    With ``keep_segments`` the segment bytes it read stay in ``segments`` (for the audio
    of ``--out``), so nothing is fetched twice.
    """

    _END = object()

    def __init__(self, asset: Asset, manifest: Manifest, init: bytes, *, limit: int, depth: int = 8,
                 keep_segments: bool = False) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.segments: list[bytes] = []
        self._keep = keep_segments
        self._thread = threading.Thread(target=self._run, args=(asset, manifest, init, limit), name="fitcast-feed",
                                        daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, asset: Asset, m: Manifest, init: bytes, limit: int) -> None:
        try:
            sent = 0
            for seg in m.segments:
                if sent >= limit:
                    break
                data = asset.read(seg.uri)
                if self._keep:
                    self.segments.append(data)
                labels = load_labels(asset.read(seg.labels_uri, seg.labels_sha256))
                for j, lr in enumerate(iter_frames(io.BytesIO(init + data), fmt="mp4")):
                    if sent >= limit:
                        break
                    if j >= labels.shape[0]:
                        raise InvalidInputError(f"segment {seg.index} has more frames than its label map")
                    base = upscale(lr, m.scale, "lanczos")
                    if not self._put((seg, j, lr, base, labels[j])):
                        return
                    sent += 1
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def __iter__(self):
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


def open_sessions(asset: Asset, used: list[str], options: PlayOptions) -> tuple[dict[str, Session], Choice, Choice]:
    """Sessions of the ``used`` models in the precision and runtime chosen for this machine
    (as asked, or by capability and a cached measurement), each run once before timing."""
    m = asset.manifest
    shipped: dict[str, int | None] = {}  # precision -> the widest int8 weights of the used models
    for e in m.models:
        if e.id in used:
            bits = (e.weight_bits or 8) if e.precision == "int8" else None
            shipped[e.precision] = max(bits or 0, shipped.get(e.precision) or 0) or None
    precision = precision_choice(options.precision, shipped) if used else Choice("none", "default", "no model runs")
    if not used:
        return {}, Choice("none", "default", "no model runs"), precision
    grid = m.grid()
    window = grid.window
    models = {mid: asset.read_model(m.model(mid, precision.value)) for mid in used}
    heaviest = max(used, key=lambda mid: m.model(mid, precision.value).macs_per_lr_px)
    batch = grid.patches
    runtime = runtime_choice(options.runtime, precision=precision.value,
                             probe=lambda rts: time_runtimes(models[heaviest], window, batch, runtimes=rts))
    sessions = {mid: open_session(data, runtime.value, threads=options.threads, window=window)
                for mid, data in models.items()}
    for session in sessions.values():  # first runs allocate and plan: keep them out of the timed frames
        session.run(np.zeros((1, 3, window, window), np.float32))
    return sessions, runtime, precision


def play(
    location: str,
    options: PlayOptions = PlayOptions(),
    *,
    fetcher: Fetcher | None = None,
    on_frame: Callable[[int, int], None] | None = None,
) -> dict:
    """Play the asset at ``location``; return the report dict (also written to ``options.report``)."""
    asset: Asset = open_asset(location, fetcher)
    m = asset.manifest
    total_frames = sum(seg.frames for seg in m.segments)
    if options.max_frames is not None:
        total_frames = min(total_frames, options.max_frames)

    used = sorted({mid for seg in m.segments for mid in routes_by_model(seg.routes)}) if options.sr else []
    sessions, runtime, precision = open_sessions(asset, used, options)
    upscaler = RoutedUpscaler.for_manifest(m, sessions)

    ref_iter: Iterator[np.ndarray] | None = None
    if options.reference is not None:
        ref_iter = iter_frames(options.reference, crop=tuple(m.crop))

    stats = PlaybackStats(runtime=runtime.value if used else "none", output_size=tuple(m.hr))
    init = asset.read(m.init_uri)
    with_audio = options.out is not None and has_audio(init)
    video_out = options.out.with_name(options.out.name + ".video.tmp.mp4") if with_audio else options.out
    writer = VideoWriter(video_out, m.hr[0], m.hr[1], m.fps, crf=options.out_crf) if video_out else None
    viewer = None if options.headless else Viewer(f"fitcast {m.asset_id}")
    policy = clock = None
    if options.target_fps:
        policy = DegradePolicy(interval=1.0 / options.target_fps, k=m.k)
        clock = Clock(interval=1.0 / options.target_fps)
    played = 0
    feed = FrameFeed(asset, m, init, limit=total_frames, keep_segments=with_audio)
    try:
        current = None
        t_prev = time.perf_counter()
        for seg, j, lr, base, labels in feed:
            if seg is not current:
                current = seg
                seg_stats = stats.segment(seg.index)
            routes = seg.routes if options.sr else {label: LANCZOS for label in seg.routes}
            if policy is not None:
                routes = policy.routes(routes)
            hr = upscaler.upscale(lr, labels, routes, base)
            if writer is not None:
                writer.write(hr)
            t_now = time.perf_counter()
            seg_stats.frame_seconds.append(t_now - t_prev)
            if policy is not None and clock is not None:
                clock.done(played, t_now)
                if played > 0:  # the first frame also waited for the first segment: start-up, not upscaling
                    policy.observe(played, t_now - t_prev)
            if ref_iter is not None:
                ref = next(ref_iter, None)
                if ref is None:
                    raise InvalidInputError("the reference has fewer frames than the asset")
                if ref.shape != hr.shape:
                    raise InvalidInputError(f"reference frames are {ref.shape[1]}x{ref.shape[0]} after cropping, "
                                            f"asset is {hr.shape[1]}x{hr.shape[0]}")
                seg_stats.psnr_sr.append(psnr_y(hr, ref))
                seg_stats.psnr_lanczos.append(psnr_y(base, ref))
            if viewer is not None:
                psnr = (seg_stats.psnr_sr[-1], seg_stats.psnr_lanczos[-1]) if seg_stats.psnr_sr else None
                if not viewer.show(hr, base, t_now - t_prev, psnr):
                    break
            played += 1
            if on_frame is not None:
                on_frame(played, total_frames)
            t_prev = time.perf_counter()
    finally:
        feed.close()
        if writer is not None:
            writer.close()
        if viewer is not None:
            viewer.close()
    if with_audio:  # pass the rendition's audio through, cut to the frames played
        rendition = io.BytesIO(init + b"".join(feed.segments))
        try:
            mux_audio(video_out, rendition, options.out)
        finally:
            video_out.unlink(missing_ok=True)
    if clock is not None and policy is not None:
        stats.dropped_frames = clock.dropped
    report = stats.to_dict()
    report["precision"] = precision.value if used else "none"
    report["choices"] = {"runtime": runtime.to_dict(), "precision": precision.to_dict()}
    if policy is not None:
        report["target_fps"] = options.target_fps
        report["degradations"] = policy.events
    if options.report is not None:
        from fitcast.storage import atomic_write_text

        atomic_write_text(options.report, json.dumps(report, indent=2))
    return report
