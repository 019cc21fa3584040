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
    # Where an encode's training fan-out runs: in the worker, on a local process pool, or on Ray
    # (pip install 'fitcast[ray]'; ray_address None starts a local instance).
    executor: Literal["inline", "process", "ray"] = "inline"
    executor_workers: int = 2
    ray_address: str | None = None
    poll_seconds: float = 0.5
    # A running job's lease: renewed every poll while its worker lives; a job whose lease ran out
    # (its server died) is taken over by the next dispatcher that looks.
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # Encode overrides for every job (tests use tiny budgets).
    train_iterations: int | None = None
    # Where encodes train their models: auto = a GPU when torch sees one, else the CPU.
    train_device: str = "auto"
    # Signed webhooks on job state changes (server.webhooks): where, and the shared secret.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # JSON log lines (one object each) from `fitcast serve`.
    json_logs: bool = True

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite"
