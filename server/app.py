"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fitcast import __version__
from fitcast.config import Settings
from server import problems
from server.jobs import JobStore
from server.observability import Metrics, RequestIdMiddleware
from server.routes import assets, compare, files
from server.webhooks import WebhookSender
from server.worker import Dispatcher

STATIC = Path(__file__).with_name("static")


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    """Build the service over ``settings.root``; ``start_workers=False`` serves without encoding (tests)."""
    settings = settings or Settings()
    settings.assets_dir.mkdir(parents=True, exist_ok=True)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.db_path)
    webhooks = WebhookSender(settings.webhook_url, settings.webhook_secret or "") if settings.webhook_url else None

    def changed(asset_id: str) -> None:
        job = store.get(asset_id)
        if webhooks is not None and job is not None:
            webhooks.notify(asset_id, job.status, job.error)

    dispatcher = Dispatcher(store, settings.model_dump_json(), workers=settings.job_workers, poll=settings.poll_seconds,
                            lease_seconds=settings.job_lease_seconds, on_change=changed)
    metrics = Metrics(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_workers:
            dispatcher.start()
        yield
        dispatcher.stop()
        if webhooks is not None:
            webhooks.close()

    app = FastAPI(title="fitcast", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.dispatcher = dispatcher
    problems.install(app)
    app.include_router(assets.router)
    app.include_router(compare.router)
    app.include_router(files.router)
    app.add_middleware(RequestIdMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    # the web page (upload, progress, player with the lanczos/fitcast comparison); hls.js is vendored
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    logging.getLogger("server").setLevel(logging.INFO)
    return app
