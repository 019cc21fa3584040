"""The ABR ladder: the per-title rung choice, the SR-aware ABR rule on synthetic networks, and a
real ladder encode (aligned segments, the master's attributes, the player's PSNR per segment,
a one-rung ladder that plays like any asset)."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import m3u8
import pytest

from client.abr import AbrSession, BandwidthTrace, SrThroughputRule
from client.ladder_player import AbrOptions, play_ladder
from client.player import PlayOptions, play
from fitcast.errors import InvalidInputError, ManifestError
from fitcast.ladder import (
    LADDER_DATA_ID,
    Ladder,
    RatePoint,
    Rung,
    RungBits,
    RungSegment,
    RungSpec,
    choose_rungs,
    hull_psnr,
    parse_ladder,
    parse_rungs,
    per_title_hull,
)
from fitcast.rendition import SESSION_DATA_ID, measured_bandwidth

SHA = "0" * 64


# --------------------------------------------------------------------------- the per-title hull


def _points() -> list[RatePoint]:
    """A title where x4 wins below ~150 kbit/s, x2 between ~150 and ~900, full resolution above."""
    curves = {1: [(400, 30.0), (900, 34.0), (1800, 37.0), (3600, 39.0)],
              2: [(120, 28.0), (250, 31.0), (500, 33.0), (1000, 34.2), (2000, 34.8)],
              4: [(40, 25.0), (80, 27.0), (190, 28.5), (320, 29.2)]}
    return [RatePoint(scale, 20 + 4 * i, kbps, q) for scale, pts in curves.items() for i, (kbps, q) in enumerate(pts)]


def test_the_hull_is_the_upper_envelope_of_every_resolution():
    pts = _points()
    hull = per_title_hull(pts)
    assert [p.kbps for p in hull] == sorted(p.kbps for p in hull)
    assert all(b.psnr_y > a.psnr_y for a, b in zip(hull, hull[1:], strict=False))
    for p in pts:  # nothing lies above it
        assert p.psnr_y <= hull_psnr(hull, p.kbps) + 1e-9
    assert {p.scale for p in hull} == {1, 2, 4}  # each resolution wins somewhere on this title


def test_rungs_take_the_point_nearest_the_hull_in_their_band():
    crfs = choose_rungs(_points(), parse_rungs("auto"), top_crf=24)
    assert crfs[1] == 24  # the top rung as asked: 900 kbit/s
    # x2 aims at 450 kbit/s: 500 kbit/s (CRF 28) is in the band and on the hull
    assert crfs[2] == 28
    # x4 aims at 250 kbit/s: both 190 (CRF 28) and 320 (CRF 32) are in the band; 190 is nearer the hull
    assert crfs[4] == 28
    fixed = choose_rungs(_points(), parse_rungs("x4:30,x2,x1:20"), top_crf=24)
    assert fixed[4] == 30 and fixed[1] == 20


def test_the_second_choice_asks_the_hull_of_delivered_quality():
    """An SR rung's lifted points (its SR'd quality, its models' and labels' rate counted) replace its
    resolution's lanczos points: here x4's SR lifts its CRF-32 encode above x2 at that rate, so x4
    takes CRF 32 where lanczos alone chose CRF 28 (nearer the hull without SR)."""
    from server.ladder import delivered_points

    pts = _points()
    gain = {4: {20: 0.2, 24: 0.5, 28: 0.6, 32: 3.3}, 2: dict.fromkeys((20, 24, 28, 32, 36), 0.3)}
    lifted = [RatePoint(p.scale, p.crf, p.kbps + 10, p.psnr_y + gain[p.scale][p.crf]) for p in pts if p.scale > 1]
    delivered = delivered_points(pts, lifted)
    assert sorted((p.scale, p.crf) for p in delivered) == sorted((p.scale, p.crf) for p in pts)
    assert all(p in delivered for p in lifted) and all(p in delivered for p in pts if p.scale == 1)
    assert choose_rungs(pts, parse_rungs("auto"), top_crf=24) == {1: 24, 2: 28, 4: 28}
    assert choose_rungs(delivered, parse_rungs("auto"), top_crf=24) == {1: 24, 2: 28, 4: 32}


def test_the_measured_frames_spread_over_the_title_and_every_position_of_the_gops():
    import math

    from server.ladder import MEASURED_FRAMES, MEASURED_SEGMENT_STRIDE, MIN_MEASURED_SEGMENTS, measured_frames

    for frames, seg in [(720, 60), (1800, 48), (300, 25), (40, 60), (120, 60), (14400, 120)]:
        m = measured_frames(frames, seg)
        count = math.ceil(frames / seg)
        assert len(m.segments) >= min(count, MIN_MEASURED_SEGMENTS)  # never fewer than four (all of a short one)
        assert len(m.segments) <= max(MIN_MEASURED_SEGMENTS, math.ceil(count / MEASURED_SEGMENT_STRIDE))
        gaps = {b - a for a, b in zip(m.segments, m.segments[1:], strict=False)}
        assert len(gaps) <= 1 and m.segments[0] <= max(gaps | {0})  # evenly spread from the start
        assert count - 1 - m.segments[-1] < max(gaps | {1})  # ... to the end
        compared = sorted(m.compared)
        assert all(m.encodes(i) for i in compared) and all(i < frames for i in compared)
        # not a few positions of every GOP, its key frame among them
        assert len({i % seg for i in compared}) == min(seg, len(compared))
        encoded = sum(1 for i in range(frames) if m.encodes(i))
        assert min(encoded, MEASURED_FRAMES) // 3 <= len(compared) <= MEASURED_FRAMES  # a stride coprime with 60: 7


def test_measured_encodes_decode_to_the_source_frames_they_were_encoded_from(tmp_path, bear_piece):
    """The measure stage encodes only some segments, one after another: each compared frame it
    decodes is matched with the source frame it was encoded from (the closest of them all)."""
    from fractions import Fraction

    from fitcast.media import HlsEncoder, iter_frames
    from fitcast.metrics import psnr_y
    from server.ladder import measured_frames

    source = list(iter_frames(bear_piece))
    h, w = source[0].shape[:2]
    m = measured_frames(len(source), 3)  # 1 s in segments of 3 frames: every third segment encoded
    assert len(m.segments) < len(source) // 3
    with HlsEncoder(tmp_path, w, h, Fraction(30), 3, crf=18, x264_preset="ultrafast") as enc:
        for i, frame in enumerate(source):
            if m.encodes(i):
                enc.write(frame)
    pairs = list(m.decoded_compared(tmp_path))
    assert sorted(i for i, _ in pairs) == sorted(m.compared)
    for i, decoded in pairs:
        assert max(range(len(source)), key=lambda j: psnr_y(decoded, source[j])) == i


def test_rung_specs_refuse_nonsense():
    assert parse_rungs("x4:32,x2:27,x1:23") == [RungSpec(4, 32), RungSpec(2, 27), RungSpec(1, 23)]
    for bad in ("x5", "x2,x2", "x2:99", "auto,x2", ""):
        with pytest.raises(InvalidInputError):
            parse_rungs(bad)


# --------------------------------------------------------------------------- the ABR rule


def _ladder(segments: int = 30, *, x2_psnr: float = 33.0, x1_psnr: float = 36.0) -> Ladder:
    """A synthetic ladder of 2 s segments: x4 300 kbit/s, x2 900, full resolution 3000 (video);
    the SR rungs carry 200 kbit of models."""

    def rung(name: str, scale: int, kbps: float, psnr: float, models: int) -> Rung:
        segs = [RungSegment(index=i, uri=f"../rungs/{name}/hls/seg_{i:05d}.m4s", sha256=SHA,
                            bytes=int(kbps * 1000 * 2 / 8), sr_bytes=500 if scale > 1 else 0, start=2.0 * i,
                            duration=2.0, frames=60, psnr_y=psnr) for i in range(segments)]
        return Rung(name=name, scale=scale, width=1280 // scale, height=720 // scale, crf=23,
                    playlist_uri=f"../rungs/{name}/hls/lr.m3u8", init_uri=f"../rungs/{name}/hls/init.mp4",
                    init_sha256=SHA, manifest_uri=f"../rungs/{name}/sr/manifest.json" if scale > 1 else None,
                    codecs="avc1.64001f", bandwidth=int(kbps * 1100), average_bandwidth=int(kbps * 1000),
                    bits=RungBits(video=int(kbps * 1000 * 2 * segments), audio=0, models=models, labels=0, plans=0),
                    psnr_y=psnr, segments=segs)

    return Ladder(asset_id="synthetic", hr=(1280, 720), fps=30.0, crop=(0, 0, 1280, 720),
                  rungs=[rung("x4", 4, 300, 30.0, 200_000), rung("x2", 2, 900, x2_psnr, 200_000),
                         rung("x1", 1, 3000, x1_psnr, 0)])


def test_abr_goes_down_when_the_network_drops_and_up_when_it_returns():
    # 20 s at 6 Mbit/s, 20 s at 1.2 Mbit/s, then 6 Mbit/s again
    trace = BandwidthTrace(tuple([6000.0] * 20 + [1200.0] * 20 + [6000.0] * 30))
    steps = AbrSession(_ladder(40), trace).run()
    names = [s.rung.name for s in steps]
    assert names[0] == "x4"  # nothing measured yet: the cheapest first download
    assert "x1" in names[:8]  # up once the network is measured
    during_drop = [s.rung.name for s in steps if 24 <= s.at <= 40]  # the estimate has caught up by then
    assert during_drop and "x1" not in during_drop  # down while it is low ...
    assert names[-1] == "x1"  # ... and up again after
    session = AbrSession(_ladder(40), trace)
    session.run()
    assert max(session.clock.stalls, default=0.0) <= 2.0  # no stall longer than one segment


def test_a_download_that_would_stall_is_abandoned_for_the_cheapest_rung():
    trace = BandwidthTrace(tuple([8000.0] * 6 + [250.0] * 30))  # a 30x drop while the top rung downloads
    session = AbrSession(_ladder(20), trace, max_buffer=6.0)
    steps = session.run()
    gave_up = [s for s in steps if s.abandoned]
    assert gave_up and gave_up[0].abandoned == "x1" and gave_up[0].rung.name == "x4"
    assert max(session.clock.stalls, default=0.0) <= 2.0
    fixed = AbrSession(_ladder(20), trace, max_buffer=6.0, rung="x1")  # no ABR: the same drop stalls
    fixed.run()
    assert fixed.clock.stall > 2.0


def test_abr_prefers_a_lower_rung_that_sr_lifts_above_the_next():
    trace = BandwidthTrace.constant(20_000)
    names = [s.rung.name for s in AbrSession(_ladder(x2_psnr=36.5, x1_psnr=36.0), trace).run()]
    assert names[2:] == ["x2"] * (len(names) - 2)  # x1 is affordable, x2 delivers more
    names = [s.rung.name for s in AbrSession(_ladder(), trace).run()]
    assert names[-1] == "x1"


def test_a_rung_whose_models_would_drain_the_buffer_waits():
    rule = SrThroughputRule()
    rule.observe(2_000_000, 1.0)  # 2 Mbit/s measured
    lad = _ladder()
    lad.rungs[1].bits.models = 3_000_000  # 1.5 s of download at that rate
    rung, _ = rule.choose(lad, 3, buffer_s=2.5, fetched={"x4"})
    assert rung.name == "x4"
    rung, _ = rule.choose(lad, 3, buffer_s=8.0, fetched={"x4"})
    assert rung.name == "x2"


def test_bandwidth_trace_integrates_across_seconds(tmp_path):
    trace = BandwidthTrace((1000.0, 500.0))
    assert trace.download_seconds(0.0, 500_000) == pytest.approx(0.5)
    assert trace.download_seconds(0.5, 1_000_000) == pytest.approx(1.5)  # 500 kbit in 0.5 s, then 500 in 1 s
    path = tmp_path / "trace.txt"
    path.write_text("# kbit/s per second\n3000, 3000\n400\n")
    assert BandwidthTrace.from_file(path).kbps == (3000.0, 3000.0, 400.0)
    path.write_text("3000 -1\n")
    with pytest.raises(InvalidInputError):
        BandwidthTrace.from_file(path)


def test_the_ladder_format_refuses_what_cannot_switch():
    good = json.loads(_ladder().to_json())
    assert parse_ladder(json.dumps(good)).names == ["x4", "x2", "x1"]
    bad = json.loads(json.dumps(good))
    bad["rungs"][1]["segments"][3]["frames"] = 59
    with pytest.raises(ManifestError, match="not aligned"):
        parse_ladder(json.dumps(bad))
    with pytest.raises(ManifestError, match="not supported"):
        parse_ladder(json.dumps(good | {"format": "fitcast-ladder/2"}))


# --------------------------------------------------------------------------- a real ladder


def test_rungs_cut_their_segments_at_the_same_frames_each_a_closed_gop(ladder_dir):
    ladder = parse_ladder((ladder_dir / "sr" / "ladder.json").read_bytes())
    assert ladder.names and {r.scale for r in ladder.rungs} == {4, 2, 1}
    counts = {r.name: [s.frames for s in r.segments] for r in ladder.rungs}
    assert len({tuple(c) for c in counts.values()}) == 1
    for rung in ladder.rungs:
        hls = ladder_dir / rung.playlist_uri.removeprefix("../").rsplit("/", 1)[0]
        init = (hls / "init.mp4").read_bytes()
        for seg in rung.segments:
            data = (ladder_dir / seg.uri.removeprefix("../")).read_bytes()
            import io

            with av.open(io.BytesIO(init + data), format="mp4") as container:
                frames = list(container.decode(video=0))
            assert len(frames) == seg.frames
            assert frames[0].key_frame  # an IDR frame: a switch needs nothing before it


def test_the_master_announces_every_rung(ladder_dir):
    ladder = parse_ladder((ladder_dir / "sr" / "ladder.json").read_bytes())
    master = m3u8.load(str(ladder_dir / "hls" / "master.m3u8"))
    ids = {d.data_id: d.uri for d in master.session_data}
    assert ids[LADDER_DATA_ID] == "../sr/ladder.json" and ids[SESSION_DATA_ID].endswith("/sr/manifest.json")
    assert len(master.playlists) == len(ladder.rungs)
    for variant, rung in zip(master.playlists, ladder.rungs, strict=True):
        info = variant.stream_info
        peak, average = measured_bandwidth(ladder_dir / "hls" / variant.uri.rsplit("/", 1)[0])
        assert info.bandwidth == peak and info.average_bandwidth == average
        assert info.resolution == (rung.width, rung.height)
        assert info.frame_rate == pytest.approx(ladder.fps, abs=1e-3)
        assert info.codecs.startswith("avc1.") and info.codecs.endswith(",mp4a.40.2")  # chaplin has sound
    assert [p.stream_info.bandwidth for p in master.playlists] == sorted(p.stream_info.bandwidth
                                                                         for p in master.playlists)


def test_the_player_measures_what_the_ladder_states_per_segment(ladder_dir, chaplin_piece):
    for rung in ("x4", "x1"):
        report = play_ladder(str(ladder_dir), PlayOptions(reference=chaplin_piece), AbrOptions(rung=rung))
        assert set(report["rungs"]) == {rung}
        for seg in report["segments"]:
            assert seg["psnr_y"] == pytest.approx(seg["psnr_y_stated"], abs=0.1)
    trace = BandwidthTrace((800.0,))
    report = play_ladder(str(ladder_dir / "hls" / "master.m3u8"), PlayOptions(reference=chaplin_piece),
                         AbrOptions(trace=trace))
    ladder = parse_ladder((ladder_dir / "sr" / "ladder.json").read_bytes())
    assert report["frames"] == sum(s.frames for s in ladder.rungs[0].segments)
    assert report["rungs"][0] == "x4"  # the cheapest first download
    for seg in report["segments"]:
        assert seg["psnr_y"] == pytest.approx(seg["psnr_y_stated"], abs=0.1)


def test_cli_ladder_errors_are_one_line(ladder_dir, tmp_path):
    trace = tmp_path / "bad.txt"
    trace.write_text("fast\n")
    for args in (["play", str(ladder_dir), "--headless", "--bandwidth-trace", str(trace)],
                 ["play", str(ladder_dir), "--headless", "--rung", "x3"],
                 ["encode", str(trace), "-o", str(tmp_path / "x"), "--ladder", "x5"]):
        out = subprocess.run([sys.executable, "-m", "fitcast", *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_an_upload_encodes_a_one_rung_ladder_that_plays_as_any_asset(tmp_path, chaplin_piece):
    """Through the service: a ladder of one rung (x4 at CRF 30) is served under rungs/, and a player
    that knows no ladder plays it through the master's manifest pointer, as it plays any asset."""
    from fastapi.testclient import TestClient

    from fitcast.config import Settings
    from helpers import asset_done, asset_progress, wait_while_progressing
    from server.app import create_app

    settings = Settings(root=tmp_path / "store", train_iterations=20, poll_seconds=0.2)
    with TestClient(create_app(settings)) as client:
        bad = client.post("/v1/assets", params={"ladder": "x2,x2"}, content=b"x",
                          headers={"Content-Type": "video/mp4"})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        r = client.post("/v1/assets", params={"ladder": "x4:30", "preset": "fast", "segment_seconds": 0.5,
                                              "target_fps": 0, "method": "stdo", "k": 1},
                        content=chaplin_piece.read_bytes(), headers={"Content-Type": "video/mp4"})
        assert r.status_code == 202, r.text
        asset_id = r.json()["id"]
        url = f"/v1/assets/{asset_id}"
        asset = wait_while_progressing(lambda: client.get(url).json(), done=asset_done, progress=asset_progress)
        assert asset["status"] == "ready", asset["error"]
        assert asset["links"]["ladder"].endswith("/sr/ladder.json") and "manifest" not in asset["links"]
        ladder = parse_ladder(client.get(asset["links"]["ladder"]).content)
        assert ladder.names == ["x4"] and ladder.rungs[0].crf == 30
        master = m3u8.loads(client.get(asset["links"]["master"]).text)
        assert len(master.playlists) == 1
        rung = ladder.rungs[0]
        seg = client.get(f"{url}/sr/{rung.segments[0].uri}")  # every file a player fetches is served
        assert seg.status_code == 200 and len(seg.content) == rung.segments[0].bytes
        model_uri = json.loads(client.get(f"{url}/sr/{rung.manifest_uri}").text)["models"][0]["uri"]
        model = client.get(f"{url}/rungs/x4/sr/{model_uri}")
        assert model.status_code == 200 and "immutable" in model.headers["cache-control"]
        assert client.get(f"{url}/rungs/x4/rung-options.json").status_code == 404  # only a rung's asset files
        report = client.get(asset["links"]["report"])
        assert report.status_code == 200 and report.json()["chosen_crf"] == {"x4": 30}
    folder = settings.assets_dir / asset_id
    report = play(str(folder / "hls" / "master.m3u8"), PlayOptions(reference=chaplin_piece))
    assert report["psnr_y_sr"] == pytest.approx(rung.psnr_y, abs=0.1)
    alone = play(str(folder / "rungs" / "x4"), PlayOptions(reference=chaplin_piece))
    assert alone["psnr_y_sr"] == pytest.approx(report["psnr_y_sr"], abs=1e-6)
    assert alone["frames"] == sum(s.frames for s in rung.segments)


