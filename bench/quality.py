"""Quality benchmark (not part of `make test`): fitcast methods against lanczos and
full-resolution x264 at the same total bitrate, with a BD-rate over a CRF ladder.

    python bench/quality.py --clips leaf_720p_pyscenedetect.mp4:3:4 bear_480p_cotracker.mp4:0:2.7 \
        --scales 2 --methods stdo jstdo dydca --crfs 23 --out bench/results

Each clip spec is NAME[:START[:DURATION]] inside ../shared/media (or a path).
Writes ``quality.json`` and PNG plots (rate-distortion curves) into --out.
Timings are wall seconds on the machine that runs it; the JSON names the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_name  # noqa: E402
from fitcast.media import cut, iter_frames, run_ffmpeg  # noqa: E402
from fitcast.metrics import psnr_y  # noqa: E402
from server.pipeline import EncodeOptions, encode  # noqa: E402

MEDIA = Path(os.environ.get("FITCAST_MEDIA", ROOT.parent / "shared" / "media"))


def clip_piece(spec: str, work: Path) -> tuple[str, Path]:
    name, *rest = spec.split(":")
    src = Path(name) if Path(name).is_file() else MEDIA / name
    start = float(rest[0]) if rest else 0.0
    duration = float(rest[1]) if len(rest) > 1 else 4.0
    label = f"{Path(name).stem}@{start:g}+{duration:g}"
    piece = work / f"{label}.mp4"
    if not piece.exists():
        cut(src, piece, start=start, duration=duration, crf=8)
    return label, piece


def x264_full_res(piece: Path, work: Path, *, kbps: float, crop) -> dict:
    """Full-resolution x264 (2-pass ABR at ``kbps``) of the same crop: PSNR-Y and real bits."""
    x, y, w, h = crop
    out = work / f"{piece.stem}_x264_{kbps:.0f}k.mp4"
    common = ["-i", str(piece), "-vf", f"crop={w}:{h}:{x}:{y}", "-c:v", "libx264", "-preset", "medium",
              "-b:v", f"{kbps:.0f}k", "-an"]
    passlog = str(work / "x264pass")
    run_ffmpeg([*common, "-pass", "1", "-passlogfile", passlog, "-f", "mp4", os.devnull])
    run_ffmpeg([*common, "-pass", "2", "-passlogfile", passlog, str(out)])
    psnrs = [psnr_y(a, b) for a, b in zip(iter_frames(out), iter_frames(piece, crop=crop))]
    frames = len(psnrs)
    return {"kbps_target": kbps, "bytes": out.stat().st_size, "psnr_y": float(np.mean(psnrs)), "frames": frames}


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> float | None:
    """Bjøntegaard delta rate of B against A (%, negative = B saves bits), cubic fit in log-rate."""
    if len(rate_a) < 4 or len(rate_b) < 4:
        return None
    la, lb = np.log(rate_a), np.log(rate_b)
    pa, pb = np.polyfit(psnr_a, la, 3), np.polyfit(psnr_b, lb, 3)
    lo, hi = max(min(psnr_a), min(psnr_b)), min(max(psnr_a), max(psnr_b))
    if lo >= hi:
        return None
    ia = np.polyval(np.polyint(pa), hi) - np.polyval(np.polyint(pa), lo)
    ib = np.polyval(np.polyint(pb), hi) - np.polyval(np.polyint(pb), lo)
    return float((np.exp((ib - ia) / (hi - lo)) - 1) * 100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", required=True)
    ap.add_argument("--scales", nargs="+", type=int, default=[2])
    ap.add_argument("--methods", nargs="+", default=["stdo", "jstdo", "dydca"])
    ap.add_argument("--crfs", nargs="+", type=int, default=[23])
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    results = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                           "python": platform.python_version()},
               "preset": args.preset, "k": args.k, "runs": []}
    for spec in args.clips:
        label, piece = clip_piece(spec, work)
        for scale in args.scales:
            for crf in args.crfs:
                for method in args.methods:
                    asset = work / f"{label}_x{scale}_{method}_crf{crf}".replace("@", "_").replace("+", "_")
                    shutil.rmtree(asset, ignore_errors=True)
                    t0 = time.perf_counter()
                    m = encode(piece, asset, EncodeOptions(scale=scale, method=method, k=args.k, crf=crf,
                                                           preset=args.preset), asset_id="bench")
                    wall = time.perf_counter() - t0
                    q = json.loads((asset / "report" / "quality.json").read_text())
                    duration = q["frames"] / m.fps
                    total_bits = sum(q["bits"].values())
                    run = {"clip": label, "scale": scale, "method": method, "crf": crf, "frames": q["frames"],
                           "fps": m.fps,
                           "psnr_y_lanczos": q["psnr_y_lanczos"], "psnr_y_bicubic": q["psnr_y_bicubic"],
                           "psnr_y_sr": q["psnr_y_sr"], "psnr_y_sr_fp32": q.get("psnr_y_sr_fp32"),
                           "ssim_y_lanczos": q["ssim_y_lanczos"], "ssim_y_sr": q["ssim_y_sr"],
                           "bits": q["bits"], "total_kbps": total_bits / duration / 1000,
                           "video_kbps": q["bits"]["video"] / duration / 1000,
                           "encode_seconds": wall, "train_seconds": q["seconds"]["train"],
                           "segments": q["segments"]}
                    if method == args.methods[0]:
                        run["x264_full_res_same_total_bits"] = x264_full_res(
                            piece, work, kbps=run["total_kbps"], crop=tuple(m.crop))
                    results["runs"].append(run)
                    print(json.dumps({k: v for k, v in run.items() if k != "segments"}), flush=True)
                    shutil.rmtree(asset, ignore_errors=True)
        (args.out / "quality.json").write_text(json.dumps(results, indent=2))
    results["bd_rate_vs_full_res_x264"] = _bd_rates(results)
    (args.out / "quality.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["bd_rate_vs_full_res_x264"], indent=2))
    _plots(results, args.out)
    return 0


def _bd_rates(results: dict) -> dict[str, float | None]:
    """Per clip, scale and method: BD-rate of fitcast (total bits) against full-resolution x264."""
    out = {}
    for clip, scale in sorted({(r["clip"], r["scale"]) for r in results["runs"]}):
        runs = [r for r in results["runs"] if r["clip"] == clip and r["scale"] == scale]
        ref = [r["x264_full_res_same_total_bits"] for r in runs if "x264_full_res_same_total_bits" in r]
        ref_rates = [x["bytes"] * 8 / (x["frames"] / runs[0]["fps"]) for x in ref]
        for method in sorted({r["method"] for r in runs}):
            mine = [r for r in runs if r["method"] == method]
            out[f"{clip} x{scale} {method}"] = bd_rate(ref_rates, [x["psnr_y"] for x in ref],
                                                       [r["total_kbps"] * 1000 for r in mine],
                                                       [r["psnr_y_sr"] for r in mine])
    return out


def _plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = sorted({(r["clip"], r["scale"]) for r in results["runs"]})
    fig, axes = plt.subplots(1, len(clips), figsize=(5.5 * len(clips), 4), squeeze=False)
    for ax, (clip, scale) in zip(axes[0], clips):
        runs = [r for r in results["runs"] if r["clip"] == clip and r["scale"] == scale]
        for method in sorted({r["method"] for r in runs}):
            pts = sorted((r["total_kbps"], r["psnr_y_sr"]) for r in runs if r["method"] == method)
            ax.plot(*zip(*pts), "o-", label=f"fitcast {method}")
        pts = sorted((r["video_kbps"], r["psnr_y_lanczos"]) for r in runs if r["method"] == runs[0]["method"])
        ax.plot(*zip(*pts), "s--", label="LR + lanczos")
        x264 = sorted((r["x264_full_res_same_total_bits"]["bytes"] * 8 / (r["frames"] / r["fps"]) / 1000,
                       r["x264_full_res_same_total_bits"]["psnr_y"]) for r in runs if "x264_full_res_same_total_bits" in r)
        if x264:
            ax.plot(*zip(*x264), "^:", label="full-res x264")
        ax.set_title(f"{clip} x{scale}")
        ax.set_xlabel("kbit/s (total)")
        ax.set_ylabel("PSNR-Y (dB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
