"""Compiler-aware search: the device profile, the latency predictor, and the search's respect of the budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fitcast.errors import InvalidInputError
from fitcast.profile import PROFILE_FORMAT, conv_macs_per_lr_px, load_profile
from nas.predictor import LatencyModel, features, holdout_mape, mean_holdout_mape
from nas.profile import Target, profile_device
from nas.search import search, space


def test_profile_measures_layers_networks_and_overhead_on_the_runtime(tmp_path):
    target = Target(scale=2, output=(256, 144), patch=32, halo=5)
    profile = profile_device(target, runtime="ort", precision="int8", runs=2, widths=(8, 16), networks=4,
                             plan_scales=())
    assert profile["format"] == PROFILE_FORMAT and profile["runtime"] == "ort"
    assert profile["target"]["patches"] == 4 * 3 and profile["target"]["window"] == 42
    kinds = {(r["kind"], r["cin"], r["cout"]) for r in profile["layers"]}
    assert kinds == {("first", 3, 8), ("first", 3, 16)} | {("step", a, b) for a in (8, 16) for b in (8, 16)}
    assert all(r["ms"] > 0 for r in profile["layers"] if r["kind"] == "first") and profile["overhead_ms"] > 0
    assert len(profile["networks"]) == 4 and all(n["ms"] > 0 and len(n["widths"]) >= 3 for n in profile["networks"])
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    assert load_profile(path)["target"] == profile["target"]


def test_hand_designed_baselines_are_the_largest_that_measure_within_the_budget():
    from nas.search import HAND_DESIGNED, hand_designed

    target = Target(scale=2, output=(128, 96), patch=32, halo=5)
    profile = profile_device(target, runtime="ort", precision="int8", runs=2, widths=(8, 16), networks=2,
                             plan_scales=())
    roomy = hand_designed({**profile, "overhead_ms": 0.0}, budget_ms=10_000, runs=2)
    assert [b["widths"] for b in roomy] == [members[-1] for members in HAND_DESIGNED.values()]
    assert all(b["measured_ms"] > 0 for b in roomy)
    assert hand_designed({**profile, "overhead_ms": 0.0}, budget_ms=0.001, runs=2) == []


def test_a_profile_of_another_format_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(InvalidInputError, match="expected fitcast-device-profile/1"):
        load_profile(bad)


TRUE = np.array([0.5, 0.004, 0.3, 0.01])  # ms: per call, per 1000 MACs/px, per conv, per hidden channel


def _true_ms(w: list[int]) -> float:
    return float(features(w, 2) @ TRUE)


def _synthetic_profile(widths=(8, 16, 24), overhead=10.0, noise=0.0) -> dict:
    """A device whose times follow the predictor's own form exactly (+ optional noise)."""
    rng = np.random.default_rng(0)
    layers = [{"kind": "first", "cin": 3, "cout": c, "ms": _true_ms([c])} for c in widths]
    layers += [{"kind": "step", "cin": a, "cout": b, "ms": _true_ms([a, b]) - _true_ms([a])}
               for a in widths for b in widths]
    profile = {"format": PROFILE_FORMAT, "layers": layers, "overhead_ms": overhead, "networks": [],
               "target": {"scale": 2, "output": [256, 144], "patch": 32, "halo": 5, "window": 42, "patches": 12}}
    for w in [[8, 16, 24], [24, 24, 8], [8, 16, 24, 24], [16, 8, 16], [24, 8, 8], [16, 16, 16], [8, 24, 16, 8],
              [24, 16, 8, 16]]:
        profile["networks"].append({"widths": w, "ms": _true_ms(w) * (1 + noise * rng.normal())})
    return profile


def test_predictor_fits_measured_times_and_reports_held_out_error():
    profile = _synthetic_profile()
    model = LatencyModel.from_profile(profile)
    assert np.allclose(model.coef, TRUE, atol=1e-9)
    assert model.predict([8, 16]) == pytest.approx(_true_ms([8, 16]))
    assert holdout_mape(profile) == pytest.approx(0.0, abs=1e-6)
    noisy = _synthetic_profile(noise=0.05)
    assert 0.5 < mean_holdout_mape(noisy) < 15.0
    with pytest.raises(ValueError, match="no measurement"):
        model.predict([40])


