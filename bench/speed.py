"""Playback speed benchmark (not part of `make test`): real time, per clip, side by side.

    python bench/speed.py --clips leaf_720p_pyscenedetect.mp4:3:4 goldeneye_1280x544_pyscenedetect.mp4:2:4 \\
        bear_480p_cotracker.mp4:0:2.7 /path/bigbuckbunny.mp4:0:4 /path/bikes.mp4:2:4 \\
        --x4 anime_1080p_pyscenedetect.mkv:0:2 --device-profile p.json --target-fps 30 \\
        --rounds 3 --work /tmp/speed --readme README.md

Each clip piece (NAME:START:DURATION of ``../shared/media``, or a path) is encoded once at the
default preset, planned for ``--target-fps`` on ``--device-profile`` (x2; the ``--x4`` pieces at
x4), and kept in ``--work`` (a rerun reuses it).  Then, round-robin so that a noisy neighbour
hits them all alike, ``fitcast play --headless`` with the piece as reference:

- **lanczos only**: no model (the player's floor);
- **unplanned**: the same models routed by groups, every patch every frame, as fast as it goes;
- **planned**: the plan, paced at ``--target-fps`` with the player's queue;
- with ``--reuse-alone`` (a piece): also that piece planned with no budget to speak of (1 fps):
  what reusing detail alone buys.

Per configuration the medians over rounds of fps (median, p5), dropped frames, the PSNR-Y gain
over lanczos and where each frame's time goes (the main thread: routing, models, stitching; the
feed thread: decode and the base; beside a planned row's main thread, the median the plan
predicted).  The machine and its CPU flags head the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import clip_piece, machine, publish  # noqa: E402
from client.player import PlayOptions, play  # noqa: E402
from fitcast.asset import Fetcher  # noqa: E402
from fitcast.options import EncodeOptions  # noqa: E402
from server.pipeline import encode, replan  # noqa: E402

CONFIGS = ("lanczos only", "unplanned", "planned")


def prepare(spec: str, scale: int, work: Path, *, target_fps: float, profile: Path | None) -> tuple[str, Path, Path]:
    """(label, piece, asset): the piece cut and encoded once (default preset, planned)."""
    label, piece = clip_piece(spec, work, duration=4.0)
    asset = work / f"{label}-x{scale}"
    if not (asset / "report" / "quality.json").is_file():
        print(f"encoding {label} at x{scale} ...", flush=True)
        encode(piece, asset, EncodeOptions(scale=scale, target_fps=target_fps, device_profile=profile))
    return label, piece, asset


def play_once(asset: Path, piece: Path, config: str, target_fps: float, cache: Path) -> dict[str, Any]:
    options = {
        "lanczos only": PlayOptions(reference=piece, sr=False),
        "unplanned": PlayOptions(reference=piece, plan=False),
        "planned": PlayOptions(reference=piece, target_fps=target_fps),
    }[config]
    return play(str(asset), options, fetcher=Fetcher(cache_dir=cache))


def run(pieces: list[tuple[str, Path, Path]], *, rounds: int, target_fps: float, work: Path) -> dict[str, Any]:
    jobs = [(label, piece, asset, config) for label, piece, asset in pieces for config in CONFIGS]
    samples: dict[tuple[str, str], list[dict]] = {(label, config): [] for label, _, _, config in jobs}
    for r in range(rounds):
        for label, piece, asset, config in jobs:
            rep = play_once(asset, piece, config, target_fps, work / "cache")
            samples[(label, config)].append(rep)
            print(f"round {r + 1}: {label} {config}: {rep['fps_median']:.1f} fps, "
                  f"{rep.get('psnr_y_sr', 0) - rep.get('psnr_y_lanczos', 0):+.2f} dB", flush=True)
    rows = []
    for label, _, asset in pieces:
        quality = json.loads((asset / "report" / "quality.json").read_text())
        unplanned_gain = None
        for config in CONFIGS:
            reps = samples[(label, config)]
            gain = float(np.median([r["psnr_y_sr"] - r["psnr_y_lanczos"] for r in reps]))
            if config == "unplanned":
                unplanned_gain = gain
            row = {"clip": label, "scale": quality["scale"], "output": "x".join(map(str, quality["hr"])),
                   "config": config, "rounds": len(reps),
                   "fps_median": float(np.median([r["fps_median"] for r in reps])),
                   "fps_p5": float(np.median([r["fps_p5"] for r in reps])),
                   "dropped": int(np.median([r["dropped_frames"] for r in reps])), "frames": reps[0]["frames"],
                   "gain_db": gain, "main_ms": float(np.median([r.get("main_ms_median", 0) for r in reps])),
                   "feed_ms": float(np.median([r.get("feed_ms_median", 0) for r in reps]))}
            if config == "planned":
                plan = quality["plan"]
                shares = plan["route_shares"]
                row |= {"kept": gain / unplanned_gain if unplanned_gain and unplanned_gain > 0 else None,
                        "reuse_share": shares.get("reuse", 0.0), "moved_share": shares.get("reuse-moved", 0.0),
                        "model_share": 1.0 - shares.get("reuse", 0.0) - shares.get("lanczos", 0.0),
                        "predicted_ms": plan["predicted_ms"]["median"],
                        "shed_share": float(np.median([r.get("shed", {}).get("share", 0.0) for r in reps]))}
            rows.append(row)
    return {"machine": machine(), "rounds": rounds, "target_fps": target_fps, "rows": rows}


def reuse_alone(spec: str, work: Path, *, profile: Path | None, rounds: int) -> dict[str, Any]:
    """A piece planned with a budget that binds nothing (1 fps): what reusing detail alone gives,
    against the unplanned default of the same models."""
    label, piece, asset = prepare(spec, 2, work, target_fps=30.0, profile=profile)
    free = work / f"{label}-x2-no-budget"
    if not (free / "report" / "quality.json").is_file():
        import shutil

        shutil.copytree(asset, free)
        replan(piece, free, target_fps=1.0, device_profile=profile)
    fps_u, fps_r, gain_u, gain_r = [], [], [], []
    for _ in range(rounds):
        u = play(str(free), PlayOptions(reference=piece, plan=False), fetcher=Fetcher(cache_dir=work / "cache"))
        r = play(str(free), PlayOptions(reference=piece), fetcher=Fetcher(cache_dir=work / "cache"))
        fps_u.append(u["fps_median"])
        fps_r.append(r["fps_median"])
        gain_u.append(u["psnr_y_sr"] - u["psnr_y_lanczos"])
        gain_r.append(r["psnr_y_sr"] - r["psnr_y_lanczos"])
    shares = json.loads((free / "report" / "quality.json").read_text())["plan"]["route_shares"]
    return {"clip": label, "fps_unplanned": float(np.median(fps_u)), "fps_reuse": float(np.median(fps_r)),
            "gain_unplanned_db": float(np.median(gain_u)), "gain_reuse_db": float(np.median(gain_r)),
            "reuse_share": shares.get("reuse", 0.0)}


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"Measured on {result['machine']}; median of {result['rounds']} rounds run side by side "
             f"(round-robin); planned for and paced at {result['target_fps']:g} fps.", "",
             "| clip | scale | output | player | fps median | fps p5 | dropped | gain over lanczos | of unplanned gain "
             "| reuse / moved / model patches | model windows shed | main ms (predicted) | feed ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        kept = f"{100 * r['kept']:.0f} %" if r.get("kept") is not None else ""
        shares = (f"{100 * r['reuse_share']:.0f} / {100 * r['moved_share']:.0f} / {100 * r['model_share']:.0f} %"
                  if "reuse_share" in r else "")
        gain = "" if r["config"] == "lanczos only" else f"{r['gain_db']:+.2f} dB"
        main = f"{r['main_ms']:.1f}" + (f" ({r['predicted_ms']:.1f})" if "predicted_ms" in r else "")
        shed = f"{100 * r['shed_share']:.0f} %" if "shed_share" in r else ""
        lines.append(f"| {r['clip']} | x{r['scale']} | {r['output']} | {r['config']} | {r['fps_median']:.1f} | "
                     f"{r['fps_p5']:.1f} | {r['dropped']} of {r['frames']} | {gain} | {kept} | {shares} | {shed} | "
                     f"{main} | {r['feed_ms']:.1f} |")
    alone = result.get("reuse_alone")
    if alone:
        lines += ["", f"Reuse alone ({alone['clip']}, planned with a budget that binds nothing): "
                      f"{alone['fps_reuse']:.1f} fps against {alone['fps_unplanned']:.1f} unplanned "
                      f"({alone['fps_reuse'] / alone['fps_unplanned']:.1f}x), {alone['gain_reuse_db']:+.2f} dB against "
                      f"{alone['gain_unplanned_db']:+.2f} dB, {100 * alone['reuse_share']:.0f} % of the patches "
                      "reused."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=[], help="NAME:START:DURATION pieces played at x2")
    ap.add_argument("--x4", nargs="*", default=[], help="pieces played at x4")
    ap.add_argument("--reuse-alone", default=None, help="a piece also planned with no binding budget")
    ap.add_argument("--device-profile", type=Path, default=None, help="default: the shipped reference")
    ap.add_argument("--target-fps", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fitcast-speed"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "speed.json")
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    pieces = [prepare(spec, scale, args.work, target_fps=args.target_fps, profile=args.device_profile)
              for specs, scale in ((args.clips, 2), (args.x4, 4)) for spec in specs]
    result = run(pieces, rounds=args.rounds, target_fps=args.target_fps, work=args.work)
    if args.reuse_alone:
        result["reuse_alone"] = reuse_alone(args.reuse_alone, args.work, profile=args.device_profile,
                                            rounds=args.rounds)
    publish(result, args.out, to_markdown(result), readme=args.readme, block="speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
