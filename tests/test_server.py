
import pytest
from fastapi.testclient import TestClient

from fitcast.config import Settings
from fitcast.manifest import parse
from helpers import asset_done, asset_progress, wait_while_progressing
from server.app import create_app

PROBLEM = "application/problem+json"


def _settings(tmp_path, **kw) -> Settings:
    return Settings(root=tmp_path / "store", train_iterations=60, poll_seconds=0.2, **kw)


class _Receiver:
    """A webhook receiver on loopback that keeps every request it gets."""

    def __init__(self) -> None:
        import http.server
        import threading
        import time

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body, time.time()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver():
    r = _Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory, chaplin_piece, receiver):
    """A running app (with its worker) that has encoded the chaplin piece (with sound), sending webhooks."""
    settings = _settings(tmp_path_factory.mktemp("srv"), webhook_url=receiver.url, webhook_secret="s3cret")
    with TestClient(create_app(settings)) as client:
        body = chaplin_piece.read_bytes()
        r = client.post("/v1/assets", params={"preset": "fast", "segment_seconds": 0.5, "target_fps": 0}, content=body,
                        headers={"Content-Type": "video/mp4", "Idempotency-Key": "leaf-1"})
        assert r.status_code == 202, r.text
        asset = r.json()
        assert asset["status"] == "queued" and r.headers["location"].endswith(asset["id"])
        seen = set()

        def poll() -> dict:
            a = client.get(f"/v1/assets/{asset['id']}").json()
            seen.add(a["progress"]["stage"])
            return a

        a = wait_while_progressing(poll, done=asset_done, progress=asset_progress)
        assert a["status"] == "ready", a
        yield client, a, settings, seen


def test_upload_encodes_to_ready_with_progress(served):
    client, a, settings, seen = served
    assert a["playable"] and a["progress"]["fraction"] == 1.0
    assert "train" in seen or "evaluate" in seen  # progress was visible while it ran
    assert a["source"]["sha256"] and a["source"]["bytes"] > 0


