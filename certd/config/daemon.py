"""The `[daemon]` section: how `certd run` paces checks and whom it tells when renewals fail."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from certd.config._base import Section

HOUR = 3600.0
DAY = 86400.0


class DaemonConfig(Section):
    # Orders (and checks) run at once, each in a worker thread. Let's Encrypt asks clients
    # not to burst; a handful is plenty for a home server or a fleet of a few hundred names.
    concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    # Every certificate is looked at (files on disk, key, chain) at least this often, in seconds,
    # even when nothing is due. Cheap: no network unless ARI or a renewal is due.
    max_check_interval: Annotated[float, Field(ge=60, le=DAY)] = HOUR
    # The CA's ARI Retry-After is followed but never more often than this (RFC 9773 section
    # 4.3.2 asks clients to bound it; Let's Encrypt asks for about two checks a day). Max 1 day.
    ari_min_interval: Annotated[float, Field(ge=60, le=DAY)] = 12 * HOUR
    # Shell command run (via /bin/sh -c) on every failed attempt of a certificate in its last
    # tenth of life, and once when such a certificate recovers. Details come as CERTD_* env
    # vars and as JSON on stdin; no token or key is ever passed. Unset: log only.
    notify_hook: str | None = None
    notify_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    # On SIGTERM/SIGINT, how long to wait for in-flight orders to abandon cleanly (TXT records
    # deleted) before exiting anyway; records left then are removed at the next start.
    shutdown_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0

    @field_validator("notify_hook")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a shell command, or left out")
        return value
