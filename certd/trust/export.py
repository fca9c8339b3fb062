"""Write a bundle version to disk as pem, der, manifest or a Quectel provisioning kit.

Every file goes through `certd.deploy.atomic.atomic_write` (temp file, fsync, rename),
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
from certd.deploy.atomic import atomic_write
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


def quectel_local_name(version: VersionToExport, cfg: QuectelConfig) -> str:
    """The kit's CA file on disk: per bundle and flavour, so two kits can share a directory.

    The module still stores it as ``UFS:<file_name>``; only the local copy is named apart
    (two kits writing one ``ca.pem`` would leave one AT script expecting the other's size).
    """
    return f"{_stem(version)}.{cfg.file_name}"


def render(version: VersionToExport, fmt: str, quectel: QuectelConfig | None = None) -> dict[str, bytes]:
    """The files format `fmt` consists of, by name: what `export_version` writes."""
    if fmt not in FORMATS:
        raise TrustError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    data = version.pem.encode("ascii")
    if fmt == "pem":
        return {f"{_stem(version)}.pem": data}
    if fmt == "manifest":
        text = json.dumps(version.manifest, indent=2, sort_keys=True) + "\n"
        return {f"{_stem(version)}.manifest.json": text.encode()}
    if fmt == "der":
        files: dict[str, bytes] = {}
        for cert in parse_pem_bundle(version.pem, f"bundle {version.bundle}"):
            base = f"{_der_prefix(version)}{_slug(cert.common_name)}-{cert.fingerprint[:12]}"
            files[base + ".der"] = cert.der
            files[base + ".pem"] = cert.pem.encode()
        return files
    cfg = quectel or QuectelConfig()
    local = quectel_local_name(version, cfg)
    script = provisioning_script(
        data, cfg, bundle=version.bundle, flavour=version.flavour, version=version.seq,
        sha256=version.sha256, count=version.pem.count("BEGIN CERTIFICATE"), local_name=local,
    )
    return {local: data, f"{_stem(version)}.quectel.at": script.text.encode()}


def _der_prefix(version: VersionToExport) -> str:
    return f"{_stem(version)}-ca-"


def _stale(version: VersionToExport, fmt: str, out: Path, keep: dict[str, bytes]) -> list[Path]:
    """Files of an earlier der export of this bundle that this version no longer has."""
    if fmt != "der":
        return []
    return [p for p in out.glob(f"{_der_prefix(version)}*")
            if p.name not in keep and p.suffix in (".der", ".pem")]


def export_version(
    version: VersionToExport, fmt: str, out_dir: str | Path, quectel: QuectelConfig | None = None,
) -> list[Path]:
    """Write `version` in format `fmt` into `out_dir`; returns the files written."""
    files = render(version, fmt, quectel)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrustError(f"cannot create export directory {out}: {exc.strerror}") from None
    written: list[Path] = []
    try:
        for name, blob in files.items():
            atomic_write(out / name, blob, mode=0o644)
            written.append(out / name)
        for stale in _stale(version, fmt, out, files):
            stale.unlink()
    except OSError as exc:
        raise TrustError(f"cannot write bundle export in {out}: {exc.strerror}") from None
    return written


def export_is_current(
    version: VersionToExport, fmt: str, out_dir: str | Path, quectel: QuectelConfig | None = None,
) -> bool:
    """Whether `out_dir` holds exactly this version's files (a missing or stale file: no)."""
    files = render(version, fmt, quectel)
    out = Path(out_dir)
    try:
        for name, blob in files.items():
            path = out / name
            if path.stat().st_size != len(blob) or path.read_bytes() != blob:
                return False
        return not _stale(version, fmt, out, files)
    except OSError:
        return False
