import json
import lzma

import pytest

from fitcast.errors import ManifestError, UnsupportedFormatError
from fitcast.manifest import MAX_MODEL_BYTES, Manifest, compress_model, decompress_model, parse


def test_manifest_round_trip(leaf_asset):
    text = (leaf_asset / "sr" / "manifest.json").read_text()
    m = parse(text)
    assert m.format == "fitcast/1" and m.scale == 2 and m.method == "stdo" and m.k == 2
    assert m.hr == (1280, 720) and m.lr == (640, 360)
    assert parse(m.to_json()) == m
    assert sum(s.frames for s in m.segments) == 30
    for seg in m.segments:
        assert set(seg.routes) == {"0", "1"}


def _data(leaf_asset):
    return json.loads((leaf_asset / "sr" / "manifest.json").read_text())


def test_unknown_fields_are_ignored_and_minor_versions_read(leaf_asset):
    data = _data(leaf_asset)
    data["format"] = "fitcast/1.4"
    data["future_field"] = {"x": 1}
    data["segments"][0]["something_new"] = 3
    m = parse(json.dumps(data))
    assert m.asset_id == data["asset_id"]


def test_unknown_major_version_is_refused(leaf_asset):
    data = _data(leaf_asset)
    data["format"] = "fitcast/3"
    with pytest.raises(UnsupportedFormatError, match="fitcast/3"):
        parse(json.dumps(data))
    with pytest.raises(ValueError):  # also a ValueError for callers that do not know fitcast
        Manifest.model_validate(data)


def test_malformed_manifests_give_clear_errors(leaf_asset):
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse("{nope")
    with pytest.raises(ManifestError, match="not a fitcast manifest"):
        parse(json.dumps({"format": "dash/1"}))
    data = _data(leaf_asset)
    data["scale"] = 5
    with pytest.raises(ManifestError, match="scale"):
        parse(json.dumps(data))


def test_models_ship_entropy_coded_and_smaller(leaf_asset):
    """Every shipped model is xz-coded; the stored bytes (what bits.models counts) are smaller
    than the ONNX they decode to, and decode to a loadable graph."""
    import onnx

    m = parse((leaf_asset / "sr" / "manifest.json").read_bytes())
    for entry in m.models:
        stored = (leaf_asset / "sr" / entry.uri).read_bytes()
        assert entry.encoding == "xz" and entry.bytes == len(stored)
        raw = decompress_model(stored, entry.encoding)
        assert len(raw) > len(stored)
        onnx.checker.check_model(onnx.load_from_string(raw))
    default = [e for e in m.models if e.precision == "int8"]
    assert m.bits.models == 8 * sum(e.bytes for e in default)


def test_corrupt_or_inflating_model_files_are_refused():
    with pytest.raises(ManifestError, match="corrupt"):
        decompress_model(b"not xz at all", "xz")
    with pytest.raises(ManifestError, match="truncated"):
        decompress_model(compress_model(b"x" * 1000)[:-20], "xz")
    with pytest.raises(ManifestError, match="inflates"):
        decompress_model(lzma.compress(bytes(MAX_MODEL_BYTES + 1), preset=0), "xz")
    with pytest.raises(ManifestError, match="unknown"):
        decompress_model(b"", "zstd")
