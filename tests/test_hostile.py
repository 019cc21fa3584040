"""Hostile uploads: each gets a clear 4xx (problem+json) or a failed job with a reason, the server
keeps serving, and nothing already stored is touched."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fitcast.config import Settings
from fitcast.errors import MediaError, UnsupportedMediaError
from fitcast.media import ffmpeg_exe, iter_frames, probe
from server.app import create_app

PROBLEM = "application/problem+json"


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "jobs.sqlite" and "sqlite" not in p.name}


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory, leaf_piece) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    # an HLS playlist that points at a real video elsewhere on the server's disk
    secret = d / "secret.ts"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(leaf_piece), "-c", "copy", "-f", "mpegts",
                    str(secret)], check=True)
    playlist = (f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n{secret}\n#EXTINF:1,\nfile://{secret}\n"
                "#EXT-X-ENDLIST\n")
    for name in ("playlist_disguised.mp4", "playlist.m3u8"):
        files[name] = d / name
        files[name].write_text(playlist)
    # the concat protocol and a concat demuxer script, both aimed at local files
    files["concat_script.mp4"] = d / "concat_script.mp4"
    files["concat_script.mp4"].write_text(f"ffconcat version 1.0\nfile '{secret}'\nfile '/etc/passwd'\n")
    # a pixel bomb: 8K frames in a few kB
    bomb = d / "bomb_8k.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=7680x4320:r=5:d=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(bomb)], check=True)
    files["bomb_8k.mp4"] = bomb
    # truncated (index at the end, cut off) and truncated + corrupted with the index in front
    data = leaf_piece.read_bytes()
    files["truncated.mp4"] = d / "truncated.mp4"
    files["truncated.mp4"].write_bytes(data[: len(data) * 6 // 10])
    faststart = d / "faststart.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(leaf_piece), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    fs = faststart.read_bytes()
    files["truncated_faststart.mp4"] = d / "truncated_faststart.mp4"
    files["truncated_faststart.mp4"].write_bytes(fs[: len(fs) * 9 // 10])
    corrupt = bytearray(fs)
    at = corrupt.find(b"avcC")
    corrupt[at + 4 : at + 40] = b"\xff" * 36  # the decoder configuration: SPS/PPS garbage
    files["corrupt.mp4"] = d / "corrupt.mp4"
    files["corrupt.mp4"].write_bytes(bytes(corrupt))
    # the MPEG program stream (accepted): cut short, and with its pack headers garbled
    mpg = d / "program.mpg"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(leaf_piece), "-c:v", "mpeg2video", "-q:v", "4",
                    "-an", "-f", "mpeg", str(mpg)], check=True)
    ps = mpg.read_bytes()
    files["truncated.mpg"] = d / "truncated.mpg"
    files["truncated.mpg"].write_bytes(ps[:100])  # the pack and system headers, no picture
    garbled = bytearray(ps)
    for at in range(0, len(garbled), 2048):
        garbled[at : at + 64] = b"\x00" * 64  # every pack header and the sequence headers with it
    files["garbled.mpg"] = d / "garbled.mpg"
    files["garbled.mpg"].write_bytes(bytes(garbled))
    return files


def test_an_mpeg_program_stream_is_accepted(hostile_files, tmp_path, leaf_piece):
    """What cameras, DVDs and archives make (MPEG-2 video in a program stream) probes and decodes."""
    mpg = hostile_files["truncated.mpg"].with_name("program.mpg")  # made beside the hostile ones
    info = probe(mpg)
    assert "mpeg" in info.container.split(",") and info.codec == "mpeg2video"
    assert (info.width, info.height) == (1280, 720)
    assert sum(1 for _ in iter_frames(mpg)) >= 25


def test_the_pixel_bomb_is_small_on_disk(hostile_files):
    assert hostile_files["bomb_8k.mp4"].stat().st_size < 200_000


@pytest.mark.parametrize("name, error, match", [
    # the HLS demuxer is refused before it reads its header (so before it opens any segment)
    ("playlist.m3u8", UnsupportedMediaError, "not one of the accepted containers"),
    ("playlist_disguised.mp4", MediaError, "not a readable video"),
    ("concat_script.mp4", UnsupportedMediaError, "not one of the accepted containers"),  # the concat demuxer
    ("bomb_8k.mp4", UnsupportedMediaError, "7680x4320 exceeds"),
    ("truncated.mp4", MediaError, "not a readable video"),
    ("truncated_faststart.mp4", MediaError, "cannot decode"),
    ("corrupt.mp4", MediaError, "cannot decode"),
    ("truncated.mpg", MediaError, "cannot decode"),
    ("garbled.mpg", MediaError, "not a readable video"),
])
def test_preflight_refuses(hostile_files, name, error, match):
    with pytest.raises(error, match=match) as info:
        probe(hostile_files[name])
    assert name in str(info.value)  # the message names the file, in one line
    assert "\n" not in str(info.value)


def test_protocols_other_than_local_files_are_refused(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        probe("concat:/etc/passwd|/etc/hostname")
    with pytest.raises(MediaError):
        list(iter_frames("concat:/etc/passwd"))


def test_frames_larger_than_the_limit_stop_decoding(hostile_files):
    with pytest.raises(UnsupportedMediaError, match="over 100 pixels"):
        list(iter_frames(hostile_files["bomb_8k.mp4"], max_pixels=100))


def test_hostile_uploads_get_4xx_and_touch_nothing_stored(tmp_path, hostile_files, leaf_piece):
    settings = Settings(root=tmp_path / "store", poll_seconds=0.2)
    with TestClient(create_app(settings, start_workers=False)) as client:
        good = client.post("/v1/assets", content=leaf_piece.read_bytes(), headers={"Content-Type": "video/mp4"})
        assert good.status_code == 202
        before = _snapshot(settings.root)
        for name, path in hostile_files.items():
            r = client.post("/v1/assets", content=path.read_bytes(), headers={"Content-Type": "video/mp4"})
            assert r.status_code in (415, 422), (name, r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM
            problem = r.json()
            assert problem["status"] == r.status_code and problem["detail"], name
            assert str(hostile_files[name].parent) not in problem["detail"]  # no server paths echoed
        # a declared length far beyond the limit is refused before any byte is read
        r = client.post("/v1/assets", content=b"x" * 10,
                        headers={"Content-Type": "video/mp4", "Content-Length": str(10**15)})
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
        # ids that try to leave the store
        for bad in ("../jobs.sqlite", "..%2F..%2Fetc%2Fpasswd", "a" * 300, "A1"):
            r = client.get(f"/v1/assets/{bad}")
            assert r.status_code in (404, 422) and r.headers["content-type"] == PROBLEM, bad
            r = client.delete(f"/v1/assets/{bad}")
            assert r.status_code in (404, 405, 422), bad
        assert [a["id"] for a in client.get("/v1/assets").json()["items"]] == [good.json()["id"]]
        assert client.get("/healthz").status_code == 200
    assert _snapshot(settings.root) == before
    assert list(settings.uploads_dir.iterdir()) == []
