"""A connection's OAuth tokens in the link store: encrypted with MultiFernet, written atomically by generation.

The access and refresh tokens are encrypted with the first key of WAVESYNC_SECRET_KEY and decrypted with any of
them, so a key is rotated by putting the new key first and keeping the old one until every stored pair has been
written again (the next refresh does that; `wavesync connect wave --rekey` does it at once).

A new pair replaces the stored one only if the stored generation is still the one the writer read: two writers
that raced (which the fleet's refresh lock prevents, see shared/wave/auth.py) cannot leave an older refresh token
behind a newer one. Nothing here logs or returns a token except `StoredTokens`, whose repr hides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.store.db import Database
from shared.store.models import Credential
from shared.versions import parse_timestamp, utcnow

CONNECTED = "connected"
NEEDS_REAUTHORIZATION = "needs_reauthorization"
STATES = (CONNECTED, NEEDS_REAUTHORIZATION)


class CredentialKeyError(Exception):
    """The stored tokens cannot be decrypted with WAVESYNC_SECRET_KEY (a key replaced instead of rotated)."""


class Cipher:
    """MultiFernet over the configured keys: encrypts with the first, decrypts with any."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("WAVESYNC_SECRET_KEY is empty")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str) -> str:
        try:
            return self._fernet.decrypt(value.encode()).decode()
        except (InvalidToken, ValueError):
            raise CredentialKeyError(
                "the stored Wave tokens cannot be decrypted with WAVESYNC_SECRET_KEY (was the key replaced instead "
                "of rotated? put the old key after the new one, comma-separated, or run `wavesync connect wave`)"
            ) from None

    def rotate(self, value: str) -> str:
        try:
            return self._fernet.rotate(value.encode()).decode()
        except InvalidToken:
            raise CredentialKeyError("a stored token cannot be decrypted with any WAVESYNC_SECRET_KEY key") from None


@dataclass(frozen=True)
class StoredTokens:
    """One decrypted pair and the row's bookkeeping. The tokens never show in a repr."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None
    generation: int
    state: str
    state_since: datetime
    reason: str
    scopes: str
    issued_at: datetime

    def expires_within(self, now: datetime, seconds: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now + timedelta(seconds=seconds)

    @property
    def lifetime_s(self) -> float | None:
        return (self.expires_at - self.issued_at).total_seconds() if self.expires_at else None


def _row(session: Session, system: str) -> Credential | None:
    return session.scalars(select(Credential).where(Credential.system == system)).one_or_none()


def read(db: Database, cipher: Cipher, system: str) -> StoredTokens | None:
    """The stored pair, decrypted; None when the system was never connected. CredentialKeyError on a wrong key."""
    with db.session() as session:
        row = _row(session, system)
        if row is None:
            return None
        return StoredTokens(
            access_token=cipher.decrypt(row.access_token),
            refresh_token=cipher.decrypt(row.refresh_token),
            expires_at=parse_timestamp(row.expires_at) if row.expires_at else None,
            generation=row.generation,
            state=row.state,
            state_since=parse_timestamp(row.state_since),
            reason=row.reason,
            scopes=row.scopes,
            issued_at=parse_timestamp(row.updated_at),
        )


def state(db: Database, system: str) -> dict[str, Any] | None:
    """The connection's state without decrypting anything (status, metrics, pollers)."""
    with db.session() as session:
        row = _row(session, system)
        if row is None:
            return None
        return {
            "system": row.system,
            "state": row.state,
            "since": parse_timestamp(row.state_since),
            "reason": row.reason,
            "expires_at": parse_timestamp(row.expires_at) if row.expires_at else None,
            "scopes": row.scopes,
            "generation": row.generation,
        }


def all_states(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Credential).order_by(Credential.system)).all()
    return [
        {
            "system": r.system,
            "state": r.state,
            "since": parse_timestamp(r.state_since).isoformat(),
            "reason": r.reason,
            "access_token_expires_at": parse_timestamp(r.expires_at).isoformat() if r.expires_at else None,
            "scopes": r.scopes,
        }
        for r in rows
    ]


