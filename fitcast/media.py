"""Media I/O: the one place that touches PyAV and the ffmpeg binary.

Frames are RGB ``uint8`` arrays ``[h, w, 3]`` in display orientation (rotation
flags applied).  Colour is BT.601 limited range both ways, so an encode and a
decode of the same frames agree.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import cv2
import numpy as np
from PIL import Image

from fitcast.errors import MediaError, ToolError, UnsupportedMediaError
from fitcast.lanczos import lanczos4

# Demuxers fitcast accepts for uploads: PyAV's format names are comma-joined lists.
# "mpeg" is the MPEG program stream (.mpg, .vob: cameras, DVDs, archives).
ALLOWED_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg"})
ALLOWED_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "ffv1", "prores", "mjpeg"}
)
# Untrusted files open with local-file protocols only and with the demuxer chosen from the
# allowlist *before* its header is read: an HLS playlist or a concat script named ".mp4" is
# refused before it can open any other file.
_OPEN_OPTIONS = {"protocol_whitelist": "file,pipe", "format_whitelist": ",".join(sorted(ALLOWED_CONTAINERS))}


@dataclass(frozen=True)
class Limits:
    """Hard limits applied when probing untrusted media."""

    max_pixels: int = 3840 * 2160
    max_fps: float = 120.0
    max_duration: float = 15 * 60.0
    max_streams: int = 16
    min_side: int = 64
    # Decoded YUV 4:2:0 bytes the whole video may expand to (pixels x 1.5 x frames):
    # bounds the work a small file can ask for (1080p30 for ~18 min, 4K30 for ~4.5 min).
    max_decoded_bytes: int = 100 * 10**9


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str
    codec: str
    width: int  # display orientation
    height: int
    fps: Fraction
    duration: float
    frames: int  # estimate
    rotation: int
    has_audio: bool


def ffmpeg_exe() -> str:
    """The ffmpeg binary: the imageio-ffmpeg wheel's (it has libx264 and libvmaf), else PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        exe = shutil.which("ffmpeg")
        if exe:
            return exe
    raise ToolError("no ffmpeg binary: install fitcast[server] (imageio-ffmpeg) or put ffmpeg on PATH")


def _open(path: str | Path | IO[bytes], label: str | None = None, **kwargs) -> av.container.InputContainer:
    label = label or str(path)
    try:
        if isinstance(path, (str, Path)):
            p = Path(path)
            if not p.is_file():
                raise MediaError(f"{label}: no such file")
            if p.stat().st_size == 0:
                raise MediaError(f"{label}: empty file")
            return av.open(str(p), options=_OPEN_OPTIONS, **kwargs)
        return av.open(path, **kwargs)
    except av.FFmpegError as exc:
        if isinstance(path, (str, Path)) and isinstance(exc, av.ArgumentError):
            # libav answers EINVAL when the probed demuxer is not on the whitelist
            raise UnsupportedMediaError(f"{label}: not one of the accepted containers "
                                        f"({', '.join(sorted(ALLOWED_CONTAINERS))})") from None
        raise MediaError(f"{label}: not a readable video ({exc.strerror or exc})") from None


