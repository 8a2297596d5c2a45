"""One Prometheus HTTP endpoint per (address, port) and process, serving the registry of
the run (or node) that owns it now.

A sweep runs its jobs one after another in one process: each job's observer gets a fresh
registry, and the endpoint started by the first job serves it (binding the port again
would fail). Port 0 binds a free port (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Endpoint", "endpoint", "import_prometheus"]

_LOCK = threading.Lock()
_ENDPOINTS: dict[tuple[str, int], Endpoint] = {}


def import_prometheus() -> Any:
    """The ``prometheus_client`` module, or an ImportError naming the extra."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError("Prometheus metrics need the 'prometheus-client' package "
                          "(pip install 'lepton-fed[observe]')") from exc
    return prometheus_client


class _Current:
    """A collector that delegates to whichever registry is current."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        """The current registry's metrics."""
        return iter(self.registry.collect())

    def restricted_registry(self, names: Iterable[str]) -> Any:
        """The current registry restricted to metric ``names`` (for ``?name[]=`` scrapes)."""
        return self.registry.restricted_registry(names)


class Endpoint:
    """A running ``/metrics`` HTTP server (daemon thread) and the registry it serves."""

    def __init__(self, addr: str, port: int, registry: Any) -> None:
        prom = import_prometheus()
        self._current = _Current(registry)
        self.server, self.thread = prom.start_http_server(port, addr=addr,
                                                          registry=self._current)
        self.addr = addr
        self.port = int(self.server.server_port)

    def serve(self, registry: Any) -> None:
        """Serve ``registry`` from now on."""
        self._current.registry = registry

    def shutdown(self) -> None:
        """Stop the server and free the port."""
        self.server.shutdown()
        self.server.server_close()
        with _LOCK:
            for k, v in list(_ENDPOINTS.items()):
                if v is self:
                    del _ENDPOINTS[k]


def endpoint(port: int, registry: Any, *, addr: str = "127.0.0.1") -> Endpoint:
    """The endpoint on ``addr:port`` (started if needed), now serving ``registry``.

    Raises:
        OSError: the port is taken by another process.
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics port must be in 0..65535; got {port}")
    with _LOCK:
        ep = _ENDPOINTS.get((addr, int(port))) if port else None
        if ep is None:
            ep = Endpoint(addr, int(port), registry)
            _ENDPOINTS[(addr, ep.port)] = ep
        else:
            ep.serve(registry)
        return ep
