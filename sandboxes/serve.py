"""Running sandbox apps as real HTTP servers: in a background thread (tests, demo) or in the foreground."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    # Many concurrent workers hit the sandboxes; a generous backlog avoids refused connections under load.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=30,
        lifespan="off",
    )


class ServerThread:
    """A uvicorn server on its own thread and event loop; `with ServerThread(app) as s: s.url`."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(_config(app, self.host, self.port))
        self._thread = threading.Thread(target=self._server.run, name=f"sandbox-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(apps: list[tuple[ASGIApp, str, int]]) -> None:
    """Serve several apps in the foreground until Ctrl-C or SIGTERM."""

    async def main() -> None:
        servers = [uvicorn.Server(_config(app, host, port)) for app, host, port in apps]
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(main())
