"""Webhook capacity of the gateway (measure 4).

The gateway runs as the real `qbo-operator gateway` process under the chart's ServiceAccount, pinned to
CPU 0; the load generator runs in another process pinned to CPU 1, on loopback. One integration is
connected to the realm the webhooks name, so deliveries take the full path: signature check over the raw
body, parsing, de-duplication, the realm index and the coalesced status write every few seconds.

- Throughput: `wrk` (one thread, closed loop) sending pre-signed CloudEvents bodies, each with its own
  event id, read from a file by a Lua script; then the same server answering GET /healthz with the same
  wrk settings, which is aiohttp's floor on this machine. Rounds alternate and the median counts.
- Latency: an open-loop aiohttp client (`python -m bench.gateway_bench loadgen`) sending at a fixed rate
  and timing every request from the moment it was due (so a stalled server is not hidden), webhooks and
  /healthz at the same rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import (
    BenchError,
    Measure,
    Target,
    child_env,
    mib,
    percentile,
    proc_status_kb,
    python_module_argv,
    say,
    spawn,
)
from qbo_operator.core import names, signing
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import LocalStack
from qbo_operator.harness.sandbox.qbo_webhooks import WebhookEvent, cloudevents_body

WRK = "/usr/bin/wrk"
SERVER_CPU = 0
LOAD_CPU = 1
CONNECTIONS = 32
FIXED_RATE = 100  # requests/s for the latency comparison: well below capacity (lowered on a slow machine)
NAMESPACE = "bench-gateway"
INTEGRATION = "webhook-target"
REALM = "9130355357483456"

_RUNS = itertools.count(1)  # numbers the load generators' log files

WRK_SCRIPT = r"""
-- Pre-signed webhook deliveries, one per line: "<intuit-signature>\t<body>".
local sigs, bodies, n, i = {}, {}, 0, 0
local path, mode = nil, "webhook"

function init(args)
  path, mode, i = args[1], args[2], tonumber(args[3] or "0")
  if mode == "webhook" then
    for line in io.lines(path) do
      local tab = line:find("\t", 1, true)
      n = n + 1
      sigs[n] = line:sub(1, tab - 1)
      bodies[n] = line:sub(tab + 1)
    end
  end
end

function request()
  if mode ~= "webhook" then
    return wrk.format("GET", "/healthz")
  end
  i = i % n + 1
  return wrk.format("POST", "/webhooks/quickbooks",
    {["Content-Type"] = "application/cloudevents-batch+json", ["intuit-signature"] = sigs[i]}, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# --- bodies ---------------------------------------------------------------------------------------


def write_bodies(path: Path, token: str, count: int, realms: Sequence[str] = (REALM,)) -> None:
    """`count` CloudEvents deliveries (one Payment event each, distinct ids), signed as Intuit signs them; the
    i-th names realms[i % len(realms)]."""
    now = datetime.now(UTC)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            event = WebhookEvent(
                id=str(uuid.uuid4()), realm_id=realms[i % len(realms)], entity="Payment", entity_id=str(10_000 + i),
                operation="Create", time=now + timedelta(milliseconds=i),
            )  # fmt: skip
            body = cloudevents_body([event], "intuit.bench")
            fh.write(signing.webhook_signature(token, body) + "\t" + body.decode() + "\n")


def read_bodies(path: Path) -> list[tuple[str, bytes]]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            sig, _, body = line.rstrip("\n").partition("\t")
            out.append((sig, body.encode()))
    return out


# --- wrk ------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float


def run_wrk(url: str, script: Path, mode: str, seconds: float, bodies: Path, offset: int, logs: Path) -> WrkResult:
    argv = [
        "taskset", "-c", str(LOAD_CPU), WRK, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", str(script), url, "--", str(bodies), mode, str(offset),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    (logs / f"wrk-{mode}-{next(_RUNS)}.log").write_text(proc.stdout + proc.stderr)
    match = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:500] or proc.stdout[-500:]}")
    data = json.loads(match.group(1))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        data["requests"] / (data["duration_us"] / 1e6), data["requests"], errors,
        data["p50_us"] / 1000, data["p99_us"] / 1000,
    )  # fmt: skip


# --- the open-loop load generator (its own process) ------------------------------------------------


async def _loadgen(
    url: str, rate: float, seconds: float, bodies: list[tuple[str, bytes]], offset: int
) -> dict[str, Any]:
    import aiohttp

    count = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, due: float) -> None:
            nonlocal errors
            try:
                if bodies:
                    sig, body = bodies[(offset + i) % len(bodies)]
                    headers = {"intuit-signature": sig, "Content-Type": "application/cloudevents-batch+json"}
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                else:
                    async with session.get(url) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - due)
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        tasks = []
        start = time.perf_counter() + 0.2
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return {
        "sent": count,
        "errors": errors,
        "statuses": statuses,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
    }


