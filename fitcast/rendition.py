"""An encoded LR rendition on disk (an HLS folder) read back as viewers get it.

:func:`segments_of` lists the segments of ``lr.m3u8``; :func:`paired_frames` decodes
them in lockstep with the source's frames, which is what every stage that compares
decoded LR with the original works on (analysis, sampling, evaluation, training sets).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import m3u8
import numpy as np

from fitcast.errors import MediaError
from fitcast.media import decode_segment, iter_frames

PLAYLIST = "lr.m3u8"
INIT = "init.mp4"
SESSION_DATA_ID = "com.fitcast.manifest"  # the master playlist's pointer to the fitcast manifest


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


@dataclass(frozen=True)
class Variant:
    """One rendition as the multivariant playlist announces it (RFC 8216 §4.3.4.2)."""

    uri: str
    bandwidth: int  # the peak segment bit rate, bits/s
    average_bandwidth: int  # the mean bit rate over the rendition
    width: int
    height: int
    fps: float
    codecs: str


def measured_bandwidth(hls_dir: Path) -> tuple[int, int]:
    """(peak, average) bit rate of a rendition's media segments, from their sizes and durations
    (the init section is fetched once and not counted)."""
    segs = segments_of(hls_dir)
    rates, total_bits, total_s = [], 0, 0.0
    for seg in segs:
        bits = (hls_dir / seg.uri).stat().st_size * 8
        rates.append(bits / max(seg.duration, 1e-6))
        total_bits += bits
        total_s += seg.duration
    return int(np.ceil(max(rates))), int(round(total_bits / max(total_s, 1e-6)))


def write_master(path: Path, variants: list[Variant], *, session_data: dict[str, str] | None = None) -> None:
    """The multivariant playlist: ``session_data`` (DATA-ID -> URI) then one EXT-X-STREAM-INF each."""
    from fitcast.storage import atomic_write_text

    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    lines += [f'#EXT-X-SESSION-DATA:DATA-ID="{key}",URI="{uri}"' for key, uri in (session_data or {}).items()]
    for v in variants:
        lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
                  f'RESOLUTION={v.width}x{v.height},FRAME-RATE={v.fps:.3f},CODECS="{v.codecs}"', v.uri]
    atomic_write_text(path, "\n".join(lines) + "\n")
