"""Who may change what: API keys and owners, Host and Origin, signed playback, bounded work,
the start-up sweep, public errors, file modes and the HTTP server's own bounds."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from fitcast.asset import Fetcher
from fitcast.config import Settings
from fitcast.errors import MediaError, RequestTimeoutError, TooLargeError
from fitcast.storage import ASSET_MARKER, atomic_dir, atomic_write_bytes
from server.app import create_app
from server.jobs import JobStore
from server.keys import KeyStore
from server.launch import start_server
from server.routes import compare
from server.routes.assets import MULTIPART_OVERHEAD, _receive_multipart
from server.security import playback_token
from server.sweep import ORPHAN_AGE, sweep_store
from server.worker import public_error

PROBLEM = "application/problem+json"


def _app(tmp_path: Path, **kw) -> tuple[TestClient, Settings]:
    settings = Settings(root=tmp_path / "store", **kw)
    return TestClient(create_app(settings, start_workers=False)), settings


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _upload(client: TestClient, body: bytes, key: str | None = None, **params) -> object:
    headers = {"Content-Type": "video/mp4", **(_auth(key) if key else {})}
    idem = params.pop("idempotency_key", None)
    if idem:
        headers["Idempotency-Key"] = idem
    return client.post("/v1/assets", params={"preset": "fast", **params}, content=body, headers=headers)


def _ready_asset(settings: Settings, source: Path, asset_id: str, owner: str = "local",
                 playback: str = "public") -> None:
    """A ready asset in the store without an encode: the leaf asset's files under a new row."""
    shutil.copytree(source, settings.assets_dir / asset_id)
    store = JobStore(settings.db_path)
    store.create(asset_id, {}, source_name="source.mp4", source_bytes=1, source_sha256="0" * 64,
                 idempotency_key=None, owner=owner, playback=playback)
    store.finish(asset_id)


# ---------------------------------------------------------------- keys and owners


def test_without_keys_the_service_is_open_to_one_user_and_with_keys_closed(tmp_path, leaf_piece):
    client, settings = _app(tmp_path)
    with client:
        r = _upload(client, leaf_piece.read_bytes())
        assert r.status_code == 202, r.text
        asset_id = r.json()["id"]
        _, key = client.app.state.keys.create("alice")
        calls = [("GET", "/v1/assets"), ("GET", f"/v1/assets/{asset_id}"), ("POST", f"/v1/assets/{asset_id}/cancel"),
                 ("DELETE", f"/v1/assets/{asset_id}"), ("POST", f"/v1/assets/{asset_id}/playback-token"),
                 ("GET", f"/v1/assets/{asset_id}/compare")]
        for method, path in calls:
            r = client.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["content-type"].startswith(PROBLEM) and r.headers["www-authenticate"].startswith("Bearer")
        assert _upload(client, leaf_piece.read_bytes()).status_code == 401
        assert client.get("/v1/assets", headers=_auth(key[:-2] + "xx")).status_code == 401  # a wrong secret
        assert client.get("/v1/assets", headers=_auth(key)).status_code == 200


