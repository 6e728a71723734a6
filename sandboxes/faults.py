"""Fault injection and call counting shared by both sandboxes, settable at start-up and through /_admin.

A sandbox handler wraps each API operation in `FaultInjector.run(operation, is_write, call)`. The injector
counts the call, then may delay it, refuse it (429 with Retry-After, 5xx), hang past a client's timeout, drop
the connection, or apply a write and lose its response — the case that makes naive retries duplicate records.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from h11 import LocalProtocolError
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class FaultConfig(BaseModel):
    """Every knob defaults to "behave"; shares are probabilities per call in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)  # share of calls answered 503 before doing anything
    rate_limit_rate: float = Field(0.0, ge=0, le=1)  # share of calls answered 429
    retry_after_s: float = Field(1.0, ge=0)
    max_in_flight: int | None = Field(None, ge=1)  # calls over the cap get 429 at once
    max_rps: float | None = Field(None, gt=0)  # a token bucket; calls over it get 429
    hang_rate: float = Field(0.0, ge=0, le=1)  # share of calls that sleep `hang_s` before answering
    hang_s: float = Field(30.0, ge=0)
    drop_rate: float = Field(0.0, ge=0, le=1)  # share of calls whose connection is cut with no answer
    lost_response_rate: float = Field(0.0, ge=0, le=1)  # share of writes applied whose answer is lost
    seed: int | None = None


class _DroppedConnection(Response):
    """Starts a response promising a body, sends part of it and stops: the client sees a broken connection."""

    def __init__(self) -> None:
        super().__init__(content=b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"data": {', "more_body": False})


class _DroppedOnPurpose(logging.Filter):
    """uvicorn logs a traceback for every connection `_DroppedConnection` cuts short; it is the fault asked for,
    not a sandbox error, so it is left out of the logs (a soak would otherwise print hundreds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, LocalProtocolError) and "Too little data" in str(exc))


def _quiet_dropped_connections() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedOnPurpose) for f in logger.filters):
        logger.addFilter(_DroppedOnPurpose())


class FaultInjector:
    """Holds the live fault configuration, the per-operation call counters and the throttling state."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.counters: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        # Seconds admitted calls spent inside the API (injected latency plus the sandbox's own work): what a
        # concurrency cap is really spent on, so a benchmark can tell the caller's idle slots from slow calls.
        self.busy_seconds = 0.0
        self._in_flight = 0
        self._tokens = 0.0
        self._last_refill = time.monotonic()
        self.configure(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        self._config = config
        self._random = random.Random(config.seed)
        self._tokens = config.max_rps or 0.0
        self._last_refill = time.monotonic()

    def update(self, **changes: Any) -> FaultConfig:
        self.configure(FaultConfig.model_validate({**self._config.model_dump(), **changes}))
        return self._config

    def reset_counters(self) -> None:
        self.counters.clear()
        self.faults_injected.clear()
        self.busy_seconds = 0.0

    def _roll(self, share: float) -> bool:
        return share > 0 and self._random.random() < share

    def _take_token(self) -> bool:
        rps = self._config.max_rps
        if rps is None:
            return True
        now = time.monotonic()
        self._tokens = min(rps, self._tokens + (now - self._last_refill) * rps)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _throttled(self, reason: str) -> Response:
        self.faults_injected["429"] += 1
        retry_after = self._config.retry_after_s
        return JSONResponse(
            {"errors": [{"message": f"Too many requests ({reason})", "extensions": {"code": "THROTTLED"}}]},
            status_code=429,
            headers={"Retry-After": f"{retry_after:g}"},
        )

    async def run(self, operation: str, is_write: bool, call: Callable[[], Awaitable[Response]]) -> Response:
        """Count `operation`, apply the configured faults around `call`, and return what the client sees."""
        self.counters[operation] += 1
        cfg = self._config
        if cfg.max_in_flight is not None and self._in_flight >= cfg.max_in_flight:
            return self._throttled("concurrency cap")
        if not self._take_token():
            return self._throttled("rate cap")
        if self._roll(cfg.rate_limit_rate):
            return self._throttled("injected")
        self._in_flight += 1
        admitted = time.monotonic()
        try:
            delay = cfg.latency_ms + (self._random.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0)
            if delay:
                await asyncio.sleep(delay / 1000)
            if self._roll(cfg.error_rate):
                self.faults_injected["5xx"] += 1
                return Response(
                    "<html><body><h1>503 Service Unavailable</h1></body></html>", 503, media_type="text/html"
                )
            if self._roll(cfg.hang_rate):
                self.faults_injected["hang"] += 1
                await asyncio.sleep(cfg.hang_s)
            if self._roll(cfg.drop_rate):
                self.faults_injected["drop"] += 1
                return _DroppedConnection()
            response = await call()
            if is_write and response.status_code < 400 and self._roll(cfg.lost_response_rate):
                self.faults_injected["lost_response"] += 1
                return _DroppedConnection()
            return response
        finally:
            self._in_flight -= 1
            self.busy_seconds += time.monotonic() - admitted


def admin_routes(injector: FaultInjector) -> list[Route]:
    """/_admin/faults (GET, PUT to replace, PATCH to change some knobs) and /_admin/counters (GET, DELETE)."""
    _quiet_dropped_connections()

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(injector.config.model_dump())
        body = await request.json()
        try:
            if request.method == "PUT":
                injector.configure(FaultConfig.model_validate(body))
            else:
                injector.update(**body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(injector.config.model_dump())

    async def counters(request: Request) -> Response:
        if request.method == "DELETE":
            injector.reset_counters()
        return JSONResponse(
            {
                "calls": dict(injector.counters),
                "faults": dict(injector.faults_injected),
                "busy_seconds": round(injector.busy_seconds, 3),
            }
        )

    return [
        Route("/_admin/faults", faults, methods=["GET", "PUT", "PATCH"]),
        Route("/_admin/counters", counters, methods=["GET", "DELETE"]),
    ]
