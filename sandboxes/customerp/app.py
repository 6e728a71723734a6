"""The Customerp sandbox: a Starlette app serving the published ERP REST contract (openapi.yaml) from memory.

API routes live under /api/v1 and need an X-API-Key; /_admin/* (faults, counters, seed, reset, snapshot and
user-like edits that skip If-Match) and /openapi.yaml are open, as befits a test double.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.resources import files
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandboxes.customerp.seed import SeedRequest, seed_store
from sandboxes.customerp.store import LIST_FILTERS, NONCONFORMING, ApiError, Entry, Store
from sandboxes.customerp.validation import RESOURCES, Problem, Resource
from sandboxes.faults import FaultConfig, FaultInjector, admin_routes

API_PREFIX = "/api/v1"
DEFAULT_API_KEY = "customerp-sandbox-key"
MAX_BODY_BYTES = 1_000_000
MAX_PAGE_SIZE = 500
_ETAG = re.compile(r'(?:W/)?"([0-9]{1,18})"')


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CustomerpSandboxConfig:
    """Start-up settings. `clock` is called for every write; tests pass a frozen or stepping clock."""

    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    read_only_api_keys: tuple[str, ...] = ()  # accepted for reads, 403 on writes
    faults: FaultConfig = field(default_factory=FaultConfig)
    clock: Callable[[], datetime] = _utc_now
    # Names from store.NONCONFORMING: deliberate contract breaks for the conformance kit's own tests.
    nonconforming: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.nonconforming - NONCONFORMING
        if unknown:
            raise ValueError(f"unknown nonconforming switches: {', '.join(sorted(unknown))}")


def problem(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(exc.status).phrase,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
    }
    if exc.errors:
        body["errors"] = [e.to_json() for e in exc.errors]
    body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status, headers=headers, media_type="application/problem+json")


def record_response(entry: Entry, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(entry.render(), status_code=status, headers={"ETag": f'"{entry.version}"', **(headers or {})})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from exc


def query_params(request: Request, allowed: set[str]) -> dict[str, str]:
    params = dict(request.query_params)
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            "Unknown query parameter: " + ", ".join(unknown),
            errors=[Problem(("query", name), "is not a known parameter", "unknown_field") for name in unknown],
        )
    return params


def int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be an integer from {low} to {high}.",
            errors=[Problem(("query", name), f"must be an integer from {low} to {high}", "invalid")],
        )
    return int(raw)


def if_match(request: Request, *, required: bool) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        if required:
            raise ApiError(428, "precondition_required", 'Send If-Match: "<version>" with the version you last read.')
        return None
    match = _ETAG.fullmatch(raw.strip())
    if match is None:
        raise ApiError(400, "invalid_if_match", 'If-Match must be an entity tag like "3".')
    return int(match.group(1))


def by_method(path: str, **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path, so a wrong method gets 405 with the full Allow list."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))


def create_app(config: CustomerpSandboxConfig | None = None) -> Starlette:
    config = config or CustomerpSandboxConfig()
    store = Store(clock=config.clock, nonconforming=config.nonconforming)
    broken = config.nonconforming
    injector = FaultInjector(config.faults)
    all_keys = (*config.api_keys, *config.read_only_api_keys)

    def authorise(request: Request, is_write: bool) -> None:
        key = request.headers.get("x-api-key", "")
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in all_keys):
            raise ApiError(401, "unauthenticated", "Missing or unknown X-API-Key.")
        if is_write and key in config.read_only_api_keys:
            raise ApiError(403, "forbidden", "This API key may only read.")

    def operation(
        resource: Resource, name: str, is_write: bool, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            async def call() -> Response:
                try:
                    authorise(request, is_write)
                    return await handler(request)
                except ApiError as exc:
                    return problem(exc)

            return await injector.run(f"{resource}.{name}", is_write, call)

        return endpoint

    def reply(entry: Entry, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        """A record answer of the API, with the switched-on breaks of record answers applied."""
        body = entry.render()
        if status == 201 and "create_without_version" in broken:
            del body["version"]
        tag = {"ETag": f'"{entry.version}"'}
        if "no_etag" in broken:
            tag = {}
        elif "etag_not_version" in broken:
            tag = {"ETag": f'"{int(entry.updated_at.timestamp() * 1000)}"'}
        return JSONResponse(body, status_code=status, headers={**tag, **(headers or {})})

    def feed_item(entry: Entry) -> dict[str, Any]:
        item = entry.render()
        if entry.deleted and "bare_tombstones" in broken:
            del item["version"]
        return item

    def api_routes(resource: Resource) -> list[BaseRoute]:
        base = f"{API_PREFIX}/{resource}"

        async def changes(request: Request) -> Response:
            params = query_params(request, {"updated_since", "cursor", "limit"})
            limit = int_param(params, "limit", 100, 1, MAX_PAGE_SIZE)
            since = None
            if "updated_since" in params:
                try:
                    since = datetime.fromisoformat(params["updated_since"])
                except ValueError:
                    since = None
                if "lenient_query" in broken and (since is None or since.tzinfo is None):
                    since = None
                elif since is None or since.tzinfo is None:
                    raise ApiError(
                        400,
                        "invalid_parameter",
                        "updated_since must be an RFC 3339 timestamp with a time zone.",
                        errors=[Problem(("query", "updated_since"), "must be RFC 3339 with an offset", "invalid")],
                    )
            cursor = params.get("cursor")
            if cursor is not None and not 1 <= len(cursor) <= 500:
                raise ApiError(400, "invalid_cursor", "The cursor is not one this server issued.")
            page, next_cursor, has_more = store.changes(resource, since=since, cursor=cursor, limit=limit)
            return JSONResponse(
                {"items": [feed_item(e) for e in page], "next_cursor": next_cursor, "has_more": has_more}
            )

        async def list_records(request: Request) -> Response:
            filters = set(LIST_FILTERS[resource])
            params = query_params(request, filters | {"page", "limit"})
            page = int_param(params, "page", 1, 1, 1_000_000)
            limit = int_param(params, "limit", 100, 1, MAX_PAGE_SIZE)
            matches = store.find(resource, {k: v for k, v in params.items() if k in filters})
            start = (page - 1) * limit
            items = matches[start : start + limit]
            return JSONResponse(
                {"items": [e.render() for e in items], "page": page, "has_more": len(matches) > start + limit}
            )

        async def get(request: Request) -> Response:
            try:
                return reply(store.get(resource, request.path_params["id"]))
            except ApiError as exc:
                if exc.status == 404 and "not_found_empty_200" in broken:
                    return Response(status_code=200)
                raise

        async def create(request: Request) -> Response:
            key = request.headers.get("idempotency-key")
            if key is not None and not 1 <= len(key) <= 255:
                raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters.")
            if "ignores_idempotency_key" in broken:
                key = None
            entry, replayed = store.create(resource, await json_body(request), idempotency_key=key)
            if replayed:
                return reply(entry, 200, {"Idempotent-Replayed": "true"})
            return reply(entry, 201, {"Location": f"{base}/{entry.id}"})

        async def update(request: Request) -> Response:
            version = None if "no_if_match" in broken else if_match(request, required=True)
            body = await json_body(request)
            entry = store.update(resource, request.path_params["id"], body, if_match=version)
            return reply(entry)

        async def delete(request: Request) -> Response:
            store.delete(resource, request.path_params["id"], if_match=if_match(request, required=False))
            return Response(status_code=204)

        return [
            Route(f"{base}/changes", operation(resource, "changes", False, changes), methods=["GET"]),
            by_method(
                base,
                GET=operation(resource, "list", False, list_records),
                POST=operation(resource, "create", True, create),
            ),
            by_method(
                f"{base}/{{id}}",
                GET=operation(resource, "get", False, get),
                PATCH=operation(resource, "update", True, update),
                DELETE=operation(resource, "delete", True, delete),
            ),
        ]

    def user_edit_routes(resource: Resource) -> list[BaseRoute]:
        """A person editing in the ERP's screens: same rules as the API, but no key, If-Match or counting."""

        async def create(request: Request) -> Response:
            try:
                entry, _ = store.create(resource, await json_body(request))
            except ApiError as exc:
                return problem(exc)
            return record_response(entry, 201)

        async def update(request: Request) -> Response:
            try:
                body = await json_body(request)
                return record_response(store.update(resource, request.path_params["id"], body, if_match=None))
            except ApiError as exc:
                return problem(exc)

        async def delete(request: Request) -> Response:
            try:
                store.delete(resource, request.path_params["id"], if_match=None)
            except ApiError as exc:
                return problem(exc)
            return Response(status_code=204)

        return [
            Route(f"/_admin/{resource}", create, methods=["POST"]),
            by_method(f"/_admin/{resource}/{{id}}", PATCH=update, DELETE=delete),
        ]

    async def seed(request: Request) -> Response:
        raw = await request.body()
        try:
            seed_request = SeedRequest.model_validate_json(raw or b"{}")
            return JSONResponse(seed_store(store, seed_request), status_code=201)
        except ValidationError as exc:
            errors = [Problem(tuple(str(p) for p in e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
            return problem(ApiError(422, "validation_failed", "Invalid seed request.", errors=errors))
        except ApiError as exc:
            return problem(exc)

    async def reset(request: Request) -> Response:
        store.reset()
        injector.configure(config.faults)
        injector.reset_counters()
        return Response(status_code=204)

    async def snapshot(request: Request) -> Response:
        return JSONResponse(store.snapshot())

    async def openapi(request: Request) -> Response:
        text = files("sandboxes.customerp").joinpath("openapi.yaml").read_text(encoding="utf-8")
        return Response(text, media_type="application/yaml")

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # pragma: no cover - Starlette only routes HTTPException here
            raise exc
        return problem(ApiError(exc.status_code, "http_error", HTTPStatus(exc.status_code).phrase), exc.headers)

    routes: list[BaseRoute] = [
        *admin_routes(injector),
        Route("/_admin/seed", seed, methods=["POST"]),
        Route("/_admin/reset", reset, methods=["POST"]),
        Route("/_admin/snapshot", snapshot, methods=["GET"]),
        Route("/openapi.yaml", openapi, methods=["GET"]),
    ]
    for resource in RESOURCES:
        routes += api_routes(resource)
        routes += user_edit_routes(resource)
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.store = store
    app.state.injector = injector
    return app
