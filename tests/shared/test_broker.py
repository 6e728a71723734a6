"""The broker transport the app ships: kombu's Redis transport, one bookkeeping client per channel and pool."""

from __future__ import annotations

import logging
import ssl

import pytest
from kombu import Connection, Exchange, Queue

from shared import broker
from shared.celery_app import celery_config
from shared.settings import Settings
from wavesync.embedded import EmbeddedRedis


def test_the_app_uses_the_transport_under_the_schemes_names_and_verifies_a_tls_broker() -> None:
    connection = Connection("redis://127.0.0.1:6379/0")
    assert connection.transport_cls == "redis"  # what kombu logs and its TLS handling go by
    assert connection.get_transport_cls() is broker.Transport
    assert connection.as_uri().startswith("redis://")
    plain = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert plain["broker_use_ssl"] is None
    secure = celery_config(Settings(redis_url="rediss://cache.example:6380/0"))
    assert secure["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    # As the URL says for the coordination clients (redis-py reads the same parameter).
    relaxed = celery_config(Settings(redis_url="rediss://cache.example:6380/0?ssl_cert_reqs=none"))
    assert relaxed["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}


@pytest.mark.integration
def test_messages_go_through_one_client_per_channel_and_pool(redis_server: EmbeddedRedis) -> None:
    queue = Queue("broker-test", Exchange("broker-test"), routing_key="broker-test")
    with Connection(redis_server.url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        client = channel._create_client()
        for n in range(3):
            connection.Producer().publish({"n": n}, exchange=queue.exchange, routing_key="broker-test", declare=[queue])
        received = []
        with connection.SimpleQueue(queue) as simple:
            for _ in range(3):
                message = simple.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()  # kombu's unacked bookkeeping goes through the shared client
        assert received == [0, 1, 2]
        assert channel._create_client() is client
        assert channel._create_client(asynchronous=True) is not client  # the consuming client stays kombu's
        # After kombu drops its pool (a reconnect), the client of the old pool is not used again.
        channel._pool = None
        fresh = channel._create_client()
        assert fresh is not client
        assert fresh.connection_pool is channel.pool
        assert fresh.ping()


@pytest.mark.integration
def test_a_message_settled_on_a_dropped_connection_fails_as_a_connection_error(
    redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A task that ends while the broker is away is settled on its message's channel after Celery's consumer has
    dropped that connection and kombu its pool (the state a CI run's worker met). That must fail as a connection
    error, which Celery logs and the message is redelivered; kombu's AttributeError there stopped the worker."""
    queue = Queue("broker-lost", Exchange("broker-lost"), routing_key="broker-lost")
    connection = Connection(redis_server.url)
    connection.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="broker-lost", declare=[queue])
    message = connection.SimpleQueue(queue).get(timeout=5)
    errors = message.channel.connection_errors
    connection.close()
    message.channel._disconnect_pools()
    with pytest.raises(errors):
        message.reject()
    message.reject_log_error(logging.getLogger("celery.worker"), errors)
    assert "Couldn't reject" in caplog.text
