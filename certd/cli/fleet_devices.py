"""`certd fleet devices [--json]`: per MQTT registry and bundle, which devices are current, behind or silent."""

from __future__ import annotations

import argparse
import json

from certd.cli import context


def register_fleet(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "devices", help="devices of MQTT registries: current, behind or silent per bundle (from their acks)")
    parser.add_argument("--bundle", help="only this bundle")
    parser.add_argument("--state", choices=("current", "behind", "silent"), help="only devices in this state")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_devices)


def _devices(args: argparse.Namespace) -> int:
    from certd.mqtt.devices import fleet_devices
    from certd.mqtt.names import printable
    from certd.store.types import utcnow

    config = context.load(args)
    engine = context.open_store(config)
    views = fleet_devices(config, engine, utcnow(), bundle=args.bundle)
    if args.json:
        print(json.dumps([{
            "registry": v.registry, "bundle": v.bundle, "counts": v.counts,
            "published": {f: {"version": p.version, "sha256": p.sha256, "published_at": p.published_at.isoformat(),
                              "on_broker": p.delivered} for f, p in v.published.items()},
            "devices": [{"device_id": d.device_id, "flavour": d.flavour, "version": d.version,
                         "acked_at": d.acked_at.isoformat(), "state": d.state}
                        for d in v.devices if args.state in (None, d.state)],
        } for v in views], indent=2))
        return 0
    if not views:
        print("no MQTT registry (kind = \"mqtt\" in [[trust.registries]]) carries a bundle")
        return 0
    for view in views:
        published = ", ".join(f"{f} v{p.version}" + ("" if p.delivered else " (not on the broker yet)")
                              for f, p in sorted(view.published.items())) or "no version yet"
        counts = view.counts
        print(f"{view.registry} / {view.bundle}: {published}; devices: current {counts['current']}, "
              f"behind {counts['behind']}, silent {counts['silent']}")
        for device in view.devices:
            if args.state not in (None, device.state):
                continue
            print(f"  {printable(device.device_id):<32} {device.state:<8} {device.flavour} v{device.version} "
                  f"acknowledged {device.acked_at:%Y-%m-%d %H:%M} UTC")
    return 0