def test_idempotency_key_returns_the_same_asset(served, chaplin_piece):
    client, a, settings, _ = served
    params = {"preset": "fast", "segment_seconds": 0.5, "target_fps": 0}
    r = client.post("/v1/assets", params=params, content=chaplin_piece.read_bytes(),
                    headers={"Content-Type": "video/mp4", "Idempotency-Key": "leaf-1"})
    assert r.status_code == 200 and r.json()["id"] == a["id"]
    # the same key with another request is refused, not answered with this asset
    r = client.post("/v1/assets", params={**params, "crf": 30}, content=chaplin_piece.read_bytes(),
                    headers={"Content-Type": "video/mp4", "Idempotency-Key": "leaf-1"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_files_are_served_with_range_and_etag(served):
    client, a, settings, _ = served
    base = f"/v1/assets/{a['id']}"
    m = parse(client.get(f"{base}/sr/manifest.json").content)
    assert m.asset_id == a["id"]
    r = client.get(f"{base}/hls/master.m3u8")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert "com.fitcast.manifest" in r.text
    seg = f"{base}/hls/seg_00000.m4s"
    full = client.get(seg).content
    part = client.get(seg, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full[100:200]
    etag = client.get(seg).headers["etag"]
    assert client.get(seg, headers={"If-None-Match": etag}).status_code == 304
    model = m.models[0]
    r = client.get(f"{base}/sr/{model.uri}")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["etag"] == f'"{model.sha256}"'
    assert client.head(seg).status_code == 200
    q = client.get(f"{base}/report/quality.json").json()
    assert q["frames"] == 25 and "psnr_y_sr" in q


def test_listing_is_paginated(served):
    client, a, settings, _ = served
    r = client.get("/v1/assets", params={"limit": 1})
    assert r.status_code == 200
    page = r.json()
    assert [i["id"] for i in page["items"]] == [a["id"]]
    assert page["next_cursor"] is None
    assert client.get("/v1/assets", params={"cursor": "%%%"}).status_code == 422


@pytest.mark.parametrize(
    "path", ["/v1/assets/../../etc/passwd", "/v1/assets/{id}/hls/..%2F..%2Fjobs.sqlite",
             "/v1/assets/{id}/sr/../source.mp4", "/v1/assets/{id}/work/x", "/v1/assets/UPPER/hls/lr.m3u8",
             "/v1/nothing"]
)
def test_bad_paths_are_problem_json_404(served, path):
    client, a, settings, _ = served
    r = client.get(path.replace("{id}", a["id"]))
    assert r.status_code in (404, 422)
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == r.status_code


def test_bad_uploads_are_refused_and_nothing_is_stored(tmp_path):
    settings = _settings(tmp_path)
    with TestClient(create_app(settings, start_workers=False)) as client:
        cases = [
            (b"definitely not a video" * 100, {"Content-Type": "video/mp4"}, {}, 422),
            (b"", {"Content-Type": "video/mp4"}, {}, 422),
            (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500, {"Content-Type": "video/mp4"}, {}, 422),
            (b"abc", {"Content-Type": "text/plain"}, {}, 415),
            (b"abc", {"Content-Type": "video/mp4"}, {"scale": 7}, 422),
            (b"abc", {"Content-Type": "video/mp4"}, {"method": "magic"}, 422),
        ]
        for body, headers, params, status in cases:
            r = client.post("/v1/assets", content=body, headers=headers, params=params)
            assert r.status_code == status, (status, r.text)
            assert r.headers["content-type"] == PROBLEM
            problem = r.json()
            assert problem["status"] == status and problem["title"] and "detail" in problem
        assert client.get("/v1/assets").json()["items"] == []
    assert list(settings.assets_dir.iterdir()) == []
    assert list(settings.uploads_dir.iterdir()) == []


def test_declared_oversize_upload_is_413(tmp_path):
    settings = _settings(tmp_path, max_upload_bytes=1000)
    with TestClient(create_app(settings, start_workers=False)) as client:
        r = client.post("/v1/assets", content=b"x" * 5000, headers={"Content-Type": "video/mp4"})
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    assert list(settings.uploads_dir.iterdir()) == []


def test_multipart_upload_and_delete(tmp_path, leaf_piece):
    settings = _settings(tmp_path)
    with TestClient(create_app(settings, start_workers=False)) as client:
        r = client.post("/v1/assets", files={"file": ("leaf.mp4", leaf_piece.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text
        asset_id = r.json()["id"]
        assert (settings.assets_dir / asset_id / "source.mp4").is_file()
        # queued: DELETE cancels the job first, then removes it
        assert client.delete(f"/v1/assets/{asset_id}").status_code == 204
        assert client.get(f"/v1/assets/{asset_id}").status_code == 404
    assert not (settings.assets_dir / asset_id).exists()


def test_compare_renders_the_players_frames(served):
    import cv2
    import numpy as np

    client, a, settings, _ = served
    pngs = {}
    for mode in ("lanczos", "fitcast"):
        r = client.get(f"/v1/assets/{a['id']}/compare", params={"segment": 1, "frame": 3, "mode": mode})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        pngs[mode] = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert pngs[mode].shape == (360, 640, 3)  # the chaplin piece (whole patches already)
    assert (pngs["lanczos"] != pngs["fitcast"]).any()
    r = client.get(f"/v1/assets/{a['id']}/compare", params={"segment": 0, "frame": 999})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/vendor/hls.min.js").status_code == 200


def test_metrics_show_the_job_its_stages_and_the_requests(served):
    client, a, settings, seen = served
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'fitcast_jobs{state="ready"} 1.0' in text
    assert 'fitcast_job_stage_seconds_count{stage="train"} 1.0' in text
    assert "fitcast_job_lease_takeovers_total 0.0" in text
    assert 'fitcast_http_requests_total{method="GET",route="/v1/assets/{asset_id}",status="200"}' in text
    assert 'route="/v1/assets",status="202"' in text


def test_requests_carry_an_id(served):
    client, a, settings, seen = served
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "not a sane id\n"})
    assert len(r.headers["x-request-id"]) == 32  # replaced by a fresh one


def test_a_webhook_receiver_gets_the_signed_events(served, receiver):
    import json
    import time

    from server.webhooks import SIGNATURE_HEADER, verify

    client, a, settings, seen = served
    deadline = time.time() + 30
    while time.time() < deadline and not any(b'"asset.ready"' in body for _, body, _ in receiver.received):
        time.sleep(0.1)
    events = [json.loads(body) for _, body, _ in receiver.received]
    assert [e["type"] for e in events if e["data"]["id"] == a["id"]][-2:] == ["asset.processing", "asset.ready"]
    for headers, body, received in receiver.received:  # checked as the receiver did, when each arrived
        assert verify("s3cret", body, headers[SIGNATURE_HEADER], now=received)
        assert not verify("wrong", body, headers[SIGNATURE_HEADER], now=received)
    old = headers[SIGNATURE_HEADER]
    assert not verify("s3cret", body, old, now=received + 3600)  # a replay an hour later is refused
