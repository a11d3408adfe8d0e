"""A memory diagnostic for `qbo-operator run`, off unless `QBO_TRACEMALLOC` names a file prefix.

With it set, the process traces its allocations (`tracemalloc`, `QBO_TRACEMALLOC_FRAMES` frames, default 1) and
each SIGUSR1 writes `<prefix>.<n>.txt`: the traced current and peak sizes and the top allocation sites by line and
by traceback. Tracing roughly doubles CPU and adds memory of its own, so it is for measuring (docs/operator.md,
"Memory at scale"), never for production; unset, this module costs one environment lookup."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("qbo_operator.reconciler.memtrace")

ENV = "QBO_TRACEMALLOC"
FRAMES_ENV = "QBO_TRACEMALLOC_FRAMES"
TOP = 40


def install(loop: asyncio.AbstractEventLoop, environ: Mapping[str, str] | None = None) -> Path | None:
    """Start tracing and dump on SIGUSR1 when `QBO_TRACEMALLOC` is set; the prefix, or None when off."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    prefix = env.get(ENV)
    if not prefix:
        return None
    frames = int(env.get(FRAMES_ENV) or "1")
    tracemalloc.start(frames)
    path = Path(prefix)
    count = [0]

    def dump() -> None:
        count[0] += 1
        target = path.with_name(f"{path.name}.{count[0]}.txt")
        target.write_text(report(tracemalloc.take_snapshot(), frames))
        log.info("tracemalloc snapshot written to %s", target)

    loop.add_signal_handler(signal.SIGUSR1, dump)
    log.info("tracemalloc on (%d frames): SIGUSR1 writes %s.<n>.txt", frames, path)
    return path


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def malloc_line() -> str:
    """glibc's own view (mallinfo2): what the C heap holds in use and free, which tracemalloc does not see."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError):
        return "malloc: mallinfo2 unavailable"
    fn.restype = _MallInfo2
    info = fn()
    return (
        f"malloc: heap {info.arena / 2**20:.1f} MiB (in use {info.uordblks / 2**20:.1f}, "
        f"free {info.fordblks / 2**20:.1f}),"
        f" mmapped {info.hblkhd / 2**20:.1f} MiB in {info.hblks} blocks"
    )


def report(snapshot: tracemalloc.Snapshot, frames: int) -> str:
    """Current and peak traced sizes, then the top sites by line (and by traceback when there are frames)."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced current {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB", malloc_line(), "", "# by line"]
    lines += [str(stat) for stat in snapshot.statistics("lineno")[:TOP]]
    if frames > 1:
        lines += ["", "# by traceback"]
        for stat in snapshot.statistics("traceback")[: TOP // 2]:
            lines += [f"{stat.size / 2**10:.0f} KiB in {stat.count} blocks", *stat.traceback.format(), ""]
    return "\n".join(lines) + "\n"
