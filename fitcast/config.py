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
    # Encode seconds per second of source (of 720p30 above that size) that bound how far training
    # grows with a source's length (EncodeOptions.encode_budget; 0: no limit).
    encode_budget: float = Field(default=60.0, ge=0)
    # Where encodes train their models: auto = a GPU when torch sees one, else the CPU.
    train_device: str = "auto"
    # Signed webhooks on job state changes (server.webhooks): where, and the shared secret.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # JSON log lines (one object each) from `fitcast serve`.
    json_logs: bool = True
    # Trust boundary (server.security, server.keys).  Host names the service answers for ("*": any,
    # for a proxy that checks Host itself); origins besides its own whose pages may POST/DELETE.
    allowed_hosts: list[str] = ["127.0.0.1", "localhost", "::1", "[::1]"]
    allowed_origins: list[str] = []
    # Bounded work: jobs queued or processing per key and in all; source bytes stored per key.
    max_active_per_key: int = Field(default=4, ge=1)
    max_active: int = Field(default=32, ge=1)
    quota_bytes: int = Field(default=20 * 1024**3, ge=0)
    # The HTTP server's bounds: request headers must arrive within header_timeout; an upload that
    # sends nothing for body_idle_timeout is dropped; connections over max_connections are closed.
    header_timeout: float = Field(default=10.0, gt=0)
    body_idle_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=512, ge=8)
    # Playback tokens (signed assets): the longest lifetime a caller may ask for.
    max_token_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # /compare renders waiting at once (more get 429); seconds of rendering each client (API key,
    # or the asset a playback token opens) may use a minute (over it, 429 until it refills).
    compare_queue: int = Field(default=4, ge=1)
    compare_render_seconds: float = Field(default=6.0, gt=0)
    # Encodes are batch work: their processes run at this nice value so that serving (playlists,
    # segments) keeps the CPU it needs while a worker trains (0: the server's own priority).
    worker_nice: int = Field(default=10, ge=0, le=19)
    # Management calls (/v1/assets and below, files excepted) per client (key, else address):
    # a token bucket of rate_burst calls refilled at rate_per_second; over it, 429 with Retry-After.
    rate_per_second: float = Field(default=20.0, gt=0)
    rate_burst: int = Field(default=60, ge=1)
    # Seconds a client over its rate waits for its 429 (a client that ignores Retry-After then
    # gets at most one answer per connection in that time; 0: at once).
    rate_limit_delay: float = Field(default=1.0, ge=0, le=30)

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite"
