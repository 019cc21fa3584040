"""An asset's files: ``/v1/assets/{id}/hls/…``, ``/sr/…``, ``/report/…``.

Range requests, ETag with If-None-Match → 304, and ``Cache-Control: immutable``
for content-addressed files (models and label maps).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from fitcast.errors import NotFoundError
from fitcast.storage import resolve_inside
from server import problems
from server.deps import AssetDirDep

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
                       **problems.responses(404, 416, 422)})
@router.head("/{asset_id}/{area}/{path:path}", operation_id="head_asset_file",
             responses={200: {"description": "the file's headers"}, 304: {"description": "not modified"},
                        **problems.responses(404, 416, 422)})
def asset_file(request: Request, asset_dir: AssetDirDep, area: Literal["hls", "sr", "report"], path: str) -> Response:
    asset_id = asset_dir.name
    area_dir = asset_dir / area
    target = resolve_inside(area_dir, path)
    if not target.is_file() or any(part.startswith(".") for part in target.relative_to(area_dir.resolve()).parts):
        raise NotFoundError(f"no file {area}/{path} in asset {asset_id}")
    immutable = area == "sr" and target.parent.name in ("models", "labels")
    stat = target.stat()
    etag = f'"{target.name.split(".", 1)[0]}"' if immutable else f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {
        "etag": etag,
        "cache-control": "public, max-age=31536000, immutable" if immutable else "no-cache",
        "access-control-allow-origin": "*",
    }
    inm = request.headers.get("if-none-match")
    if inm and etag in [t.strip() for t in inm.split(",")] or inm == "*":
        return Response(status_code=304, headers=headers)
    return FileResponse(target, media_type=MEDIA_TYPES.get(target.suffix, "application/octet-stream"), headers=headers)
