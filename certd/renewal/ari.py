"""The ARI facts a certificate carries between checks, and how one answer from the CA changes them.

Pure: the caller (certd.renewal.check) asks the CA, then hands the stored state, the
answer (or the error) and `now` to `updated_ari_state`, and stores what comes back.
Keeping this free of I/O lets every case (window kept, moved, Retry-After, a failed
fetch, a CA without ARI) be tested in milliseconds (tests/daemon/test_ari_state.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from certd.errors import CertdError
from certd.issue.ari import AriWindow, RenewalInfo
from certd.renewal import rules
from certd.store.renewal import RenewalState

# Column of RenewalState → field of AriState.
_COLUMNS = {"ari_cert_id": "cert_id", "ari_supported": "supported", "ari_window_start": "window_start",
            "ari_window_end": "window_end", "ari_renew_at": "renew_at",
            "ari_next_check_at": "next_check_at", "ari_error": "error"}

# What asking the CA gave: its answer, None when its directory has no ARI, or the error raised.
AriAnswer = RenewalInfo | CertdError | None


@dataclass(frozen=True)
class AriState:
    """What the store remembers of the CA's last ARI answer (RenewalState's `ari_*` columns)."""

    cert_id: str | None = None       # the RFC 9773 certID these facts describe; None: never asked
    supported: bool | None = None    # False: the CA has no ARI; None: not known yet
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    renew_at: dt.datetime | None = None  # the time picked inside the window
    next_check_at: dt.datetime | None = None
    error: str | None = None         # why the last fetch failed

    @classmethod
    def of(cls, row: RenewalState) -> AriState:
        return cls(**{field: getattr(row, column) for column, field in _COLUMNS.items()})

    def columns(self) -> dict[str, object]:
        """The RenewalState columns to store."""
        return {column: getattr(self, field) for column, field in _COLUMNS.items()}

    @property
    def window(self) -> AriWindow | None:
        if self.window_start is None or self.window_end is None:
            return None
        return AriWindow(self.window_start, self.window_end)

    @property
    def renewal_time(self) -> dt.datetime | None:
        """The CA's time for the renewal decision; None: the backstop applies."""
        return self.renew_at if self.supported else None


@dataclass(frozen=True)
class AriUpdate:
    state: AriState
    new_pick: bool  # the renewal time differs from the one held for this certificate (worth a log line)

    @property
    def renewal_time(self) -> dt.datetime | None:
        return self.state.renewal_time


def updated_ari_state(stored: AriState, cert_id: str, answer: AriAnswer,
                      now: dt.datetime, *, fraction: float, min_interval: dt.timedelta) -> AriUpdate:
    """The state after asking the CA about `cert_id` at `now`.

    `answer` is the CA's RenewalInfo, None when its directory has no ARI, or the error
    the fetch raised. A failed fetch keeps the window known for the same certificate
    (the CA said nothing new) and forgets one that described an older certificate.
    A pick inside an unchanged window is kept (rules.ari_renewal_time); `fraction`
    in [0, 1) places a new one.
    """
    same_cert = stored.cert_id == cert_id
    held_pick = stored.renew_at if same_cert else None
    if isinstance(answer, CertdError):
        base = stored if same_cert else AriState()
        state = dataclasses.replace(base, cert_id=cert_id, error=str(answer),
                                    next_check_at=rules.next_ari_check(now, None, min_interval))
        return AriUpdate(state, new_pick=False)
    if answer is None:
        state = AriState(cert_id=cert_id, supported=False,
                         next_check_at=rules.next_ari_check(now, None, min_interval))
        return AriUpdate(state, new_pick=False)
    renew_at = rules.ari_renewal_time(answer.window, fraction,
                                      previous_window=stored.window if same_cert else None,
                                      previous_pick=held_pick)
    state = AriState(cert_id=cert_id, supported=True, window_start=answer.window.start,
                     window_end=answer.window.end, renew_at=renew_at,
                     next_check_at=rules.next_ari_check(now, answer.retry_after, min_interval))
    return AriUpdate(state, new_pick=renew_at != held_pick)
