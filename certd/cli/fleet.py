"""`certd fleet push [--retry]` and `certd fleet deliveries`: the registry outbox.

Other fleet actions (e.g. `certd fleet status` for OCPP rollover) plug in by
adding their module to FLEET_ACTION_MODULES; each has `register_fleet(sub)`.
"""

from __future__ import annotations

import argparse
import importlib
import json

from certd.cli import context

# Modules adding more `certd fleet ...` actions: each defines register_fleet(subparsers).
FLEET_ACTION_MODULES: list[str] = ["certd.cli.fleet_status", "certd.cli.fleet_devices"]

EXIT_NOT_DELIVERED = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("fleet", help="fleet registry deliveries (and other fleet actions)")
    sub = parser.add_subparsers(dest="fleet_command", metavar="ACTION")
    sub.required = True

    push = sub.add_parser("push", help="send due bundle versions to the fleet registries")
    push.add_argument("--retry", action="store_true",
                      help="send every undelivered one now, also those a registry rejected (4xx) "
                           "and those waiting for their backoff")
    push.set_defaults(func=_push, default_log_level="info")

    show = sub.add_parser("deliveries", help="the outbox: each delivery with every attempt")
    show.add_argument("--state", choices=("pending", "delivered", "rejected"))
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_deliveries)

    for module_name in FLEET_ACTION_MODULES:
        importlib.import_module(module_name).register_fleet(sub)


def _push(args: argparse.Namespace) -> int:
    from certd.trust import outbox

    config = context.load(args)
    engine = context.open_store(config)
    reports = outbox.deliver(config, engine, force=args.retry)
    if not reports:
        print("nothing to send" + ("" if args.retry else " (use --retry to resend rejected or backed-off ones)"))
        return 0
    for report in reports:
        print(report.line())
    failed = [r for r in reports if r.outcome != "accepted"]
    return EXIT_NOT_DELIVERED if failed else 0


def _deliveries(args: argparse.Namespace) -> int:
    from certd.trust import outbox

    config = context.load(args)
    engine = context.open_store(config)
    views = outbox.deliveries(engine, state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps([{
            "id": v.delivery.id, "registry": v.delivery.registry_name, "bundle": v.version.bundle,
            "flavour": v.version.flavour, "version": v.version.seq,
            "idempotency_key": v.delivery.idempotency_key, "state": v.delivery.state,
            "attempts": [{"at": a.started_at.isoformat(), "status": a.status_code, "outcome": a.outcome,
                          "detail": a.detail} for a in v.attempts],
            "next_attempt_at": v.delivery.next_attempt_at.isoformat()
            if v.delivery.state == "pending" else None,
            "last_error": v.delivery.last_error,
        } for v in views], indent=2))
        return 0
    if not views:
        print("no deliveries (a registry gets one when a bundle version changes)")
        return 0
    for v in views:
        d = v.delivery
        line = (f"#{d.id} {d.registry_name}: {v.version.bundle} ({v.version.flavour}) v{v.version.seq} "
                f"{d.state}, {len(v.attempts)} attempt(s)")
        if d.state == "pending":
            line += f", next {d.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        print(line)
        for a in v.attempts:
            status = f"HTTP {a.status_code}" if a.status_code is not None else "no answer"
            detail = f": {a.detail}" if a.detail else ""
            print(f"    {a.started_at:%Y-%m-%d %H:%M:%S} {a.outcome} ({status}){detail}")
    return 0
