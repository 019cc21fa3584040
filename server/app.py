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
from server.keys import KeyStore
from server.observability import Metrics, RequestIdMiddleware
from server.routes import assets, compare, files
from server.security import HostOriginMiddleware, RateLimitMiddleware, load_secret
from server.sweep import sweep_store
from server.webhooks import WebhookSender
from server.worker import Dispatcher

STATIC = Path(__file__).with_name("static")


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    """Build the service over ``settings.root``; ``start_workers=False`` serves without encoding (tests)."""
    settings = settings or Settings()
    settings.assets_dir.mkdir(parents=True, exist_ok=True)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.db_path)
    keys = KeyStore(settings.db_path)
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
            sweep_store(settings, store)  # what a crash left: partial uploads, trash, orphans
            dispatcher.start()
        yield
        dispatcher.stop()
        if webhooks is not None:
            webhooks.close()

    app = FastAPI(title="fitcast", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.keys = keys
    app.state.secret = load_secret(settings.root)
    app.state.dispatcher = dispatcher
    problems.install(app)
    app.include_router(assets.router)
    app.include_router(compare.router)
    app.include_router(files.router)
    # outermost last: request ids and metrics see everything, then Host/Origin, then the rate limit
    app.add_middleware(RateLimitMiddleware, rate=settings.rate_per_second, burst=settings.rate_burst,
                       delay=settings.rate_limit_delay)
    app.add_middleware(HostOriginMiddleware, allowed_hosts=settings.allowed_hosts,
                       allowed_origins=settings.allowed_origins)
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


def serve(settings: Settings) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM, within the HTTP bounds of ``settings``
    (header timeout, connection cap, keep-alive 5 s); on the signal every encode worker is ended
    at once, before the graceful wait for open connections (at most 5 s)."""
    import resource

    import uvicorn

    from server.security import bounded_protocol

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, settings.max_connections * 2 + 256))
    if want > soft:  # room for max_connections sockets beside the files being served
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    log_config = None
    if settings.json_logs:
        from server.observability import log_config as json_log_config

        log_config = json_log_config()
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            log_config=log_config or uvicorn.config.LOGGING_CONFIG,
                            http=bounded_protocol(settings.header_timeout, settings.max_connections),
                            timeout_keep_alive=5, timeout_graceful_shutdown=5,
                            h11_max_incomplete_event_size=64 * 1024)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.dispatcher.halt()  # workers end now, not after the connections drain
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    Server(config).run()