def connect(
    db: Database,
    cipher: Cipher,
    system: str,
    *,
    access_token: str,
    refresh_token: str,
    expires_at: datetime | None,
    scopes: str,
) -> int:
    """Store a pair from a fresh authorization (the operator's `connect`): always wins, state `connected`.
    Returns the new generation."""
    now = utcnow()
    with db.session() as session:
        row = _row(session, system)
        if row is None:
            row = Credential(system=system, generation=0)
            session.add(row)
        row.access_token = cipher.encrypt(access_token)
        row.refresh_token = cipher.encrypt(refresh_token)
        row.expires_at = expires_at
        row.scopes = scopes
        row.state = CONNECTED
        row.state_since = now
        row.reason = ""
        row.generation = (row.generation or 0) + 1
        row.updated_at = now
        session.flush()
        return row.generation


def replace_pair(
    db: Database,
    cipher: Cipher,
    system: str,
    *,
    expected_generation: int,
    access_token: str,
    refresh_token: str,
    expires_at: datetime | None,
    scopes: str | None = None,
) -> int | None:
    """Store a refreshed pair in one conditional UPDATE; the new generation, or None when the stored generation moved
    (a stale writer: an operator's reconnect stored a newer pair).

    The generation alone decides. A pair Wave just issued proves the grant alive, so it is stored, and the state set
    `connected`, even when the row says `needs_reauthorization` at the same generation: that mark can only come
    from a refresh that raced this one with the refresh token this one spent, and discarding this pair would lose
    the only refresh token that still works."""
    now = utcnow()
    values: dict[str, Any] = {
        "access_token": cipher.encrypt(access_token),
        "refresh_token": cipher.encrypt(refresh_token),
        "expires_at": expires_at,
        "generation": expected_generation + 1,
        "updated_at": now,
    }
    if scopes is not None:
        values["scopes"] = scopes
    with db.session() as session:
        result = session.execute(
            update(Credential)
            .where(Credential.system == system, Credential.generation == expected_generation)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        # A separate statement keeps `since` of a connection that stayed connected.
        session.execute(
            update(Credential)
            .where(Credential.system == system, Credential.state != CONNECTED)
            .values(state=CONNECTED, state_since=now, reason="")
        )
        return expected_generation + 1


def mark_needs_reauthorization(db: Database, system: str, *, expected_generation: int, reason: str) -> bool:
    """Enter `needs_reauthorization` unless a newer pair was stored meanwhile (e.g. the operator reconnected)."""
    now = utcnow()
    with db.session() as session:
        result = session.execute(
            update(Credential)
            .where(
                Credential.system == system,
                Credential.generation == expected_generation,
                Credential.state == CONNECTED,
            )
            .values(state=NEEDS_REAUTHORIZATION, state_since=now, reason=reason[:500], updated_at=now)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


REENCRYPT_ATTEMPTS = 20


def reencrypt(db: Database, cipher: Cipher, system: str) -> bool:
    """Re-encrypt the stored pair with the first key (after a key rotation); False when nothing is stored.

    The write is conditional on the generation read, like a refresh's: a worker refreshing meanwhile spends the
    refresh token read here, so writing it back would replace the working one with a spent one. A moved
    generation means "read again"; the generation itself is left as it is (the tokens did not change)."""
    for _ in range(REENCRYPT_ATTEMPTS):
        with db.session() as session:
            row = _row(session, system)
            if row is None:
                return False
            read_generation = row.generation
            access, refresh = cipher.rotate(row.access_token), cipher.rotate(row.refresh_token)
        with db.session() as session:
            result = session.execute(
                update(Credential)
                .where(Credential.system == system, Credential.generation == read_generation)
                .values(access_token=access, refresh_token=refresh)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
    raise CredentialKeyError(f"the stored Wave tokens kept changing during {REENCRYPT_ATTEMPTS} re-encryptions")
