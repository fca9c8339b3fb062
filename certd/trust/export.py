"""Write a bundle version to disk as pem, der, manifest or a Quectel provisioning kit.

Every file goes through `certd.fileio.atomic_write` (temp file, fsync, rename),
so a module provisioning tool never reads half a bundle. Files written by an
earlier export of the same bundle that the new version no longer has are
removed, so a directory never mixes versions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from certd.config.trust import QuectelConfig
from certd.fileio import atomic_write
from certd.trust import TrustError
from certd.trust.certs import parse_pem_bundle
from certd.trust.quectel import provisioning_script

FORMATS = ("pem", "der", "manifest", "quectel")


@dataclass(frozen=True)
class VersionToExport:
    bundle: str
    flavour: str
    seq: int
    sha256: str
    pem: str
    manifest: dict[str, object]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "ca"


def _stem(version: VersionToExport) -> str:
    return f"{version.bundle}-{version.flavour}"


def _write(path: Path, data: bytes, written: list[Path]) -> None:
    atomic_write(path, data, mode=0o644)
    written.append(path)


def export_version(
    version: VersionToExport, fmt: str, out_dir: str | Path, quectel: QuectelConfig | None = None,
) -> list[Path]:
    """Write `version` in format `fmt` into `out_dir`; returns the files written."""
    if fmt not in FORMATS:
        raise TrustError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrustError(f"cannot create export directory {out}: {exc.strerror}") from None
    data = version.pem.encode("ascii")
    written: list[Path] = []
    try:
        if fmt == "pem":
            _write(out / f"{_stem(version)}.pem", data, written)
        elif fmt == "manifest":
            text = json.dumps(version.manifest, indent=2, sort_keys=True) + "\n"
            _write(out / f"{_stem(version)}.manifest.json", text.encode(), written)
        elif fmt == "der":
            prefix = f"{_stem(version)}-ca-"
            keep: set[str] = set()
            for cert in parse_pem_bundle(version.pem, f"bundle {version.bundle}"):
                base = f"{prefix}{_slug(cert.common_name)}-{cert.fingerprint[:12]}"
                for suffix, blob in ((".der", cert.der), (".pem", cert.pem.encode())):
                    _write(out / (base + suffix), blob, written)
                    keep.add(base + suffix)
            for stale in out.glob(f"{prefix}*"):
                if stale.name not in keep and stale.suffix in (".der", ".pem"):
                    stale.unlink()
        else:
            cfg = quectel or QuectelConfig()
            script = provisioning_script(
                data, cfg, bundle=version.bundle, flavour=version.flavour, version=version.seq,
                sha256=version.sha256, count=version.pem.count("BEGIN CERTIFICATE"),
            )
            _write(out / cfg.file_name, data, written)
            _write(out / f"{_stem(version)}.quectel.at", script.text.encode(), written)
    except OSError as exc:
        raise TrustError(f"cannot write bundle export in {out}: {exc.strerror}") from None
    return written
