"""Bundle content, versions and diffs: pure functions of recorded chains and a clock.

A bundle flavour's content is a set of CA certificates:
- ``roots``: the anchors the chains end at;
- ``full``: those plus every intermediate and cross-sign served or offered.

The canonical form is the de-duplicated set sorted by SHA-256 fingerprint, each
certificate re-encoded as PEM; its SHA-256 is the content hash. A flavour gets
a new version number exactly when that hash changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from certd.trust.certs import CaCert
from certd.trust.chains import CROSS_SIGN, INTERMEDIATE, ROOT, ChainLink

FLAVOURS = ("roots", "full")
_ROLE_RANK = {ROOT: 0, CROSS_SIGN: 1, INTERMEDIATE: 2}


@dataclass(frozen=True)
class IssuanceChains:
    """One issuance as trust sees it: its names and its chains resolved to an anchor set."""

    issued_id: int
    name: str
    domains: tuple[str, ...]
    issued_at: dt.datetime
    leaf_not_after: dt.datetime
    chains: tuple[tuple[ChainLink, ...], ...]  # [0] = served chain, then alternates
    # Current, deployed or served by a listener (rollover gate): chargers may be verifying this
    # chain right now, so it stays in the bundle while its leaf is valid, whatever its age.
    in_use: bool = False


@dataclass(frozen=True)
class CertSummary:
    """What a human (and a diff) needs to know about one bundle member."""

    fingerprint: str
    subject: str
    issuer: str
    not_after: dt.datetime
    role: str

    def to_json(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "subject": self.subject, "issuer": self.issuer,
                "not_after": self.not_after.isoformat(), "role": self.role}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "CertSummary":
        return cls(fingerprint=data["fingerprint"], subject=data["subject"], issuer=data["issuer"],
                   not_after=dt.datetime.fromisoformat(data["not_after"]), role=data["role"])

    def line(self) -> str:
        return (f"{self.role:<12} {self.subject}  sha256 {self.fingerprint}  "
                f"not after {self.not_after:%Y-%m-%d}")


@dataclass(frozen=True)
class BundleEntry:
    cert: CaCert
    role: str
    server_names: tuple[str, ...]  # names of the certificates whose chains use this CA

    @property
    def summary(self) -> CertSummary:
        c = self.cert
        return CertSummary(c.fingerprint, c.subject, c.issuer, c.not_after, self.role)


@dataclass(frozen=True)
class BundleContent:
    flavour: str
    entries: tuple[BundleEntry, ...]  # sorted by fingerprint, one per certificate
    server_names: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def pem(self) -> str:
        return "".join(e.cert.pem for e in self.entries)

    @property
    def sha256(self) -> str:
        return content_hash(self.pem)

    @property
    def summaries(self) -> list[CertSummary]:
        return [e.summary for e in self.entries]


@dataclass(frozen=True)
class BundleDiff:
    added: tuple[CertSummary, ...] = ()
    removed: tuple[CertSummary, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed)

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        return {"added": [s.to_json() for s in self.added],
                "removed": [s.to_json() for s in self.removed]}

    @classmethod
    def from_json(cls, data: dict[str, list[dict[str, str]]]) -> "BundleDiff":
        return cls(tuple(CertSummary.from_json(d) for d in data.get("added", [])),
                   tuple(CertSummary.from_json(d) for d in data.get("removed", [])))

    def lines(self) -> list[str]:
        out = [f"+ {s.line()}" for s in self.added]
        out += [f"- {s.line()}" for s in self.removed]
        return out or ["(no change)"]


@dataclass(frozen=True)
class VersionDecision:
    """What `decide_version` concluded: unchanged, or the next version with its diff."""

    changed: bool
    seq: int
    sha256: str
    diff: BundleDiff = field(default_factory=BundleDiff)


def content_hash(pem: str) -> str:
    return hashlib.sha256(pem.encode("ascii")).hexdigest()


def select_issuances(
    issuances: Iterable[IssuanceChains], now: dt.datetime, recent_days: float,
) -> list[IssuanceChains]:
    """The latest issuance per name, plus valid ones that are in use or younger than `recent_days`.

    An issuance still in use can be older than `recent_days` (a rollover gate holding the new
    certificate back, a failed deploy, a 1-year certificate renewed after 8 months): dropping its
    CAs would lock out the chargers that verify the chain the listener still serves.
    """
    horizon = now - dt.timedelta(days=recent_days)
    latest: dict[str, IssuanceChains] = {}
    for item in issuances:
        best = latest.get(item.name)
        if best is None or (item.issued_at, item.issued_id) > (best.issued_at, best.issued_id):
            latest[item.name] = item
    chosen = {i.issued_id: i for i in latest.values()}
    for item in issuances:
        if (item.in_use or item.issued_at >= horizon) and item.leaf_not_after > now:
            chosen.setdefault(item.issued_id, item)
    return sorted(chosen.values(), key=lambda i: (i.name, i.issued_at, i.issued_id))


def _wanted(link: ChainLink, flavour: str) -> bool:
    if link.role == ROOT:
        return link.in_path  # anchors the chains end at
    return flavour == "full"


def compute_content(
    issuances: Sequence[IssuanceChains], flavour: str, now: dt.datetime, recent_days: float,
) -> BundleContent:
    """The flavour's certificates over the selected issuances; expired CAs are dropped with a note."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown bundle flavour {flavour!r}")
    certs: dict[str, CaCert] = {}
    roles: dict[str, str] = {}
    names: dict[str, set[str]] = {}
    all_names: set[str] = set()
    for issuance in select_issuances(issuances, now, recent_days):
        all_names.update(issuance.domains)
        for chain in issuance.chains:
            for link in chain:
                if not _wanted(link, flavour):
                    continue
                fp = link.cert.fingerprint
                certs[fp] = link.cert
                if fp not in roles or _ROLE_RANK[link.role] < _ROLE_RANK[roles[fp]]:
                    roles[fp] = link.role
                names.setdefault(fp, set()).update(issuance.domains)
    notes: list[str] = []
    entries: list[BundleEntry] = []
    for fp in sorted(certs):
        cert = certs[fp]
        if cert.expired(now):
            notes.append(
                f"dropped expired {roles[fp]} {cert.subject} (sha256 {fp}, expired "
                f"{cert.not_after:%Y-%m-%d %H:%M} UTC)"
            )
            continue
        entries.append(BundleEntry(cert, roles[fp], tuple(sorted(names[fp]))))
    return BundleContent(flavour, tuple(entries), tuple(sorted(all_names)), tuple(notes))


