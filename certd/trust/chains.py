"""Build a chain's path to a trust anchor and name each CA certificate's role.

Pure: certificates in, a `ChainPath` out. The path follows the certificates the
CA served as far as they go (that is what a module validating the handshake
sees) and ends at the anchor that signed the last one. A chain that reaches no
anchor raises `UnanchoredChainError` naming where it stops.

Roles:
- ``root``: the anchor a path ends at (self-signed, from the anchor set);
- ``cross-sign``: a CA whose key also exists under another issuer, recognised
  when its twin (same subject and key, other issuer) is known from the anchor
  set or any chain, or, as a heuristic for Let's Encrypt's "Root YR" signed by
  "ISRG Root X1", a non-self-signed certificate whose CN names it a Root;
- ``intermediate``: every other CA certificate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from certd.trust import UnanchoredChainError
from certd.trust.certs import CaCert, issued_by

ROOT = "root"
CROSS_SIGN = "cross-sign"
INTERMEDIATE = "intermediate"
ROLES = (ROOT, CROSS_SIGN, INTERMEDIATE)

MAX_DEPTH = 12
_ROOT_WORD = re.compile(r"\broot\b", re.IGNORECASE)


@dataclass(frozen=True)
class AnchorSet:
    """Named trust anchors (self-signed roots) with a lookup by subject."""

    name: str
    source: str  # where they came from, for messages
    certs: tuple[CaCert, ...]

    def signers_of(self, cert: x509.Certificate | CaCert) -> list[CaCert]:
        child = cert.cert if isinstance(cert, CaCert) else cert
        issuer = child.issuer.rfc4514_string()
        return [a for a in self.certs if a.subject == issuer and issued_by(child, a)]

    def holds(self, cert: CaCert) -> bool:
        return any(a.fingerprint == cert.fingerprint for a in self.certs)


@dataclass(frozen=True)
class ChainLink:
    cert: CaCert
    role: str
    served: bool  # sent by the CA in this chain (False: taken from the anchor set)
    in_path: bool  # on the path from the leaf to the anchor


@dataclass(frozen=True)
class ChainPath:
    """One chain (served or alternate) resolved against an anchor set."""

    links: tuple[ChainLink, ...]  # path order (leaf side first), then served extras

    @property
    def anchor(self) -> CaCert:
        return next(link.cert for link in self.links if link.role == ROOT and link.in_path)

    def certs(self, role: str | None = None) -> list[CaCert]:
        return [link.cert for link in self.links if role is None or link.role == role]


def _describe(cert: x509.Certificate | CaCert) -> str:
    if isinstance(cert, CaCert):
        return cert.subject
    return cert.subject.rfc4514_string()


def is_cross_sign(cert: CaCert, pool: Iterable[CaCert]) -> bool:
    """A non-self-signed CA whose key also appears under another issuer (see module doc)."""
    if cert.self_signed:
        return False
    for other in pool:
        if (other.fingerprint != cert.fingerprint and other.spki_sha256 == cert.spki_sha256
                and other.subject == cert.subject and other.issuer != cert.issuer):
            return True
    return bool(_ROOT_WORD.search(cert.common_name))


def build_path(
    leaf: x509.Certificate, served: Sequence[CaCert], anchors: AnchorSet,
    pool: Iterable[CaCert] = (), what: str = "chain",
) -> ChainPath:
    """Resolve `served` (CA certificates after the leaf, as the CA sent them) to an anchor.

    `pool` holds other known CA certificates (other chains) used only to
    recognise cross-signs. Raises `UnanchoredChainError` when no anchor signs
    the top of the served path.
    """
    path: list[CaCert] = []
    used: set[str] = set()
    current: x509.Certificate | CaCert = leaf
    anchor: CaCert | None = None
    for _ in range(MAX_DEPTH):
        candidates = [c for c in served if c.fingerprint not in used and issued_by(current, c)]
        if candidates:
            nxt = candidates[0]
            if nxt.self_signed:
                twins = sorted(
                    (a for a in anchors.certs if a.fingerprint == nxt.fingerprint
                     or (a.subject == nxt.subject and a.spki_sha256 == nxt.spki_sha256)),
                    key=lambda a: a.fingerprint != nxt.fingerprint,
                )
                if not twins:
                    raise UnanchoredChainError(
                        f"{what} reaches no trust anchor: it ends at the self-signed "
                        f"{nxt.subject} (sha256 {nxt.fingerprint[:16]}…), which is not in "
                        f"anchor set {anchors.name!r} ({anchors.source}); add that root to "
                        f"the anchor set if the fleet should trust it"
                    )
                anchor = twins[0]
                break
            path.append(nxt)
            used.add(nxt.fingerprint)
            current = nxt
            continue
        signers = anchors.signers_of(current)
        if signers:
            anchor = signers[0]
            break
        issuer = (current.cert if isinstance(current, CaCert) else current).issuer.rfc4514_string()
        raise UnanchoredChainError(
            f"{what} reaches no trust anchor: it stops at {_describe(current)}, issued by "
            f"{issuer}, which the CA did not send and which is not in anchor set "
            f"{anchors.name!r} ({anchors.source}); add that CA's root to the anchor set"
        )
    else:
        raise UnanchoredChainError(f"{what} is longer than {MAX_DEPTH} certificates or loops")

    known = [*served, *anchors.certs, *pool]
    links = [ChainLink(c, CROSS_SIGN if is_cross_sign(c, known) else INTERMEDIATE, True, True)
             for c in path]
    links.append(ChainLink(anchor, ROOT, anchor.fingerprint in {c.fingerprint for c in served}, True))
    on_path = {link.cert.fingerprint for link in links}
    for extra in served:
        if extra.fingerprint in on_path or (extra.self_signed and not anchors.holds(extra)):
            continue  # already placed, or a stray self-signed CA nobody should trust
        on_path.add(extra.fingerprint)
        role = ROOT if extra.self_signed else (
            CROSS_SIGN if is_cross_sign(extra, known) else INTERMEDIATE)
        links.append(ChainLink(extra, role, True, False))
    return ChainPath(tuple(links))
