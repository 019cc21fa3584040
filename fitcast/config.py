"""Service settings (pydantic-settings): from ``FITCAST_*`` environment variables or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FITCAST_", extra="ignore")

    root: Path = Field(default=Path("fitcast-data"), description="asset store: assets/, jobs.sqlite")
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(default=2 * 1024**3, description="uploads larger than this get 413")
    job_workers: int = Field(default=1, ge=1, description="encodes running at once")
    executor: Literal["inline", "process"] = "inline"
    executor_workers: int = 2
    poll_seconds: float = 0.5
    # Encode overrides for every job (tests use tiny budgets).
    train_iterations: int | None = None

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite"
