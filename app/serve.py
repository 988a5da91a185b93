"""Serving the app with uvicorn: the one server configuration `fruits app`, the demo, the benchmark and the
tests share (no server banner, no access log with client addresses, proxy headers only from named proxies)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import uvicorn

from fruits.exceptions import FruitsError

START_TIMEOUT_S = 60.0


def server(
    app: Any, host: str = "127.0.0.1", port: int = 8000, forwarded_allow_ips: str | None = None
) -> uvicorn.Server:
    """uvicorn for `app`: X-Forwarded-* are believed only from `forwarded_allow_ips` (else the peer is the
    client, whatever headers it sends), and uvicorn logs through our logging config, with its access
    log (which writes client addresses) off: app.security.AccessLog logs requests without them."""
    # access_log=False only empties that logger's handlers, and uvicorn logs whenever it has some (a
    # handler added later, a test's log capture): disabled, it writes nothing whatever is attached.
    logging.getLogger("uvicorn.access").disabled = True
    # Pillow's debug lines spell out the EXIF tags it parses (a phone's GPS position among them).
    logging.getLogger("PIL").setLevel(logging.INFO)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            server_header=False,
            access_log=False,
            log_config=None,
            proxy_headers=bool(forwarded_allow_ips),
            forwarded_allow_ips=forwarded_allow_ips or None,
            timeout_graceful_shutdown=5,
        )
    )


class BackgroundServer:
    """The app served from a thread of this process on 127.0.0.1 (a free port unless given): for the
    demo, the benchmark and the tests. `url` once started; stopped on leaving the block."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        self.server = server(app, host, port)
        self.thread = threading.Thread(target=self.server.run, name="fruits-app", daemon=True)
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise FruitsError("the app did not start (see the log above)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
