"""`certd renew [NAME ...|--all] [--force] [--dry-run]`: what the daemon does, by hand.

Each certificate gets the daemon's check: renew when due (ARI, backstop, a
problem with the stored material), redeploy files that are missing or stale,
retry failed hooks. By hand, a running failure backoff is skipped (an
administrator asking is the "early retry" Let's Encrypt's guide wants).
`--dry-run` says what would happen and why, and changes nothing: no order, no
file, no database row (the CA's ARI may be asked, read-only).
"""

from __future__ import annotations

import argparse
import sys

from certd.cli import context

EXIT_HOOKS_FAILED = 3
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("renew", help="renew what is due now (what `certd run` does, once)")
    parser.add_argument("names", nargs="*", metavar="NAME", help="certificate name(s) from the config")
    parser.add_argument("--all", action="store_true", help="every configured certificate")
    parser.add_argument("--force", action="store_true", help="renew even if the certificate is not due")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would be renewed and why; change nothing")
    parser.set_defaults(func=_renew, default_log_level="info")


def _renew(args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.all):
        print("certd renew: name the certificate(s) to renew, or use --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    config = context.load(args)
    names = [c.name for c in config.certificates] if args.all else list(dict.fromkeys(args.names))
    if not names:
        print("no certificates configured")
        return 0
    for name in names:
        config.certificate(name)  # unknown names fail before any work
    if args.dry_run:
        return _dry_run(config, names, args.force)
    return _for_real(config, names, args.force)


def _dry_run(config, names: list[str], force: bool) -> int:  # type: ignore[no-untyped-def]
    from certd.renewal.check import Maintainer

    engine = _open_without_writing(config)
    if engine is None:
        for name in names:
            print(f"{name}: would renew: no certificate issued yet (no database at {config.db_url})")
        return 0
    maintainer = Maintainer(config, engine)
    for name in names:
        result = maintainer.check(name, force=force, dry_run=True)
        if result.action == "would-renew":
            print(f"{name}: would renew: {result.reason}")
        elif result.action == "would-redeploy":
            print(f"{name}: would redeploy the stored certificate: {result.reason}")
        else:
            when = f" at {result.renew_at:%Y-%m-%d %H:%M} UTC" if result.renew_at else ""
            print(f"{name}: not due ({result.reason}{when})")
    return 0


def _open_without_writing(config):  # type: ignore[no-untyped-def]
    """The store as it is, or None when there is none yet; never creates or migrates anything."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from certd.errors import CertdError
    from certd.store.db import database_heads, make_engine, script_heads

    url = make_url(config.db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return None
    engine = make_engine(config.db_url, config.store)
    if database_heads(engine) != script_heads():
        raise CertdError("the database schema is not current; run `certd db upgrade` (or `certd run`) "
                         "first, or leave out --dry-run")
    return engine


def _for_real(config, names: list[str], force: bool) -> int:  # type: ignore[no-untyped-def]
    from certd.dns.challenges import cleanup_leftover_records, has_leftover_records
    from certd.renewal.check import Maintainer, ensure_rows
    from certd.store.leases import EX_TEMPFAIL

    engine = context.open_store(config)
    ensure_rows(engine, [c.name for c in config.certificates])
    maintainer = Maintainer(config, engine, purpose="certd renew")
    if has_leftover_records(engine):  # a killed run's TXT records go first, due or not
        cleanup_leftover_records(maintainer.dns(), engine, "certd renew")
    exit_code = 0
    for name in names:
        result = maintainer.check(name, force=force, ignore_backoff=True)
        if result.action == "renewed" and result.issued is not None:
            issued = result.issued
            print(f"{name}: renewed ({result.reason}): serial {issued.serial} by {issued.issuer}, "
                  f"valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
        elif result.action in ("redeployed", "hooks-retried"):
            print(f"{name}: {result.action.replace('-', ' ')} ({result.reason})")
        elif result.action == "failed":
            print(f"certd: error: {name}: {result.error}", file=sys.stderr)
            exit_code = max(exit_code, 1)
            continue
        elif result.action == "busy":
            print(f"certd: {name}: not renewed now: {result.reason}", file=sys.stderr)
            exit_code = max(exit_code, EX_TEMPFAIL)
            continue
        elif result.action == "cancelled":
            print(f"{name}: interrupted; the order was abandoned", file=sys.stderr)
            return 130
        else:
            when = f" at {result.renew_at:%Y-%m-%d %H:%M} UTC" if result.renew_at else ""
            print(f"{name}: not due ({result.reason}{when}); use --force to renew anyway")
        for path in result.written:
            print(f"  wrote {path}")
        if not result.hooks_ok:
            print(f"certd: error: {name}: {result.error}", file=sys.stderr)
            exit_code = max(exit_code, EXIT_HOOKS_FAILED)
    return exit_code
