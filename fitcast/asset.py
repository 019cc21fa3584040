"""Find and fetch an asset's manifest and the files it names.

A location is a local asset directory, a manifest URL (``.../sr/manifest.json``),
a master playlist URL (its ``com.fitcast.manifest`` session data points at the
manifest) or an asset URL (``.../v1/assets/<id>``).  Content-addressed files are
sha256-checked and cached on disk by digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import m3u8
import stamina

from fitcast.errors import FetchError, IntegrityError, NotFoundError
from fitcast.machine import cache_dir as cache_dir_default
from fitcast.manifest import Manifest, ModelEntry, decompress_model, parse
from fitcast.rendition import SESSION_DATA_ID
from fitcast.storage import atomic_write_bytes, sha256_bytes


def _is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


@dataclass
class Asset:
    """An opened asset: the manifest and a way to read the files it names."""

    manifest: Manifest
    manifest_location: str
    fetcher: Fetcher

    def read(self, uri: str, sha256: str | None = None) -> bytes:
        return self.fetcher.read(self.resolve(uri), sha256)

    def read_model(self, entry: ModelEntry) -> bytes:
        """A model's ONNX bytes: fetched, sha256-checked and decoded (``entry.encoding``)."""
        return decompress_model(self.read(entry.uri, entry.sha256), entry.encoding)

    def resolve(self, uri: str) -> str:
        if _is_url(self.manifest_location):
            return urljoin(self.manifest_location, uri)
        return str((Path(self.manifest_location).parent / uri).resolve())


class _Retryable(Exception):
    """A response worth asking again for: 429 or a 5xx."""


class Fetcher:
    """Reads URLs (httpx, with retries) and local paths; caches sha256-named content."""

    def __init__(self, cache_dir: Path | None = None, timeout: float = 30.0, attempts: int = 4) -> None:
        self.attempts = attempts
        self.cache_dir = cache_dir or cache_dir_default()
        self._client: httpx.Client | None = None
        self.timeout = timeout
        self.bytes_fetched = 0

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout, follow_redirects=True, transport=httpx.HTTPTransport(retries=2)
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _get(self, url: str) -> httpx.Response:
        """GET with retries and exponential backoff (stamina) on connection errors, timeouts, 429
        and 5xx: a busy or restarting server costs the player a wait, not the playback."""
        for attempt in stamina.retry_context(on=(httpx.TransportError, _Retryable), attempts=self.attempts,
                                             wait_initial=0.1, wait_max=2.0, timeout=self.timeout * 2):
            with attempt:
                resp = self.client.get(url)
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Retryable(f"HTTP {resp.status_code}")
        return resp

    def read(self, location: str, sha256: str | None = None) -> bytes:
        cached = self.cache_dir / f"{sha256}" if sha256 else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
            if sha256_bytes(data) == sha256:
                return data
        data = self._read_uncached(location)
        if sha256 is not None:
            got = sha256_bytes(data)
            if got != sha256:
                raise IntegrityError(f"{location}: sha256 {got[:12]}… does not match the manifest's {sha256[:12]}…")
            try:
                atomic_write_bytes(self.cache_dir / sha256, data)
            except OSError:
                pass  # a read-only cache only costs speed
        return data

    def _read_uncached(self, location: str) -> bytes:
        if _is_url(location):
            try:
                resp = self._get(location)
            except (httpx.HTTPError, _Retryable) as exc:
                raise FetchError(f"{location}: {exc}") from None
            if resp.status_code == 404:
                raise NotFoundError(f"{location}: not found (404)")
            if resp.status_code >= 400:
                raise FetchError(f"{location}: HTTP {resp.status_code}")
            self.bytes_fetched += len(resp.content)
            return resp.content
        path = Path(location)
        if not path.is_file():
            raise NotFoundError(f"{location}: no such file")
        return path.read_bytes()


def manifest_location(location: str, fetcher: Fetcher) -> str:
    """Where the manifest of ``location`` is."""
    if not _is_url(location):
        path = Path(location)
        if path.is_dir():
            path = path / "sr" / "manifest.json"
        elif path.suffix == ".m3u8":
            return _from_master(str(path.resolve()), path.read_text(), local=True)
        if not path.is_file():
            raise NotFoundError(f"{location}: no fitcast asset here (no sr/manifest.json)")
        return str(path.resolve())
    url_path = urlparse(location).path
    if url_path.endswith(".json"):
        return location
    if url_path.endswith(".m3u8"):
        return _from_master(location, fetcher.read(location).decode(errors="replace"), local=False)
    return location.rstrip("/") + "/sr/manifest.json"


def _from_master(location: str, text: str, *, local: bool) -> str:
    playlist = m3u8.loads(text)
    for data in playlist.session_data:
        if data.data_id == SESSION_DATA_ID and data.uri:
            if local:
                return str((Path(location).parent / data.uri).resolve())
            return urljoin(location, data.uri)
    raise NotFoundError(f"{location}: the playlist has no {SESSION_DATA_ID} session data")


def open_asset(location: str, fetcher: Fetcher | None = None) -> Asset:
    fetcher = fetcher or Fetcher()
    where = manifest_location(location, fetcher)
    manifest = parse(fetcher.read(where))
    return Asset(manifest=manifest, manifest_location=where, fetcher=fetcher)
