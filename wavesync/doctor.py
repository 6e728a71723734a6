"""`wavesync doctor`: a read-only preflight of Redis, beat, the link store, Wave, Customerp and the settings.

Each check is one line, ✓ (fine), ✗ (the sync will not work: the line says the fix in one sentence) or ! (a
warning: something doctor could not verify). Nothing here writes to any system: Wave and Customerp are only read,
Redis is asked for its configuration and the beat lease, the database for its revision (a missing SQLite file is
reported, not created). The one POST, the OAuth client probe, presents a refresh token that was never issued, so
the token endpoint has nothing to spend or rotate. Secrets never reach a line: every detail is redacted against
`Settings.secrets()` before it is shown.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from shared.settings import ENTITIES, Entity, Settings
from shared.wave import documents as wave_docs

Status = Literal["ok", "fail", "warn"]
MARKS: dict[Status, str] = {"ok": "✓", "fail": "✗", "warn": "!"}
CUSTOMERP_RESOURCES: tuple[Entity, ...] = ENTITIES
# What each flow reads and writes in Wave (write does not imply read, reference notes §1). Every flow writes to
# Wave (updates go both ways); `account:read` is needed only to find the income account of new products.
WAVE_SCOPES_BY_ENTITY: dict[Entity, tuple[str, ...]] = {
    "customers": ("customer:read", "customer:write"),
    "products": ("product:read", "product:write"),
    "orders": ("invoice:read", "invoice:write"),
}
# The Date header has a resolution of one second; a skew within that is not measurable.
DATE_RESOLUTION_S = 1.0
# The OAuth client probe's refresh token starts with this, so the token endpoint's logs show what it was.
PROBE_PREFIX = "wavesync-doctor-probe-"
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # only a well-formed code is shown: a body may echo the secret


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Check:
    area: str  # redis, database, wave, customerp, settings
    name: str  # stable, for --json consumers: "redis.eviction_policy"
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.detail}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


def ok(area: str, name: str, detail: str) -> Check:
    return Check(area, f"{area}.{name}", "ok", detail)


def fail(area: str, name: str, detail: str, fix: str) -> Check:
    return Check(area, f"{area}.{name}", "fail", detail, fix)


def warn(area: str, name: str, detail: str, fix: str = "") -> Check:
    return Check(area, f"{area}.{name}", "warn", detail, fix)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _server_date(response: httpx.Response) -> datetime | None:
    try:
        when = parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _first_answer(
    area: str,
    label: str,
    url: str,
    send: Callable[[], httpx.Response],
    now: Callable[[], datetime],
    overlap: float,
    *,
    unreachable: str,
    not_the_api: tuple[str, str],
) -> tuple[list[Check], httpx.Response | None]:
    """The first request to a system: whether it answers at all and like its API, and its clock skew. Returns the
    checks, and the response when there is one worth reading further (None: stop here)."""
    where = f"{label} at {url}"
    sent = now()
    try:
        response = send()
    except httpx.HTTPError as exc:
        return [fail(area, "reachable", f"{where} does not answer ({type(exc).__name__})", unreachable)], None
    received = now()
    if response.status_code >= 500 or "json" not in response.headers.get("content-type", ""):
        what, fix = not_the_api
        return [fail(area, "reachable", f"{where} answers HTTP {response.status_code} {what}", fix)], None
    return [
        ok(area, "reachable", f"{where} answers"),
        _skew_check(area, label, response, sent, received, overlap),
    ], response


def _skew_check(
    area: str, label: str, response: httpx.Response, sent: datetime, received: datetime, overlap: float
) -> Check:
    """The server's clock against ours, from its `Date` header, measured at the middle of the round trip."""
    server = _server_date(response)
    if server is None:
        return warn(area, "clock_skew", f"{label} sent no readable Date header: clock skew not measured")
    local = sent + (received - sent) / 2
    skew = (server - local).total_seconds()
    detail = f"{label} clock is {abs(skew):.0f} s {'ahead of' if skew >= 0 else 'behind'} this host"
    if abs(skew) <= overlap + DATE_RESOLUTION_S:
        return ok(area, "clock_skew", f"{detail} (poll overlap {overlap:g} s)")
    return fail(
        area,
        "clock_skew",
        f"{detail}, more than the poll overlap of {overlap:g} s",
        f"Synchronise this host's and {label}'s clocks (NTP), or raise WAVESYNC_POLL_OVERLAP above {abs(skew):.0f}.",
    )


