"""Write a bundle version to disk in one of the formats of `certd.config.trust.EXPORT_FORMATS`.

This module holds the pem, der and manifest renderers (the Quectel kit's is in
`certd.trust.quectel`) and the writing, which is the same for every format: each
file goes through `certd.deploy.atomic.atomic_write` (temp file, fsync, rename), so
a module provisioning tool never reads half a bundle, and files an earlier export
of the same bundle left that the new version no longer has are removed, so a
directory never mixes versions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from certd.config.trust import QuectelConfig
from certd.deploy.atomic import atomic_write
from certd.trust import TrustError
from certd.trust.certs import parse_pem_bundle
from certd.trust.formats import Renderer, VersionToExport, renderer_for, stale_files

__all__ = ["VersionToExport", "render", "export_version", "export_is_current", "export_hint",
           "PEM", "DER", "MANIFEST"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "ca"


def _pem(version: VersionToExport, _quectel: QuectelConfig) -> dict[str, bytes]:
    return {f"{version.stem}.pem": version.pem.encode("ascii")}


def _manifest(version: VersionToExport, _quectel: QuectelConfig) -> dict[str, bytes]:
    text = json.dumps(version.manifest, indent=2, sort_keys=True) + "\n"
    return {f"{version.stem}.manifest.json": text.encode()}


def _der_prefix(version: VersionToExport) -> str:
    return f"{version.stem}-ca-"


def _der(version: VersionToExport, _quectel: QuectelConfig) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for cert in parse_pem_bundle(version.pem, f"bundle {version.bundle}"):
        base = f"{_der_prefix(version)}{_slug(cert.common_name)}-{cert.fingerprint[:12]}"
        files[base + ".der"] = cert.der
        files[base + ".pem"] = cert.pem.encode()
    return files


def _der_leftovers(version: VersionToExport, out: Path) -> list[Path]:
    """Per-certificate files of this bundle flavour: named after certificates, so they change."""
    return [p for p in out.glob(f"{_der_prefix(version)}*") if p.suffix in (".der", ".pem")]


PEM = Renderer(_pem)
DER = Renderer(_der, leftovers=_der_leftovers)
MANIFEST = Renderer(_manifest)


def render(version: VersionToExport, fmt: str, quectel: QuectelConfig | None = None) -> dict[str, bytes]:
    """The files format `fmt` consists of, by name: what `export_version` writes."""
    return renderer_for(fmt).render(version, quectel or QuectelConfig())


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
        for stale in stale_files(version, fmt, out, files):
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
        return not stale_files(version, fmt, out, files)
    except OSError:
        return False


def export_hint(version: VersionToExport, fmt: str, quectel: QuectelConfig | None = None) -> str | None:
    """What the operator should do with an export in `fmt`, if the format says anything."""
    hint = renderer_for(fmt).hint
    return hint(version, quectel or QuectelConfig()) if hint is not None else None
