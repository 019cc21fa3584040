"""A player that trusts nothing: hostile assets, local and remote, each refused with one line.

Every case tampers with a copy of a real encode (the leaf asset) the way a hostile server
would: paths out of the asset, URLs off its origin, redirects elsewhere, oversized or slow
downloads, label maps that inflate, impossible sizes, and ONNX models that are programs
rather than fitcast networks.  Hostile models play in a subprocess, so a runtime crash or
hang would show as a signal or a timeout instead of taking the test process down.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fitcast.asset import Fetcher, open_asset
from fitcast.errors import (
    FetchError,
    InvalidInputError,
    ManifestError,
    TooLargeError,
    UnsafeLocationError,
    UnsafeModelError,
)
from fitcast.manifest import compress_model
from fitcast.modelcheck import check_model

# ---------------------------------------------------------------- tampering with a copy


@pytest.fixture
def asset(tmp_path, leaf_asset) -> Path:
    out = tmp_path / "asset"
    shutil.copytree(leaf_asset, out)
    return out


def edit_manifest(asset: Path, change: Callable[[dict], None]) -> None:
    path = asset / "sr" / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def put_file(asset: Path, relative: str, data: bytes) -> str:
    (asset / "sr" / relative).parent.mkdir(parents=True, exist_ok=True)
    (asset / "sr" / relative).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def play_cli(location: str | Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fitcast", "play", str(location), "--headless", "--max-frames", "3",
                           *extra], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode in (1, 2), (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fitcast: error:"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ---------------------------------------------------------------- local assets


def test_the_untampered_copy_plays(asset):
    out = play_cli(asset)
    assert out.returncode == 0, out.stderr


def test_segment_and_init_paths_stay_inside_the_asset(asset, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    edit_manifest(asset, lambda m: m["segments"][0].update(uri="../../secret.bin", sha256=None, bytes=None))
    with pytest.raises(UnsafeLocationError, match="outside the asset"):
        open_asset(str(asset)).segment(open_asset(str(asset)).manifest.segments[0])
    edit_manifest(asset, lambda m: m.update(init_uri="/etc/passwd", init_sha256=None))
    with pytest.raises(UnsafeLocationError):
        open_asset(str(asset)).init()
    assert_one_line_error(play_cli(asset), "not a path inside the asset")


def test_an_oversized_segment_is_not_read_into_memory(asset, tmp_path):
    seg = asset / "hls" / "seg_00000.m4s"
    original = seg.read_bytes()
    try:
        with open(seg, "r+b") as f:  # sparse: 300 MB on the file system for free
            f.truncate(300 << 20)
        edit_manifest(asset, lambda m: m["segments"][0].update(sha256=None, bytes=None))
        a = open_asset(str(asset), Fetcher(cache_dir=tmp_path / "cache"))
        with pytest.raises(TooLargeError):
            a.segment(a.manifest.segments[0])
        edit_manifest(asset, lambda m: m["segments"][0].update(bytes=1000))  # the size the manifest states binds
        a = open_asset(str(asset), Fetcher(cache_dir=tmp_path / "cache"))
        with pytest.raises(TooLargeError, match="1000"):
            a.segment(a.manifest.segments[0])
    finally:
        seg.write_bytes(original)  # the session's playlist check measures every rendition left on disk


def test_an_oversized_local_master_playlist_is_not_read(tmp_path):
    from fitcast.asset import MAX_PLAYLIST_BYTES

    master = tmp_path / "master.m3u8"
    with open(master, "wb") as f:  # sparse: the size is all it has
        f.truncate(MAX_PLAYLIST_BYTES + 1)
    with pytest.raises(TooLargeError, match=str(MAX_PLAYLIST_BYTES)):
        open_asset(str(master), Fetcher(cache_dir=tmp_path / "cache"))


def test_a_swapped_segment_fails_its_sha256(asset, tmp_path):
    a = open_asset(str(asset))
    first, second = a.manifest.segments[:2]
    assert first.sha256 and a.manifest.init_sha256, "the encoder writes segment and init digests"
    edit_manifest(asset, lambda m: m["segments"][0].update(uri=second.uri, bytes=None))
    swapped = open_asset(str(asset), Fetcher(cache_dir=tmp_path / "cache"))
    with pytest.raises(ValueError, match="sha256"):
        swapped.segment(swapped.manifest.segments[0])


def test_a_label_map_bomb_is_refused_before_it_inflates(asset):
    a = open_asset(str(asset))
    seg = a.manifest.segments[0]
    bomb = io.BytesIO()
    np.savez_compressed(bomb, labels=np.zeros((100, 1000, 1000), np.uint8))  # 100 MB of zeros in ~100 kB
    digest = put_file(asset, "labels/bomb.npz", bomb.getvalue())
    edit_manifest(asset, lambda m: m["segments"][0].update(labels_uri="labels/bomb.npz", labels_sha256=digest))
    with pytest.raises(InvalidInputError, match=rf"expected uint8\[{seg.frames}"):
        a2 = open_asset(str(asset))
        a2.labels(a2.manifest.segments[0])
    # a member whose header claims the right shape but whose data inflates far past it
    liar = io.BytesIO()
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as z:
        header = io.BytesIO()
        np.lib.format.write_array(header, np.zeros((seg.frames, *a.manifest.grid().shape), np.uint8))
        z.writestr("labels.npy", header.getvalue() + bytes(64 << 20))
    digest = put_file(asset, "labels/liar.npz", liar.getvalue())
    edit_manifest(asset, lambda m: m["segments"][0].update(labels_uri="labels/liar.npz", labels_sha256=digest))
    with pytest.raises(InvalidInputError, match="inflates"):
        a3 = open_asset(str(asset))
        a3.labels(a3.manifest.segments[0])


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(hr=[600000, 600000], lr=[300000, 300000]), "hr"),
    (lambda m: m["patch"].update(grid=[100000, 1]), "patch"),
    (lambda m: m["segments"][0].update(frames=10 ** 9), "frames"),
    (lambda m: m["models"][0].update(sha256="../../etc/passwd"), "sha256"),
    (lambda m: m.update(fps=1e12), "fps"),
    (lambda m: m.update(segments=[]), "segments"),
], ids=["sizes", "grid", "frames", "digest", "fps", "no-segments"])
def test_manifest_numbers_are_bounded(asset, change, words):
    edit_manifest(asset, change)
    with pytest.raises(ManifestError, match=words):
        open_asset(str(asset))


def test_an_impossible_manifest_ends_the_player_with_one_line(asset):
    edit_manifest(asset, lambda m: m.update(hr=[600000, 600000], lr=[300000, 300000]))
    assert_one_line_error(play_cli(asset), "invalid manifest")


# ---------------------------------------------------------------- models that are programs


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> bytes:
    graph = helper.make_graph(nodes, "evil", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _image(name: str, dims=("n", 3, "h", "w")):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def hostile_models(tmp_dir: Path) -> dict[str, bytes]:
    x, y = _image("x"), _image("y")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _image("v_in")],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _image("v_out")])
    loop = _model([helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], [x], [y], [
        helper.make_tensor("trips", TensorProto.INT64, [], [10 ** 12]),
        helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    (tmp_dir / "weights.bin").write_bytes(np.ones(3, np.float32).tobytes())
    ext = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [0.0, 0.0, 0.0])
    ext.ClearField("float_data")
    ext.data_location = TensorProto.EXTERNAL
    entry = ext.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    external = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [x], [_image("y", ("n", 1, "h", "w"))], [ext])
    custom = onnx.helper.make_node("Evil", ["x"], ["y"], domain="com.evil")
    return {
        "garbage": b"\x08\x07\x12\x05" + bytes(range(185)),
        "loop": loop,
        "external-data": external,
        "custom-op": _model([custom], [x], [y]),
        "resize": _model([helper.make_node("Resize", ["x", "", "s"], ["y"])], [x], [y],
                         [helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 1e5, 1e5])]),
        "huge-input": _model([helper.make_node("Relu", ["x"], ["y"])], [_image("x", (1, 3, 300000, 300000))], [y]),
        "future-opset": _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], opset=99),
    }


def test_fitcast_models_pass_the_check(leaf_asset, planned_asset):
    for location in (leaf_asset, planned_asset):
        a = open_asset(str(location))
        for entry in a.manifest.models:
            a.read_model(entry)  # raises if the check refuses fitcast's own networks


def test_hostile_models_are_refused_before_loading(tmp_path):
    for name, data in hostile_models(tmp_path).items():
        with pytest.raises(UnsafeModelError):
            check_model(data, name=name)


HOSTILE_PLAY = """
import contextlib, io, json, sys
from fitcast.cli import main
results = {}
for name, location in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["play", location, "--headless", "--max-frames", "3"])
    results[name] = [rc, err.getvalue()]
