"""``/v1/assets``: upload (starts an encode), status and progress, listing, cancel, deletion,
playback tokens.  Every call acts for the caller's key (``deps.PrincipalDep``): an asset
belongs to the key that uploaded it, and another key's asset is a 404."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from python_multipart.multipart import MultipartParser, parse_options_header

from fitcast.config import Settings
from fitcast.errors import (
    InvalidInputError,
    RateLimitedError,
    RequestTimeoutError,
    TooLargeError,
    UnsupportedMediaError,
)
from fitcast.ladder import parse_rungs
from fitcast.media import probe
from fitcast.options import EncodeOptions, UploadOptions
from fitcast.storage import claim_asset_dir, sha256_file
from server import problems
from server.deps import OwnedJobDep, PrincipalDep, SettingsDep, StoreDep
from server.jobs import ACTIVE, Job, JobStore
from server.security import playback_token
from sr_models.recipes import recipe_for

router = APIRouter(prefix="/v1/assets", tags=["assets"])

_EXT = {"mov": "mp4", "mp4": "mp4", "matroska": "mkv", "webm": "webm", "avi": "avi", "mpegts": "ts", "mpeg": "mpg"}


class Progress(BaseModel):
    stage: str | None
    fraction: float | None


class AssetOut(BaseModel):
    id: str
    status: Literal["queued", "processing", "ready", "errored", "canceled"]
    progress: Progress
    playable: bool
    playback: Literal["public", "signed"]
    error: dict[str, Any] | None = None
    options: dict[str, Any]
    source: dict[str, Any]
    created: float
    updated: float
    links: dict[str, str]


class AssetList(BaseModel):
    items: list[AssetOut]
    next_cursor: str | None


class PlaybackToken(BaseModel):
    token: str
    expires: int
    links: dict[str, str]  # the master playlist and manifest URLs with the token in them


def _asset_out(request: Request, job: Job) -> AssetOut:
    base = str(request.url_for("get_asset", asset_id=job.id))
    return AssetOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=Progress(stage=job.stage, fraction=job.fraction),
        playable=(job.playable or job.status == "ready") and job.status != "canceled",
        playback=job.playback,  # type: ignore[arg-type]
        error=job.error,
        options=job.options,
        source={"name": job.source_name, "bytes": job.source_bytes, "sha256": job.source_sha256},
        created=job.created,
        updated=job.updated,
        links={
            "self": base,
            "master": f"{base}/hls/master.m3u8",
            **({"ladder": f"{base}/sr/ladder.json", "report": f"{base}/report/ladder.json"} if job.options.get("ladder")
               else {"manifest": f"{base}/sr/manifest.json", "report": f"{base}/report/quality.json"}),
        },
    )


async def _chunks(request: Request, idle: float) -> AsyncIterator[bytes]:
    """The request body's chunks; a client that sends nothing for ``idle`` seconds gets a 408."""
    stream = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeoutError(f"the upload stalled: nothing received for {idle:.0f} s") from None
        yield chunk


async def _receive_body(request: Request, dest: Path, limit: int, idle: float) -> None:
    """Stream the raw body, or the multipart ``file`` field, to ``dest``: at most ``limit`` bytes
    reach the disk, whatever the encoding (multipart is parsed as it streams, never spooled)."""
    ctype_header = request.headers.get("content-type", "")
    ctype = ctype_header.split(";")[0].strip().lower()
    written = 0
    if ctype == "multipart/form-data":
        written = await _receive_multipart(request, ctype_header, dest, limit, idle)
    elif ctype.startswith("video/") or ctype == "application/octet-stream":
        async with await anyio.open_file(dest, "wb") as out:  # writes in a worker thread: the loop keeps serving
            async for chunk in _chunks(request, idle):
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


MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and small fields beside the file