def diff_summaries(old: Iterable[CertSummary], new: Iterable[CertSummary]) -> BundleDiff:
    old_by = {s.fingerprint: s for s in old}
    new_by = {s.fingerprint: s for s in new}
    added = tuple(new_by[fp] for fp in sorted(new_by) if fp not in old_by)
    removed = tuple(old_by[fp] for fp in sorted(old_by) if fp not in new_by)
    return BundleDiff(added, removed)


def decide_version(
    previous_seq: int | None, previous_sha256: str | None,
    previous_members: Iterable[CertSummary], content: BundleContent,
) -> VersionDecision:
    """New version number exactly when the content hash differs from the last version's."""
    if not content.entries:
        # Nothing to trust yet (or everything expired): keep the last version, never publish empty.
        return VersionDecision(False, previous_seq or 0, previous_sha256 or "")
    sha = content.sha256
    if previous_sha256 == sha:
        return VersionDecision(False, previous_seq or 0, sha)
    return VersionDecision(True, (previous_seq or 0) + 1, sha,
                           diff_summaries(previous_members, content.summaries))


def manifest(
    bundle: str, flavour: str, seq: int, content: BundleContent, created_at: dt.datetime,
) -> dict[str, object]:
    """The JSON manifest: version, content hash, each certificate and the names served."""
    return {
        "bundle": bundle,
        "flavour": flavour,
        "version": seq,
        "sha256": content.sha256,
        "created_at": created_at.isoformat(),
        "server_names": list(content.server_names),
        "certificates": [
            {**e.summary.to_json(), "server_names": list(e.server_names)} for e in content.entries
        ],
        "notes": list(content.notes),
    }
