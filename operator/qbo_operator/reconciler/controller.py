"""`qbo-operator run`: the operator process (kopf), with /healthz and /metrics (docs/design.md §1, §7).

One replica with `--standalone`: kopf's peering pauses peers of equal priority rather than electing a
leader, so the chart runs exactly one pod with strategy Recreate. The kopf settings below are chosen for a
production cluster: server-side watch timeouts (no silently dead streams), the finalizer and annotation prefix of
`names`, and no diff-base annotation at all. kopf watches only the CRs (`registration`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics

from qbo_operator.core import informer, kube, names
from qbo_operator.core import logging as logs
from qbo_operator.core.config import load_settings
from qbo_operator.reconciler import memtrace
from qbo_operator.reconciler.housekeeping import HOUSEKEEPING_INTERVAL
from qbo_operator.reconciler.metrics import READ_BUDGET, OperatorMetrics
from qbo_operator.reconciler.reconcile import Runtime
from qbo_operator.reconciler.registration import build_registry

log = logging.getLogger("qbo_operator.reconciler.controller")

WATCH_SERVER_TIMEOUT = 300  # the API server ends each watch after this; kopf resumes from the last version
WATCH_CLIENT_TIMEOUT = 330  # a stream silent for longer than the server's own limit is dead
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
WORKER_IDLE_TIMEOUT = 0.5


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a copy of the spec in an annotation to detect changes for create/update handlers. This
    operator has none (it reconciles levels, not diffs), so the copy would only cost a write per change."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def operator_settings(standalone: bool, priority: int | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = names.FINALIZER
    # kopf records handler progress only while the deletion handler retries; keep it under our prefix.
    settings.persistence.progress_storage = kopf.SmartProgressStorage(prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    # kopf's per-object worker lives this long after its last event, holding that event's body: at start-up it
    # lists every CR at once, so with kopf's 5 s all 10,000 workers were alive together (the restart peak).
    settings.queueing.idle_timeout = WORKER_IDLE_TIMEOUT
    # kopf's own listing of the CRs arrives in pages too, like our informers': unpaged, the whole fleet came as one
    # response and every object got its worker before any of them ran.
    settings.watching.chunk_size = informer.PAGE_SIZE
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.posting.enabled = False  # Events are written by the handlers themselves (and counted)
    settings.posting.reporting_component = names.MANAGED_BY
    settings.posting.reporting_instance = socket.gethostname()
    settings.peering.standalone = standalone
    if priority is not None:
        settings.peering.priority = priority
    return settings


def configure_logging(log_format: str | None, verbose: bool) -> None:
    """`core.logging` for `run`, with the client libraries' chatter and kopf's per-handler lines quiet."""
    logs.configure("run", logs.log_format(log_format, default="json"), logging.DEBUG if verbose else logging.INFO)
    for noisy in ("asyncio", "aiohttp.access", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # per-handler success lines


async def start_metrics_server(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """/metrics on its own port. Served on the event loop, so the collector reads kopf's index safely."""

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="serve QuickbooksIntegrations in this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=True,
        help="run without kopf peering (the default; run one replica with strategy Recreate)",
    )
    parser.add_argument("--peering", metavar="NAME", help="use kopf peering object NAME instead of --standalone")
    parser.add_argument("--priority", type=int, help="kopf peering priority (with --peering)")
    parser.add_argument("--health-port", type=int, default=8080, help="port of /healthz (default 8080)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="port of /metrics (default 9090)")
    parser.add_argument(
        "--metrics-realm-ids",
        action="store_true",
        help="publish each integration's QuickBooks realm id on /metrics (qbo_integration_info's realm_id; "
        "off by default: /metrics is unauthenticated)",
    )
    parser.add_argument(
        "--read-budget",
        type=int,
        default=READ_BUDGET,
        metavar="CALLS",
        help="metered QuickBooks API calls a month each Intuit app may make (default 500000, Intuit's Builder tier); "
        "qbo_app_read_budget on /metrics, which the QuickbooksReadBudget alert compares at 80%%",
    )
    parser.add_argument("--bind-address", default="0.0.0.0", help="address of both ports (default 0.0.0.0)")  # noqa: S104
    parser.add_argument(
        "--housekeeping-interval",
        type=float,
        default=HOUSEKEEPING_INTERVAL,
        metavar="SECONDS",
        help="how often the housekeeping scan looks for integrations whose Connect link or tokens are due "
        "(default 3600)",
    )
    parser.add_argument(
        "--log-format", choices=["json", "text"], default=None, help="log format (default QBO_LOG_FORMAT, else json)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def main(args: argparse.Namespace) -> int:
    settings = load_settings("operator")  # ConfigError: one line per variable, printed by the CLI
    if not args.namespaces and not args.all_namespaces:
        print("qbo-operator run: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.verbose)
    # No *_created series: they double the exposition and nobody alerts on them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Any) -> int:
    memtrace.install(asyncio.get_running_loop())  # a diagnostic, off unless QBO_TRACEMALLOC is set
    standalone = args.peering is None
    kopf_settings = operator_settings(standalone, args.priority)
    registry = build_registry(args.housekeeping_interval)
    async with kube.connect() as k:
        holder: dict[str, Runtime] = {}
        metrics = OperatorMetrics(
            lambda: holder["runtime"].integration_snapshots() if holder else [],
            realm_ids=args.metrics_realm_ids,
            read_budget=args.read_budget,
        )
        namespaces = list(dict.fromkeys([*args.namespaces, settings.pod_namespace])) if args.namespaces else []
        runtime = Runtime(settings, k, metrics, tuple(namespaces))
        holder["runtime"] = runtime
        runner = await start_metrics_server(metrics, args.bind_address, args.metrics_port)
        log.info(
            "starting: %s, /healthz on %s:%d, /metrics on %s:%d",
            "all namespaces" if args.all_namespaces else "namespaces " + ", ".join(args.namespaces),
            args.bind_address,
            args.health_port,
            args.bind_address,
            args.metrics_port,
        )
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings,
                standalone=standalone,
                peering_name=args.peering,
                clusterwide=bool(args.all_namespaces),
                # and its own namespace, where the sync CronJobs and Jobs run (docs/security.md)
                namespaces=namespaces,
                liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz",
                memo=kopf.Memo(runtime=runtime),
            )
        finally:
            await runtime.stop()
            await runner.cleanup()
    return 0