async def _receive_multipart(request: Request, ctype_header: str, dest: Path, limit: int, idle: float) -> int:
    """The ``file`` part of a multipart body, written to ``dest`` as it arrives; returns its size."""
    _, params = parse_options_header(ctype_header)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise InvalidInputError("multipart upload without a valid boundary")
    part: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "is_file": False, "files": 0}
    pending: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"], part["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["is_file"] = disposition.get(b"name") == b"file"
        if part["is_file"]:
            part["files"] += 1
            if part["files"] > 1:
                raise InvalidInputError("multipart upload with more than one 'file' field")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["is_file"]:
            pending.append(data[start:end])

    def on_part_begin() -> None:
        part["headers"], part["is_file"] = {}, False

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    received = written = 0
    async with await anyio.open_file(dest, "wb") as out:
        async for chunk in _chunks(request, idle):
            received += len(chunk)
            if received > limit + MULTIPART_OVERHEAD:
                raise TooLargeError(f"upload exceeds {limit} bytes")
            try:
                parser.write(chunk)
            except InvalidInputError:
                raise
            except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
                raise InvalidInputError(f"malformed multipart body: {exc}") from None
            for data in pending:
                written += len(data)
                if written > limit:
                    raise TooLargeError(f"upload exceeds {limit} bytes")
                await out.write(data)
            pending.clear()
    parser.finalize()
    if part["files"] == 0:
        raise InvalidInputError("multipart upload needs a 'file' field")
    return written


def _admit(store: JobStore, settings: Settings, owner: str, incoming: int) -> None:
    """Refuse an upload the caller's queue, the service's queue or the caller's quota cannot take."""
    active, used = store.usage(owner)
    if active >= settings.max_active_per_key:
        raise RateLimitedError(f"{active} of your encodes are queued or running (at most "
                               f"{settings.max_active_per_key}): wait for one, or cancel one", retry_after=30)
    if store.usage()[0] >= settings.max_active:
        raise RateLimitedError(f"the service has {settings.max_active} encodes queued or running: try again later",
                               retry_after=60)
    if used + incoming > settings.quota_bytes:
        raise TooLargeError(f"storage quota: your uploads hold {used} bytes, this one would pass the quota of "
                            f"{settings.quota_bytes}; delete assets first")


class UploadQuery(UploadOptions):
    """The query of an upload: the encode's options and the asset's playback policy."""

    playback: Annotated[Literal["public", "signed"], Field(
        description="public: anyone with the URLs plays it; signed: its files need a playback token")] = "public"


def _request_digest(options: dict[str, Any], playback: str, source_sha256: str) -> str:
    """What an idempotent upload carried: its options, playback policy and body."""
    text = json.dumps({"options": options, "playback": playback, "source": source_sha256}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@router.post("", status_code=202, response_model=AssetOut,
             responses={200: {"model": AssetOut, "description": "an earlier upload with the same Idempotency-Key"},
                        **problems.responses(400, 401, 403, 408, 413, 415, 422, 429)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}}})