def test_search_keeps_to_the_budget_and_trains_the_short_list(leaf_piece):
    profile = _synthetic_profile()
    model = LatencyModel.from_profile(profile)
    # a budget that about half the space meets: 10 ms of the player's own plus the median network
    target_fps = 1000 / (10.0 + float(np.median([_true_ms(w) for w in space((8, 16, 24))])))
    result = search(profile, leaf_piece, target_fps=target_fps, proxy_iterations=10, frames=4, headroom=0.0,
                    measure=_true_ms, compare=False, rounds=1)
    budget = 1000 / target_fps
    assert result.budget_ms == pytest.approx(budget, abs=1e-3)
    for c in result.shortlist:
        assert c.predicted_ms + profile["overhead_ms"] <= budget + 1e-3  # predicted_ms is rounded to 1 µs
        assert c.held_out_gain_db is not None and c.train_seconds > 0
    fits = [w for w in space((8, 16, 24)) if model.predict(w) + 10.0 <= budget]
    assert result.fitting == len(fits) and result.space_size == 3 + 9 + 27 + 81
    assert 20 < len(fits) < 100  # the budget really cuts the space
    best_macs = max(conv_macs_per_lr_px(w, 2) for w in fits)
    assert max(c.macs_per_lr_px for c in result.shortlist) == best_macs  # the most capable that fits is tried
    assert result.arch == {"name": "espcn_w", "scale": 2, "widths": result.chosen.widths}


def test_impossible_budgets_are_clear_errors(leaf_piece):
    profile = _synthetic_profile(overhead=40.0)
    with pytest.raises(InvalidInputError, match="player's own work"):
        search(profile, leaf_piece, target_fps=30, proxy_iterations=5, frames=2)
    fastest = min(_true_ms(w) for w in space((8, 16, 24)))
    with pytest.raises(InvalidInputError, match="no network of the space fits"):
        search(_synthetic_profile(overhead=1000 / 60 - fastest / 2), leaf_piece, target_fps=60, proxy_iterations=5,
               frames=2, headroom=0.0)


def test_search_never_returns_a_network_a_measured_baseline_of_the_budget_beats(leaf_piece, monkeypatch):
    """Stubbed profile, stubbed runtime and stubbed proxy results: the rule alone."""
    import nas.search as ns

    profile = _synthetic_profile()
    calls: dict[tuple, int] = {}

    def proxy(widths, scale, halo, train_file, held_file, out, iterations, seed, *, init=None):
        key = tuple(widths)
        calls[key] = calls.get(key, 0) + 1
        if key in espcn_like:  # the ESPCN-like baselines (wider than the space): better than anything searched
            return 0.9, 1.0
        if key == tuple(searched_first):  # a network that needs a second round before it learns
            return (0.0 if init is None else 0.6), 1.0
        return 0.3, 1.0

    searched_first: list[int] = []
    espcn_like = {tuple(w) for w in ns.HAND_DESIGNED["espcn-like"] if max(w) > 24}
    real_short = ns._measured_shortlist

    def shortlist(*a, **kw):
        out = real_short(*a, **kw)
        searched_first[:] = out[0].widths
        return out

    monkeypatch.setattr(ns, "_proxy_gain", proxy)
    monkeypatch.setattr(ns, "_measured_shortlist", shortlist)
    target_fps = 1000 / (10.0 + float(np.median([_true_ms(w) for w in space((8, 16, 24))])))
    result = search(profile, leaf_piece, target_fps=target_fps, proxy_iterations=5, frames=2, headroom=0.0,
                    measure=_true_ms)
    (espcn,) = [b["widths"] for b in result.baselines if b["family"] == "espcn-like"]
    assert tuple(espcn) in espcn_like  # the largest of the family that fits, measured
    assert result.chosen.widths == espcn and result.chosen.family == "espcn-like"
    assert result.arch["widths"] == espcn and result.chosen.held_out_gain_db == 0.9
    late = next(c for c in result.shortlist if c.widths == searched_first)
    assert calls[tuple(searched_first)] == 2 and late.learned and late.held_out_gain_db == 0.6
    # every short-listed network was measured and fits the budget as measured
    assert all(c.measured_ms is not None and c.measured_ms + 10.0 <= result.budget_ms + 1e-6 for c in result.shortlist)
    assert result.shortlist_prediction_error_pct == pytest.approx(0.0, abs=1e-6)  # the stub runtime is the truth


