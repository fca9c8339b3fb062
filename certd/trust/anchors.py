"""Load anchor sets: the system CA store, `certifi`, or a PEM file / directory.

The result is cached per source and file modification time: the system store
holds ~150 roots and `on_issued` may need it for several bundles.
"""

from __future__ import annotations

import logging
import os
import ssl
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from certd.trust import TrustError
from certd.trust.certs import CaCert, parse_pem_bundle
from certd.trust.chains import AnchorSet

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from certd.config.trust import TrustConfig

_PEM_SUFFIXES = {".pem", ".crt", ".cer"}


def _system_bundle_path() -> Path | None:
    """The OpenSSL default CA file, if it exists and holds certificates."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file() and Path(candidate).stat().st_size > 0:
            return Path(candidate)
    return None


def _certifi_path() -> Path:
    import certifi

    return Path(certifi.where())


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and (p.suffix.lower() in _PEM_SUFFIXES
                                           or p.name.split(".")[-1].isdigit()))
        return files
    return [path]


def _signature(paths: list[Path]) -> tuple[tuple[str, float, int], ...]:
    sig = []
    for p in paths:
        st = p.stat()
        sig.append((str(p), st.st_mtime, st.st_size))
    return tuple(sig)


def _says_not_a_ca(cert: CaCert) -> bool:
    """basicConstraints present with CA:FALSE (old v1 roots without the extension stay anchors)."""
    try:
        constraints = cert.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return not constraints.ca


@lru_cache(maxsize=16)
def _load_files(signature: tuple[tuple[str, float, int], ...]) -> tuple[CaCert, ...]:
    seen: dict[str, CaCert] = {}
    for path, _mtime, _size in signature:
        text = Path(path).read_bytes()
        with warnings.catch_warnings():  # some system roots carry non-RFC-5280 serials
            warnings.simplefilter("ignore")
            certs = parse_pem_bundle(text, path)
        for cert in certs:
            if not cert.self_signed:  # only self-signed roots are anchors
                continue
            if _says_not_a_ca(cert):
                log.warning("%s: %s is self-signed but not a CA (basicConstraints CA:FALSE); "
                            "not used as a trust anchor", path, cert.subject)
                continue
            seen.setdefault(cert.fingerprint, cert)
    return tuple(seen.values())


def resolve_source(source: str) -> tuple[str, list[Path]]:
    """(description, files) for an anchor source; raises TrustError when nothing is there."""
    if source == "system":
        bundle = _system_bundle_path()
        if bundle is None:
            path = _certifi_path()
            return f"certifi {path} (no system CA store found)", [path]
        return f"system CA store {bundle}", [bundle]
    if source == "certifi":
        path = _certifi_path()
        return f"certifi {path}", [path]
    path = Path(os.path.expanduser(source))
    if not path.exists():
        raise TrustError(f"anchor file or directory {path} does not exist")
    files = _files_of(path)
    if not files:
        raise TrustError(f"anchor directory {path} holds no .pem/.crt files")
    return str(path), files


def load_anchor_set(name: str, source: str) -> AnchorSet:
    """Read anchor set `name` from `source`; an empty or unreadable one is an error."""
    description, files = resolve_source(source)
    try:
        certs = _load_files(_signature(files))
    except OSError as exc:
        raise TrustError(f"anchor set {name!r}: cannot read {description}: {exc.strerror}") from None
    except TrustError as exc:
        raise TrustError(f"anchor set {name!r}: {exc}") from None
    if not certs:
        raise TrustError(f"anchor set {name!r}: {description} holds no self-signed root certificate")
    return AnchorSet(name=name, source=description, certs=certs)


def anchor_set(trust: "TrustConfig", name: str) -> AnchorSet:
    """The configured anchor set `name` (see `TrustConfig.anchor_source`)."""
    try:
        source = trust.anchor_source(name)
    except KeyError:
        raise TrustError(f"no anchor set named {name!r} in [trust.anchor_sets]") from None
    return load_anchor_set(name, source)
