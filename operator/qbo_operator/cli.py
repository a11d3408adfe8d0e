"""The one console script, `qbo-operator`: each sub-command lives in its own module, imported
only when chosen, so `qbo-operator sync` starts without loading kopf or the gateway."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from qbo_operator import __version__
from qbo_operator.core import logging as logs
from qbo_operator.core.config import ConfigError

# command -> (module, help). Each module has `add_arguments(parser)` and `main(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("qbo_operator.reconciler.controller", "run the operator (kopf) with /healthz and /metrics"),
    "gateway": (
        "qbo_operator.gateway.app",
        "serve Connect pages, the OAuth callback and the webhook receiver",
    ),
    "sync": ("qbo_operator.sync.run", "run one sync for one integration (the CronJob's command)"),
    "demo": ("qbo_operator.harness.demo", "the whole flow on this machine, with no accounts"),
    "sandbox": ("qbo_operator.harness.sandbox.cli", "run a QBO or Green Check sandbox server for local development"),
}
# The commands whose logs `setup_logging` sets up; the demo prints its own lines, and the operator sets up
# its own from --log-format or QBO_LOG_FORMAT (JSON by default).
LOGGED_COMMANDS = ("gateway", "sync", "sandbox")
# The harness's own dependencies are the `harness` extra (pyproject.toml), which the image does not install.
HARNESS_EXTRA = "harness"


def load(command: str) -> ModuleType:
    """The command's module; a harness command whose extra is missing exits with how to install it."""
    module = COMMANDS[command][0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not module.startswith("qbo_operator.harness.") or (exc.name or "qbo_operator").startswith("qbo_operator"):
            raise
        raise SystemExit(
            f"qbo-operator {command}: needs the Python package {exc.name!r}, part of the {HARNESS_EXTRA!r} extra:"
            f" pip install 'qbo-operator[{HARNESS_EXTRA}]'"
        ) from exc


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="qbo-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qbo-operator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for command, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        if command == chosen:
            load(command).add_arguments(p)
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = load(args.command)
    try:
        if args.command in LOGGED_COMMANDS:
            setup_logging(args)
        code: int = module.main(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"qbo-operator {args.command}: configuration error: {line}", file=sys.stderr)
        return 2
    except logs.LogConfigError as exc:  # QBO_LOG_FORMAT, for every command
        print(f"qbo-operator {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def setup_logging(args: argparse.Namespace) -> None:
    """QBO_LOG_FORMAT (json or text, default text) for every command, and the level from --log-level or
    QBO_LOG_LEVEL (default INFO); the sync's lines name its integration."""
    subject = logs.about(args.namespace, args.name) if args.command == "sync" else None
    level = getattr(args, "log_level", None) or os.environ.get("QBO_LOG_LEVEL", "INFO")
    logs.configure(args.command, logs.log_format(), level, subject)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
