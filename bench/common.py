"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fitcast.machine import cpu_name, machine  # noqa: F401 - re-exported for the bench scripts

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FITCAST_MEDIA", ROOT.parent / "shared" / "media"))


def clip_piece(spec: str, work: Path, *, duration: float | None = 2.0) -> tuple[str, Path]:
    """Cut the piece NAME[:START[:DURATION]] of a clip in ``MEDIA`` (or a path) nearly losslessly
    (x264 CRF 8) into ``work``, once; return (label, piece).  The piece is the reference.  Without a
    DURATION the piece lasts ``duration`` seconds, or to the clip's end when that is None (a bare NAME
    is then the whole clip, labelled by its name alone)."""
    from fitcast.media import cut, probe

    name, *rest = spec.split(":")
    src = Path(name) if Path(name).is_file() else MEDIA / name
    if not src.is_file():
        raise SystemExit(f"no clip {name} (looked in {MEDIA})")
    start = float(rest[0]) if rest else 0.0
    length = float(rest[1]) if len(rest) > 1 else duration if duration is not None else probe(src).duration - start
    label = src.stem.split("_")[0] + (f"@{start:g}+{length:g}" if rest or duration is not None else "")
    piece = work / f"{label}.mp4"
    if not piece.exists():
        cut(src, piece, start=start, duration=length, crf=8)
    return label, piece


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


# BD-rate numbers are published only where the two curves overlap at least this much along the
# quality axis (the bjontegaard package warns below 75 %, the JVET practice).
MIN_OVERLAP = 0.75


def bd_rate(rate_ref, dist_ref, rate_test, dist_test) -> dict | None:
    """Bjøntegaard delta rate of ``test`` against ``ref`` (%, negative: ``test`` saves bits at equal
    quality) through the ``bjontegaard`` package: pchip (as the JVET common test conditions) and
    cubic, with the curves' overlap along the quality axis beside them.  None when they do not
    overlap or either has fewer than four points; ``published`` False below ``MIN_OVERLAP``."""
    import warnings

    import bjontegaard
    import numpy as np

    if len(rate_ref) < 4 or len(rate_test) < 4:
        return None
    a, b = np.asarray(dist_ref, float), np.asarray(dist_test, float)
    overlap = max(0.0, min(a.max(), b.max()) - max(a.min(), b.min())) / (max(a.max(), b.max()) - min(a.min(), b.min()))
    if overlap <= 0:
        return None
    out = {"overlap": round(float(overlap), 3), "published": bool(overlap >= MIN_OVERLAP)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the overlap is reported beside the number instead
        for method in ("pchip", "cubic"):
            out[method] = float(bjontegaard.bd_rate(rate_ref, dist_ref, rate_test, dist_test, method=method,
                                                    require_matching_points=False, min_overlap=0))
    return out


def bd_text(value: dict | None) -> str:
    """A BD-rate in a table: the pchip number and the overlap, or why there is none."""
    if value is None:
        return "n/a (no overlap)"
    text = f"{value['pchip']:+.1f} % (cubic {value['cubic']:+.1f} %, overlap {100 * value['overlap']:.0f} %)"
    return text if value["published"] else f"not published: overlap {100 * value['overlap']:.0f} % < " \
                                           f"{100 * MIN_OVERLAP:.0f} %"
