"""`certd fleet status`: per OCPP listener, what is served, what waits, and where the chargers stand."""

from __future__ import annotations

import argparse
import json

from certd.cli import context


def register_fleet(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "status", help="trust rollover per OCPP listener: served / pending certificate, bundle "
                       "version, chargers confirmed / pending / failed / offline")
    parser.add_argument("--chargers", action="store_true",
                        help="list every charger, not only those lacking the roots")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from certd.store.types import utcnow
    from certd.rollover.gate_store import listener_status

    config = context.load(args)
    engine = context.open_store(config)
    statuses, notes = listener_status(config, engine, now=utcnow())
    if args.json:
        print(json.dumps([_as_json(s) for s in statuses], indent=2, default=str))
        return 0
    for note in notes:
        print(f"note: {note}")
    if not statuses:
        print("no gated OCPP listener: a TLS listener serving [[certificates]] covered by a "
              "[[trust.bundles]] entry is gated (see [rollover])")
        return 0
    for status in statuses:
        versions = ", ".join(f"{b} v{s}" for b, s in sorted(status.bundles.items())) or "no bundle version yet"
        print(f"listener {status.listener}: bundle {versions}")
        for gate in status.gates:
            print(f"  {gate.cert_name}: {gate.state}")
            print(f"    served:  {gate.served.line() if gate.served else 'nothing issued yet'}")
            if gate.pending is not None:
                print(f"    pending: {gate.pending.line()}")
                if gate.reason:
                    print(f"             {gate.reason}")
                if gate.gate is not None:
                    print(f"    gate:    {gate.gate.reason}; {gate.gate.needed} needed")
                if gate.deadline_at:
                    print(f"    deadline: {gate.deadline_at:%Y-%m-%d %H:%M} UTC (switches then, with an alert)")
            elif gate.switched_at:
                forced = " (forced at the deadline)" if gate.forced else ""
                print(f"    last switch {gate.switched_at:%Y-%m-%d %H:%M} UTC{forced}: {gate.switch_reason}")
        counts = status.counts
        print(f"  chargers: confirmed {counts['confirmed']}, pending {counts['pending']}, "
              f"failed {counts['failed']}, offline {counts['offline']}")
        for view, kind, reason in status.chargers:
            if kind == "confirmed" and not args.chargers:
                continue
            line = f"    {view.charger_id:<24} {kind:<9}"
            print(f"{line} {reason}".rstrip())
    return 0


def _as_json(status) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "listener": status.listener,
        "bundles": status.bundles,
        "counts": status.counts,
        "certificates": [{
            "name": g.cert_name, "bundle": g.bundle, "state": g.state,
            "served": g.served.__dict__ if g.served else None,
            "pending": g.pending.__dict__ if g.pending else None,
            "reason": g.reason, "required_roots": list(g.required),
            "gate": ({"reason": g.gate.reason, "needed": g.gate.needed, "total": g.gate.total,
                      "confirmed": len(g.gate.confirmed)} if g.gate else None),
            "deadline_at": g.deadline_at, "switched_at": g.switched_at,
            "switch_reason": g.switch_reason, "forced": g.forced,
        } for g in status.gates],
        "chargers": [{"charger_id": v.charger_id, "status": kind, "online": v.online,
                      "last_result": v.last_result, "reason": reason or None}
                     for v, kind, reason in status.chargers],
    }
