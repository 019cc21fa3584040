"""A planned asset (fitcast/2): the encoder's plan, reuse composed the same way in the encoder and
the player, segments that decode alone, budgets kept, and readers that refuse what they cannot play."""

import json
import subprocess
import sys

import numpy as np
import pytest

from chunking.planner import REUSE_CODE, PlanClock
from client.player import PlayOptions, play
from fitcast.asset import Fetcher, open_asset
from fitcast.errors import ManifestError, UnsupportedFormatError
from fitcast.grid import Grid, load_plan
from fitcast.manifest import FORMAT_PLANNED, REUSE, parse
from fitcast.upscale import PlannedUpscaler


def _plans(asset_dir):
    asset = open_asset(str(asset_dir))
    m = asset.manifest
    return m, [load_plan(asset.read(s.plan_uri, s.plan_sha256), frames=s.frames, shape=m.grid().shape,
                         routes=len(m.plan.routes)) for s in m.segments]


def test_a_planned_asset_says_what_it_was_planned_for(planned_asset):
    m, plans = _plans(planned_asset)
    assert m.format == FORMAT_PLANNED and m.plan is not None
    assert m.plan.target_fps == pytest.approx(30.0) and m.plan.routes[:2] == ["lanczos", REUSE]
    assert "EPYC" in m.plan.device or "host" in m.plan.device
    assert m.bits.plans > 0
    report = json.loads((planned_asset / "report" / "quality.json").read_text())
    plan = report["plan"]
    assert plan["late_frames_predicted"] == 0 and len(plan["predicted_frame_ms"]) == 30
    assert abs(sum(plan["route_shares"][r] for r in m.plan.routes) - 1.0) < 1e-9
    models = [c for c, route in enumerate(m.plan.routes) if route not in ("lanczos", REUSE)]
    for codes, motion, order in plans:
        assert not (codes[0] == REUSE_CODE).any()  # a segment's first frame never reuses
        assert codes.shape == (15, *m.grid().shape) and motion.dtype == np.int8
        on_model = np.isin(codes, models)  # every model patch has a rank, 1..K per frame; nothing else has one
        assert (order[~on_model] == 0).all()
        for f in range(codes.shape[0]):
            assert sorted(order[f][on_model[f]].tolist()) == list(range(1, int(on_model[f].sum()) + 1))


def test_the_plan_keeps_within_its_budget_on_the_profiles_own_costs(planned_asset):
    m, _ = _plans(planned_asset)
    report = json.loads((planned_asset / "report" / "quality.json").read_text())["plan"]
    clock = PlanClock(1000 / m.plan.target_fps, m.plan.queue_frames, prebuffer=m.plan.prebuffer_frames,
                      headroom=m.plan.headroom)
    t = 0
    for seg in m.segments:
        for j in range(seg.frames):
            budget = clock.budget(t, first_of_segment=j == 0)
            cost = report["predicted_frame_ms"][t]
            assert cost <= budget + 1e-3 or cost <= report["costs"]["frame_ms"] + 1e-3, (t, cost, budget)
            assert not clock.finish(t, cost), t
            t += 1


def test_the_player_reproduces_the_planned_pixels_and_psnr(planned_asset, leaf_piece, tmp_path):
    quality = json.loads((planned_asset / "report" / "quality.json").read_text())
    # unpaced: a paced player on a busy machine may degrade, and then it shows less than the plan
    r = play(str(planned_asset), PlayOptions(reference=leaf_piece), fetcher=Fetcher(tmp_path / "c"))
    assert r["planned"] and r["frames"] == 30 and not r.get("degradations")
    assert r["psnr_y_sr"] == pytest.approx(quality["plan"]["psnr_y_planned"], abs=0.02)
    segments = json.loads((planned_asset / "sr" / "manifest.json").read_text())["segments"]
    for seg, got in zip(segments, r["segments"], strict=True):
        assert got["psnr_y_sr"] == pytest.approx(seg["psnr_y_planned"], abs=0.02)
    unplanned = play(str(planned_asset), PlayOptions(reference=leaf_piece, plan=False), fetcher=Fetcher(tmp_path / "c"))
    assert not unplanned["planned"] and unplanned["psnr_y_sr"] == pytest.approx(quality["psnr_y_sr"], abs=0.02)


