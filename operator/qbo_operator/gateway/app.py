"""`qbo-operator gateway`: Connect pages, the OAuth callback and the webhook receiver on one port,
with /healthz (the process and its background tasks are alive), /readyz (API server reachable and
the realm index synced) and /metrics.

`build_app` is the aiohttp application factory the tests and `main` share; the realm-index watch
and the webhook status flusher run as background tasks of the application."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from kubernetes_asyncio import client

from qbo_operator.core import kube as kube_module
from qbo_operator.core.config import Settings, load_settings
from qbo_operator.core.kube import Kube
from qbo_operator.gateway import pages
from qbo_operator.gateway.connect import ConnectFlow
from qbo_operator.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from qbo_operator.gateway.realm_index import RealmIndex
from qbo_operator.gateway.webhooks import MAX_BODY_BYTES, Heartbeat, StatusRecorder, WebhookReceiver

log = logging.getLogger("qbo_operator.gateway")

DEFAULT_PORT = 8000
DEFAULT_FLUSH_SECONDS = 5.0

INDEX_KEY = web.AppKey("index", RealmIndex)
RECORDER_KEY = web.AppKey("recorder", StatusRecorder)
METRICS_KEY = web.AppKey("metrics", GatewayMetrics)
FLOW_KEY = web.AppKey("flow", ConnectFlow)
TASKS_KEY = web.AppKey("tasks", list[asyncio.Task[None]])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch only this namespace (repeatable; default: $QBO_WATCH_NAMESPACES, comma-separated, "
        "or all namespaces when that is empty)",
    )
    parser.add_argument(
        "--webhook-flush-seconds",
        type=float,
        default=DEFAULT_FLUSH_SECONDS,
        help="write coalesced webhook counts to each integration's status at most this often (default 5)",
    )
    parser.add_argument("--log-level", default=os.environ.get("QBO_LOG_LEVEL", "INFO"))


def watch_namespaces(cli: Sequence[str] | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if environ is None else environ
    values = list(cli or []) or env.get("QBO_WATCH_NAMESPACES", "").split(",")
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))


def main(args: argparse.Namespace) -> int:
    settings = load_settings("gateway")
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.server").addFilter(quiet_malformed_requests)
    namespaces = watch_namespaces(args.namespaces)
    if args.webhook_flush_seconds <= 0:
        log.error("--webhook-flush-seconds must be positive")
        return 2
    asyncio.run(serve(settings, args.host, args.port, namespaces, args.webhook_flush_seconds))
    return 0


async def serve(settings: Settings, host: str, port: int, namespaces: Sequence[str], flush_seconds: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with kube_module.connect() as kube:
        app = build_app(settings, kube, namespaces=namespaces, flush_seconds=flush_seconds)
        runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(
            "gateway listening on %s:%d for %s (watching %s)",
            host,
            port,
            settings.qbo_gateway_url,
            ", ".join(namespaces) or "all namespaces",
        )
        await stop.wait()
        log.info("gateway stopping: flushing webhook counts")
        await runner.cleanup()


# --- the application -----------------------------------------------------------------------------


def quiet_malformed_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a full traceback for every request its HTTP parser refuses (too-long URL or header,
    garbage). Those are the client's fault and already answered 400: keep one warning line instead, so
    a scanner cannot flood the log and real errors stay visible."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        record.msg, record.args = "refused a malformed HTTP request: %s", (type(exc).__name__,)
        record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
    return True


class AccessLogger(AbstractAccessLogger):
    """Method, path without the query string (it carries link signatures, OAuth codes and state),
    status and time. Never a header or a body."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %d %.1fms", request.method, request.path, response.status, time * 1000)


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    return route.name or "unmatched"


