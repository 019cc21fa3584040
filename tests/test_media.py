import subprocess

import av
import m3u8
import numpy as np
import pytest

from fitcast.errors import MediaError, UnsupportedMediaError
from fitcast.media import center_crop, ffmpeg_exe, iter_frames, probe
from tests.conftest import media


def test_probe_reads_real_clips():
    info = probe(media("leaf_720p_pyscenedetect.mp4"))
    assert (info.width, info.height) == (1280, 720) and info.codec == "h264"
    assert 29.9 < float(info.fps) < 30.0
    webm = probe(media("tos_800x332_mdn.webm"))
    assert webm.codec == "vp8" and (webm.width, webm.height) == (800, 332)


def test_rotation_flag_is_applied():
    info = probe(media("dog_720p_moviepy.mp4"))
    assert info.rotation == 180
    frame = next(iter_frames(media("dog_720p_moviepy.mp4")))
    assert frame.shape == (720, 1280, 3)


@pytest.mark.parametrize(
    "content, error",
    [(b"", MediaError), (b"this is not a video at all\n" * 20, MediaError), (b"\x00" * 5000, MediaError)],
)
def test_probe_refuses_non_video(tmp_path, content, error):
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    with pytest.raises(error):
        probe(path)


def test_probe_refuses_audio_only_and_missing(tmp_path):
    wav = tmp_path / "tone.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", str(wav)], check=True)
    with pytest.raises(UnsupportedMediaError):  # wav is not an accepted container
        probe(wav)
    m4a = tmp_path / "tone.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac", str(m4a)],
                   check=True)
    with pytest.raises(MediaError, match="no video stream"):
        probe(m4a)
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_center_crop_is_a_multiple_of_twice_the_scale():
    assert center_crop(854, 480, 2) == (0, 0, 852, 480)
    x, y, w, h = center_crop(800, 332, 4)
    assert w % 8 == 0 and h % 8 == 0 and (w, h) == (800, 328) and y == 2
    with pytest.raises(UnsupportedMediaError):
        center_crop(6, 6, 4)


def test_hls_segments_have_the_asked_durations_and_start_with_keyframes(leaf_asset):
    hls = leaf_asset / "hls"
    playlist = m3u8.load(str(hls / "lr.m3u8"))
    durations = [s.duration for s in playlist.segments]
    # 30 frames at 29.97 fps, 0.5 s segments -> 15-frame GOPs (0.5005 s)
    assert len(durations) == 2
    assert all(abs(d - 15 / 29.97) < 0.002 for d in durations)
    init = (hls / "init.mp4").read_bytes()
    for seg in playlist.segments:
        with av.open(__import__("io").BytesIO(init + (hls / seg.uri).read_bytes()), format="mp4") as c:
            packets = [p for p in c.demux(video=0) if p.size]
            assert packets[0].is_keyframe
            assert len(packets) == 15
            assert c.streams.video[0].codec_context.name == "h264"
    master = m3u8.load(str(hls / "master.m3u8"))
    assert master.is_variant
    data = master.session_data[0]
    assert data.data_id == "com.fitcast.manifest" and data.uri == "../sr/manifest.json"


def test_an_ordinary_player_plays_the_master_playlist(leaf_asset):
    master = leaf_asset / "hls" / "master.m3u8"
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(master), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == ""


def test_decoded_lr_is_the_encoded_rendition_not_pristine(leaf_asset, leaf_piece):
    from fitcast.media import decode_segment, downscale

    hls = leaf_asset / "hls"
    lr = decode_segment((hls / "init.mp4").read_bytes(), (hls / "seg_00000.m4s").read_bytes())
    assert len(lr) == 15 and lr[0].shape == (360, 640, 3)
    pristine = downscale(next(iter_frames(leaf_piece)), 2)
    diff = np.abs(lr[0].astype(int) - pristine).mean()
    assert 0.3 < diff < 8  # codec damage, but the same picture


def test_the_lr_stream_says_its_colour_and_its_codec_string_comes_from_the_stream(leaf_asset):
    """BT.601 limited range in the H.264 VUI (what a decoder reads, not only the container), and the
    RFC 6381 codec string of the master playlist from the stream's own avcC record."""
    import io

    import av
    import m3u8

    from fitcast.media import h264_codec_string

    init = (leaf_asset / "hls" / "init.mp4").read_bytes()
    seg = (leaf_asset / "hls" / "seg_00000.m4s").read_bytes()
    with av.open(io.BytesIO(init + seg), format="mp4") as container:
        frame = next(container.decode(video=0))
        record = container.streams.video[0].codec_context.extradata
    assert (frame.color_primaries, frame.color_trc, frame.colorspace) == (6, 6, 6)  # SMPTE 170M
    assert frame.color_range == 1  # limited ("tv")
    codec = h264_codec_string(init)
    assert codec == f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}" and codec.startswith("avc1.64")
    (variant,) = m3u8.load(str(leaf_asset / "hls" / "master.m3u8")).playlists
    assert variant.stream_info.codecs == codec


def test_bandwidth_is_the_peak_and_the_mean_the_hls_spec_asks_for(leaf_asset):
    import m3u8

    from fitcast.rendition import measured_bandwidth, segments_of

    hls = leaf_asset / "hls"
    (variant,) = m3u8.load(str(hls / "master.m3u8")).playlists
    rates = [(hls / s.uri).stat().st_size * 8 / s.duration for s in segments_of(hls)]
    peak, mean = measured_bandwidth(hls)
    assert peak == pytest.approx(max(rates), abs=1) and min(rates) < peak
    assert variant.stream_info.bandwidth == peak and variant.stream_info.average_bandwidth == mean
    text = (hls / "lr.m3u8").read_text()
    assert "#EXT-X-TARGETDURATION:1" in text  # half-second segments: ffmpeg alone writes 0