def loadgen_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_bench loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--bodies", type=Path, help="signed bodies (POST); without it GET")
    p.add_argument("--offset", type=int, default=0)
    args = p.parse_args(argv)
    bodies = read_bodies(args.bodies) if args.bodies else []
    result = asyncio.run(_loadgen(args.url, args.rate, args.seconds, bodies, args.offset))
    print("LOADJSON " + json.dumps(result), flush=True)
    return 0


def run_loadgen(url: str, rate: float, seconds: float, bodies: Path | None, offset: int, logs: Path) -> dict[str, Any]:
    args = ["loadgen", "--url", url, "--rate", str(rate), "--seconds", str(seconds), "--offset", str(offset)]
    if bodies is not None:
        args += ["--bodies", str(bodies)]
    child = spawn(f"loadgen-{'webhook' if bodies else 'healthz'}-{next(_RUNS)}",
                  python_module_argv("bench.gateway_bench", *args), child_env({}), logs, cpus={LOAD_CPU})  # fmt: skip
    rc = child.wait_rusage()
    found = re.findall(r"LOADJSON (\{.*\})", child.tail(20_000))
    match = found[-1] if found else None
    if rc != 0 or match is None:
        raise BenchError(f"load generator failed ({rc}):\n{child.tail()}")
    data: dict[str, Any] = json.loads(match)
    return data


# --- the suite --------------------------------------------------------------------------------------


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else "")) and labels in line:
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def pin_threads(pid: int, cpu: int) -> int:
    pinned = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), {cpu})
            pinned += 1
    return pinned


def _connect_integration(cp: ControlPlane) -> None:
    cp.kubectl("create", "namespace", NAMESPACE, check=False)
    cr = {
        "apiVersion": names.API_VERSION, "kind": names.KIND,
        "metadata": {"name": INTEGRATION, "namespace": NAMESPACE},
        "spec": {"companyId": str(uuid.uuid4()), "companyName": "Webhook Target"},
    }  # fmt: skip
    cp.kubectl("apply", "-f", "-", input=json.dumps(cr))
    patch = {"status": {"phase": "Connected", "realmId": REALM}}
    cp.kubectl("patch", names.PLURAL, INTEGRATION, "-n", NAMESPACE, "--subresource=status", "--type=merge",
               "-p", json.dumps(patch))  # fmt: skip


_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_SYNCED = re.compile(  # the informer's line (core/informer.py), or the realm index's own before it
    _LOG_TIME + r" \S+ (?:qbo_operator\.core\.informer: listed quickbooksintegrations in .*?: (\d+) objects"
    r"|qbo_operator\.gateway\.realm_index: realm index synced for .*?: (\d+) integrations)"
)
_LISTENING = re.compile(_LOG_TIME + r" \S+ qbo_operator\.gateway: gateway listening on ")


