"""core.logging: which format a process logs in, and what one JSON line carries."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from qbo_operator import cli
from qbo_operator.core import logging as logs


@pytest.mark.parametrize(
    ("explicit", "environ", "default", "expected"),
    [
        (None, {}, "text", "text"),
        (None, {}, "json", "json"),
        (None, {"QBO_LOG_FORMAT": "json"}, "text", "json"),
        (None, {"QBO_LOG_FORMAT": " JSON "}, "text", "json"),
        (None, {"QBO_LOG_FORMAT": "text"}, "json", "text"),
        ("text", {"QBO_LOG_FORMAT": "json"}, "json", "text"),
        (None, {"QBO_LOG_FORMAT": ""}, "json", "json"),
    ],
)
def test_log_format(explicit: str | None, environ: dict[str, str], default: str, expected: str) -> None:
    assert logs.log_format(explicit, environ, default) == expected


def test_an_unknown_format_is_refused_with_the_choices() -> None:
    with pytest.raises(logs.LogConfigError, match=r"QBO_LOG_FORMAT='yaml' is not a log format: use one of json, text"):
        logs.log_format(None, {"QBO_LOG_FORMAT": "yaml"})


def _record(extra: dict[str, Any] | None = None, msg: str = "synced %d payments") -> logging.LogRecord:
    record = logging.LogRecord("qbo_operator.sync.run", logging.WARNING, __file__, 1, msg, (7,), None)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


ACME = {"kind": "QuickbooksIntegration", "namespace": "tenants", "name": "acme"}


@pytest.mark.parametrize(
    ("subject", "extra", "expected_object"),
    [
        (None, {}, None),
        (ACME, {}, ACME),
        # kopf's per-object loggers name their object themselves; that wins over the process's subject
        (
            ACME,
            {"k8s_ref": {"kind": "QuickbooksIntegration", "namespace": "b", "name": "beta", "uid": "u"}},
            {"kind": "QuickbooksIntegration", "namespace": "b", "name": "beta"},
        ),
        (None, {"k8s_skip": True, "settings": object()}, None),
    ],
)
def test_a_json_line(
    subject: dict[str, str] | None, extra: dict[str, Any], expected_object: dict[str, str] | None
) -> None:
    line = logs.formatter("sync", "json", subject).format(_record(extra))
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == "synced 7 payments"
    assert fields["level"] == "warning"
    assert fields["logger"] == "qbo_operator.sync.run"
    assert "timestamp" in fields
    assert fields.get("object") == expected_object
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(fields)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sync", "qbo-operator sync: synced 7 payments"),
        ("gateway", " WARNING qbo_operator.sync.run: synced 7 payments"),
        ("run", " WARNING qbo_operator.sync.run synced 7 payments"),
        ("sandbox", " qbo_operator.sync.run synced 7 payments"),
        ("other", " WARNING qbo_operator.sync.run: synced 7 payments"),
    ],
)
def test_text_lines_are_each_commands_own(command: str, expected: str) -> None:
    assert logs.formatter(command, "text").format(_record()).endswith(expected)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_sync_names_its_integration_on_every_line(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QBO_LOG_FORMAT", "json")
    cli.setup_logging(argparse.Namespace(command="sync", namespace="tenants", name="acme"))
    (handler,) = root_logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream := io.StringIO())
    logging.getLogger("qbo_operator.sync.run").info("refreshed the access token")
    fields = json.loads(stream.getvalue())
    assert fields["object"] == ACME
    assert fields["message"] == "refreshed the access token"
    assert root_logger.level == logging.INFO


def test_the_gateway_keeps_its_log_level(root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QBO_LOG_FORMAT", raising=False)
    cli.setup_logging(argparse.Namespace(command="gateway", log_level="debug"))
    assert root_logger.level == logging.DEBUG
    assert root_logger.handlers[0].formatter is not None
    assert root_logger.handlers[0].formatter._fmt == logs.TEXT_FORMATS["gateway"]


def test_a_bad_format_stops_the_command_with_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logger: logging.Logger
) -> None:
    monkeypatch.setenv("QBO_LOG_FORMAT", "yaml")
    assert cli.main(["sync", "--namespace", "tenants", "--name", "acme"]) == 2
    error = capsys.readouterr().err
    assert "qbo-operator sync: configuration error: QBO_LOG_FORMAT='yaml' is not a log format" in error


@pytest.mark.parametrize(
    ("flag", "env", "json_lines"),
    [(None, None, True), (None, "text", False), ("json", "text", True), ("text", None, False)],
)
def test_the_operator_logs_json_unless_told_otherwise(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str | None, json_lines: bool
) -> None:
    """`qbo-operator run`: --log-format, else QBO_LOG_FORMAT (the chart's logFormat), else JSON."""
    from qbo_operator.reconciler import controller

    if env is None:
        monkeypatch.delenv("QBO_LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("QBO_LOG_FORMAT", env)
    controller.configure_logging(flag, verbose=False)
    assert isinstance(root_logger.handlers[0].formatter, logs.JsonLines) is json_lines


async def test_each_request_task_names_its_own_integration() -> None:
    """The gateway serves many integrations at once: a line names the integration of the task that wrote it,
    never another request's, and a line outside any request names none."""
    formatter = logs.JsonLines()

    async def request(namespace: str, name: str) -> dict[str, Any]:
        logs.about_integration(namespace, name)
        await asyncio.sleep(0)  # let the other request run in between
        line: dict[str, Any] = json.loads(formatter.format(_record()))
        return line

    first, second = await asyncio.gather(
        asyncio.create_task(request("tenants", "acme")), asyncio.create_task(request("other", "bridgetown"))
    )
    assert first["object"] == {"kind": "QuickbooksIntegration", "namespace": "tenants", "name": "acme"}
    assert second["object"] == {"kind": "QuickbooksIntegration", "namespace": "other", "name": "bridgetown"}
    assert "object" not in json.loads(formatter.format(_record()))
