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


def test_help_shows_real_defaults_only():
    """No "(default: None)" and no default printed for a flag (``--no-int8`` is not "True")."""
    wrong = []
    for name, parser in _subparsers(build_parser()).items():
        text = parser.format_help()
        wrong += [f"{name}: {bad}" for bad in ("(default: None)", "(default: True)", "(default: False)")
                  if bad in text]
    assert wrong == []


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


def test_encode_refuses_a_folder_that_is_not_an_asset(tmp_path, leaf_piece):
    """``encode -o`` into someone's folder changes nothing there: one line, exit 2."""
    theirs = tmp_path / "documents"
    (theirs / "work").mkdir(parents=True)
    (theirs / "work" / "thesis.tex").write_text("years of work")
    (theirs / ".notes.old").write_text("old notes")
    (theirs / "hls").mkdir()
    before = {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    out = subprocess.run([sys.executable, "-m", "fitcast", "encode", str(leaf_piece), "-o", str(theirs), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "not a fitcast asset" in out.stderr
    assert {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in theirs.iterdir()) == [".notes.old", "hls", "work"]


def test_keys_create_list_revoke(tmp_path, capsys):
    """A key made by ``fitcast keys create`` verifies; revoked, it does not; a second revoke is an error."""
    from fitcast.cli import main
    from server.keys import KeyStore

    root = tmp_path / "store"
    assert main(["keys", "create", "alice", "--scope", "admin", "--root", str(root)]) == 0
    text = capsys.readouterr().out.strip()
    store = KeyStore(root / "jobs.sqlite")
    key = store.verify(text)
    assert key is not None and key.name == "alice" and key.admin
    assert main(["keys", "list", "--root", str(root)]) == 0
    listed = capsys.readouterr().out
    assert key.id in listed and text not in listed  # the secret is shown once, never listed
    assert main(["keys", "revoke", key.id, "--root", str(root)]) == 0
    assert KeyStore(root / "jobs.sqlite").verify(text) is None
    assert main(["keys", "revoke", key.id, "--root", str(root)]) == 2
    assert "no active key" in capsys.readouterr().err
