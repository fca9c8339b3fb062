"""`certd doctor [HOST[:PORT]]`: check DNS and TLS the way a charger will see them."""

from __future__ import annotations

import argparse

from certd.cli import context

EXIT_PROBLEMS = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "doctor", help="check DNS, TLS and bundles as a charger sees them (pass/warn/fail + fix)")
    parser.add_argument("target", nargs="?", metavar="HOST[:PORT]",
                        help="default: the first name of each configured certificate, port 443")
    parser.add_argument("--connect", metavar="ADDRESS", help="connect here instead of the resolved address")
    parser.add_argument("--resolver", action="append", default=[], metavar="IP[:PORT]",
                        help="ask this resolver instead of the system's (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per connection (default 10)")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from certd.doctor import DEFAULT_PORT, parse_target, reports_json, run_doctor
    from certd.errors import CertdError

    config = context.load(args)
    if args.target:
        targets = [parse_target(args.target)]
    else:
        targets = [(c.domains[0].removeprefix("*."), DEFAULT_PORT) for c in config.certificates]
        if not targets:
            raise CertdError("no certificates configured: give HOST[:PORT]")
    engine = context.open_store(config)
    dns_api = None
    try:
        from certd.dns.registry import open_dns

        dns_api = open_dns(config)
    except CertdError:
        pass  # reported as a warning by the Cloudflare check
    reports = [run_doctor(config, host, port, engine=engine, dns_api=dns_api, nameservers=args.resolver,
                          connect=args.connect, timeout=args.timeout) for host, port in targets]
    if args.json:
        print(reports_json(reports))
    else:
        for report in reports:
            print("\n".join(report.lines()))
        failed = sum(c.status == "fail" for r in reports for c in r.checks)
        warned = sum(c.status == "warn" for r in reports for c in r.checks)
        print(f"{failed} failed, {warned} warning(s)" if failed or warned else "all checks passed")
    return 0 if all(r.ok for r in reports) else EXIT_PROBLEMS
