"""`certd chargers certs|renew-cert|revoke-cert|cert-kit`: charger client certificates.

These commands work on the store; the running daemon learns of them from it:
`renew-cert` is picked up at its next look at connected chargers (`check_interval`,
or when the charger next boots), `revoke-cert` closes the charger's live profile-3
connection within `revocation_check_interval` seconds (default 5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from certd.cli import context
from certd.errors import CertdError


def register_actions(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the certificate actions to `certd chargers`."""
    certs = sub.add_parser("certs", help="client certificates of chargers: state, expiry, renewal")
    certs.add_argument("charger_id", metavar="ID", nargs="?", help="one charger (default: all)")
    certs.set_defaults(func=_certs)

    renew = sub.add_parser("renew-cert", help="ask a charger for a new CSR when it is next connected")
    renew.add_argument("charger_id", metavar="ID")
    renew.set_defaults(func=_renew)

    revoke = sub.add_parser("revoke-cert", help="revoke a charger's certificates (by id) or one (by serial)")
    revoke.add_argument("target", metavar="ID|SERIAL")
    revoke.add_argument("--reason", default="revoked by the operator", help="kept in the store and audit log")
    revoke.set_defaults(func=_revoke)

    kit = sub.add_parser("cert-kit", help="certd makes the key and certificate for a module that cannot "
                                          "make a CSR (Quectel: with the AT script uploading both)")
    kit.add_argument("charger_id", metavar="ID")
    kit.add_argument("--out", required=True, metavar="DIR", help="directory for key, chain and AT script")
    kit.add_argument("--key-type", choices=("rsa2048", "ec-p256"), default="rsa2048")
    kit.add_argument("--ssl-context", type=int, default=1, metavar="N", help="Quectel SSL context (0-5)")
    kit.set_defaults(func=_kit)


def _settings(config):  # type: ignore[no-untyped-def]
    if config.ocpp.charger_ca is None:
        raise CertdError("no [ocpp.charger_ca] section in the config: certd is not the chargers' CA")
    return config.ocpp.charger_ca


def _certs(args: argparse.Namespace) -> int:
    from certd.chargerca import records, timing
    from certd.store.types import utcnow

    config = context.load(args)
    _settings(config)
    engine = context.open_store(config)
    rows = records.certificates(engine, args.charger_id)
    if not rows:
        print(f"no certificates for {args.charger_id}" if args.charger_id else "no charger certificates")
        return 0
    renewals = records.renewals(engine)
    now = utcnow()
    header = ("ID", "SERIAL", "STATE", "DELIVERY", "KEY", "NOT AFTER", "LIFE", "LAST REQUEST")
    table = [header]
    for row in rows:
        usable = row.state in ("issued", "active", "superseded")
        renewal = renewals.get(row.charger_id)
        table.append((row.charger_id, row.serial[:16], row.state, row.delivery, row.key_type,
                      f"{row.not_after:%Y-%m-%d %H:%M}", timing.stage(row.life(), now) if usable else "-",
                      (renewal.last_result or "-") if renewal and row.state == "active" else "-"))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def _renew(args: argparse.Namespace) -> int:
    from certd.chargerca import records
    from certd.ocpp import charger_registry
    from certd.store.types import utcnow

    config = context.load(args)
    settings = _settings(config)
    engine = context.open_store(config)
    if charger_registry.lookup(engine, args.charger_id) is None:
        raise CertdError(f"no charger {args.charger_id!r} in the registry")
    records.request_renewal(engine, args.charger_id, utcnow())
    charger_registry.record_audit(engine, "certificate_renewal_requested", args.charger_id, None,
                                  "certd chargers renew-cert")
    print(f"{args.charger_id}: a new certificate is asked for when it is next connected "
          f"(the daemon looks every {settings.check_interval:.0f} s)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from certd.chargerca import records, sweep
    from certd.ocpp import charger_registry
    from certd.store.types import utcnow

    config = context.load(args)
    settings = _settings(config)
    engine = context.open_store(config)
    now = utcnow()
    revoked = records.revoke(engine, args.target, args.reason, now)
    if not revoked:
        raise CertdError(f"no usable certificate for charger or serial {args.target!r}")
    for cert in revoked:
        charger_registry.record_audit(engine, "certificate_revoked", cert.charger_id, None,
                                      f"serial {cert.serial}: {args.reason}")
        print(f"revoked {cert.charger_id} serial {cert.serial}")
    if settings.crl_file:
        sweep.write_crl(engine, config, now)
        print(f"CRL written to {settings.crl_file}")
    print(f"a running certd closes the charger's certificate connection within "
          f"{settings.revocation_check_interval:g} s and refuses it from now on")
    return 0


def _kit(args: argparse.Namespace) -> int:
    from certd.chargerca import authority, ca_store, keystore, records
    from certd.ocpp import charger_registry
    from certd.store.types import utcnow
    from certd.trust.quectel import client_certificate_kit

    config = context.load(args)
    settings = _settings(config)
    engine = context.open_store(config)
    record = charger_registry.lookup(engine, args.charger_id)
    if record is None or not record.enabled:
        raise CertdError(f"charger {args.charger_id!r} is not registered and enabled")
    if not 0 <= args.ssl_context <= 5:
        raise CertdError("--ssl-context: 0 to 5")
    ca = ca_store.load_issuing(engine, config)
    key = authority.new_key(args.key_type)
    issued = records.issue(engine, ca, args.charger_id, key.public_key(), args.key_type,  # type: ignore[arg-type]
                           settings, utcnow())
    files = client_certificate_kit(args.charger_id, issued.chain_pem.encode(), keystore.key_pem(key),
                                   ssl_context=args.ssl_context, serial=issued.cert.serial)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in files.items():
        path = out / name
        if name.endswith(".key"):
            keystore.write_key_file(path, data)  # owner-only, never overwritten
        else:
            path.write_bytes(data)
        print(f"wrote {path}")
    charger_registry.record_audit(engine, "certificate_issued", args.charger_id, None,
                                  f"serial {issued.cert.serial} as a provisioning kit")
    print(f"{args.charger_id}: serial {issued.cert.serial} valid until {issued.cert.not_after:%Y-%m-%d}; "
          "the key file is the charger's secret: upload it, then delete it")
    return 0
