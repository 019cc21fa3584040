"""Typed dependencies of the routes (the FastAPI full-stack template's ``deps`` module): the
settings, the job store, the caller (:class:`Principal`, from the API key) and a validated
asset id, instead of reaching into ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from fitcast.config import Settings
from fitcast.errors import InvalidInputError, NotFoundError, UnauthorizedError
from fitcast.storage import validate_asset_id
from server.jobs import Job, JobStore
from server.keys import LOCAL_OWNER, KeyStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner id their assets carry, and whether they see every asset."""

    owner: str
    admin: bool

    def may_see(self, job: Job) -> bool:
        return self.admin or job.owner == self.owner


def principal(request: Request, keys: KeysDep) -> Principal:
    """The caller of a management call.  Without any key configured the service is a one-user
    tool (everything belongs to ``local``); with keys, ``Authorization: Bearer <key>`` (or
    ``X-API-Key``) is required: 401 otherwise."""
    if not keys.any_active():
        return Principal(LOCAL_OWNER, admin=True)
    auth = request.headers.get("authorization", "")
    text = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    key = keys.verify(text) if text else None
    if key is None:
        raise UnauthorizedError("a valid API key is required (Authorization: Bearer fck_…; `fitcast keys create`)"
                                if not text else "the API key is not valid (unknown, malformed or revoked)")
    request.state.principal = key.id  # for the access log and the rate limiter
    return Principal(key.id, admin=key.admin)


def asset_id_path(asset_id: str) -> str:
    """The ``{asset_id}`` path parameter, validated: a malformed id is a 404 like a missing one."""
    try:
        return validate_asset_id(asset_id)
    except InvalidInputError:
        raise NotFoundError(f"no asset {asset_id!r}") from None


def asset_dir(settings: SettingsDep, asset_id: AssetIdDep) -> Path:
    return settings.assets_dir / asset_id


def owned_job(store: StoreDep, asset_id: AssetIdDep, caller: PrincipalDep) -> Job:
    """The job of ``{asset_id}`` if the caller may see it; another owner's asset is a 404 like a
    missing one (its existence is not disclosed)."""
    job = store.get(asset_id)
    if job is None or not caller.may_see(job):
        raise NotFoundError(f"no asset {asset_id!r}")
    return job


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
PrincipalDep = Annotated[Principal, Depends(principal)]
OwnedJobDep = Annotated[Job, Depends(owned_job)]
AssetIdDep = Annotated[str, Depends(asset_id_path)]
AssetDirDep = Annotated[Path, Depends(asset_dir)]
