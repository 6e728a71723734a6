"""kombu's Redis transport, with one redis-py client per channel for its bookkeeping instead of one per command.

kombu builds a new `redis.Redis` for every publish, every acknowledgement and every delivery it records as unacked
(`Channel.conn_or_acquire`). Building one costs more than the command it sends: redis-py rebuilds its table of
response callbacks for every client (redis/redis-py#3624): 4 % of a worker's samples in the bench's profile with
task events off, 12 % with them on. A client holds no connection of its own (its pool does) and is safe to share
between threads, so one per channel and pool serves every caller. The BRPOP client kombu keeps for consuming is
left as it is.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis
from kombu import transport
from kombu.transport import redis as kombu_redis

TRANSPORT = "shared.broker:Transport"


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu-stubs leave out the private method this overrides.
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        shared = self._shared_client
        if shared is not None and shared.connection_pool is self._pool:  # type: ignore[attr-defined]
            return shared
        # kombu drops its pool when it reconnects: a client of the old pool is not reused.
        if self.connection is None or self.connection.client is None:
            # A task that ends while the broker is away is settled on its message's channel after Celery's consumer
            # has dropped that connection. kombu would fail to build a pool with an AttributeError, which stops the
            # worker; a connection error is what Celery expects there: it logs it, and the message is redelivered.
            raise redis.ConnectionError("the broker connection this message came on is closed")
        shared = self._shared_client = super()._create_client(asynchronous=False)  # type: ignore[misc]
        return shared


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Serve redis:// and rediss:// broker URLs with this transport. Under the schemes' own names, not a class path
    in `broker_transport`: kombu names the transport in the URL it logs ("Connected to redis://…") and applies its TLS
    handling by scheme."""
    for scheme in ("redis", "rediss"):
        transport.TRANSPORT_ALIASES[scheme] = TRANSPORT


_CERT_CHECKS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls(url: str) -> dict[str, Any] | None:
    """Celery's `broker_use_ssl` for `url`: for a rediss:// broker the certificate is checked as redis-py checks it
    for the coordination clients on the same URL (required, unless the URL's `ssl_cert_reqs` says otherwise); kombu's
    own default for that scheme skips the check."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    wanted = dict(parse_qsl(parts.query)).get("ssl_cert_reqs", "required").lower()
    return {"ssl_cert_reqs": _CERT_CHECKS.get(wanted, ssl.CERT_REQUIRED)}
