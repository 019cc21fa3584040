"""An encoded LR rendition on disk (an HLS folder) read back as viewers get it.

:func:`segments_of` lists the segments of ``lr.m3u8``; :func:`paired_frames` decodes
them in lockstep with the source's frames, which is what every stage that compares
decoded LR with the original works on (analysis, sampling, evaluation, training sets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import m3u8
import numpy as np

from fitcast.errors import MediaError
from fitcast.media import decode_segment, iter_frames

PLAYLIST = "lr.m3u8"
INIT = "init.mp4"


@dataclass(frozen=True)
class SegmentFile:
    """One segment of a rendition: its file name, start and duration (seconds)."""

    index: int
    uri: str
    start: float
    duration: float


def segments_of(hls_dir: Path) -> list[SegmentFile]:
    playlist = m3u8.load(str(hls_dir / PLAYLIST))
    segs, t = [], 0.0
    for i, seg in enumerate(playlist.segments):
        segs.append(SegmentFile(index=i, uri=seg.uri, start=t, duration=float(seg.duration)))
        t += float(seg.duration)
    if not segs:
        raise MediaError("the LR encode produced no segments")
    return segs


def segment_frames(hls_dir: Path, seg: SegmentFile) -> list[np.ndarray]:
    """The decoded RGB frames of one segment."""
    return decode_segment((hls_dir / INIT).read_bytes(), (hls_dir / seg.uri).read_bytes())


def paired_frames(source: Path, crop: tuple[int, int, int, int], hls_dir: Path,
                  segs: list[SegmentFile]) -> Iterator[tuple[SegmentFile, list[np.ndarray], list[np.ndarray]]]:
    """Yield (segment, decoded LR frames, source HR frames cropped to ``crop``) in lockstep."""
    hr_iter = iter_frames(source, crop=crop)
    for seg in segs:
        lr = segment_frames(hls_dir, seg)
        hr = []
        for _ in lr:
            try:
                hr.append(next(hr_iter))
            except StopIteration:
                raise MediaError("the LR rendition has more frames than the source") from None
        yield seg, lr, hr
