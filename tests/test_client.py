import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from client.player import PlayOptions, play
from fitcast.asset import Fetcher, open_asset
from fitcast.errors import IntegrityError, InvalidInputError, NotFoundError
from fitcast.grid import load_labels
from fitcast.media import decode_segment, upscale
from fitcast.runtime import OrtSession, available_runtimes, open_session, resolve_runtime
from fitcast.upscale import RoutedUpscaler, add_residual, run_residual


def _first_frames(asset_dir):
    asset = open_asset(str(asset_dir), Fetcher(cache_dir=asset_dir.parent / "cache"))
    m = asset.manifest
    seg = m.segments[0]
    frames = decode_segment(asset.read(m.init_uri), asset.read(seg.uri))
    labels = load_labels(asset.read(seg.labels_uri, seg.labels_sha256))
    sessions = {}
    for mid in {e.id for e in m.models}:
        entry = m.model(mid, "fp32")
        sessions[mid] = OrtSession(asset.read_model(entry))
    return m, seg, frames, labels, sessions


def test_all_lanczos_routes_equal_whole_frame_lanczos(leaf_asset):
    m, seg, frames, labels, sessions = _first_frames(leaf_asset)
    up = RoutedUpscaler.for_manifest(m, sessions)
    routes = {str(g): "lanczos" for g in range(m.k)}
    for j in (0, 7):
        out = up.upscale(frames[j], labels[j], routes)
        assert (out == upscale(frames[j], 2, "lanczos")).all()


def test_batched_routing_equals_naive_per_patch_path(leaf_asset):
    m, seg, frames, labels, sessions = _first_frames(leaf_asset)
    assert m.models, "the tiny encode should have produced at least one model"
    routes = {str(g): (m.models[0].id if g % 2 == 0 else "lanczos") for g in range(m.k)}
    up = RoutedUpscaler.for_manifest(m, sessions)
    lr, lab = frames[3], labels[3]
    fast = up.upscale(lr, lab, routes).copy()
    # naive: one model call per patch, pasted with plain slicing
    grid = m.grid()
    s, ps = m.scale, grid.hr_patch
    naive = upscale(lr, s, "lanczos")
    windows = grid.windows(grid.pad(lr))
    for r in range(grid.gh):
        for c in range(grid.gw):
            target = routes[str(lab[r, c])]
            if target == "lanczos":
                continue
            res = run_residual(sessions[target], windows[r : r + 1, c], grid)[0]
            y0, x0 = r * ps, c * ps
            h, w = naive[y0 : y0 + ps, x0 : x0 + ps].shape[:2]
            naive[y0 : y0 + h, x0 : x0 + w] = add_residual(naive[y0 : y0 + h, x0 : x0 + w], res[:h, :w])
    diff = np.abs(fast.astype(int) - naive)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # batching may flip a rounding, nothing more
    assert (fast != upscale(lr, s, "lanczos")).any()  # the model did change something


