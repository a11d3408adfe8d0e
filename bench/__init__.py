"""`make bench`: what users pay for, measured against a baseline or a bound taken in the same run.

Every measure is a `Measure`: a value, the baseline or bound it is compared with, their ratio, an optional
target and whether it was met. The suites (sync, throttle, operator, schedule, gateway) live in their own
modules; this module holds what they share: the result shape, targets, progress lines, and child
processes whose peak memory is read from the kernel (`wait4` rusage or /proc VmHWM), never estimated."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from qbo_operator.harness.controlplane import terminate_group

if TYPE_CHECKING:
    from qbo_operator.core.kube import Kube

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.json"
RESULT_KEYS = ("value", "baseline", "ratio", "target", "met")

Number = int | float


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """`on` (the value or the ratio) compared with `bound`; `describe()` is what results.json shows."""

    on: Literal["value", "ratio"]
    op: Literal["<=", ">=", "=="]
    bound: Number
    words: str = ""

    def describe(self) -> str:
        text = f"{self.on} {self.op} {self.bound:g}"
        return f"{text} ({self.words})" if self.words else text

    def met(self, value: Number | None, ratio: Number | None) -> bool | None:
        subject = value if self.on == "value" else ratio
        if subject is None or (isinstance(subject, float) and math.isnan(subject)):
            return None
        if self.op == "<=":
            return subject <= self.bound
        if self.op == ">=":
            return subject >= self.bound
        return subject == self.bound


def ratio(value: Number | None, baseline: Number | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return float(value) / float(baseline)


@dataclass
class Measure:
    """One row of the table and one entry of results.json."""

    name: str
    label: str
    value: Number | None
    baseline: Number | None = None
    unit: str = ""
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""
    skipped: str = ""  # e.g. "skipped (quick)": printed instead of the figures
    ratio: float | None = field(default=None)
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.ratio = ratio(self.value, self.baseline)
        if self.met is None and self.target is not None and not self.skipped:
            self.met = self.target.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "value": _round(self.value),
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio, 4),
            "target": self.target.describe() if self.target else None,
            "met": self.met,
            "unit": self.unit,
            "label": self.label,
            "baseline_is": self.baseline_label,
            "note": self.skipped or self.note,
        }


def skipped(name: str, label: str, why: str, target: Target | None = None, unit: str = "") -> Measure:
    return Measure(name, label, None, unit=unit, target=target, skipped=why)


def _round(x: Number | None, places: int = 3) -> Number | None:
    if x is None or isinstance(x, int):
        return x
    if math.isnan(x) or math.isinf(x):
        return None
    return round(x, places)


def fmt(x: Number | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        text = f"{int(x):,}"
    elif abs(x) >= 100:
        text = f"{x:,.0f}"
    elif abs(x) >= 10:
        text = f"{x:.1f}"
    elif abs(x) >= 0.1:
        text = f"{x:.2f}"
    else:
        text = f"{x:.4f}"
    return f"{text} {unit}".rstrip()


def table(measures: Sequence[Measure]) -> str:
    """The printed table: one row per measure, with the ratio and whether its target was met."""
    header = ("measure", "value", "baseline", "ratio", "target", "met")
    rows: list[tuple[str, ...]] = []
    for m in measures:
        if m.skipped:
            rows.append((m.label, m.skipped, "", "", m.target.describe() if m.target else "", ""))
            continue
        met = "-" if m.met is None else ("yes" if m.met else "NO")
        base = fmt(m.baseline, m.unit)
        if m.baseline_label and m.baseline is not None:
            base = f"{base} ({m.baseline_label})"
        rows.append(
            (
                m.label,
                fmt(m.value, m.unit),
                base,
                "-" if m.ratio is None else f"{m.ratio:.3g}",
                m.target.describe() if m.target else "",
                met,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    notes = [f"  {m.label}: {m.note}" for m in measures if m.note and not m.skipped]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


# --- progress -----------------------------------------------------------------------------------

_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr (long runs show what they are doing)."""
    elapsed = time.monotonic() - _T0
    print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


class Ticker:
    """Prints `message()` every `every` seconds from a thread, for steps that wait on another process."""

    def __init__(self, message: Callable[[], str], every: float = 15.0) -> None:
        self.message = message
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                say(self.message())

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --- many API writes at once ---------------------------------------------------------------------


async def for_all(
    kubeconfig: Path, items: Sequence[Any], fn: Callable[[Kube, Any], Any], what: str, concurrency: int = 32
) -> None:
    """`await fn(kube, item)` for every item, `concurrency` at a time through one API client, with a progress
    line (`what: done/total`) every 2,000 items: how the suites create a fleet of integrations quickly."""
    from kubernetes_asyncio import client, config

    from qbo_operator.core.kube import Kube

    await config.load_kube_config(config_file=str(kubeconfig))
    async with client.ApiClient() as api:
        kube = Kube(api)
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(item: Any) -> None:
            nonlocal done
            async with gate:
                await fn(kube, item)
            done += 1
            if done % 2000 == 0 and done < len(items):
                say(f"{what}: {done:,}/{len(items):,}")

        await asyncio.gather(*(one(item) for item in items))


# --- child processes ----------------------------------------------------------------------------


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def qbo_operator_argv(*args: str) -> list[str]:
    return python_module_argv("qbo_operator", *args)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment (no inherited secrets or proxies), plus `extra`."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Child:
    """A child process in its own process group, its output in `log`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    maxrss_kb: int | None = None
    returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.returncode is None and self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_rusage(self) -> int:
        """Wait for exit with wait4(2): the exit code, and the peak RSS of this child alone (ru_maxrss)."""
        _, status, usage = os.wait4(self.popen.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode
        self.maxrss_kb = int(usage.ru_maxrss)
        return self.returncode

    def stop(self, grace: float = 15.0) -> None:
        if self.returncode is not None or self.popen.poll() is not None:
            return
        terminate_group(self.popen.pid, self.popen, grace)
        self.returncode = self.popen.returncode


def spawn(
    name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path, cpus: Iterable[int] | None = None
) -> Child:
    """Start `argv` in its own process group; `cpus` pins it (and every thread it starts) to those cores."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    pinned = set(cpus) if cpus is not None else None

    def pin() -> None:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)

    with log.open("ab") as fh:
        popen = subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            process_group=0,
            preexec_fn=pin if pinned is not None else None,
            cwd=str(ROOT),
        )
    child = Child(name, popen, log)
    _CHILDREN.append(child)
    return child


_CHILDREN: list[Child] = []


def stop_children() -> None:
    """Stop every child `spawn` started that is still running (an interrupted run leaves none behind)."""
    for child in reversed(_CHILDREN):
        if child.returncode is None and child.popen.poll() is None:
            child.stop(grace=5.0)


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak resident set; VmRSS: current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def wait_http(child: Child | None, url: str, timeout: float = 60.0, ok: Callable[[int], bool] | None = None) -> None:
    """Poll `url` until it answers 200 (or `ok(status)`); fail early with the log tail if the child died."""
    deadline = time.monotonic() + timeout
    accept = ok or (lambda status: status == 200)
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise BenchError(f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if accept(httpx.get(url, timeout=3).status_code):
                return
        time.sleep(0.2)
    tail = child.tail() if child is not None else ""
    raise BenchError(f"{url} did not answer within {timeout:.0f}s\n{tail}")


class BenchError(RuntimeError):
    """A measurement could not be taken (a process died, a precondition failed): the run exits non-zero."""


def mib(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return None
    data = sorted(values)
    k = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (k - lo)
