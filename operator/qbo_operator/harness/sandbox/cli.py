"""`qbo-operator sandbox qbo|greencheck`: one sandbox server for local development and the demo.

Credentials come from the same environment variables the operator reads, so the operator, the
gateway and the sandbox agree on them; a missing one stops start-up with one line naming it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from qbo_operator.core.config import ConfigError

QBO_ENV = ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_REDIRECT_URI", "QBO_WEBHOOK_VERIFIER_TOKEN")
GREENCHECK_ENV = ("GREENCHECK_CLIENT_ID", "GREENCHECK_CLIENT_SECRET", "GREENCHECK_SERVICE_PROVIDER_ID")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox", metavar="SANDBOX", required=True)
    qbo = sub.add_parser("qbo", help="Intuit's OAuth server, Accounting API and webhooks")
    qbo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    qbo.add_argument("--port", type=int, default=8001, help="port (default 8001; 0 = any free port)")
    qbo.add_argument("--company", action="append", metavar="NAME", help="company to create (repeatable)")
    qbo.add_argument("--history", type=_count, default=200, metavar="H", help="past payments per company")
    qbo.add_argument("--payments", type=_count, default=0, metavar="N", help="new payments created at start-up")
    qbo.add_argument("--seed", type=int, default=1, help="data seed (same seed, same data)")
    qbo.add_argument("--webhook-url", help="where to deliver signed webhooks (e.g. the gateway)")
    qbo.add_argument("--webhook-format", choices=("cloudevents", "legacy"), default="cloudevents")
    qbo.add_argument("--no-throttle", action="store_true", help="turn off Intuit's per-realm rate limits")
    qbo.add_argument("--rotation-seconds", type=float, default=86400, help="refresh-token rotation age")
    qbo.add_argument("--access-token-lifetime", type=int, default=3600, help="access-token lifetime, seconds")
    qbo.add_argument(
        "--tie-shuffle-seed", type=int, default=None, help="shuffle rows that tie on ORDERBY (seeded, each query anew)"
    )
    qbo.add_argument("--multicurrency", action="store_true", help="a quarter of each company's customers pay in CAD")
    gc = sub.add_parser("greencheck", help="Green Check's API")
    gc.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gc.add_argument("--port", type=int, default=8002, help="port (default 8002; 0 = any free port)")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _env(names: tuple[str, ...], environ: Mapping[str, str]) -> dict[str, str]:
    missing = [n for n in names if not environ.get(n, "").strip()]
    if missing:
        raise ConfigError([f"{n} is required for `qbo-operator sandbox` but is not set" for n in missing])
    return {n: environ[n].strip() for n in names}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.sandbox == "qbo":
        return asyncio.run(_serve_qbo(args, _env(QBO_ENV, os.environ)))
    return asyncio.run(_serve_greencheck(args, _env(GREENCHECK_ENV, os.environ)))


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_qbo(args: argparse.Namespace, env: dict[str, str]) -> int:
    from qbo_operator.harness.sandbox.qbo import QboSandbox, summary_lines
    from qbo_operator.harness.sandbox.qbo_api import INTUIT_LIMITS

    sb = QboSandbox(
        client_id=env["QBO_CLIENT_ID"],
        client_secret=env["QBO_CLIENT_SECRET"],
        redirect_uri=env["QBO_REDIRECT_URI"],
        webhook_verifier_token=env["QBO_WEBHOOK_VERIFIER_TOKEN"],
        webhook_url=args.webhook_url,
        webhook_format=args.webhook_format,
        rotation_seconds=args.rotation_seconds,
        access_token_lifetime=args.access_token_lifetime,
        throttle=None if args.no_throttle else INTUIT_LIMITS,
        tie_shuffle_seed=args.tie_shuffle_seed,
    )
    for name in args.company or ["Acme Dispensary"]:
        realm = sb.add_company(name, seed=args.seed, payments=args.history, multicurrency=args.multicurrency)
        if args.payments:
            sb.generate_payments(realm, args.payments, seed=args.seed)
    async with sb.serve(args.host, args.port):
        for line in summary_lines(sb):
            print(line, flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await _until_stopped()
    return 0


async def _serve_greencheck(args: argparse.Namespace, env: dict[str, str]) -> int:
    from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox  # written alongside; imported only here

    sb = GreenCheckSandbox(
        env["GREENCHECK_CLIENT_ID"], env["GREENCHECK_CLIENT_SECRET"], env["GREENCHECK_SERVICE_PROVIDER_ID"]
    )
    async with sb.serve(args.host, args.port) as base_url:
        print(f"Green Check sandbox listening on {base_url}", flush=True)
        print(f"  GREENCHECK_API_URL={base_url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await _until_stopped()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(argparse.Namespace()))
