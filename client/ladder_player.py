"""Play a ladder: each segment from the rung the ABR rule picks, upscaled by that rung's models.

The network runs on the clock of a bandwidth trace (:mod:`client.abr`), so a run is
reproducible; the frames are the real ones: every segment is fetched (sha256-checked),
decoded and upscaled by the rung's own renderer (its plan where it has one), and measured
against ``--reference``.  Segments are aligned across rungs and each is one closed GOP, so a
switch needs nothing but the new rung's init section (and its models, the first time).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from client.abr import AbrSession, BandwidthTrace, NetworkClock, SrThroughputRule
from client.player import Frame, PlayOptions, Renderer, models_to_run, next_reference, open_sessions
from fitcast.asset import MAX_PLAYLIST_BYTES, Asset, Fetcher, open_asset, resolve_uri, session_data_uri
from fitcast.errors import MediaError, NotFoundError
from fitcast.ladder import LADDER_DATA_ID, Ladder, Rung, parse_ladder
from fitcast.manifest import MAX_MANIFEST_BYTES, MAX_SEGMENT_BYTES
from fitcast.media import iter_frames, upscale
from fitcast.metrics import psnr_y

UNLIMITED_KBPS = 1e7  # no trace given: a network far faster than any rung


@dataclass(frozen=True)
class AbrOptions:
    trace: BandwidthTrace | None = None  # None: UNLIMITED_KBPS
    safety: float = 0.8
    max_buffer: float = 12.0
    rung: str | None = None  # play this rung only (no ABR)


@dataclass
class OpenLadder:
    ladder: Ladder
    location: str  # of ladder.json (a URL or a path)
    fetcher: Fetcher

    def read(self, uri: str, sha256: str | None = None, *, limit: int = MAX_SEGMENT_BYTES) -> bytes:
        return self.fetcher.read(resolve_uri(self.location, uri), sha256, limit=limit)


def ladder_location(location: str, fetcher: Fetcher) -> str | None:
    """Where ``location``'s ladder.json is, or None when it is a single asset."""
    parts = urlparse(location)
    if parts.scheme in ("http", "https"):
        if parts.path.endswith("ladder.json"):
            return location
        if parts.path.endswith(".m3u8"):
            text = fetcher.read(location, limit=MAX_PLAYLIST_BYTES).decode(errors="replace")
            return session_data_uri(location, text, LADDER_DATA_ID)
        return None
    path = Path(location)
    if path.is_dir():
        inside = path / "sr" / "ladder.json"
        return str(inside.resolve()) if inside.is_file() else None
    if path.name == "ladder.json" and path.is_file():
        return str(path.resolve())
    if path.suffix == ".m3u8" and path.is_file() and path.stat().st_size <= MAX_PLAYLIST_BYTES:
        return session_data_uri(str(path.resolve()), path.read_text(errors="replace"), LADDER_DATA_ID)
    return None


def open_ladder(where: str, fetcher: Fetcher) -> OpenLadder:
    return OpenLadder(parse_ladder(fetcher.read(where, limit=MAX_MANIFEST_BYTES)), where, fetcher)


class RungPlayer:
    """One rung's decoder and renderer, opened on first use (its models fetched then)."""

    def __init__(self, lad: OpenLadder, rung: Rung, options: PlayOptions) -> None:
        self.rung = rung
        self.init = lad.read(rung.init_uri, rung.init_sha256)
        self.asset: Asset | None = None
        self.renderer: Renderer | None = None
        if rung.manifest_uri is not None:
            self.asset = open_asset(resolve_uri(lad.location, rung.manifest_uri), lad.fetcher)
            sessions, _, _ = open_sessions(self.asset, models_to_run(self.asset.manifest, options), options)
            self.renderer = Renderer(self.asset.manifest, sessions, options)

    def frames(self, lad: OpenLadder, index: int) -> list[np.ndarray]:
        """Segment ``index`` at the display size, as this rung shows it."""
        seg = self.rung.segments[index]
        data = lad.read(seg.uri, seg.sha256, limit=seg.bytes)
        decoded = list(iter_frames(io.BytesIO(self.init + data), fmt="mp4", max_frames=seg.frames,
                                   max_pixels=self.rung.width * self.rung.height))
        if len(decoded) != seg.frames or any(f.shape[:2] != (self.rung.height, self.rung.width) for f in decoded):
            raise MediaError(f"rung {self.rung.name} segment {index}: not the {seg.frames} frames of "
                             f"{self.rung.width}x{self.rung.height} the ladder states")
        if self.asset is None or self.renderer is None:
            return decoded
        m = self.asset.manifest
        aseg = m.segments[index]
        labels = self.asset.labels(aseg)
        codes = motion = order = None
        if self.renderer.planned:
            codes, motion, order = self.asset.plan(aseg)
        out = []
        for j, lr in enumerate(decoded):
            base = upscale(lr, m.scale, self.renderer.base)
            frame = Frame(aseg, j, lr, base, labels[j], None if codes is None else codes[j],
                          None if motion is None else motion[j], None if order is None else order[j], 0.0)
            out.append(self.renderer.render(frame, None).copy())
        return out


