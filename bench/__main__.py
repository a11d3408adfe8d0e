"""`python -m bench [--quick] [--only NAME ...]`: run the benchmarks, print the table, write results.json.

Suites: sync (measure 1), throttle (2), operator (3), schedule (the `H` spread over 1,000 names), gateway
(4: one integration, then N), nights (a webhook-gated night for N companies, 5% with webhooks). The run
reports, it does not gate: it exits 0 when targets are missed, and 1 only when a measurement itself crashed
(its rows then say so). The size flags exist for the smoke test."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import RESULTS, Measure, say, stop_children, table

SUITES = ("sync", "throttle", "operator", "schedule", "gateway", "nights")


@dataclass(frozen=True)
class Plan:
    """How big each suite runs. `full` is the issue's sizes; `quick` finishes in a few minutes."""

    sync_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    sync_run: tuple[int, ...] = (1_000, 10_000, 100_000)
    naive_max: int = 100_000
    throttled: int | None = 100_000
    integrations: int = 10_000
    idle_seconds: float = 300.0
    spread_names: int = 1_000
    load_seconds: float = 15.0
    latency_seconds: float = 15.0
    rounds: int = 3
    gateway_integrations: int = 10_000
    nights: int = 10_000


FULL = Plan()
QUICK = Plan(sync_run=(1_000,), naive_max=1_000, throttled=None, integrations=100, idle_seconds=60.0,
             load_seconds=4.0, latency_seconds=4.0, rounds=2, gateway_integrations=200, nights=200)  # fmt: skip


class Context:
    """What the suites share, started on first use: one control plane, the sandboxes, the chart."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self._cp: Any = None
        self._world: Any = None
        self._nights_world: Any = None
        self._stack: Any = None

    @property
    def cp(self) -> Any:
        if self._cp is None:
            from qbo_operator.harness.controlplane import ControlPlane

            say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
            cp = ControlPlane()  # under qbo_operator.harness.controlplane.RUNS_ROOT, so a killed run's is reaped later
            cp.start()
            self._cp = cp
        return self._cp

    @property
    def world(self) -> Any:
        if self._world is None:
            from bench.sync_bench import SyncWorld

            self._world = SyncWorld(self.cp, self.workdir)
        return self._world

    @property
    def nights_world(self) -> Any:
        """Sandboxes of its own: the sync suite moves its QBO sandbox's clock hours ahead, a night needs it true."""
        if self._nights_world is None:
            from bench.sync_bench import SyncWorld

            self._nights_world = SyncWorld(self.cp, self.workdir / "nights")
        return self._nights_world

    @property
    def stack(self) -> Any:
        """The chart installed with helm; the operator and gateway run under its ServiceAccounts."""
        if self._stack is None:
            from qbo_operator.harness.localstack import LocalStack

            stack = LocalStack(self.cp, self.workdir / "stack")
            stack.workdir.mkdir(parents=True, exist_ok=True)
            say("installing the Helm chart (its ServiceAccounts and RBAC are what the processes run under)")
            crds = sorted((Path(__file__).resolve().parents[1] / "crds").glob("*.yaml"))
            self.cp.apply_crds(*crds)
            stack.install_chart()
            self._stack = stack
        return self._stack

    def close(self) -> None:
        """Stop everything that was started, in reverse order, and keep going past a failure."""
        stop_children()
        for part in (self._nights_world, self._world, self._stack, self._cp):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:
                say(f"cleanup: {type(exc).__name__}: {exc}")


def run_suite(name: str, ctx: Context) -> list[Measure]:
    plan = ctx.plan
    if name == "sync":
        from bench.sync_bench import sync_suite

        world = ctx.world if plan.sync_run else None
        return sync_suite(world, plan.sync_sizes, plan.sync_run, plan.naive_max)
    if name == "throttle":
        from bench.sync_bench import throttle_suite

        return throttle_suite(ctx.world if plan.throttled else None, plan.throttled)
    if name == "operator":
        from bench.operator_bench import operator_suite

        return operator_suite(ctx.cp, ctx.stack, plan.integrations, plan.idle_seconds)
    if name == "schedule":
        from bench.operator_bench import schedule_suite

        return schedule_suite(plan.spread_names)
    if name == "gateway":
        from bench.gateway_bench import gateway_suite

        return gateway_suite(
            ctx.cp, ctx.stack, plan.load_seconds, plan.latency_seconds, plan.rounds, plan.gateway_integrations
        )
    if name == "nights":
        from bench.nights_bench import nights_suite

        return nights_suite(ctx.nights_world, plan.nights)
    raise ValueError(name)


