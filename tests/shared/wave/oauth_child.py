"""A process of the fleet for the OAuth tests: THREADS threads ask one OAuthTokens for a token at the same instant.

Usage: python -m tests.shared.wave.oauth_child <settings-json> <threads> <start-at|ready> [--kill-after-answer]
<start-at> is a unix time. With `ready` the process prints "ready" once it is set up and reads the start time from
its standard input, so the parent can pick a start after every child is up, however slow the machine.
Prints one JSON line: the sha256 prefix of the token each thread got (never a token) and the refreshes made here.
With --kill-after-answer the process SIGKILLs itself after the token endpoint answered and before the new pair was
stored: the crash the recovery state is documented for.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time

import redis

from shared.settings import Settings
from shared.store.credentials import Cipher
from shared.store.db import Database
from shared.wave.auth import OAuthTokens, token_endpoint


def main() -> None:
    settings = Settings(**json.loads(sys.argv[1]))
    threads, start = int(sys.argv[2]), sys.argv[3]
    kill = "--kill-after-answer" in sys.argv[4:]

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    assert settings.redis_url is not None
    tokens = OAuthTokens(
        Database(settings.database_url),
        redis.Redis.from_url(str(settings.redis_url)),
        Cipher(settings.secret_keys()),
        token_endpoint(settings),
        after_token_answer=die if kill else None,
    )
    if start == "ready":
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
    else:
        start_at = float(start)
    got: list[str] = []
    errors: list[str] = []

    def ask() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            got.append(hashlib.sha256(tokens.token().encode()).hexdigest()[:12])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"tokens": got, "errors": errors, "refreshes": tokens.refreshes}), flush=True)


if __name__ == "__main__":
    main()
