"""`certd serve`: run the OCPP endpoint alone (until the daemon runs it with the scheduler).

SIGHUP reloads certificate material; SIGTERM / Ctrl-C close every connection
cleanly and mark the chargers offline in the store.
"""

from __future__ import annotations

import argparse

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("serve", help="run the OCPP endpoint (chargers connect over WSS)")
    # Set by `certd run` for its worker processes ([ocpp] workers > 1, certd.runtime.workers).
    parser.add_argument("--worker", type=int, metavar="K", help=argparse.SUPPRESS)
    parser.add_argument("--worker-ports", help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=_serve, default_log_level="info")


def _serve(args: argparse.Namespace) -> int:
    import logging

    from certd.runtime import eventloop
    from certd.errors import CertdError

    config = context.load(args)
    if not config.ocpp.enabled or not config.ocpp.listeners:
        raise CertdError("no OCPP listener configured: add [[ocpp.listeners]] to the config")
    if args.verbose < 2:
        # The ocpp library logs every frame at INFO: too much for thousands of chargers.
        logging.getLogger("certd.ocpp.protocol").setLevel(logging.WARNING)
    if args.worker is not None:
        return _serve_as_worker(args, config)
    engine = context.open_store(config)
    return eventloop.run(_run(config, engine))  # uvloop when installed: cheaper TLS per charger


async def _run(config, engine) -> int:  # type: ignore[no-untyped-def]
    import asyncio
    import signal

    from certd.ocpp.service import OcppService, tune_process_for_many_connections

    service = OcppService(config, engine)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        task = loop.create_task(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    rollover = http = None
    try:
        for result in await service.start():
            ports = ",".join(map(str, service.listener(result.listener).ports))
            state = (f"{result.status} on port {ports}" if ports
                     else f"not serving yet: {result.error}")
            print(f"listener {result.listener}: {state}", flush=True)
        # Chargers learn new roots before a listener serves a chain that needs them; a
        # certificate issued by another process (`certd issue`) is found in the store. Started
        # also when [rollover] is off: it then releases gates a previous run left in the store.
        from certd.rollover.engine import RolloverEngine

        rollover = RolloverEngine(config, engine, service)
        await rollover.start()
        if config.http.enabled:  # metrics, probes and the status page (certd.http)
            from certd.http.live import LiveSources
            from certd.http.service import HttpService

            http = HttpService(config, engine, live=LiveSources(ocpp=lambda: service))
            await http.start()
        tune_process_for_many_connections()
        await stop.wait()
    finally:
        if http is not None:
            await http.close()
        if rollover is not None:
            await rollover.close()
        await service.close()
    return 0


def _serve_as_worker(args: argparse.Namespace, config) -> int:  # type: ignore[no-untyped-def]
    """One of `certd run`'s OCPP workers: the supervisor upgraded the store and runs the scheduler."""
    import logging

    import os

    from certd.config import resolve_config_path
    from certd.config.node import NODE_NAME_ENV, node_name
    from certd.runtime import eventloop
    from certd.runtime.worker import Worker, tag_log_lines
    from certd.runtime.workers import parse_ports, worker_node_name

    if not args.verbose:  # as `certd run` does: the config's level unless -v/-vv
        logging.getLogger().setLevel(config.log_level.upper())
    if NODE_NAME_ENV not in os.environ:  # started by hand, not by `certd run`
        os.environ[NODE_NAME_ENV] = worker_node_name(config, args.worker)
    tag_log_lines(node_name(config))
    worker = Worker(resolve_config_path(args.config), config, args.worker,
                    parse_ports(args.worker_ports), args.supervisor_fd)
    return eventloop.run(worker.run())
