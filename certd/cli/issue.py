"""`certd issue NAME... [--all] [--force]`: obtain and deploy certificates now.

Several certificates are ordered concurrently on one ACME account, each in its
own worker thread with its own ACME client.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from certd.cli import context
from certd.errors import CertdError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from certd.config import CertificateConfig, Config
    from certd.issue.keys import PrivateKey

EXIT_HOOK_FAILED = 3


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("issue", help="obtain and deploy certificates now")
    parser.add_argument("names", nargs="*", metavar="NAME", help="certificate names from the config")
    parser.add_argument("--all", action="store_true", help="every configured certificate")
    parser.add_argument("--force", action="store_true",
                        help="issue even if the current certificate is valid and not due")
    parser.add_argument("--parallel", type=int, default=8, metavar="N",
                        help="orders run at once (default 8)")
    parser.set_defaults(func=_issue, default_log_level="info")


def _issue(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from certd.issue.keys import generate_key

    config = context.load(args)
    names = [c.name for c in config.certificates] if args.all else args.names
    if not names:
        raise CertdError("name at least one certificate, or use --all")
    cert_cfgs = [config.certificate(n) for n in names]  # unknown names fail before any work
    # Key generation releases the GIL: start it now, under the imports and store checks below.
    # Keys of certificates that turn out not to be due are simply dropped.
    keygen = ThreadPoolExecutor(max_workers=2, thread_name_prefix="certd-keygen")
    keys = {c.name: keygen.submit(generate_key, c.key_type) for c in cert_cfgs}
    try:
        return _issue_names(args, config, cert_cfgs, keys)
    finally:
        keygen.shutdown(wait=False, cancel_futures=True)


def _issue_names(args: argparse.Namespace, config: Config, cert_cfgs: list[CertificateConfig],
                 keys: dict[str, Future[PrivateKey]]) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from certd.renewal import pipeline
    from certd.dns.challenges import cleanup_leftover_records, has_leftover_records
    from certd.dns.registry import open_dns
    from certd.renewal.rules import renewal_decision
    from certd.store import leases
    from certd.store.types import utcnow

    engine = context.open_store(config)
    dns = None
    if has_leftover_records(engine):  # a killed run's TXT records go first, due or not
        dns = open_dns(config)
        cleanup_leftover_records(dns, engine, "certd issue")

    def not_due(cert_cfg: CertificateConfig) -> str | None:
        """Why a certificate is left alone without --force (its state may change under us: ask
        again under the lease)."""
        current = pipeline.current_certificate(engine, cert_cfg.name)
        decision = renewal_decision(cert_cfg, current, utcnow())
        if current is None or decision.due or args.force:
            return None
        return (f"{cert_cfg.name}: current certificate (serial {current.serial}) is valid until "
                f"{current.not_after:%Y-%m-%d %H:%M} UTC and not due ({decision.reason} at "
                f"{decision.renew_at:%Y-%m-%d %H:%M} UTC); use --force to issue anyway")

    todo = []
    for cert_cfg in cert_cfgs:
        skip = not_due(cert_cfg)
        if skip:
            print(skip)
        else:
            todo.append(cert_cfg)
    if not todo:
        return 0

    dns = dns or open_dns(config)

    def run(cert_cfg: CertificateConfig) -> tuple[str, pipeline.RenewalResult | CertdError | str]:
        name = cert_cfg.name
        try:
            with leases.held(engine, leases.certificate_lease(name), "certd issue") as lease:
                skip = not_due(cert_cfg)  # a daemon may have renewed it a moment ago
                if skip:
                    return name, skip
                return name, pipeline.issue_and_deploy(config, engine, name, dns=dns, key=keys[name],
                                                       fence=lease.fence)
        except CertdError as exc:
            return name, exc

    with ThreadPoolExecutor(max_workers=max(1, min(args.parallel, len(todo)))) as pool:
        outcomes = list(pool.map(run, todo))

    exit_code = 0
    for name, outcome in outcomes:
        if isinstance(outcome, str):
            print(outcome)
            continue
        if isinstance(outcome, CertdError):
            print(f"certd: error: {name}: {outcome}", file=sys.stderr)
            exit_code = max(exit_code, outcome.exit_code)
            continue
        issued = outcome.issued
        print(f"{name}: issued serial {issued.serial} by {issued.issuer}, "
              f"valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
        for path in outcome.deploy.written:
            print(f"  wrote {path}")
        for hook in outcome.deploy.hooks:
            print(f"  hook {'ok' if hook.ok else 'FAILED'}: {hook.command}"
                  + ("" if hook.ok else f" ({hook.detail})"))
        if not outcome.deploy.hooks_ok and exit_code == 0:
            exit_code = EXIT_HOOK_FAILED
    return exit_code
