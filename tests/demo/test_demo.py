"""`qbo-operator demo` end to end: the summary it prints (two nights, a bookkeeper's changes between them), and
nothing left running after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbo_operator.harness.controlplane import pid_alive


def _pids(workdir: Path) -> dict[str, int]:
    files = [*(workdir / "pids").glob("*"), *(workdir / "cluster").glob("*.pid")]
    return {f.name: int(f.read_text()) for f in files if f.read_text().strip().isdigit()}


def test_demo_runs_the_mission_and_stops_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbo_operator", "demo", "--dir", str(workdir), "--payments", "12", "--history", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        lines.append(line)
        if "Running until Ctrl-C" in line or time.monotonic() > deadline:
            break
    output = "".join(lines)
    assert "Running until Ctrl-C" in output, output[-4000:]
    pids = _pids(workdir)
    assert {"operator", "gateway", "qbo-sandbox", "greencheck-sandbox", "etcd.pid", "kube-apiserver.pid"} <= set(pids)
    assert all(pid_alive(pid) for pid in pids.values())

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)  # a hang guard: stopping takes seconds, far more on a loaded machine
    output += rest
    assert proc.returncode == 0, output[-3000:]
    assert "Stopped: no process left running." in output
    assert not [name for name, pid in pids.items() if pid_alive(pid)]

    summary = re.search(
        r"DEMO-SUMMARY phase=(\w+) expected=(\d+) delivered=(\d+) missing=0 unexpected=0 duplicated=0 misstated=0 "
        r"updated=(\d+) retracted=(\d+)",
        output,
    )
    assert summary, output[-3000:]
    assert summary.group(1) == "Connected" and int(summary.group(2)) == int(summary.group(3)) > 0
    # the next day's corrections reached Green Check: one record updated, the voided payment's retracted
    assert int(summary.group(4)) >= 1 and int(summary.group(5)) >= 1
    assert re.search(r"payment:\d+:invoice:\d+: created → retracted", output), output[-3000:]
    assert re.search(r"payment:\d+:invoice:\d+: created → updated", output), output[-3000:]
    # the second company's night over SFTP: files on the real sshd replay to exactly its books
    sftp = re.search(r"DEMO-SFTP files=(\d+) rows=(\d+) expected=(\d+) delivered=(\d+) missing=0 unexpected=0 "
                     r"duplicated=0 misstated=0", output)  # fmt: skip
    assert sftp and int(sftp.group(1)) >= 1 and int(sftp.group(3)) == int(sftp.group(4)) > 0, output[-3000:]
    # every step printed its check mark; the Connect flow went through the sandbox's consent page
    assert output.count("✓") == 13
    assert "Approve at Intuit" in output and "OAuth callback             → 200" in output
    assert "payments from before the connection" in output and "sales receipts" in output


@pytest.mark.parametrize("argv", [["demo", "--payments", "lots"]])
def test_demo_refuses_bad_arguments(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "qbo_operator", *argv], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid int value" in result.stderr