def test_seeking_to_a_segment_gives_the_frames_of_playing_through(planned_asset, tmp_path):
    through, seeked = {}, {}
    play(str(planned_asset), PlayOptions(), fetcher=Fetcher(tmp_path / "c"),
         sink=lambda f, hr: through.__setitem__((f.segment.index, f.position), hr.copy()))
    play(str(planned_asset), PlayOptions(start_segment=1), fetcher=Fetcher(tmp_path / "c"),
         sink=lambda f, hr: seeked.__setitem__((f.segment.index, f.position), hr.copy()))
    assert sorted(seeked) == [(1, j) for j in range(15)]
    for key, frame in seeked.items():
        assert np.array_equal(frame, through[key]), key


def test_reuse_moves_the_last_frames_detail_along_the_vector():
    grid = Grid(64, 48, patch=16, overlap=0, scale=2)  # 4 x 3 patches of 32 HR pixels
    up = PlannedUpscaler(grid, {}, ["lanczos", REUSE])
    detail = np.random.default_rng(0).integers(-40, 40, up.canvas.shape, dtype=np.int16)
    up.canvas[:] = detail
    rows, cols = np.array([1, 2]), np.array([1, 3])
    moved = up.moved(rows, cols, np.array([[3, -5], [0, 0]], np.int8))
    assert np.array_equal(moved[0], detail[32 + 3 : 64 + 3, 32 - 5 : 64 - 5])
    assert np.array_equal(moved[1], detail[64:96, 96:128])
    # composed: in place where the vector is zero, moved where it is not, zero where lanczos
    codes = np.ones(grid.shape, np.uint8)
    codes[0, 0] = 0
    motion = np.zeros((*grid.shape, 2), np.int8)
    motion[1, 1] = (3, -5)
    base = np.full((96, 128, 3), 100, np.uint8)
    out = up.upscale(np.zeros((48, 64, 3), np.uint8), base, codes, motion).astype(int)
    assert np.array_equal(out[32:64, 32:64], np.clip(100 + detail[35:67, 27:59], 0, 255))
    assert np.array_equal(out[64:96, 96:128], np.clip(100 + detail[64:96, 96:128], 0, 255))
    assert (out[:32, :32] == 100).all()


