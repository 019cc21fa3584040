"""The device profile (``fitcast-device-profile/1``): what a device's runtime costs, measured.

Written by ``fitcast profile-device`` (``nas.profile``: this machine's candidate layers and
networks, the player's overhead; ``mobile.benchmark``: a phone bundle's models) and read
by the architecture search and the encoder.  One format constant, one reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fitcast.errors import InvalidInputError

PROFILE_FORMAT = "fitcast-device-profile/1"


def load_profile(path: Path, *, need_layers: bool = True) -> dict[str, Any]:
    """Read a device profile; with ``need_layers`` it must hold the layer table of a machine
    profile (not only a bundle's entries)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable device profile ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidInputError(f"{path}: format {got!r}, expected {PROFILE_FORMAT}")
    if need_layers and not doc.get("layers"):
        raise InvalidInputError(f"{path}: has no layer table (profile it with `fitcast profile-device` "
                                "without a bundle)")
    return doc
