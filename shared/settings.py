"""The one validated configuration: every setting is a `WAVESYNC_*` environment variable (or a line in `.env`).

Defaults are the embedded mode: no Redis URL means `wavesync up` starts one, the link store is a SQLite file,
and both APIs point at the local sandboxes. `load_settings()` turns a bad value into one readable line.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, Field, RedisDsn, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

log = logging.getLogger(__name__)

Entity = Literal["customers", "products", "orders"]
ENTITIES: tuple[Entity, ...] = ("customers", "products", "orders")

SANDBOX_WAVE_TOKEN = "sandbox-wave-token"  # noqa: S105 - the sandbox's published demo credential
SANDBOX_CUSTOMERP_KEY = "sandbox-customerp-key"
# Where the sandboxes run: loopback (`wavesync up`, tests) or the compose file's `sandboxes` service.
SANDBOX_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "sandboxes"})
SANDBOX_BUSINESS_ID = "QnVzaW5lc3M6MWRhMmExNzctNzg2OC00NmMxLTgzMzktM2M4NjdlZDJlZGQ5"  # Business:1da2a177-…
MIN_CONSOLE_SECRET = 12  # console passwords and the session key: shorter ones are refused at start-up
# Wave's documented OAuth endpoints are `<this>authorize/` and `<this>token/` (reference notes §1).
WAVE_OAUTH_URL = "https://api.waveapps.com/oauth2/"
# What the flows read and write (notes §1, §15; write does not imply read): the business and its accounts (income
# account of new products), customers, products, invoices (approve and mark sent are writes, not `invoice:send`),
# and `user:read` so `wavesync connect wave` can say who connected.
WAVE_SCOPES = (
    "business:read account:read customer:read customer:write product:read product:write "
    "invoice:read invoice:write user:read"
)


class ConflictPolicy(StrEnum):
    NEWEST_WINS = "newest_wins"
    CUSTOMERP_WINS = "customerp_wins"
    WAVE_WINS = "wave_wins"


# Finite and at most a year: `inf` or 1e300 would pass `gt=0` and then overflow where Celery turns it into a timedelta.
PositiveSeconds = Annotated[float, Field(gt=0, le=366 * 86400, allow_inf_nan=False)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAVESYNC_", env_file=".env", extra="ignore", frozen=True)

    # --- Infrastructure ---
    redis_url: RedisDsn | None = Field(None, description="Broker and coordination Redis; unset = embedded Valkey.")
    database_url: str = Field(
        "sqlite:///.wavesync/wavesync.db", description="SQLAlchemy URL of the link store (unset = SQLite in data_dir)."
    )
    data_dir: Path = Field(
        Path(".wavesync"), description="Where beat's schedule, embedded Redis data, SQLite and logs live."
    )
    embedded_redis_port: int = Field(0, ge=0, le=65535, description="Port of the embedded Valkey (0 = any).")

    # --- Customerp ---
    customerp_url: AnyHttpUrl = Field(AnyHttpUrl("http://127.0.0.1:8701"), description="Customerp API base URL.")
    customerp_api_key: SecretStr = Field(SecretStr(SANDBOX_CUSTOMERP_KEY), description="Customerp X-API-Key.")

    # --- Wave ---
    wave_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:8702/graphql/public"), description="Wave GraphQL endpoint."
    )
    wave_token: SecretStr = Field(SecretStr(SANDBOX_WAVE_TOKEN), description="Wave Bearer token.")
    wave_business_id: str = Field(SANDBOX_BUSINESS_ID, min_length=1, description="Wave business to sync with.")
    wave_currency: str = Field("USD", description="The Wave business's currency.")
    wave_income_account_id: str | None = Field(
        None, description="Income account for products created in Wave (unset = the first income account)."
    )
    # OAuth2 (docs/connecting.md): `token` sends WAVESYNC_WAVE_TOKEN as it is (a full-access token); `oauth` sends
    # the access token `wavesync connect wave` stored, encrypted, in the link store, and refreshes it.
    wave_auth: Literal["token", "oauth"] = Field("token", description="Wave credential: `token` or `oauth`.")
    wave_client_id: str = Field("", description="Wave OAuth application client id (auth=oauth).")
    wave_client_secret: SecretStr = Field(SecretStr(""), description="Wave OAuth client secret (auth=oauth).")
    wave_oauth_url: AnyHttpUrl = Field(
        AnyHttpUrl(WAVE_OAUTH_URL), description="Base of Wave's `authorize/` and `token/` endpoints."
    )
    wave_scopes: str = Field(WAVE_SCOPES, min_length=1, description="OAuth scopes asked for (space-separated).")
    secret_key: SecretStr = Field(
        SecretStr(""), description="Fernet key(s), comma-separated, newest first: encrypt stored tokens."
    )

    # --- HTTP ---
    http_timeout: PositiveSeconds = Field(30.0, description="Per-request timeout for both APIs (seconds).")
    verify_tls: bool = Field(True, description="Verify TLS certificates of both APIs.")

    # --- Polling ---
    poll_interval: PositiveSeconds = Field(10.0, description="Seconds between poller runs.")
    poll_overlap: float = Field(5.0, ge=0, description="Seconds a poll re-reads before its watermark.")
    poll_page_size: int = Field(100, ge=1, le=200, description="Records per poll page.")
    # The Wave-key index (shared/natural_keys.py) is only as fresh as the last Wave poll; before a worker creates a
    # record in Wave it makes sure the index has been brought up to date within this many seconds (one listing of
    # what changed, shared by every worker). This bounds the window in which a record a person just created in
    # Wave goes unseen and is created a second time: from a poll interval down to this, at about one Wave call per
    # three quarters of this many seconds during a backfill (creates list ahead of time) instead of one search per
    # created record.
    match_freshness: PositiveSeconds = Field(
        2.0, description="Seconds a Wave record created by a person may go unseen before a create (a duplicate)."
    )
    reconcile_interval: PositiveSeconds = Field(3600.0, description="Seconds between reconcile runs.")

    # --- Sync policy ---
    conflict_policy_customers: ConflictPolicy = Field(
        ConflictPolicy.NEWEST_WINS, description="Who wins when both sides changed a customer field."
    )
    conflict_policy_products: ConflictPolicy = Field(
        ConflictPolicy.NEWEST_WINS, description="Who wins when both sides changed a product field."
    )
    conflict_policy_orders: ConflictPolicy = Field(
        ConflictPolicy.NEWEST_WINS, description="Who wins when both sides changed an order field."
    )
    create_in_wave: frozenset[Entity] = Field(
        frozenset(ENTITIES), description="Entities whose new Customerp records are created in Wave."
    )
    create_in_customerp: frozenset[Entity] = Field(
        frozenset(ENTITIES), description="Entities whose new Wave records are created in Customerp."
    )
    fallback_product_id: str | None = Field(
        None, description="Wave product for order lines without a product (unset = such orders dead-letter)."
    )
    mass_delete_max_share: float = Field(0.2, ge=0, le=1, description="Reconcile refuses to delete more.")
    mass_delete_min_count: int = Field(10, ge=0, description="Deletions always allowed up to this many.")

    # --- Retries and rate limits ---
    max_retries: int = Field(8, ge=0, description="Retries of a retryable error before dead-lettering.")
    retry_backoff_base: PositiveSeconds = Field(1.0, description="First retry delay ceiling (seconds).")
    retry_backoff_max: PositiveSeconds = Field(300.0, description="Largest retry delay (seconds).")
    task_time_limit: PositiveSeconds = Field(300.0, description="Hard time limit of one sync task (seconds).")
    message_lease: float = Field(
        30.0,
        ge=20,
        description="Seconds a dead worker's messages stay unseen before the broker hands them out again "
        "(live workers renew theirs every 5 s).",
    )
    wave_rate_per_second: PositiveSeconds = Field(20.0, description="Fleet-wide Wave request rate.")
    wave_burst: int = Field(20, ge=1, description="Fleet-wide Wave burst size.")
    customerp_rate_per_second: PositiveSeconds = Field(50.0, description="Fleet-wide Customerp request rate.")
    customerp_burst: int = Field(50, ge=1, description="Fleet-wide Customerp burst size.")
    # Wave publishes no limits; the clients in the wild that our reference notes cite allow "roughly two concurrent
    # requests" per token (the team's Wave API notes, §3). Customerp is our own API with no
    # documented concurrency cap, so it has none unless a deployment's ERP needs one.
    wave_max_in_flight: int = Field(2, ge=0, description="Fleet-wide Wave calls in flight at once (0 = no cap).")
    customerp_max_in_flight: int = Field(
        0, ge=0, description="Fleet-wide Customerp calls in flight at once (0 = no cap)."
    )

    # --- Operations ---
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port for worker/beat (0 = off).")
    metrics_host: str = Field("127.0.0.1", description="Interface the metrics endpoint binds.")
    log_format: Literal["auto", "json", "text"] = Field("auto", description="json in containers, text on a tty.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    sandbox_host: str = Field("127.0.0.1", description="Interface `wavesync sandbox` binds.")
    sandbox_customerp_port: int = Field(8701, ge=0, le=65535, description="Port of the Customerp sandbox.")
    sandbox_wave_port: int = Field(8702, ge=0, le=65535, description="Port of the Wave sandbox.")

    # --- History and console ---
    history_enabled: bool = Field(True, description="Record every sync decision in the history table.")
    history_retention_days: float = Field(90.0, ge=0, description="History older than this is pruned (0 = keep).")
    history_max_rows: int = Field(1_000_000, ge=0, description="History keeps at most this many rows (0 = no bound).")
    history_prune_interval: PositiveSeconds = Field(3600.0, description="Seconds between history prunes.")
    console_host: str = Field("127.0.0.1", description="Interface `wavesync console` binds.")
    console_port: int = Field(8700, ge=0, le=65535, description="Port of the console (0 = `up` starts none).")
    console_user: str = Field("operator", min_length=1, description="Console login of the operator (may act).")
    console_password: SecretStr | None = Field(None, description="Console operator password (unset = no console).")
    console_readonly_user: str = Field("viewer", min_length=1, description="Console login that can only look.")
    console_readonly_password: SecretStr | None = Field(None, description="Read-only password (unset = no viewer).")
    console_session_key: SecretStr | None = Field(
        None, description="Signs console sessions (unset = random per start: sessions end at a restart)."
    )
    console_tls_cert: Path | None = Field(None, description="TLS certificate of the console (PEM).")
    console_tls_key: Path | None = Field(None, description="TLS private key of the console (PEM).")
    console_secure_cookie: bool | None = Field(
        None, description="Mark the console's cookie Secure (unset = when it serves TLS; true behind a TLS proxy)."
    )

    @field_validator("console_password", "console_readonly_password", "console_session_key")
    @classmethod
    def _console_secrets_are_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty means unset (compose passes `${...:-}`); anything shorter than 12 is guessed too quickly.
        if value is not None and 0 < len(value.get_secret_value()) < MIN_CONSOLE_SECRET:
            raise ValueError(f"must be at least {MIN_CONSOLE_SECRET} characters long")
        return value

    @model_validator(mode="before")
    @classmethod
    def _sqlite_lives_in_the_data_dir(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("database_url") and values.get("data_dir"):
            values = {**values, "database_url": f"sqlite:///{Path(values['data_dir']) / 'wavesync.db'}"}
        return values

    @field_validator("wave_currency")
    @classmethod
    def _currency_is_an_iso_code(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"must be a three-letter ISO 4217 code in capitals, e.g. USD (not {value[:20]!r})")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @model_validator(mode="after")
    def _real_systems_need_real_credentials(self) -> Settings:
        # The sandbox credentials are published; pointing at a real system without its own secret is a mistake.
        for url, secret in (("customerp_url", "customerp_api_key"), ("wave_url", "wave_token")):
            if url == "wave_url" and self.wave_auth == "oauth":
                continue  # the token comes from `wavesync connect wave`
            if url in self.model_fields_set and secret not in self.model_fields_set:
                raise ValueError(f"WAVESYNC_{secret.upper()} is required when WAVESYNC_{url.upper()} is set")
            # Compose passes the sandbox's value as a default: a real system given it was simply not configured.
            published = getattr(self, secret).get_secret_value() in (SANDBOX_CUSTOMERP_KEY, SANDBOX_WAVE_TOKEN)
            host = urlsplit(str(getattr(self, url))).hostname or ""
            if published and host not in SANDBOX_HOSTS:
                raise ValueError(
                    f"WAVESYNC_{secret.upper()} is the sandbox's published value, but WAVESYNC_{url.upper()} points "
                    f"at {host}: set that system's own credential"
                )
        return self

    @model_validator(mode="after")
    def _backoff_base_within_its_max(self) -> Settings:
        if self.retry_backoff_base > self.retry_backoff_max:
            raise ValueError(
                f"WAVESYNC_RETRY_BACKOFF_BASE ({self.retry_backoff_base:g} s) must not exceed "
                f"WAVESYNC_RETRY_BACKOFF_MAX ({self.retry_backoff_max:g} s)"
            )
        return self

    @model_validator(mode="after")
    def _console_tls_comes_in_pairs(self) -> Settings:
        # The files themselves are checked by `wavesync console`: other processes need not see them.
        if (self.console_tls_cert is None) != (self.console_tls_key is None):
            given, missing = ("cert", "key") if self.console_tls_key is None else ("key", "cert")
            raise ValueError(
                f"WAVESYNC_CONSOLE_TLS_{missing.upper()} is required with WAVESYNC_CONSOLE_TLS_{given.upper()}"
            )
        return self

    @model_validator(mode="after")
    def _oauth_needs_its_settings(self) -> Settings:
        if self.wave_auth != "oauth":
            return self
        for name in ("wave_client_id", "wave_client_secret", "secret_key"):
            value = getattr(self, name)
            if not (value.get_secret_value() if isinstance(value, SecretStr) else value):
                hint = " (generate one: see docs/connecting.md)" if name == "secret_key" else ""
                raise ValueError(f"WAVESYNC_{name.upper()} is required when WAVESYNC_WAVE_AUTH=oauth{hint}")
        from cryptography.fernet import Fernet

        for number, key in enumerate(self.secret_keys(), start=1):
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    f"WAVESYNC_SECRET_KEY key #{number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                    "see docs/connecting.md)"
                ) from None
        return self

    def secret_keys(self) -> list[str]:
        """The Fernet keys of WAVESYNC_SECRET_KEY, the one that encrypts first (MultiFernet order)."""
        return [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]

    @property
    def visibility_timeout(self) -> int:
        """kombu's visibility timeout, used as a lease: the worker holding a message renews it every few seconds
        for as long as it holds it (shared/message_leases.py), so only a dead worker's messages ever reach it."""
        return int(self.message_lease)

    def conflict_policy(self, entity: Entity) -> ConflictPolicy:
        policy: ConflictPolicy = getattr(self, f"conflict_policy_{entity}")
        return policy

    def secrets(self) -> list[str]:
        """Every configured secret value, for redaction."""
        values = [
            self.customerp_api_key.get_secret_value(),
            self.wave_token.get_secret_value(),
            self.wave_client_secret.get_secret_value(),
            self.secret_key.get_secret_value(),
            *self.secret_keys(),
            *(c.get_secret_value() for c in (self.console_password, self.console_readonly_password) if c),
            *(c.get_secret_value() for c in (self.console_session_key,) if c),
        ]
        return [s for s in values if s]


