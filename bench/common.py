"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
from pathlib import Path

from fitcast.machine import cpu_name, machine  # noqa: F401 - re-exported for the bench scripts


def update_readme(readme: Path, table: str, *, block: str) -> None:
    """Replace what lies between ``<!-- {block}:begin -->`` and ``<!-- {block}:end -->`` in ``readme``."""
    from fitcast.storage import atomic_write_text

    text = readme.read_text()
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{readme}: no {begin} ... {end} block to replace")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, f"{head}{begin}\n{table}\n{end}{tail}")


def publish(result: dict, out: Path, table: str, *, readme: Path | None, block: str) -> None:
    """Write ``result`` as JSON to ``out``, print the markdown ``table``, and put it into
    ``readme``'s ``block`` when one is given."""
    from fitcast.storage import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    print(table)
    if readme is not None:
        update_readme(readme, table, block=block)