# ----- Redis ------------------------------------------------------------------------------------------------------


def _redis_where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or ''}"  # no user or password


def check_redis(settings: Settings) -> list[Check]:
    import redis

    if settings.redis_url is None:
        return [ok("redis", "reachable", "Redis: embedded Valkey (started by `wavesync up`, configured by it)")]
    url = str(settings.redis_url)
    where = _redis_where(url)
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return [
            fail(
                "redis",
                "reachable",
                f"Redis at {where} does not answer ({_first_line(exc)})",
                "Start Redis or correct WAVESYNC_REDIS_URL (host, port, password, TLS).",
            )
        ]
    checks = [ok("redis", "reachable", f"Redis at {where} answers")]
    try:
        policy = _config_value(client.config_get("maxmemory-policy"), "maxmemory-policy")
        appendonly = _config_value(client.config_get("appendonly"), "appendonly")
    except redis.ResponseError as exc:
        checks.append(
            warn(
                "redis",
                "config",
                f"Redis refuses CONFIG GET ({_first_line(exc)}): eviction policy and persistence not verified",
                "On managed Redis, set maxmemory-policy=noeviction and persistence in the provider's console.",
            )
        )
        return checks
    finally:
        client.close()
    if policy == "noeviction":
        checks.append(ok("redis", "eviction_policy", "Redis maxmemory-policy is noeviction"))
    else:
        checks.append(
            fail(
                "redis",
                "eviction_policy",
                f"Redis maxmemory-policy is {policy}: under memory pressure it would silently drop queued messages",
                "Run `CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf) on this Redis.",
            )
        )
    if appendonly == "yes":
        checks.append(ok("redis", "persistence", "Redis append-only file is on"))
    else:
        checks.append(
            fail(
                "redis",
                "persistence",
                "Redis append-only file is off: a restart loses queued messages and locks",
                "Run `CONFIG SET appendonly yes` (and set `appendonly yes` in redis.conf) on this Redis.",
            )
        )
    return checks


def _config_value(answer: Any, name: str) -> str:
    value = answer.get(name) if isinstance(answer, Mapping) else None
    if value is None:
        value = answer.get(name.encode()) if isinstance(answer, Mapping) else None
    return value.decode() if isinstance(value, bytes) else str(value)


# ----- beat --------------------------------------------------------------------------------------------------------


def check_beat(settings: Settings, *, preflight: bool = False) -> list[Check]:
    """Whether a beat holds the fleet's beat lease (shared/beat_lease.py): without one, nothing polls.

    A warning, not a failure: beat is often started after doctor (by `wavesync up`, which runs doctor as its
    preflight while the beat it just started is still coming up, or by compose). As that preflight it is not checked."""
    if settings.redis_url is None:
        return []  # the embedded Valkey exists only while `wavesync up` runs, and `up` runs the beat
    if preflight:
        return [
            ok("beat", "running", "Beat: started by `wavesync up` with this preflight (`wavesync status` shows it)")
        ]
    import redis

    from wavesync.ops import beat_lease

    client = redis.Redis.from_url(str(settings.redis_url), socket_timeout=5, socket_connect_timeout=5)
    try:
        lease = beat_lease(client)
    except redis.RedisError as exc:
        return [warn("beat", "running", f"Beat not verified: the beat lease cannot be read ({_first_line(exc)})")]
    finally:
        client.close()
    if lease["holder"] is None:
        return [
            warn(
                "beat",
                "running",
                "No beat holds the beat lease: no polls or reconciles are scheduled",
                "Start beat (`wavesync beat`, one per Redis; `wavesync up` and compose's beat service run one); "
                "ignore this if it is about to start.",
            )
        ]
    renewed = lease["renewed_s_ago"]
    when = f", lease renewed {renewed:.0f} s ago" if renewed is not None else ""
    return [ok("beat", "running", f"Beat {lease['holder']} holds the beat lease{when}: polls are scheduled")]


