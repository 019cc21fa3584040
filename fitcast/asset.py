"""Find and fetch an asset's manifest and the files it names, trusting nothing they say.

A location is a local asset directory, a manifest URL (``.../sr/manifest.json``),
a master playlist URL (its ``com.fitcast.manifest`` session data points at the
manifest) or an asset URL (``.../v1/assets/<id>``).  Content-addressed files are
sha256-checked and cached on disk by digest.

What a manifest names is confined: a local asset's files resolve only inside the asset's
folder (no ``..``, no absolute paths), a remote asset's only on the manifest's origin
(scheme, host and port), and redirects are followed only on the same origin.  Every read has
a size cap (the size the manifest states where it states one) and a total deadline, label and
plan maps are checked against the manifest's shape before they inflate, and models pass
:func:`fitcast.modelcheck.check_model` before any runtime sees them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import m3u8
import numpy as np
import stamina

from fitcast.errors import FetchError, IntegrityError, NotFoundError, TooLargeError, UnsafeLocationError
from fitcast.grid import Plan, load_labels, load_plan
from fitcast.machine import cache_dir as cache_dir_default
from fitcast.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_MAP_BYTES,
    MAX_SEGMENT_BYTES,
    Manifest,
    ModelEntry,
    Segment,
    decompress_model,
    parse,
)
from fitcast.modelcheck import check_model
from fitcast.rendition import SESSION_DATA_ID
from fitcast.storage import atomic_write_bytes, sha256_bytes

MAX_REDIRECTS = 5
MAX_PLAYLIST_BYTES = 1 << 20


def _is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlparse(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def resolve_uri(base: str, uri: str) -> str:
    """``uri`` resolved against ``base`` (a URL, or a local file's path), refused when it leaves
    the origin of ``base`` (a URL) or the asset folder above ``base`` (local: the folder that
    holds the manifest's ``sr/``)."""
    if _is_url(base):
        target = urljoin(base, uri)
        if _origin(target) != _origin(base):
            raise UnsafeLocationError(f"{uri!r}: off the manifest's origin {urlparse(base).netloc}")
        return target
    if urlparse(uri).scheme or uri.startswith(("/", "\\")) or "\0" in uri:
        raise UnsafeLocationError(f"{uri!r}: not a path inside the asset")
    root = Path(base).resolve().parent.parent
    path = (Path(base).resolve().parent / uri).resolve()
    if not path.is_relative_to(root):
        raise UnsafeLocationError(f"{uri!r}: outside the asset folder {root}")
    return str(path)


@dataclass
class Asset:
    """An opened asset: the manifest and a way to read the files it names."""

    manifest: Manifest
    manifest_location: str
    fetcher: Fetcher

    def read(self, uri: str, sha256: str | None = None, *, limit: int = MAX_MAP_BYTES) -> bytes:
        """The bytes of a file the manifest names (confined to the asset, at most ``limit``)."""
        return self.fetcher.read(self.resolve(uri), sha256, limit=limit)

    def read_model(self, entry: ModelEntry) -> bytes:
        """A model's ONNX bytes: fetched (at most the size the manifest states), sha256-checked,
        decoded (``entry.encoding``) and checked as a program (:func:`check_model`)."""
        data = decompress_model(self.read(entry.uri, entry.sha256, limit=entry.bytes), entry.encoding)
        check_model(data, name=f"model {entry.id} ({entry.precision})")
        return data

    def init(self) -> bytes:
        """The rendition's init section."""
        return self.read(self.manifest.init_uri, self.manifest.init_sha256, limit=MAX_SEGMENT_BYTES)

    def segment(self, seg: Segment) -> bytes:
        """A media segment (sha256-checked where the manifest gives it)."""
        return self.read(seg.uri, seg.sha256, limit=seg.bytes or MAX_SEGMENT_BYTES)

    def labels(self, seg: Segment) -> np.ndarray:
        """A segment's label map, checked against the manifest's frames and grid."""
        return load_labels(self.read(seg.labels_uri, seg.labels_sha256), frames=seg.frames,
                           shape=self.manifest.grid().shape)

    def plan(self, seg: Segment) -> Plan:
        """A planned segment's route codes, motion vectors and model ranks, checked against the manifest."""
        m = self.manifest
        if m.plan is None or seg.plan_uri is None or seg.plan_sha256 is None:
            raise NotFoundError(f"segment {seg.index} has no plan")
        return load_plan(self.read(seg.plan_uri, seg.plan_sha256), frames=seg.frames, shape=m.grid().shape,
                         routes=len(m.plan.routes))

    def resolve(self, uri: str) -> str:
        return resolve_uri(self.manifest_location, uri)


class _Retryable(Exception):
    """A response worth asking again for: 429 or a 5xx."""


class Fetcher:
    """Reads URLs (httpx, with retries) and local paths; caches sha256-named content."""

    def __init__(self, cache_dir: Path | None = None, timeout: float = 30.0, attempts: int = 4,
                 deadline: float = 120.0) -> None:
        self.attempts = attempts
        self.cache_dir = cache_dir or cache_dir_default()
        self._client: httpx.Client | None = None
        self.timeout = timeout  # per network operation (connect, each read)
        self.deadline = deadline  # per download, all attempts and redirects together
        self.bytes_fetched = 0

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout, follow_redirects=False, transport=httpx.HTTPTransport(retries=2)
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _get(self, url: str, limit: int) -> tuple[int, bytes]:
        """GET with retries and exponential backoff (stamina) on connection errors, timeouts, 429
        and 5xx: a busy or restarting server costs the player a wait, not the playback.  Redirects
        are followed on the same origin only; the body is read up to ``limit`` bytes and within
        the fetcher's deadline."""
        start = time.monotonic()
        for attempt in stamina.retry_context(on=(httpx.TransportError, _Retryable), attempts=self.attempts,
                                             wait_initial=0.1, wait_max=2.0, timeout=self.deadline):
            with attempt:
                status, body = self._get_once(url, limit, start)
                if status == 429 or status >= 500:
                    raise _Retryable(f"HTTP {status}")
        return status, body

    def _get_once(self, url: str, limit: int, start: float) -> tuple[int, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            with self.client.stream("GET", url) as resp:
                if resp.is_redirect:
                    target = urljoin(url, resp.headers.get("location", ""))
                    if _origin(target) != _origin(url):
                        raise UnsafeLocationError(f"{url}: redirected off its origin to {target}")
                    url = target
                    continue
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit and resp.status_code < 300:
                    raise TooLargeError(f"{url}: {declared} bytes, more than the {limit} expected")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise TooLargeError(f"{url}: more than the {limit} bytes expected")
                    if time.monotonic() - start > self.deadline:
                        raise FetchError(f"{url}: not fetched within {self.deadline:.0f} s")
                    chunks.append(chunk)
                return resp.status_code, b"".join(chunks)
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def read(self, location: str, sha256: str | None = None, *, limit: int = MAX_MAP_BYTES) -> bytes:
        """The bytes at ``location`` (a URL or a path): at most ``limit`` of them, sha256-checked
        and cached by digest when ``sha256`` is given."""
        cached = self.cache_dir / f"{sha256}" if sha256 else None
        if cached is not None and cached.is_file() and cached.stat().st_size <= limit:
            data = cached.read_bytes()
            if sha256_bytes(data) == sha256:
                return data
        data = self._read_uncached(location, limit)
        if sha256 is not None:
            got = sha256_bytes(data)
            if got != sha256:
                raise IntegrityError(f"{location}: sha256 {got[:12]}… does not match the manifest's {sha256[:12]}…")
            try:
                atomic_write_bytes(self.cache_dir / sha256, data)
            except OSError:
                pass  # a read-only cache only costs speed
        return data

    def _read_uncached(self, location: str, limit: int) -> bytes:
        if _is_url(location):
            try:
                status, body = self._get(location, limit)
            except (httpx.HTTPError, _Retryable) as exc:
                raise FetchError(f"{location}: {exc}") from None
            if status == 404:
                raise NotFoundError(f"{location}: not found (404)")
            if status >= 300:
                raise FetchError(f"{location}: HTTP {status}")
            self.bytes_fetched += len(body)
            return body
        path = Path(location)
        if not path.is_file():
            raise NotFoundError(f"{location}: no such file")
        if path.stat().st_size > limit:
            raise TooLargeError(f"{location}: {path.stat().st_size} bytes, more than the {limit} expected")
        return path.read_bytes()


def manifest_location(location: str, fetcher: Fetcher) -> str:
    """Where the manifest of ``location`` is."""
    if not _is_url(location):
        path = Path(location)
        if path.is_dir():
            path = path / "sr" / "manifest.json"
        elif path.suffix == ".m3u8":
            where = str(path.resolve())
            text = fetcher.read(where, limit=MAX_PLAYLIST_BYTES).decode(errors="replace")
            return _from_master(where, text)
        if not path.is_file():
            raise NotFoundError(f"{location}: no fitcast asset here (no sr/manifest.json)")
        return str(path.resolve())
    url_path = urlparse(location).path
    if url_path.endswith(".json"):
        return location
    if url_path.endswith(".m3u8"):
        text = fetcher.read(location, limit=MAX_PLAYLIST_BYTES).decode(errors="replace")
        return _from_master(location, text)
    return location.rstrip("/") + "/sr/manifest.json"


def session_data_uri(location: str, text: str, data_id: str) -> str | None:
    """The URI that the master playlist ``text`` at ``location`` (a URL, or a resolved path) names
    as session data ``data_id``, resolved and confined like every URI (``resolve_uri``)."""
    for data in m3u8.loads(text).session_data:
        if data.data_id == data_id and data.uri:
            return resolve_uri(location, data.uri)  # hls/master.m3u8 -> ../sr/…
    return None


def _from_master(location: str, text: str) -> str:
    found = session_data_uri(location, text, SESSION_DATA_ID)
    if found is None:
        raise NotFoundError(f"{location}: the playlist has no {SESSION_DATA_ID} session data")
    return found


def open_asset(location: str, fetcher: Fetcher | None = None) -> Asset:
    fetcher = fetcher or Fetcher()
    where = manifest_location(location, fetcher)
    manifest = parse(fetcher.read(where, limit=MAX_MANIFEST_BYTES))
    return Asset(manifest=manifest, manifest_location=where, fetcher=fetcher)