class SettingsError(SystemExit):
    """Raised with one line per invalid setting; exits with status 2 when uncaught."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__(2)


def describe_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across settings: its message names them
            lines.append(f"invalid settings: {message}")
            continue
        name = "WAVESYNC_" + "_".join(str(p) for p in err["loc"]).upper()
        lines.append(f"invalid setting {name}: {message}")
    return lines


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The process-wide settings; raises SettingsError (never a traceback) when a value is wrong."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except SourceError as exc:
        raise SettingsError([describe_source_error(exc)]) from None
    for line in misspelt_settings(os.environ):
        log.warning("%s", line)
    return settings


def misspelt_settings(environ: Mapping[str, str]) -> list[str]:
    """A WAVESYNC_ variable that is no setting but close to one: most likely a typo, which would otherwise be
    ignored without a word (only close names: other tools' WAVESYNC_ variables are not ours to judge)."""
    names = {name.upper() for name in Settings.model_fields}
    lines = []
    for variable in sorted(environ):
        name = variable.removeprefix("WAVESYNC_")
        if name != variable and name not in names:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)  # the shared prefix would flatter
            if close:
                lines.append(f"{variable} is not a setting (ignored): did you mean WAVESYNC_{close[0]}?")
    return lines


def describe_source_error(exc: SourceError) -> str:
    """A value pydantic-settings could not even parse: a list or set setting that is not JSON."""
    field = re.search(r'field "(\w+)"', str(exc))
    name = f"WAVESYNC_{field.group(1).upper()}" if field else "configuration"
    return f'invalid setting {name}: not valid JSON (a list is written like ["customers", "orders"])'