def probe(path: str | Path, limits: Limits = Limits(), *, name: str | None = None) -> MediaInfo:
    """Read the container header and check it against ``limits``.

    Raises :class:`MediaError` for unreadable input, :class:`UnsupportedMediaError`
    for a container, codec or size fitcast refuses.  ``name`` is how the file is
    called in error messages (default: its file name).
    """
    path = Path(path)
    label = name or path.name
    with _open(path, label=label) as container:
        names = set(container.format.name.split(","))
        if not names & ALLOWED_CONTAINERS:
            raise UnsupportedMediaError(f"{label}: container {container.format.name!r} is not accepted")
        if len(container.streams) > limits.max_streams:
            raise UnsupportedMediaError(f"{label}: {len(container.streams)} streams (limit {limits.max_streams})")
        if not container.streams.video:
            raise MediaError(f"{label}: no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in ALLOWED_CODECS:
            raise UnsupportedMediaError(f"{label}: video codec {codec!r} is not accepted")
        w, h = stream.codec_context.width, stream.codec_context.height
        if not w or not h:
            raise MediaError(f"{label}: video stream has no size")
        if w * h > limits.max_pixels:
            raise UnsupportedMediaError(f"{label}: {w}x{h} exceeds {limits.max_pixels} pixels")
        if min(w, h) < limits.min_side:
            raise UnsupportedMediaError(f"{label}: {w}x{h} is smaller than {limits.min_side} pixels a side")
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps or fps <= 0:
            raise MediaError(f"{label}: unknown frame rate")
        fps = Fraction(fps).limit_denominator(1001)
        if float(fps) > limits.max_fps:
            raise UnsupportedMediaError(f"{label}: {float(fps):.1f} fps exceeds {limits.max_fps}")
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        if duration > limits.max_duration:
            raise UnsupportedMediaError(f"{label}: {duration:.0f} s exceeds {limits.max_duration:.0f} s")
        # Decode one frame: catches truncated/corrupt files early and reads the rotation.
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(getattr(frame, "rotation", 0) or 0) % 360
                break
            else:
                raise MediaError(f"{label}: the video stream has no decodable frame")
        except av.FFmpegError as exc:
            raise MediaError(f"{label}: cannot decode video ({exc.strerror or exc})") from None
        if rotation in (90, 270):
            w, h = h, w
        frames = stream.frames or int(round(duration * float(fps)))
        decoded = w * h * 3 // 2 * max(frames, int(round(duration * float(fps))))
        if decoded > limits.max_decoded_bytes:
            raise UnsupportedMediaError(f"{label}: {w}x{h} for {duration:.0f} s would decode to {decoded / 1e9:.0f} GB "
                                        f"(limit {limits.max_decoded_bytes / 1e9:.0f} GB)")
        return MediaInfo(
            path=path,
            container=container.format.name,
            codec=codec,
            width=w,
            height=h,
            fps=fps,
            duration=duration,
            frames=frames,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
        )


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    img: np.ndarray = frame.to_ndarray(format="rgb24")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:
        # rotation is counter-clockwise degrees of the display matrix, as ffmpeg's autorotate applies it
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    return img


def iter_frames(
    source: str | Path | IO[bytes],
    *,
    crop: tuple[int, int, int, int] | None = None,
    max_frames: int | None = None,
    fmt: str | None = None,
    max_pixels: int = Limits.max_pixels,
) -> Iterator[np.ndarray]:
    """Decode every video frame of ``source`` as RGB uint8, optionally cropped to (x, y, w, h).

    A frame larger than ``max_pixels`` ends decoding with an error (the size in a file's
    header binds nothing: a stream may switch to 8K frames later)."""
    kwargs = {"format": fmt} if fmt else {}
    container = _open(source, **kwargs)
    try:
        if not container.streams.video:
            raise MediaError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > max_pixels:  # a stream that grows after its header
                    raise UnsupportedMediaError(f"{source}: frame {n} is {frame.width}x{frame.height}, "
                                                f"over {max_pixels} pixels")
                img = _to_rgb(frame)
                if crop is not None:
                    x, y, w, h = crop
                    if img.shape[1] < x + w or img.shape[0] < y + h:
                        raise MediaError(f"frame {img.shape[1]}x{img.shape[0]} is smaller than crop {crop}")
                    img = np.ascontiguousarray(img[y : y + h, x : x + w])
                yield img
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
        except av.FFmpegError as exc:
            raise MediaError(f"{source}: decoding failed after {n} frames ({exc.strerror or exc})") from None
    finally:
        container.close()


def decode_segment(init: bytes, segment: bytes) -> list[np.ndarray]:
    """Decode one fMP4 media segment (with its init section) to RGB frames."""
    return list(iter_frames(io.BytesIO(init + segment), fmt="mp4"))


def center_crop(width: int, height: int, scale: int) -> tuple[int, int, int, int]:
    """The (x, y, w, h) centre crop whose sides are multiples of 2*scale."""
    m = 2 * scale
    w, h = width - width % m, height - height % m
    if w <= 0 or h <= 0:
        raise UnsupportedMediaError(f"{width}x{height} is too small for scale {scale}")
    return ((width - w) // 2 // 2 * 2, (height - h) // 2 // 2 * 2, w, h)


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The fixed LR filter: antialiased bicubic (PIL, MATLAB ``imresize``-like)."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"{w}x{h} is not a multiple of {scale}")
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def upscale(lr: np.ndarray, scale: int, method: str = "lanczos") -> np.ndarray:
    """Classic upscaling of a whole frame: ``lanczos`` (OpenCV's Lanczos-4 weights, separable:
    :mod:`fitcast.lanczos`) or ``bicubic``; every model's residual is added to the lanczos one."""
    if method == "lanczos":
        return lanczos4(lr, scale)
    if method != "bicubic":
        raise ValueError(f"unknown upscaling {method!r}")
    h, w = lr.shape[:2]
    return cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


# --------------------------------------------------------------------------- ffmpeg


def run_ffmpeg(args: list[str], *, timeout: float = 600.0, stdin: bytes | None = None) -> str:
    """Run ffmpeg in its own process group; kill the whole group on timeout."""
    cmd = [ffmpeg_exe(), "-hide_banner", *(["-nostdin"] if stdin is None else []), "-y", *args]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolError(f"ffmpeg timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise ToolError(f"ffmpeg failed ({proc.returncode}): {' | '.join(tail)}")
    return err.decode(errors="replace")


def vmaf(distorted: str | Path, reference: str | Path, *, crop: tuple[int, int, int, int] | None = None,
         threads: int = 2, timeout: float = 1800.0) -> float:
    """Mean VMAF (libvmaf's default model) of ``distorted`` against ``reference`` cropped to
    (x, y, w, h), frame by frame in decode order (timestamps are ignored: variable frame rate
    sources stay aligned) up to the shorter input; the distorted video should be lossless
    (e.g. x264 CRF 0)."""
    import tempfile

    ref_chain = f"crop={crop[2]}:{crop[3]}:{crop[0]}:{crop[1]}," if crop else ""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "vmaf.json"
        graph = (f"[0:v]settb=1,setpts=N,format=yuv420p[d];[1:v]{ref_chain}settb=1,setpts=N,format=yuv420p[r];"
                 f"[d][r]libvmaf=log_fmt=json:log_path={log.as_posix()}:n_threads={threads}:shortest=1")
        run_ffmpeg(["-protocol_whitelist", "file", "-i", str(distorted), "-i", str(reference),
                    "-lavfi", graph, "-f", "null", "-"], timeout=timeout)
        pooled = json.loads(log.read_text())["pooled_metrics"]["vmaf"]
    return float(pooled["mean"])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def cut(src: str | Path, dst: str | Path, *, start: float, duration: float, crf: int = 12,
        audio: bool = False) -> Path:
    """Cut ``duration`` seconds from ``start`` into a high-quality H.264 MP4 (video only,
    unless ``audio``: then the first audio stream too, as AAC)."""
    dst = Path(dst)
    sound = ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k"] if audio else ["-an"]
    run_ffmpeg(
        ["-ss", f"{start}", "-i", str(src), "-t", f"{duration}", "-map", "0:v:0", "-c:v", "libx264",
         "-preset", "fast", "-crf", str(crf), "-pix_fmt", "yuv420p", *sound, "-sn", "-dn", str(dst)]
    )
    return dst


@dataclass
class HlsEncoder:
    """Encode RGB frames to H.264 and package them as HLS with fMP4 segments.

    Every segment is exactly ``segment_frames`` frames (the last may be shorter)
    and starts with an IDR frame: one closed GOP per segment.  Frames are piped
    raw to the ffmpeg binary, which encodes (libx264) and muxes.
    """

    out_dir: Path
    width: int
    height: int
    fps: Fraction
    segment_frames: int
    crf: int = 23
    x264_preset: str = "medium"
    timeout: float = 3600.0
    # A file whose first audio stream is passed on (AAC) in the same segments,
    # padded or cut to the video's length.
    audio_from: Path | None = None
    audio_bitrate: str = "96k"
    # A target rate (kbit/s, one-pass ABR with a VBV of twice it) instead of the CRF: the rungs of
    # a fixed ladder, which spend the same bits whatever the content.
    bitrate_kbps: int | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    frames_written: int = field(default=0, init=False)

    def __enter__(self) -> HlsEncoder:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        n = self.segment_frames
        # Slightly below one GOP so that every keyframe starts a segment.
        hls_time = (n - 0.5) / float(self.fps)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
        ]
        if self.audio_from is not None:
            cmd += ["-protocol_whitelist", "file", "-format_whitelist", _OPEN_OPTIONS["format_whitelist"],
                    "-i", str(self.audio_from),
                    "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", self.audio_bitrate, "-ac", "2",
                    # silence pads a short track; the video's end ends the audio (no frame is dropped)
                    "-af", "apad", "-shortest"]
        cmd += [
            "-c:v", "libx264", "-preset", self.x264_preset,
            *(["-crf", str(self.crf)] if self.bitrate_kbps is None else
              ["-b:v", f"{self.bitrate_kbps}k", "-maxrate", f"{self.bitrate_kbps * 3 // 2}k",
               "-bufsize", f"{self.bitrate_kbps * 2}k"]),
            "-pix_fmt", "yuv420p",
            "-g", str(n), "-keyint_min", str(n), "-sc_threshold", "0", "-flags", "+cgop",
            # colour description in the VUI too (not only the container): BT.601 limited range, as encoded
            "-x264-params", f"scenecut=0:open-gop=0:keyint={n}:min-keyint={n}"
                            ":colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv",
            "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
            "-color_range", "tv",
            "-f", "hls", "-hls_time", f"{hls_time:.4f}", "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
            "-hls_flags", "independent_segments",
            "-hls_segment_filename", str(self.out_dir / "seg_%05d.m4s"),
            str(self.out_dir / "lr.m3u8"),
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        return self

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected uint8 frame {self.height}x{self.width}x3, got {frame.shape} {frame.dtype}")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail()
        self.frames_written += 1

    def _fail(self) -> None:
        assert self._proc is not None
        _kill_group(self._proc)
        err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
        raise ToolError(f"ffmpeg (HLS encode) failed: {err.splitlines()[-1] if err else 'no message'}")

    def __exit__(self, exc_type, exc, tb) -> None:
        proc = self._proc
        if proc is None:
            return
        if exc_type is not None:
            _kill_group(proc)
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ToolError("ffmpeg (HLS encode) timed out") from None
        if proc.returncode != 0:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise ToolError(f"ffmpeg (HLS encode) failed ({proc.returncode}): {err[-300:]}")
        fix_target_duration(self.out_dir / "lr.m3u8")


def fix_target_duration(playlist: Path) -> None:
    """Set ``#EXT-X-TARGETDURATION`` as RFC 8216 wants it: every segment's duration rounded to
    the nearest integer at most the target, and at least 1 (ffmpeg writes 0 for half-second
    segments, which strict parsers refuse)."""
    import math

    lines = playlist.read_text().splitlines()
    durations = [float(line.split(":", 1)[1].split(",")[0]) for line in lines if line.startswith("#EXTINF:")]
    target = max(1, max((math.floor(d + 0.5) for d in durations), default=1))
    text = "\n".join(f"#EXT-X-TARGETDURATION:{target}" if line.startswith("#EXT-X-TARGETDURATION:") else line
                     for line in lines) + "\n"
    from fitcast.storage import atomic_write_text

    atomic_write_text(playlist, text)


def h264_codec_string(init: bytes) -> str:
    """RFC 6381 ``avc1.PPCCLL`` of an H.264 init segment, from the stream's own extradata (its
    AVCDecoderConfigurationRecord: profile, constraint flags, level)."""
    with _open(io.BytesIO(init), format="mp4") as container:
        if not container.streams.video:
            raise MediaError("the init section has no video stream")
        record = container.streams.video[0].codec_context.extradata or b""
    if len(record) < 4 or record[0] != 1:
        raise MediaError("the H.264 stream has no AVC decoder configuration record (avcC)")
    return f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def audio_bytes(init: bytes, segments: Iterable[bytes]) -> int:
    """Bytes of audio packets in an fMP4 rendition (0 when it has no audio)."""
    total = 0
    for seg in segments:
        with _open(io.BytesIO(init + seg), format="mp4") as container:
            if not container.streams.audio:
                return 0
            total += sum(p.size for p in container.demux(container.streams.audio[0]) if p.size)
    return total


def has_audio(init: bytes) -> bool:
    with _open(io.BytesIO(init), format="mp4") as container:
        return bool(container.streams.audio)


def mux_audio(video: str | Path, audio_source: IO[bytes], out: str | Path, *, fmt: str = "mp4") -> None:
    """Write ``out`` = the video stream of ``video`` + the first audio stream of
    ``audio_source`` (packets copied, no re-encode), cut to the video's length."""
    with av.open(str(video)) as vin, _open(audio_source, format=fmt) as ain, av.open(str(out), mode="w") as dst:
        v_in, a_in = vin.streams.video[0], ain.streams.audio[0]
        v_out = dst.add_stream_from_template(v_in)
        a_out = dst.add_stream_from_template(a_in)
        if v_in.duration and v_in.time_base is not None:
            end = float(v_in.duration * v_in.time_base)
        else:
            end = float(vin.duration or 0) / 1e6
        for vpacket in vin.demux(v_in):
            if vpacket.dts is None:
                continue
            vpacket.stream = v_out
            dst.mux(vpacket)
        a_base = a_in.time_base or Fraction(1, a_in.rate or 1)
        for apacket in ain.demux(a_in):
            if apacket.dts is None or apacket.pts is None:
                continue
            if end and float(apacket.pts * a_base) >= end:
                break
            apacket.stream = a_out
            dst.mux(apacket)


class VideoWriter:
    """Write RGB frames to an H.264 MP4 with PyAV (no ffmpeg binary needed)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, *, crf: int = 18) -> None:
        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, frame: np.ndarray) -> None:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
