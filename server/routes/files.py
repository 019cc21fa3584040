"""An asset's files: ``/v1/assets/{id}/hls/…``, ``/sr/…``, ``/report/…`` (and a ladder's ``/rungs/…``).

Range requests, ETag with If-None-Match → 304, and ``Cache-Control: immutable``
for content-addressed files (models, label maps, plans).

A *signed* asset's files need ``?token=`` (a playback token of that asset, unexpired) or the
owner's API key.  Its playlists and manifest are served with the token added to every URI
they carry, so an HLS player (hls.js, Safari) or ``fitcast play`` given one tokenised URL
fetches everything else with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from fitcast.errors import ForbiddenError, NotFoundError, UnauthorizedError
from fitcast.storage import resolve_inside
from server import problems
from server.deps import AssetDirDep, KeysDep, StoreDep, principal
from server.jobs import Job
from server.security import check_playback_token

router = APIRouter(prefix="/v1/assets", tags=["files"])

MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".xz": "application/x-xz",  # models: xz-coded ONNX (manifest "encoding")
    ".pte": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".png": "image/png",
}


@router.get("/{asset_id}/{area}/{path:path}", name="asset_file", operation_id="get_asset_file",
            responses={200: {"description": "the file (Range requests honoured)",
                             "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}},
                       206: {"description": "part of the file"}, 304: {"description": "not modified"},
                       **problems.responses(403, 404, 416, 422)})
@router.head("/{asset_id}/{area}/{path:path}", operation_id="head_asset_file",
             responses={200: {"description": "the file's headers"}, 304: {"description": "not modified"},
                        **problems.responses(403, 404, 416, 422)})
def asset_file(request: Request, asset_dir: AssetDirDep, store: StoreDep, keys: KeysDep,
               area: Literal["hls", "sr", "report", "rungs"], path: str,
               token: Annotated[str | None, Query(max_length=200, description="playback token (signed assets)")] = None,
               ) -> Response:
    asset_id = asset_dir.name
    job = store.get(asset_id)
    if job is None:
        raise NotFoundError(f"no asset {asset_id!r}")
    signed = job.playback == "signed"
    if signed:
        _authorise(request, keys, job, token)
    area_dir = asset_dir / area
    target = resolve_inside(area_dir, path)
    parts = target.relative_to(area_dir.resolve()).parts
    if not target.is_file() or any(part.startswith(".") for part in parts) \
            or area == "rungs" and (len(parts) < 3 or parts[1] not in ("hls", "sr", "report")):  # a rung's own asset
        raise NotFoundError(f"no file {area}/{path} in asset {asset_id}")
    immutable = target.parent.name in ("models", "labels", "plans") and (
        area == "sr" or area == "rungs" and target.parent.parent.name == "sr")
    stat = target.stat()
    etag = f'"{target.name.split(".", 1)[0]}"' if immutable else f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {
        "etag": etag,
        "cache-control": ("private" if signed else "public") + ", max-age=31536000, immutable" if immutable
        else "no-cache",
        "access-control-allow-origin": "*",
    }
    rewrite = signed and token is not None and target.suffix in (".m3u8", ".json") and area != "report" \
        and "report" not in parts
    if rewrite:  # the token goes into every URI the file carries: the etag depends on it
        headers["etag"] = f'"{etag.strip(chr(34))}-{hashlib.sha256(token.encode()).hexdigest()[:12]}"'
        headers["cache-control"] = "private, no-cache"
    inm = request.headers.get("if-none-match")
    if inm and headers["etag"] in [t.strip() for t in inm.split(",")] or inm == "*":
        return Response(status_code=304, headers=headers)
    media_type = MEDIA_TYPES.get(target.suffix, "application/octet-stream")
    if rewrite:
        assert token is not None
        return Response(_with_token(target, token), media_type=media_type, headers=headers)
    return FileResponse(target, media_type=media_type, headers=headers)


def _authorise(request: Request, keys: KeysDep, job: Job, token: str | None) -> None:
    """A signed asset's file: a valid playback token, or the owner's (or an admin's) API key."""
    has_key = "authorization" in request.headers or "x-api-key" in request.headers
    if has_key and token is None:
        try:
            caller = principal(request, keys)
        except UnauthorizedError:
            raise ForbiddenError("this asset needs a playback token or its owner's key") from None
        if caller.may_see(job):
            return
    why = check_playback_token(request.app.state.secret, job.id, token)
    if why is not None:
        raise ForbiddenError(why)


_URI_ATTR = re.compile(r'URI="([^"]*)"')


def _add_token(uri: str, token: str) -> str:
    if not uri or uri.startswith("#"):
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}token={quote(token)}"


def _with_token(path: Path, token: str) -> bytes:
    """A playlist or manifest with ``token`` added to every URI it carries."""
    text = path.read_text()
    if path.suffix == ".m3u8":
        lines = []
        for line in text.splitlines():
            if line.startswith("#"):
                line = _URI_ATTR.sub(lambda m: f'URI="{_add_token(m.group(1), token)}"', line)
            elif line.strip():
                line = _add_token(line.strip(), token)
            lines.append(line)
        return ("\n".join(lines) + "\n").encode()
    data = json.loads(text)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: _add_token(v, token) if isinstance(v, str) and k.endswith("uri") else walk(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return json.dumps(walk(data), indent=2).encode()
