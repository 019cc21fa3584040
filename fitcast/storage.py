"""Asset layout on disk and atomic writes.

Nothing is ever visible half-written: files are written to a temporary sibling
and renamed into place; directories are built under a temporary name and
renamed as a whole.  Immutable files are content-addressed by sha256.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fitcast.errors import InvalidInputError, NotFoundError

ASSET_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{2,63}$")


def validate_asset_id(asset_id: str) -> str:
    if not isinstance(asset_id, str) or not ASSET_ID_RE.match(asset_id):
        raise InvalidInputError(f"invalid asset id {asset_id!r}: 3-64 characters of a-z, 0-9, '_' and '-'")
    return asset_id


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Published files are world-readable (an nginx or CDN origin often runs as another user); the
# temporary files they are built as would otherwise keep mkstemp's 0600 and mkdtemp's 0700.
FILE_MODE = 0o644
DIR_MODE = 0o755


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (mode 0644) via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def put_content(directory: str | Path, data: bytes, ext: str) -> tuple[Path, str]:
    """Store ``data`` content-addressed as ``directory/<sha256>.<ext>``; return (path, sha256)."""
    digest = sha256_bytes(data)
    path = Path(directory) / f"{digest}.{ext}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path, digest


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Build a directory (mode 0755) under a temporary name; rename it to ``final`` on success.

    An existing ``final`` is replaced (the old one is removed after the swap).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        tmp.chmod(DIR_MODE)
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class AssetLayout:
    """Paths of one asset's files (DESIGN §3)."""

    root: Path

    @property
    def hls(self) -> Path:
        return self.root / "hls"

    @property
    def sr(self) -> Path:
        return self.root / "sr"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def work(self) -> Path:
        """Scratch space of the encode (removed when it finishes)."""
        return self.root / "work"



ASSET_MARKER = ".fitcast-asset"  # in every folder an encode owns: what it may clear and replace
ASSET_PARTS = ("hls", "sr", "report")


def claim_asset_dir(root: str | Path) -> Path:
    """Make ``root`` an asset folder an encode may write into, or refuse.

    A new or empty folder is claimed (the marker file is written); one with the marker, or an
    asset written before the marker existed (``sr/manifest.json``), is fitcast's already.  Any
    other non-empty folder is refused: an encode replaces ``hls/ sr/ report/`` and clears its
    own leftovers, and must never do that to someone else's files.
    """
    root = Path(root)
    check_asset_dir(root)
    if not (root / ASSET_MARKER).is_file():
        root.mkdir(parents=True, exist_ok=True)
        (root / ASSET_MARKER).write_text("fitcast asset: encodes may replace hls/ sr/ report/ and clear work/ here\n")
    return root


def check_asset_dir(root: str | Path) -> None:
    """Refuse ``root`` as :func:`claim_asset_dir` would, writing nothing (the command line asks
    before the training stack loads)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} exists and is not a directory")
    if not (root / ASSET_MARKER).is_file() and root.is_dir() and any(root.iterdir()) \
            and not (root / "sr" / "manifest.json").is_file():
        raise InvalidInputError(f"{root} is not empty and is not a fitcast asset: encode into a new or empty "
                                "directory")


def clear_leftovers(root: str | Path) -> None:
    """Remove what an interrupted encode left in its (claimed) asset folder: the temporary and
    old copies of ``hls/ sr/ report/`` and ``work/``; nothing else."""
    root = Path(root)
    if not (root / ASSET_MARKER).is_file():
        return
    for part in ASSET_PARTS:
        for path in [*root.glob(f".{part}.*.tmp"), root / f".{part}.old"]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(root / "work", ignore_errors=True)


def resolve_inside(root: str | Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``; refuse anything that escapes it."""
    root = Path(root).resolve()
    if "\x00" in relative or relative.startswith("/"):
        raise NotFoundError("no such file")
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise NotFoundError("no such file")
    return target
