"""The ``fitcast`` command line (DESIGN §7).

Heavy modules are imported inside each command, so ``fitcast play`` never loads
torch and ``--help`` is instant.  Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from fitcast.errors import FitcastError, InvalidInputError
from fitcast.options import METHOD_HELP, METHODS, PRESET_NAMES, EncodeOptions
from fitcast.runtime import RUNTIMES


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fitcast", description="Neural-enhanced video delivery.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = sub.add_parser("encode", help="encode a video into an asset directory (HLS + SR models)")
    enc.add_argument("input", type=Path)
    enc.add_argument("-o", "--output", type=Path, required=True, help="asset directory to write")
    enc.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor")
    enc.add_argument("--method", choices=METHODS, default=None,
                     help="; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items()) + " (with --arch: jstdo)")
    enc.add_argument("--k", type=int, default=2, help="number of difficulty groups")
    enc.add_argument("--crf", type=int, default=23, help="x264 CRF of the LR rendition")
    enc.add_argument("--segment-seconds", type=_positive_float, default=2.0, help="HLS segment length")
    enc.add_argument("--preset", choices=PRESET_NAMES, default="balanced",
                     help="model size and training budget (realtime: small enough to play at 720p on a weak CPU)")
    enc.add_argument("--iterations", type=int, default=None, help="override the preset's training iterations")
    enc.add_argument("--group-weights", type=_weights, default=None,
                     help="jstdo: sampling weight of each group, hardest first (e.g. 2,1)")
    enc.add_argument("--train-device", default="auto",
                     help="where models train: auto (a GPU when torch sees one), cpu or cuda")
    enc.add_argument("--arch", type=Path, default=None,
                     help="an architecture file from `fitcast nas` (its network and patch size replace the preset's)")
    enc.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                     help="stdo/jstdo: start training from the shipped generic model (default: when the "
                          "preset's network is the generic one, i.e. balanced at x2 and x4)")
    enc.add_argument("--no-int8", dest="int8", action="store_false", help="ship fp32 models only")
    enc.add_argument("--target-fps", type=float, default=None,
                     help="plan every frame's routes to play at this rate on the device of --device-profile "
                          "(default: the source's frame rate; 0: no plan, an unplanned fitcast/1 asset)")
    enc.add_argument("--device-profile", type=Path, default=None,
                     help="the device to plan for (`fitcast profile-device`; default: the shipped reference, "
                          "a 2-core x86 with OpenVINO int8)")
    enc.add_argument("--plan-queue", type=int, default=8, help="frames the planned player renders ahead")
    enc.add_argument("--base", choices=("auto", "lanczos", "bicubic"), default="auto",
                     help="the upscale the models' residuals go on (auto: lanczos, unless the planned device would "
                          "spend over half of each frame on the lanczos base)")
    enc.add_argument("--plan-headroom", type=float, default=0.15,
                     help="share of each frame's interval the plan leaves for what predictions miss")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = sub.add_parser("replan", help="plan an encoded asset again for another device or rate (no training)")
    rep.add_argument("asset", type=Path, help="the asset directory (`fitcast encode -o`)")
    rep.add_argument("--source", type=Path, required=True, help="the video the asset was encoded from")
    rep.add_argument("--target-fps", type=_positive_float, default=None, help="default: the source's frame rate")
    rep.add_argument("--device-profile", type=Path, default=None, help="default: the shipped reference device")
    rep.add_argument("--plan-queue", type=int, default=8, help="frames the planned player renders ahead")
    rep.add_argument("--plan-headroom", type=float, default=0.15,
                     help="share of each frame's interval the plan leaves for what predictions miss")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    srv = sub.add_parser("serve", help="run the HTTP service over an asset store")
    srv.add_argument("--root", type=Path, default=None, help="store directory (default: $FITCAST_ROOT or ./fitcast-data)")
    srv.add_argument("--host", default=None)
    srv.add_argument("--port", type=int, default=None)

    ply = sub.add_parser("play", help="play an asset (URL or directory), print fps and PSNR")
    ply.add_argument("location", help="asset directory, manifest URL, master.m3u8 URL or asset URL")
    ply.add_argument("--reference", type=Path, default=None, help="the original video, for PSNR")
    ply.add_argument("--headless", action="store_true", help="no window")
    ply.add_argument("--out", type=Path, default=None, help="write the upscaled video (MP4)")
    ply.add_argument("--runtime", default="auto", choices=RUNTIMES,
                     help="inference runtime; auto: OpenVINO when installed, else ONNX Runtime")
    ply.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"),
                     help="model precision (auto: int8 where shipped)")
    ply.add_argument("--report", type=Path, default=None, help="write the playback report (JSON)")
    ply.add_argument("--max-frames", type=int, default=None)
    ply.add_argument("--target-fps", type=_positive_float, default=None,
                     help="real-time target: frames are due at this rate, at most --queue frames are rendered "
                          "ahead, and the player degrades instead of falling behind")
    ply.add_argument("--queue", type=int, default=8, help="frames rendered ahead of the screen (with --target-fps)")
    ply.add_argument("--start-segment", type=int, default=0, help="seek: start at this segment")
    ply.add_argument("--no-plan", dest="plan", action="store_false",
                     help="play a planned asset without its plan (every patch by its group: the unplanned quality)")

    exp = sub.add_parser("export", help="export an asset's models for phones (ONNX and ExecuTorch .pte, checked)")
    exp.add_argument("location", help="asset directory or URL")
    exp.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to write")
    exp.add_argument("--batch", type=int, default=16, help="static patch batch of the .pte programs")
    exp.add_argument("--formats", default="onnx,pte", help="comma-separated: onnx, pte")
    exp.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8")

    prof = sub.add_parser("profile-device", help="measure latencies on this machine's runtime; write a device profile")
    prof.add_argument("bundle", type=Path, nargs="?", default=None,
                      help="a phone bundle (`fitcast export`) to time its models; without it, the search's "
                           "candidate layers and networks are timed")
    prof.add_argument("-o", "--output", type=Path, default=Path("device-profile.json"))
    prof.add_argument("--runs", type=int, default=None, help="timed runs per measurement")
    prof.add_argument("--scale", type=int, choices=(2, 3, 4), default=2)
    prof.add_argument("--output-size", type=_size, default=(1280, 720), help="upscaled frame size, WxH")
    prof.add_argument("--patch", type=int, default=64, help="LR patch side of the encodes to come")
    prof.add_argument("--runtime", default="auto", choices=RUNTIMES)
    prof.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    prof.add_argument("--plan-scales", default="2", help="comma-separated scales whose plan costs (what the "
                      "encoder's planner predicts frames with) are measured too; empty for none")

    nas = sub.add_parser("nas", help="search depth and per-layer width for a latency budget on a profiled device")
    nas.add_argument("--device-profile", type=Path, required=True)
    nas.add_argument("--input", type=Path, required=True, help="the clip whose patches the candidates train on")
    nas.add_argument("--target-fps", type=_positive_float, required=True)
    nas.add_argument("--scale", type=int, choices=(2, 3, 4), default=None, help="must match the profile's")
    nas.add_argument("--output-size", type=_size, default=None, help="must match the profile's, WxH")
    nas.add_argument("--proxy-iterations", type=int, default=300)
    nas.add_argument("--headroom", type=float, default=0.25,
                     help="plan this share below the frame interval (profile times are best-of-runs)")
    nas.add_argument("--no-compare", dest="compare", action="store_false",
                     help="skip training hand-designed ESPCN/FSRCNN-like networks of the same measured budget")
    nas.add_argument("-o", "--output", type=Path, default=Path("arch.json"))

    doc = sub.add_parser("doctor", help="this machine, what fitcast detected, and what each command will use and why")
    doc.add_argument("--json", action="store_true", help="print the report as JSON")
    doc.add_argument("--no-measure", dest="measure", action="store_false",
                     help="report cached measurements only (the first run measures training layout and "
                          "runtime speed: a few seconds, then cached per machine)")
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, not {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"{text} is too small")
    return w, h


def _progress_printer(label: str, quiet: bool):
    """A rich progress bar on a terminal, sparse lines otherwise."""
    if quiet:
        return None, None
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                       TimeElapsedColumn(), transient=False)
        task = bar.add_task(label, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{label}: {stage}")

        return bar, update

    last = {"stage": None}

    def update_plain(stage: str, fraction: float) -> None:
        if stage != last["stage"]:
            print(f"{label}: {stage} ({fraction:.0%})", file=sys.stderr, flush=True)
            last["stage"] = stage

    return None, update_plain


def _searched_arch(path: Path | None) -> dict:
    if path is None:
        return {}

    try:
        doc = json.loads(path.read_text())
        return {"arch": doc["arch"], "patch": int(doc["patch"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path}: not an architecture file from `fitcast nas` ({exc})") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from server.pipeline import encode
    from sr_models.recipes import recipe_for

    options = EncodeOptions.parse(
        scale=args.scale, method=args.method or ("jstdo" if args.arch else None), k=args.k, crf=args.crf,
        segment_seconds=args.segment_seconds, preset=args.preset, iterations=args.iterations,
        group_weights=args.group_weights, int8=args.int8, train_device=args.train_device, warm_start=args.warm_start,
        target_fps=args.target_fps, device_profile=args.device_profile, plan_queue=args.plan_queue, base=args.base,
        plan_headroom=args.plan_headroom, **_searched_arch(args.arch),
    )
    recipe_for(options)  # refuse what the method cannot serve before anything runs
    bar, update = _progress_printer("encode", args.quiet)
    with bar if bar is not None else _nothing():
        encode(args.input, args.output, options, progress=update)
    report = json.loads((args.output / "report" / "quality.json").read_text())
    print(
        f"encoded {report['frames']} frames in {report['seconds']['total']:.0f} s: "
        f"PSNR-Y lanczos {report['psnr_y_lanczos']:.2f} dB, fitcast {report['psnr_y_sr']:.2f} dB "
        f"(+{report['psnr_y_sr'] - report['psnr_y_lanczos']:.2f}) -> {args.output}"
    )
    _print_plan(report)
    return 0


def cmd_replan(args: argparse.Namespace) -> int:
    from server.pipeline import replan

    bar, update = _progress_printer("replan", args.quiet)
    with bar if bar is not None else _nothing():
        replan(args.source, args.asset, target_fps=args.target_fps, device_profile=args.device_profile,
               queue=args.plan_queue, headroom=args.plan_headroom, progress=update)
    _print_plan(json.loads((args.asset / "report" / "quality.json").read_text()))
    return 0


def _print_plan(report: dict) -> None:
    if "plan" in report:
        p = report["plan"]
        print(f"planned for {p['target_fps']:.3g} fps on {p['device']}: {p['psnr_y_planned']:.2f} dB "
              f"({p['gain_planned_db']:+.2f}, {100 * (p['gain_kept'] or 0):.0f} % of the unplanned gain), "
              f"predicted {p['predicted_ms']['median']:.1f} ms a frame (p95 {p['predicted_ms']['p95']:.1f})")


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fitcast.config import Settings
    from server.app import create_app

    overrides = {k: v for k, v in {"root": args.root, "host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from client.player import PlayOptions, play

    options = PlayOptions(
        reference=args.reference, headless=args.headless, out=args.out, runtime=args.runtime, precision=args.precision,
        report=args.report, max_frames=args.max_frames, target_fps=args.target_fps, queue=args.queue, plan=args.plan,
        start_segment=args.start_segment,
    )
    r = play(args.location, options)
    line = f"played {r['frames']} frames at {r['output_size'][0]}x{r['output_size'][1]} ({r['runtime']} {r['precision']}): " \
           f"fps median {r['fps_median']:.1f}, p5 {r['fps_p5']:.1f}"
    if args.target_fps:
        line += f" (target {args.target_fps:g}: {r['dropped_frames']} dropped, {len(r['degradations'])} degradations)"
    print(line)
    if "psnr_y_sr" in r:
        print(f"PSNR-Y: fitcast {r['psnr_y_sr']:.2f} dB, lanczos {r['psnr_y_lanczos']:.2f} dB "
              f"({r['psnr_y_sr'] - r['psnr_y_lanczos']:+.2f} dB)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mobile.export import PARITY_DB, export_asset

    report = export_asset(args.location, args.output, batch=args.batch,
                          formats=tuple(f for f in args.formats.split(",") if f),
                          precisions=tuple(p for p in args.precisions.split(",") if p))
    for f in report.files:
        outside = f", outside XNNPACK: {', '.join(f.outside_delegate)}" if f.outside_delegate else ""
        mark = "ok" if f.parity_db >= PARITY_DB[f.precision] else "FAILED"
        print(f"{f.file}: {f.bytes} bytes, parity {f.parity_db:.1f} dB ({mark}){outside}")
    if not report.ok:
        print("fitcast: error: a file failed its parity check (see bundle.json)", file=sys.stderr)
        return 1
    print(f"bundle written to {args.output} (batch {report.batch}, window {report.window})")
    return 0


def cmd_profile_device(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        from mobile.benchmark import main as benchmark_main

        return benchmark_main([str(args.bundle), "-o", str(args.output), "--runs", str(args.runs or 30)])
    from nas.predictor import mean_holdout_mape
    from nas.profile import MAX_DEPTH, Target, profile_device

    target = Target(scale=args.scale, output=args.output_size, patch=args.patch, halo=MAX_DEPTH + 2)
    try:
        plan_scales = tuple(sorted({int(v) for v in args.plan_scales.split(",") if v.strip()}))
    except ValueError:
        raise InvalidInputError(f"--plan-scales takes comma-separated scales, not {args.plan_scales!r}") from None
    if set(plan_scales) - {2, 3, 4}:
        raise InvalidInputError(f"plan scales must be 2, 3 or 4, not {args.plan_scales}")
    profile = profile_device(target, runtime=args.runtime, precision=args.precision, runs=args.runs or 10,
                             plan_scales=plan_scales, progress=lambda msg: print(f"profile: {msg}", flush=True))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from fitcast.storage import atomic_write_text

    atomic_write_text(args.output, json.dumps(profile, indent=2))
    print(f"{profile['device']}, {profile['runtime']} {profile['precision']}: {len(profile['layers'])} layers, "
          f"{len(profile['networks'])} networks, player overhead {profile['overhead_ms']:.1f} ms a frame at "
          f"{args.output_size[0]}x{args.output_size[1]}; predictor error on held-out networks "
          f"{mean_holdout_mape(profile):.1f} % (mean of 6 splits) -> {args.output}")
    return 0


def cmd_nas(args: argparse.Namespace) -> int:
    from fitcast.storage import atomic_write_text
    from fitcast.profile import load_profile
    from nas.search import search

    profile = load_profile(args.device_profile)
    target = profile["target"]
    if args.scale is not None and args.scale != target["scale"]:
        raise InvalidInputError(f"the profile is for x{target['scale']}, not x{args.scale}: profile again")
    if args.output_size is not None and list(args.output_size) != list(target["output"]):
        raise InvalidInputError(f"the profile is for {target['output'][0]}x{target['output'][1]} output: profile again")
    result = search(profile, args.input, target_fps=args.target_fps, proxy_iterations=args.proxy_iterations,
                    compare=args.compare, headroom=args.headroom, progress=lambda msg: print(f"nas: {msg}", flush=True))
    atomic_write_text(args.output, json.dumps(result.to_dict(), indent=2))
    c = result.chosen
    print(f"chosen widths {c.widths} ({c.macs_per_lr_px} MACs per LR pixel): predicted {c.predicted_fps:.1f} fps "
          f"for {args.target_fps:g} (predictor error {result.predictor_mape:.1f} %), held-out gain "
          f"{c.held_out_gain_db:+.2f} dB -> {args.output}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from fitcast.cli.doctor import diagnose, render

    report = diagnose(measure=args.measure)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


COMMANDS = {"doctor": cmd_doctor, "encode": cmd_encode, "replan": cmd_replan, "serve": cmd_serve, "play": cmd_play, "export": cmd_export,
            "profile-device": cmd_profile_device, "nas": cmd_nas}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FitcastError as exc:
        print(f"fitcast: error: {exc}", file=sys.stderr)
        return 2 if exc.status < 500 else 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"fitcast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fitcast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