def play_ladder(location: str, options: PlayOptions | None = None, abr: AbrOptions | None = None, *,
                fetcher: Fetcher | None = None) -> dict[str, Any]:
    """Play the ladder at ``location`` over ``abr.trace``; return the report (also written to
    ``options.report``)."""
    options, abr, fetcher = options or PlayOptions(), abr or AbrOptions(), fetcher or Fetcher()
    # 1. the ladder
    where = ladder_location(location, fetcher)
    if where is None:
        raise NotFoundError(f"{location}: no fitcast ladder here")
    lad = open_ladder(where, fetcher)
    ladder = lad.ladder
    session = AbrSession(ladder, abr.trace or BandwidthTrace.constant(UNLIMITED_KBPS),
                         rule=SrThroughputRule(safety=abr.safety), max_buffer=abr.max_buffer, rung=abr.rung)
    players: dict[str, RungPlayer] = {}
    ref_iter = iter_frames(options.reference, crop=ladder.crop) if options.reference is not None else None
    log: list[dict[str, Any]] = []
    frames_shown, render_seconds = 0, 0.0
    # 2. every segment: the rung (the rule's, on the network's clock), then its frames, measured
    for index in range(ladder.segment_count):
        step = session.step(index)
        rung = step.rung
        if rung.name not in players:
            players[rung.name] = RungPlayer(lad, rung, options)
        t0 = time.perf_counter()
        shown = players[rung.name].frames(lad, index)
        render_seconds += time.perf_counter() - t0
        estimate = session.rule.estimate()
        entry: dict[str, Any] = {
            "index": index, "rung": rung.name, "why": step.why, "kbits": round(step.bits / 1000, 1),
            "download_s": round(step.seconds, 3), "buffer_s": round(step.buffer_before, 3),
            "estimate_kbps": None if estimate is None else round(estimate, 1),
            "psnr_y_stated": rung.segments[index].psnr_y, "models_fetched": step.models_fetched}
        if ref_iter is not None:
            entry["psnr_y"] = float(np.mean([psnr_y(hr, next_reference(ref_iter, hr.shape, "ladder")) for hr in shown]))
        frames_shown += len(shown)
        log.append(entry)
        if options.max_frames is not None and frames_shown >= options.max_frames:
            break
    # 3. the report
    report = ladder_report(ladder, log, session.clock, frames_shown, render_seconds)
    if options.report is not None:
        from fitcast.storage import atomic_write_text

        atomic_write_text(options.report, json.dumps(report, indent=2))
    return report


def ladder_report(ladder: Ladder, log: list[dict[str, Any]], clock: NetworkClock, frames: int,
                  render_seconds: float) -> dict[str, Any]:
    rungs = [e["rung"] for e in log]
    weights = [ladder.rung(e["rung"]).segments[e["index"]].frames for e in log]
    report: dict[str, Any] = {
        "ladder": ladder.asset_id,
        "rule": "SR-aware throughput rule (dash.js ThroughputRule: harmonic mean of the last 4 downloads x 0.8; "
                "the best delivered PSNR-Y among affordable rungs)",
        "segments": log,
        "rungs": rungs,
        "switches": sum(1 for a, b in zip(rungs, rungs[1:], strict=False) if a != b),
        "startup_s": round(clock.startup, 3),
        "stall_s": round(clock.stall, 3),
        "stalls": len(clock.stalls),
        "longest_stall_s": round(max(clock.stalls, default=0.0), 3),
        "kbits_fetched": round(sum(e["kbits"] for e in log), 1),
        "frames": frames,
        "render_fps": frames / render_seconds if render_seconds > 0 else None,
        "psnr_y_stated": float(np.average([e["psnr_y_stated"] for e in log], weights=weights)),
        "output_size": list(ladder.hr),
    }
    if log and "psnr_y" in log[0]:
        report["psnr_y"] = float(np.average([e["psnr_y"] for e in log], weights=weights))
    return report