def test_play_local_dir_reproduces_the_encode_report(leaf_asset, leaf_piece, tmp_path):
    report = play(str(leaf_asset), PlayOptions(reference=leaf_piece, report=tmp_path / "r.json"),
                  fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    quality = json.loads((leaf_asset / "report" / "quality.json").read_text())
    assert report["frames"] == quality["frames"] == 30
    assert report["psnr_y_sr"] == pytest.approx(quality["psnr_y_sr"], abs=0.02)
    assert report["psnr_y_lanczos"] == pytest.approx(quality["psnr_y_lanczos"], abs=1e-6)
    assert report["fps_median"] > 0 and report["fps_p5"] <= report["fps_median"]
    assert report["dropped_frames"] == 0 and report["precision"] == "int8"
    assert report["runtime"] == report["choices"]["runtime"]["value"] in available_runtimes()  # auto: by measurement
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert [s["index"] for s in report["segments"]] == [0, 1]


def test_int8_costs_at_most_five_hundredths_of_a_db(leaf_asset, leaf_piece, tmp_path):
    quality = json.loads((leaf_asset / "report" / "quality.json").read_text())
    assert quality["precision"] == "int8"
    assert quality["psnr_y_sr_fp32"] - quality["psnr_y_sr"] <= 0.05
    m = open_asset(str(leaf_asset)).manifest
    for mid in {e.id for e in m.models}:
        assert m.model(mid, "int8").bytes < m.model(mid, "fp32").bytes
    fp32 = play(str(leaf_asset), PlayOptions(reference=leaf_piece, precision="fp32"),
                fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    assert fp32["precision"] == "fp32"
    assert fp32["psnr_y_sr"] == pytest.approx(quality["psnr_y_sr_fp32"], abs=0.02)


def test_tampered_model_is_refused(leaf_asset, tmp_path):
    copy = tmp_path / "asset"
    shutil.copytree(leaf_asset, copy)
    for model in (copy / "sr" / "models").glob("*.onnx.xz"):  # whichever precision the player picks
        data = bytearray(model.read_bytes())
        data[-10] ^= 0xFF
        model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        play(str(copy), PlayOptions(max_frames=1), fetcher=Fetcher(cache_dir=tmp_path / "cache"))


def test_missing_asset_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError):
        open_asset(str(tmp_path / "nothing-here"))


def test_client_imports_no_torch_fastapi_or_server():
    code = (
        "import sys, client.player, fitcast.asset, fitcast.upscale, fitcast.runtime, client.report, fitcast.cli;"
        "bad = sorted(m for m in sys.modules"
        " if m.split('.')[0] in {'torch', 'fastapi', 'server', 'ray', 'sr_models', 'uvicorn'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_patches_stitch_without_seams(leaf_asset):
    """Every patch routed to one model equals that model run on the whole (edge-padded) frame."""
    m, seg, frames, labels, sessions = _first_frames(leaf_asset)
    model_id = m.models[0].id
    up = RoutedUpscaler.for_manifest(m, sessions)
    lr = frames[5]
    routed = up.upscale(lr, labels[5], {str(g): model_id for g in range(m.k)}).copy()
    o, s = m.patch.overlap, m.scale
    padded = np.pad(lr, ((o, o), (o, o), (0, 0)), mode="edge")
    whole = sessions[model_id].run(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
    residual = whole[:, o * s : o * s + lr.shape[0] * s, o * s : o * s + lr.shape[1] * s].transpose(1, 2, 0) * 255.0
    expect = add_residual(upscale(lr, s, "lanczos"), residual)
    diff = np.abs(routed.astype(int) - expect)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


class _SlowSession:
    """Wraps a session and sleeps per call: a model that cannot keep up."""

    calls = 0

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def run(self, x):
        import time

        _SlowSession.calls += 1
        time.sleep(self.delay)
        return self.inner.run(x)


def test_degradation_policy_sends_easy_groups_to_lanczos_first():
    from client.realtime import DegradePolicy

    policy = DegradePolicy(interval=1 / 30, k=3)
    routes = {"0": "m0", "1": "m1", "2": "m2"}
    assert policy.routes(routes) == routes
    for i in range(3):
        policy.observe(i, behind=0.1, seconds=0.1)  # far behind the schedule: one level per observation
    assert policy.level == 3 and set(policy.routes(routes).values()) == {"lanczos"}
    policy.level = 1
    assert policy.routes(routes) == {"0": "m0", "1": "m1", "2": "lanczos"}
    policy.observe(5, behind=-0.01, seconds=0.2)  # a long frame that the lead paid for: no change
    assert policy.level == 1
    for i in range(40):
        policy.observe(10 + i, behind=-0.2, seconds=0.001)  # well ahead again: recovers
    assert policy.level == 0
    assert [e["reason"] for e in policy.events][-1] == "recovered"


def test_a_slow_model_degrades_playback_instead_of_stalling(leaf_asset, monkeypatch, tmp_path):
    import client.player as player

    real_open = player.open_session
    monkeypatch.setattr(player, "open_session", lambda *a, **kw: _SlowSession(real_open(*a, **kw), 0.08))
    monkeypatch.setattr(_SlowSession, "calls", 0)
    r = play(str(leaf_asset), PlayOptions(target_fps=25), fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    assert r["frames"] == 30  # every frame was shown
    assert r["degradations"] and r["degradations"][0]["reason"] == "behind"
    levels = [e["level"] for e in r["degradations"]]
    assert max(levels) >= 1
    assert isinstance(r["dropped_frames"], int)
    # the slow models were routed away: fewer model runs than the routes alone would make (work, not time)
    m = json.loads((leaf_asset / "sr" / "manifest.json").read_text())
    undegraded = sum(s["frames"] * len(set(s["routes"].values()) - {"lanczos"}) for s in m["segments"])
    assert 0 < _SlowSession.calls < undegraded


def test_viewer_composes_sr_lanczos_and_split_with_an_overlay():
    from client.viewer import compose

    sr = np.full((360, 640, 3), 200, np.uint8)
    lz = np.full((360, 640, 3), 50, np.uint8)
    split = compose(sr, lz, "split", ["30.0 fps"])
    assert (split[200:, 10:300] == 50).mean() > 0.95 and (split[200:, 340:630] == 200).mean() > 0.95
    over = compose(sr, lz, "sr", ["30.0 fps", "PSNR-Y"])
    assert (over[:80, :200] != 200).any()  # text drawn top-left
    assert (over[250:, :] == 200).all()  # and nowhere else
    with pytest.raises(ValueError):
        compose(sr, lz, "nope", [])


def test_out_writes_the_upscaled_video(leaf_asset, tmp_path):
    from fitcast.media import iter_frames, probe

    out = tmp_path / "up.mp4"
    play(str(leaf_asset), PlayOptions(max_frames=4, out=out), fetcher=Fetcher(cache_dir=tmp_path / "cache"))
    info = probe(out)
    assert (info.width, info.height) == (1280, 720)
    assert len(list(iter_frames(out))) == 4


def test_runtimes_agree_on_every_shipped_model(leaf_asset):
    """OpenVINO and ONNX Runtime run the same graphs: fp32 agrees to float rounding, int8 to
    about one quantisation step of the output (the two runtimes round differently)."""
    if "openvino" not in available_runtimes():
        pytest.skip("OpenVINO is not installed (pip install 'fitcast[openvino]')")
    m, seg, frames, labels, _ = _first_frames(leaf_asset)
    asset = open_asset(str(leaf_asset))
    grid = m.grid()
    windows = grid.windows(grid.pad(frames[0])).reshape(-1, grid.window, grid.window, 3)
    x = np.ascontiguousarray(windows.transpose(0, 3, 1, 2), dtype=np.float32) / 255
    for entry in m.models:
        data = asset.read_model(entry)
        ort_out = open_session(data, "ort").run(x)
        ov_out = open_session(data, "openvino", window=grid.window).run(x).copy()
        err = np.abs(ort_out - ov_out).max() * 255
        assert err < (0.01 if entry.precision == "fp32" else 3.0), (entry.id, entry.precision, err)


def test_play_reports_the_same_quality_on_both_runtimes(leaf_asset, leaf_piece, tmp_path):
    if "openvino" not in available_runtimes():
        pytest.skip("OpenVINO is not installed (pip install 'fitcast[openvino]')")
    fetcher = Fetcher(cache_dir=tmp_path / "cache")
    runs = {rt: play(str(leaf_asset), PlayOptions(reference=leaf_piece, runtime=rt), fetcher=fetcher)
            for rt in ("ort", "openvino")}
    assert runs["ort"]["runtime"] == "ort" and runs["openvino"]["runtime"] == "openvino"
    assert runs["openvino"]["psnr_y_sr"] == pytest.approx(runs["ort"]["psnr_y_sr"], abs=0.02)


def test_unknown_or_missing_runtime_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="unknown runtime"):
        resolve_runtime("tensorrt")
    assert resolve_runtime("ort") == "ort"
    assert resolve_runtime("auto") in ("openvino", "ort")


def test_lanczos_only_playback_runs_no_model(leaf_asset, leaf_piece, tmp_path, monkeypatch):
    import client.player as player

    monkeypatch.setattr(player, "open_session", lambda *a, **kw: pytest.fail("a model was loaded"))
    r = play(str(leaf_asset), PlayOptions(reference=leaf_piece, sr=False), fetcher=Fetcher(cache_dir=tmp_path / "c"))
    assert r["psnr_y_sr"] == pytest.approx(r["psnr_y_lanczos"], abs=1e-9)
    assert r["runtime"] == "none" and r["precision"] == "none"


def test_the_player_retries_busy_and_failing_servers_with_backoff(tmp_path):
    """429, 5xx and a dropped connection are asked again (with backoff); a 404 is not."""
    import http.server
    import threading

    import stamina

    from fitcast.errors import FetchError

    calls = {"/busy": 0, "/broken": 0, "/missing": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            calls[self.path] += 1
            if self.path == "/busy" and calls["/busy"] < 3:
                self.send_response(429 if calls["/busy"] == 1 else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/broken":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body = (200, b"payload") if self.path == "/busy" else (404, b"")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    stamina.set_testing(True, attempts=4)  # the same attempts, no sleeping
    try:
        fetcher = Fetcher(cache_dir=tmp_path / "c")
        assert fetcher.read(f"{base}/busy") == b"payload" and calls["/busy"] == 3
        with pytest.raises(FetchError, match="HTTP 500"):
            fetcher.read(f"{base}/broken")
        assert calls["/broken"] == 4
        with pytest.raises(NotFoundError):
            fetcher.read(f"{base}/missing")
        assert calls["/missing"] == 1
    finally:
        stamina.set_testing(False)
        server.shutdown()