def crashed(name: str, exc: BaseException) -> Measure:
    first = str(exc).splitlines()[0][:150] if str(exc) else ""
    return Measure(
        f"{name}.crashed", f"{name}: measurement crashed", None, skipped=f"CRASHED: {type(exc).__name__}: {first}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def write_results(measures: Sequence[Measure], path: Path) -> None:
    data = {m.name: m.to_json() for m in measures}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the smallest sizes (under 5 minutes)")
    p.add_argument("--only", action="append", choices=SUITES, metavar="NAME",
                   help=f"run only this suite (repeatable): {', '.join(SUITES)}")  # fmt: skip
    p.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON (default bench/results.json)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs) even when nothing crashed")
    tiny = p.add_argument_group("size overrides (for the smoke test)")
    tiny.add_argument("--sync-sizes", type=_sizes, help="comma-separated payment counts to run")
    tiny.add_argument("--integrations", type=int)
    tiny.add_argument("--idle-seconds", type=float)
    tiny.add_argument("--spread-names", type=int)
    tiny.add_argument("--load-seconds", type=float)
    tiny.add_argument("--gateway-integrations", type=int, metavar="N",
                      help="integrations the gateway indexes in `gateway.<N>.*` (0: that part not run)")  # fmt: skip
    tiny.add_argument("--nights", type=int, metavar="N", help="companies in the simulated night")
    p.add_argument("--throttled", type=int, metavar="N",
                   help="run measure 2 (sync under the throttle) at N payments, in quick mode too")  # fmt: skip
    return p.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.sync_sizes:
        plan = replace(plan, sync_sizes=args.sync_sizes, sync_run=args.sync_sizes, naive_max=max(args.sync_sizes))
    if args.integrations:
        plan = replace(plan, integrations=args.integrations)
    if args.idle_seconds is not None:
        plan = replace(plan, idle_seconds=args.idle_seconds)
    if args.spread_names:
        plan = replace(plan, spread_names=args.spread_names)
    if args.throttled:
        plan = replace(plan, throttled=args.throttled)
    if args.gateway_integrations is not None:
        plan = replace(plan, gateway_integrations=args.gateway_integrations)
    if args.nights:
        plan = replace(plan, nights=args.nights)
    if args.load_seconds:
        plan = replace(plan, load_seconds=args.load_seconds, latency_seconds=args.load_seconds, rounds=1)
    return plan


def main(argv: Sequence[str] | None = None, runner: Callable[[str, Context], list[Measure]] = run_suite) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    suites = [s for s in SUITES if not args.only or s in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="qbo-bench-"))
    say(f"{'quick' if args.quick else 'full'} run of {', '.join(suites)}; logs in {workdir}")
    ctx = Context(plan, workdir)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on `kill` too, not only on Ctrl-C
    measures: list[Measure] = []
    failures: list[str] = []
    try:
        for name in suites:
            say(f"== {name}")
            try:
                measures += runner(name, ctx)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                failures.append(name)
                measures.append(crashed(name, exc))
    except KeyboardInterrupt:
        failures.append("interrupted")
        measures.append(Measure("run.interrupted", "run: interrupted", None, skipped="INTERRUPTED (SIGINT or SIGTERM)"))
        say("interrupted: stopping what was started")
    finally:
        ctx.close()
    print()
    print(table(measures))
    write_results(measures, args.output)
    met = [m for m in measures if m.met is True]
    missed = [m for m in measures if m.met is False]
    print(
        f"\ntargets met: {len(met)}; missed: {len(missed)}"
        + (f" ({', '.join(m.name for m in missed)})" if missed else "")
    )
    print(f"results written to {args.output}")
    if failures:
        if any(workdir.iterdir()):
            print(f"measurements that crashed: {', '.join(failures)} (logs kept in {workdir})", file=sys.stderr)
        else:
            print(f"measurements that crashed: {', '.join(failures)}", file=sys.stderr)
            workdir.rmdir()
        return 1
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
