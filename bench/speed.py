"""Playback speed benchmark (not part of `make test`): fps of `fitcast play` per
runtime and precision, side by side with lanczos-only playback in the same run.

    python bench/speed.py ASSET_DIR [ASSET_DIR ...] --frames 120 --rounds 3 \
        --out bench/results/speed.json --readme README.md

Each asset is an encoded asset directory (what `fitcast encode -o` writes).
Configurations run round-robin (round 1 of every configuration, then round 2, ...)
so that a noisy neighbour hits them all alike; per configuration the report keeps
the median over rounds of each round's median and 5th-percentile fps.  With
``--readme`` the markdown table replaces the block between the
``<!-- speed:begin -->`` and ``<!-- speed:end -->`` markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from client.player import PlayOptions, play  # noqa: E402
from fitcast.runtime import available_runtimes  # noqa: E402
from fitcast.manifest import Manifest  # noqa: E402


def configurations(manifest: Manifest, runtimes: list[str]) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure, plus ("lanczos", "-") for the baseline."""
    precisions = sorted({entry.precision for entry in manifest.models})
    return [("lanczos", "-")] + [(rt, p) for rt in runtimes for p in precisions]


def run(assets: list[Path], *, frames: int, rounds: int, runtimes: list[str]) -> dict:
    rows = []
    for asset in assets:
        m = Manifest.from_json((asset / "sr" / "manifest.json").read_bytes())
        configs = configurations(m, runtimes)
        samples: dict[tuple[str, str], list[dict]] = {c: [] for c in configs}
        for _ in range(rounds):
            for rt, precision in configs:
                opts = PlayOptions(max_frames=frames, runtime=rt if rt != "lanczos" else "auto",
                                   precision=precision if precision != "-" else "auto", sr=rt != "lanczos")
                samples[(rt, precision)].append(play(str(asset), opts))
        for (rt, precision), reports in samples.items():
            rows.append({
                "asset": asset.name, "method": m.method, "scale": m.scale, "output": f"{m.hr[0]}x{m.hr[1]}",
                "runtime": rt, "precision": precision, "rounds": len(reports),
                "fps_median": float(np.median([r["fps_median"] for r in reports])),
                "fps_p5": float(np.median([r["fps_p5"] for r in reports])),
                "frames": reports[0]["frames"],
            })
    return {"machine": machine(), "frames": frames, "rounds": rounds, "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [f"Measured on {result['machine']}; {result['frames']} frames per run, median of "
             f"{result['rounds']} rounds run side by side (round-robin).", "",
             "| asset | method | scale | output | runtime | precision | fps median | fps p5 | vs lanczos-only |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {r["asset"]: r["fps_median"] for r in result["rows"] if r["runtime"] == "lanczos"}
    for r in result["rows"]:
        ratio = r["fps_median"] / base[r["asset"]] if base.get(r["asset"]) else float("nan")
        rt = "lanczos only" if r["runtime"] == "lanczos" else r["runtime"]
        lines.append(f"| {r['asset']} | {r['method']} | x{r['scale']} | {r['output']} | {rt} | {r['precision']} | "
                     f"{r['fps_median']:.1f} | {r['fps_p5']:.1f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("assets", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", nargs="*", default=None, help="default: every installed runtime")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speed.json")
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    for asset in args.assets:
        if not (asset / "sr" / "manifest.json").is_file():
            ap.error(f"{asset}: not an encoded asset directory (no sr/manifest.json)")
    result = run(args.assets, frames=args.frames, rounds=args.rounds,
                 runtimes=args.runtimes or available_runtimes())
    publish(result, args.out, to_markdown(result), readme=args.readme, block="speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
