"""Typed dependencies of the routes (the FastAPI full-stack template's ``deps`` module): the
settings, the job store and a validated asset id, instead of reaching into ``app.state``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from fitcast.config import Settings
from fitcast.errors import InvalidInputError, NotFoundError
from fitcast.storage import validate_asset_id
from server.jobs import JobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def asset_id_path(asset_id: str) -> str:
    """The ``{asset_id}`` path parameter, validated: a malformed id is a 404 like a missing one."""
    try:
        return validate_asset_id(asset_id)
    except InvalidInputError:
        raise NotFoundError(f"no asset {asset_id!r}") from None


def asset_dir(settings: SettingsDep, asset_id: AssetIdDep) -> Path:
    return settings.assets_dir / asset_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
AssetIdDep = Annotated[str, Depends(asset_id_path)]
AssetDirDep = Annotated[Path, Depends(asset_dir)]