async def create_asset(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    caller: PrincipalDep,
    query: Annotated[UploadQuery, Query()],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Upload a video (raw body or multipart ``file``) and start its encode."""
    playback = query.playback
    upload = UploadOptions(**query.model_dump(exclude={"playback"}))
    options = EncodeOptions(**upload.model_dump())
    recipe_for(options)  # refuse what the method cannot serve (e.g. no generic model at x3) before the upload
    if options.ladder:
        parse_rungs(options.ladder)  # one scale per rung, CRFs in range
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isdigit() else 0
    if declared > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        raise TooLargeError(f"upload of {declared} bytes exceeds the limit of {settings.max_upload_bytes}")
    existing = store.by_idempotency_key(caller.owner, idempotency_key) if idempotency_key else None
    if existing is None:
        _admit(store, settings, caller.owner, declared)

    asset_id = "a" + secrets.token_hex(8)
    tmp = settings.uploads_dir / f"{asset_id}.part"
    try:
        await _receive_body(request, tmp, settings.max_upload_bytes, settings.body_idle_timeout)
        digest = await run_in_threadpool(sha256_file, tmp)
        wanted = _request_digest(upload.model_dump(mode="json"), playback, digest)
        if existing is not None:  # a replay: the same request gets the same asset, another one is refused
            if existing.request_sha256 != wanted:
                raise InvalidInputError("this Idempotency-Key was used for a different upload (other options or "
                                        "another file): use a new key")
            return JSONResponse(_asset_out(request, existing).model_dump(), status_code=200)
        size = tmp.stat().st_size
        _admit(store, settings, caller.owner, size)  # again: other uploads may have finished meanwhile
        info = await run_in_threadpool(lambda: probe(tmp, name="upload"))
        asset_dir = settings.assets_dir / asset_id
        claim_asset_dir(asset_dir)
        ext = next((_EXT[n] for n in info.container.split(",") if n in _EXT), "bin")
        source_name = f"source.{ext}"
        os.replace(tmp, asset_dir / source_name)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        job = store.create(asset_id, upload.model_dump(mode="json"), source_name=source_name, source_bytes=size,
                           source_sha256=digest, idempotency_key=idempotency_key, owner=caller.owner,
                           playback=playback, request_sha256=wanted)
    except Exception:
        shutil.rmtree(settings.assets_dir / asset_id, ignore_errors=True)
        if idempotency_key and (existing := store.by_idempotency_key(caller.owner, idempotency_key)) is not None:
            if existing.request_sha256 != wanted:  # a concurrent upload took the key with another request
                raise InvalidInputError("this Idempotency-Key was used for a different upload: use a new key") from None
            return JSONResponse(_asset_out(request, existing).model_dump(), status_code=200)
        raise
    out = _asset_out(request, job)
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": out.links["self"]})


@router.get("", response_model=AssetList, responses=problems.responses(401, 422, 429))
def list_assets(
    request: Request,
    store: StoreDep,
    caller: PrincipalDep,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,15}$",
                                        description="next_cursor of the previous page (opaque)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AssetList:
    """The caller's assets (an admin key's: every asset), oldest first."""
    after = int(cursor, 16) if cursor else 0
    jobs = store.list(after_seq=after, limit=limit + 1, owner=None if caller.admin else caller.owner)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    next_cursor = f"{jobs[-1].seq:x}" if more else None
    return AssetList(items=[_asset_out(request, j) for j in jobs], next_cursor=next_cursor)


@router.get("/{asset_id}", response_model=AssetOut, name="get_asset", responses=problems.responses(401, 404, 422))
def get_asset(request: Request, job: OwnedJobDep) -> AssetOut:
    return _asset_out(request, job)


@router.post("/{asset_id}/cancel", response_model=AssetOut, responses=problems.responses(401, 404, 422, 429))
def cancel_asset(request: Request, job: OwnedJobDep, store: StoreDep) -> AssetOut:
    """Cancel a queued or running encode (a running one stops within a poll of its dispatcher);
    an ended job is returned as it is."""
    store.cancel(job.id)
    now = store.get(job.id)
    return _asset_out(request, now or job)


@router.delete("/{asset_id}", status_code=204, responses=problems.responses(401, 404, 422, 429))
def delete_asset(job: OwnedJobDep, settings: SettingsDep, store: StoreDep) -> Response:
    """Delete an asset and its files; a queued or running encode is canceled first."""
    asset_id = job.id
    if job.status in ACTIVE and store.cancel(asset_id) == "processing":
        deadline = time.monotonic() + 10  # the dispatcher stops the worker within a poll
        while (now := store.get(asset_id)) is not None and now.status == "processing" and time.monotonic() < deadline:
            time.sleep(0.1)
    asset_dir = settings.assets_dir / asset_id
    trash = settings.assets_dir / f".{asset_id}.deleted"
    if asset_dir.exists():
        os.replace(asset_dir, trash)  # a crash from here on is finished by the start-up sweep
    store.delete(asset_id)
    shutil.rmtree(trash, ignore_errors=True)
    return Response(status_code=204)


@router.post("/{asset_id}/playback-token", response_model=PlaybackToken,
             responses=problems.responses(401, 404, 422, 429))
def create_playback_token(
    request: Request,
    job: OwnedJobDep,
    settings: SettingsDep,
    ttl: Annotated[int, Query(ge=60, description="seconds the token stays valid")] = 3600,
) -> PlaybackToken:
    """A token that opens this asset's files (playlists, segments, manifest, models, label maps)
    until it expires: HLS players and ``fitcast play`` take the URLs in ``links`` as they are."""
    expires = int(time.time()) + min(ttl, settings.max_token_seconds)
    token = playback_token(request.app.state.secret, job.id, expires)
    base = str(request.url_for("get_asset", asset_id=job.id))
    return PlaybackToken(token=token, expires=expires, links={
        "master": f"{base}/hls/master.m3u8?token={token}", "manifest": f"{base}/sr/manifest.json?token={token}"})
