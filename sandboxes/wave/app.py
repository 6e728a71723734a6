"""The Wave sandbox as a Starlette app: `POST /graphql/public` (Bearer token) plus JSON admin routes under /_admin.

Request handling follows what is known of Wave: the document is parsed and validated and its variables coerced
before the token is checked (so CI can validate documents without credentials), then it is executed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandboxes.faults import FaultInjector, admin_routes
from sandboxes.wave.config import WaveSandboxConfig
from sandboxes.wave.graphql_api import Renderer, build_executable_schema, enum_descriptions, new_schema
from sandboxes.wave.oauth import OAuthSandboxConfig, OAuthServer, attach_root_queries
from sandboxes.wave.oauth import routes as oauth_routes
from sandboxes.wave.seed import seed_business
from sandboxes.wave.store import InputErrors, UnknownRecord, WaveStore

GRAPHQL_PATH = "/graphql/public"
DOCUMENT_CACHE_SIZE = 256  # distinct query texts kept parsed and validated
_BUSINESS_LISTS = ("customers", "customer", "products", "product", "invoices", "invoice", "accounts", "account")


def _error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, "id": str(uuid.uuid4())}}


def _format(error: GraphQLError, default_code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = dict(error.formatted)
    extensions: dict[str, Any] = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", default_code)
    extensions["id"] = str(uuid.uuid4())
    formatted["extensions"] = extensions
    return formatted


def _fields(selection_set: SelectionSetNode | None, fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    found: list[FieldNode] = []
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            found.extend(_fields(selection.selection_set, fragments))
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            found.extend(_fields(fragments[selection.name.value].selection_set, fragments))
    return found


def operation_names(document: DocumentNode, operation: OperationDefinitionNode | None) -> list[str]:
    """What a request touches, for the call counters: `customerCreate`, `business.customers`, `business`."""
    if operation is None:
        return ["invalid"]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    names: list[str] = []
    for root in _fields(operation.selection_set, fragments):
        name = root.name.value
        if name.startswith("__"):
            name = "introspection"
        elif name == "business":
            inner = [f.name.value for f in _fields(root.selection_set, fragments) if f.name.value in _BUSINESS_LISTS]
            names.extend(f"business.{n}" for n in inner)
            if inner:
                continue
        names.append(name)
    return list(dict.fromkeys(names)) or ["invalid"]


def _deleted(delete: Callable[[str], None], record_id: str) -> dict[str, str]:
    delete(record_id)
    return {"deleted": record_id}


class WaveSandbox:
    """One sandbox: its store, executable schema, fault injector and Starlette app."""

    def __init__(self, config: WaveSandboxConfig) -> None:
        self.config = config
        self.schema = new_schema()
        currencies = enum_descriptions(self.schema, "CurrencyCode")
        countries = enum_descriptions(self.schema, "CountryCode")
        self.store = WaveStore(config, frozenset(currencies), frozenset(countries))
        self.render = Renderer(self.store, currencies, countries)
        build_executable_schema(self.store, self.schema)
        self.oauth = OAuthServer(config.oauth, config.clock) if config.oauth is not None else None
        attach_root_queries(self, (config.oauth or OAuthSandboxConfig()).user)
        self.injector = FaultInjector(config.faults)
        self._parsed: dict[str, DocumentNode] = {}
        self._validated: dict[int, tuple[DocumentNode, list[GraphQLError]]] = {}
        self.app = Starlette(routes=self._routes())
        self.app.state.sandbox = self

    # ----- GraphQL ---------------------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return token in self.config.tokens or (self.oauth is not None and self.oauth.accepts(token))

    # Clients send the same dozen documents over and over; parsing and validating them was most of the
    # sandbox's CPU (measured by the benchmark), which slowed every test and skewed the benchmark's figures.
    def _parse(self, query: str) -> DocumentNode:
        document = self._parsed.get(query)
        if document is None:
            document = parse(query)
            if len(self._parsed) < DOCUMENT_CACHE_SIZE:
                self._parsed[query] = document
        return document

    def _validate(self, document: DocumentNode) -> list[GraphQLError]:
        key = id(document)
        cached = self._validated.get(key)
        if cached is None or cached[0] is not document:
            cached = (document, validate(self.schema, document))
            if len(self._validated) < DOCUMENT_CACHE_SIZE:
                self._validated[key] = cached
        return list(cached[1])

    async def graphql(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            message = "POST body missing, invalid Content-Type, or JSON object has no 'query' key."
            return JSONResponse({"errors": [_error(message, "BAD_REQUEST")]}, status_code=400)
        variables = body.get("variables") or {}
        operation_name = body.get("operationName")
        try:
            document = self._parse(body["query"])
        except GraphQLError as exc:
            errors = [_format(exc, "GRAPHQL_PARSE_FAILED")]
            return JSONResponse({"errors": errors}, status_code=self.config.validation_error_status)
        operation = get_operation_ast(document, operation_name if isinstance(operation_name, str) else None)
        names = operation_names(document, operation)
        is_write = operation is not None and operation.operation == OperationType.MUTATION

        async def call() -> Response:
            return self._execute(request, document, operation, variables, operation_name)

        return await self.injector.run("+".join(names), is_write, call)

    def _execute(
        self,
        request: Request,
        document: DocumentNode,
        operation: OperationDefinitionNode | None,
        variables: Any,
        operation_name: Any,
    ) -> Response:
        bad_status = self.config.validation_error_status
        errors = self._validate(document)
        if errors or operation is None:
            if not errors:
                errors = [GraphQLError("Must provide a single operation or a valid operationName.")]
            return JSONResponse(
                {"errors": [_format(e, "GRAPHQL_VALIDATION_FAILED") for e in errors]}, status_code=bad_status
            )
        if not isinstance(variables, dict):
            return JSONResponse({"errors": [_error("Variables must be an object.", "BAD_USER_INPUT")]}, bad_status)
        coerced = get_variable_values(self.schema, operation.variable_definitions or (), variables)
        if isinstance(coerced, list):
            return JSONResponse({"errors": [_format(e, "BAD_USER_INPUT") for e in coerced]}, status_code=bad_status)
        introspection_only = all(n == "introspection" for n in operation_names(document, operation))
        if not introspection_only and not self._authorized(request):
            error = _error("You must be logged in to perform this action.", "UNAUTHENTICATED")
            return JSONResponse({"errors": [error]}, status_code=self.config.auth_failure_status)
        result = execute_sync(
            self.schema,
            document,
            variable_values=variables,
            operation_name=operation_name if isinstance(operation_name, str) else None,
        )
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [_format(e, "INTERNAL_SERVER_ERROR") for e in result.errors]
        return JSONResponse(payload)

    # ----- admin -----------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        render = self.render
        businesses = []
        for b in self.store.businesses.values():
            invoices = []
            for i in b.invoices.values():
                payments = [{"amount": str(p.amount), "paymentDate": p.payment_date.isoformat()} for p in i.payments]
                invoices.append({**render.invoice(b, i), "payments": payments})
            businesses.append(
                {
                    "id": b.global_id,
                    "name": b.name,
                    "currency": b.currency,
                    "customers": [render.customer(b, c) for c in b.customers.values() if not c.deleted],
                    "deletedCustomers": [b.gid("Customer", c.number) for c in b.customers.values() if c.deleted],
                    "products": [render.product(b, p) for p in b.products.values() if not p.deleted],
                    "invoices": invoices,
                    "accounts": [render.account(b, a) for a in b.accounts.values()],
                }
            )
        return {"businesses": businesses}

    async def _admin_call(self, action: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(action())
        except UnknownRecord as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        except InputErrors as exc:
            if any(e.code == "NOT_FOUND" and e.path[-1:] in (("id",), ("invoiceId",)) for e in exc.errors):
                return JSONResponse({"error": exc.errors[0].message}, status_code=404)
            return JSONResponse({"inputErrors": [e.as_json() for e in exc.errors]}, status_code=422)

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def admin_seed(self, request: Request) -> Response:
        body = await self._json(request)
        try:
            business = (
                self.store.business(str(body["businessId"]))
                if body.get("businessId")
                else next(iter(self.store.businesses.values()))
            )
            counts = {k: int(body.get(k, 0)) for k in ("customers", "products", "invoices")}
            lines, seed = int(body.get("lines", 3)), int(body.get("seed", 1))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        except UnknownRecord as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        try:
            created = seed_business(self.store, business, **counts, lines=lines, seed=seed)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(created)

    async def admin_reset(self, _request: Request) -> Response:
        self.store.reset()
        if self.oauth is not None:
            self.oauth.reset()
        self.injector.configure(self.config.faults)
        self.injector.reset_counters()
        return JSONResponse({"ok": True})

    async def admin_snapshot(self, _request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def admin_payment(self, request: Request) -> Response:
        body = await self._json(request)
        store, render = self.store, self.render
        return await self._admin_call(
            lambda: render.invoice(
                *store.record_payment(str(body.get("invoiceId")), body.get("amount"), body.get("paymentDate"))
            )
        )

    async def admin_record(self, request: Request) -> Response:
        kind, record_id = request.path_params["kind"], request.path_params["id"]
        store, render = self.store, self.render
        actions: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("customers", "PATCH"): lambda b: render.customer(*store.patch_customer({**b, "id": record_id})),
            ("products", "PATCH"): lambda b: render.product(*store.patch_product({**b, "id": record_id})),
            ("invoices", "PATCH"): lambda b: render.invoice(
                *store.patch_invoice({**b, "id": record_id}, enforce_state=False)
            ),
            ("customers", "DELETE"): lambda _b: _deleted(store.delete_customer, record_id),
            ("products", "DELETE"): lambda _b: _deleted(store.delete_product, record_id),
            ("invoices", "DELETE"): lambda _b: _deleted(
                lambda i: store.delete_invoice(i, enforce_state=False), record_id
            ),
        }
        action = actions.get((kind, request.method))
        if action is None:
            return JSONResponse({"error": f"unknown record kind {kind!r}"}, status_code=404)
        body = await self._json(request)
        return await self._admin_call(lambda: action(body))

    async def admin_archive(self, request: Request) -> Response:
        record_id = request.path_params["id"]
        return await self._admin_call(lambda: self.render.product(*self.store.archive_product(record_id)))

    async def admin_business(self, request: Request) -> Response:
        """Flags a person changes in Wave's settings: `{"isArchived", "isClassicInvoicing", "businessId"?}`."""
        body = await self._json(request)
        flags = {"isArchived": "is_archived", "isClassicInvoicing": "is_classic_invoicing"}
        if any(not isinstance(body[key], bool) for key in flags if key in body):
            return JSONResponse({"error": "isArchived and isClassicInvoicing must be booleans"}, status_code=422)

        def change() -> dict[str, Any]:
            store = self.store
            business = (
                store.business(str(body["businessId"]))
                if body.get("businessId")
                else next(iter(store.businesses.values()))
            )
            for key, attribute in flags.items():
                if key in body:
                    setattr(business, attribute, body[key])
            rendered = self.render.business(business)
            return {key: rendered[key] for key in ("id", "name", "isArchived", "isClassicInvoicing")}

        return await self._admin_call(change)

    def _routes(self) -> list[Route]:
        def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], *methods: str) -> Route:
            return Route(path, endpoint, methods=list(methods))

        return [
            route(GRAPHQL_PATH, self.graphql, "POST"),
            *(oauth_routes(self, self.oauth) if self.oauth is not None else []),
            *admin_routes(self.injector),
            route("/_admin/seed", self.admin_seed, "POST"),
            route("/_admin/reset", self.admin_reset, "POST"),
            route("/_admin/snapshot", self.admin_snapshot, "GET"),
            route("/_admin/payments", self.admin_payment, "POST"),
            route("/_admin/products/{id}/archive", self.admin_archive, "POST"),
            route("/_admin/business", self.admin_business, "PATCH"),
            route("/_admin/{kind}/{id}", self.admin_record, "PATCH", "DELETE"),
        ]


def create_app(config: WaveSandboxConfig | None = None) -> Starlette:
    """The Wave sandbox ASGI app; `app.state.sandbox` is the `WaveSandbox` (store, injector) behind it."""
    return WaveSandbox(config or WaveSandboxConfig()).app
