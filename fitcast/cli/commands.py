"""The ``fitcast`` commands: each parses nothing itself and imports what it needs inside, so
``fitcast play`` never loads torch and ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fitcast.errors import InvalidInputError
from fitcast.options import EncodeOptions


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

    last: dict[str, str | None] = {"stage": None}

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
    from fitcast.media import probe
    from fitcast.storage import check_asset_dir
    from sr_models.recipes import recipe_for

    options = EncodeOptions.parse(
        scale=args.scale, method=args.method or ("jstdo" if args.arch else None), k=args.k, crf=args.crf,
        segment_seconds=args.segment_seconds, preset=args.preset, iterations=args.iterations,
        encode_budget=args.encode_budget, group_weights=args.group_weights, int8=args.int8,
        train_device=args.train_device, warm_start=args.warm_start,
        weight_bits=None if args.weight_bits == "auto" else int(args.weight_bits),
        target_fps=args.target_fps, device_profile=args.device_profile, plan_queue=args.plan_queue, base=args.base,
        plan_headroom=args.plan_headroom, ladder=args.ladder, **_searched_arch(args.arch),
    )
    recipe_for(options)  # refuse what the method cannot serve before anything runs
    # an unreadable source or a folder that is not fitcast's is one line at once, before the training stack loads
    probe(args.input)
    check_asset_dir(args.output)
    bar, update = _progress_printer("encode", args.quiet)
    if options.ladder:
        return _encode_ladder(args, options, bar, update)
    from server.pipeline import encode

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


def _encode_ladder(args: argparse.Namespace, options: EncodeOptions, bar: Any, update: Any) -> int:
    from fitcast.ladder import parse_rungs
    from server.ladder import encode_ladder

    parse_rungs(options.ladder or "")  # one line for a bad spec, before anything runs
    with bar if bar is not None else _nothing():
        ladder = encode_ladder(args.input, args.output, options, progress=update)
    print(f"encoded a ladder of {len(ladder.rungs)} rungs -> {args.output / 'hls' / 'master.m3u8'}")
    for r in ladder.rungs:
        gain = f" (lanczos {r.psnr_y_lanczos:.2f})" if r.psnr_y_lanczos is not None else ""
        print(f"  {r.name}: {r.width}x{r.height} CRF {r.crf}, {r.kbps:.0f} kbit/s in all "
              f"({r.bits.models / 1000:.0f} kbit of models), PSNR-Y {r.psnr_y:.2f} dB{gain}")
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


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def cmd_serve(args: argparse.Namespace) -> int:
    from fitcast.config import Settings
    from server.app import serve

    overrides = {k: v for k, v in {"root": args.root, "host": args.host, "port": args.port}.items() if v is not None}
    serve(Settings(**overrides))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import datetime

    from fitcast.config import Settings
    from server.keys import KeyStore

    settings = Settings(**({"root": args.root} if args.root is not None else {}))
    if not settings.root.is_dir() and args.keys_command != "create":
        raise InvalidInputError(f"{settings.root} is not a fitcast store (no such directory)")
    store = KeyStore(settings.db_path)
    if args.keys_command == "create":
        if not args.name.strip() or len(args.name) > 200:
            raise InvalidInputError("a key's name must be 1 to 200 characters")
        key, text = store.create(args.name.strip(), args.scope)
        print(text)
        print(f"key {key.id} ({key.scope}) for {key.name!r}: keep it; it is not shown again", file=sys.stderr)
        return 0
    if args.keys_command == "revoke":
        if not store.revoke(args.key_id):
            raise InvalidInputError(f"no active key {args.key_id!r}")
        print(f"revoked {args.key_id}")
        return 0

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")

    for key in store.list():
        print(f"{key.id}  {key.scope:<5}  created {when(key.created)}  revoked {when(key.revoked)}  {key.name}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from client.player import PlayOptions, play

    options = PlayOptions(
        reference=args.reference, headless=args.headless, out=args.out, runtime=args.runtime, precision=args.precision,
        report=args.report, max_frames=args.max_frames, target_fps=args.target_fps, queue=args.queue, plan=args.plan,
        start_segment=args.start_segment,
    )
    from client.ladder_player import ladder_location

    if args.bandwidth is not None or args.bandwidth_trace is not None or args.rung is not None \
            or ladder_location(args.location, _fetcher()) is not None:
        return _play_ladder(args, options)
    bar, update = _progress_printer("play", quiet=not sys.stderr.isatty())  # a bar on a terminal only
    with bar if bar is not None else _nothing():
        r = play(args.location, options,
                 on_frame=None if update is None else lambda done, total: update("frames", done / max(total, 1)))
    line = f"played {r['frames']} frames at {r['output_size'][0]}x{r['output_size'][1]} " \
           f"({r['runtime']} {r['precision']}): " \
           f"fps median {r['fps_median']:.1f}, p5 {r['fps_p5']:.1f}"
    if args.target_fps:  # what the safety net gave up: a planned asset's shed windows, else degradations
        shed = r.get("shed")
        given_up = (f"{shed['windows']} of {shed['planned_windows']} planned model windows shed" if shed
                    else f"{len(r['degradations'])} degradations")
        line += f" (target {args.target_fps:g}: {r['dropped_frames']} dropped, {given_up})"
    print(line)
    if "psnr_y_sr" in r:
        print(f"PSNR-Y: fitcast {r['psnr_y_sr']:.2f} dB, lanczos {r['psnr_y_lanczos']:.2f} dB "
              f"({r['psnr_y_sr'] - r['psnr_y_lanczos']:+.2f} dB)")
    return 0


def _fetcher() -> Any:
    from fitcast.asset import Fetcher

    return Fetcher()


def _play_ladder(args: argparse.Namespace, options: Any) -> int:
    from client.abr import BandwidthTrace
    from client.ladder_player import AbrOptions, play_ladder

    if args.bandwidth is not None and args.bandwidth_trace is not None:
        raise InvalidInputError("--bandwidth and --bandwidth-trace: one or the other")
    if args.target_fps or args.out or args.start_segment or not args.headless:
        raise InvalidInputError("a ladder plays headless, from its first segment, without --out or --target-fps "
                                "(play one rung's folder for those: rungs/<name>)")
    trace = BandwidthTrace.from_file(args.bandwidth_trace) if args.bandwidth_trace is not None else \
        BandwidthTrace.constant(args.bandwidth) if args.bandwidth is not None else None
    r = play_ladder(args.location, options, AbrOptions(trace=trace, rung=args.rung))
    print(f"played {r['frames']} frames at {r['output_size'][0]}x{r['output_size'][1]} over {len(r['rungs'])} "
          f"segments: rungs {' '.join(r['rungs'])} ({r['switches']} switches), start-up {r['startup_s']:.2f} s, "
          f"stalled {r['stall_s']:.2f} s in {r['stalls']} stalls, {r['kbits_fetched']:.0f} kbit fetched")
    line = f"delivered PSNR-Y {r['psnr_y']:.2f} dB (the ladder states {r['psnr_y_stated']:.2f})" if "psnr_y" in r \
        else f"the ladder states PSNR-Y {r['psnr_y_stated']:.2f} dB for these rungs"
    print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mobile.export import PARITY_DB, export_asset

    bar, update = _progress_printer("export", quiet=not sys.stderr.isatty())
    with bar if bar is not None else _nothing():
        report = export_asset(args.location, args.output, batch=args.batch,
                              formats=tuple(f for f in args.formats.split(",") if f),
                              precisions=tuple(p for p in args.precisions.split(",") if p), progress=update)
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
    from fitcast.profile import load_profile
    from fitcast.storage import atomic_write_text
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "doctor": cmd_doctor, "encode": cmd_encode, "replan": cmd_replan, "serve": cmd_serve, "play": cmd_play,
    "export": cmd_export, "profile-device": cmd_profile_device, "nas": cmd_nas, "keys": cmd_keys,
}
