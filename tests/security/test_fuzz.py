"""A short coverage-guided fuzzing run (atheris) of every hostile-input target, bounded in runs and time.

Each target runs in its own subprocess (`python -m tests.security.fuzz_targets TARGET`), seeded from
well-formed inputs; a crash (an input that raises anything but the target's documented error) fails the
test with libFuzzer's report and the crashing input. The inputs executed are counted for the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ledger import Report
from tests.support.paths import ROOT

TARGETS = ("webhook", "tokens", "qbo", "greencheck")
SECONDS = 5  # per target: about 20 s of fuzzing in all
MAX_RUNS = 200_000


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_survives_a_short_run(target: str, tmp_path: Path, report: Report) -> None:
    crash_dir = tmp_path / "crashes"
    crash_dir.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.security.fuzz_targets",
            target,
            str(tmp_path / "corpus"),
            f"-max_total_time={SECONDS}",
            f"-runs={MAX_RUNS}",
            "-seed=20261125",
            "-max_len=4096",
            "-print_final_stats=1",
            f"-artifact_prefix={crash_dir}/",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )
    log = proc.stderr.decode(errors="replace")
    done = re.search(r"Done (\d+) runs in", log)
    stats = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    executed = int(done.group(1)) if done else int(stats.group(1)) if stats else 0
    report.row(
        "hostile input",
        f"atheris fuzzing: {target}",
        tried=executed,
        held=executed if proc.returncode == 0 else 0,
        fuzz_inputs=executed,
    )
    crashes = sorted(crash_dir.iterdir())
    assert proc.returncode == 0 and not crashes, (
        f"fuzz target {target} crashed after {executed} inputs (input saved as {[c.name for c in crashes]}):\n"
        + log[-4000:]
    )
    assert executed > 100, f"the fuzzer hardly ran:\n{log[-2000:]}"
