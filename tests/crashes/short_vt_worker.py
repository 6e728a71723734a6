"""`python -m tests.crashes.short_vt_worker <worker options>`: a worker whose broker hands a dead worker's messages
back within seconds. Production keeps kombu's visibility timeout at an hour (longer than any task and retry
countdown); a crash test cannot wait that long. Tests only."""

from __future__ import annotations

import sys

VISIBILITY_TIMEOUT_S = 5


def main() -> None:
    from shared.celery_app import app
    from wavesync.cli import main as wavesync

    transport = dict(app.conf.broker_transport_options or {})
    transport.update(visibility_timeout=VISIBILITY_TIMEOUT_S, unacked_restore_interval=1, unacked_restore_throttle=1)
    app.conf.broker_transport_options = transport
    app.conf.visibility_timeout = VISIBILITY_TIMEOUT_S
    wavesync(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    main()
