"""`certd issue NAME [--force]`: obtain and deploy one certificate now."""

from __future__ import annotations

import argparse

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("issue", help="obtain and deploy a certificate now")
    parser.add_argument("name", help="certificate name from the config")
    parser.add_argument("--force", action="store_true",
                        help="issue even if the current certificate is valid and not due")
    parser.set_defaults(func=_issue, default_log_level="info")


def _issue(args: argparse.Namespace) -> int:
    from certd import lifecycle
    from certd.dns import cloudflare
    from certd.dns.challenges import cleanup_leftover_records
    from certd.renew import renewal_decision
    from certd.store.types import utcnow

    config = context.load(args)
    cert_cfg = config.certificate(args.name)
    engine = context.open_store(config)
    current = lifecycle.current_certificate(engine, args.name)
    decision = renewal_decision(cert_cfg, current, utcnow())
    if current is not None and not decision.due and not args.force:
        print(f"{args.name}: current certificate (serial {current.serial}) is valid until "
              f"{current.not_after:%Y-%m-%d %H:%M} UTC and not due ({decision.reason} at "
              f"{decision.renew_at:%Y-%m-%d %H:%M} UTC); use --force to issue anyway")
        return 0
    dns = cloudflare.from_config(config.cloudflare)
    cleanup_leftover_records(dns, engine)
    result = lifecycle.issue_and_deploy(config, engine, args.name, dns=dns)
    issued = result.issued
    print(f"{args.name}: issued serial {issued.serial} by {issued.issuer}, "
          f"valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
    for path in result.deploy.written:
        print(f"  wrote {path}")
    failed = [h for h in result.deploy.hooks if not h.ok]
    for hook in result.deploy.hooks:
        print(f"  hook {'ok' if hook.ok else 'FAILED'}: {hook.command}"
              + ("" if hook.ok else f" ({hook.detail})"))
    return 3 if failed else 0
