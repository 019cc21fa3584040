"""What an operator watches: request ids, JSON logs and Prometheus metrics.

- every request gets an id (``X-Request-ID``: the caller's when it is a sane token, else a new
  one), echoed in the response and carried by every log line written while it runs;
- ``fitcast serve`` logs one JSON object per line (:class:`JsonFormatter`);
- ``GET /metrics`` (Prometheus text format): requests and their latency by route and status,
  jobs by state, stage seconds of finished encodes and lease takeovers (read from the job
  table at each scrape, so the worker processes need no shared registry).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.jobs import STATES, JobStore

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("fitcast_request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, request id (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage(),
                               "request_id": REQUEST_ID.get()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def log_config() -> dict[str, Any]:
    """The logging configuration of ``fitcast serve`` (uvicorn's loggers included): JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {"default": handler},
            "root": {"handlers": ["default"], "level": "INFO"},
            "loggers": {name: {"handlers": ["default"], "level": "INFO", "propagate": False}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "server")}}


class Metrics:
    """The service's Prometheus registry (one per app: tests build many apps in one process)."""

    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fitcast_http_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("fitcast_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.registry.register(_JobCollector(store))


class _JobCollector:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Any:
        jobs = self.store.all()
        by_state = GaugeMetricFamily("fitcast_jobs", "encode jobs by state", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], sum(1 for j in jobs if j.status == state))
        yield by_state
        stages = SummaryMetricFamily("fitcast_job_stage_seconds", "seconds of each stage of finished encodes",
                                     labels=["stage"])
        totals: dict[str, list[float]] = {}
        for job in jobs:
            for stage, seconds in (job.seconds or {}).items():
                totals.setdefault(stage, []).append(float(seconds))
        for stage, values in sorted(totals.items()):
            stages.add_metric([stage], count_value=len(values), sum_value=sum(values))
        yield stages
        takeovers = CounterMetricFamily("fitcast_job_lease_takeovers", "jobs taken over from a lapsed lease")
        takeovers.add_metric([], sum(j.takeovers for j in jobs))
        yield takeovers


class RequestIdMiddleware:
    """Request ids, and each request counted and timed by its route (pure ASGI: streaming stays streaming)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("unmatched" if status["code"] == 404 else "other")
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - t0)
            REQUEST_ID.reset(token)
