"""The built container image, once per session (`tools/image.sh build`, the script behind `make image`), and
containers of it that each test stops afterwards."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.image import BUILD_TIMEOUT, SCRIPT, Container, Image, why_buildah_cannot_run


@pytest.fixture(scope="session")
def image() -> Image:
    """Build (or reuse) the image with the script behind `make image`."""
    reason = why_buildah_cannot_run()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(SCRIPT), "build"], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"tools/image.sh build failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    print(f"image {fields['id'][:12]} ({fields['size']}) ready in {time.monotonic() - started:.0f}s")
    return Image(fields["id"], fields["size"], result.stdout + result.stderr)


@pytest.fixture
def run_image(image: Image) -> Iterator[Callable[..., Container]]:
    """Start containers for this test; each is stopped afterwards."""
    started: list[Container] = []

    def start(*args: str, log: Path, **kw: object) -> Container:
        container = image.start(*args, log=log, **kw)
        started.append(container)
        return container

    yield start
    for container in started:
        container.stop()
