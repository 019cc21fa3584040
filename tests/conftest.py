"""Shared fixtures: real clips from ../shared/media, cut short; one small encode reused by many tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fitcast.media import cut

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FITCAST_MEDIA", ROOT.parent / "shared" / "media"))
# Starlette's TestClient calls itself "testserver": one more name the services under test answer for
# (tests/test_security.py checks that other names are refused).
os.environ.setdefault("FITCAST_ALLOWED_HOSTS", '["127.0.0.1", "localhost", "::1", "[::1]", "testserver"]')


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"test clip {path} is missing: ../shared/media must sit beside the repository "
                    "(or set FITCAST_MEDIA)")
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def leaf_piece(clips) -> Path:
    """1 s (30 frames) of leaf at 1280x720, from 3 s in."""
    return cut(media("leaf_720p_pyscenedetect.mp4"), clips / "leaf_1s.mp4", start=3.0, duration=1.0)


@pytest.fixture(scope="session")
def bear_piece(clips) -> Path:
    """1 s of bear (854x480, very detailed camera footage)."""
    return cut(media("bear_480p_cotracker.mp4"), clips / "bear_1s.mp4", start=0.5, duration=1.0)


@pytest.fixture(scope="session")
def leaf_asset(tmp_path_factory, leaf_piece) -> Path:
    """A small stdo encode of the leaf piece: 0.5 s segments (2 segments), k=2, a tiny training budget,
    no plan (a fitcast/1 asset: every frame routed by its groups), weights on the int8 export's own
    7-bit grid (the pinned encode, tests/test_pinned.py; the default's choice is tested on the ladder)."""
    from fitcast.options import EncodeOptions
    from server.pipeline import encode

    out = tmp_path_factory.mktemp("assets") / "leaf"
    encode(leaf_piece, out, EncodeOptions(scale=2, method="stdo", k=2, segment_seconds=0.5, preset="fast",
                                          iterations=150, target_fps=0, weight_bits=7))
    return out


@pytest.fixture(scope="session")
def planned_asset(tmp_path_factory, leaf_asset, leaf_piece) -> Path:
    """The leaf asset planned again (``replan``: no training) for 30 fps on the shipped reference
    device: a fitcast/2 asset."""
    import shutil

    from server.pipeline import replan

    out = tmp_path_factory.mktemp("assets") / "leaf-planned"
    shutil.copytree(leaf_asset, out)
    replan(leaf_piece, out, target_fps=30)
    return out


@pytest.fixture(scope="session")
def chaplin_piece(clips) -> Path:
    """1 s of chaplin (640x360 black-and-white film) with its sound track (music), as AAC."""
    return cut(media("chaplin_360p_moviepy.mp4"), clips / "chaplin_1s.mp4", start=2.0, duration=1.0, audio=True)


@pytest.fixture(scope="session")
def ladder_dir(tmp_path_factory, chaplin_piece) -> Path:
    """The chaplin piece (1 s, with sound) as a ladder: x4 and x2 rates chosen on the clip, full
    resolution at CRF 23, half-second segments, a tiny training budget, no plan."""
    from fitcast.options import EncodeOptions
    from server.ladder import encode_ladder

    out = tmp_path_factory.mktemp("ladders") / "chaplin"
    encode_ladder(chaplin_piece, out, EncodeOptions(method="stdo", k=1, preset="fast", iterations=20,
                                                    segment_seconds=0.5, target_fps=0, ladder="auto"))
    return out


@pytest.fixture(scope="session", autouse=True)
def every_playlist_is_valid_hls(tmp_path_factory):
    """After the session: every HLS playlist the tests wrote passes hls-parser in strict mode (npm)
    and announces its bandwidth as RFC 8216 defines it (BANDWIDTH the peak segment rate, within
    10 % above it; AVERAGE-BANDWIDTH within 10 % of the measured mean)."""
    yield
    import shutil
    import subprocess
    import warnings

    import m3u8

    from fitcast.rendition import measured_bandwidth

    base = tmp_path_factory.getbasetemp()
    # the playlists of assets (hostile tests write broken ones elsewhere on purpose)
    playlists = sorted(p for p in base.rglob("hls/**/*.m3u8") if not any(part.startswith(".") for part in p.parts))
    problems = []
    checker = ROOT / "scripts" / "check-hls.js"
    if shutil.which("node") and (ROOT / "node_modules" / "hls-parser").is_dir():
        for i in range(0, len(playlists), 200):
            out = subprocess.run(["node", str(checker), *map(str, playlists[i : i + 200])], capture_output=True,
                                 text=True, timeout=120)
            problems += [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    else:
        warnings.warn("node or hls-parser missing (make installs it with npm): playlists checked by m3u8 only",
                      stacklevel=1)
    for master in (p for p in playlists if p.name == "master.m3u8"):
        for variant in m3u8.load(str(master)).playlists:
            peak, average = measured_bandwidth(master.parent / variant.uri.rsplit("/", 1)[0]
                                               if "/" in variant.uri else master.parent)
            info = variant.stream_info
            if not (peak <= info.bandwidth <= 1.1 * peak and abs(info.average_bandwidth - average) <= 0.1 * average):
                problems.append(f"{master}: BANDWIDTH {info.bandwidth} / AVERAGE {info.average_bandwidth} against "
                                f"measured peak {peak} / mean {average}")
    assert not problems, "\n".join(problems)
