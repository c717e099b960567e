"""Webhook channel: POST the delivery's JSON, signed, with an idempotency key."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None = None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`, hex, as sent in X-DHO-Signature (`v1=`)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookSender:
    """Sends outbox deliveries to HTTP endpoints; a 2xx answer is success."""

    def __init__(self, client: httpx.AsyncClient, secret: str | None) -> None:
        self._client = client
        self._secret = secret

    async def send(self, delivery_id: str, url: str, body: str) -> SendOutcome:
        payload = body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery_id,
            "X-DHO-Delivery": delivery_id,
            "X-DHO-Timestamp": timestamp,
        }
        if self._secret:
            headers["X-DHO-Signature"] = signature(self._secret, timestamp, payload)
        started = time.perf_counter()
        try:
            response = await self._client.post(url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            elapsed = int((time.perf_counter() - started) * 1000)
            return SendOutcome(False, None, elapsed, f"{type(exc).__name__}: {exc}")
        elapsed = int((time.perf_counter() - started) * 1000)
        if response.is_success:
            return SendOutcome(True, response.status_code, elapsed)
        return SendOutcome(False, response.status_code, elapsed, f"HTTP {response.status_code}")
