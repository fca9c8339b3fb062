"""Gray-cloud planning: which changes bring Cloudflare to the `[[hosts]]` config.

A pure function of data (no I/O, no clock): the desired hosts with their
resolved addresses, the records Cloudflare holds at those names, and the
ownership rows from the store go in; a list of `Action`s comes out, each with
a reason a person can read. `certd.dns.sync` applies them.

Ownership: certd owns a record when the store has a row for it (by record id)
AND the record's comment is the marker (default "managed by certd"). Everything
else is foreign and left alone; a foreign A/AAAA record where certd would put
its own is a conflict, never overwritten. Rules in order, per name and type:

- a CNAME at the name, or several records of the type (round robin): conflict;
- the owned record: leave, update (content, ttl, missing marker) or repair
  (proxied -> DNS only, with a warning why orange cloud breaks LAN access);
- no owned record and no record at all: create;
- a foreign record: adopt when it matches exactly and the host says `adopt = true`,
  else conflict;
- owned rows of hosts no longer in config: delete, or release (forget ownership,
  give back the comment) when `keep` was set for the host or `keep_removed` is on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from certd.dns.provider import DnsRecord, Zone

ActionKind = Literal[
    "create", "update", "repair", "adopt", "delete", "release", "leave", "conflict", "error",
]
# Kinds that write to Cloudflare or to the ownership rows.
CHANGE_KINDS = frozenset({"create", "update", "repair", "adopt", "delete", "release"})
# Kinds that mean the config cannot be honoured as it stands.
PROBLEM_KINDS = frozenset({"conflict", "error"})
ADDRESS_TYPES = ("A", "AAAA")

ORANGE_CLOUD_WARNING = (
    "the record was proxied (orange cloud): Cloudflare then answers with its edge addresses, "
    "not {content}, so devices on the LAN cannot reach the host and TLS to the LAN name breaks; "
    "switching it back to DNS only (gray cloud)"
)


@dataclass(frozen=True)
class OwnedRecord:
    """An ownership row from the store, as plain data."""

    name: str
    type: str
    zone_id: str
    zone_name: str
    # None while a create is in flight (the row is written before the API call).
    record_id: str | None
    content: str | None
    keep: bool = False
    state: Literal["creating", "present", "deleting"] = "present"
    adopted: bool = False
    # The comment the record had before certd adopted it, given back on release.
    original_comment: str | None = None


@dataclass(frozen=True)
class DesiredHost:
    """One `[[hosts]]` entry with what the machine and Cloudflare told about it."""

    name: str
    zone: "Zone | None"
    # Record type -> content it must have now.
    contents: Mapping[str, str]
    # Record type (or "*" for all of them) -> why it cannot be planned now.
    errors: Mapping[str, str] = field(default_factory=dict)
    ttl: int = 1
    adopt: bool = False
    keep: bool = False
    allow_public: bool = False

    def wants(self, rtype: str) -> bool:
        """Config publishes this type (its address may still be unknown)."""
        return rtype in self.contents or rtype in self.errors

    def error_for(self, rtype: str, owned: bool = False) -> str | None:
        """Why this type cannot be planned now; a "*" error only for types in play."""
        if self.wants(rtype) or owned:
            return self.errors.get("*") or self.errors.get(rtype)
        return None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    name: str
    type: str
    reason: str
    zone: "Zone | None" = None
    content: str | None = None  # the content certd wants (create/update/repair/adopt)
    ttl: int | None = None
    record: "DnsRecord | None" = None  # the Cloudflare record acted on, if any
    owned: OwnedRecord | None = None  # the ownership row involved, if any
    changes: Mapping[str, Any] = field(default_factory=dict)  # fields to PATCH
    warnings: tuple[str, ...] = ()
    keep: bool = False  # the host's `keep`, recorded on its ownership row
    in_config: bool = True  # False for records of hosts removed from config

    @property
    def is_change(self) -> bool:
        return self.kind in CHANGE_KINDS

    @property
    def is_problem(self) -> bool:
        return self.kind in PROBLEM_KINDS

    def describe(self) -> str:
        target = self.content or (self.record.content if self.record else None) or (
            self.owned.content if self.owned else None)
        head = f"{self.kind:<8} {self.type:<4} {self.name}"
        return f"{head} {target}: {self.reason}" if target else f"{head}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.is_change)

    @property
    def problems(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.is_problem)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{a.name} {a.type}: {w}" for a in self.actions for w in a.warnings)


def has_marker(comment: str | None, marker: str) -> bool:
    return comment is not None and comment.strip() == marker


def address_warnings(content: str) -> tuple[str, ...]:
    """A public address works, but traffic from LAN devices then leaves the LAN."""
    try:
        address = ipaddress.ip_address(content)
    except ValueError:
        return ()
    if address.is_global:
        return (
            f"{content} is a public address, not a private LAN one: devices using this name "
            "send their traffic over the Internet route (it leaves the LAN)",
        )
    return ()


def _fmt(records: Iterable["DnsRecord"]) -> str:
    return ", ".join(f"{r.content}{' (proxied)' if r.proxied else ''}" for r in records)


def _locate_owned(owned: OwnedRecord | None, same_type: list["DnsRecord"], marker: str
                  ) -> tuple["DnsRecord | None", str | None]:
    """The Cloudflare record an ownership row points at, or (None, why it is missing)."""
    if owned is None:
        return None, None
    if owned.record_id is not None:
        for record in same_type:
            if record.id == owned.record_id:
                return record, None
        return None, f"certd's record {owned.record_id} is gone (deleted outside certd)"
    # A create was interrupted before its answer was recorded: claim what it left behind
    # (whatever its content: the address may have changed since, the plan then updates it).
    marked = [r for r in same_type if has_marker(r.comment, marker)]
    if len(marked) == 1:
        return marked[0], None
    return None, "an earlier create did not finish"


def _mismatches(record: "DnsRecord", content: str, ttl: int) -> list[str]:
    found = []
    if record.content != content:
        found.append(f"content {record.content} (config: {content})")
    if record.proxied:
        found.append("proxied (config: DNS only)")
    if record.ttl != ttl:
        found.append(f"ttl {record.ttl} (config: {ttl})")
    return found


def _plan_desired(host: DesiredHost, rtype: str, owned: OwnedRecord | None,
                  at_name: list["DnsRecord"], marker: str) -> Action:
    content = host.contents[rtype]
    base: dict[str, Any] = dict(name=host.name, type=rtype, zone=host.zone, content=content,
                                ttl=host.ttl, owned=owned, keep=host.keep)
    warnings = () if host.allow_public else address_warnings(content)
    same_type = [r for r in at_name if r.type == rtype]
    cnames = [r for r in at_name if r.type == "CNAME"]
    if cnames:
        return Action("conflict", reason=(
            f"a CNAME record ({cnames[0].content}) exists at this name; A/AAAA records cannot "
            "sit beside it: remove the CNAME or this host"), **base)
    mine, missing = _locate_owned(owned, same_type, marker)
    if len(same_type) > 1:
        return Action("conflict", reason=(
            f"{len(same_type)} {rtype} records at this name ({_fmt(same_type)}): round robin is "
            "not managed and certd changes none of them; delete the extra records"), **base)
    if mine is not None:
        changes: dict[str, Any] = {}
        notes: list[str] = []
        if mine.content != content:
            changes["content"] = content
            notes.append(f"address {mine.content} -> {content}")
        if mine.ttl != host.ttl:
            changes["ttl"] = host.ttl
            notes.append(f"ttl {mine.ttl} -> {host.ttl}")
        if not has_marker(mine.comment, marker):
            changes["comment"] = marker
            notes.append("ownership marker restored in the comment")
        if mine.proxied:
            changes["proxied"] = False
            warning = ORANGE_CLOUD_WARNING.format(content=content)
            return Action("repair", reason="proxied -> DNS only" + "".join(f"; {n}" for n in notes),
                          record=mine, changes=changes, warnings=(warning, *warnings), **base)
        if changes:
            return Action("update", reason="; ".join(notes), record=mine, changes=changes,
                          warnings=warnings, **base)
        return Action("leave", reason="in sync", record=mine, warnings=warnings, **base)
    if not same_type:
        reason = f"{missing}; recreating" if missing else "not in Cloudflare yet"
        return Action("create", reason=reason, warnings=warnings, **base)
    foreign = same_type[0]
    differs = _mismatches(foreign, content, host.ttl)
    stray_marker = has_marker(foreign.comment, marker)
    if not differs and host.adopt:
        return Action("adopt", reason=(
            "an identical record exists and adopt = true: certd takes it over"),
            record=foreign, changes={} if stray_marker else {"comment": marker},
            warnings=warnings, **base)
    if stray_marker:
        why = ("it carries certd's marker but the store has no row for it (a lost database, "
               "or another certd instance using the same marker)")
    else:
        why = "certd does not own it and leaves it alone"
    if differs:
        fix = f"differs: {'; '.join(differs)}. Delete it, or make it match and set adopt = true"
    else:
        fix = "it matches the config exactly: set adopt = true on this host to take it over"
    return Action("conflict", reason=f"a {rtype} record exists ({_fmt([foreign])}): {why}; {fix}",
                  record=foreign, **base)


def _plan_removal(owned: OwnedRecord, at_name: list["DnsRecord"] | None, marker: str,
                  *, keep: bool, why: str, in_config: bool,
                  read_error: str | None = None) -> Action:
    base: dict[str, Any] = dict(name=owned.name, type=owned.type, owned=owned, keep=keep,
                                in_config=in_config)
    if at_name is None:
        return Action("error", reason=(
            f"{why}, but its records could not be read ({read_error or 'not looked up'}); "
            "record left as is"), **base)
    same_type = [r for r in at_name if r.type == owned.type]
    mine, _missing = _locate_owned(owned, same_type, marker)
    if mine is None:
        return Action("delete", reason=f"{why}; the record is already gone, forgetting it", **base)
    if keep:
        original = owned.original_comment if owned.adopted else None
        changes = {"comment": original or ""} if has_marker(mine.comment, marker) else {}
        return Action("release", reason=f"{why}; keep is set: the record stays in Cloudflare, "
                      "certd stops managing it", record=mine, changes=changes, **base)
    if not has_marker(mine.comment, marker):
        return Action("release", reason=(
            f"{why}; its comment no longer carries the marker (changed outside certd), so it is "
            "left in place and no longer managed"), record=mine, **base)
    return Action("delete", reason=why, record=mine, **base)


def plan(
    hosts: Iterable[DesiredHost],
    owned: Iterable[OwnedRecord],
    current: Mapping[str, list["DnsRecord"]],
    *,
    marker: str,
    keep_removed: bool = False,
    read_errors: Mapping[str, str] | None = None,
) -> Plan:
    """Actions that bring Cloudflare to `hosts`.

    `current` maps a name to every record Cloudflare has at it (all types); a
    name missing from it could not be read (`read_errors` may say why), and
    nothing is changed there.
    """
    read_errors = read_errors or {}
    owned_by = {(o.name, o.type): o for o in owned}
    actions: list[Action] = []
    desired_names: set[str] = set()
    for host in hosts:
        desired_names.add(host.name)
        at_name = current.get(host.name)
        for rtype in ADDRESS_TYPES:
            row = owned_by.get((host.name, rtype))
            error = host.error_for(rtype, owned=row is not None)
            if error is not None:
                actions.append(Action("error", host.name, rtype, f"{error}; record left as is",
                                      zone=host.zone, owned=row, keep=host.keep))
            elif rtype in host.contents:
                if at_name is None:
                    why = read_errors.get(host.name, "not looked up")
                    actions.append(Action("error", host.name, rtype,
                                          f"records could not be read ({why}); record left as is",
                                          zone=host.zone, owned=row, keep=host.keep))
                else:
                    actions.append(_plan_desired(host, rtype, row, at_name, marker))
            elif row is not None:
                actions.append(_plan_removal(
                    row, at_name, marker, keep=False, in_config=True,
                    read_error=read_errors.get(host.name),
                    why=f"the host no longer publishes {rtype} in config"))
            elif at_name:
                foreign = [r for r in at_name if r.type == rtype]
                if foreign:
                    actions.append(Action(
                        "leave", host.name, rtype, f"not managed by certd ({_fmt(foreign)})",
                        zone=host.zone, record=foreign[0],
                        warnings=(f"a foreign {rtype} record exists at this name: devices that "
                                  f"prefer {rtype} may connect to {foreign[0].content} instead",)))
    for row in sorted(owned_by.values(), key=lambda o: (o.name, o.type)):
        if row.name in desired_names:
            continue
        actions.append(_plan_removal(
            row, current.get(row.name), marker, keep=row.keep or keep_removed, in_config=False,
            read_error=read_errors.get(row.name), why="the host is no longer in config"))
    return Plan(tuple(actions))