def test_readers_refuse_what_they_cannot_play_in_one_line(planned_asset, tmp_path):
    doc = json.loads((planned_asset / "sr" / "manifest.json").read_text())
    with pytest.raises(UnsupportedFormatError, match="update fitcast"):
        parse(json.dumps(doc | {"format": "fitcast/3"}))
    with pytest.raises(ManifestError, match="does not know"):
        parse(json.dumps(doc | {"plan": doc["plan"] | {"routes": doc["plan"]["routes"] + ["warp-3d"]}}))
    with pytest.raises(ManifestError, match="needs its plan"):
        parse(json.dumps({k: v for k, v in doc.items() if k != "plan"}))
    # a fitcast/1 reader's own rule refuses the major version a plan brings (it knows fitcast/1 only)
    assert doc["format"] == "fitcast/2"
    bad = tmp_path / "asset"
    import shutil

    shutil.copytree(planned_asset, bad)
    (bad / "sr" / "manifest.json").write_text(json.dumps(doc | {"format": "fitcast/3"}))
    out = subprocess.run([sys.executable, "-m", "fitcast", "play", str(bad), "--headless"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "fitcast/3" in out.stderr


class _SlowCountingSession:
    """A model that takes ``ms_per_window`` a window beyond its real work, counting windows run."""

    windows = 0

    def __init__(self, inner, ms_per_window):
        self.inner, self.delay = inner, ms_per_window / 1000

    def run(self, x):
        import time

        _SlowCountingSession.windows += x.shape[0]
        time.sleep(self.delay * x.shape[0])
        return self.inner.run(x)


def test_a_planned_asset_too_slow_here_sheds_its_least_valuable_windows_and_shows_every_frame(
        planned_asset, monkeypatch, tmp_path):
    import client.player as player

    real_open = player.open_session
    monkeypatch.setattr(player, "open_session", lambda *a, **kw: _SlowCountingSession(real_open(*a, **kw), 4.0))
    monkeypatch.setattr(_SlowCountingSession, "windows", 0)
    r = play(str(planned_asset), PlayOptions(target_fps=30), fetcher=Fetcher(tmp_path / "c"))
    assert r["frames"] == 30 and r["planned"] and r["degradations"] == []  # no whole model is given up
    shed = r["shed"]
    assert shed["frames"] > 0 and 0 < shed["windows"] < shed["planned_windows"]
    # what ran is what the plan asked less what was shed (the warm-up run of each session aside)
    _, plans = _plans(planned_asset)
    m = open_asset(str(planned_asset)).manifest
    model_codes = [c for c, route in enumerate(m.plan.routes) if route not in ("lanczos", REUSE)]
    planned = sum(int(np.isin(p.codes, model_codes).sum()) for p in plans)
    assert shed["planned_windows"] == planned
    warm_up = len(model_codes)
    assert _SlowCountingSession.windows - warm_up == planned - shed["windows"]


class _ZeroSession:
    """A model that adds nothing (its residual is zero): the routes' mechanics without a network."""

    def __init__(self, grid):
        self.side = grid.window * grid.scale

    def run(self, x):
        return np.zeros((x.shape[0], 3, self.side, self.side), np.float32)


def test_the_encoder_refines_a_vector_that_is_a_pixel_off():
    from server.planning import ModelResiduals, route_errors

    grid = Grid(64, 48, patch=16, overlap=0, scale=2)
    up = PlannedUpscaler(grid, {"zero": _ZeroSession(grid)}, ["lanczos", REUSE, "zero"])
    import cv2

    # detail with the spatial correlation of real texture: a vector a pixel off is near, not lost
    noise = np.random.default_rng(1).normal(0, 60, up.canvas.shape).astype(np.float32)
    detail = np.rint(cv2.GaussianBlur(noise, (0, 0), 2.0)).astype(np.int16)
    up.canvas[:] = detail
    base = np.full((96, 128, 3), 100, np.uint8)
    true = (3, -5)  # the content moved: the HR frame is the base plus the detail taken from (y+3, x-5)
    moved = np.zeros_like(detail)
    moved[:96 - 3, 5:] = detail[3:, :128 - 5]
    hr = np.clip(base + moved, 0, 255).astype(np.uint8)
    off = np.zeros((1, *grid.shape, 2), np.int8)
    off[..., :] = (3, -4)  # the flow's vector, a pixel off
    lr = np.zeros((48, 64, 3), np.uint8)
    _, reuse_err, vectors, _ = route_errors(ModelResiduals(up, ["zero"]), lr, base, hr, off)
    best = np.take_along_axis(vectors, reuse_err.argmin(axis=0)[None, ..., None], axis=0)[0]
    inner = (slice(0, 2), slice(1, 4))  # patches whose source lies inside the frame
    assert (best[inner] == true).all()
    assert (reuse_err.min(axis=0)[inner] == 0).all() and (reuse_err[1][inner] > 0).all()
    assert (reuse_err[1][inner] < reuse_err[0][inner]).all()  # the flow's vector beat reuse in place


class _CountingEcho:
    """A 'model' whose residual is its window's own pixels, scaled up (a function of the window
    alone, as a network's is), counting the windows it runs on."""

    def __init__(self, grid):
        self.scale, self.windows = grid.scale, 0

    def run(self, x):
        self.windows += x.shape[0]
        return np.repeat(np.repeat(x - 0.5, self.scale, axis=2), self.scale, axis=3) * 0.1


def _one_pixel_changed(leaf_piece):
    """A real LR frame of a 64x48 grid and the same frame with one LR pixel changed, and how many
    windows hold that pixel (windows overlap by their margins)."""
    from fitcast.media import downscale, iter_frames

    grid = Grid(64, 48, patch=16, overlap=3, scale=2)
    lr = downscale(next(iter_frames(leaf_piece))[:96, :128], 2)
    changed = lr.copy()
    changed[17, 33] ^= 0xFF
    holding = sum(1 for r in range(grid.gh) for c in range(grid.gw)
                  if r * 16 - 3 <= 17 < r * 16 + 19 and c * 16 - 3 <= 33 < c * 16 + 19)
    return grid, lr, changed, holding


def test_the_plan_stage_runs_the_models_only_on_windows_that_changed(leaf_piece):
    from server.planning import ModelResiduals

    grid, lr, changed, holding = _one_pixel_changed(leaf_piece)
    echo = _CountingEcho(grid)
    cache = ModelResiduals(PlannedUpscaler(grid, {"echo": echo}, ["lanczos", REUSE, "echo"]), ["echo"])
    first = cache.of(lr).copy()
    assert echo.windows == grid.patches == cache.windows_run
    assert np.array_equal(cache.of(lr), first) and echo.windows == grid.patches  # the same frame: nothing runs
    again = cache.of(changed)
    assert echo.windows == grid.patches + holding and holding == 4
    fresh = ModelResiduals(PlannedUpscaler(grid, {"echo": _CountingEcho(grid)}, ["lanczos", REUSE, "echo"]), ["echo"])
    assert np.array_equal(again, fresh.of(changed))  # what the cache kept is what running afresh gives
    assert not np.array_equal(again, first)


def test_the_evaluate_stage_upscales_as_the_player_running_only_changed_windows(leaf_piece):
    from fitcast.upscale import RoutedUpscaler

    grid, lr, changed, holding = _one_pixel_changed(leaf_piece)
    labels = (np.arange(grid.patches).reshape(grid.shape) % 2).astype(np.uint8)
    routes = {"0": "a", "1": "b"}
    player = RoutedUpscaler(grid, {"a": _CountingEcho(grid), "b": _CountingEcho(grid)})
    encoder = RoutedUpscaler(grid, {"a": (a := _CountingEcho(grid)), "b": (b := _CountingEcho(grid))},
                             keep_unchanged=True)
    for frame in (lr, lr, changed, changed, lr):
        assert np.array_equal(encoder.upscale(frame, labels, routes), player.upscale(frame, labels, routes))
    # every window once, then the windows holding the changed pixel twice (changed, then back)
    assert a.windows + b.windows == grid.patches + 2 * holding


def test_patch_errors_score_each_patch_as_the_composed_frame_does(leaf_piece):
    import cv2

    from chunking.score import PatchErrors, patch_sse_y
    from fitcast.media import iter_frames, upscale
    from fitcast.metrics import y_of_difference

    grid = Grid(60, 44, patch=16, overlap=0, scale=2)  # the frame's edge cuts the last row and column
    frames = iter_frames(leaf_piece)
    hr = next(frames)[:88, :120]
    base = upscale(cv2.resize(hr, (60, 44), interpolation=cv2.INTER_AREA), 2, "lanczos")
    residual = np.random.default_rng(3).integers(-40, 40, (grid.patches, 32, 32, 3)).astype(np.int16)
    canvas = residual.reshape(grid.gh, grid.gw, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(grid.gh * 32,
                                                                                            grid.gw * 32, 3)
    whole = patch_sse_y(cv2.add(base, canvas[:88, :120], dtype=cv2.CV_8U), hr, grid)
    score = PatchErrors(base, hr, grid)
    np.testing.assert_allclose(score.of_all(residual), whole, rtol=1e-5)
    np.testing.assert_allclose(score.of_base(), patch_sse_y(base, hr, grid), rtol=1e-5)
    rows, cols = np.array([0, 2, 1]), np.array([3, 3, 0])  # an edge patch among them
    np.testing.assert_allclose(score.at(rows, cols, residual[rows * grid.gw + cols]), whole[rows, cols], rtol=1e-5)
    # the luma route (reuse candidates): the same where base + residual does not saturate, here a
    # residual that turns the base into the next frame
    nxt = next(frames)[:88, :120]
    full = np.zeros((grid.gh * 32, grid.gw * 32, 3), np.int16)
    full[:88, :120] = nxt.astype(np.int16) - base
    exact = full.reshape(grid.gh, 32, grid.gw, 32, 3).transpose(0, 2, 1, 3, 4).reshape(grid.patches, 32, 32, 3)
    luma = y_of_difference(exact.reshape(-1, 32, 3)).reshape(-1, 32, 32)
    expected = patch_sse_y(nxt, hr, grid)
    np.testing.assert_allclose(score.at_luma(rows, cols, luma[rows * grid.gw + cols]), expected[rows, cols], rtol=1e-4)
