"""certd's command line.

Each command group is one module with `register(subparsers)`; modules import
heavy libraries (acme, cloudflare, sqlmodel) inside their command functions so
that `certd --help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from certd.errors import CertdError

# Order = order in --help.
COMMAND_MODULES = [
    "certd.cli.issue",
    "certd.cli.status",
    "certd.cli.run",
    "certd.cli.renew",
    "certd.cli.dns_cmd",
    "certd.cli.config_cmd",
    "certd.cli.db",
    "certd.cli.bundle",
    "certd.cli.fleet",
    "certd.cli.doctor",
    "certd.cli.chargers",
    "certd.cli.charger_ca",
    "certd.cli.nodes",
    "certd.cli.serve",
    "certd.cli.demo",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certd",
        description="Keeps TLS certificates alive: ACME DNS-01 on Cloudflare, deploy, serve, distribute.",
    )
    parser.add_argument(
        "--config", metavar="PATH",
        help="config file (default: $CERTD_CONFIG, else /etc/certd/certd.toml)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def setup_logging(verbosity: int, default: str = "warning") -> None:
    level = {0: default.upper(), 1: "INFO"}.get(verbosity, "DEBUG")
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Third-party chatter (request URLs, retries) is only useful when debugging.
    for noisy in ("urllib3", "httpx", "acme.client", "alembic", "apscheduler", "websockets"):
        if verbosity < 2:
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, getattr(args, "default_log_level", "warning"))
    try:
        return int(args.func(args) or EXIT_OK)
    except CertdError as exc:
        print(f"certd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