def test_sr_rungs_are_lifted_and_published_at_the_rate_chosen_on_delivered_quality(ladder_dir):
    """The report lifts every SR rung at every CRF its resolution was measured at (models and labels
    in the rate), each rung is published at the CRF chosen on that, and a rung the lift moved was
    encoded again with the models it trained (no second training)."""
    report = json.loads((ladder_dir / "report" / "ladder.json").read_text())
    ladder = parse_ladder((ladder_dir / "sr" / "ladder.json").read_text())
    # the segments measured: the fixture's 1 s in half-second segments (three) is short, so all of them
    assert report["measured_segments"] == list(range(report["segments"])) and report["segments"] == len(
        ladder.rungs[0].segments) >= 2
    for rung in ladder.rungs:
        assert rung.crf == report["chosen_crf"][rung.name]
        if rung.scale == 1:
            continue
        measured = {p["crf"]: p for p in report["measured"] if p["scale"] == rung.scale}
        lifted = {p["crf"]: p for p in report["lifted"] if p["scale"] == rung.scale}
        assert set(lifted) == set(measured)
        side = (rung.bits.models + rung.bits.labels) / sum(s.duration for s in rung.segments) / 1000
        for crf, p in lifted.items():
            assert p["kbps"] == pytest.approx(measured[crf]["kbps"] + side, rel=0.2)  # the rung's models counted
        quality = json.loads((ladder_dir / "rungs" / rung.name / "report" / "quality.json").read_text())
        assert quality["crf"] == rung.crf
        moved = report["first_crf"][rung.name] != rung.crf
        assert all(t.get("reused", False) == moved for t in quality["train"])


