"""The SuperLink's public port: TLS, Fleet API only.

Flower 1.42 serves three APIs on one port: Fleet (SuperNodes), Control (``flwr run``,
``flwr supernode register``) and Runtime (the ServerApp; task acquisition). Without
Flower's enterprise account plugin the Control API has no authentication, so anyone who
can reach that port could register nodes, start runs (i.e. run code on the SuperLink
host) or acquire the ServerApp's task. ``lepton-fed superlink`` therefore binds Flower's
SuperLink to loopback only and puts this gate on the public port. The gate terminates
TLS with the SuperLink certificate and forwards ``POST /v1/fleet/*`` to the loopback
SuperLink (TLS again, verified with the federation CA); every other path gets 404.

Node authentication is untouched: the signed-timestamp headers pass through unchanged
and Flower's SuperLink checks them. The gate sees what the SuperLink sees (it runs on
the same host, under the same operator).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

__all__ = ["FLEET_PREFIX", "Gate", "make_gate_app"]

FLEET_PREFIX = "/v1/fleet/"
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length",
                  "content-encoding", "accept-encoding"})


def make_gate_app(upstream: str, ca_file: Path) -> Any:
    """A Starlette app forwarding Fleet calls to ``upstream`` (``https://127.0.0.1:PORT``)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        async with httpx.AsyncClient(base_url=upstream, verify=ctx,
                                     timeout=httpx.Timeout(120.0, connect=10.0)) as client:
            state["client"] = client
            yield

    async def forward(request: Request) -> Response:
        path = request.url.path
        if request.method != "POST" or not path.startswith(FLEET_PREFIX) or ".." in path:
            return Response(b'{"detail":"not found"}', status_code=404,
                            media_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["accept-encoding"] = "identity"
        try:
            r = await state["client"].post(path, content=await request.body(), headers=headers)
        except httpx.HTTPError:
            return Response(b'{"detail":"superlink unavailable"}', status_code=503,
                            media_type="application/json")
        out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
        return Response(r.content, status_code=r.status_code, headers=out)

    routes = [Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])]
    return Starlette(routes=routes, lifespan=lifespan)


class Gate:
    """The gate served by uvicorn in a background thread (the main thread keeps signals)."""

    def __init__(self, *, host: str, port: int, upstream: str, cert: Path, key: Path,
                 ca: Path) -> None:
        import uvicorn

        self.host, self.port = host, port
        config = uvicorn.Config(make_gate_app(upstream, ca), host=host, port=port,
                                ssl_certfile=str(cert), ssl_keyfile=str(key),
                                log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="lepton-fed-gate", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; raise RuntimeError if it is not up within ``timeout``."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the Fleet gate could not start on {self.host}:{self.port}")
            time.sleep(0.05)

    def alive(self) -> bool:
        """True while the server thread runs."""
        return self.thread.is_alive()

    def stop(self) -> None:
        """Ask uvicorn to exit and wait up to 10 s for its thread."""
        self.server.should_exit = True
        self.thread.join(10)
