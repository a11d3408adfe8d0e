"""One logging set-up for every process: one JSON object per line for log collectors (the chart's
default, QBO_LOG_FORMAT=json), or each command's plain text for a person at a terminal.

A JSON line carries time, level, logger and message, and the integration it is about under `object`
({kind, namespace, name}) wherever there is one: kopf's per-object loggers say so themselves (`k8s_ref`),
and a process that serves one integration (the sync) names it once with `about`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from qbo_operator.core import names

FORMAT_ENV = "QBO_LOG_FORMAT"
LogFormat = Literal["json", "text"]
FORMATS: tuple[LogFormat, ...] = ("json", "text")

# Each command's text lines, as they always were (people and tests read them: `qbo-operator sync: error: ...`).
TEXT_FORMATS: dict[str, str] = {
    "run": "%(asctime)s %(levelname)-7s %(name)s %(message)s",
    "gateway": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    "sync": "qbo-operator sync: %(message)s",
    "sandbox": "%(asctime)s %(name)s %(message)s",
}
DEFAULT_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The HTTP and Kubernetes client libraries log what must never reach a log at DEBUG and INFO: requests_oauthlib
# the Basic-auth header, OAuth codes and token answers; kubernetes_asyncio every response body, token Secrets
# included (issue 17, finding 5). Below WARNING they are silent in every process, at every level it runs at.
QUIET_LOGGERS = (
    "requests_oauthlib",
    "oauthlib",
    "urllib3",
    "requests",
    "httpx",
    "httpcore",
    "kubernetes",
    "kubernetes_asyncio",
    "aiohttp.client",
    "asyncssh",  # at DEBUG it logs packets; INFO names users and keys
)


class LogConfigError(ValueError):
    pass


def log_format(
    explicit: str | None = None, environ: Mapping[str, str] | None = None, default: str = "text"
) -> LogFormat:
    """The format asked for: an explicit choice (a command-line flag), else QBO_LOG_FORMAT, else `default`."""
    env = os.environ if environ is None else environ
    chosen = (explicit or env.get(FORMAT_ENV) or default).strip().lower()
    for known in FORMATS:
        if chosen == known:
            return known
    raise LogConfigError(f"{FORMAT_ENV}={chosen!r} is not a log format: use one of {', '.join(FORMATS)}")


class JsonLines(JsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, `object` when the record is about one."""

    def __init__(self, about: Mapping[str, str] | None = None) -> None:
        super().__init__(reserved_attrs=[*RESERVED_ATTRS, "k8s_skip", "k8s_ref", "settings"], timestamp=True)
        self.about = dict(about) if about else None

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["level"] = record.levelname.lower()
        log_record["logger"] = record.name
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping):
            log_record["object"] = {k: v for k, v in ref.items() if k in ("kind", "namespace", "name") and v}
        elif (subject := _SUBJECT.get()) is not None:
            log_record["object"] = dict(subject)
        elif self.about is not None:
            log_record["object"] = self.about


class QuietClients(logging.Filter):
    """Drops the client libraries' records below WARNING at the handler, so a library (or a later
    `setLevel`) that turns its own logger up still reaches no log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not quiet_logger(record.name)


def quiet_logger(name: str) -> bool:
    """Whether `name` is one of QUIET_LOGGERS or below one."""
    return any(name == quiet or name.startswith(quiet + ".") for quiet in QUIET_LOGGERS)


def about(namespace: str, name: str) -> dict[str, str]:
    """The `object` of a process that serves one integration."""
    return {"kind": names.KIND, "namespace": namespace, "name": name}


# The integration the current task is about: a gateway request for one integration runs in its own task, so
# its lines name that integration without each call site passing it.
_SUBJECT: ContextVar[Mapping[str, str] | None] = ContextVar("qbo_log_subject", default=None)


def about_integration(namespace: str, name: str) -> None:
    """From here on, the current task's JSON lines carry this integration as their `object`."""
    _SUBJECT.set(about(namespace, name))


def formatter(command: str, fmt: LogFormat, subject: Mapping[str, str] | None = None) -> logging.Formatter:
    if fmt == "json":
        return JsonLines(subject)
    return logging.Formatter(TEXT_FORMATS.get(command, DEFAULT_TEXT_FORMAT))


def configure(
    command: str,
    fmt: LogFormat,
    level: int | str = logging.INFO,
    subject: Mapping[str, str] | None = None,
) -> None:
    """Root logger → stderr in `fmt`, replacing any handler set before (a process configures once); the
    client libraries quiet below WARNING whatever `level` is."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(command, fmt, subject))
    handler.addFilter(QuietClients())
    for quiet in QUIET_LOGGERS:
        logging.getLogger(quiet).setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