# ----- the link store ----------------------------------------------------------------------------------------------


def _database_where(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_database(settings: Settings) -> list[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    from shared.store.db import alembic_config, engine_for

    url = settings.database_url
    where = _database_where(url)
    upgrade = "Run `wavesync db upgrade` with this WAVESYNC_DATABASE_URL."
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():  # connecting would create it: a write
            return [fail("database", "reachable", f"Link store {where} does not exist yet", upgrade)]
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    try:
        with engine_for(url).connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError as exc:
        return [
            fail(
                "database",
                "reachable",
                f"Link store {where} cannot be reached ({_first_line(exc)})",
                "Check WAVESYNC_DATABASE_URL and that the database server is up and accepts this user.",
            )
        ]
    checks = [ok("database", "reachable", f"Link store {where} answers")]
    need = ", ".join(sorted(heads))
    if current == heads:
        checks.append(ok("database", "migrated", f"Link store is at the head revision ({need})"))
    else:
        have = ", ".join(sorted(current)) or "no revision (empty database)"
        checks.append(fail("database", "migrated", f"Link store is at {have}; this version needs {need}", upgrade))
    return checks


# ----- Wave --------------------------------------------------------------------------------------------------------


@dataclass
class _WaveCredential:
    token: str
    kind: str  # shown: "full-access token", "OAuth2 access token (expires ...)"
    scopes: frozenset[str] | None  # None: a full-access token, every scope
    expires_at: datetime | None = None  # an OAuth2 access token's expiry


def _wave_credential(settings: Settings, database_ok: bool) -> _WaveCredential | Check:
    if getattr(settings, "wave_auth", "token") != "oauth":
        return _WaveCredential(settings.wave_token.get_secret_value(), "full-access token", None)
    if not database_ok:
        # Opening the store now would create it (a write) and fail with a misleading message: its check said why.
        return warn(
            "wave",
            "credential",
            "Wave OAuth2 tokens not checked: link store not ready",
            "Run `wavesync db upgrade` (see the link store checks above), then `wavesync connect wave` if needed.",
        )
    from shared.store import credentials
    from shared.store.credentials import Cipher, CredentialKeyError
    from shared.store.db import Database
    from shared.wave.auth import SYSTEM

    connect = "Run `wavesync connect wave` to authorize wavesync for this business."
    try:
        db = Database(settings.database_url)
        state = credentials.state(db, SYSTEM)
        if state is None:
            return fail("wave", "credential", "Wave OAuth2 is configured but not connected yet", connect)
        if state["state"] != credentials.CONNECTED:
            since = state["since"].isoformat(timespec="seconds")
            return fail("wave", "credential", f"Wave connection needs re-authorization since {since}", connect)
        stored = credentials.read(db, Cipher(settings.secret_keys()), SYSTEM)
    except CredentialKeyError:
        return fail(
            "wave",
            "credential",
            "The stored Wave tokens cannot be decrypted with WAVESYNC_SECRET_KEY",
            "Put the previous key after the new one in WAVESYNC_SECRET_KEY (comma-separated), or reconnect.",
        )
    except Exception as exc:  # noqa: BLE001 - the store may be missing or unmigrated: reported above, once
        return fail("wave", "credential", f"Wave OAuth2 tokens cannot be read ({_first_line(exc)})", connect)
    if stored is None:
        return fail("wave", "credential", "Wave OAuth2 is configured but not connected yet", connect)
    expiry = stored.expires_at.isoformat(timespec="seconds") if stored.expires_at else "unknown"
    return _WaveCredential(
        stored.access_token,
        f"OAuth2 access token (expires {expiry})",
        frozenset(stored.scopes.split()),
        stored.expires_at,
    )


def _graphql_errors(body: Any) -> set[str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = set()
    for error in errors if isinstance(errors, list) else ():
        extensions = error.get("extensions") if isinstance(error, dict) else None
        codes.add(str(extensions.get("code")) if isinstance(extensions, dict) else "")
    return codes


def check_wave(
    settings: Settings,
    now: Callable[[], datetime],
    transport: httpx.BaseTransport | None,
    database_ok: bool = True,
) -> list[Check]:
    checks = _wave_graphql_checks(settings, now, transport, database_ok)
    if getattr(settings, "wave_auth", "token") == "oauth":
        # Right after reachability: the token endpoint is another address, and the client matters even when no
        # connection is stored yet (`wavesync connect wave` needs it too).
        first = sum(c.name in ("wave.reachable", "wave.clock_skew") for c in checks)
        checks.insert(first, check_oauth_client(settings, transport))
    return checks


def check_oauth_client(settings: Settings, transport: httpx.BaseTransport | None) -> Check:
    """Whether Wave's token endpoint accepts WAVESYNC_WAVE_CLIENT_ID / WAVESYNC_WAVE_CLIENT_SECRET.

    A wrong secret otherwise shows only at the first refresh (AuthError on every call, then dead letters). The probe
    is a `refresh_token` grant with a random refresh token that was never issued: per RFC 6749 (§3.2.1, §5.2) the
    server authenticates the client before it looks at the grant, so `invalid_client`/`unauthorized_client` (or
    HTTP 401) refuses the client and `invalid_grant` means the client got past authentication. It spends nothing:
    the stored refresh token is not sent, and the probe's was never issued, so nothing is rotated or revoked."""
    from shared.wave.auth import CLIENT_REFUSED

    # The address shared/wave/auth.py's `token_endpoint` posts to.
    url = str(settings.wave_oauth_url).rstrip("/") + "/token/"
    client_id = settings.wave_client_id
    form = {
        "grant_type": "refresh_token",
        "refresh_token": PROBE_PREFIX + secrets.token_urlsafe(32),
        "client_id": client_id,
        "client_secret": settings.wave_client_secret.get_secret_value(),
    }
    again = (
        "Run `wavesync doctor` again in a minute; if it persists, check WAVESYNC_WAVE_OAUTH_URL "
        "(https://api.waveapps.com/oauth2/) and Wave's status page."
    )
    try:
        with httpx.Client(
            timeout=settings.http_timeout, transport=transport, verify=settings.verify_tls, follow_redirects=False
        ) as http:
            response = http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        return warn(
            "wave",
            "oauth_client",
            f"Wave OAuth client not verified: the token endpoint at {url} did not answer ({type(exc).__name__})",
            again,
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    code = error if isinstance(error, str) and _OAUTH_ERROR_CODE.fullmatch(error) else ""
    if code in CLIENT_REFUSED or response.status_code == 401:
        return fail(
            "wave",
            "oauth_client",
            f"Wave's token endpoint refuses the OAuth client {client_id!r} ({code or 'HTTP 401'})",
            "Check WAVESYNC_WAVE_CLIENT_ID / WAVESYNC_WAVE_CLIENT_SECRET: the id and secret of the application "
            "in Wave's developer portal (a wrong one fails every token refresh).",
        )
    if code == "invalid_grant":
        return ok("wave", "oauth_client", f"Wave OAuth client {client_id!r}: client credentials accepted")
    answered = f"HTTP {response.status_code}" + (f" {code}" if code else "")
    return warn(
        "wave",
        "oauth_client",
        f"Wave OAuth client not verified: the token endpoint answered {answered} to the probe",
        again,
    )


def _wave_graphql_checks(
    settings: Settings,
    now: Callable[[], datetime],
    transport: httpx.BaseTransport | None,
    database_ok: bool,
) -> list[Check]:
    url = str(settings.wave_url)
    with httpx.Client(timeout=settings.http_timeout, transport=transport, verify=settings.verify_tls) as http:
        # Reachability first, with a document Wave answers without a token (introspection).
        checks, response = _first_answer(
            "wave",
            "Wave",
            url,
            lambda: http.post(url, json={"query": "{ __typename }"}),
            now,
            settings.poll_overlap,
            unreachable="Check WAVESYNC_WAVE_URL (https://gql.waveapps.com/graphql/public) and this host's network.",
            not_the_api=(
                "without GraphQL",
                "Point WAVESYNC_WAVE_URL at Wave's GraphQL endpoint, https://gql.waveapps.com/graphql/public.",
            ),
        )
        if response is None:
            return checks

        credential = _wave_credential(settings, database_ok)
        if isinstance(credential, Check):
            return [*checks, credential]
        if credential.expires_at is not None and credential.expires_at <= now():
            # Refreshing it here would rotate the refresh token: a write, which doctor never does. A warning, not a
            # failure: an idle deployment's token expires every hour and the next worker call refreshes it.
            expired = credential.expires_at.isoformat(timespec="seconds")
            return [
                *checks,
                warn(
                    "wave",
                    "credential",
                    f"Wave OAuth2 access token expired at {expired}; workers refresh it on next use",
                ),
                warn(
                    "wave",
                    "business",
                    f"Wave business {settings.wave_business_id} not verified (the expired token cannot be used; "
                    "business, currency and income account checks skipped)",
                    "Run `wavesync doctor` again after a worker has refreshed the token (any sync does).",
                ),
                _scope_check(settings, credential),
            ]
        headers = {"Authorization": f"Bearer {credential.token}"}
        variables = {"businessId": settings.wave_business_id}
        try:
            response = http.post(url, json={"query": wave_docs.BUSINESS, "variables": variables}, headers=headers)
        except httpx.HTTPError as exc:
            return [
                *checks,
                _not_verified(settings, f"did not answer the business query ({type(exc).__name__})"),
                _scope_check(settings, credential),
            ]
        try:
            body = response.json()
        except ValueError:
            body = None
        codes = _graphql_errors(body)
        if response.status_code in (401, 403) or codes & {"UNAUTHENTICATED", "FORBIDDEN"}:
            return [
                *checks,
                fail(
                    "wave",
                    "credential",
                    f"Wave refuses the {credential.kind.split(' (')[0]}",
                    "Create a new full-access token in Wave's developer portal and set WAVESYNC_WAVE_TOKEN, "
                    "or run `wavesync connect wave` for OAuth2.",
                ),
            ]
        data = body.get("data") if isinstance(body, dict) else None
        business = data.get("business") if isinstance(data, dict) else None
        # Only an answer that says so means "not found": NOT_FOUND, or `business: null` in a clean answer. Anything
        # else (429, 5xx, an error page, another error code) says nothing about the credential or the business.
        missing = "NOT_FOUND" in codes or (
            response.status_code == 200 and isinstance(data, dict) and "business" in data and business is None
        )
        if not isinstance(business, dict) and not missing:
            what = f"answered HTTP {response.status_code}" + (f" ({', '.join(sorted(codes))})" if codes else "")
            what += " to the business query"
            return [*checks, _not_verified(settings, what), _scope_check(settings, credential)]
        checks.append(ok("wave", "credential", f"Wave accepts the {credential.kind}"))
        if not isinstance(business, dict):
            return [
                *checks,
                fail(
                    "wave",
                    "business",
                    f"Wave business {settings.wave_business_id} not found for this credential "
                    f"({', '.join(sorted(codes)) or 'business: null'})",
                    "Set WAVESYNC_WAVE_BUSINESS_ID to the id of a business this credential can reach.",
                ),
            ]
        checks.extend(_business_checks(settings, business))
        checks.append(_scope_check(settings, credential))
    checks.extend(_wave_record_checks(settings, credential.token, transport))
    return checks


def _not_verified(settings: Settings, what: str) -> Check:
    """The business query got no usable answer (a timeout, 429, 5xx): neither credential nor business was verified."""
    return warn(
        "wave",
        "business",
        f"Wave {what}, not verified: credential and business {settings.wave_business_id} "
        "(business, currency and income account checks skipped)",
        "Run `wavesync doctor` again in a minute; if it persists, check Wave's status page.",
    )


def _business_checks(settings: Settings, business: dict[str, Any]) -> list[Check]:
    name = business.get("name") or settings.wave_business_id
    checks = [ok("wave", "business", f"Wave business {name!r} exists")]
    if business.get("isArchived"):
        checks.append(
            fail(
                "wave",
                "business_archived",
                f"Wave business {name!r} is archived",
                "Restore the business in Wave (Settings > Businesses) or configure another WAVESYNC_WAVE_BUSINESS_ID.",
            )
        )
    else:
        checks.append(ok("wave", "business_archived", "Wave business is not archived"))
    if business.get("isClassicInvoicing"):
        checks.append(
            fail(
                "wave",
                "classic_invoicing",
                f"Wave business {name!r} uses classic invoicing, which Wave's invoice API does not serve",
                "Upgrade the business to Wave's new invoicing in Wave's settings before syncing orders.",
            )
        )
    else:
        checks.append(ok("wave", "classic_invoicing", "Wave business uses the invoicing the API requires"))
    currency = (business.get("currency") or {}).get("code")
    if currency == settings.wave_currency:
        checks.append(ok("wave", "currency", f"Business currency {currency} equals WAVESYNC_WAVE_CURRENCY"))
    else:
        checks.append(
            fail(
                "wave",
                "currency",
                f"Business currency is {currency}, WAVESYNC_WAVE_CURRENCY is {settings.wave_currency}",
                f"Set WAVESYNC_WAVE_CURRENCY={currency}.",
            )
        )
    return checks


def required_scopes(settings: Settings) -> set[str]:
    """The OAuth scopes the configured flows need in Wave."""
    needed = {"business:read"}
    for entity in ENTITIES:
        needed.update(WAVE_SCOPES_BY_ENTITY[entity])
    if "products" in settings.create_in_wave and not settings.wave_income_account_id:
        needed.add("account:read")
    return needed


def _covers(granted: frozenset[str], scope: str) -> bool:
    resource = scope.split(":", 1)[0]
    return scope in granted or f"{resource}:*" in granted or "*" in granted


def _scope_check(settings: Settings, credential: _WaveCredential) -> Check:
    if credential.scopes is None:
        return ok("wave", "scopes", "Scopes: full-access token: all scopes")
    missing = sorted(s for s in required_scopes(settings) if not _covers(credential.scopes, s))
    if not missing:
        return ok("wave", "scopes", f"Scopes cover every flow ({' '.join(sorted(credential.scopes))})")
    return fail(
        "wave",
        "scopes",
        f"The OAuth2 grant lacks {' '.join(missing)}",
        "Add the missing scopes to WAVESYNC_WAVE_SCOPES and run `wavesync connect wave` again.",
    )


def _wave_record_checks(settings: Settings, token: str, transport: httpx.BaseTransport | None) -> list[Check]:
    """Income account for new products and the fallback product, read through the Wave client."""
    from shared.errors import NotFoundError, SyncError
    from shared.wave.client import WaveClient

    checks: list[Check] = []
    with WaveClient(
        str(settings.wave_url), token, settings.wave_business_id, timeout=settings.http_timeout, transport=transport
    ) as wave:
        try:
            income = [a for a in wave.list_accounts(["INCOME"]) if not a.is_archived]
        except SyncError as exc:
            income = []
            checks.append(
                fail(
                    "wave",
                    "income_account",
                    f"Wave's chart of accounts cannot be read ({exc.message})",
                    "Grant account:read (OAuth2) or check the business.",
                )
            )
        else:
            wanted = settings.wave_income_account_id
            found = next((a for a in income if a.id == wanted), None) if wanted else (income[0] if income else None)
            if found is not None:
                how = "WAVESYNC_WAVE_INCOME_ACCOUNT_ID" if wanted else "the first income account"
                checks.append(ok("wave", "income_account", f"Income account for new products: {found.name!r} ({how})"))
            elif wanted:
                checks.append(
                    fail(
                        "wave",
                        "income_account",
                        f"WAVESYNC_WAVE_INCOME_ACCOUNT_ID {wanted} is not an active income account of the business",
                        "Set WAVESYNC_WAVE_INCOME_ACCOUNT_ID to the id of an income account, or unset it.",
                    )
                )
            else:
                checks.append(
                    fail(
                        "wave",
                        "income_account",
                        "The business has no income account for new products",
                        "Create an income account in Wave's chart of accounts.",
                    )
                )
        fallback = settings.fallback_product_id
        if fallback:
            try:
                product = wave.get_product(fallback)
            except NotFoundError:
                checks.append(
                    fail(
                        "settings",
                        "fallback_product",
                        f"WAVESYNC_FALLBACK_PRODUCT_ID {fallback} does not exist in Wave",
                        "Set WAVESYNC_FALLBACK_PRODUCT_ID to an existing Wave product id, or unset it.",
                    )
                )
            except SyncError as exc:
                checks.append(warn("settings", "fallback_product", f"Fallback product not verified ({exc.message})"))
            else:
                if product.is_archived:
                    checks.append(
                        fail(
                            "settings",
                            "fallback_product",
                            f"Fallback product {product.name!r} is archived: invoices cannot use it",
                            "Choose an active product for WAVESYNC_FALLBACK_PRODUCT_ID.",
                        )
                    )
                else:
                    checks.append(ok("settings", "fallback_product", f"Fallback product {product.name!r} exists"))
    return checks


# ----- Customerp ---------------------------------------------------------------------------------------------------


def check_customerp(
    settings: Settings, now: Callable[[], datetime], transport: httpx.BaseTransport | None
) -> list[Check]:
    base = str(settings.customerp_url).rstrip("/")
    key = settings.customerp_api_key.get_secret_value()
    with httpx.Client(
        base_url=base, timeout=settings.http_timeout, transport=transport, verify=settings.verify_tls
    ) as http:
        feed = "/api/v1/customers/changes"
        checks, response = _first_answer(
            "customerp",
            "Customerp",
            base,
            lambda: http.get(feed, params={"limit": 1}, headers={"X-API-Key": key}),
            now,
            settings.poll_overlap,
            unreachable="Check WAVESYNC_CUSTOMERP_URL and that the ERP's API is up and reachable from this host.",
            not_the_api=(
                "without the contract's JSON",
                "Point WAVESYNC_CUSTOMERP_URL at the ERP's API base (the one serving /api/v1).",
            ),
        )
        if response is None:
            return checks
        if response.status_code in (401, 403):
            checks.append(
                fail(
                    "customerp",
                    "api_key",
                    f"Customerp refuses the API key (HTTP {response.status_code})",
                    "Set WAVESYNC_CUSTOMERP_API_KEY to a key the ERP accepts for reads and writes.",
                )
            )
            return checks
        checks.append(ok("customerp", "api_key", "Customerp accepts the API key"))
        for resource in CUSTOMERP_RESOURCES:
            checks.append(_feed_check(http, resource, key))
    return checks


def _feed_check(http: httpx.Client, resource: str, key: str) -> Check:
    reason = ""
    try:
        response = http.get(f"/api/v1/{resource}/changes", params={"limit": 1}, headers={"X-API-Key": key})
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
    else:
        try:
            body = response.json()
        except ValueError:
            body = None
        fields_ok = isinstance(body, dict) and isinstance(body.get("items"), list) and "next_cursor" in body
        if response.status_code == 200 and fields_ok and isinstance(body.get("has_more"), bool):
            return ok("customerp", f"feed_{resource}", f"Customerp {resource} change feed answers")
        reason = f"HTTP {response.status_code}" + ("" if fields_ok else ", not a change-feed page")
    return fail(
        "customerp",
        f"feed_{resource}",
        f"Customerp {resource} change feed fails ({reason})",
        f"Implement GET /api/v1/{resource}/changes as docs/customerp-api.md describes "
        "(check it with `wavesync doctor customerp --conformance`).",
    )


# ----- settings that contradict each other -------------------------------------------------------------------------


def check_settings(settings: Settings, database_ok: bool) -> list[Check]:
    checks: list[Check] = []
    links = _link_counts(settings) if database_ok else None
    for entity in ENTITIES:
        if entity in settings.create_in_wave or entity in settings.create_in_customerp:
            continue
        count = links.get(entity, 0) if links is not None else None
        if count:
            continue
        known = "no linked records" if count == 0 else "creation off both ways"
        checks.append(
            fail(
                "settings",
                f"creation_{entity}",
                f"{entity}: creation is disabled in both directions and there are {known}, so nothing will sync",
                f"Add {entity} to WAVESYNC_CREATE_IN_WAVE or WAVESYNC_CREATE_IN_CUSTOMERP.",
            )
        )
    orders_alone = "orders" in settings.create_in_wave and "customers" not in settings.create_in_wave
    if orders_alone and links is not None and not links.get("customers"):
        checks.append(
            warn(
                "settings",
                "orders_need_customers",
                "orders are created in Wave but customers are not and none are linked: new orders will wait",
                "Add customers to WAVESYNC_CREATE_IN_WAVE, or link the customers first.",
            )
        )
    if not checks:
        checks.append(ok("settings", "consistent", "Settings do not contradict each other"))
    return checks


def _link_counts(settings: Settings) -> dict[str, int] | None:
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from shared.store.db import Database
    from shared.store.models import Link

    try:
        with Database(settings.database_url).session() as session:
            rows = session.execute(select(Link.entity, func.count()).group_by(Link.entity)).all()
    except SQLAlchemyError:
        return None
    return {str(entity): int(count) for entity, count in rows}


# ----- the whole run -----------------------------------------------------------------------------------------------


def redact(checks: list[Check], secrets: list[str]) -> list[Check]:
    def clean(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return [Check(c.area, c.name, c.status, clean(c.detail), clean(c.fix)) for c in checks]


@contextmanager
def _guard(area: str, checks: list[Check]) -> Iterator[None]:
    """One area failing in a way no check foresaw is one ✗ line, not a traceback that hides the other areas."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - turned into a ✗ line on purpose
        checks.append(
            fail(
                area,
                "unexpected",
                f"{area} check stopped: {type(exc).__name__}: {_first_line(exc)}",
                "Report this line; the other areas were still checked.",
            )
        )


def run_doctor(
    settings: Settings,
    *,
    now: Callable[[], datetime] = utc_now,
    transport: httpx.BaseTransport | None = None,
    preflight: bool = False,
) -> list[Check]:
    """Every check, in display order; never writes anything. `preflight`: run by `wavesync up` as it starts the
    fleet (beat is not checked: it is starting at the same time)."""
    checks: list[Check] = []
    with _guard("redis", checks):
        checks.extend(check_redis(settings))
    if any(c.name == "redis.reachable" and c.status == "ok" for c in checks):  # else said once, above
        with _guard("beat", checks):
            checks.extend(check_beat(settings, preflight=preflight))
    database: list[Check] = []
    with _guard("database", database):
        database.extend(check_database(settings))
    checks.extend(database)
    database_ok = bool(database) and all(c.status == "ok" for c in database)
    with _guard("wave", checks):
        checks.extend(check_wave(settings, now, transport, database_ok))
    with _guard("customerp", checks):
        checks.extend(check_customerp(settings, now, transport))
    with _guard("settings", checks):
        checks.extend(check_settings(settings, all(c.status == "ok" for c in database)))
    return redact(checks, settings.secrets())


AREA_TITLES = {
    "redis": "Redis",
    "beat": "Beat",
    "database": "Link store",
    "wave": "Wave",
    "customerp": "Customerp",
    "contract": "Customerp contract",
}


def render(checks: list[Check]) -> str:
    lines: list[str] = []
    order = ["redis", "beat", "database", "wave", "customerp", "contract", "settings"]
    for area in order:
        mine = [c for c in checks if c.area == area]
        if mine:
            lines.append(AREA_TITLES.get(area, area.capitalize()))
            lines.extend("  " + c.line().replace("\n", "\n  ") for c in mine)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append(f"{failed} problem(s), {warned} warning(s)" if failed or warned else "all checks passed")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": exit_code(checks) == 0, "checks": [asdict(c) for c in checks]}


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


def dumps(checks: list[Check]) -> str:
    return json.dumps(as_json(checks), indent=2)
