"""`python -m bench.nights_worker --namespace NS --names FILE`: one worker of a simulated night (`nights.<N>`).

Runs the sync's real run (`qbo_operator.sync.run.SyncRun`, what `qbo-operator sync` runs after parsing its
arguments) for each integration named in FILE, a few at a time on one API connection. Spawning 10,000
`qbo-operator sync` processes would measure Python start-up, not the night; everything the night costs
QuickBooks is counted by the QBO sandbox per realm, never here. Prints one JSON line: runs and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from qbo_operator.core import kube as kube_mod
from qbo_operator.core.config import Tuning, load_settings, trigger_from_env
from qbo_operator.sync.run import SyncRun


async def night(namespace: str, names: Sequence[str], concurrency: int) -> Counter[int]:
    """Each integration's nightly run (trigger from QBO_SYNC_TRIGGER, as the CronJob's pod); their exit codes."""
    settings = load_settings("sync")
    tuning = Tuning.from_env(os.environ)
    trigger = trigger_from_env(os.environ)
    gate = asyncio.Semaphore(concurrency)
    done = 0
    async with kube_mod.connect() as kube:

        async def one(name: str) -> int:
            nonlocal done
            async with gate:
                run = SyncRun(
                    kube, settings, tuning, namespace, name, dry_run=False, trigger=trigger, job_name=f"{name}-nightly"
                )
                code = await run.run()
            done += 1
            if done % 250 == 0:
                print(f"progress: {done:,}/{len(names):,} runs", flush=True)
            return code

        return Counter(await asyncio.gather(*(one(n) for n in names)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nights_worker", description=__doc__)
    p.add_argument("--namespace", required=True)
    p.add_argument("--names", type=Path, required=True, help="a file with one integration name a line")
    p.add_argument("--concurrency", type=int, default=8, help="runs in flight at once")
    args = p.parse_args(argv)
    # A night's runs log what a Job logs; at 10,000 runs only warnings are kept (the status says the rest).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="nights worker: %(name)s: %(message)s")
    names = [line.strip() for line in args.names.read_text().splitlines() if line.strip()]
    codes = asyncio.run(night(args.namespace, names, args.concurrency))
    print(json.dumps({"runs": sum(codes.values()), "exit_codes": {str(k): v for k, v in codes.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