def test_assets_belong_to_the_key_that_uploaded_them(tmp_path, leaf_piece):
    client, settings = _app(tmp_path)
    keys = KeyStore(settings.db_path)
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    _, admin = keys.create("ops", "admin")
    body = leaf_piece.read_bytes()
    with client:
        mine = _upload(client, body, alice, idempotency_key="k1").json()["id"]
        assert client.get(f"/v1/assets/{mine}", headers=_auth(alice)).status_code == 200
        for method, path in (("GET", f"/v1/assets/{mine}"), ("DELETE", f"/v1/assets/{mine}"),
                             ("POST", f"/v1/assets/{mine}/cancel"), ("POST", f"/v1/assets/{mine}/playback-token")):
            assert client.request(method, path, headers=_auth(bob)).status_code == 404, (method, path)
        assert client.get("/v1/assets", headers=_auth(bob)).json()["items"] == []
        assert [a["id"] for a in client.get("/v1/assets", headers=_auth(admin)).json()["items"]] == [mine]
        # idempotency keys are per owner, and bound to what the request carried
        theirs = _upload(client, body, bob, idempotency_key="k1")
        assert theirs.status_code == 202 and theirs.json()["id"] != mine
        again = _upload(client, body, alice, idempotency_key="k1")
        assert again.status_code == 200 and again.json()["id"] == mine
        other = _upload(client, body[: len(body) // 2], alice, idempotency_key="k1")
        assert other.status_code == 422 and "different upload" in other.json()["detail"]
        assert _upload(client, body, alice, idempotency_key="k1", scale=4).status_code == 422
        # a queued job is canceled by DELETE (its owner's)
        assert client.delete(f"/v1/assets/{mine}", headers=_auth(alice)).status_code == 204
        assert client.get(f"/v1/assets/{mine}", headers=_auth(admin)).status_code == 404


def test_a_revoked_key_is_refused(tmp_path):
    client, settings = _app(tmp_path)
    keys = client.app.state.keys
    record, alice = keys.create("alice")
    keys.create("other")
    with client:
        assert client.get("/v1/assets", headers=_auth(alice)).status_code == 200
        assert keys.revoke(record.id)
        assert client.get("/v1/assets", headers=_auth(alice)).status_code == 401


# ---------------------------------------------------------------- Host and Origin


def test_host_and_origin_checks_keep_web_pages_out(tmp_path, leaf_piece):
    client, _ = _app(tmp_path)
    body = leaf_piece.read_bytes()
    with client:
        rebinding = client.get("/v1/assets", headers={"Host": "attacker.example:8000"})
        assert rebinding.status_code == 421 and rebinding.headers["content-type"].startswith(PROBLEM)
        assert client.get("/v1/assets", headers={"Host": "127.0.0.1:8000"}).status_code == 200
        cross = client.post("/v1/assets", params={"preset": "fast"}, content=body,
                            headers={"Content-Type": "video/mp4", "Origin": "http://attacker.example"})
        assert cross.status_code == 403
        simple = client.post("/v1/assets", files={"file": ("x.mp4", body, "video/mp4")},
                             headers={"Sec-Fetch-Site": "cross-site"})
        assert simple.status_code == 403  # a cross-site form post, even without Origin
        assert client.request("DELETE", "/v1/assets/a0123456789abcdef",
                              headers={"Origin": "null"}).status_code == 403
        same = client.post("/v1/assets", params={"preset": "fast"}, content=body,
                           headers={"Content-Type": "video/mp4", "Origin": "http://testserver"})
        assert same.status_code == 202, same.text
        assert client.get("/v1/assets").json()["items"][0]["links"]["self"].startswith("http://testserver/")


# ---------------------------------------------------------------- signed playback


def test_a_signed_asset_plays_only_with_a_valid_token(tmp_path, leaf_asset):
    from client.player import PlayOptions, play

    client, settings = _app(tmp_path)
    _ready_asset(settings, leaf_asset, "asigned000000001", playback="signed")
    _ready_asset(settings, leaf_asset, "apublic000000001")
    base = "/v1/assets/asigned000000001"
    with client:
        assert client.get(f"{base}/hls/master.m3u8").status_code == 403
        assert client.get("/v1/assets/apublic000000001/hls/master.m3u8").status_code == 200
        grant = client.post(f"{base}/playback-token", params={"ttl": 120}).json()
        token = grant["token"]
        master = client.get(grant["links"]["master"])
        assert master.status_code == 200
        uris = [line for line in master.text.splitlines() if line and not line.startswith("#")]
        assert uris and all(f"token={token}" in u for u in uris)
        assert f'token={token}' in master.text.split("EXT-X-SESSION-DATA", 1)[1].split("\n", 1)[0]
        media = client.get(f"{base}/hls/{uris[0].split('?')[0]}", params={"token": token})
        assert media.status_code == 200 and "#EXT-X-MAP:URI=" in media.text and f"token={token}" in media.text
        expired = playback_token(client.app.state.secret, "asigned000000001", int(time.time()) - 1)
        r = client.get(f"{base}/hls/master.m3u8", params={"token": expired})
        assert r.status_code == 403 and "expired" in r.json()["detail"]
        other = playback_token(client.app.state.secret, "apublic000000001", int(time.time()) + 60)
        assert client.get(f"{base}/hls/master.m3u8", params={"token": other}).status_code == 403
        # the player follows the tokenised manifest through every file it names
        fetcher = Fetcher(cache_dir=tmp_path / "cache")
        fetcher._client = client
        report = play(grant["links"]["manifest"], PlayOptions(headless=True, max_frames=3), fetcher=fetcher)
        assert report["frames"] == 3


# ---------------------------------------------------------------- bounded work


def test_queue_caps_quota_and_rate_limits(tmp_path, leaf_piece):
    body = leaf_piece.read_bytes()
    client, _ = _app(tmp_path, max_active_per_key=2)
    with client:
        assert _upload(client, body).status_code == 202
        assert _upload(client, body).status_code == 202
        third = _upload(client, body)
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        first = client.get("/v1/assets").json()["items"][0]["id"]
        assert client.post(f"/v1/assets/{first}/cancel").json()["status"] == "canceled"
        assert _upload(client, body).status_code == 202  # a canceled job frees its place
    client, _ = _app(tmp_path / "quota", quota_bytes=len(body) + 10)
    with client:
        assert _upload(client, body).status_code == 202
        assert _upload(client, body).status_code == 413
    client, _ = _app(tmp_path / "rate", rate_per_second=0.01, rate_burst=3, rate_limit_delay=0.3)
    with client:
        codes = [client.get("/v1/assets").status_code for _ in range(3)]
        t0 = time.monotonic()
        codes.append(client.get("/v1/assets").status_code)
        assert codes == [200, 200, 200, 429]
        assert time.monotonic() - t0 >= 0.3  # over the rate, the answer waits (a tarpit)


def _request(chunks: list[bytes], ctype: str, delay: float = 0.0) -> tuple[Request, dict[str, int]]:
    """A Starlette request whose body arrives in ``chunks`` (counting what the server read)."""
    read = {"bytes": 0}
    queue = list(chunks)

    async def receive() -> dict:
        if delay:
            await asyncio.sleep(delay)
        if not queue:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = queue.pop(0)
        read["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = {"type": "http", "method": "POST", "path": "/v1/assets", "headers": [(b"content-type", ctype.encode())]}
    return Request(scope, receive), read


def test_a_multipart_upload_is_cut_off_at_the_limit_not_spooled(tmp_path):
    limit, chunk = 1 << 20, 64 << 10
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n")
    chunks = [head] + [bytes(chunk)] * 480  # 30 MB of file data
    request, read = _request(chunks, "multipart/form-data; boundary=b")
    with pytest.raises(TooLargeError):
        asyncio.run(_receive_multipart(request, "multipart/form-data; boundary=b", tmp_path / "up", limit, 5.0))
    assert read["bytes"] <= limit + MULTIPART_OVERHEAD + chunk  # the rest of the body was never read
    assert (tmp_path / "up").stat().st_size <= limit


def test_a_stalled_upload_gets_a_timeout(tmp_path):
    request, _ = _request([b"x"] * 3, "multipart/form-data; boundary=b", delay=0.5)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(_receive_multipart(request, "multipart/form-data; boundary=b", tmp_path / "up", 1 << 20, 0.2))


def test_compare_renders_once_and_refuses_a_flood(tmp_path, leaf_asset):
    client, settings = _app(tmp_path, compare_queue=2)
    _ready_asset(settings, leaf_asset, "acompare00000001")
    url = "/v1/assets/acompare00000001/compare"
    with client:
        first = client.get(url, params={"segment": 1, "frame": 3})
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        cached = list((settings.assets_dir / "acompare00000001" / "compare").glob("*.png"))
        assert len(cached) == 1
        before = cached[0].stat().st_mtime_ns
        assert client.get(url, params={"segment": 1, "frame": 3}).content == first.content
        assert cached[0].stat().st_mtime_ns == before  # served from the file, not rendered again
        compare._WAITING["n"] = 2  # two renders already waiting
        try:
            flood = client.get(url, params={"segment": 0, "frame": 1})
        finally:
            compare._WAITING["n"] = 0
        assert flood.status_code == 429 and flood.headers["retry-after"]


def test_each_client_has_a_minute_of_rendering_to_spend(tmp_path, leaf_asset):
    """A client that spent its render seconds waits (429 with the wait); frames already rendered
    are still served to it, and another client renders as before."""
    client, settings = _app(tmp_path, compare_render_seconds=0.01)  # any render overdraws this
    keys = KeyStore(settings.db_path)
    _, mallory = keys.create("mallory")
    alice_key, alice = keys.create("alice")
    _ready_asset(settings, leaf_asset, "abudget00000001", owner=alice_key.id)
    url = "/v1/assets/abudget00000001/compare"
    with client:
        assert client.get(url, params={"segment": 0, "frame": 1}, headers=_auth(mallory)).status_code == 404
        first = client.get(url, params={"segment": 0, "frame": 1}, headers=_auth(alice))
        assert first.status_code == 200
        spent = client.get(url, params={"segment": 0, "frame": 2}, headers=_auth(alice))
        assert spent.status_code == 429 and "rendering a minute" in spent.json()["detail"]
        assert int(spent.headers["retry-after"]) >= 1
        again = client.get(url, params={"segment": 0, "frame": 1}, headers=_auth(alice))
        assert again.status_code == 200 and again.content == first.content  # cached: free
        # a playback token is a client of its own
        token = client.post("/v1/assets/abudget00000001/playback-token", headers=_auth(alice))
        assert token.status_code == 200, token.text
        t = token.json()["token"]
        assert client.get(url, params={"segment": 0, "frame": 3, "token": t}).status_code == 200
        assert client.get(url, params={"segment": 0, "frame": 4, "token": t}).status_code == 429


# ---------------------------------------------------------------- hygiene


def test_public_errors_carry_no_paths_or_exception_reprs(tmp_path):
    settings = Settings(root=tmp_path / "store")
    hidden = public_error(MediaError(f"{settings.root.resolve()}/assets/a1/source.mp4: moov atom not found"),
                          settings, "e1")
    assert str(settings.root.resolve()) not in hidden["detail"] and hidden["error_id"] == "e1"
    generic = public_error(KeyError("/srv/secret/path"), settings, "e2")
    assert "secret" not in generic["detail"] and "KeyError" not in generic["detail"] and "e2" in generic["detail"]


def test_the_start_up_sweep_removes_what_crashes_leave(tmp_path, leaf_asset):
    settings = Settings(root=tmp_path / "store")
    store = JobStore(settings.db_path)
    settings.uploads_dir.mkdir(parents=True)
    (settings.uploads_dir / "a1.part").write_bytes(b"half an upload")
    _ready_asset(settings, leaf_asset, "adeleted00000001")
    (settings.assets_dir / "adeleted00000001").rename(settings.assets_dir / ".adeleted00000001.deleted")
    orphan = settings.assets_dir / "aorphan000000001"
    orphan.mkdir()
    (orphan / ASSET_MARKER).write_text("")
    (orphan / "source.mp4").write_bytes(b"x")
    old = time.time() - ORPHAN_AGE - 5
    import os

    os.utime(orphan, (old, old))
    _ready_asset(settings, leaf_asset, "alost00000000001")
    shutil.rmtree(settings.assets_dir / "alost00000000001")
    _ready_asset(settings, leaf_asset, "akept00000000001")
    (settings.assets_dir / "akept00000000001" / "work").mkdir()
    (settings.assets_dir / "akept00000000001" / ".sr.x1.tmp").mkdir()
    done = sweep_store(settings, store)
    assert done == {"partial_uploads": 1, "trash": 1, "orphan_folders": 1, "rows_without_files": 1}
    assert not list(settings.uploads_dir.iterdir()) and not orphan.exists()
    assert store.get("adeleted00000001") is None
    assert store.get("alost00000000001").status == "errored"
    kept = settings.assets_dir / "akept00000000001"
    assert not (kept / "work").exists() and not (kept / ".sr.x1.tmp").exists() and (kept / "sr").is_dir()


def test_published_files_are_readable_by_other_users(tmp_path):
    path = atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


# ---------------------------------------------------------------- the HTTP server's own bounds


def test_idle_connections_are_dropped_and_capped(tmp_path):
    server, base = start_server(tmp_path / "store",
                                env={"FITCAST_HEADER_TIMEOUT": "1", "FITCAST_MAX_CONNECTIONS": "16"})
    port = int(base.rsplit(":", 1)[1])
    idle: list[socket.socket] = []
    try:
        for _ in range(40):  # more than the cap, none sending a request
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        import httpx

        started, answered = time.monotonic(), False
        while not answered and time.monotonic() - started < 5:  # the idle ones go within the header timeout
            try:
                answered = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        assert answered, "the service stayed unreachable behind idle connections"
        for s in idle[:5]:
            s.settimeout(5)
            assert s.recv(100) == b""  # each was closed by the server (over the cap, or idle too long)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        idle.append(slow)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        started = time.monotonic()
        assert slow.recv(100) == b""
        assert time.monotonic() - started < 3
    finally:
        for s in idle:
            s.close()
        server.terminate()
        server.wait(timeout=20)
