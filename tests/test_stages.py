"""Each stage of the encode alone, on a real clip (1 s of leaf at x2), with typed inputs and outputs."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from fitcast.errors import InvalidInputError
from fitcast.grid import Grid, load_labels
from fitcast.manifest import LANCZOS, parse
from fitcast.media import Limits
from fitcast.options import EncodeOptions
from server import pipeline as P
from sr_models.archs import build_from_spec
from sr_models.recipes import RECIPES, ShippedModel
from sr_models.samples import read_samples


def _quiet(_: float) -> None:
    pass


@pytest.fixture(scope="module")
def staged(leaf_piece, tmp_path_factory):
    """Stages 1-3 on the leaf piece: source, rendition (0.5 s segments) and analysis (k=2)."""
    root = tmp_path_factory.mktemp("stages")
    options = EncodeOptions(segment_seconds=0.5, preset="fast")
    src = P.probe_source(leaf_piece, options, patch=32, limits=Limits(), progress=_quiet)
    rendition = P.transcode(src, root / "hls", options, progress=_quiet)
    grid = Grid(src.lr[0], src.lr[1], 32, 3, 2)
    analysis = P.analyse(src, rendition, grid, 2, progress=_quiet)
    return root, options, src, rendition, analysis


def test_probe_gives_crop_and_sizes_and_refuses_a_too_small_source(leaf_piece):
    options = EncodeOptions(scale=4)
    src = P.probe_source(leaf_piece, options, patch=32, limits=Limits(), progress=_quiet)
    assert src.hr == (1280, 720) and src.lr == (320, 180) and src.segment_frames == 60
    with pytest.raises(InvalidInputError, match="too small"):
        P.probe_source(leaf_piece, options, patch=256, limits=Limits(), progress=_quiet)


def test_transcode_publishes_segments_of_whole_gops(staged):
    root, options, src, rendition, _ = staged
    assert rendition.frames == 30 and [s.index for s in rendition.segments] == [0, 1]
    assert all(abs(s.duration - 0.5) < 0.02 for s in rendition.segments)
    assert rendition.video_bytes > 0 and rendition.audio_bytes == 0 and rendition.codec.startswith("avc1.")
    master = (root / "hls" / "master.m3u8").read_text()
    assert "RESOLUTION=640x360" in master and "com.fitcast.manifest" in master
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())  # published by rename


def test_analyse_labels_every_patch_into_equal_groups(staged):
    _, _, _, rendition, analysis = staged
    assert analysis.frames == [15, 15] and analysis.k == 2
    assert all(lab.shape == (15, 12, 20) and lab.dtype == np.uint8 for lab in analysis.labels)
    counts = np.bincount(np.concatenate(analysis.labels).ravel(), minlength=2)
    assert abs(int(counts[0]) - int(counts[1])) <= 1
    assert analysis.thresholds[0] <= analysis.thresholds[1]  # group 0 is the hardest


@pytest.mark.parametrize("method", ["stdo", "jstdo"])
def test_sample_writes_what_the_recipe_trains_on(staged, tmp_path, method):
    _, _, src, rendition, analysis = staged
    recipe = RECIPES[method]
    files = P.sample(src, rendition, analysis, recipe, per_group=50, work=tmp_path / "work", seed=0,
                     progress=_quiet)
    if recipe.per_group_samples:
        assert len(files.per_group) == 2 and files.joint is None
        sizes = [len(read_samples(f)[0]) for f in files.per_group]
        assert sizes == [50, 50]
    else:
        lr, res, group = read_samples(files.joint)
        assert lr.shape == (100, 38, 38, 3) and res.shape == (100, 64, 64, 3) and res.dtype == np.int16
        assert np.bincount(group).tolist() == [50, 50]


def _model(mid: str, group: int | None, tail_bias: float) -> ShippedModel:
    """A network whose residual is a constant ``tail_bias`` (in units of 255): a stand-in model."""
    arch = {"name": "espcn_r", "scale": 2, "channels": 8, "body": 0}
    net = build_from_spec(arch).eval()
    with torch.no_grad():
        net.tail.bias.fill_(tail_bias)
    return ShippedModel(mid, group, arch, net, group)


def test_export_then_evaluate_gates_a_harmful_model_to_lanczos(staged, tmp_path):
    _, _, src, rendition, analysis = staged
    files = P.sample(src, rendition, analysis, RECIPES["stdo"], per_group=40, work=tmp_path / "work", seed=0,
                     progress=_quiet)
    models = P.export_models([_model("stdo-g0", 0, 0.0), _model("stdo-g1", 1, 40 / 255)], files, analysis.grid,
                             int8=True, seed=0, progress=_quiet)
    assert all(m.fp32 and m.int8 and m.params > 0 and m.macs_per_lr_px > 0 for m in models)
    ev = P.evaluate(src, rendition, analysis, models, ["stdo-g0", "stdo-g1"], int8=True, progress=_quiet)
    # a model that adds +40 grey levels everywhere never beats lanczos; one that adds nothing ties it:
    # both go to lanczos, and the frames are then exactly the lanczos frames
    assert [s.routes for s in ev.segments] == [{"0": LANCZOS, "1": LANCZOS}] * 2
    assert ev.frame_psnr["sr"] == pytest.approx(ev.frame_psnr["lanczos"], abs=1e-9)
    # PSNR-Y on every frame; the diagnostics on every DIAGNOSTIC_STRIDE-th, their means carried by
    # the difference to the curve measured on every frame (the fp32 routes are lanczos here too)
    assert len(ev.frame_psnr["sr"]) == 30 and ev.diagnostic_frames == list(range(0, 30, P.DIAGNOSTIC_STRIDE))
    assert len(ev.frame_ssim["sr"]) == len(ev.frame_psnr["bicubic"]) == len(ev.diagnostic_frames)
    assert ev.mean_psnr("sr_fp32") == pytest.approx(ev.mean_psnr("sr"), abs=1e-9)
    assert ev.mean_psnr("bicubic") < ev.mean_psnr("lanczos")
    assert ev.used_models() == set()


def test_publish_writes_a_manifest_of_content_addressed_files(staged, tmp_path):
    _, _, src, rendition, analysis = staged
    files = P.sample(src, rendition, analysis, RECIPES["jstdo"], per_group=20, work=tmp_path / "work", seed=0,
                     progress=_quiet)
    model = P.export_models([_model("jstdo", None, 0.01)], files, analysis.grid, int8=False, seed=0,
                            progress=_quiet)[0]
    ev = P.Evaluation(segments=[P.SegmentReport(i, 15, 30.0, 30.5, {"0": "jstdo", "1": LANCZOS}) for i in range(2)])
    m = P.publish(tmp_path / "sr", "leaf-test", src, rendition, analysis, [model], ev, None, method="jstdo",
                  int8=False, progress=_quiet)
    on_disk = parse((tmp_path / "sr" / "manifest.json").read_text())
    assert on_disk == m and m.grid() == analysis.grid
    assert [e.precision for e in m.models] == ["fp32"] and m.bits.models == m.models[0].bytes * 8
    for seg, labels in zip(m.segments, analysis.labels, strict=False):
        assert (load_labels((tmp_path / "sr" / seg.labels_uri).read_bytes()) == labels).all()
        assert seg.labels_uri == f"labels/{seg.labels_sha256}.npz"
    assert json.loads(m.to_json())["segments"][1]["routes"] == {"0": "jstdo", "1": LANCZOS}


def test_a_stage_reports_its_own_progress_and_seconds():
    seen = []
    run = P.StageRunner(lambda stage, f: seen.append((stage, round(f, 3))))

    def stage(x: int, *, progress) -> int:
        progress(0.5)
        return x + 1

    assert run("analyse", stage, 1) == 2
    assert seen == [("analyse", 0.09), ("analyse", 0.12), ("analyse", 0.15)]  # 0.09 + 0.06 x fraction
    assert set(run.seconds) == {"analyse", "total"}


def test_the_training_time_of_an_encode_budget_scales_with_length_and_pixels(staged):
    _, _, src, _, _ = staged
    info_720 = dataclasses.replace(src.info, duration=24.0, fps=Fraction(30))
    at_720 = dataclasses.replace(src, info=info_720, crop=(0, 0, 1280, 720))
    assert P.training_seconds(at_720, 60.0) == pytest.approx(P.TRAIN_SHARE * 60.0 * 24.0)
    at_1080 = dataclasses.replace(at_720, crop=(0, 0, 1920, 1080))
    assert P.training_seconds(at_1080, 60.0) == pytest.approx(2.25 * P.training_seconds(at_720, 60.0))
    small = dataclasses.replace(at_720, crop=(0, 0, 640, 360))  # below 720p: per second of source
    assert P.training_seconds(small, 60.0) == P.training_seconds(at_720, 60.0)
    assert P.training_seconds(src, 0.0) is None  # no limit
