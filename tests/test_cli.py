"""The command line as a user meets it: a version, help on every option with its default, examples."""

import argparse
import subprocess
import sys

from fitcast import __version__
from fitcast.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_command_has_help():
    missing = []
    for name, parser in _subparsers(build_parser()).items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert missing == []


def test_version_help_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "fitcast", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"fitcast {__version__}"
    enc = subprocess.run([sys.executable, "-m", "fitcast", "encode", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert enc.returncode == 0 and "examples:" in enc.stdout and "(default: 2)" in enc.stdout
    top = subprocess.run([sys.executable, "-m", "fitcast", "--help"], capture_output=True, text=True, timeout=60)
    assert "quickstart:" in top.stdout and "fitcast serve" in top.stdout


def test_the_phone_benchmark_has_a_console_script():
    from pathlib import Path

    script = Path(sys.executable).with_name("fitcast-phone-bench")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "bundle" in out.stdout