def build_app(
    settings: Settings,
    kube: Kube,
    *,
    namespaces: Sequence[str] = (),
    flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    metrics: GatewayMetrics | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    metrics = metrics or GatewayMetrics()
    index = RealmIndex(kube, namespaces)
    holder = f"{socket.gethostname()}-{os.getpid()}"
    heartbeat = Heartbeat(kube, settings.pod_namespace, list(settings.webhook_verifier_tokens()), holder)
    recorder = StatusRecorder(kube, index, metrics, flush_seconds, heartbeat)
    receiver = WebhookReceiver(settings.webhook_verifier_tokens(), index, recorder, metrics)
    flow = ConnectFlow(settings, kube, index, metrics, clock=clock)
    app = web.Application(middlewares=[_guard(settings, metrics)], client_max_size=MAX_BODY_BYTES)
    app[INDEX_KEY] = index
    app[RECORDER_KEY] = recorder
    app[METRICS_KEY] = metrics
    app[FLOW_KEY] = flow
    probes = _Probes(app, kube, index, metrics)
    app.router.add_get("/connect/{namespace}/{name}", flow.connect_page, name="connect", allow_head=False)
    app.router.add_post("/connect/{namespace}/{name}", flow.start, name="connect_start")
    app.router.add_get("/oauth/callback", flow.callback, name="oauth_callback", allow_head=False)
    app.router.add_post("/webhooks/quickbooks", receiver.handle, name="webhook")
    app.router.add_get("/healthz", probes.healthz, name="healthz")
    app.router.add_get("/readyz", probes.readyz, name="readyz")
    app.router.add_get("/metrics", probes.metrics, name="metrics")
    app.router.add_get("/favicon.ico", probes.favicon, name="favicon")
    app.cleanup_ctx.append(_background)
    return app


def _guard(settings: Settings, metrics: GatewayMetrics) -> Middleware:
    """The middleware around every route: our own error pages, the security headers, request timing."""
    csp = pages.content_security_policy((pages.origin(settings.qbo_auth_url),))
    https = settings.qbo_gateway_url.startswith("https://")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await _answer(request, handler)
            headers = response.headers
            headers["Content-Security-Policy"] = csp
            headers["X-Content-Type-Options"] = "nosniff"
            headers["Referrer-Policy"] = "no-referrer"
            headers["X-Frame-Options"] = "DENY"
            headers["Cross-Origin-Opener-Policy"] = "same-origin"
            headers["Cache-Control"] = "no-store"
            headers["Server"] = "qbo-operator-gateway"
            if https:
                headers["Strict-Transport-Security"] = "max-age=31536000"
            return response
        finally:
            metrics.request_duration.labels(_route_name(request)).observe(time.perf_counter() - started)

    return guard


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, with aiohttp's 404/405 as our pages and anything unexpected as a 500 page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            status, body = pages.failure_page(
                "page_not_found" if exc.status == 404 else "method_not_allowed", None, None
            )
            response = web.Response(status=status, text=body, content_type="text/html", charset="utf-8")
            if exc.status == 405:
                response.headers["Allow"] = exc.headers.get("Allow", "")
            return response
        if exc.status >= 400:
            return web.Response(status=exc.status, text=exc.reason, content_type="text/plain")
        return exc  # redirects carry their Location and cookies
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        status, body = pages.failure_page("write_failed", None, None)
        return web.Response(status=500, text=body, content_type="text/html", charset="utf-8")


class _Probes:
    """/healthz, /readyz, /metrics and /favicon.ico."""

    def __init__(self, app: web.Application, kube: Kube, index: RealmIndex, metrics: GatewayMetrics) -> None:
        self._app, self._kube, self._index, self._metrics = app, kube, index, metrics

    async def healthz(self, request: web.Request) -> web.Response:
        dead = [t.get_name() for t in self._app.get(TASKS_KEY, []) if t.done()]
        if dead:
            return web.Response(status=500, text=f"background task stopped: {', '.join(dead)}\n")
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        try:
            await client.VersionApi(self._kube.api).get_code(_request_timeout=3)
        except Exception as exc:
            problems.append(f"API server unreachable ({type(exc).__name__})")
        if not self._index.synced:
            problems.append("realm index not synced yet")
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ready\n")

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # browsers ask for one; an empty answer keeps logs free of 404s

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The realm-index watch and the webhook status flusher, for as long as the application runs."""
    index, recorder = app[INDEX_KEY], app[RECORDER_KEY]
    tasks = [
        asyncio.create_task(index.run(), name="realm-index"),
        asyncio.create_task(recorder.run(), name="webhook-status-flush"),
    ]
    app[TASKS_KEY] = tasks
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await recorder.flush(everything=True)  # last counts go out before the process ends
    if recorder.pending:
        log.warning("%d integrations' webhook counts could not be written before exit", len(recorder.pending))
