"""Playback statistics: per-frame timings and quality, and the ``--report`` JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SegmentStats:
    index: int
    frame_seconds: list[float] = field(default_factory=list)  # the slower of the two threads, per frame
    main_seconds: list[float] = field(default_factory=list)  # routing, models, stitching (the main thread)
    feed_seconds: list[float] = field(default_factory=list)  # decode and the lanczos base (the feed thread)
    psnr_sr: list[float] = field(default_factory=list)
    psnr_lanczos: list[float] = field(default_factory=list)


@dataclass
class PlaybackStats:
    runtime: str
    output_size: tuple[int, int]
    segments: list[SegmentStats] = field(default_factory=list)
    dropped_frames: int = 0

    def segment(self, index: int) -> SegmentStats:
        stats = SegmentStats(index)
        self.segments.append(stats)
        return stats

    @property
    def frame_seconds(self) -> np.ndarray:
        return np.array([t for s in self.segments for t in s.frame_seconds], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        times = self.frame_seconds
        out: dict[str, Any] = {
            "frames": int(times.size),
            "output_size": list(self.output_size),
            "runtime": self.runtime,
            "fps_median": _fps(np.median(times)) if times.size else None,
            # 5th percentile of per-frame fps = the 95th percentile of frame time
            "fps_p5": _fps(np.percentile(times, 95)) if times.size else None,
            "dropped_frames": self.dropped_frames,
        }
        if times.size:  # where each frame's time goes
            out["main_ms_median"] = float(np.median([t for s in self.segments for t in s.main_seconds]) * 1000)
            out["feed_ms_median"] = float(np.median([t for s in self.segments for t in s.feed_seconds]) * 1000)
        sr = [v for s in self.segments for v in s.psnr_sr]
        if sr:
            out["psnr_y_sr"] = float(np.mean(sr))
            out["psnr_y_lanczos"] = float(np.mean([v for s in self.segments for v in s.psnr_lanczos]))
        segs = []
        for s in self.segments:
            item: dict[str, Any] = {"index": s.index, "frames": len(s.frame_seconds)}
            if s.frame_seconds:
                item["fps_median"] = _fps(np.median(s.frame_seconds))
            if s.psnr_sr:
                item["psnr_y_sr"] = float(np.mean(s.psnr_sr))
                item["psnr_y_lanczos"] = float(np.mean(s.psnr_lanczos))
            segs.append(item)
        out["segments"] = segs
        return out


def _fps(seconds: float) -> float:
    return float(1.0 / seconds) if seconds > 0 else float("inf")
