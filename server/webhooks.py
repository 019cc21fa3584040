"""Signed webhooks on job state changes, so clients need not poll (Mux and Cloudflare Stream do the same).

Each event is a JSON body ``{"id", "type": "asset.processing" | "asset.ready" | "asset.errored",
"created", "data": {"id", "status", "error"?}}`` POSTed to ``FITCAST_WEBHOOK_URL`` with the header
``Fitcast-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with FITCAST_WEBHOOK_SECRET>``
(the Stripe scheme: a receiver recomputes it and refuses old timestamps).  Deliveries run in a
background thread with retries and exponential backoff (stamina) on connection errors, timeouts,
429 and 5xx; a receiver that keeps failing loses the event after ``attempts`` tries (logged).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from typing import Any

import httpx
import stamina

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "Fitcast-Signature"
EVENTS = {"processing": "asset.processing", "ready": "asset.ready", "errored": "asset.errored"}


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and is recent (within ``tolerance`` seconds)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class _Retryable(Exception):
    pass


class WebhookSender:
    """Delivers events in order from a queue, in a daemon thread."""

    def __init__(self, url: str, secret: str, *, attempts: int = 5, timeout: float = 5.0) -> None:
        self.url, self.secret, self.attempts, self.timeout = url, secret, attempts, timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fitcast-webhooks", daemon=True)
        self._thread.start()

    def notify(self, asset_id: str, status: str, error: dict[str, Any] | None = None) -> None:
        if status not in EVENTS:
            return
        data: dict[str, Any] = {"id": asset_id, "status": status}
        if error:
            data["error"] = {k: error[k] for k in ("type", "title", "status") if k in error}
        self._queue.put({"id": f"evt_{uuid.uuid4().hex}", "type": EVENTS[status], "created": time.time(),
                         "data": data})

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while (event := self._queue.get()) is not None:
                try:
                    self._deliver(client, event)
                except Exception as exc:  # noqa: BLE001 - a lost event is logged, the thread lives on
                    log.warning("webhook %s (%s) not delivered: %s", event["id"], event["type"], exc)

    def _deliver(self, client: httpx.Client, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        for attempt in stamina.retry_context(on=(httpx.TransportError, _Retryable), attempts=self.attempts,
                                             wait_initial=0.2, wait_max=10.0):
            with attempt:
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body,
                                                                                     int(time.time()))}
                r = client.post(self.url, content=body, headers=headers)
                if r.status_code == 429 or r.status_code >= 500:
                    raise _Retryable(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    log.warning("webhook %s refused by the receiver: HTTP %s", event["id"], r.status_code)
