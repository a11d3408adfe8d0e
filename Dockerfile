# syntax=docker/dockerfile:1
# One image for all three processes: `qbo-operator run` (operator), `qbo-operator gateway` and
# `qbo-operator sync` (the CronJobs). Non-root (65532), works with a read-only root filesystem: the only
# writable path it needs is /tmp (an emptyDir in the chart).
#
# Build with a registry: docker build -t qbo-operator:dev .
# Build here (no Docker engine, no registry): `make image` (tools/image.sh) passes BASE_IMAGE and
# BUILD_IMAGE, two Debian bookworm bases made locally by mmdebstrap (python3; python3 + python3-venv), and
# builds this file with buildah. docs/image.md says how the image is run and tested from there.

# The runtime base, and the base of the build stage (which needs `python3 -m venv` with its bundled pip).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=${BASE_IMAGE}

# ---- build: /opt/venv with the locked runtime wheels (hash-checked) and the project ----------------------
FROM ${BUILD_IMAGE} AS build
# Where the build machine reaches PyPI through a TLS-inspecting proxy, the CA bundle pip must trust (a path
# mounted for the build only; tools/image.sh passes the host's). Unset, pip trusts its own bundle.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# pip lives in its own venv, so /opt/venv (the one the runtime stage copies) has no pip of its own.
RUN python3 -m venv /opt/pip && python3 -m venv --without-pip /opt/venv
COPY requirements/runtime.lock requirements/runtime.lock
# Every dependency has a binary wheel for CPython 3.11 on manylinux: no compiler in either stage.
RUN /opt/pip/bin/pip wheel --require-hashes --only-binary=:all: --no-deps --wheel-dir /wheels \
      -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Then only the wheels just built, never an index; pip compiles the .pyc files here (the root is read-only later).
RUN /opt/pip/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps /wheels/*.whl \
 && /opt/venv/bin/qbo-operator --version

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
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
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp
# python:*-slim ships pip, setuptools and wheel in the system site-packages; Debian's python3 has none.
# Neither stays: the image runs the application and nothing installs into it.
RUN if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes --quiet pip setuptools wheel; fi \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --no-log-init --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8080 9090
# Last, so a change to the code rebuilds only this layer of the runtime stage. Owned by root: read-only to 65532.
COPY --from=build /opt/venv /opt/venv
ENTRYPOINT ["qbo-operator"]
CMD ["--help"]
