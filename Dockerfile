# syntax=docker/dockerfile:1
# One image for all three processes: `qbo-operator run` (operator), `qbo-operator gateway` and
# `qbo-operator sync` (the CronJobs). Non-root (65532), works with a read-only root filesystem: the only
# writable path it needs is /tmp (an emptyDir in the chart).
#
# The build machines have no Docker, so this file is not built in CI here; `.venv/bin/hadolint Dockerfile`
# (make lint, tests/chart/test_dockerfile.py) checks it. Build: docker build -t qbo-operator:dev .

# ---- build: wheels for the locked runtime dependencies (hash-checked) and for the project -------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/runtime.lock requirements/runtime.lock
# Every dependency has a binary wheel for CPython 3.11 on manylinux: no compiler in the image.
RUN pip wheel --require-hashes --only-binary=:all: --no-deps --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="qbo-operator" \
      org.opencontainers.image.description="Delivers QuickBooks Online invoice payments to Green Check (operator, gateway, sync)" \
      org.opencontainers.image.source="https://github.com/greencheck/qbo-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# No .pyc writes at run time (read-only root filesystem; pip compiled them at install), unbuffered logs,
# tracebacks on fatal signals, HOME and temp files in the writable /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --no-log-init --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin nonroot
# The venv has no pip of its own: only the application and its locked dependencies.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-index --no-deps /wheels/*.whl \
 && qbo-operator --version
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8080 9090
ENTRYPOINT ["qbo-operator"]
CMD ["--help"]
