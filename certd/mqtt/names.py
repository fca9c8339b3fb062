"""Ids and topics: what Home Assistant and MQTT accept, derived the same way every time.

Home Assistant wants `[a-zA-Z0-9_-]` in discovery topic levels and stable `unique_id`s;
certificate names, listener labels ("host:9000") and node names may hold other
characters. A name that had to be changed gets a short hash of the original, so two
names that differ only in those characters never share an id.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def printable(value: str | bytes) -> str:
    """A device-supplied string as one log or terminal line: control characters escaped."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def slug(name: str) -> str:
    """`name` as an id: itself when safe, else its safe characters plus 6 hex of its hash."""
    cleaned = _UNSAFE.sub("_", name).strip("_") or "x"
    if cleaned == name:
        return name
    return f"{cleaned[:48]}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def node_id(node: str) -> str:
    return slug(node)


def default_client_id(node: str) -> str:
    return f"certd-{node_id(node)}"[:64]


def availability_topic(base_topic: str, node: str) -> str:
    """Where certd says `online` (birth) and the broker says `offline` for it (will)."""
    return f"{base_topic}/{node_id(node)}/availability"


def bundle_topic(prefix: str, bundle: str, flavour: str) -> str:
    return f"{prefix}/bundles/{bundle}/{flavour}"


def ack_filter(prefix: str) -> str:
    return f"{prefix}/acks/+/+"


def ack_topic(prefix: str, bundle: str, device_id: str) -> str:
    return f"{prefix}/acks/{bundle}/{device_id}"


def parse_ack_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(bundle, device_id) of an ack topic under `prefix`, None for anything else."""
    head = f"{prefix}/acks/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]
