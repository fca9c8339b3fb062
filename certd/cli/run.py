"""`certd run`: the renewal service in the foreground (systemd-friendly: logs to stderr, no fork)."""

from __future__ import annotations

import argparse
import logging

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run", help="keep certificates renewed and deployed (foreground service, for systemd)",
        description="Check every certificate, renew what is due (ARI first, then the backstop), "
                    "redeploy and retry hooks, until SIGTERM/SIGINT. SIGHUP reloads the config. "
                    "With [ocpp] workers > 1 this process supervises that many OCPP worker "
                    "processes sharing the listening ports.",
    )
    parser.set_defaults(func=_run, default_log_level="info")


def _run(args: argparse.Namespace) -> int:
    import os
    import sys

    from certd.runtime import eventloop
    from certd.config import resolve_config_path
    from certd.runtime.daemon import Daemon

    config = context.load(args)
    if not args.verbose:  # -v/-vv win over the config's level
        logging.getLogger().setLevel(config.log_level.upper())
    if args.verbose < 2:
        # The ocpp library logs every frame at INFO: too much for thousands of chargers.
        logging.getLogger("certd.ocpp.protocol").setLevel(logging.WARNING)
    config_path = resolve_config_path(args.config)
    if config.ocpp.enabled and config.ocpp.listeners and config.ocpp.workers > 1:
        import functools

        from certd.runtime.workers import WorkerPool

        pool = functools.partial(WorkerPool, config_path=config_path, verbosity=args.verbose)
        daemon = Daemon(config_path, config, services_factory=pool)
    else:
        daemon = Daemon(config_path, config)
    code = eventloop.run(daemon.run())  # uvloop when installed (cheaper TLS for the OCPP endpoint)
    if daemon.stuck_threads:
        # A worker thread is stuck in a blocking call; the interpreter would wait for it
        # forever at exit. Everything to clean up later is recorded in the store.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code