def test_a_finished_rung_is_kept_only_for_the_same_options(ladder_dir):
    from server.ladder import RUNG_KEY, finished_rung

    folder = ladder_dir / "rungs" / "x2"
    kept = json.loads((folder / RUNG_KEY).read_text())
    key = kept["key"]
    assert json.loads(key)["options"]["scale"] == 2
    manifest, crf = finished_rung(folder, key)
    assert manifest.asset_id.endswith("-x2") and crf == parse_ladder((ladder_dir / "sr" / "ladder.json").read_text()
                                                                     ).rung("x2").crf
    other = json.loads(key)
    other["options"]["crf"] += 1
    assert finished_rung(folder, json.dumps(other, sort_keys=True)) is None


def test_sr_rungs_share_the_encode_budget(ladder_dir):
    """A ladder's SR rungs share one encode budget: each trains within an even share of what is
    left, the later ones less what the costliest rung so far took outside training, never at 0
    (which would mean no limit); and the preset's training floor is shared too."""
    from types import SimpleNamespace

    from fitcast.options import EncodeOptions
    from server.ladder import RUNG_KEY, LadderBudget, rung_options
    from server.pipeline import TRAIN_SHARE, training_seconds

    now = [100.0]
    budget = LadderBudget(1440.0, spent=40.0, reserve=40.0, clock=lambda: now[0])
    assert budget.training_seconds(2) == pytest.approx(TRAIN_SHARE * (1440 - 40 - 40) / 2)  # as one encode's half
    now[0] += 700.0  # the first rung: 300 s training, 400 s the rest
    budget.rung_done("x2", {"seconds": {"total": 700.0, "train": 300.0}})
    assert budget.training_seconds(1) == pytest.approx(1440 - 40 - 700 - 40 - 400)  # what the rest leaves it
    now[0] += 500.0  # the second rung: 100 s training, 400 s the rest
    budget.rung_done("x4", {"seconds": {"total": 500.0, "train": 100.0}})
    budget.reserve = 0.0  # the lift and the full-resolution rung done
    assert budget.left() == pytest.approx(1440 - 40 - 1200)
    assert not budget.affords_again("x2")  # 200 s left: encoding a rung again took 400
    assert budget.affords_again("x1")  # (nothing recorded: nothing to afford)
    now[0] += 10_000.0  # over budget already: the floor decides (1 s keeps the limit)
    assert budget.training_seconds(1) == 1.0
    assert LadderBudget(None).training_seconds(2) is None and LadderBudget(None).affords_again("x2")  # no limit

    # a rung's options carry the training seconds it was given, as the encode budget that yields them
    src = SimpleNamespace(hr=(1280, 720), fps=30, info=SimpleNamespace(duration=24.0))
    spec = parse_rungs("x4:30,x2:25,x1:20")[0]
    mine = rung_options(EncodeOptions(), spec, 30, sr_rungs=2, training_seconds=250.0, ladder_seconds=1440.0)
    assert training_seconds(src, mine.encode_budget) == pytest.approx(250.0)
    three = rung_options(EncodeOptions(encode_budget=90), spec, 30, sr_rungs=3)
    assert three.encode_budget == 30 and three.training_floor == pytest.approx(1 / 3)  # the preset's floor shared too
    # what the fixture's ladder recorded: its SR rungs' floors shared; the budget they got is not part of the key
    for name in ("x4", "x2"):
        options = json.loads(json.loads((ladder_dir / "rungs" / name / RUNG_KEY).read_text())["key"])["options"]
        assert options["training_floor"] == pytest.approx(0.5) and "encode_budget" not in options