def _log_time(stamp: str) -> float:
    """The epoch seconds of a log line's `asctime` (local time, milliseconds)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # asctime is local time


def _log_since(log: Path, offset: int) -> str:
    with log.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def index_synced(log: Path, offset: int) -> tuple[float, int] | None:
    """(when, how many integrations) of the first line saying the gateway's realm index has listed every
    integration (one watched namespace, or all), logged after `offset`."""
    match = _SYNCED.search(_log_since(log, offset)) if log.exists() else None
    return (_log_time(match.group(1)), int(match.group(2) or match.group(3))) if match else None


def gateway_listening(log: Path, offset: int) -> float | None:
    """When the gateway logged that it listens (its imports and set-up done), after `offset`."""
    match = _LISTENING.search(_log_since(log, offset)) if log.exists() else None
    return _log_time(match.group(1)) if match else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (/proc/<pid>/stat, summed over its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    """One wrk run against the gateway: what the client saw and the CPU the gateway spent on it."""

    wrk: WrkResult
    cpu: float
    served: int

    @property
    def per_cpu_second(self) -> float:
        return self.served / self.cpu if self.cpu > 0 else float("nan")


def measure_round(pid: int, url: str, mode: str, run: Callable[[], WrkResult]) -> Round:
    before_cpu = cpu_seconds(pid)
    before = webhook_total(url) if mode == "webhook" else 0
    result = run()
    # wrk stops counting with requests still in flight: for webhooks the gateway's own count is exact.
    time.sleep(0.5)
    served = webhook_total(url) - before if mode == "webhook" else result.requests
    return Round(result, cpu_seconds(pid) - before_cpu, served)


def webhook_total(url: str) -> int:
    """Webhook deliveries the gateway has counted so far, whatever their result."""
    return int(metric(httpx.get(url + "/metrics", timeout=10).text, "qbo_webhook_requests_total"))


@dataclass
class GatewayRun:
    """What the gateway suite observed: throughput rounds, fixed-rate latency rounds, the final /metrics."""

    hz: list[Round] = field(default_factory=list)
    wh: list[Round] = field(default_factory=list)
    hz_lat: list[dict[str, Any]] = field(default_factory=list)
    wh_lat: list[dict[str, Any]] = field(default_factory=list)
    rate: float = 0.0
    metrics: str = ""
    rss: int | None = None
    indexed: int | None = None  # integrations its realm index held when it synced (every namespace's)


def gateway_suite(
    cp: ControlPlane, stack: LocalStack, load_seconds: float, latency_seconds: float, rounds: int, fleet: int = 0
) -> list[Measure]:
    """`gateway.*` with one integration; then, when `fleet` > 0, `gateway.<fleet>.*` (bench.gateway_fleet)."""
    run = _one_integration(cp, stack, load_seconds, latency_seconds, rounds)
    measures = _gateway_measures(run, rounds)
    if fleet > 0:
        from bench.gateway_fleet import fleet_suite

        measures += fleet_suite(cp, stack, fleet, run, load_seconds, rounds)
    return measures


def _one_integration(
    cp: ControlPlane, stack: LocalStack, load_seconds: float, latency_seconds: float, rounds: int
) -> GatewayRun:
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 0) < 2:
        raise BenchError("the gateway measure needs two CPUs (server on one, load generator on the other)")
    logs = stack.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _connect_integration(cp)
    count = int(max(load_seconds * rounds * 3000, 20_000))
    bodies = stack.workdir / "webhook-bodies.tsv"
    say(f"gateway: signing {count:,} webhook deliveries (distinct event ids)")
    write_bodies(bodies, stack.creds.webhook_verifier_token, count)
    script = stack.workdir / "webhook.lua"
    script.write_text(WRK_SCRIPT)
    log = logs / "gateway.log"
    offset = log.stat().st_size if log.exists() else 0
    pid = _start_pinned_gateway(stack)
    url = stack.gateway_url
    run = GatewayRun()
    try:
        _wait_index(url)
        synced = index_synced(log, offset)
        run.indexed = synced[1] if synced else None
        run_wrk(url + "/healthz", script, "healthz", 2, bodies, 0, logs)  # warm-up
        _throughput_rounds(run, pid, url, script, bodies, logs, load_seconds, rounds)
        wh_rps = max(x.wrk.rps for x in run.wh)
        run.rate = float(FIXED_RATE) if wh_rps >= 4 * FIXED_RATE else max(10.0, float(int(wh_rps / 4) // 10 * 10))
        _latency_rounds(run, url, bodies, logs, latency_seconds, rounds)
        run.metrics = httpx.get(url + "/metrics", timeout=10).text
        run.rss = proc_status_kb(pid, "VmHWM")
    finally:
        stack.stop_process("gateway")
    return run


def _start_pinned_gateway(stack: LocalStack) -> int:
    """`qbo-operator gateway` on SERVER_CPU (every thread of it): the load generator has the other CPU."""
    say(f"gateway: starting `qbo-operator gateway` pinned to CPU {SERVER_CPU}")
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SERVER_CPU})  # the child inherits it from its first instruction
    try:
        proc = stack.start_gateway()
    finally:
        os.sched_setaffinity(0, mine)
    pin_threads(proc.popen.pid, SERVER_CPU)
    return proc.popen.pid


def _throughput_rounds(
    run: GatewayRun, pid: int, url: str, script: Path, bodies: Path, logs: Path, load_seconds: float, rounds: int
) -> None:
    """wrk against /healthz and the webhook endpoint, alternating, `rounds` times."""
    for r in range(rounds):
        say(f"gateway: throughput round {r + 1}/{rounds} (wrk -c{CONNECTIONS}, {load_seconds:.0f}s per endpoint)")
        healthz = functools.partial(run_wrk, url + "/healthz", script, "healthz", load_seconds, bodies, 0, logs)
        run.hz.append(measure_round(pid, url, "healthz", healthz))
        webhook = functools.partial(
            run_wrk, url + "/webhooks/quickbooks", script, "webhook", load_seconds, bodies, webhook_total(url), logs
        )
        run.wh.append(measure_round(pid, url, "webhook", webhook))


def _latency_rounds(run: GatewayRun, url: str, bodies: Path, logs: Path, latency_seconds: float, rounds: int) -> None:
    """The open-loop client at `run.rate` against both endpoints, alternating, `rounds` times."""
    for r in range(rounds):
        say(
            f"gateway: latency round {r + 1}/{rounds} at a fixed {run.rate:.0f}/s ({latency_seconds:.0f}s per endpoint)"
        )
        run.hz_lat.append(run_loadgen(url + "/healthz", run.rate, latency_seconds, None, 0, logs))
        run.wh_lat.append(run_loadgen(url + "/webhooks/quickbooks", run.rate, latency_seconds, bodies,
                                      webhook_total(url) + 100, logs))  # fmt: skip


def _gateway_measures(run: GatewayRun, rounds: int) -> list[Measure]:
    hz, wh, hz_lat, wh_lat, metrics, rate = run.hz, run.wh, run.hz_lat, run.wh_lat, run.metrics, run.rate
    hz_rps = max(x.wrk.rps for x in hz)
    wh_rps = max(x.wrk.rps for x in wh)
    hz_cap = statistics.median(x.per_cpu_second for x in hz)
    wh_cap = statistics.median(x.per_cpu_second for x in wh)
    total = metric(metrics, "qbo_webhook_requests_total")
    accepted = metric(metrics, "qbo_webhook_requests_total", 'result="accepted"')
    bad_sig = metric(metrics, "qbo_webhook_requests_total", 'result="bad_signature"')
    duplicates = metric(metrics, "qbo_webhook_duplicate_events_total")
    patches = metric(metrics, "qbo_webhook_status_patches_total", 'result="ok"')
    completed = sum(x.wrk.requests for x in wh) + sum(int(x["sent"]) - int(x["errors"]) for x in wh_lat)
    errors = sum(x.wrk.errors for x in wh) + sum(int(x["errors"]) for x in wh_lat)
    rounds_text = ", ".join(f"{a.wrk.rps:,.0f}/{b.wrk.rps:,.0f}" for a, b in zip(wh, hz, strict=True))
    cpu_text = ", ".join(f"{a.per_cpu_second:,.0f}/{b.per_cpu_second:,.0f}" for a, b in zip(wh, hz, strict=True))
    p50 = min(x["p50_ms"] for x in wh_lat), min(x["p50_ms"] for x in hz_lat)
    p99 = min(x["p99_ms"] for x in wh_lat), min(x["p99_ms"] for x in hz_lat)
    lat_text = "; ".join(
        f"{a['p50_ms']:.1f}/{a['p99_ms']:.1f} vs {b['p50_ms']:.1f}/{b['p99_ms']:.1f}"
        for a, b in zip(wh_lat, hz_lat, strict=True)
    )
    return [
        Measure(
            "gateway.webhook_throughput", "gateway: signed webhooks/s on one core", wh_rps, hz_rps, unit="req/s",
            baseline_label="GET /healthz", target=Target("ratio", ">=", 0.4, "≥ 40% of the /healthz floor"),
            note=f"wrk -t1 -c{CONNECTIONS} pinned to CPU {LOAD_CPU}, gateway pinned to CPU {SERVER_CPU}; best of "
            f"{rounds} alternating rounds, since other processes on the machine only ever slow a round down "
            f"(webhook/healthz per round: {rounds_text}); gateway peak RSS {mib(run.rss) or 0:.0f} MiB",
        ),
        Measure(
            "gateway.webhook_per_cpu_second", "gateway: signed webhooks per CPU-second", wh_cap, hz_cap,
            unit="req/s", baseline_label="GET /healthz",
            target=Target("ratio", ">=", 0.4, "≥ 40% of the /healthz floor"),
            note="requests served divided by the CPU time the gateway process used meanwhile (/proc stat): the "
            "throughput one whole core would give, unaffected by other processes competing for it; median of "
            f"{rounds} rounds (webhook/healthz per round: {cpu_text})",
        ),
        Measure(
            "gateway.webhook_p50_ms", f"gateway: webhook p50 at {rate:.0f}/s", p50[0], p50[1], unit="ms",
            baseline_label="GET /healthz",
            note=f"open-loop aiohttp client on CPU {LOAD_CPU}, latency from each request's due time; best of "
            f"{rounds} alternating rounds for each endpoint (webhook vs healthz p50/p99 ms per round: {lat_text})",
        ),
        Measure(
            "gateway.webhook_p99_ms", f"gateway: webhook p99 at {rate:.0f}/s", p99[0], p99[1], unit="ms",
            baseline_label="GET /healthz",
        ),
        Measure(
            "gateway.webhooks_accepted", "gateway: deliveries accepted / received", int(accepted), int(total),
            baseline_label="received", target=Target("ratio", "==", 1, "every signed delivery verified, 200"),
            note=f"{int(bad_sig)} refused signatures; clients saw {completed:,} answers and {errors} errors or "
            f"non-200s; {int(duplicates):,} repeated event ids; {int(patches)} coalesced status writes",
        ),
    ]  # fmt: skip


def _wait_index(url: str, timeout: float = 60.0) -> None:
    """The realm index must know the integration before webhooks count as accepted (readyz says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=3).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError("the gateway never became ready")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        sys.exit(loadgen_main(sys.argv[2:]))
    print(
        "usage: python -m bench.gateway_bench loadgen --url URL --rate R --seconds S [--bodies FILE]", file=sys.stderr
    )
    sys.exit(2)
