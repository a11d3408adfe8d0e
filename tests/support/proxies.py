"""Two stand-ins in front of a real server: a TCP forwarder that can be cut (the API server "goes away" for
one client without touching the shared control plane), and an HTTP proxy that may rewrite answers a
sandbox cannot be told to give."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from aiohttp import web

from qbo_operator.harness.controlplane import free_port
from tests.support.http import serve_app


class TcpProxy:
    """A loopback TCP forwarder to `target_port`; `stop()` refuses new connections and cuts open ones."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


Rewrite = Callable[[web.Request, httpx.Response], Awaitable[web.Response | None]]
KEPT_HEADERS = ("content-type", "intuit_tid", "retry-after", "x-amzn-requestid")


class Proxy:
    """Forwards every request to `upstream`; `rewrite` may answer differently (None: pass the answer on)."""

    def __init__(self, upstream: str, rewrite: Rewrite | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.request(
                request.method, self.upstream + request.path_qs, content=await request.read(), headers=headers
            )
        replaced = None if self.rewrite is None else await self.rewrite(request, resp)
        if replaced is not None:
            return replaced
        keep = {k: v for k, v in resp.headers.items() if k.lower() in KEPT_HEADERS}
        return web.Response(status=resp.status_code, body=resp.content, headers=keep)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        async with serve_app(app) as url:
            yield url
