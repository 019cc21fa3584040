"""``/v1/assets``: upload (starts an encode), status and progress, listing, deletion."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fitcast.errors import ConflictError, InvalidInputError, NotFoundError, TooLargeError, UnsupportedMediaError
from fitcast.media import probe
from fitcast.options import EncodeOptions, UploadOptions
from fitcast.storage import sha256_file
from server import problems
from server.deps import AssetIdDep, SettingsDep, StoreDep
from server.jobs import Job
from sr_models.recipes import recipe_for

router = APIRouter(prefix="/v1/assets", tags=["assets"])

_EXT = {"mov": "mp4", "mp4": "mp4", "matroska": "mkv", "webm": "webm", "avi": "avi", "mpegts": "ts", "mpeg": "mpg"}


class Progress(BaseModel):
    stage: str | None
    fraction: float | None


class AssetOut(BaseModel):
    id: str
    status: Literal["queued", "processing", "ready", "errored"]
    progress: Progress
    playable: bool
    error: dict[str, Any] | None = None
    options: dict[str, Any]
    source: dict[str, Any]
    created: float
    updated: float
    links: dict[str, str]


class AssetList(BaseModel):
    items: list[AssetOut]
    next_cursor: str | None


def _asset_out(request: Request, job: Job) -> AssetOut:
    base = str(request.url_for("get_asset", asset_id=job.id))
    return AssetOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=Progress(stage=job.stage, fraction=job.fraction),
        playable=job.playable or job.status == "ready",
        error=job.error,
        options=job.options,
        source={"name": job.source_name, "bytes": job.source_bytes, "sha256": job.source_sha256},
        created=job.created,
        updated=job.updated,
        links={
            "self": base,
            "master": f"{base}/hls/master.m3u8",
            "manifest": f"{base}/sr/manifest.json",
            "report": f"{base}/report/quality.json",
        },
    )


def _get_job(store: StoreDep, asset_id: AssetIdDep) -> Job:
    job = store.get(asset_id)
    if job is None:
        raise NotFoundError(f"no asset {asset_id!r}")
    return job


JobDep = Annotated[Job, Depends(_get_job)]


async def _receive_body(request: Request, dest: Path, limit: int) -> None:
    """Stream the raw body (or the multipart ``file`` field) to ``dest`` within ``limit`` bytes."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    written = 0
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInputError("multipart upload needs a 'file' field")
        async with await anyio.open_file(dest, "wb") as out:  # writes in a worker thread: the loop keeps serving
            while chunk := await upload.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise TooLargeError(f"upload exceeds {limit} bytes")
                await out.write(chunk)
        await form.close()
    elif ctype.startswith("video/") or ctype == "application/octet-stream":
        async with await anyio.open_file(dest, "wb") as out:
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit:
                    raise TooLargeError(f"upload exceeds {limit} bytes")
                await out.write(chunk)
    else:
        raise UnsupportedMediaError(
            f"Content-Type {ctype or '(none)'} is not accepted: send the file as video/*, "
            "application/octet-stream or multipart/form-data"
        )
    if written == 0:
        raise InvalidInputError("the upload is empty")


@router.post("", status_code=202, response_model=AssetOut,
             responses={200: {"model": AssetOut, "description": "an earlier upload with the same Idempotency-Key"},
                        **problems.responses(400, 413, 415, 422)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}}})
async def create_asset(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    upload: Annotated[UploadOptions, Query()],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Upload a video (raw body or multipart ``file``) and start its encode."""
    if idempotency_key:
        existing = store.by_idempotency_key(idempotency_key)
        if existing is not None:
            return JSONResponse(_asset_out(request, existing).model_dump(), status_code=200)
    options = EncodeOptions(**upload.model_dump())
    recipe_for(options)  # refuse what the method cannot serve (e.g. no generic model at x3) before the upload
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise TooLargeError(f"upload of {declared} bytes exceeds the limit of {settings.max_upload_bytes}")

    asset_id = "a" + secrets.token_hex(8)
    tmp = settings.uploads_dir / f"{asset_id}.part"
    try:
        await _receive_body(request, tmp, settings.max_upload_bytes)
        info = await run_in_threadpool(lambda: probe(tmp, name="upload"))
        digest = await run_in_threadpool(sha256_file, tmp)
        asset_dir = settings.assets_dir / asset_id
        asset_dir.mkdir(parents=True)
        ext = next((_EXT[n] for n in info.container.split(",") if n in _EXT), "bin")
        source_name = f"source.{ext}"
        size = tmp.stat().st_size
        os.replace(tmp, asset_dir / source_name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        job = store.create(asset_id, upload.model_dump(mode="json"), source_name=source_name, source_bytes=size,
                           source_sha256=digest,
                           idempotency_key=idempotency_key)
    except Exception:
        shutil.rmtree(settings.assets_dir / asset_id, ignore_errors=True)
        if idempotency_key and (existing := store.by_idempotency_key(idempotency_key)) is not None:
            return JSONResponse(_asset_out(request, existing).model_dump(), status_code=200)
        raise
    out = _asset_out(request, job)
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.links["self"]})


@router.get("", response_model=AssetList, responses=problems.responses(422))
def list_assets(
    request: Request,
    store: StoreDep,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,15}$",
                                        description="next_cursor of the previous page (opaque)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AssetList:
    after = int(cursor, 16) if cursor else 0
    jobs = store.list(after_seq=after, limit=limit + 1)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    next_cursor = f"{jobs[-1].seq:x}" if more else None
    return AssetList(items=[_asset_out(request, j) for j in jobs], next_cursor=next_cursor)


@router.get("/{asset_id}", response_model=AssetOut, name="get_asset", responses=problems.responses(404, 422))
def get_asset(request: Request, job: JobDep) -> AssetOut:
    return _asset_out(request, job)


@router.delete("/{asset_id}", status_code=204, responses=problems.responses(404, 409, 422))
def delete_asset(job: JobDep, settings: SettingsDep, store: StoreDep) -> Response:
    asset_id = job.id
    if job.status in ("queued", "processing"):
        raise ConflictError(f"asset {asset_id} is {job.status}; delete it when it is ready or errored")
    asset_dir = settings.assets_dir / asset_id
    trash = settings.assets_dir / f".{asset_id}.deleted"
    if asset_dir.exists():
        os.replace(asset_dir, trash)
    store.delete(asset_id)
    shutil.rmtree(trash, ignore_errors=True)
    return Response(status_code=204)
