"""The built container image and a way to run its entrypoint as a kubelet would (the fixtures are in
tests/image/conftest.py).

The build is `tools/image.sh build`, the script behind `make image`: cold it takes minutes, warm seconds.
Runs go through `tools/image.sh run` (the image's user, a read-only root, a tmpfs on /tmp: docs/image.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.support.paths import ROOT

SCRIPT = ROOT / "tools" / "image.sh"
BUILD_TIMEOUT = 1800
T = TypeVar("T")


@dataclass(frozen=True)
class Image:
    """The built image: its id and size as `tools/image.sh build` printed them."""

    id: str
    size: str
    build_output: str

    def command(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        files: Mapping[str, Path] | None = None,
        entrypoint: str | None = None,
    ) -> list[str]:
        """`tools/image.sh run` for `args`: env as -e, host files mounted read-only at container paths."""
        cmd = ["bash", str(SCRIPT), "run"]
        for name, value in (env or {}).items():
            cmd += ["-e", f"{name}={value}"]
        for path, host in (files or {}).items():
            cmd += ["-v", f"{host}:{path}"]
        if entrypoint:
            cmd += ["--entrypoint", entrypoint]
        return [*cmd, "--", *args]

    def run(self, *args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run to completion and capture its output."""
        return subprocess.run(
            self.command(*args, **kw),  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str, log: Path, **kw: object) -> Container:
        """Start in the background (own process group), output in `log`."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.command(*args, **kw),  # type: ignore[arg-type]
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        return Container(proc, log)


@dataclass
class Container:
    """A running entrypoint: PID 1 of its own PID namespace, so SIGTERM reaches only its handler."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the container exited with {self.proc.returncode}:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as the kubelet sends; SIGKILL after `timeout`."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def wait_until(what: str, probe: Callable[[], T | None], container: Container, timeout: float = 60) -> T:
    """Poll `probe` until it returns something truthy; fail early if the container exits."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        container.assert_running()
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n{container.output()[-3000:]}"
    )


def why_buildah_cannot_run() -> str | None:
    """A reason to skip, only when this machine cannot run buildah at all."""
    if shutil.which("buildah") is None or shutil.which("mmdebstrap") is None:
        return "buildah and mmdebstrap are not installed: `make system-packages` installs them"
    if os.geteuid() != 0:
        return "building with buildah (vfs storage, chroot isolation) and entering the image need root here"
    return None
