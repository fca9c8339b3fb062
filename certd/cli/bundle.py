"""`certd bundle show|diff|history|export|refresh`: the fleet CA bundles and their versions."""

from __future__ import annotations

import argparse
import json

from certd.cli import context
from certd.config.trust import EXPORT_FORMATS

FLAVOUR_CHOICES = ("roots", "full")
# `certd bundle refresh`: an export could not be written or a registry did not accept a delivery.
EXIT_REFRESH_INCOMPLETE = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bundle", help="fleet CA bundles: show, diff, history, export")
    sub = parser.add_subparsers(dest="bundle_command", metavar="ACTION")
    sub.required = True

    show = sub.add_parser("show", help="current version of each bundle flavour and its certificates")
    show.add_argument("name", nargs="?", metavar="NAME", help="bundle name (default: all bundles)")
    show.add_argument("--flavour", choices=FLAVOUR_CHOICES)
    show.add_argument("--json", action="store_true", help="print the manifests as JSON")
    show.set_defaults(func=_show)

    diff = sub.add_parser("diff", help="certificates added/removed between two versions")
    diff.add_argument("name", metavar="NAME")
    diff.add_argument("old", nargs="?", type=int, metavar="FROM", help="version (default: previous)")
    diff.add_argument("new", nargs="?", type=int, metavar="TO", help="version (default: latest)")
    diff.add_argument("--flavour", choices=FLAVOUR_CHOICES, default="full")
    diff.set_defaults(func=_diff)

    history = sub.add_parser("history", help="every version with its reason and changes")
    history.add_argument("name", metavar="NAME")
    history.add_argument("--flavour", choices=FLAVOUR_CHOICES)
    history.set_defaults(func=_history)

    export = sub.add_parser("export", help="write a bundle version to a directory")
    export.add_argument("name", metavar="NAME")
    export.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS))
    export.add_argument("--out", required=True, metavar="DIR")
    export.add_argument("--flavour", choices=FLAVOUR_CHOICES, default="full")
    export.add_argument("--version", type=int, metavar="N", help="version number (default: latest)")
    export.set_defaults(func=_export)

    refresh = sub.add_parser("refresh", help="recompute bundles now (after a config change; drops expired CAs), "
                             "rewrite missing or stale exports; exit 1 if an export or delivery fails")
    refresh.add_argument("names", nargs="*", metavar="NAME")
    refresh.add_argument("--no-push", action="store_true", help="queue registry deliveries, don't send")
    refresh.set_defaults(func=_refresh, default_log_level="info")


def _flavours(config, name: str, flavour: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    bundle = config.trust.bundle(name)
    if flavour is not None:
        if flavour not in bundle.flavours:
            from certd.errors import CertdError

            raise CertdError(f"bundle {name!r} does not build the {flavour!r} flavour "
                             f"(it builds {', '.join(bundle.flavours)})")
        return [flavour]
    return list(bundle.flavours)


def _show(args: argparse.Namespace) -> int:
    from certd.store.db import session_scope
    from certd.trust import versions

    config = context.load(args)
    engine = context.open_store(config)
    names = [args.name] if args.name else [b.name for b in config.trust.bundles]
    if not names:
        print("no bundles configured (add [[trust.bundles]] to the config)")
        return 0
    manifests = []
    with session_scope(engine) as session:
        for name in names:
            for flavour in _flavours(config, name, args.flavour):
                row = versions.latest(session, name, flavour)
                if args.json:
                    manifests.append(json.loads(row.manifest_json) if row else
                                     {"bundle": name, "flavour": flavour, "version": None})
                    continue
                if row is None:
                    print(f"{name} ({flavour}): no version yet")
                    continue
                print(f"{name} ({flavour}) v{row.seq}  sha256 {row.sha256}")
                print(f"  created {row.created_at:%Y-%m-%d %H:%M:%S} UTC: {row.reason}")
                manifest = json.loads(row.manifest_json)
                print(f"  serves: {', '.join(manifest.get('server_names', [])) or '-'}; "
                      f"{manifest.get('size', len(row.pem))} bytes, xor16 {manifest.get('xor16', '?')}")
                for member in versions.members(row):
                    print(f"  {member.line()}")
                for note in json.loads(row.notes_json):
                    print(f"  note: {note}")
    if args.json:
        print(json.dumps(manifests, indent=2))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from certd.store.db import session_scope
    from certd.trust import versions

    config = context.load(args)
    engine = context.open_store(config)
    flavour = _flavours(config, args.name, args.flavour)[0]
    with session_scope(engine) as session:
        new = versions.get(session, args.name, flavour, args.new)
        if args.old is None and args.new is None:
            diff = versions.stored_diff(new)
            old_label = f"v{new.previous_seq}" if new.previous_seq else "nothing"
        else:
            old_seq = args.old if args.old is not None else (new.seq - 1)
            old = versions.get(session, args.name, flavour, old_seq)
            diff = versions.diff_between(old, new)
            old_label = f"v{old.seq}"
    print(f"{args.name} ({flavour}): {old_label} -> v{new.seq}")
    for line in diff.lines():
        print(f"  {line}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from certd.store.db import session_scope
    from certd.trust import versions

    config = context.load(args)
    engine = context.open_store(config)
    with session_scope(engine) as session:
        for flavour in _flavours(config, args.name, args.flavour):
            rows = versions.history(session, args.name, flavour)
            print(f"{args.name} ({flavour}): {len(rows)} version(s)")
            for row in rows:
                diff = versions.stored_diff(row)
                print(f"  v{row.seq}  {row.created_at:%Y-%m-%d %H:%M:%S} UTC  sha256 {row.sha256[:16]}…  "
                      f"+{len(diff.added)} -{len(diff.removed)}  {row.reason}")
                for line in diff.lines() if not diff.empty else []:
                    print(f"      {line}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from certd.store.db import session_scope
    from certd.trust import versions
    from certd.trust.export import export_hint, export_version

    config = context.load(args)
    engine = context.open_store(config)
    bundle = config.trust.bundle(args.name)
    flavour = _flavours(config, args.name, args.flavour)[0]
    with session_scope(engine) as session:
        version = versions.to_export(versions.get(session, args.name, flavour, args.version))
    for path in export_version(version, args.format, args.out, bundle.quectel):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    hint = export_hint(version, args.format, bundle.quectel)
    if hint:
        print(hint)
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from certd.trust.track import refresh_bundles

    config = context.load(args)
    for name in args.names:
        config.trust.bundle(name)
    engine = context.open_store(config)
    from certd.store import leases

    with leases.held(engine, leases.job_lease("trust-refresh"), "certd bundle refresh"):
        result = refresh_bundles(config, engine, only=args.names or None, deliver=not args.no_push)
    for change in result.changes:
        print(change.headline())
        for line in change.diff.lines():
            print(f"  {line}")
    if not result.changes:
        print("no bundle changed")
    for warning in result.warnings:
        print(f"warning: {warning}")
    for report in result.deliveries:
        print(f"delivery {report.line()}")
    if result.failed:
        print(f"incomplete: {len(result.export_failures)} export(s) not written, "
              f"{len(result.undelivered)} delivery(ies) not accepted (exit {EXIT_REFRESH_INCOMPLETE}; "
              "run `certd bundle refresh` again to rewrite exports, `certd fleet push` to resend)")
        return EXIT_REFRESH_INCOMPLETE
    return 0