def test_a_network_that_never_starts_to_learn_loses_to_one_that_does(leaf_piece, monkeypatch):
    import nas.search as ns

    monkeypatch.setattr(ns, "_proxy_gain",
                        lambda widths, *a, init=None, **kw: (0.018 if len(widths) == 4 else 0.004, 1.0))
    profile = _synthetic_profile()
    target_fps = 1000 / (10.0 + float(np.max([_true_ms(w) for w in space((8, 16, 24))])))
    result = search(profile, leaf_piece, target_fps=target_fps, proxy_iterations=5, frames=2, headroom=0.0,
                    measure=_true_ms, compare=False)
    assert not any(c.learned for c in result.shortlist)  # nothing reached LEARNED_DB in three rounds
    assert len(result.chosen.widths) == 4  # then the best gain still wins


def test_plan_costs_are_measured_on_the_runtime_and_predict_a_shipped_network():
    """The profile's plan section (what the encoder's planner predicts frames with), small."""
    from fitcast.profile import route_costs
    from nas.profile import plan_section

    nets = ([8], [16], [8, 8], [16, 16], [24, 24, 24], [16, 16, 16])
    plan = plan_section(runtime="ort", precision="int8", scales=(2,), runs=2, say=lambda _: None, networks=nets,
                        outputs={2: ((256, 144),)})
    assert len(plan["networks"]) == len(nets) * 3 and all(r["ms"] > 0 for r in plan["networks"])
    (player,) = plan["player"]
    assert player["patches"] == 4 * 3 and player["frame_ms"] > 0 and player["feed_ms"] > 0
    costs = route_costs({"plan": plan}, scale=2, output=(512, 288), window=42, patches=36,
                        archs=[{"name": "espcn_r", "channels": 16, "body": 1}, {"name": "espcn_w", "widths": [32]}])
    own = [r for r in plan["networks"] if r["widths"] == [16, 16]]
    paste = player["window_ms"] * (12 / 36) * 4  # the player's work per window, scaled to a patch of this asset
    assert player["window_ms"] > 0
    assert costs.window_ms[0] - paste == pytest.approx(np.polyfit([r["batch"] for r in own],
                                                                  [r["ms"] for r in own], 1)[0]
                                                       * (42 / 40) ** 2, rel=0.35)  # its own timings (a line)
    assert costs.window_ms[1] > 0  # a network the table lacks: the fitted model
    assert costs.frame_ms == pytest.approx(player["frame_ms"] * 4, rel=1e-6)  # 4x the pixels of the timed frame
    assert {r["feed_base"] for r in plan["networks"]} == {"lanczos"}  # a 256x144 lanczos feed fits


def test_networks_are_timed_beside_the_base_the_planner_will_take(monkeypatch):
    """Where the lanczos feed would take over half a 30 fps interval, the planner takes bicubic, so
    the networks are timed beside a bicubic feed (beside lanczos they measured 60 % slower)."""
    import nas.profile as prof

    feeds = {2: (12.0, 3.0), 4: (22.0, 3.2)}  # lanczos, bicubic ms a frame (x4: 1920x1080 here)

    def player(scale, output, *, runs):
        return {"scale": scale, "output": list(output), "feed_ms_lanczos": feeds[scale][0],
                "feed_ms_bicubic": feeds[scale][1]}

    timed: dict[int, str] = {}

    def networks(scale, *, base, **_):
        timed[scale] = base
        return []

    monkeypatch.setattr(prof, "plan_player", player)
    monkeypatch.setattr(prof, "plan_networks", networks)
    prof.plan_section(runtime="ort", precision="int8", scales=(2, 4), runs=1, say=lambda _: None)
    assert timed == {2: "lanczos", 4: "bicubic"}
