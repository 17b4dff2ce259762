"""The EMR's HTTP server: waitress, set up so that slow or unfinished requests cannot starve others.

Waitress reads requests asynchronously and hands only complete ones to its
worker threads, so a client that never finishes its headers costs a socket,
not a thread. What it does not do is keep such sockets in check: by default
100 open connections stop it accepting (``connection_limit``), and a client
that sends one byte every minute is never idle long enough for
``channel_timeout``. Here:

* ``connection_limit`` is raised well above a ward's needs, and one client
  IP may hold at most ``connections_per_ip`` of them (the reverse proxy's
  address, which speaks for everyone, is exempt: nginx limits per IP there);
* a request must arrive completely (headers and body) within
  ``request_timeout`` seconds of its first byte, however slowly it trickles;
* idle keep-alive connections close after ``channel_timeout``.

``/healthz`` and the chart therefore answer while 110 (or 1000) sockets
hang half-open.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from emr.core.settings import EmrSettings

__all__ = ["make_server", "server_options"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 20.0  # seconds from a request's first byte to its last
CHANNEL_TIMEOUT = 30  # idle keep-alive connections
CONNECTION_LIMIT = 500


class _TimedChannel(HTTPChannel):  # type: ignore[misc]
    """Remembers when the request being received started, for the server's request deadline."""

    partial_since: float | None = None

    def received(self, data: bytes) -> bool:
        result = super().received(data)
        if self.request is not None:  # a request still waiting for more bytes
            if self.partial_since is None:
                self.partial_since = time.monotonic()
        else:
            self.partial_since = None
        return bool(result)


class GuardedServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with a per-IP connection cap and a whole-request deadline."""

    channel_class = _TimedChannel

    def __init__(
        self,
        application: Any,
        *args: Any,
        connections_per_ip: int,
        request_timeout: float,
        exempt: frozenset[str],
        **kw: Any,
    ) -> None:
        self.connections_per_ip = connections_per_ip
        self.request_timeout = request_timeout
        self.exempt = exempt
        self.refused = 0  # connections closed at accept because their IP held too many
        super().__init__(application, *args, **kw)

    def _open_from(self, ip: str) -> int:
        counts = Counter(_peer_ip(ch) for ch in list(self.active_channels.values()))
        return counts.get(ip, 0)

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
        except OSError:
            return
        if pair is None:
            return
        conn, addr = pair
        ip = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        if ip not in self.exempt and "*" not in self.exempt and self._open_from(ip) >= self.connections_per_ip:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning("%s holds %d connections: refusing more (%d refused so far)",
                            ip, self.connections_per_ip, self.refused)
            conn.close()
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            since = getattr(channel, "partial_since", None)
            if since is not None and since < cutoff and not channel.requests:
                channel.will_close = True  # the request is taking too long to arrive: drop it


def _peer_ip(channel: Any) -> str:
    addr = getattr(channel, "addr", None)
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


def server_options(settings: EmrSettings, threads: int = 8) -> dict[str, Any]:
    """waitress adjustments for the EMR (also used by the benchmark)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "threads": threads,
        "ident": "filmless",
        "connection_limit": CONNECTION_LIMIT,
        "channel_timeout": CHANNEL_TIMEOUT,
        "cleanup_interval": 2,
        "backlog": 1024,
        "clear_untrusted_proxy_headers": True,
    }
    if settings.trusted_proxy:
        options["trusted_proxy"] = settings.trusted_proxy
        options["trusted_proxy_headers"] = {"x-forwarded-for", "x-forwarded-proto"}
        options["trusted_proxy_count"] = 1
    return options


def make_server(app: Any, settings: EmrSettings, *, threads: int = 8, request_timeout: float = REQUEST_TIMEOUT) -> Any:
    """A ready-to-``run()`` server for ``app`` on ``settings.host:port`` (several sockets for a name like localhost).

    waitress itself applies the trusted-proxy headers (``X-Forwarded-For`` from
    ``settings.trusted_proxy`` only) before the app sees ``remote_addr``.
    """
    from waitress.adjustments import Adjustments
    from waitress.server import MultiSocketServer
    from waitress.task import ThreadedTaskDispatcher

    adj = Adjustments(**server_options(settings, threads))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    exempt = frozenset({settings.trusted_proxy} if settings.trusted_proxy else set())
    servers = [
        GuardedServer(
            app,
            socket_map,
            dispatcher=dispatcher,
            adj=adj,
            sockinfo=sockinfo,
            connections_per_ip=settings.connections_per_ip,
            request_timeout=request_timeout,
            exempt=exempt,
        )
        for sockinfo in adj.listen
    ]
    if len(servers) == 1:
        return servers[0]
    listening = [(srv.effective_host, srv.effective_port) for srv in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)
