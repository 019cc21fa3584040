"""The parser of the ``fitcast`` command line: every command and option, with help and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from fitcast import __version__
from fitcast.options import METHOD_HELP, METHODS, PRESET_NAMES
from fitcast.runtime import RUNTIMES

EXAMPLES = """quickstart:
  fitcast encode my-video.mp4 -o my-asset      # LR HLS + overfitted models, planned for 30 fps on a 2-core x86
  fitcast serve --root store                   # the HTTP service and web page on http://127.0.0.1:8000
  fitcast play my-asset --headless             # play it, print fps (and PSNR with --reference)"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; a default shown after an option's help where it has a real one.

    Flags (``--quiet``, ``--no-int8``) and options whose default depends on something else (their
    help says what, with "default:") show no extra default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        if ("default" in help or action.default in (None, argparse.SUPPRESS)
                or action.nargs == 0 or not action.option_strings):
            return help
        return help + " (default: %(default)s)"


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fitcast", description="Neural-enhanced video delivery: a low-resolution "
                                     "stream plus tiny super-resolution models overfitted to it.",
                                     epilog=EXAMPLES, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"fitcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, examples: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=examples or None, formatter_class=_Formatter)

    enc = command("encode", "encode a video into an asset directory (HLS + SR models)",
                  "examples:\n  fitcast encode talk.mp4 -o talk\n  fitcast encode film.mkv -o film --scale 4 "
                  "--target-fps 30 --device-profile phone.json\n  fitcast encode clip.mp4 -o clip --target-fps 0  "
                  "# no plan: every patch, every frame")
    enc.add_argument("input", type=Path, help="the video to encode")
    enc.add_argument("-o", "--output", type=Path, required=True, help="asset directory to write")
    enc.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor")
    enc.add_argument("--method", choices=METHODS, default=None,
                     help="; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items())
                     + " (default: dydca; with --arch: jstdo)")
    enc.add_argument("--k", type=int, default=2, help="number of difficulty groups")
    enc.add_argument("--crf", type=int, default=23, help="x264 CRF of the LR rendition")
    enc.add_argument("--segment-seconds", type=_positive_float, default=2.0, help="HLS segment length")
    enc.add_argument("--preset", choices=PRESET_NAMES, default="balanced",
                     help="model size and training budget (realtime: small enough to play at 720p on a weak CPU)")
    enc.add_argument("--iterations", type=int, default=None, help="override the preset's training iterations")
    enc.add_argument("--encode-budget", type=float, default=None, metavar="SECONDS",
                     help="encode seconds per second of source, per second of 720p30 above that size (default 60): "
                          "without --iterations, training grows with the length only while it takes at most half "
                          "of this on this machine; 0: no limit")
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
    enc.add_argument("--weight-bits", choices=("auto", "3", "4", "5", "6", "7"), default="auto",
                     help="bits per shipped weight (auto: per model, the bits worth their rate, weighing its gain "
                          "against its bytes beside the video; 7: the int8 export's own grid)")
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
    enc.add_argument("--ladder", default=None, metavar="RUNGS",
                     help="an ABR ladder in one HLS master instead of one rendition: auto (x4, x2 and full "
                          "resolution, each rung's rate chosen on the clip's per-title hull) or rungs like "
                          "x4:32,x2:27,x1:23 (scale:CRF)")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = command("replan", "plan an encoded asset again for another device or rate (no training)")
    rep.add_argument("asset", type=Path, help="the asset directory (`fitcast encode -o`)")
    rep.add_argument("--source", type=Path, required=True, help="the video the asset was encoded from")
    rep.add_argument("--target-fps", type=_positive_float, default=None, help="default: the source's frame rate")
    rep.add_argument("--device-profile", type=Path, default=None, help="default: the shipped reference device")
    rep.add_argument("--plan-queue", type=int, default=8, help="frames the planned player renders ahead")
    rep.add_argument("--plan-headroom", type=float, default=0.15,
                     help="share of each frame's interval the plan leaves for what predictions miss")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    srv = command("serve", "run the HTTP service over an asset store")
    srv.add_argument("--root", type=Path, default=None,
                     help="store directory (default: $FITCAST_ROOT or ./fitcast-data)")
    srv.add_argument("--host", default=None, help="address to listen on (default: $FITCAST_HOST or 127.0.0.1)")
    srv.add_argument("--port", type=int, default=None, help="port (default: $FITCAST_PORT or 8000)")

    ply = command("play", "play an asset (URL or directory), print fps and PSNR",
                  "examples:\n  fitcast play talk --headless --reference talk.mp4\n"
                  "  fitcast play http://127.0.0.1:8000/v1/assets/a1b2c3 --target-fps 30\n"
                  "  fitcast play talk --out talk-upscaled.mp4")
    ply.add_argument("location", help="asset directory, manifest URL, master.m3u8 URL or asset URL")
    ply.add_argument("--reference", type=Path, default=None, help="the original video, for PSNR")
    ply.add_argument("--headless", action="store_true", help="no window")
    ply.add_argument("--out", type=Path, default=None, help="write the upscaled video (MP4)")
    ply.add_argument("--runtime", default="auto", choices=RUNTIMES,
                     help="inference runtime; auto: OpenVINO when installed, else ONNX Runtime")
    ply.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"),
                     help="model precision (auto: int8 where shipped)")
    ply.add_argument("--report", type=Path, default=None, help="write the playback report (JSON)")
    ply.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    ply.add_argument("--target-fps", type=_positive_float, default=None,
                     help="real-time target: frames are due at this rate, at most --queue frames are rendered "
                          "ahead, and the player degrades instead of falling behind")
    ply.add_argument("--queue", type=int, default=8, help="frames rendered ahead of the screen (with --target-fps)")
    ply.add_argument("--start-segment", type=int, default=0, help="seek: start at this segment")
    ply.add_argument("--bandwidth", type=_positive_float, default=None, metavar="KBPS",
                     help="a ladder: play over a network of this many kbit/s (the rung per segment chosen by ABR)")
    ply.add_argument("--bandwidth-trace", type=Path, default=None, metavar="FILE",
                     help="a ladder: play over this network (kbit/s per second, one value each; the last holds)")
    ply.add_argument("--rung", default=None, help="a ladder: play this rung only (x4, x2, x1)")
    ply.add_argument("--no-plan", dest="plan", action="store_false",
                     help="play a planned asset without its plan (every patch by its group: the unplanned quality)")

    exp = command("export", "export an asset's models for phones (ONNX and ExecuTorch .pte, checked)")
    exp.add_argument("location", help="asset directory or URL")
    exp.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to write")
    exp.add_argument("--batch", type=int, default=16, help="static patch batch of the .pte programs")
    exp.add_argument("--formats", default="onnx,pte", help="comma-separated: onnx, pte")
    exp.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8")

    prof = command("profile-device", "measure latencies on this machine's runtime; write a device profile")
    prof.add_argument("bundle", type=Path, nargs="?", default=None,
                      help="a phone bundle (`fitcast export`) to time its models; without it, the search's "
                           "candidate layers and networks are timed")
    prof.add_argument("-o", "--output", type=Path, default=Path("device-profile.json"), help="the profile to write")
    prof.add_argument("--runs", type=int, default=None, help="timed runs per measurement")
    prof.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor the search will target")
    prof.add_argument("--output-size", type=_size, default=(1280, 720), help="upscaled frame size, WxH")
    prof.add_argument("--patch", type=int, default=64, help="LR patch side of the encodes to come")
    prof.add_argument("--runtime", default="auto", choices=RUNTIMES, help="inference runtime to time")
    prof.add_argument("--precision", default="int8", choices=("int8", "fp32"), help="model precision to time")
    prof.add_argument("--plan-scales", default="2", help="comma-separated scales whose plan costs (what the "
                      "encoder's planner predicts frames with) are measured too; empty for none")

    nas = command("nas", "search depth and per-layer width for a latency budget on a profiled device")
    nas.add_argument("--device-profile", type=Path, required=True, help="from `fitcast profile-device`")
    nas.add_argument("--input", type=Path, required=True, help="the clip whose patches the candidates train on")
    nas.add_argument("--target-fps", type=_positive_float, required=True, help="the frame rate to fit")
    nas.add_argument("--scale", type=int, choices=(2, 3, 4), default=None, help="must match the profile's")
    nas.add_argument("--output-size", type=_size, default=None, help="must match the profile's, WxH")
    nas.add_argument("--proxy-iterations", type=int, default=300, help="training iterations of each candidate")
    nas.add_argument("--headroom", type=float, default=0.25,
                     help="plan this share below the frame interval (profile times are best-of-runs)")
    nas.add_argument("--no-compare", dest="compare", action="store_false",
                     help="skip training hand-designed ESPCN/FSRCNN-like networks of the same measured budget")
    nas.add_argument("-o", "--output", type=Path, default=Path("arch.json"), help="the architecture file to write")

    keys = command("keys", "API keys of a service's store: who may call it, whose assets are whose",
                   "examples:\n  fitcast keys create alice --root /srv/fitcast\n"
                   "  fitcast keys list --root /srv/fitcast\n  fitcast keys revoke 1a2b3c4d5e6f --root /srv/fitcast\n"
                   "once a key exists the service requires one on every management call")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION", help="what to do")
    for name, help in (("create", "make a key (printed once: only its hash is stored)"),
                       ("list", "the keys: id, name, scope, created, revoked"),
                       ("revoke", "revoke a key (its assets stay, owned by its id)")):
        act = keys_sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        act.add_argument("--root", type=Path, default=None,
                         help="store directory (default: $FITCAST_ROOT or ./fitcast-data)")
        if name == "create":
            act.add_argument("name", help="who the key is for (shown in lists and logs)")
            act.add_argument("--scope", choices=("user", "admin"), default="user",
                             help="user: its own assets; admin: every asset")
        elif name == "revoke":
            act.add_argument("key_id", help="the key's id (the 12 hex digits after fck_)")

    doc = command("doctor", "this machine, what fitcast detected, and what each command will use and why")
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