print(json.dumps(results))
"""


def test_hostile_models_end_the_player_with_one_line(asset, tmp_path):
    """Each hostile model in place of the asset's models: the player (one subprocess for all, so
    a runtime crash shows as a signal and a hang as the timeout) ends each with one line."""
    names = ["garbage", "loop", "external-data", "resize", "huge-input"]
    models = hostile_models(tmp_path)
    locations = {}
    for name in names:
        copy = tmp_path / name
        shutil.copytree(asset, copy)
        stored = compress_model(models[name])
        digest = put_file(copy, f"models/{name}.onnx.xz", stored)
        (copy / "sr" / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes())

        def swap(m: dict, name: str = name, digest: str = digest, size: int = len(stored)) -> None:
            for entry in m["models"]:
                entry.update(uri=f"models/{name}.onnx.xz", sha256=digest, bytes=size, encoding="xz")
            for seg in m["segments"]:
                seg["routes"] = {label: m["models"][0]["id"] for label in seg["routes"]}

        edit_manifest(copy, swap)
        locations[name] = str(copy)
    out = subprocess.run([sys.executable, "-c", HOSTILE_PLAY, json.dumps(locations)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # a segfault would be -11
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for name in names:
        rc, err = results[name]
        lines = err.strip().splitlines()
        assert rc in (1, 2) and len(lines) == 1 and lines[0].startswith("fitcast: error: model"), (name, err)
        assert "refused before loading" in err or "not an ONNX model" in err, (name, err)


# ---------------------------------------------------------------- remote assets


class _Site:
    """A tiny HTTP server: ``routes`` maps a path to (status, headers, body or a body generator)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes | Callable[[], Iterator[bytes]]]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site.hits.append(self.path)
                status, headers, body = site.routes.get(self.path.split("?")[0], (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if callable(body):
                    self.end_headers()
                    try:
                        for chunk in body():
                            self.wfile.write(chunk)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve_asset(self, asset: Path) -> None:
        for path in asset.rglob("*"):
            if path.is_file():
                self.routes[f"/a/{path.relative_to(asset)}"] = (200, {}, path.read_bytes())

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def sites():
    made: list[_Site] = []

    def make() -> _Site:
        made.append(_Site())
        return made[-1]

    yield make
    for site in made:
        site.close()


def test_remote_uris_stay_on_the_manifests_origin(asset, sites, tmp_path):
    good, elsewhere = sites(), sites()
    elsewhere.routes["/internal"] = (200, {}, b"internal secret")
    edit_manifest(asset, lambda m: m["segments"][0].update(uri=f"{elsewhere.url}/internal", sha256=None, bytes=None))
    good.serve_asset(asset)
    a = open_asset(f"{good.url}/a/sr/manifest.json", Fetcher(cache_dir=tmp_path / "cache"))
    with pytest.raises(UnsafeLocationError, match="origin"):
        a.segment(a.manifest.segments[0])
    assert elsewhere.hits == []


def test_redirects_off_the_origin_are_not_followed(asset, sites, tmp_path):
    good, elsewhere = sites(), sites()
    elsewhere.routes["/internal"] = (200, {}, b"internal secret")
    good.serve_asset(asset)
    seg = open_asset(str(asset)).manifest.segments[0]
    good.routes["/a/hls/" + seg.uri.split("/")[-1]] = (302, {"Location": f"{elsewhere.url}/internal"}, b"")
    a = open_asset(f"{good.url}/a/sr/manifest.json", Fetcher(cache_dir=tmp_path / "cache"))
    with pytest.raises(UnsafeLocationError, match="redirected off its origin"):
        a.segment(a.manifest.segments[0])
    assert elsewhere.hits == []


def test_remote_downloads_have_a_size_cap_and_a_deadline(asset, sites, tmp_path):
    site = sites()
    site.serve_asset(asset)
    seg = open_asset(str(asset)).manifest.segments[0]
    name = "/a/hls/" + seg.uri.split("/")[-1]

    def endless() -> Iterator[bytes]:
        for _ in range(1 << 12):
            yield bytes(1 << 16)

    site.routes[name] = (200, {}, endless)  # no Content-Length: the cap must hold while reading
    a = open_asset(f"{site.url}/a/sr/manifest.json", Fetcher(cache_dir=tmp_path / "cache"))
    with pytest.raises(TooLargeError):
        a.segment(a.manifest.segments[0])

    def trickle() -> Iterator[bytes]:
        for _ in range(100):
            time.sleep(0.05)
            yield b"x"

    site.routes[name] = (200, {}, trickle)
    slow = open_asset(f"{site.url}/a/sr/manifest.json", Fetcher(cache_dir=tmp_path / "cache", deadline=1.0))
    started = time.monotonic()
    with pytest.raises(FetchError, match="within"):
        slow.segment(slow.manifest.segments[0])
    assert time.monotonic() - started < 3.0
