"""`certd charger-ca show|export|init|import`: the CA that signs charger certificates.

`export` prints (or writes) the CA chain as PEM, for chargers that want it and for other
consumers (a reverse proxy verifying client certificates, a second CSMS); `--crl FILE`
also writes a CRL of the revoked charger certificates, signed by the issuing CA.
The CA key never leaves certd: no command prints or exports it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certd.cli import context
from certd.errors import CertdError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("charger-ca", help="the CA of the chargers' client certificates")
    sub = parser.add_subparsers(dest="charger_ca_command", metavar="ACTION")
    sub.required = True

    show = sub.add_parser("show", help="the CA certificates, their state and where the key is kept")
    show.set_defaults(func=_show)

    export = sub.add_parser("export", help="PEM of the CA chain (no key); optionally a CRL")
    export.add_argument("--out", metavar="FILE", help="write the PEM here (default: stdout)")
    export.add_argument("--all", action="store_true", help="also retired CA certificates still valid")
    export.add_argument("--crl", metavar="FILE", help="also write a CRL of revoked charger certificates")
    export.set_defaults(func=_export)

    init = sub.add_parser("init", help="generate the CA now (certd also does at its first start)")
    init.add_argument("--two-level", action="store_true",
                      help="an offline root and an online issuing CA (the root key goes to --root-key-out)")
    init.add_argument("--root-key-out", metavar="PATH", type=Path,
                      help="two-level: where the root key is written once (owner-only); keep it offline")
    init.add_argument("--replace", action="store_true",
                      help="retire the current issuing CA; its chargers are asked for new certificates")
    init.set_defaults(func=_init)

    imp = sub.add_parser("import", help="use an existing issuing CA (certificate + key, PEM)")
    imp.add_argument("--cert", required=True, metavar="FILE")
    imp.add_argument("--key", required=True, metavar="FILE", help="owner-only PEM key file")
    imp.add_argument("--chain", metavar="FILE", help="its issuers up to the root, nearest first")
    imp.add_argument("--replace", action="store_true", help="retire the current issuing CA")
    imp.set_defaults(func=_import)


def _setup(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    config = context.load(args)
    if config.ocpp.charger_ca is None:
        raise CertdError("no [ocpp.charger_ca] section in the config: certd is not the chargers' CA")
    return config, context.open_store(config)


def _show(args: argparse.Namespace) -> int:
    from certd.chargerca import ca_store

    config, engine = _setup(args)
    rows = ca_store.ca_rows(engine)
    if not rows:
        print("no charger CA yet (certd creates it at its first start, or run `certd charger-ca init`)")
        return 0
    settings = config.ocpp.charger_ca
    for row in rows:
        where = {"file": "key in an owner-only file", "store": "key encrypted in the store",
                 "offline": "key not held by certd"}.get(row.key_storage, row.key_storage)
        print(f"{row.role:<12} {row.state:<8} {row.subject}")
        print(f"{'':12} sha256 {row.fingerprint}  valid until {row.not_after:%Y-%m-%d}  ({where})")
    print(f"charger certificates: O={settings.organization}, valid {settings.leaf_validity_days:g} days, "
          "renewed at two thirds of their life")
    return 0


def _export(args: argparse.Namespace) -> int:
    from certd.chargerca import ca_store, sweep
    from certd.store.types import utcnow

    config, engine = _setup(args)
    now = utcnow()
    rows = [r for r in ca_store.ca_rows(engine) if r.not_after > now and (args.all or r.state == "active")]
    if not rows:
        raise CertdError("no charger CA in the store yet (`certd charger-ca init`)")
    pem = "".join(r.cert_pem for r in sorted(rows, key=lambda r: (r.role != "issuing", r.role)))
    if args.out:
        Path(args.out).write_text(pem)
        print(f"wrote {len(rows)} CA certificate(s) to {args.out}")
    else:
        sys.stdout.write(pem)
    if args.crl:
        from certd.deploy.atomic import atomic_write

        atomic_write(Path(args.crl), sweep.crl_pem(engine, config, now).encode("ascii"))
        print(f"wrote the CRL to {args.crl}", file=sys.stderr if not args.out else sys.stdout)
    return 0


def _init(args: argparse.Namespace) -> int:
    from certd.chargerca import ca_store
    from certd.store.types import utcnow

    config, engine = _setup(args)
    row = ca_store.create_ca(engine, config, utcnow(), two_level=args.two_level,
                             root_key_out=args.root_key_out, replace=args.replace)
    print(f"charger CA {row.subject} (sha256 {row.fingerprint[:16]}...) valid until {row.not_after:%Y-%m-%d}")
    if args.two_level:
        print(f"root key written to {args.root_key_out}: move it offline; certd does not keep it")
    return 0


def _import(args: argparse.Namespace) -> int:
    from certd.chargerca import ca_store, keystore
    from certd.store.types import utcnow

    config, engine = _setup(args)
    key_pem = keystore.read_key_file(args.key, "--key")
    try:
        cert_pem = Path(args.cert).read_bytes()
        chain = Path(args.chain).read_bytes() if args.chain else None
    except OSError as exc:
        raise CertdError(f"{exc.filename}: {exc.strerror}") from None
    row = ca_store.import_ca(engine, config, cert_pem, key_pem, chain, utcnow(), replace=args.replace)
    print(f"charger CA {row.subject} (sha256 {row.fingerprint[:16]}...) imported, valid until "
          f"{row.not_after:%Y-%m-%d}")
    return 0
